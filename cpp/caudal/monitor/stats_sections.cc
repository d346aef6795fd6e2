#include "caudal/monitor/stats_sections.h"

#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace caudal {

namespace {
// Lower is worse.
int Severity(CircuitBreaker::State s) {
  switch (s) {
    case CircuitBreaker::State::kOpen:
      return 0;
    case CircuitBreaker::State::kHalfOpen:
      return 1;
    default:
      return 2;
  }
}
}  // namespace

StepRow StepRowOf(StepStats::Snapshot stats,
                  const StepSpec::Settings* settings) {
  StepRow r;
  const LatencyHistogram::Snapshot& h = stats.latency;
  r.avg_time_ms = h.MeanNs() / 1e6;
  r.p50_ms = h.QuantileNs(0.50) / 1e6;
  r.p95_ms = h.QuantileNs(0.95) / 1e6;
  r.p99_ms = h.QuantileNs(0.99) / 1e6;
  r.max_ms = static_cast<double>(h.max_ns) / 1e6;
  r.min_ms = static_cast<double>(h.min_ns) / 1e6;
  r.total_time_ms = static_cast<double>(h.sum_ns) / 1e6;
  if (settings != nullptr) r.settings = *settings;
  r.stats = std::move(stats);
  return r;
}

ExecutionSection ExecutionSectionOf(StepRow total, std::vector<StepRow> steps,
                                    const std::vector<StepTrend>& trends,
                                    const OptimizationConfig& cfg,
                                    int64_t in_flight, size_t step_table_size,
                                    uint64_t step_analyses,
                                    uint64_t checkpoints) {
  ExecutionSection s;
  // By name: linear in steps + trends (there may be 100,000 of each).
  absl::flat_hash_map<absl::string_view, const StepTrend*> by_name;
  by_name.reserve(trends.size());
  for (const StepTrend& t : trends) by_name.emplace(t.step, &t);
  for (StepRow& row : steps) {
    auto it = by_name.find(row.stats.name);
    if (it != by_name.end()) row.trend = *it->second;
  }
  for (const StepTrend& t : trends) {
    if (t.regressed) s.regressions.push_back(t);
  }
  s.total = std::move(total);
  s.steps = std::move(steps);
  s.in_flight = in_flight;
  s.slow_execution_threshold_ms = cfg.slow_execution_threshold_ms;
  s.step_table_size = step_table_size;
  s.step_analyses = step_analyses;
  s.max_tracked_steps = cfg.max_tracked_steps.value_or(-1);
  s.regression_enabled = cfg.enable_performance_monitoring;
  s.regression_window_seconds = cfg.performance_window_seconds;
  s.regression_degradation_threshold = cfg.performance_degradation_threshold;
  s.regression_min_executions = RegressionOptions{}.min_executions;
  s.regression_checkpoints = checkpoints;
  return s;
}

CacheSection CacheSectionOf(
    bool enabled, const ResultCacheStats& cache,
    std::vector<std::pair<std::string, uint64_t>> reasons,
    std::vector<std::pair<std::string, std::string>> uncacheable_steps) {
  CacheSection s;
  s.enabled = enabled;
  s.cache = cache;
  for (const auto& r : reasons) s.uncacheable += r.second;
  s.uncacheable_reasons = std::move(reasons);
  s.uncacheable_steps = std::move(uncacheable_steps);
  return s;
}

const char* ConcurrencyModeName(ConcurrencyMode mode) {
  switch (mode) {
    case ConcurrencyMode::kFixed:
      return "fixed";
    case ConcurrencyMode::kAdaptive:
      return "adaptive";
    default:
      return "unlimited";
  }
}

ConcurrencySection ConcurrencySectionOf(const OptimizationConfig& cfg,
                                        int64_t slots_in_use, int64_t waiting,
                                        const GateCounters& slots,
                                        std::vector<KeyLimiter::Snapshot> keys,
                                        int64_t in_flight) {
  ConcurrencySection s;
  s.max_concurrent_executions = cfg.max_concurrent_executions;
  s.slots_in_use = slots_in_use;
  s.waiting = waiting;
  s.slots = slots;
  s.mode = cfg.max_concurrent_executions.has_value() ? ConcurrencyMode::kFixed
           : cfg.enable_concurrency_optimization ? ConcurrencyMode::kAdaptive
                                                 : ConcurrencyMode::kUnlimited;
  s.keys = std::move(keys);
  s.in_flight = in_flight;
  return s;
}

BreakerSection BreakerSectionOf(
    std::vector<BreakerRegistry::NamedSnapshot> breakers) {
  BreakerSection s;
  for (const auto& b : breakers) {
    if (Severity(b.snapshot.state) < Severity(s.worst))
      s.worst = b.snapshot.state;
    s.failure_count += b.snapshot.failure_count;
    s.success_count += b.snapshot.success_count;
    s.rejected_count += b.snapshot.rejected_count;
    s.open_count += b.snapshot.open_count;
  }
  s.breakers = std::move(breakers);
  return s;
}

ErrorSection ErrorSectionOf(const StepStats::Snapshot& total,
                            const ErrorTableStats& table, uint64_t fail_fast,
                            std::vector<PatternSnapshot> patterns) {
  ErrorSection s;
  s.errors = total.errors;
  s.retries = total.retries;
  s.recovered = total.recovered;
  s.error_rate = total.attempts ? static_cast<double>(total.errors) /
                                      static_cast<double>(total.attempts)
                                : 0.0;
  const uint64_t failed_once = total.recovered + total.failures;
  s.recovery_success_rate = failed_once ? static_cast<double>(total.recovered) /
                                              static_cast<double>(failed_once)
                                        : 0.0;
  s.table = table;
  s.fail_fast = fail_fast;
  s.patterns = std::move(patterns);
  return s;
}

}  // namespace caudal
