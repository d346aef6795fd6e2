// StripedCounter: a 64-bit event counter that many threads bump without
// sharing a cache line. Internal to caudal/resilience; do not depend on it.
//
// Idea: kStripes cache-line-sized slots; each thread is given a slot index
// once (round-robin, on its first Add in the process) and only ever adds to
// that slot, so two threads collide only when there are more threads than
// stripes. Value() sums the slots.
//
// Thread-safety: Add() and Value() may run concurrently from any thread.
// Value() is not a snapshot: adds that race with it may or may not be in the
// sum. Reset() racing with Add() may drop those adds. All accesses are
// relaxed; the counter orders nothing else.
//
// Cost: one thread_local read plus one uncontended relaxed fetch_add (about
// as cheap as a single atomic increment, without the cache-line ping-pong a
// shared counter suffers when several threads count at once). Memory:
// kStripes * 64 bytes.
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
  static thread_local size_t stripe = ~size_t{0};
  if (ABSL_PREDICT_FALSE(stripe == ~size_t{0})) stripe = AssignStripe();
  return stripe;
}

class StripedCounter {
 public:
  static constexpr size_t kStripes = 8;  // power of two

  StripedCounter() = default;
  StripedCounter(const StripedCounter&) = delete;
  StripedCounter& operator=(const StripedCounter&) = delete;

  void Add(uint64_t n = 1) {
    slots_[ThreadStripe() & (kStripes - 1)].value.fetch_add(
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
  Slot slots_[kStripes];
};

}  // namespace resilience_internal
}  // namespace caudal

#endif  // CAUDAL_RESILIENCE_INTERNAL_STRIPED_COUNTER_H_
