// Recommendations: the rules that turn measured stats into advice
// (ExecutorCore.get_performance_recommendations(); docs/monitoring.md,
// "Recommendations", has the table).
//
// Design. The rules read a plain snapshot (RecommendationInput): per-step
// counts and p95, regressions, breaker opens, concurrency keys, the result
// cache's counters, the worker pool's queue waits, memory, CPU, telemetry
// export time, the settings in force and the counters at the previous
// analysis (CounterMarks). Recommend() is a pure function of it: no clock,
// no globals, so a test states "at exactly these counts this rule fires".
// Counters that only grow (evictions, queue waits, breaker opens, export
// time) are judged by what happened since the marks; the per-step rules
// read cumulative counts.
//
// A recommendation that automatic optimization may apply carries an
// `action` (the config field and the value to set); the tuner
// (caudal/monitor/tuner.h) decides whether it is applied.
//
// Thread-safety: free functions over values; nothing shared.
#ifndef CAUDAL_MONITOR_RECOMMENDATIONS_H_
#define CAUDAL_MONITOR_RECOMMENDATIONS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "caudal/config/optimization_config.h"

namespace caudal {

// ---- thresholds (each rule's trigger; see Recommend()) ----

// Lookups of one step with not a single hit before caching it is called
// useless: fewer could be a cold start.
inline constexpr uint64_t kCacheNoHitLookups = 100;
// Executions of a step before its p95 is trusted against
// slow_execution_threshold_ms (a p95 of 4 samples is the maximum).
inline constexpr uint64_t kSlowMinExecutions = 5;
// Attempts of a step before its error rate is judged.
inline constexpr uint64_t kErrorMinAttempts = 10;
// Failed attempts per attempt above which a step "fails": one in ten is
// more than a flaky backend's noise.
inline constexpr double kErrorRate = 0.1;
// Timed-out attempts per attempt above which the timeout is called tight.
inline constexpr double kTimeoutRate = 0.05;
// Opens of one breaker since the last analysis: a backend that fails again
// after each recovery (once or twice is what a breaker is for).
inline constexpr uint64_t kBreakerOpens = 3;
// Result-cache lookups since the last analysis before evictions are judged.
inline constexpr uint64_t kEvictionMinLookups = 100;
// Evictions per lookup that say the working set does not fit...
inline constexpr double kEvictionRatio = 0.1;
// ...while the hit rate is high enough that a larger cache would pay.
inline constexpr double kEvictionHitRate = 0.4;
// Sync-step submissions that found the worker pool's queue full since the
// last analysis.
inline constexpr uint64_t kPoolWaits = 10;
// Exporters' time over uptime above which telemetry costs too much.
inline constexpr double kTelemetryOverhead = 0.05;

// A config value of the kind its field has (bool, int or float): what an
// automatic recommendation sets and what the tuner changes.
struct ConfigValue {
  FieldKind kind = FieldKind::kInt;
  bool b = false;
  int64_t i = 0;
  double f = 0.0;

  static ConfigValue Bool(bool v);
  static ConfigValue Int(int64_t v);
  static ConfigValue Float(double v);
  double AsDouble() const;
  bool operator==(const ConfigValue& o) const;
  bool operator!=(const ConfigValue& o) const { return !(*this == o); }
};

// The value of one of the fields automatic optimization may change
// (TunedFields() in tuner.h; also concurrency_max_limit etc.): the field's
// kind from the config's field table.
std::optional<ConfigValue> ReadConfigField(const OptimizationConfig& cfg,
                                           const std::string& field);

enum class Level { kHigh = 0, kMedium = 1, kLow = 2 };
const char* LevelName(Level level);  // "high", "medium", "low"

struct RecommendationAction {
  std::string field;
  ConfigValue value;    // what automatic optimization sets
  ConfigValue current;  // the value in force
};

struct Recommendation {
  std::string description;
  Level impact = Level::kLow;
  Level priority = Level::kLow;
  bool automatic = false;
  std::optional<std::string> step;  // the step it is about
  std::optional<std::string> key;   // the breaker or concurrency key
  std::optional<RecommendationAction> action;
};

// ---- the snapshot the rules read ----

// What a step was given (docs/executor.md, Step): unset where it follows
// the executor's config.
struct StepSettingsInput {
  std::optional<double> timeout_s;    // no timeout when unset
  std::optional<bool> cache;          // unset: the config decides
  std::optional<double> max_retries;  // shown as "(now N)" when known
  bool breaker_opted_out = false;     // Step(breaker=False)
};

struct StepInput {
  std::string name;
  uint64_t executions = 0;
  uint64_t attempts = 0;
  uint64_t errors = 0;
  uint64_t retries = 0;
  uint64_t recovered = 0;
  uint64_t timeouts = 0;
  uint64_t cache_hits = 0;
  uint64_t cache_misses = 0;
  uint64_t shared_flights = 0;
  double p95_ms = 0.0;
  std::optional<StepSettingsInput> settings;  // unset: unknown
};

// A step whose recent p95 regressed against its baseline.
struct RegressionInput {
  std::string step;
  double recent_p95_ms = 0.0;
  double baseline_p95_ms = 0.0;
  double recent_window_s = 0.0;
};

struct BreakerInput {
  std::string name;
  uint64_t open_count = 0;
};

struct ConcurrencyKeyInput {
  std::string key;
  bool adaptive = false;
  std::optional<int64_t> limit;  // unset: unlimited
  int64_t in_flight = 0;
  int64_t waiting = 0;
};

struct CacheInput {
  bool enabled = false;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
  uint64_t expirations = 0;
  uint64_t invalidations = 0;
  // Steps whose results are not cached although caching is on: why.
  std::map<std::string, std::string> uncacheable_steps;
};

struct MemoryInput {
  std::string level = "normal";  // "normal", "elevated", "critical"
  double usage_mb = 0.0;
  double threshold_mb = 0.0;
  std::vector<std::string> shrunk;  // what memory pressure shrank
};

struct CpuInput {
  double percent = 0.0;  // of the allowed CPUs
  double per_core_percent = 0.0;
  double window_s = 0.0;  // 0: no figure yet
  int64_t allowed_cpus = 1;
};

struct TelemetryInput {
  std::optional<double> export_seconds;  // unset: no exporter
  std::optional<double> uptime_seconds;
  uint64_t spans_exported = 0;
};

// The cumulative counters at the previous analysis; the rules take
// differences of them. Each may be unknown (then the whole count counts).
struct CounterMarks {
  std::optional<uint64_t> cache_hits;
  std::optional<uint64_t> cache_misses;
  std::optional<uint64_t> cache_evictions;
  std::optional<uint64_t> pool_waits;
  std::optional<double> export_seconds;
  std::optional<double> uptime_seconds;
  std::map<std::string, uint64_t> breaker_opens;
};

// The tuner's last raise of cache_max_size when it did not pay (see
// Tuner::Unpaid): from -> size, at hit rate `rate`; `now` since.
struct UnpaidRaise {
  int64_t from = 0;
  int64_t size = 0;
  double rate = 0.0;
  double now = 0.0;
};

struct RecommendationInput {
  OptimizationConfig config;  // the settings in force
  std::vector<StepInput> steps;
  std::vector<RegressionInput> regressions;
  std::vector<BreakerInput> breakers;
  std::vector<ConcurrencyKeyInput> concurrency_keys;
  CacheInput cache;
  // room waits + rejections of the worker pool; unset: no pool yet.
  std::optional<uint64_t> pool_waits;
  // The pool is the executor's own (its size is ours to change).
  bool own_pool = true;
  MemoryInput memory;
  CpuInput cpu;
  TelemetryInput telemetry;
  // Unset: no previous analysis (everything since the start counts).
  std::optional<CounterMarks> marks;
  std::optional<UnpaidRaise> unpaid;
};

// Every rule over `in`, highest priority first (stable within a priority).
std::vector<Recommendation> Recommend(const RecommendationInput& in);

// The counters the next analysis takes differences of.
CounterMarks MarksOf(const RecommendationInput& in);

// Result-cache hits per lookup since `marks` (none: since the start);
// unset when there was no lookup.
std::optional<double> CacheHitRate(const CacheInput& cache,
                                   const std::optional<CounterMarks>& marks);

// A step or key name as Python's repr() spells it ('name'), for the text.
std::string QuotedName(const std::string& name);

}  // namespace caudal

#endif  // CAUDAL_MONITOR_RECOMMENDATIONS_H_
