// Stats sections: the sections of ExecutorCore.get_optimization_stats()
// (execution, cache, concurrency, memory, circuit_breaker, error_handling,
// system, telemetry) and the per-step rows (Engine.step_stats(),
// total_stats()), each one snapshot struct taken from the executor's
// read-outs, with its derived figures computed here (latency percentiles in
// ms, a step's settings as shown, the regressions among the trends, the
// concurrency mode, the worst breaker state, the sums over breakers, the
// error and recovery rates). The bindings convert each struct to its public
// dict in one place (cpp/bindings/monitor_bindings.h); Python only puts the
// sections together (and adds what only Python holds: the shared cache
// tier's, the worker pool's and the span flusher's figures).
//
// Thread-safety: free functions over values; nothing shared.
#ifndef CAUDAL_MONITOR_STATS_SECTIONS_H_
#define CAUDAL_MONITOR_STATS_SECTIONS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/types/optional.h"
#include "caudal/cache/result_cache.h"
#include "caudal/concurrency/concurrency_gate.h"
#include "caudal/concurrency/key_limiter.h"
#include "caudal/config/optimization_config.h"
#include "caudal/executor/executor.h"
#include "caudal/executor/step_spec.h"
#include "caudal/monitor/cpu_monitor.h"
#include "caudal/monitor/execution_stats.h"
#include "caudal/monitor/regression_detector.h"
#include "caudal/resilience/circuit_breaker.h"
#include "caudal/resilience/error_patterns.h"

namespace caudal {

// One row of per-step statistics (Engine.step_stats(), total_stats(), and
// stats["execution"]["steps"]): the counters and the latency figures in ms.
struct StepRow {
  StepStats::Snapshot stats;  // its name is the step's ("" for the total)
  double avg_time_ms = 0.0;
  double p50_ms = 0.0;
  double p95_ms = 0.0;
  double p99_ms = 0.0;
  double max_ms = 0.0;
  double min_ms = 0.0;
  double total_time_ms = 0.0;
  // The core's record of what the step was last analysed with
  // (StepSpec::Settings); none: no spec known (the total).
  absl::optional<StepSpec::Settings> settings;
  std::optional<StepTrend> trend;  // none: no verdict yet
};
StepRow StepRowOf(StepStats::Snapshot stats,
                  const StepSpec::Settings* settings = nullptr);

// stats["execution"]: the totals, every step with its trend, the steps
// whose p95 regressed, and the regression detector's settings.
struct ExecutionSection {
  StepRow total;
  int64_t in_flight = 0;
  double slow_execution_threshold_ms = 0.0;
  size_t step_table_size = 0;  // step_analysis: the step table
  uint64_t step_analyses = 0;
  size_t step_table_capacity = 0;  // now (it grows; see StepTable)
  uint64_t step_table_evictions = 0;
  // step_names: the names with a row of their own, the names folded into
  // the "(reclaimed)" row, and the bound (max_tracked_steps; none: -1).
  size_t names_tracked = 0;
  uint64_t names_reclaimed = 0;
  int64_t max_tracked_steps = -1;
  std::vector<StepRow> steps;          // each with its trend (if any)
  std::vector<StepTrend> regressions;  // the trends that regressed, in order
  bool regression_enabled = false;
  double regression_window_seconds = 0.0;
  double regression_degradation_threshold = 0.0;
  uint64_t regression_min_executions = 0;
  uint64_t regression_checkpoints = 0;
};
ExecutionSection ExecutionSectionOf(StepRow total, std::vector<StepRow> steps,
                                    const std::vector<StepTrend>& trends,
                                    const OptimizationConfig& cfg,
                                    int64_t in_flight, size_t step_table_size,
                                    uint64_t step_analyses,
                                    uint64_t checkpoints);

// stats["cache"] (but the shared tier's figures, which Python holds).
struct CacheSection {
  bool enabled = false;
  ResultCacheStats cache{};
  uint64_t uncacheable = 0;  // the sum over the reasons
  std::vector<std::pair<std::string, uint64_t>> uncacheable_reasons;
  // step name -> why it has no cache identity
  std::vector<std::pair<std::string, std::string>> uncacheable_steps;
};
CacheSection CacheSectionOf(
    bool enabled, const ResultCacheStats& cache,
    std::vector<std::pair<std::string, uint64_t>> reasons,
    std::vector<std::pair<std::string, std::string>> uncacheable_steps);

// stats["concurrency"] (but the worker pool's figures, which Python holds).
enum class ConcurrencyMode { kFixed, kAdaptive, kUnlimited };
const char* ConcurrencyModeName(ConcurrencyMode mode);
struct ConcurrencySection {
  std::optional<int64_t> max_concurrent_executions;
  int64_t slots_in_use = 0;
  int64_t waiting = 0;
  GateCounters slots{};
  ConcurrencyMode mode = ConcurrencyMode::kUnlimited;
  std::vector<KeyLimiter::Snapshot> keys;
  int64_t in_flight = 0;  // executions in flight (flujo's concurrency_level)
};
ConcurrencySection ConcurrencySectionOf(const OptimizationConfig& cfg,
                                        int64_t slots_in_use, int64_t waiting,
                                        const GateCounters& slots,
                                        std::vector<KeyLimiter::Snapshot> keys,
                                        int64_t in_flight);

// stats["memory"]: RSS, pressure, the record pool, what is shrunk.
struct MemorySection {
  MemorySnapshot memory;
  double rss_interval_s = 0.0;
  bool object_pool_enabled = false;
  bool memory_optimization_enabled = false;
};

// stats["system"]: process CPU.
struct SystemSection {
  CpuSnapshot cpu;
  double cpu_usage_threshold_percent = 0.0;
};

// stats["telemetry"] (but the span flusher's figures, which Python holds).
struct TelemetrySection {
  bool enabled = false;
  int64_t batch_size = 0;
  double flush_interval_seconds = 0.0;
  int64_t buffer_size = 0;
  bool recording = false;
  double sampling_rate = 0.0;
  SpanRecorder::Stats spans{};
};

// stats["circuit_breaker"]: every breaker and the summary over them.
struct BreakerSection {
  std::vector<BreakerRegistry::NamedSnapshot> breakers;
  // The worst state over all breakers (open, then half-open, then closed;
  // closed when there is none): what flujo's troubleshooting compares.
  CircuitBreaker::State worst = CircuitBreaker::State::kClosed;
  uint64_t failure_count = 0;  // sums over the breakers
  uint64_t success_count = 0;
  uint64_t rejected_count = 0;
  uint64_t open_count = 0;
};
BreakerSection BreakerSectionOf(
    std::vector<BreakerRegistry::NamedSnapshot> breakers);

// stats["error_handling"]: the executor's attempts and errors with the
// error-pattern table.
struct ErrorSection {
  uint64_t errors = 0;
  uint64_t retries = 0;
  uint64_t recovered = 0;
  double error_rate = 0.0;  // failed attempts per attempt (0: no attempt)
  // Executions that failed at least once and then succeeded, over those
  // that failed at least once (0: none failed).
  double recovery_success_rate = 0.0;
  ErrorTableStats table{};  // its recovery_success_rate: retries that recovered
  uint64_t fail_fast =
      0;  // attempts not retried because the pattern never recovers
  std::vector<PatternSnapshot> patterns;  // the most frequent first
};
ErrorSection ErrorSectionOf(const StepStats::Snapshot& total,
                            const ErrorTableStats& table, uint64_t fail_fast,
                            std::vector<PatternSnapshot> patterns);

}  // namespace caudal

#endif  // CAUDAL_MONITOR_STATS_SECTIONS_H_
