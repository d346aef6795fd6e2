#include "caudal/concurrency/limit_algorithms.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace caudal {
namespace {

absl::Status CheckLimits(int initial, int min, int max) {
  if (min < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_limit must be >= 1, got ", min));
  }
  if (max < min) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_limit must be >= min_limit (", min, "), got ", max));
  }
  if (initial < min || initial > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("initial_limit must be in [min_limit, max_limit] = [", min,
                     ", ", max, "], got ", initial));
  }
  return absl::OkStatus();
}

// The window options WindowedLimit and BaselineGradientLimit share.
absl::Status CheckWindows(int64_t min_window_ns, int64_t max_window_ns,
                          int min_samples, int64_t min_rtt_threshold_ns) {
  if (min_window_ns <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_window_ns must be positive, got ", min_window_ns));
  }
  if (max_window_ns < min_window_ns) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_window_ns must be >= min_window_ns (", min_window_ns,
                     "), got ", max_window_ns));
  }
  if (min_samples < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_samples must be >= 1, got ", min_samples));
  }
  if (min_rtt_threshold_ns < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "min_rtt_threshold_ns must be >= 0, got ", min_rtt_threshold_ns));
  }
  return absl::OkStatus();
}

absl::Status CheckSmoothing(double smoothing) {
  if (!(smoothing > 0.0 && smoothing <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("smoothing must be in (0, 1], got ", smoothing));
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------- AIMD

absl::Status AimdLimit::Validate(const Options& o) {
  if (absl::Status s = CheckLimits(o.initial_limit, o.min_limit, o.max_limit);
      !s.ok()) {
    return s;
  }
  if (!(o.backoff_ratio >= 0.5 && o.backoff_ratio < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "backoff_ratio must be in [0.5, 1), got ", o.backoff_ratio));
  }
  if (o.timeout_ns <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout_ns must be positive, got ", o.timeout_ns));
  }
  return absl::OkStatus();
}

absl::StatusOr<AimdLimit> AimdLimit::Create(const Options& options) {
  if (absl::Status s = Validate(options); !s.ok()) return s;
  return AimdLimit(options);
}

AimdLimit::AimdLimit(const Options& options)
    : options_(options), limit_(options.initial_limit) {}

int AimdLimit::OnSample(int64_t /*start_ns*/, int64_t rtt_ns, int inflight,
                        bool did_drop) {
  if (did_drop || rtt_ns > options_.timeout_ns) {
    const int backed_off = static_cast<int>(limit_ * options_.backoff_ratio);
    limit_ = std::max(options_.min_limit, std::min(limit_ - 1, backed_off));
  } else if (static_cast<int64_t>(inflight) * 2 >= limit_) {
    limit_ = std::min(options_.max_limit, limit_ + 1);
  }
  return limit_;
}

// ---------------------------------------------------------------- ExpAverage

double ExpAverage::Add(double sample) {
  if (count_ < warmup_) {
    ++count_;
    sum_ += sample;
    value_ = sum_ / count_;
  } else {
    value_ = value_ * (1.0 - factor_) + sample * factor_;
  }
  return value_;
}

// ---------------------------------------------------------------- Gradient

absl::Status GradientLimit::Validate(const Options& o) {
  if (absl::Status s = CheckLimits(o.initial_limit, o.min_limit, o.max_limit);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckSmoothing(o.smoothing); !s.ok()) return s;
  if (!(o.rtt_tolerance >= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rtt_tolerance must be >= 1, got ", o.rtt_tolerance));
  }
  if (o.long_window < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("long_window must be >= 1, got ", o.long_window));
  }
  if (o.warmup_window < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("warmup_window must be >= 0, got ", o.warmup_window));
  }
  if (!o.queue_size) {
    return absl::InvalidArgumentError("queue_size must be set");
  }
  return absl::OkStatus();
}

absl::StatusOr<GradientLimit> GradientLimit::Create(Options options) {
  if (absl::Status s = Validate(options); !s.ok()) return s;
  return GradientLimit(std::move(options));
}

GradientLimit::GradientLimit(Options options)
    : options_(std::move(options)),
      estimated_(options_.initial_limit),
      long_rtt_(options_.long_window, options_.warmup_window) {}

int GradientLimit::OnSample(int64_t /*start_ns*/, int64_t rtt_ns, int inflight,
                            bool /*did_drop*/) {
  if (rtt_ns <= 0) return limit();
  const double queue_size = options_.queue_size(limit());
  const double short_rtt = static_cast<double>(rtt_ns);
  double long_rtt = long_rtt_.Add(short_rtt);

  // After a long overload the long-term RTT lags far above the current one;
  // pull it down faster than the EMA alone would.
  if (long_rtt / short_rtt > 2.0) {
    long_rtt_.Scale(0.9);
    long_rtt = long_rtt_.value();
  }

  // App-limited: too few requests in flight to say anything about the limit.
  if (inflight < estimated_ / 2) return limit();

  const double gradient =
      std::clamp(options_.rtt_tolerance * long_rtt / short_rtt, 0.5, 1.0);
  double next = estimated_ * gradient + queue_size;
  next = estimated_ * (1.0 - options_.smoothing) + next * options_.smoothing;
  estimated_ = std::clamp(next, static_cast<double>(options_.min_limit),
                          static_cast<double>(options_.max_limit));
  return limit();
}

// ---------------------------------------------------------------- Vegas

absl::Status VegasLimit::Validate(const Options& o) {
  if (absl::Status s = CheckLimits(o.initial_limit, o.min_limit, o.max_limit);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckSmoothing(o.smoothing); !s.ok()) return s;
  if (o.alpha_factor < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("alpha_factor must be >= 1, got ", o.alpha_factor));
  }
  if (o.beta_factor < o.alpha_factor) {
    return absl::InvalidArgumentError(
        absl::StrCat("beta_factor must be >= alpha_factor (", o.alpha_factor,
                     "), got ", o.beta_factor));
  }
  if (o.probe_multiplier < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "probe_multiplier must be >= 0, got ", o.probe_multiplier));
  }
  return absl::OkStatus();
}

absl::StatusOr<VegasLimit> VegasLimit::Create(const Options& options) {
  if (absl::Status s = Validate(options); !s.ok()) return s;
  return VegasLimit(options);
}

VegasLimit::VegasLimit(const Options& options)
    : options_(options), estimated_(options.initial_limit) {}

int VegasLimit::Log10Root(int n) {
  int digits = 0;  // floor(log10(n)) for n >= 1, without floating point
  for (int v = n; v >= 10; v /= 10) ++digits;
  return std::max(1, digits);
}

int VegasLimit::OnSample(int64_t /*start_ns*/, int64_t rtt_ns, int inflight,
                         bool did_drop) {
  if (rtt_ns <= 0) return limit();

  ++probe_count_;
  if (options_.probe_multiplier > 0 &&
      probe_count_ >=
          static_cast<int64_t>(options_.probe_multiplier) * limit()) {
    // Probe: forget the old base RTT, take this sample as the new one.
    probe_count_ = 0;
    rtt_noload_ns_ = rtt_ns;
    return limit();
  }
  bool new_min = false;
  if (rtt_noload_ns_ == 0 || rtt_ns < rtt_noload_ns_) {
    rtt_noload_ns_ = rtt_ns;
    new_min = true;
  }

  const int current = limit();
  const int step = Log10Root(current);
  double next;
  if (did_drop) {
    next = estimated_ - step;
  } else if (new_min || static_cast<int64_t>(inflight) * 2 < current) {
    return current;
  } else {
    const double ratio =
        static_cast<double>(rtt_noload_ns_) / static_cast<double>(rtt_ns);
    const int queue = static_cast<int>(std::ceil(estimated_ * (1.0 - ratio)));
    const int alpha = options_.alpha_factor * step;
    const int beta = options_.beta_factor * step;
    if (queue <= step) {
      next = estimated_ + beta;
    } else if (queue < alpha) {
      next = estimated_ + step;
    } else if (queue > beta) {
      next = estimated_ - step;
    } else {
      return current;
    }
  }
  next = std::clamp(next, static_cast<double>(options_.min_limit),
                    static_cast<double>(options_.max_limit));
  estimated_ =
      (1.0 - options_.smoothing) * estimated_ + options_.smoothing * next;
  return limit();
}

// ---------------------------------------------------------------- windows

void LatencyWindow::Add(int64_t rtt_ns, int inflight, bool did_drop) {
  ++count_;
  sum_rtt_ns_ += rtt_ns;
  min_rtt_ns_ = std::min(min_rtt_ns_, rtt_ns);
  max_inflight_ = std::max(max_inflight_, inflight);
  did_drop_ = did_drop_ || did_drop;
}

absl::Status WindowedLimit::Validate(const Options& o) {
  return CheckWindows(o.min_window_ns, o.max_window_ns, o.min_samples,
                      o.min_rtt_threshold_ns);
}

absl::StatusOr<std::unique_ptr<WindowedLimit>> WindowedLimit::Create(
    const Options& options, std::unique_ptr<LimitAlgorithm> delegate) {
  if (absl::Status s = Validate(options); !s.ok()) return s;
  if (delegate == nullptr) {
    return absl::InvalidArgumentError("delegate must not be null");
  }
  return std::unique_ptr<WindowedLimit>(
      new WindowedLimit(options, std::move(delegate)));
}

int WindowedLimit::OnSample(int64_t start_ns, int64_t rtt_ns, int inflight,
                            bool did_drop) {
  if (rtt_ns < options_.min_rtt_threshold_ns) return delegate_->limit();
  if (!started_) {
    started_ = true;
    window_end_ns_ = start_ns + options_.min_window_ns;
  }
  window_.Add(rtt_ns, inflight, did_drop);
  const int64_t end_ns = start_ns + rtt_ns;
  if (end_ns < window_end_ns_ || window_.count() < options_.min_samples) {
    return delegate_->limit();
  }
  const int result =
      delegate_->OnSample(start_ns, window_.average_rtt_ns(),
                          window_.max_inflight(), window_.did_drop());
  window_end_ns_ =
      end_ns + std::clamp(2 * window_.min_rtt_ns(), options_.min_window_ns,
                          options_.max_window_ns);
  window_.Reset();
  return result;
}

// ------------------------------------------------------- BaselineGradient

absl::Status BaselineGradientLimit::Validate(const Options& o) {
  if (absl::Status s = CheckLimits(o.initial_limit, o.min_limit, o.max_limit);
      !s.ok()) {
    return s;
  }
  if (!(o.tolerance > 0.0 && o.tolerance <= 10.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tolerance must be in (0, 10], got ", o.tolerance));
  }
  if (!(o.backoff_ratio >= 0.5 && o.backoff_ratio < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "backoff_ratio must be in [0.5, 1), got ", o.backoff_ratio));
  }
  if (!(o.growth > 0.0 && o.growth <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("growth must be in (0, 1], got ", o.growth));
  }
  if (!(o.slow_start_growth > 0.0 && o.slow_start_growth <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "slow_start_growth must be in (0, 1], got ", o.slow_start_growth));
  }
  if (absl::Status s = CheckWindows(o.min_window_ns, o.max_window_ns,
                                    o.min_samples, o.min_rtt_threshold_ns);
      !s.ok()) {
    return s;
  }
  if (o.baseline_period < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("baseline_period must be >= 1, got ", o.baseline_period));
  }
  // Shifted left by up to kMaxProbeShift: keep that an int.
  if (o.probe_interval < 1 || o.probe_interval > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "probe_interval must be in [1, 1048576], got ", o.probe_interval));
  }
  return absl::OkStatus();
}

absl::StatusOr<BaselineGradientLimit> BaselineGradientLimit::Create(
    const Options& options) {
  if (absl::Status s = Validate(options); !s.ok()) return s;
  return BaselineGradientLimit(options);
}

BaselineGradientLimit::BaselineGradientLimit(const Options& options)
    : options_(options), estimated_(options.initial_limit) {}

double BaselineGradientLimit::baseline_rtt_ns() const {
  if (period_min_ns_ == 0) return prev_period_min_ns_;
  if (prev_period_min_ns_ == 0) return period_min_ns_;
  return std::min(period_min_ns_, prev_period_min_ns_);
}

int BaselineGradientLimit::OnSample(int64_t start_ns, int64_t rtt_ns,
                                    int inflight, bool did_drop) {
  if (rtt_ns < 0 || !Relevant(rtt_ns, did_drop)) return limit();
  if (did_drop && inflight > limit()) return limit();  // stale
  if (!started_) {
    started_ = true;
    window_end_ns_ = start_ns + options_.min_window_ns;
  }
  ++count_;
  max_inflight_ = std::max(max_inflight_, inflight);
  if (did_drop) {
    ++drops_;
  } else {
    Keep(rtt_ns);
    ++ok_count_;
    ok_min_ns_ = std::min(ok_min_ns_, rtt_ns);
  }
  const int64_t end_ns = start_ns + rtt_ns;
  if ((end_ns < window_end_ns_ || count_ < options_.min_samples) &&
      drops_ < kBurstDrops) {
    return limit();
  }
  CloseWindow();
  const int64_t basis = ok_count_ > 0 ? ok_min_ns_ : rtt_ns;
  // Slow start looks again after one round trip; later windows span two,
  // to average out noise.
  const int64_t span = (slow_start_ ? 1 : 2) * basis;
  window_end_ns_ =
      end_ns + std::clamp(span, options_.min_window_ns, options_.max_window_ns);
  count_ = ok_count_ = drops_ = 0;
  ok_min_ns_ = INT64_MAX;
  max_inflight_ = 0;
  kept_count_ = 0;
  keep_every_ = 1;
  return limit();
}

void BaselineGradientLimit::Keep(int64_t rtt_ns) {
  // ok_count_ is this sample's index among the window's successes.
  if ((ok_count_ & (keep_every_ - 1)) != 0) return;  // a power of 2
  if (kept_count_ == kKeptRtts) {
    // Full: keep every other one (indices 0, 2s, 4s, ... of the
    // successes); the next kept index, 64s, is a multiple of 2s.
    for (int i = 0; i < kKeptRtts / 2; ++i) kept_[i] = kept_[2 * i];
    kept_count_ = kKeptRtts / 2;
    keep_every_ *= 2;
  }
  kept_[kept_count_++] = rtt_ns;
}

std::pair<double, double> BaselineGradientLimit::MedianAndNoise() {
  int64_t* const x = kept_;
  const int k = kept_count_;
  std::sort(x, x + k);
  const double median =
      (static_cast<double>(x[(k - 1) / 2]) + static_cast<double>(x[k / 2])) /
      2.0;
  // The inliers are a prefix of the sorted rtts.
  const int j = static_cast<int>(
      std::upper_bound(x, x + k, static_cast<int64_t>(4.0 * median)) - x);
  if (j < 2 || median <= 0) return {median, -1.0};
  const double h = std::sqrt(static_cast<double>(j)) / 2.0;
  const int lo = std::max(0, static_cast<int>(std::floor(j / 2.0 - h)));
  const int hi = std::min(j - 1, static_cast<int>(std::ceil(j / 2.0 + h)) - 1);
  return {median, static_cast<double>(x[hi] - x[lo]) / 2.0 / median};
}

void BaselineGradientLimit::CloseWindow() {
  ++windows_;
  const double lo = options_.min_limit;
  const double hi = options_.max_limit;
  // Only a full window (min_samples successes) is precise enough to measure
  // the noise, to set the baseline, or to cut on latency.
  const bool full = kept_count_ > 0 && ok_count_ >= options_.min_samples;
  if (kept_count_ > 0) {
    const auto [median, window_noise] = MedianAndNoise();
    last_rtt_ns_ = median;
    if (full && window_noise >= 0) {
      noise_ = noise_known_ ? 0.9 * noise_ + 0.1 * window_noise : window_noise;
      noise_known_ = true;
    }
  }
  if (full) {
    smoothed_rtt_ns_ = smoothed_rtt_ns_ == 0
                           ? last_rtt_ns_
                           : (1.0 - kBaselineSmoothing) * smoothed_rtt_ns_ +
                                 kBaselineSmoothing * last_rtt_ns_;
    if (++full_windows_ <= kBaselineWarmup) {
      // The first windows' medians lean fast (the quickest answers of a
      // cohort started together finish first): no baseline yet.
    } else if (period_min_ns_ == 0 || smoothed_rtt_ns_ < period_min_ns_) {
      period_min_ns_ = smoothed_rtt_ns_;
    }
    if (++period_windows_ >= options_.baseline_period) {
      prev_period_min_ns_ = period_min_ns_;
      period_min_ns_ = 0;
      period_windows_ = 0;
    }
  }
  // Drops in a window that still carries work admitted under a higher
  // limit (m > limit) report on that level, which the limit has already
  // left: they hold the limit (no growth) but neither cut it nor move the
  // cap, as a single stale drop would not.
  if (drops_ > 0 && max_inflight_ > limit()) return;
  const bool failed_probe = probing_ && drops_ > 0;
  TrackCap();
  const double current = estimated_;
  double next = current;
  const double baseline = baseline_rtt_ns();
  const double ceiling =
      baseline * (1.0 + options_.tolerance + kNoiseBand * noise_);
  if (drops_ > 0 || (full && !(baseline > 0 && last_rtt_ns_ > ceiling))) {
    over_ceiling_rtt_ns_ = 0;
  }
  if (drops_ > 0 && failed_probe) {
    // Only the one level the probe added was rejected: back to the cap.
    next = std::min(current, static_cast<double>(cap_));
  } else if (drops_ > 0) {
    const double share =
        static_cast<double>(drops_) / static_cast<double>(count_);
    next = current * std::clamp(1.0 - share, 0.5, options_.backoff_ratio);
    if (cap_ > 0) next = std::min(next, static_cast<double>(cap_));
  } else if (full && baseline > 0 && last_rtt_ns_ > ceiling) {
    // Two windows in a row above the ceiling, and the lower of the two
    // counts: one window is not enough (when slow answers hold most
    // permits, a window can be mostly slow answers).
    const double excess = std::min(last_rtt_ns_, over_ceiling_rtt_ns_);
    over_ceiling_rtt_ns_ = last_rtt_ns_;
    if (excess <= ceiling) return;  // the first: wait for the next
    const double floor = std::max(lo, std::min(kLatencyFloor, current));
    next = std::max(floor, current * std::max(0.5, ceiling / excess));
  } else if (max_inflight_ * 2 < current) {
    return;  // app-limited
  } else {
    const double g = slow_start_ ? options_.slow_start_growth : options_.growth;
    next = current + std::max(1.0, g * current);
    if (cap_ > 0) next = std::min(next, static_cast<double>(cap_));
    // A suspect level is tested again before growing past it.
    if (suspect_level_ > 0) {
      next = std::min(next,
                      std::max(current, static_cast<double>(suspect_level_)));
    }
  }
  if (next < current) slow_start_ = false;
  estimated_ = std::clamp(next, lo, hi);
}

void BaselineGradientLimit::TrackCap() {
  const bool answered = ok_count_ > 0 || previous_answered_;
  previous_answered_ = ok_count_ > 0;
  if (drops_ > 0) {
    // The level the drops happened at.
    const int level = std::min(limit(), max_inflight_);
    if (!answered && !probing_) {
      // Nothing answered in this window or the last: an outage, not a
      // capacity level. The cut applies; the memory stays as it was.
      return;
    }
    if (probing_) {  // the probe met drops: back below, probe less often
      probing_ = false;
      probe_shift_ = std::min(probe_shift_ + 1, kMaxProbeShift);
      cap_ = std::max(options_.min_limit, level - 1);
    } else if (suspect_level_ > 0 || drops_ >= kBurstDrops) {
      // Drops again before the suspect level held, or a burst of them: load.
      // Just below the higher of the two levels.
      cap_ = std::max(options_.min_limit, std::max(level, suspect_level_) - 1);
    } else {
      // A first window with drops may be a stray error (a connection
      // reset) as well as load: it cuts the limit, the level becomes
      // suspect, and the cap and the count toward the next probe stay.
      suspect_level_ = std::max(1, level);
      return;
    }
    suspect_level_ = 0;
    quiet_windows_ = 0;
    return;
  }
  // A drop-free window with the limit and the in-flight count at the
  // suspect level clears it.
  if (suspect_level_ > 0 && limit() >= suspect_level_ &&
      max_inflight_ >= suspect_level_) {
    suspect_level_ = 0;
  }
  if (cap_ == 0 || max_inflight_ < cap_) return;  // the cap did not bind
  ++quiet_windows_;
  if (probing_) {
    if (quiet_windows_ >= options_.probe_interval) {  // capacity grew
      cap_ = 0;
      probing_ = false;
      probe_shift_ = 0;
      quiet_windows_ = 0;
    }
  } else if (quiet_windows_ >= options_.probe_interval << probe_shift_) {
    ++cap_;  // probe one level higher
    probing_ = true;
    quiet_windows_ = 0;
  }
}

}  // namespace caudal
