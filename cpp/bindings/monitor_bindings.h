// Python surface of the executor's performance monitor (CPU usage,
// regression detection; cpp/caudal/executor/executor_monitor.cc), the
// recommendation rules (cpp/caudal/monitor/recommendations.h) and the
// automatic-optimization tuner (cpp/caudal/monitor/tuner.h). Conversion
// only: the public stats dict in, recommendation and change dicts out.
#ifndef CAUDAL_BINDINGS_MONITOR_BINDINGS_H_
#define CAUDAL_BINDINGS_MONITOR_BINDINGS_H_

#include "caudal/executor/executor.h"
#include "caudal/monitor/recommendations.h"
#include "caudal/monitor/stats_sections.h"
#include "common.h"

namespace caudal::bindings {

// ---- the stats sections: each one struct (caudal/monitor/stats_sections.h)
// and one converter to its public dict (stats_sections_bindings.cc) ----

// A per-step row: the counters, then the latency figures in ms, then
// "settings" when the row has them; "trend" (a TrendDict or None) when
// `with_trend` (stats["execution"]["steps"]).
py::dict StepRowDict(const StepRow& r, bool with_trend = false);

// One step's trend (stats["execution"]["regressions"] and each step's "trend").
py::dict TrendDict(const StepTrend& t);

// stats["execution"]["step_analysis"].
py::dict StepTableDict(size_t size, uint64_t analyses);

// stats["execution"].
py::dict ExecutionSectionDict(const ExecutionSection& s);

// stats["cache"]: "enabled", the cache's figures (CacheStatsInto), then
// "l2": `l2` (the shared tier's stats dict, or None).
py::dict CacheSectionDict(const CacheSection& s, py::object l2);
// The cache's figures (Engine.cache_stats()).
void CacheStatsInto(py::dict& d, const CacheSection& s);

// stats["concurrency"]: the slots and keys (ConcurrencyStatsInto), then
// in_flight, concurrency_level and "worker_pool": `pool` (the worker pool's
// stats dict, or None).
ConcurrencySection ConcurrencySectionNow(const Executor& core);
py::dict ConcurrencySectionDict(const ConcurrencySection& s, py::object pool);
// The slots and keys (Engine.concurrency_stats()).
void ConcurrencyStatsInto(py::dict& d, const ConcurrencySection& s);

// stats["memory"]: the native read-out (MemoryStatsInto), then the config's
// object_pool_enabled and memory_optimization_enabled. Reads RSS on the
// executor's clock (and acts on a level change).
MemorySection MemorySectionNow(Executor& core);
py::dict MemorySectionDict(const MemorySection& s);
// The native read-out (Engine.memory_stats()).
void MemoryStatsInto(py::dict& d, const MemorySection& s);

// stats["telemetry"]: the config's telemetry settings and the span
// recorder's figures, then every item of `flusher` (the span flusher's
// figures, caudal.telemetry.flusher_stats).
TelemetrySection TelemetrySectionNow(const Executor& core);
py::dict TelemetrySectionDict(const TelemetrySection& s, py::dict flusher);

// stats["system"]: cpu_percent (of the allowed CPUs), cpu_percent_per_core,
// allowed_cpus, window and reading counters, and the config's
// cpu_usage_threshold_percent. Samples CPU time now (the executor's clock).
SystemSection SystemSectionNow(Executor& core);
py::dict SystemSectionDict(const SystemSection& s);
py::dict CpuStatsDict(Executor& core);  // SystemSectionDict of now

// stats["circuit_breaker"]: the summary over every breaker (worst state,
// sums), the config's breaker settings, each breaker by name and the recent
// transitions (caudal/monitor/stats_sections.h).
py::dict BreakerSectionDict(Executor& core);

// stats["error_handling"]: error and recovery rates, the error-pattern
// table and its 20 most frequent patterns.
py::dict ErrorSectionDict(Executor& core);

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
