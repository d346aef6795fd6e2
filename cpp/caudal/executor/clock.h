// The executor's time: the monotonic clock, or a ManualClock that tests move
// by hand.
//
// Every time the executor and its components use (cache TTLs, the breaker's
// recovery timeout, limiter windows, latencies, maintenance intervals) comes
// from Executor::NowNs(): MonotonicNowNs() unless the executor was made with
// a ManualClock, which then is the only source. The hot path pays one
// well-predicted null check for the choice.
//
// Thread-safety: ManualClock is an atomic; any thread may read or advance it.
#ifndef CAUDAL_EXECUTOR_CLOCK_H_
#define CAUDAL_EXECUTOR_CLOCK_H_

#include <atomic>
#include <cstdint>

namespace caudal {

// Monotonic clock in nanoseconds (the default time source): the system's
// CLOCK_MONOTONIC, read from the CPU's time-stamp counter where the kernel
// keeps time with it (calibrated_clock.h), within microseconds of
// clock_gettime(CLOCK_MONOTONIC) and about half its cost. CAUDAL_CLOCK=system
// in the environment (read once, at the first read) keeps the system clock.
int64_t MonotonicNowNs();

// Which source MonotonicNowNs reads: "tsc", "tsc (calibrating)" (the first
// 10 ms) or "system".
const char* MonotonicClockSource();
// The time-stamp counter's calibrated rate (0: not calibrated).
double MonotonicClockTicksPerSecond();

// A clock that moves only when told to.
class ManualClock {
 public:
  // 1000 s: far from 0, which some readers take as "never".
  static constexpr int64_t kStartNs = 1'000'000'000'000;
  explicit ManualClock(int64_t start_ns = kStartNs) : now_ns_(start_ns) {}
  ManualClock(const ManualClock&) = delete;
  ManualClock& operator=(const ManualClock&) = delete;

  int64_t now_ns() const { return now_ns_.load(std::memory_order_acquire); }
  // Moves the time forward by `ns` (>= 0: never backwards); the new time.
  int64_t Advance(int64_t ns) {
    if (ns < 0) ns = 0;
    return now_ns_.fetch_add(ns, std::memory_order_acq_rel) + ns;
  }

 private:
  std::atomic<int64_t> now_ns_;
};

}  // namespace caudal

#endif  // CAUDAL_EXECUTOR_CLOCK_H_
