// OutcomeRing: the outcomes (success / failure) of the last N calls, for the
// circuit breaker's count-based sliding window. Internal to
// caudal/resilience; do not depend on it.
//
// Idea: one bit per slot in N/64 atomic words, bit set = failure. A call
// takes the next slot with a fetch_add on `head_` (position mod N) and
// overwrites the outcome that was there, i.e. the oldest one in the window.
// Failures() counts set bits, so there is no separate failure counter that
// could drift from the bits when writers race with each other or with
// Clear(): whatever interleaving happens, the count always equals the bits.
//
// Thread-safety: every method may run concurrently with every other. Under
// concurrency the window is "the last N slots taken", which may differ from
// the last N verdicts in wall-clock order by the few calls in flight.
//
// Cost: RecordSuccess is one fetch_add on the shared head plus one load, and
// a fetch_and only when it displaces a failure. RecordFailure is a fetch_add
// plus a fetch_or. Failures() is O(N / 64) popcounts (the breaker calls it
// on the failure path only). Memory: N / 8 bytes, rounded up to 8.
#ifndef CAUDAL_RESILIENCE_INTERNAL_OUTCOME_RING_H_
#define CAUDAL_RESILIENCE_INTERNAL_OUTCOME_RING_H_

#include <atomic>
#include <cstdint>
#include <memory>

namespace caudal {
namespace resilience_internal {

class OutcomeRing {
 public:
  // `size` > 0.
  explicit OutcomeRing(uint32_t size);
  OutcomeRing(const OutcomeRing&) = delete;
  OutcomeRing& operator=(const OutcomeRing&) = delete;

  void RecordSuccess() {
    const uint64_t slot = NextSlot();
    std::atomic<uint64_t>& word = words_[slot >> 6];
    const uint64_t bit = uint64_t{1} << (slot & 63);
    // Write only when a failure is displaced: a run of successes then costs
    // no store to the bit words.
    if (word.load(std::memory_order_relaxed) & bit) {
      word.fetch_and(~bit, std::memory_order_relaxed);
    }
  }

  void RecordFailure() {
    const uint64_t slot = NextSlot();
    words_[slot >> 6].fetch_or(uint64_t{1} << (slot & 63),
                               std::memory_order_relaxed);
  }

  // Calls recorded since construction or the last Clear(), at most size().
  uint32_t Calls() const;
  // Failures among the calls in the window.
  uint32_t Failures() const;
  // Empties the window.
  void Clear();

  uint32_t size() const { return size_; }

 private:
  uint64_t NextSlot() {
    return head_.fetch_add(1, std::memory_order_relaxed) % size_;
  }

  // Read-only after construction, read on every call.
  const uint32_t size_;
  const uint32_t num_words_;
  const std::unique_ptr<std::atomic<uint64_t>[]> words_;
  // Written on every call: on a cache line of its own (the class is 64-byte
  // aligned, so nothing after it shares the line either), so that readers of
  // the fields above do not pull it back and forth.
  alignas(64) std::atomic<uint64_t> head_{0};
};

}  // namespace resilience_internal
}  // namespace caudal

#endif  // CAUDAL_RESILIENCE_INTERNAL_OUTCOME_RING_H_
