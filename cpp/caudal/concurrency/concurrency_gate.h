// ConcurrencyGate: the executor's concurrency limit (global or per key), with
// a FIFO queue of waiters that are handed permits directly.
//
// W is an opaque waiter handle owned by the caller (the Python bindings use
// a pointer or id of an asyncio future; tests use int). It must be copyable,
// equality-comparable and hashable with absl::Hash, and unique among the
// waiters currently queued.
//
// Protocol:
//   if (gate.TryAcquire()) run();                     // fast path, no lock
//   else if (gate.AcquireOrEnqueue(w)) run();         // slow path, locked
//   else await w;                                     // woken with a permit
//   ...
//   if (auto next = gate.Release()) wake(*next);      // permit moves to next
// A waiter that gives up calls Cancel(w): true means it left the queue
// holding nothing; false means it was handed a permit in the meantime (its
// wake-up is on the way) and it must Release() that permit.
//
// Design. One 64-bit atomic word holds in_flight and waiting (24 bits each,
// plus the fast path's acquisition count), so the lock-free paths see the
// two counts together:
//   - TryAcquire increments in_flight only while waiting == 0 and
//     in_flight < limit: it never barges past a queued waiter.
//   - Release decrements in_flight without a lock only while waiting == 0;
//     otherwise it takes the lock and gives the slot to the head waiter
//     (in_flight unchanged, waiting - 1).
//   - waiting changes only under mu_, together with the queue.
// Invariant (outside mu_): waiting > 0 implies in_flight >= limit. So a
// waiter is never stranded while a permit is free: every path that frees a
// slot while someone waits hands that slot to a waiter, and Enqueue decides
// "full, so wait" with the same compare-and-swap that publishes waiting + 1.
// No thundering herd: each freed permit wakes exactly one waiter.
//
// Thread-safety: all methods may be called from any thread.
// Cost: TryAcquire and Release without waiters are one CAS each on the state
// word (about 7 ns each uncontended), nothing else locked. Limits: at most
// kMaxCount (16,777,215) permits in flight and waiters queued. The slow path
// takes a caudal::Mutex; Enqueue and Cancel are O(1) (list + hash index).
#ifndef CAUDAL_CONCURRENCY_CONCURRENCY_GATE_H_
#define CAUDAL_CONCURRENCY_CONCURRENCY_GATE_H_

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cstdint>
#include <list>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "caudal/base/mutex.h"

namespace caudal {

struct GateCounters {
  int64_t acquired = 0;     // permits granted (fast path, slow path, handoff)
  int64_t waited = 0;       // waiters that entered the queue
  int64_t cancelled = 0;    // waiters that left the queue by Cancel
  int64_t max_waiting = 0;  // longest queue seen
};

template <typename W>
class ConcurrencyGate {
 public:
  // limit < 0 is treated as 0 (everyone waits until SetLimit raises it).
  explicit ConcurrencyGate(int limit) : limit_(std::max(0, limit)) {}

  ConcurrencyGate(const ConcurrencyGate&) = delete;
  ConcurrencyGate& operator=(const ConcurrencyGate&) = delete;

  // Takes a permit if one is free and nobody is queued. Lock-free.
  bool TryAcquire();

  // Takes a permit if one is free and nobody is queued (true); otherwise
  // queues `waiter` at the back (false) to be handed a permit later by
  // Release or SetLimit. Use after TryAcquire failed: deciding and queueing
  // under one lock is what keeps a concurrent Release from stranding it.
  bool AcquireOrEnqueue(W waiter);

  // Gives a permit back. If someone waits, the permit goes to the first
  // waiter instead, which is returned for the caller to wake (it now holds
  // the permit and must Release it in turn). Calling Release without holding
  // a permit is a bug.
  std::optional<W> Release();

  // Removes a queued waiter. False if it is not queued -- it was already
  // handed a permit (the caller must Release it) or never queued.
  bool Cancel(const W& waiter);

  // Sets the limit (< 0 means 0). Raising it hands the new permits to
  // waiters in FIFO order and returns them for the caller to wake. Lowering
  // it never revokes permits: in_flight drains down to the new limit as
  // permits are released.
  std::vector<W> SetLimit(int limit);

  int limit() const { return limit_.load(std::memory_order_relaxed); }
  int in_flight() const {
    return InFlight(state_.load(std::memory_order_relaxed));
  }
  int waiting() const {
    return Waiting(state_.load(std::memory_order_relaxed));
  }
  GateCounters counters() const;

 private:
  // The state word: fast-path acquisitions (low 16 bits of the count, the
  // rest in fast_acquired_high_) | in_flight (24 bits) | waiting (24 bits).
  // Counting fast-path acquisitions in the CAS that takes the permit saves a
  // locked instruction per acquisition; the count wraps out of the top of
  // the word, never into in_flight.
  static constexpr int kFieldBits = 24;
  static constexpr uint64_t kFieldMask = (uint64_t{1} << kFieldBits) - 1;
  static constexpr uint64_t kOneWaiting = 1;
  static constexpr uint64_t kOneInFlight = uint64_t{1} << kFieldBits;
  static constexpr uint64_t kOneFastAcquired = uint64_t{1} << (2 * kFieldBits);
  static int InFlight(uint64_t s) {
    return static_cast<int>((s >> kFieldBits) & kFieldMask);
  }
  static int Waiting(uint64_t s) { return static_cast<int>(s & kFieldMask); }
  static uint64_t FastAcquiredLow(uint64_t s) { return s >> (2 * kFieldBits); }

 public:
  // The most permits in flight, and waiters queued, a gate can count.
  static constexpr int kMaxCount = static_cast<int>(kFieldMask);

 private:
  // Pops the head waiter; the caller has already moved its count from
  // waiting to in_flight in state_.
  W PopFrontLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::atomic<uint64_t> state_{0};    // in_flight << 32 | waiting
  std::atomic<int> limit_;            // written under mu_, read anywhere
  std::atomic<int64_t> acquired_{0};  // slow-path acquisitions and handoffs
  std::atomic<int64_t> fast_acquired_high_{0};  // wraps of the state's count
  std::atomic<int64_t> waited_{0};
  std::atomic<int64_t> cancelled_{0};
  std::atomic<int64_t> max_waiting_{0};

  Mutex mu_;
  std::list<W> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<W, typename std::list<W>::iterator> index_
      ABSL_GUARDED_BY(mu_);
};

// ------------------------------------------------------------------------
// Implementation (a template, so it lives in the header; common
// instantiations are compiled once in concurrency_gate.cc).

template <typename W>
bool ConcurrencyGate<W>::TryAcquire() {
  uint64_t s = state_.load(std::memory_order_relaxed);
  const int limit = limit_.load(std::memory_order_relaxed);
  while (Waiting(s) == 0 && InFlight(s) < limit) {
    const uint64_t next = s + kOneInFlight + kOneFastAcquired;
    if (state_.compare_exchange_weak(s, next, std::memory_order_acq_rel,
                                     std::memory_order_relaxed)) {
      if (FastAcquiredLow(next) == 0) {  // the 16-bit count wrapped
        fast_acquired_high_.fetch_add(1, std::memory_order_relaxed);
      }
      return true;
    }
  }
  return false;
}

template <typename W>
bool ConcurrencyGate<W>::AcquireOrEnqueue(W waiter) {
  MutexLock lock(&mu_);
  assert(!index_.contains(waiter) && "waiter is already queued");
  const int limit = limit_.load(std::memory_order_relaxed);
  uint64_t s = state_.load(std::memory_order_relaxed);
  for (;;) {
    const bool free = Waiting(s) == 0 && InFlight(s) < limit;
    const uint64_t next = free ? s + kOneInFlight : s + kOneWaiting;
    if (state_.compare_exchange_weak(s, next, std::memory_order_acq_rel,
                                     std::memory_order_relaxed)) {
      if (free) {
        acquired_.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
      break;
    }
  }
  auto it = queue_.insert(queue_.end(), std::move(waiter));
  index_.emplace(*it, it);
  waited_.fetch_add(1, std::memory_order_relaxed);
  const int64_t n = static_cast<int64_t>(queue_.size());
  if (n > max_waiting_.load(std::memory_order_relaxed)) {
    max_waiting_.store(n, std::memory_order_relaxed);
  }
  return false;
}

template <typename W>
std::optional<W> ConcurrencyGate<W>::Release() {
  uint64_t s = state_.load(std::memory_order_relaxed);
  while (Waiting(s) == 0) {
    assert(InFlight(s) > 0 && "Release without a permit");
    if (state_.compare_exchange_weak(s, s - kOneInFlight,
                                     std::memory_order_acq_rel,
                                     std::memory_order_relaxed)) {
      return std::nullopt;
    }
  }
  MutexLock lock(&mu_);
  const int limit = limit_.load(std::memory_order_relaxed);
  s = state_.load(std::memory_order_relaxed);
  for (;;) {
    // Hand over only if, after giving ours back, a slot would be free.
    const bool hand_over = Waiting(s) > 0 && InFlight(s) <= limit;
    const uint64_t next = hand_over ? s - kOneWaiting : s - kOneInFlight;
    if (state_.compare_exchange_weak(s, next, std::memory_order_acq_rel,
                                     std::memory_order_relaxed)) {
      if (!hand_over) return std::nullopt;
      acquired_.fetch_add(1, std::memory_order_relaxed);
      return PopFrontLocked();
    }
  }
}

template <typename W>
bool ConcurrencyGate<W>::Cancel(const W& waiter) {
  MutexLock lock(&mu_);
  auto it = index_.find(waiter);
  if (it == index_.end()) return false;
  queue_.erase(it->second);
  index_.erase(it);
  state_.fetch_sub(kOneWaiting, std::memory_order_acq_rel);
  cancelled_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

template <typename W>
std::vector<W> ConcurrencyGate<W>::SetLimit(int limit) {
  limit = std::max(0, limit);
  std::vector<W> woken;
  MutexLock lock(&mu_);
  limit_.store(limit, std::memory_order_relaxed);
  uint64_t s = state_.load(std::memory_order_relaxed);
  while (Waiting(s) > 0 && InFlight(s) < limit) {
    if (state_.compare_exchange_weak(s, s + kOneInFlight - kOneWaiting,
                                     std::memory_order_acq_rel,
                                     std::memory_order_relaxed)) {
      acquired_.fetch_add(1, std::memory_order_relaxed);
      woken.push_back(PopFrontLocked());
      s = state_.load(std::memory_order_relaxed);
    }
  }
  return woken;
}

template <typename W>
W ConcurrencyGate<W>::PopFrontLocked() {
  assert(!queue_.empty());
  W front = std::move(queue_.front());
  queue_.pop_front();
  index_.erase(front);
  return front;
}

template <typename W>
GateCounters ConcurrencyGate<W>::counters() const {
  GateCounters c;
  const uint64_t s = state_.load(std::memory_order_relaxed);
  c.acquired = acquired_.load(std::memory_order_relaxed) +
               (fast_acquired_high_.load(std::memory_order_relaxed)
                << (64 - 2 * kFieldBits)) +
               static_cast<int64_t>(FastAcquiredLow(s));
  c.waited = waited_.load(std::memory_order_relaxed);
  c.cancelled = cancelled_.load(std::memory_order_relaxed);
  c.max_waiting = max_waiting_.load(std::memory_order_relaxed);
  return c;
}

extern template class ConcurrencyGate<uint64_t>;
extern template class ConcurrencyGate<void*>;

}  // namespace caudal

#endif  // CAUDAL_CONCURRENCY_CONCURRENCY_GATE_H_
