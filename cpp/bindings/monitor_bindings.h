// Python surface of the executor's performance monitor (CPU usage,
// regression detection; cpp/caudal/executor/executor_monitor.cc), the
// recommendation rules (cpp/caudal/monitor/recommendations.h) and the
// automatic-optimization tuner (cpp/caudal/monitor/tuner.h). Conversion
// only: the public stats dict in, recommendation and change dicts out.
#ifndef CAUDAL_BINDINGS_MONITOR_BINDINGS_H_
#define CAUDAL_BINDINGS_MONITOR_BINDINGS_H_

#include "caudal/executor/executor.h"
#include "caudal/monitor/recommendations.h"
#include "common.h"

namespace caudal::bindings {

// stats["system"]: cpu_percent (of the allowed CPUs), cpu_percent_per_core,
// allowed_cpus, window and reading counters, and the config's
// cpu_usage_threshold_percent. Samples CPU time now.
py::dict CpuStatsDict(Executor& core);

// stats["circuit_breaker"]: the summary over every breaker (worst state,
// sums), the config's breaker settings, each breaker by name and the recent
// transitions (caudal/monitor/stats_sections.h).
py::dict BreakerSectionDict(Executor& core);

// stats["error_handling"]: error and recovery rates, the error-pattern
// table and its 20 most frequent patterns.
py::dict ErrorSectionDict(Executor& core);

// {step: trend dict} from the regression detector's last checkpoint.
py::dict TrendsDict(const Executor& core);

// Test hook: CPU time from `source()` (an int of nanoseconds), or the
// process clock when None; `allowed` CPUs (<= 0: sched_getaffinity).
void SetCpuSource(Executor& core, py::object source, int allowed);

// Publishes an event of the type named `type` (the Python layer's own:
// optimization_applied); false if nobody is subscribed to it.
bool PublishEvent(Executor& core, const std::string& type,
                  const std::string& key, double value, double value2,
                  const std::string& detail);

// The rules' input read from get_optimization_stats()'s dict (the public
// shape; hand-built dicts in tests too) and the config in force.
RecommendationInput RecommendationInputOf(py::handle stats,
                                          const OptimizationConfig& cfg);

// Registers caudal._core.recommend and caudal._core.Tuner.
void RegisterMonitor(py::module_& m);

}  // namespace caudal::bindings

#endif  // CAUDAL_BINDINGS_MONITOR_BINDINGS_H_
