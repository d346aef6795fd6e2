// RegressionDetector: per-step latency regressions and throughput, from
// checkpoints of the steps' cumulative latency histograms.
//
// Design. Nothing is added to the hot path: the executor's housekeeping
// (Executor::Maintain) calls Checkpoint() every window / kCheckpointsPerWindow
// with a snapshot of every step's histogram. The detector keeps, per step,
// the cumulative histograms of the last (1 + kBaselineWindows) windows
// (sparse: only non-empty buckets), so any window's distribution is the
// difference of two checkpoints. At each checkpoint `now`:
//   recent   = now - the newest checkpoint at least `window` old
//              (spans >= window, up to one checkpoint interval more);
//   baseline = that checkpoint - the oldest one kept (up to
//              kBaselineWindows windows before the recent one).
// A step regresses when both have at least `min_executions` executions, the
// baseline spans at least one window, and
//     recent p95 > baseline p95 x (1 + threshold).
// The baseline p95 is then frozen: the regression clears (recovers) when
// the recent p95 falls to baseline x (1 + threshold / 2) or below — the
// half threshold is the hysteresis that keeps a step hovering at the
// boundary from flapping. A recent window with fewer than min_executions
// leaves the verdict as it was. A step whose count went down (reset_stats)
// starts its history afresh. Throughput is the recent window's executions
// per second.
//
// Cost: a checkpoint is a pass over each step's 640 buckets plus a p95 over
// two differences; memory is at most ~22 sparse histograms per step.
//
// Thread-safety: all methods are thread-safe (one mutex); Due() is one
// relaxed load.
#ifndef CAUDAL_MONITOR_REGRESSION_DETECTOR_H_
#define CAUDAL_MONITOR_REGRESSION_DETECTOR_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/types/optional.h"
#include "caudal/base/mutex.h"
#include "caudal/monitor/execution_stats.h"

namespace caudal {

struct RegressionOptions {
  int64_t window_ns = 60'000'000'000;  // performance_window_seconds
  double threshold = 0.2;              // performance_degradation_threshold
  uint64_t min_executions = 20;        // in the recent window and baseline
};

// The last verdict about one step.
struct StepTrend {
  std::string step;
  bool regressed = false;
  bool evaluated = false;  // the last checkpoint had enough data
  double recent_p95_ns = 0.0;
  // While regressed: the baseline frozen when it regressed.
  double baseline_p95_ns = 0.0;
  uint64_t recent_executions = 0;
  uint64_t baseline_executions = 0;
  double recent_span_s = 0.0;
  double baseline_span_s = 0.0;
  double throughput_per_s = 0.0;  // recent executions / recent span
  int64_t since_ns = 0;           // when the current regression began
  uint64_t regressions = 0;       // times the step regressed
};

// A step that newly regressed (regressed = true) or recovered.
struct TrendChange {
  std::string step;
  bool regressed = false;
  double recent_p95_ns = 0.0;
  double baseline_p95_ns = 0.0;
  int64_t at_ns = 0;
};

class RegressionDetector {
 public:
  static constexpr int kCheckpointsPerWindow = 4;
  static constexpr int kBaselineWindows = 4;

  RegressionDetector() = default;
  RegressionDetector(const RegressionDetector&) = delete;
  RegressionDetector& operator=(const RegressionDetector&) = delete;

  // Whether a checkpoint is due at now_ns (one relaxed load).
  bool Due(int64_t now_ns) const {
    return now_ns >= next_ns_.load(std::memory_order_relaxed);
  }
  // Records every step's cumulative histogram at now_ns, evaluates each
  // step and returns the verdicts that changed. The next checkpoint is due
  // window / kCheckpointsPerWindow later.
  std::vector<TrendChange> Checkpoint(
      int64_t now_ns, const std::vector<StepStats::Snapshot>& steps,
      const RegressionOptions& options);

  // The last verdict of every step seen, in name order.
  std::vector<StepTrend> Trends() const;
  uint64_t checkpoints() const;
  void Clear();
  // Drops the history and verdict of steps whose stats were reclaimed
  // (StatsRegistry::Reclaim).
  void Forget(const std::vector<std::string>& steps);

 private:
  struct Sparse {
    uint64_t count = 0;
    std::vector<std::pair<uint16_t, uint64_t>> buckets;  // non-empty only
  };
  struct Point {
    int64_t at_ns;
    Sparse hist;
  };
  struct History {
    // Oldest first. A vector: an empty one allocates nothing (a deque
    // allocates 576 bytes), and it holds at most ~22 points.
    std::vector<Point> points;
    StepTrend trend;
  };
  // Executions and p95 of `to - from` (cumulative histograms).
  static std::pair<uint64_t, double> Difference(const Sparse& to,
                                                const Sparse& from);
  static absl::optional<TrendChange> Evaluate(History& h, int64_t now_ns,
                                              const RegressionOptions& o);

  std::atomic<int64_t> next_ns_{0};
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, History> steps_ ABSL_GUARDED_BY(mu_);
  uint64_t checkpoints_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace caudal

#endif  // CAUDAL_MONITOR_REGRESSION_DETECTOR_H_
