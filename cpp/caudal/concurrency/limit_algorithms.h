// Adaptive concurrency limit algorithms: pure state machines that turn a
// stream of completed-request samples into a concurrency limit.
//
// Each algorithm sees one sample per call,
//   OnSample(start_ns, rtt_ns, inflight, did_drop) -> new limit,
// where start_ns is when the request was admitted, rtt_ns how long it took,
// inflight how many requests were in flight when it was admitted, and
// did_drop whether it failed in a way that signals overload (a rejection or
// an overload error downstream). No clock and no random source is read inside:
// the caller passes the time, so tests can say "after exactly these samples the
// limit is 21".
//
// The formulas are modelled on Netflix concurrency-limits (AIMDLimit,
// Gradient2Limit, VegasLimit; Apache-2.0,
// github.com/Netflix/concurrency-limits) and on TCP congestion control,
// re-derived here; each class documents its formula and where it deviates.
//
// Thread-safety: none. An algorithm instance is owned by one limiter, which
// serializes calls (e.g. under its own mutex, or per event-loop thread).
// limit() may be read concurrently only through the owner.
//
// Cost: O(1) per sample, no allocation, a few floating-point operations
// (BaselineGradientLimit also sorts at most 64 numbers when a window closes).
#ifndef CAUDAL_CONCURRENCY_LIMIT_ALGORITHMS_H_
#define CAUDAL_CONCURRENCY_LIMIT_ALGORITHMS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace caudal {

class LimitAlgorithm {
 public:
  virtual ~LimitAlgorithm() = default;

  // Feeds one completed request; returns the new limit (always >= 1).
  virtual int OnSample(int64_t start_ns, int64_t rtt_ns, int inflight,
                       bool did_drop) = 0;

  // The current limit (always >= 1).
  virtual int limit() const = 0;
};

// A fixed limit; samples are ignored. Useful when max_concurrent_executions
// is set, so the limiter code has one shape.
class FixedLimit final : public LimitAlgorithm {
 public:
  explicit FixedLimit(int limit) : limit_(limit < 1 ? 1 : limit) {}
  int OnSample(int64_t, int64_t, int, bool) override { return limit_; }
  int limit() const override { return limit_; }

 private:
  int limit_;
};

// Loss-based additive-increase / multiplicative-decrease (TCP Reno's
// congestion window; concurrency-limits' AIMDLimit):
//
//   on drop, or rtt > timeout:   limit = max(min, min(limit - 1,
//                                                     floor(limit * backoff)))
//   else if inflight*2 >= limit: limit = min(max, limit + 1)
//   else:                        unchanged  (app-limited: too little load to
//                                            learn anything about the limit)
class AimdLimit final : public LimitAlgorithm {
 public:
  struct Options {
    int initial_limit = 20;
    int min_limit = 1;
    int max_limit = 200;
    double backoff_ratio = 0.9;          // in [0.5, 1)
    int64_t timeout_ns = 5'000'000'000;  // rtt above this counts as drop
  };

  // kInvalidArgument naming the first bad field.
  static absl::Status Validate(const Options& options);
  static absl::StatusOr<AimdLimit> Create(const Options& options);
  AimdLimit() : AimdLimit(Options()) {}

  int OnSample(int64_t start_ns, int64_t rtt_ns, int inflight,
               bool did_drop) override;
  int limit() const override { return limit_; }

 private:
  explicit AimdLimit(const Options& options);

  Options options_;
  int limit_;
};

// Exponential moving average with a warm-up: the first `warmup` samples are
// averaged plainly, later ones with factor 2 / (window + 1) (the usual
// "N-period EMA"). Used for Gradient's long-term RTT.
class ExpAverage {
 public:
  ExpAverage(int window, int warmup)
      : factor_(2.0 / (window + 1)), warmup_(warmup) {}

  double Add(double sample);
  double value() const { return value_; }
  // Multiplies the current value (used to pull a stale long RTT down).
  void Scale(double by) { value_ *= by; }

 private:
  double factor_;
  int warmup_;
  int count_ = 0;
  double sum_ = 0;
  double value_ = 0;
};

// Delay-gradient limit in the style of concurrency-limits' Gradient2Limit
// (with the rtt tolerance of its earlier versions). The short-term RTT is the
// sample's own rtt (feed it through WindowedLimit to make it a window
// average); the long-term RTT is an ExpAverage of the same samples.
//
//   long  = ema(rtt); if long / rtt > 2: long *= 0.9   (recover quickly
//                                                       after an overload)
//   if inflight < limit / 2: unchanged                  (app-limited)
//   gradient = clamp(tolerance * long / rtt, 0.5, 1.0)
//   target   = limit * gradient + queue_size(limit)
//   limit    = clamp(limit * (1 - smoothing) + target * smoothing, min, max)
//
// The limit is kept as a double; limit() is its floor. With a steady rtt and
// the defaults (queue 4, smoothing 0.2) it grows 0.8 per sample; when rtt
// exceeds tolerance * long it shrinks, by at most half of the smoothed step.
class GradientLimit final : public LimitAlgorithm {
 public:
  struct Options {
    int initial_limit = 20;
    int min_limit = 20;
    int max_limit = 200;
    double smoothing = 0.2;      // in (0, 1]
    double rtt_tolerance = 1.5;  // >= 1: how much slower than the long-term
                                 // RTT a sample may be before the limit drops
    int long_window = 600;       // EMA period of the long-term RTT, samples
    int warmup_window = 10;      // samples averaged plainly first
    // Headroom added to the limit each update, as a function of the current
    // (integer) limit. Default: 4, as in Gradient2Limit.
    std::function<int(int limit)> queue_size = [](int) { return 4; };
  };

  static absl::Status Validate(const Options& options);
  static absl::StatusOr<GradientLimit> Create(Options options);
  GradientLimit() : GradientLimit(Options()) {}

  int OnSample(int64_t start_ns, int64_t rtt_ns, int inflight,
               bool did_drop) override;
  int limit() const override { return static_cast<int>(estimated_); }

  double estimated_limit() const { return estimated_; }
  double long_rtt_ns() const { return long_rtt_.value(); }

 private:
  explicit GradientLimit(Options options);

  Options options_;
  double estimated_;
  ExpAverage long_rtt_;
};

// Delay-based limit in the style of TCP Vegas (concurrency-limits'
// VegasLimit). rtt_noload is the smallest rtt seen; the queue the limit is
// building is estimated as
//
//   queue = ceil(limit * (1 - rtt_noload / rtt))
//
// and, with L = max(1, floor(log10(limit))):
//   did_drop:                 limit -= L
//   inflight*2 < limit:       unchanged (app-limited)
//   queue <= L:               limit += beta      (no queueing: grow fast)
//   queue <  alpha:           limit += L
//   queue >  beta:            limit -= L         (queueing: back off)
//   otherwise:                unchanged
// where alpha = alpha_factor * L and beta = beta_factor * L (3 and 6 by
// default), then limit = clamp(limit, min, max) and
// limit = (1 - smoothing) * old + smoothing * limit.
//
// A sample with a new smallest rtt only records it (no limit change) unless
// it dropped. Every probe_multiplier * limit samples the next sample resets
// rtt_noload (the base RTT may have grown, e.g. after a deploy).
// Deviations from VegasLimit: the probe interval has no random jitter (time
// and randomness are inputs here; a caller wanting jitter varies
// probe_multiplier), L is log10 for every limit (VegasLimit switches to sqrt
// above 1000), a drop always lowers the limit, and min_limit is configurable.
class VegasLimit final : public LimitAlgorithm {
 public:
  struct Options {
    int initial_limit = 20;
    int min_limit = 1;
    int max_limit = 1000;
    double smoothing = 1.0;  // in (0, 1]
    int alpha_factor = 3;
    int beta_factor = 6;        // >= alpha_factor
    int probe_multiplier = 30;  // 0 disables probing
  };

  static absl::Status Validate(const Options& options);
  static absl::StatusOr<VegasLimit> Create(const Options& options);
  VegasLimit() : VegasLimit(Options()) {}

  int OnSample(int64_t start_ns, int64_t rtt_ns, int inflight,
               bool did_drop) override;
  int limit() const override { return static_cast<int>(estimated_); }

  double estimated_limit() const { return estimated_; }
  int64_t rtt_noload_ns() const { return rtt_noload_ns_; }

  // max(1, floor(log10(n))).
  static int Log10Root(int n);

 private:
  explicit VegasLimit(const Options& options);

  Options options_;
  double estimated_;
  int64_t rtt_noload_ns_ = 0;
  int64_t probe_count_ = 0;
};

// Aggregated samples of one window: what WindowedLimit hands its delegate.
class LatencyWindow {
 public:
  void Add(int64_t rtt_ns, int inflight, bool did_drop);
  void Reset() { *this = LatencyWindow(); }

  int64_t count() const { return count_; }
  int64_t average_rtt_ns() const { return count_ ? sum_rtt_ns_ / count_ : 0; }
  int64_t min_rtt_ns() const { return min_rtt_ns_; }
  int max_inflight() const { return max_inflight_; }
  bool did_drop() const { return did_drop_; }

 private:
  int64_t count_ = 0;
  int64_t sum_rtt_ns_ = 0;
  int64_t min_rtt_ns_ = INT64_MAX;
  int max_inflight_ = 0;
  bool did_drop_ = false;
};

// Batches samples into time windows and feeds the delegate one aggregated
// sample per window (average rtt, max inflight, any drop), as
// concurrency-limits' WindowedLimit does. This both smooths the short-term
// RTT and keeps the per-request cost to a few additions.
//
// A window closes at the first sample whose end (start + rtt) reaches the
// window's end, provided it holds at least min_samples samples; otherwise it
// keeps collecting. The next window lasts clamp(2 * min rtt of the closed
// window, min_window_ns, max_window_ns). Samples with rtt below
// min_rtt_threshold_ns are ignored (too fast to carry a signal, e.g. cache
// hits).
class WindowedLimit final : public LimitAlgorithm {
 public:
  struct Options {
    int64_t min_window_ns = 1'000'000'000;
    int64_t max_window_ns = 1'000'000'000;
    int min_samples = 10;
    int64_t min_rtt_threshold_ns = 100'000;
  };

  static absl::Status Validate(const Options& options);
  static absl::StatusOr<std::unique_ptr<WindowedLimit>> Create(
      const Options& options, std::unique_ptr<LimitAlgorithm> delegate);

  int OnSample(int64_t start_ns, int64_t rtt_ns, int inflight,
               bool did_drop) override;
  int limit() const override { return delegate_->limit(); }

  const LimitAlgorithm& delegate() const { return *delegate_; }

 private:
  WindowedLimit(const Options& options,
                std::unique_ptr<LimitAlgorithm> delegate)
      : options_(options), delegate_(std::move(delegate)) {}

  Options options_;
  std::unique_ptr<LimitAlgorithm> delegate_;
  LatencyWindow window_;
  bool started_ = false;
  int64_t window_end_ns_ = 0;
};

// caudal's default adaptive limit: a delay-gradient limit measured against an
// unloaded baseline, plus a loss-based part that backs off in proportion to
// what was rejected and remembers where rejections began.
//
// Windows. Samples are collected into windows. A window closes at the first
// sample ending at or after the window's end once it holds min_samples
// samples, or at once when it holds kBurstDrops = 3 drops (a caller that
// retries a rejection at once would otherwise pile up rejections for the
// rest of the window); the next window lasts clamp(k * smallest successful rtt,
// min_window_ns, max_window_ns), with k = 1 in slow start and 2 after. Not
// samples at all:
//   - successes faster than min_rtt_threshold_ns (cache hits and trivial
//     steps carry no signal about a backend);
//   - stale drops: a drop admitted with more requests in flight than the
//     current limit reports on a level the limit has already left (admitted
//     before the last cut, or retried under a permit granted then), so it
//     cannot cut again (as TCP cuts once per window of losses, not once per
//     lost packet).
// Only successes contribute rtts (fast-failing rejections cannot drag the
// latency down). A window keeps up to kKeptRtts = 64 of them: every one
// until the array is full, then every other one of those and from then on
// every second new one (then every 4th, ...), so the kept rtts are spread
// evenly over the window whatever its size. A window is full when it holds
// min_samples successes; only full windows measure latency.
//
// For each closed window with n samples, d of them drops, largest in-flight
// count m, and the kept rtts sorted x_0 <= ... <= x_{k-1}:
//   rtt      r = median of the x. A slow answer that has nothing to do with
//                load, even 100x the others, moves it by at most one rank,
//                as long as fewer than half the window's answers are slow.
//   noise    e = relative standard error of r over full windows,
//                e = 0.9 e + 0.1 e_w (the first sets it), where, with
//                x_0..x_{j-1} the rtts <= 4 r (outliers left out) and
//                h = sqrt(j) / 2, e_w = (x_hi - x_lo) / (2 r) for
//                lo = floor(j / 2 - h), hi = ceil(j / 2 + h) - 1: half the
//                distribution-free ~68% confidence interval of a median
//                (needs j >= 2).
//   smoothed s = 0.75 s + 0.25 r over full windows (the first sets it).
//   baseline b = min of s over the last two periods of baseline_period full
//                windows, from the (kBaselineWarmup + 1) = 5th full window
//                on (the first windows lean fast: the quickest answers of a
//                cohort admitted together finish first). A genuine rise of
//                the backend's own latency replaces it after at most two
//                periods; until there is one, latency cuts nothing.
//   ceiling  c = b * (1 + tol + 4 e): s carries about 0.4 e of noise, so its
//                minimum sits about e below the typical median, and a
//                window's r goes up to 3 e above it.
// Then, with L the limit, l = min(floor(L), m) the level of the window, and
// cap and suspect the drop memory (below; none at first):
//   d > 0, m > floor(L): unchanged, memory too  (the window still carries
//                   work admitted under a higher limit: its drops report on
//                   a level already left, like a stale drop)
//   d > 0, probing: L = min(L, cap)                     (the probe failed)
//   d > 0:          L = L * clamp(1 - d / n, 0.5, backoff_ratio), at most
//                   cap
//   r > c in this and the previous full window, r' the lower of the two:
//                   L = max(floor, L * max(0.5, c / r')),
//                   floor = max(min, min(kLatencyFloor = 4, L))
//   r > c in this full window only: unchanged
//   m < L / 2:      unchanged                             (app-limited)
//   otherwise:      L = L + max(1, g * L), g = slow_start_growth (0.25) in
//                   slow start, growth (0.05) after; at most cap, and at
//                   most max(L, suspect)
// then L = clamp(L, min, max). Slow start ends at the first window that
// lowers the limit. The limit is kept as a double; limit() is its floor.
// Only drops take the limit below 4; latency never does, and one window of
// slow answers cuts nothing.
//
// Drop memory. A first window with one or two drops cuts the limit and
// makes its level l suspect: it may be a stray error (a connection reset)
// as well as load. Growth stops at the suspect level until it is tested
// again: a drop-free window with limit() and m at least the suspect level
// clears it; drops in any window before that confirm it, and the cap goes
// just below the higher of the two levels, max(l, suspect) - 1 (at least
// min): growth stops there until a probe. A window with kBurstDrops drops
// is load at once: it sets the cap the same way. Drops in a window that had
// no success, after a window that had none either, say nothing about a
// level (an outage answers nobody): they cut the limit but leave the
// memory as it was, so the limit climbs back to the old cap once answers
// return. A drop-free window in which m
// reached the cap counts toward the next probe; after probe_interval << shift
// such windows (shift = 0 at first) the cap rises by one: the probe. If a
// window has drops while the probe is on, the limit returns to the cap, now l -
// 1 (below the level that failed), and shift rises by one, up to kMaxProbeShift
// = 4 (16x the interval). If instead probe_interval windows at the raised cap
// pass without drops, the capacity has grown: the cap is removed (free growth
// resumes) and shift returns to 0. Against a backend that rejects beyond a
// steady capacity C the limit settles at C and meets one rejected level per
// probe, at intervals that double; after a capacity grows, the cap is gone
// within 16 * probe_interval windows at it plus probe_interval windows at the
// raised one. Stray drops move the cap only when a second one comes before the
// level held (with a stray drop in a window with probability r, roughly 2 r^2
// per window); at one stray drop per hundred requests or more, the cap still
// ratchets down faster than probes raise it.
//
// Deviations from the algorithms above: the baseline is a windowed minimum of
// smoothed window medians (Vegas' rtt_noload is the minimum single sample,
// noisy with jitter; Gradient's long-term EMA drifts up during a long
// overload), the latency decrease is proportional to the excess delay so the
// limit lands near the knee in one cut instead of creeping, and the drop
// response is proportional to the share rejected and remembered (AIMD
// forgets where it was rejected and finds out again every few windows).
// Known limit: against a backend whose latency grows with load and that
// never rejects, a limit held at the ceiling for several periods lets the
// baseline drift up with the loaded latency (no window sees the unloaded
// latency again to keep it down).
//
// Cost: O(1) per sample (amortized: the kept rtts are thinned once per
// doubling of a window); closing a window sorts at most 64 rtts. No
// allocation, no clock, no random source.
class BaselineGradientLimit final : public LimitAlgorithm {
 public:
  static constexpr int kKeptRtts = 64;
  static constexpr double kLatencyFloor = 4;
  static constexpr int kMaxProbeShift = 4;
  static constexpr int kBurstDrops = 3;
  static constexpr double kBaselineSmoothing = 0.25;
  static constexpr double kNoiseBand = 4;
  static constexpr int kBaselineWarmup = 4;

  struct Options {
    int initial_limit = 4;
    int min_limit = 1;
    int max_limit = 1000;
    double tolerance = 0.2;           // > 0: latency growth accepted as noise
    double backoff_ratio = 0.9;       // in [0.5, 1): largest factor on drops
    double growth = 0.05;             // in (0, 1]: additive growth, a fraction
    double slow_start_growth = 0.25;  // in (0, 1]: the same in slow start
    int64_t min_window_ns = 10'000'000;     // 10 ms
    int64_t max_window_ns = 1'000'000'000;  // 1 s
    int min_samples = 10;
    int64_t min_rtt_threshold_ns = 100'000;  // 100 us
    int baseline_period = 50;                // windows per baseline period
    int probe_interval = 50;  // >= 1: windows at the drop cap before a probe
  };

  static absl::Status Validate(const Options& options);
  static absl::StatusOr<BaselineGradientLimit> Create(const Options& options);
  BaselineGradientLimit() : BaselineGradientLimit(Options()) {}

  int OnSample(int64_t start_ns, int64_t rtt_ns, int inflight,
               bool did_drop) override;
  int limit() const override { return static_cast<int>(estimated_); }

  // Whether a sample can change anything: false for fast successful samples
  // (callers may skip taking their lock for those).
  bool Relevant(int64_t rtt_ns, bool did_drop) const {
    return did_drop || rtt_ns >= options_.min_rtt_threshold_ns;
  }
  double estimated_limit() const { return estimated_; }
  double baseline_rtt_ns() const;  // 0 until the first window closed
  double last_window_rtt_ns() const { return last_rtt_ns_; }  // its median
  double noise() const { return noise_; }
  bool slow_start() const { return slow_start_; }
  int64_t windows() const { return windows_; }
  // The drop memory: the limit grows no further than this (0: no cap).
  int drop_cap() const { return cap_; }
  // A level with drops in one window, not yet confirmed by drops again
  // (0: none).
  int suspect_level() const { return suspect_level_; }
  // Whether the cap was raised by a probe not yet confirmed or refuted.
  bool probing() const { return probing_; }
  // The current probe interval, in windows at the cap.
  int probe_interval_windows() const {
    return options_.probe_interval << probe_shift_;
  }
  const Options& options() const { return options_; }

 private:
  explicit BaselineGradientLimit(const Options& options);
  void Keep(int64_t rtt_ns);
  // Median of the kept rtts and the window's relative standard error of it
  // (-1 when it cannot be told); sorts kept_.
  std::pair<double, double> MedianAndNoise();
  void CloseWindow();
  // Drop memory and probes, for a closed window.
  void TrackCap();

  Options options_;
  double estimated_;
  bool slow_start_ = true;
  // The window being collected.
  bool started_ = false;
  int64_t window_end_ns_ = 0;
  int64_t count_ = 0;  // samples, dropped or not
  int64_t ok_count_ = 0;
  int64_t ok_min_ns_ = INT64_MAX;
  int max_inflight_ = 0;
  int64_t drops_ = 0;
  int64_t kept_[kKeptRtts];
  int kept_count_ = 0;
  int64_t keep_every_ = 1;  // keeps the ok samples whose index is a multiple
  double noise_ = 0;  // smoothed relative standard error of window medians
  bool noise_known_ = false;
  // Baseline: minimum window median of this period and of the last one.
  double period_min_ns_ = 0;  // 0 = none yet
  double prev_period_min_ns_ = 0;
  int period_windows_ = 0;
  double last_rtt_ns_ = 0;
  double smoothed_rtt_ns_ = 0;  // 0 = none yet
  int64_t full_windows_ = 0;
  // The median of the previous full window when it was above the ceiling
  // (0 otherwise).
  double over_ceiling_rtt_ns_ = 0;
  int64_t windows_ = 0;
  // Drop memory.
  int cap_ = 0;  // 0 = none
  bool probing_ = false;
  int probe_shift_ = 0;
  bool previous_answered_ = true;  // the previous window had a success
  int suspect_level_ = 0;  // a level with drops not yet confirmed (0: none)
  int quiet_windows_ = 0;  // drop-free windows at the cap since the last
                           // drop or probe
};

}  // namespace caudal

#endif  // CAUDAL_CONCURRENCY_LIMIT_ALGORITHMS_H_
