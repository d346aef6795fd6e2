// CalibratedClock: a monotonic nanosecond clock read from a tick counter (the
// CPU's time-stamp counter) and kept on the system's monotonic clock.
//
// Why: where the kernel reads the TSC itself (clocksource "tsc"),
// clock_gettime(CLOCK_MONOTONIC) costs an ordered TSC read plus the vDSO's
// conversion: about 38 ns on the two-core virtual machines caudal is tested
// on, where a plain TSC read costs about 16. The execute path reads the clock
// two or three times, so each read counts.
//
// How: a read is base_ns + (ticks - base_ticks) * scale, from an anchor
// (base_ns, base_ticks, scale, span) that readers take from a seqlock without
// a locked instruction.
//   - Calibration. The clock starts on the system clock: every read is a
//     system read until kCalibrateNs have passed since construction. The
//     next read after that knows the tick rate, sets the first anchor and
//     switches to ticks.
//   - Re-anchoring. Each anchor is good for `span` ticks (about kAnchorNs).
//     The first read past it (one thread: the others go on from the old
//     anchor) reads the system clock and sets an anchor that continues from
//     the clock's current value, with the rate chosen to meet the system
//     clock again at the next re-anchor (a slew). The rate is measured over
//     the last 60 to 120 s (from the start, before that), so it follows the
//     system clock's own rate as NTP slews it; while the clock is read, the
//     distance to the system clock stays under a microsecond in practice
//     (the rate's error over one kAnchorNs; 25 µs at NTP's 500 ppm limit).
//   - Pauses. Past its span an anchor reads at the calibrated rate. After a
//     pause in reads the clock may be behind the system clock (it catches
//     up at once, a jump forward, when by more than kCatchUpNs) or ahead (it
//     slews back, at most a quarter slower, never backwards): by the rate's
//     error times the pause, microseconds for seconds.
//   - Fallback. If the two clocks disagree by more than kMaxSkewNs, plus
//     1000 ppm of any pause, at a re-anchor (ticks that stopped or jumped: a
//     migrated VM, a TSC the kernel has since stopped trusting), the clock
//     goes back to the system clock for good, never reading below a value
//     it has returned.
//
// Ordering: reads within one thread never go backwards; two threads' reads
// are ordered as far as their ticks are (the kernel uses the TSC as its
// clocksource only when it is synchronised across CPUs).
//
// `Src` provides `static int64_t SystemNs()` and `static uint64_t Ticks()`;
// tests substitute both (tests_cpp/executor/calibrated_clock_test.cc).
//
// Thread-safety: Now() may run on any number of threads at once; every
// shared field is an atomic.
#ifndef CAUDAL_EXECUTOR_CALIBRATED_CLOCK_H_
#define CAUDAL_EXECUTOR_CALIBRATED_CLOCK_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"

namespace caudal {

template <class Src>
class CalibratedClock {
 public:
  static constexpr int64_t kCalibrateNs = 10'000'000;       // 10 ms
  static constexpr int64_t kAnchorNs = 50'000'000;          // 50 ms
  static constexpr int64_t kMaxSkewNs = 1'000'000;          // 1 ms
  static constexpr int64_t kCatchUpNs = 20'000;             // 20 µs
  static constexpr int64_t kMaxPairNs = 50'000;             // 50 µs
  static constexpr int64_t kRateWindowNs = 60'000'000'000;  // 60 s

  enum class Mode : int { kSystem, kCalibrating, kTicks };

  // `use_ticks`: whether the ticks may be used at all (false: every read is
  // a system read).
  explicit CalibratedClock(bool use_ticks)
      : mode_(use_ticks ? Mode::kCalibrating : Mode::kSystem) {
    if (use_ticks) {
      const Pair p = ReadPair();
      origin_ns_.store(p.sys, std::memory_order_relaxed);
      origin_ticks_.store(p.mid(), std::memory_order_relaxed);
    }
  }
  CalibratedClock(const CalibratedClock&) = delete;
  CalibratedClock& operator=(const CalibratedClock&) = delete;

  int64_t Now() {
    if (ABSL_PREDICT_TRUE(mode_.load(std::memory_order_acquire) ==
                          Mode::kTicks)) {
      Anchor a;
      uint64_t t;
      // t - base_ticks wraps to a huge value when t is before the anchor
      // (ticks read on a CPU a few cycles behind): the slow path then.
      if (ABSL_PREDICT_TRUE(Read(&a, &t) && t - a.base_ticks < a.span)) {
        return a.base_ns + ToNs(t - a.base_ticks, a.scale);
      }
    }
    return Slow();
  }

  Mode mode() const { return mode_.load(std::memory_order_acquire); }

  // Ticks per second as calibrated (0 before calibration).
  double TicksPerSecond() const {
    const uint64_t rate = rate_.load(std::memory_order_relaxed);
    return rate == 0 ? 0.0 : 1e9 * 4294967296.0 / static_cast<double>(rate);
  }

  // For a child process after fork(): a calibration or re-anchor that
  // another thread of the parent was making never finishes in the child,
  // which goes on with the system clock if it was caught half-written.
  void AfterFork() {
    if ((seq_.load(std::memory_order_relaxed) & 1) != 0) {
      GiveUp(std::max(Src::SystemNs(),
                      base_ns_.load(std::memory_order_relaxed) + kMaxSkewNs));
      seq_.fetch_add(1, std::memory_order_release);
    }
    writing_.store(false, std::memory_order_relaxed);
  }

 private:
  // ns = ticks * scale / 2^32.
  static int64_t ToNs(uint64_t ticks, uint64_t scale) {
    return static_cast<int64_t>(
        (static_cast<unsigned __int128>(ticks) * scale) >> 32);
  }

  ABSL_ATTRIBUTE_NOINLINE int64_t Slow() {
    switch (mode_.load(std::memory_order_acquire)) {
      case Mode::kSystem:
        return std::max(Src::SystemNs(),
                        floor_ns_.load(std::memory_order_relaxed));
      case Mode::kCalibrating:
        return Calibrate();
      case Mode::kTicks:
        break;
    }
    if (!writing_.exchange(true, std::memory_order_acquire)) {
      const int64_t now = Reanchor();
      writing_.store(false, std::memory_order_release);
      return now;
    }
    return Extrapolate();  // another thread re-anchors
  }

  struct Anchor {
    int64_t base_ns;
    uint64_t base_ticks, scale, span, rate;
    // The reading at tick `t` (not before the anchor): `scale` within the
    // span, the calibrated rate past it (a slewed scale is meant for its
    // span only; past it, as after a pause in reads, it would drift).
    int64_t At(uint64_t t) const {
      const uint64_t d = t - base_ticks;
      if (d <= span) return base_ns + ToNs(d, scale);
      return base_ns + ToNs(span, scale) + ToNs(d - span, rate);
    }
  };

  // Inside Read (the seqlock checked around it), or by the writer.
  Anchor LoadAnchor() const {
    return {base_ns_.load(std::memory_order_relaxed),
            base_ticks_.load(std::memory_order_relaxed),
            scale_.load(std::memory_order_relaxed),
            span_.load(std::memory_order_relaxed),
            rate_.load(std::memory_order_relaxed)};
  }

  // One read of the seqlock: the anchor, then a tick read after it. False
  // when a writer was at work (the values may be torn: read again).
  bool Read(Anchor* a, uint64_t* t) const {
    const uint32_t s = seq_.load(std::memory_order_acquire);
    *a = LoadAnchor();
    *t = Src::Ticks();
    std::atomic_thread_fence(std::memory_order_acquire);
    return (s & 1) == 0 && seq_.load(std::memory_order_relaxed) == s;
  }

  // The current anchor's reading, however far past its span.
  int64_t Extrapolate() {
    for (int spins = 0;; ++spins) {
      if (mode_.load(std::memory_order_acquire) != Mode::kTicks) return Slow();
      Anchor a;
      uint64_t t;
      // Ticks behind the anchor read as the anchor.
      if (Read(&a, &t)) return t > a.base_ticks ? a.At(t) : a.base_ns;
      if (spins >= 64) std::this_thread::yield();  // a writer descheduled
    }
  }

  // Runs `write` (the one writer's) with the seqlock odd. The ticks a
  // writer reads inside are no earlier than those of any read of the old
  // anchor that succeeded, so an anchor that continues the old one at them
  // is never behind a value already returned.
  template <class F>
  void Write(F&& write) {
    const uint32_t s = seq_.load(std::memory_order_relaxed);
    seq_.store(s + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    write();
    seq_.store(s + 2, std::memory_order_release);
  }

  void Store(int64_t base_ns, uint64_t base_ticks, uint64_t scale,
             uint64_t span, uint64_t rate) {
    base_ns_.store(base_ns, std::memory_order_relaxed);
    base_ticks_.store(base_ticks, std::memory_order_relaxed);
    scale_.store(scale, std::memory_order_relaxed);
    span_.store(span, std::memory_order_relaxed);
    rate_.store(rate, std::memory_order_relaxed);
  }

  // A system read between two tick reads: the tick at the system time is
  // within [before, after]. The tightest of four tries, so that a thread
  // descheduled around one read does not pass its pause off as a skew.
  struct Pair {
    int64_t sys;
    uint64_t before, after;
    uint64_t mid() const { return before + (after - before) / 2; }
  };
  static Pair ReadPair() {
    Pair best{0, 0, ~uint64_t{0}};
    for (int i = 0; i < 4; ++i) {
      const uint64_t before = Src::Ticks();
      const int64_t sys = Src::SystemNs();
      const uint64_t after = Src::Ticks();
      if (after - before < best.after - best.before)
        best = {sys, before, after};
    }
    return best;
  }

  int64_t Calibrate() {
    const int64_t sys = Src::SystemNs();
    if (sys - origin_ns_.load(std::memory_order_relaxed) < kCalibrateNs ||
        writing_.exchange(true, std::memory_order_acquire)) {
      return sys;
    }
    int64_t now = sys;
    if (mode_.load(std::memory_order_acquire) == Mode::kCalibrating) {
      Write([&] {
        const Pair p = ReadPair();
        now = std::max(sys, p.sys);
        if (p.mid() <= origin_ticks_.load(std::memory_order_relaxed)) {
          GiveUp(now);  // the ticks did not move
          return;
        }
        const uint64_t rate = RateAt(p.sys, p.mid());
        // Descheduled around the system read: calibrate on a later read.
        if (ToNs(p.after - p.before, rate) > kMaxPairNs) return;
        // The anchor at the later tick, at the latest time it can stand
        // for: the tick clock starts at or ahead of the system clock, so a
        // thread going from system reads to tick reads never goes back.
        now = p.sys + ToNs(p.after - p.before, rate);
        Store(now, p.after, rate, SpanFor(rate), rate);
        mode_.store(Mode::kTicks, std::memory_order_release);
      });
    } else if (mode_.load(std::memory_order_acquire) == Mode::kTicks) {
      now = Extrapolate();
    }
    writing_.store(false, std::memory_order_release);
    return now;
  }

  // Called by the one writer: a new anchor that continues the old one, or
  // the system clock for good.
  int64_t Reanchor() {
    int64_t now = 0;
    Write([&] {
      const Pair p = ReadPair();
      // The anchor's tick: the later one, read with the seqlock odd.
      const uint64_t t = p.after;
      const Anchor a = LoadAnchor();
      if (p.before <= a.base_ticks) {
        // Ticks behind the anchor: read on a CPU a few cycles behind (read
        // as the anchor; a later read re-anchors), or a counter that went
        // back by more than an anchor's span (the system clock from now).
        now = a.base_ns;
        if (a.base_ticks - p.before > a.span) {
          now = std::max(p.sys, a.base_ns);
          GiveUp(now);
        }
        return;
      }
      now = a.At(t);
      // Descheduled around the system read: keep the anchor, and try again
      // on a later read.
      if (ToNs(p.after - p.before, a.rate) > kMaxPairNs) return;
      const int64_t skew = p.sys - a.At(p.mid());
      // How far the two may drift apart while nobody read the clock: the
      // time past the anchor's span, at 1000 ppm (twice NTP's largest
      // slewing). A disagreement beyond that and kMaxSkewNs is not drift:
      // the ticks jumped or stopped.
      const uint64_t past =
          t - a.base_ticks > a.span ? t - a.base_ticks - a.span : 0;
      const int64_t allowed = kMaxSkewNs + ToNs(past, a.rate) / 1000;
      if (skew > allowed || skew < -allowed ||
          p.mid() <= origin_ticks_.load(std::memory_order_relaxed)) {
        now = std::max(p.sys, now);
        GiveUp(now);
        return;
      }
      const uint64_t rate = RateAt(p.sys, p.mid());
      const uint64_t span = SpanFor(rate);
      // Behind by more than kCatchUpNs (after a pause in reads): catch up
      // at once, a jump forward. Otherwise meet the system clock (moving
      // at `rate`) at the next re-anchor: kAnchorNs + skew to cover in
      // `span` ticks, at most a quarter faster or slower than the rate (a
      // clock far ahead takes a few spans to come back).
      int64_t slew = skew;
      if (skew > kCatchUpNs) {
        now = p.sys + ToNs(t - p.mid(), rate);  // the system time at t
        slew = 0;
      }
      slew = std::clamp(slew, -kAnchorNs / 4, kAnchorNs / 4);
      const uint64_t slewed = static_cast<uint64_t>(
          (static_cast<unsigned __int128>(kAnchorNs + slew) << 32) / span);
      Store(now, t, slewed, span, rate);
      MoveOrigin(p.sys, p.mid());
    });
    return now;
  }

  // ns per tick, times 2^32, since the origin: over 60 to 120 s once the
  // clock has run that long, so that the rate follows the system clock's
  // (NTP slews it) rather than its average since the start.
  uint64_t RateAt(int64_t sys, uint64_t t) const {
    const unsigned __int128 ns =
        static_cast<uint64_t>(sys - origin_ns_.load(std::memory_order_relaxed));
    return static_cast<uint64_t>(
        (ns << 32) / (t - origin_ticks_.load(std::memory_order_relaxed)));
  }

  void MoveOrigin(int64_t sys, uint64_t t) {
    const int64_t age = sys - origin_ns_.load(std::memory_order_relaxed);
    if (age < kRateWindowNs) return;
    if (next_origin_ns_ == 0) {
      next_origin_ns_ = sys;
      next_origin_ticks_ = t;
    } else if (age >= 2 * kRateWindowNs) {
      origin_ns_.store(next_origin_ns_, std::memory_order_relaxed);
      origin_ticks_.store(next_origin_ticks_, std::memory_order_relaxed);
      next_origin_ns_ = sys;
      next_origin_ticks_ = t;
    }
  }

  static uint64_t SpanFor(uint64_t rate) {
    return static_cast<uint64_t>(
        (static_cast<unsigned __int128>(kAnchorNs) << 32) / rate);
  }

  // Back to the system clock for good, never below `floor_ns`.
  void GiveUp(int64_t floor_ns) {
    floor_ns_.store(floor_ns, std::memory_order_relaxed);
    mode_.store(Mode::kSystem, std::memory_order_release);
  }

  std::atomic<Mode> mode_;
  std::atomic<bool> writing_{false};  // a calibration or re-anchor under way
  std::atomic<uint32_t> seq_{0};      // odd while an anchor is written
  std::atomic<int64_t> base_ns_{0};
  std::atomic<uint64_t> base_ticks_{0};
  std::atomic<uint64_t> scale_{0};  // ns per tick, times 2^32
  std::atomic<uint64_t> span_{0};   // ticks the anchor is good for
  std::atomic<uint64_t> rate_{0};   // calibrated ns per tick, times 2^32
  std::atomic<int64_t> floor_ns_{INT64_MIN};
  // The rate's origin: set at construction, then by the one writer (atomic
  // for the calibration's check, which reads it before it is the writer).
  std::atomic<int64_t> origin_ns_{0};
  std::atomic<uint64_t> origin_ticks_{0};
  int64_t next_origin_ns_ = 0;  // the writer's alone; 0: none yet
  uint64_t next_origin_ticks_ = 0;
};

}  // namespace caudal

#endif  // CAUDAL_EXECUTOR_CALIBRATED_CLOCK_H_
