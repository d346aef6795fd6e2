// EventBus: typed events from the core (step started/finished, cache hits,
// breaker transitions, config and limit changes, memory pressure, ...) to
// any number of subscribers, each with its own bounded buffer.
//
// Publishing never blocks on a subscriber: when a subscription's buffer is
// full the event is dropped for that subscription and counted there. A slow
// reader therefore loses events, never slows the executor down.
//
// Cost. The bus keeps the OR of its subscriptions' type masks in one atomic,
// so `Wants(type)` is a single relaxed load; hot-path publishers check it
// before building an event, and with no subscriber nothing else happens.
// With subscribers, Publish takes the bus lock once (to copy the current
// subscriber list, a shared_ptr), then each interested subscription's lock
// once; it allocates only for the event's strings when they exceed the
// small-string buffer. Unsubscribe and Subscribe rebuild the list (rare).
//
// Waking. A subscription may carry a waker, called when its buffer goes from
// empty to non-empty (exactly then: once per batch the reader has to drain),
// with no lock of the bus held. The Python side uses it to resolve an
// asyncio future through loop.call_soon_threadsafe. A waker may still be
// called once by a publisher that raced with Unsubscribe; it must tolerate
// that. Publish must be called with no core lock held that a waker could
// need (the Python waker takes the GIL).
//
// Thread-safety: every method is thread-safe. Publishers may be any number
// of threads (MPSC per subscription); a subscription is normally drained by
// one reader, but Drain is safe from several. Counters are relaxed atomics:
// published, delivered and dropped are exact once publishers have returned.
#ifndef CAUDAL_TELEMETRY_EVENT_BUS_H_
#define CAUDAL_TELEMETRY_EVENT_BUS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "caudal/base/mutex.h"

namespace caudal {

// Event types. The numeric values are stable (they index the mask and the
// Python names); new types are appended before kCount (at most 32).
enum class EventType : uint8_t {
  kStepStarted = 0,    // an attempt of a step starts
  kStepFinished,       // an execution ended successfully
  kStepFailed,         // an execution ended in failure (or was rejected)
  kCacheHit,           // the result cache had the step's result
  kCacheMiss,          // the result cache had no result for the key
  kBreakerTransition,  // a circuit breaker changed state
  kLimitChanged,       // an adaptive concurrency limit changed
  kMemoryPressure,     // the memory-pressure level changed
  kConfigChanged,      // apply_optimization_config swapped the config
  kPoolQueueFull,      // the worker pool's queue refused a task
  kStepCancelled,      // an execution was cancelled (not a failure)
  // A step's recent p95 regressed against its baseline; one came back;
  // automatic optimization changed a config field.
  kRegressionDetected,
  kRegressionCleared,
  kOptimizationApplied,
  kCount
};
inline constexpr int kEventTypeCount = static_cast<int>(EventType::kCount);
static_assert(kEventTypeCount <= 32, "event masks are 32 bits");

using EventMask = uint32_t;
inline constexpr EventMask MaskOf(EventType t) {
  return EventMask{1} << static_cast<int>(t);
}
inline constexpr EventMask kAllEvents =
    kEventTypeCount == 32 ? ~EventMask{0}
                          : (EventMask{1} << kEventTypeCount) - 1;

// The stable lowercase name ("step_started", ...) used by Python and docs.
absl::string_view EventTypeName(EventType type);
// The type named `name`, or nullopt.
absl::optional<EventType> EventTypeFromName(absl::string_view name);

struct Event {
  EventType type = EventType::kStepStarted;
  int64_t time_ns = 0;  // monotonic clock (the executor's MonotonicNowNs)
  std::string key;      // step, breaker or limit name; may be empty
  double value = 0.0;   // meaning per type: docs/events.md
  double value2 = 0.0;
  std::string detail;  // short free text (a transition "closed->open", ...)
};

struct SubscriptionStats {
  uint64_t delivered = 0;  // stored in the buffer
  uint64_t dropped = 0;    // refused: the buffer was full
  size_t pending = 0;      // in the buffer now
  size_t capacity = 0;
};

// One subscriber's bounded buffer. Obtained from EventBus::Subscribe; the
// handle keeps the buffer alive after Unsubscribe (remaining events can
// still be drained).
class EventSubscription {
 public:
  using Waker = std::function<void()>;

  EventSubscription(EventMask mask, size_t capacity, Waker waker);
  EventSubscription(const EventSubscription&) = delete;
  EventSubscription& operator=(const EventSubscription&) = delete;

  // Moves up to `max` buffered events (oldest first) to `out`; returns how
  // many. After it returns 0 the next stored event calls the waker.
  size_t Drain(std::vector<Event>* out, size_t max = SIZE_MAX);

  EventMask mask() const { return mask_; }
  size_t capacity() const { return capacity_; }
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  uint64_t delivered() const {
    return delivered_.load(std::memory_order_relaxed);
  }
  SubscriptionStats Stats() const;

 private:
  friend class EventBus;
  // Stores a copy of `e`, or drops it. True when the buffer went from empty
  // to non-empty (the caller then runs the waker, with no lock held).
  bool Offer(const Event& e);
  void Wake() const {
    if (waker_) waker_();
  }

  const EventMask mask_;
  const size_t capacity_;
  const Waker waker_;
  mutable Mutex mu_;
  std::vector<Event> ring_ ABSL_GUARDED_BY(mu_);  // capacity_ slots
  size_t head_ ABSL_GUARDED_BY(mu_) = 0;          // oldest event
  size_t size_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> dropped_{0};
};

struct EventBusStats {
  uint64_t published = 0;  // Publish calls some subscription wanted
  uint64_t delivered = 0;  // summed over subscriptions, past and present
  uint64_t dropped = 0;
  size_t subscribers = 0;
};

class EventBus {
 public:
  EventBus() = default;
  EventBus(const EventBus&) = delete;
  EventBus& operator=(const EventBus&) = delete;

  // Whether any subscription wants events of `type`: one relaxed load.
  bool Wants(EventType type) const {
    return (mask_.load(std::memory_order_relaxed) & MaskOf(type)) != 0;
  }

  // A new subscription to the types in `mask` (kAllEvents: all), buffering
  // at most `capacity` events (at least 1). `waker` may be empty.
  std::shared_ptr<EventSubscription> Subscribe(
      EventMask mask, size_t capacity, EventSubscription::Waker waker = {});
  // Removes the subscription (no more events reach it) and recomputes the
  // mask. Its buffered events stay drainable. False if it was not subscribed.
  bool Unsubscribe(const std::shared_ptr<EventSubscription>& sub);

  // Offers `event` to every subscription whose mask has its type. Never
  // blocks on a reader; drops (and counts) when a buffer is full.
  void Publish(const Event& event);

  EventBusStats Stats() const;
  size_t subscribers() const;

 private:
  using List = std::vector<std::shared_ptr<EventSubscription>>;

  mutable Mutex mu_;
  std::shared_ptr<const List> subs_ ABSL_GUARDED_BY(mu_) =
      std::make_shared<const List>();
  // Totals of subscriptions that were unsubscribed.
  uint64_t gone_delivered_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t gone_dropped_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<EventMask> mask_{0};
  std::atomic<uint64_t> published_{0};
};

}  // namespace caudal

#endif  // CAUDAL_TELEMETRY_EVENT_BUS_H_
