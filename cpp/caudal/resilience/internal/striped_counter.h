// StripedCounter: a 64-bit event counter that many threads bump without
// sharing a cache line. Internal to caudal/resilience; do not depend on it.
//
// Idea: kStripes cache-line-sized slots owned by the first kStripes threads
// that count in the process (indices are handed out once and never reused),
// plus kShared slots for every later thread. An owner is the only writer of
// its slot, so it adds with a plain load and store — no locked instruction
// (an uncontended fetch_add still costs ~20 cycles, a visible share of a
// sub-microsecond execution). Later threads fetch_add into a shared slot.
// Value() sums the slots; the count is exact.
//
// Thread-safety: Add() and Value() may run concurrently from any thread.
// Value() is not a snapshot: adds that race with it may or may not be in the
// sum. Reset() racing with Add() may drop those adds, or (an owner that
// read its slot before the reset) undo the reset of that slot. All accesses are
// relaxed; the counter orders nothing else.
//
// Cost: one thread_local read plus a plain add (owners) or an uncontended
// relaxed fetch_add (later threads); no cache-line ping-pong between
// threads. Memory: (kStripes + kShared) * 64 bytes.
#ifndef CAUDAL_RESILIENCE_INTERNAL_STRIPED_COUNTER_H_
#define CAUDAL_RESILIENCE_INTERNAL_STRIPED_COUNTER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "absl/base/optimization.h"

namespace caudal {
namespace resilience_internal {

// Hands out stripe indices round-robin; called once per thread.
size_t AssignStripe();

// The calling thread's stripe index, assigned on first use. The
// thread_local is constant-initialised, so reading it needs no TLS guard.
inline size_t ThreadStripe() {
  // initial-exec: no __tls_get_addr call from the Python extension module.
  static thread_local size_t stripe __attribute__((tls_model("initial-exec"))) =
      ~size_t{0};
  if (ABSL_PREDICT_FALSE(stripe == ~size_t{0})) stripe = AssignStripe();
  return stripe;
}

class StripedCounter {
 public:
  static constexpr size_t kStripes = 8;  // owned slots
  static constexpr size_t kShared = 4;   // power of two

  StripedCounter() = default;
  StripedCounter(const StripedCounter&) = delete;
  StripedCounter& operator=(const StripedCounter&) = delete;

  void Add(uint64_t n = 1) {
    const size_t index = ThreadStripe();
    if (ABSL_PREDICT_TRUE(index < kStripes)) {
      std::atomic<uint64_t>& v = slots_[index].value;  // this thread's alone
      v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
      return;
    }
    slots_[kStripes + (index & (kShared - 1))].value.fetch_add(
        n, std::memory_order_relaxed);
  }

  uint64_t Value() const {
    uint64_t sum = 0;
    for (const Slot& s : slots_) sum += s.value.load(std::memory_order_relaxed);
    return sum;
  }

  void Reset() {
    for (Slot& s : slots_) s.value.store(0, std::memory_order_relaxed);
  }

 private:
  struct alignas(64) Slot {
    std::atomic<uint64_t> value{0};
  };
  Slot slots_[kStripes + kShared];
};

}  // namespace resilience_internal
}  // namespace caudal

#endif  // CAUDAL_RESILIENCE_INTERNAL_STRIPED_COUNTER_H_
