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
// Lazy stripes. A counter starts as one shared word (16 bytes in all) and
// allocates its stripes when that word reaches kEarly: a breaker of a step
// run a few times (one of many distinct names) never pays for 768 bytes of
// cache lines. The first kEarly adds are a relaxed fetch_add each.
//
// Thread-safety: Add() and Value() may run concurrently from any thread.
// Value() is not a snapshot: adds that race with it may or may not be in the
// sum. Reset() racing with Add() may drop those adds, or (an owner that
// read its slot before the reset) undo the reset of that slot. All accesses are
// relaxed; the counter orders nothing else.
//
// Cost: one thread_local read plus a plain add (owners) or an uncontended
// relaxed fetch_add (later threads); no cache-line ping-pong between
// threads. Memory: 16 bytes, then (kStripes + kShared) * 64 more.
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

  static constexpr uint64_t kEarly = 64;  // adds before the stripes exist

  StripedCounter() = default;
  ~StripedCounter();
  StripedCounter(const StripedCounter&) = delete;
  StripedCounter& operator=(const StripedCounter&) = delete;

  void Add(uint64_t n = 1) {
    Slot* slots = slots_.load(std::memory_order_acquire);
    if (ABSL_PREDICT_FALSE(slots == nullptr)) {
      AddEarly(n);
      return;
    }
    const size_t index = ThreadStripe();
    if (ABSL_PREDICT_TRUE(index < kStripes)) {
      std::atomic<uint64_t>& v = slots[index].value;  // this thread's alone
      v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
      return;
    }
    slots[kStripes + (index & (kShared - 1))].value.fetch_add(
        n, std::memory_order_relaxed);
  }

  uint64_t Value() const;
  void Reset();

 private:
  struct alignas(64) Slot {
    std::atomic<uint64_t> value{0};
  };
  void AddEarly(uint64_t n);

  std::atomic<uint64_t> early_{0};
  std::atomic<Slot*> slots_{nullptr};  // kStripes + kShared, once allocated
};

}  // namespace resilience_internal
}  // namespace caudal

#endif  // CAUDAL_RESILIENCE_INTERNAL_STRIPED_COUNTER_H_
