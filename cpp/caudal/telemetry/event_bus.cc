#include "caudal/telemetry/event_bus.h"

#include <algorithm>
#include <utility>

namespace caudal {
namespace {

constexpr absl::string_view kNames[kEventTypeCount] = {
    "step_started",       "step_finished",        "step_failed",
    "cache_hit",          "cache_miss",           "breaker_transition",
    "limit_changed",      "memory_pressure",      "config_changed",
    "pool_queue_full",    "step_cancelled",       "regression_detected",
    "regression_cleared", "optimization_applied",
};

}  // namespace

absl::string_view EventTypeName(EventType type) {
  const int i = static_cast<int>(type);
  return i >= 0 && i < kEventTypeCount ? kNames[i] : absl::string_view("?");
}

absl::optional<EventType> EventTypeFromName(absl::string_view name) {
  for (int i = 0; i < kEventTypeCount; ++i) {
    if (kNames[i] == name) return static_cast<EventType>(i);
  }
  return absl::nullopt;
}

EventSubscription::EventSubscription(EventMask mask, size_t capacity,
                                     Waker waker)
    : mask_(mask),
      capacity_(std::max<size_t>(capacity, 1)),
      waker_(std::move(waker)) {
  MutexLock lock(&mu_);
  ring_.resize(capacity_);
}

bool EventSubscription::Offer(const Event& e) {
  MutexLock lock(&mu_);
  if (size_ == capacity_) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  size_t tail = head_ + size_;
  if (tail >= capacity_) tail -= capacity_;
  ring_[tail] = e;
  ++size_;
  delivered_.fetch_add(1, std::memory_order_relaxed);
  return size_ == 1;
}

size_t EventSubscription::Drain(std::vector<Event>* out, size_t max) {
  MutexLock lock(&mu_);
  const size_t n = std::min(size_, max);
  for (size_t i = 0; i < n; ++i) {
    out->push_back(std::move(ring_[head_]));
    ring_[head_] = Event();
    if (++head_ == capacity_) head_ = 0;
  }
  size_ -= n;
  if (size_ == 0) head_ = 0;
  return n;
}

SubscriptionStats EventSubscription::Stats() const {
  SubscriptionStats s;
  s.delivered = delivered();
  s.dropped = dropped();
  s.capacity = capacity_;
  MutexLock lock(&mu_);
  s.pending = size_;
  return s;
}

std::shared_ptr<EventSubscription> EventBus::Subscribe(
    EventMask mask, size_t capacity, EventSubscription::Waker waker) {
  auto sub = std::make_shared<EventSubscription>(mask & kAllEvents, capacity,
                                                 std::move(waker));
  MutexLock lock(&mu_);
  auto next = std::make_shared<List>(*subs_);
  next->push_back(sub);
  subs_ = std::move(next);
  mask_.fetch_or(sub->mask(), std::memory_order_relaxed);
  return sub;
}

bool EventBus::Unsubscribe(const std::shared_ptr<EventSubscription>& sub) {
  MutexLock lock(&mu_);
  auto next = std::make_shared<List>();
  next->reserve(subs_->size());
  EventMask mask = 0;
  bool found = false;
  for (const auto& s : *subs_) {
    if (s == sub) {
      found = true;
      continue;
    }
    next->push_back(s);
    mask |= s->mask();
  }
  if (!found) return false;
  gone_delivered_ += sub->delivered();
  gone_dropped_ += sub->dropped();
  subs_ = std::move(next);
  mask_.store(mask, std::memory_order_relaxed);
  return true;
}

void EventBus::Publish(const Event& event) {
  const EventMask bit = MaskOf(event.type);
  if ((mask_.load(std::memory_order_relaxed) & bit) == 0) return;
  std::shared_ptr<const List> subs;
  {
    MutexLock lock(&mu_);
    subs = subs_;
  }
  bool any = false;
  for (const auto& s : *subs) {
    if ((s->mask() & bit) == 0) continue;
    any = true;
    if (s->Offer(event)) s->Wake();
  }
  if (any) published_.fetch_add(1, std::memory_order_relaxed);
}

EventBusStats EventBus::Stats() const {
  EventBusStats st;
  st.published = published_.load(std::memory_order_relaxed);
  MutexLock lock(&mu_);
  st.delivered = gone_delivered_;
  st.dropped = gone_dropped_;
  for (const auto& s : *subs_) {
    st.delivered += s->delivered();
    st.dropped += s->dropped();
  }
  st.subscribers = subs_->size();
  return st;
}

size_t EventBus::subscribers() const {
  MutexLock lock(&mu_);
  return subs_->size();
}

}  // namespace caudal
