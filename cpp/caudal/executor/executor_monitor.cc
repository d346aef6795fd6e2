// The executor's performance monitor: CPU usage, per-step regression
// detection and the automatic-optimization clock (docs/monitoring.md).
// Everything here runs from Maintain (at most one caller per maintenance
// interval) or from a stats read, never per execution.
#include <cmath>
#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/str_format.h"
#include "caudal/executor/executor.h"

namespace caudal {

RegressionOptions Executor::RegressionOptionsFor(const OptimizationConfig& c) {
  RegressionOptions o;
  o.window_ns = static_cast<int64_t>(c.performance_window_seconds * 1e9);
  o.threshold = c.performance_degradation_threshold;
  return o;
}

void Executor::MaintainMonitor(const OptimizationConfig& cfg, int64_t now_ns) {
  if (cfg.enable_automatic_optimization) {
    const auto interval =
        static_cast<int64_t>(cfg.optimization_analysis_interval_seconds * 1e9);
    int64_t next = next_analysis_ns_.load(std::memory_order_relaxed);
    if (next == 0 || next > now_ns + interval) {
      // First time on (or a shorter interval): the first analysis comes one
      // interval from now, when there is something to analyse.
      next_analysis_ns_.store(now_ns + interval, std::memory_order_relaxed);
    } else if (now_ns >= next) {
      next_analysis_ns_.store(now_ns + interval, std::memory_order_relaxed);
      analysis_due_.store(true, std::memory_order_relaxed);
    }
  } else {
    next_analysis_ns_.store(0, std::memory_order_relaxed);
  }
  if (!cfg.enable_performance_monitoring) return;
  cpu_.Sample(now_ns);
  if (!regressions_.Due(now_ns)) return;
  const std::vector<TrendChange> changes = regressions_.Checkpoint(
      now_ns, stats_.TakeAll(), RegressionOptionsFor(cfg));
  for (const TrendChange& c : changes) {
    const EventType type = c.regressed ? EventType::kRegressionDetected
                                       : EventType::kRegressionCleared;
    if (!events_.Wants(type)) continue;
    Event e;
    e.type = type;
    e.time_ns = c.at_ns;
    e.key = c.step;
    e.value = c.recent_p95_ns / 1e9;
    e.value2 = c.baseline_p95_ns / 1e9;
    e.detail = absl::StrFormat("p95 %.3f ms vs baseline %.3f ms",
                               c.recent_p95_ns / 1e6, c.baseline_p95_ns / 1e6);
    events_.Publish(e);
  }
}

std::shared_ptr<StepStats> Executor::StatsFor(absl::string_view name) {
  std::shared_ptr<StepStats> stats = stats_.ForStep(name);
  const std::optional<int64_t>& max = current_config()->max_tracked_steps;
  // A recorded span refers to its step's name (SpanRecord::step) until it
  // is exported: names are not reclaimed once spans have been recorded.
  if (max.has_value() && stats_.tracked() > static_cast<size_t>(*max) &&
      spans_.GetStats().recorded == 0) {
    regressions_.Forget(stats_.Reclaim(static_cast<size_t>(*max)));
  }
  return stats;
}

CpuSnapshot Executor::CpuStats(int64_t now_ns) {
  cpu_.Sample(now_ns);
  return cpu_.Snapshot();
}

}  // namespace caudal
