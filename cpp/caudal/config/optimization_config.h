// OptimizationConfig: every setting of the executor, with the defaults of
// flujo's OptimizationConfig, validation and a JSON form.
//
// The fields are declared once, in CAUDAL_CONFIG_FIELDS below; the struct,
// the JSON reader/writer, the field table used by the Python bindings and the
// generated config reference all come from that one list, so they cannot
// drift apart.
//
// Thread-safety: a value type. The executor shares an immutable
// `std::shared_ptr<const OptimizationConfig>` between threads and swaps it
// atomically on `apply_optimization_config`.
#ifndef CAUDAL_CONFIG_OPTIMIZATION_CONFIG_H_
#define CAUDAL_CONFIG_OPTIMIZATION_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace caudal {

// X(kind, name, default, doc). kind is one of BOOL, INT, FLOAT, OPT_INT.
// OPT_INT is an integer that may be unset (None in Python, null in JSON).
#define CAUDAL_CONFIG_FIELDS(X)                                                \
  /* memory */                                                                 \
  X(BOOL, enable_object_pool, true,                                            \
    "Pool the native per-execution records so the hot path allocates nothing") \
  X(INT, object_pool_max_size, 50,                                             \
    "Idle records the pool keeps (in total); more are freed on release")       \
  X(FLOAT, object_pool_cleanup_threshold, 0.9,                                 \
    "Fraction of object_pool_max_size above which idle records are trimmed")   \
  X(BOOL, enable_context_optimization, true,                                   \
    "Give steps copy-on-write context snapshots instead of copies")            \
  X(BOOL, enable_memory_optimization, true,                                    \
    "Watch process RSS and shrink caches and pools under pressure")            \
  /* execution */                                                              \
  X(BOOL, enable_step_optimization, true,                                      \
    "Analyse each step once (kind, parameters) and cache the analysis")        \
  X(BOOL, enable_algorithm_optimization, true,                                 \
    "Native 128-bit cache keys from a typed walk of the input")                \
  X(BOOL, enable_concurrency_optimization, true,                               \
    "Adaptive concurrency limit when max_concurrent_executions is None")       \
  X(OPT_INT, max_concurrent_executions, std::nullopt,                          \
    "Fixed limit on executions in flight; None = adaptive or unlimited")       \
  X(INT, concurrency_initial_limit, 4,                                         \
    "Adaptive mode: the limit a key starts at")                                \
  X(INT, concurrency_min_limit, 1, "Adaptive mode: the lowest limit of a key") \
  X(INT, concurrency_max_limit, 1000,                                          \
    "Adaptive mode: the highest limit of a key")                               \
  X(FLOAT, concurrency_latency_tolerance, 0.2,                                 \
    "Adaptive mode: latency growth over the unloaded baseline accepted "       \
    "before the limit shrinks (plus measured noise)")                          \
  X(INT, worker_pool_size, 0,                                                  \
    "Threads running sync (def) steps; 0 = min(32, CPUs + 4)")                 \
  X(INT, worker_pool_queue_size, 10000,                                        \
    "Sync-step tasks queued before further submitters wait for room")          \
  X(FLOAT, worker_pool_task_timeout_seconds, 0.0,                              \
    "Longest a sync-step task may wait in the queue; 0 = no limit")            \
  /* telemetry */                                                              \
  X(BOOL, enable_optimized_telemetry, true,                                    \
    "Record spans natively into per-thread buffers (sampled, batched)")        \
  X(BOOL, enable_performance_monitoring, true,                                 \
    "Per-step latency histograms, error rates, slow-execution detection")      \
  X(OPT_INT, max_tracked_steps, std::nullopt,                                  \
    "Step names whose stats are kept by name; beyond it idle names are folded" \
    " into the (reclaimed) row; None = no bound")                              \
  X(INT, telemetry_batch_size, 10, "Spans per exported batch")                 \
  X(FLOAT, telemetry_flush_interval_seconds, 30.0,                             \
    "Longest time a recorded span waits before it is exported")                \
  X(FLOAT, telemetry_sampling_rate, 1.0,                                       \
    "Fraction of executions traced; failures and slow ones are always kept")   \
  X(INT, telemetry_buffer_size, 4096,                                          \
    "Spans a thread buffers for export; beyond it spans are dropped, counted") \
  /* error handling */                                                         \
  X(BOOL, enable_optimized_error_handling, true,                               \
    "Learn which errors recover on retry; fail fast on those that never do")   \
  X(BOOL, enable_circuit_breaker, true,                                        \
    "Per-step circuit breaker (closed / open / half-open)")                    \
  X(INT, error_cache_size, 50, "Error patterns remembered")                    \
  X(INT, circuit_breaker_failure_threshold, 10,                                \
    "Consecutive failures that open the breaker")                              \
  X(FLOAT, circuit_breaker_recovery_timeout_seconds, 60.0,                     \
    "Time an open breaker waits before admitting a probe")                     \
  X(INT, circuit_breaker_half_open_max_calls, 1,                               \
    "Probe calls a half-open breaker admits at once")                          \
  X(INT, circuit_breaker_success_threshold, 1,                                 \
    "Successful probes that close a half-open breaker")                        \
  X(INT, circuit_breaker_window_size, 0,                                       \
    "Calls in the failure-rate window; 0 = consecutive failures only")         \
  X(INT, circuit_breaker_minimum_calls, 10,                                    \
    "Calls the window needs before its failure rate can open the breaker")     \
  X(FLOAT, circuit_breaker_failure_rate_threshold, 0.5,                        \
    "Failure rate over the window that opens the breaker")                     \
  X(BOOL, circuit_breaker_wait_for_probe, true,                                \
    "An execution meeting an open breaker waits for its half-open probe "      \
    "(within its retry budget) instead of failing at once")                    \
  X(FLOAT, retry_after_max_seconds, 60.0,                                      \
    "Longest server-stated wait (Retry-After) honoured; a longer one ends "    \
    "the execution at once")                                                   \
  X(INT, error_pattern_min_observations, 3,                                    \
    "Retries of an error pattern, none recovering, before it fails fast")      \
  X(BOOL, error_pattern_match_message, true,                                   \
    "Patterns key on the normalised message as well as the exception type")    \
  /* cache */                                                                  \
  X(BOOL, enable_cache_optimization, false,                                    \
    "Cache step results (keyed by step and input)")                            \
  X(BOOL, cache_compression, false,                                            \
    "Compress large cache entries stored in the shared (Redis) tier")          \
  X(FLOAT, cache_ttl_seconds, 7200.0, "Cache entry time-to-live")              \
  X(INT, cache_max_size, 500, "Maximum cache entries in the in-process tier")  \
  X(INT, cache_max_bytes, 0,                                                   \
    "Byte budget of the in-process tier (estimated sizes); 0 = none")          \
  X(BOOL, cache_copy_outputs, false,                                           \
    "Store and return deep copies (False: hits share the stored object)")      \
  /* thresholds */                                                             \
  X(FLOAT, slow_execution_threshold_ms, 1000.0,                                \
    "Executions slower than this are counted (and always traced) as slow")     \
  X(FLOAT, memory_pressure_threshold_mb, 500.0,                                \
    "Process RSS above which caches and pools shrink")                         \
  X(FLOAT, cpu_usage_threshold_percent, 80.0,                                  \
    "Process CPU use above which a recommendation is raised")                  \
  /* automatic optimization */                                                 \
  X(BOOL, enable_automatic_optimization, false,                                \
    "Apply automatic recommendations every analysis interval")                 \
  X(FLOAT, optimization_analysis_interval_seconds, 60.0,                       \
    "How often automatic optimization analyses the stats")                     \
  X(FLOAT, performance_degradation_threshold, 0.2,                             \
    "Relative p95 growth (recent vs baseline) reported as a regression")       \
  X(FLOAT, performance_window_seconds, 60.0,                                   \
    "Regression detection: the recent window, compared with the ones before")

namespace config_internal {
using BOOL = bool;
using INT = int64_t;
using FLOAT = double;
using OPT_INT = std::optional<int64_t>;
}  // namespace config_internal

struct OptimizationConfig {
#define CAUDAL_DECLARE_FIELD(kind, name, def, doc) \
  config_internal::kind name = def;
  CAUDAL_CONFIG_FIELDS(CAUDAL_DECLARE_FIELD)
#undef CAUDAL_DECLARE_FIELD

  // Human-readable problems ("object_pool_max_size must be positive"); empty
  // when the config is valid.
  std::vector<std::string> Validate() const;

  // JSON object with every field (null for an unset OPT_INT).
  std::string ToJson(int indent = 2) const;

  // Parses a JSON object (UTF-8); absent fields keep their defaults. Every
  // problem is in one kInvalidArgument status, one per line: bad UTF-8, NUL
  // bytes, deep nesting and malformed JSON with their line and column;
  // unknown fields, duplicate keys, wrong types and out-of-range values
  // with their JSON path. An OK result is always a valid config.
  static absl::StatusOr<OptimizationConfig> FromJson(const std::string& text);

  bool operator==(const OptimizationConfig& other) const;
  bool operator!=(const OptimizationConfig& other) const {
    return !(*this == other);
  }
};

// The field table: one entry per field, in declaration order.
enum class FieldKind { kBool, kInt, kFloat, kOptInt };

struct FieldInfo {
  const char* name;
  FieldKind kind;
  const char* doc;
  const char* default_repr;  // Python spelling: "True", "50", "0.9", "None"
  const char* rule;          // validation rule in words, "" when none
};

const std::vector<FieldInfo>& ConfigFields();

}  // namespace caudal

#endif  // CAUDAL_CONFIG_OPTIMIZATION_CONFIG_H_
