// The stats sections' converters: each section of
// ExecutorCore.get_optimization_stats() is one native snapshot
// (caudal/monitor/stats_sections.h) and one function here turning it into
// its public dict. Conversion only (declarations: monitor_bindings.h).
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "caudal/monitor/stats_sections.h"
#include "caudal/monitor/tuner.h"
#include "monitor_bindings.h"

namespace caudal::bindings {

py::dict StepRowDict(const StepRow& r, bool with_trend) {
  const StepStats::Snapshot& s = r.stats;
  py::dict d;
  d["executions"] = s.executions;
  d["successes"] = s.successes;
  d["failures"] = s.failures;
  d["attempts"] = s.attempts;
  d["retries"] = s.retries;
  d["errors"] = s.errors;
  d["recovered"] = s.recovered;
  d["timeouts"] = s.timeouts;
  d["fallbacks"] = s.fallbacks;
  d["cancelled"] = s.cancelled;
  d["slow_executions"] = s.slow;
  d["cache_hits"] = s.cache_hits;
  d["rejected"] = s.rejected;
  d["cache_misses"] = s.cache_misses;
  d["uncacheable"] = s.uncacheable;
  d["shared_flights"] = s.shared_flights;
  d["cache_bypassed"] = s.cache_bypassed;
  d["in_flight"] = s.in_flight;
  d["avg_time_ms"] = r.avg_time_ms;
  d["p50_ms"] = r.p50_ms;
  d["p95_ms"] = r.p95_ms;
  d["p99_ms"] = r.p99_ms;
  d["max_ms"] = r.max_ms;
  d["min_ms"] = r.min_ms;
  d["total_time_ms"] = r.total_time_ms;
  if (r.settings) {
    const StepSpec::Settings& st = *r.settings;
    py::dict sd;
    sd["timeout_s"] = st.timeout_s ? py::object(py::float_(*st.timeout_s))
                                   : py::object(py::none());
    sd["cache"] = st.cache == StepSwitch::kDefault
                      ? py::object(py::none())
                      : py::object(py::bool_(st.cache == StepSwitch::kOn));
    sd["max_retries"] = st.max_retries;
    sd["breaker"] = st.breaker ? py::object(py::str(*st.breaker))
                               : py::object(py::bool_(false));
    d["settings"] = sd;
  }
  if (with_trend) {
    d["trend"] =
        r.trend ? py::object(TrendDict(*r.trend)) : py::object(py::none());
  }
  return d;
}

py::dict StepTableDict(const ExecutionSection& s) {
  py::dict d;
  d["size"] = s.step_table_size;
  d["capacity"] = s.step_table_capacity;
  d["analyses"] = s.step_analyses;
  d["evictions"] = s.step_table_evictions;
  return d;
}

py::dict ExecutionSectionDict(const ExecutionSection& s) {
  const StepRow& t = s.total;
  py::dict d;
  d["total_executions"] = t.stats.executions;
  d["successes"] = t.stats.successes;
  d["failures"] = t.stats.failures;
  d["in_flight"] = s.in_flight;
  d["avg_time_ms"] = t.avg_time_ms;
  d["p50_ms"] = t.p50_ms;
  d["p95_ms"] = t.p95_ms;
  d["p99_ms"] = t.p99_ms;
  d["max_ms"] = t.max_ms;
  d["slow_executions"] = t.stats.slow;
  d["slow_execution_threshold_ms"] = s.slow_execution_threshold_ms;
  d["timeouts"] = t.stats.timeouts;
  d["fallbacks"] = t.stats.fallbacks;
  d["cancelled"] = t.stats.cancelled;
  d["step_analysis"] = StepTableDict(s);
  py::dict names;
  names["tracked"] = s.names_tracked;
  names["reclaimed"] = s.names_reclaimed;
  names["max_tracked"] = s.max_tracked_steps < 0
                             ? py::object(py::none())
                             : py::object(py::int_(s.max_tracked_steps));
  d["step_names"] = names;
  py::dict steps;
  for (const StepRow& r : s.steps) {
    steps[py::str(r.stats.name)] = StepRowDict(r, /*with_trend=*/true);
  }
  d["steps"] = steps;
  py::dict regressions;
  for (const StepTrend& r : s.regressions) {
    regressions[py::str(r.step)] = TrendDict(r);
  }
  d["regressions"] = regressions;
  py::dict rd;
  rd["enabled"] = s.regression_enabled;
  rd["window_seconds"] = s.regression_window_seconds;
  rd["degradation_threshold"] = s.regression_degradation_threshold;
  rd["min_executions"] = s.regression_min_executions;
  rd["checkpoints"] = s.regression_checkpoints;
  d["regression_detection"] = rd;
  return d;
}

void CacheStatsInto(py::dict& d, const CacheSection& s) {
  const ResultCacheStats& c = s.cache;
  d["hits"] = c.hits;
  d["misses"] = c.misses;
  d["hit_rate"] = c.hit_rate;
  d["inserts"] = c.inserts;
  d["evictions"] = c.evictions;
  d["expirations"] = c.expirations;
  d["invalidations"] = c.invalidations;
  d["rejections"] = c.rejections;
  d["stale"] = c.stale;
  d["size"] = c.entries;
  d["bytes"] = c.bytes;
  d["max_size"] = c.max_entries;
  d["max_bytes"] = c.max_bytes;
  d["shards"] = c.num_shards;
  d["uncacheable"] = s.uncacheable;
  py::dict reasons;
  for (const auto& [reason, n] : s.uncacheable_reasons) {
    reasons[py::str(reason)] = n;
  }
  d["uncacheable_reasons"] = reasons;
  py::dict steps;
  for (const auto& [name, why] : s.uncacheable_steps) {
    steps[py::str(name)] = why;
  }
  d["uncacheable_steps"] = steps;
}

py::dict CacheSectionDict(const CacheSection& s, py::object l2) {
  py::dict d;
  d["enabled"] = s.enabled;
  CacheStatsInto(d, s);
  d["l2"] = l2;
  return d;
}

ConcurrencySection ConcurrencySectionNow(const Executor& core) {
  std::vector<KeyLimiter::Snapshot> keys;
  for (KeyLimiter* l : core.Limiters()) keys.push_back(l->snapshot());
  return ConcurrencySectionOf(*core.current_config(), core.slots_in_flight(),
                              core.slots_waiting(), core.slot_counters(),
                              std::move(keys), core.in_flight());
}

void ConcurrencyStatsInto(py::dict& d, const ConcurrencySection& s) {
  d["max_concurrent_executions"] =
      s.max_concurrent_executions
          ? py::object(py::int_(*s.max_concurrent_executions))
          : py::object(py::none());
  d["slots_in_use"] = s.slots_in_use;
  d["waiting"] = s.waiting;
  d["acquired"] = s.slots.acquired;
  d["waited"] = s.slots.waited;
  d["cancelled_waits"] = s.slots.cancelled;
  d["max_waiting"] = s.slots.max_waiting;
  d["mode"] = ConcurrencyModeName(s.mode);
  py::dict keys;
  for (const KeyLimiter::Snapshot& k : s.keys) {
    py::dict kd;
    kd["mode"] = LimiterModeName(k.mode);
    kd["limit"] = k.mode == KeyLimiter::Mode::kUnlimited
                      ? py::object(py::none())
                      : py::object(py::int_(k.limit));
    kd["in_flight"] = k.in_flight;
    kd["waiting"] = k.waiting;
    kd["acquired"] = k.counters.acquired;
    kd["waited"] = k.counters.waited;
    kd["cancelled_waits"] = k.counters.cancelled;
    kd["max_waiting"] = k.counters.max_waiting;
    kd["limit_changes"] = k.changes;
    if (k.mode == KeyLimiter::Mode::kAdaptive) {
      kd["estimated_limit"] = k.estimated_limit;
      kd["baseline_rtt_ms"] = k.baseline_rtt_ns / 1e6;
      kd["last_window_rtt_ms"] = k.last_window_rtt_ns / 1e6;
      kd["windows"] = k.windows;
      kd["samples"] = k.samples;
      kd["drops"] = k.drops;
      kd["slow_start"] = k.slow_start;
      kd["dormant"] = k.dormant;
    }
    keys[py::str(k.key)] = kd;
  }
  d["keys"] = keys;
}

py::dict ConcurrencySectionDict(const ConcurrencySection& s, py::object pool) {
  py::dict d;
  ConcurrencyStatsInto(d, s);
  d["in_flight"] = s.in_flight;
  d["concurrency_level"] = s.in_flight;
  d["worker_pool"] = pool;
  return d;
}

MemorySection MemorySectionNow(Executor& core) {
  MemorySection s;
  s.memory = core.MemoryStats(core.NowNs());
  s.rss_interval_s =
      static_cast<double>(core.memory_monitor().interval_ns()) / 1e9;
  const OptimizationConfig* cfg = core.current_config();
  s.object_pool_enabled = cfg->enable_object_pool;
  s.memory_optimization_enabled = cfg->enable_memory_optimization;
  return s;
}

void MemoryStatsInto(py::dict& d, const MemorySection& s) {
  const MemorySnapshot& m = s.memory;
  py::dict pool;
  pool["hits"] = m.pool.hits;
  pool["misses"] = m.pool.misses;
  pool["releases"] = m.pool.releases;
  pool["discards"] = m.pool.discards;
  pool["trimmed"] = m.pool.trimmed;
  pool["idle"] = m.pool.idle;
  pool["in_use"] = m.pool.in_use;
  pool["max_idle"] = m.pool.max_idle;
  pool["hit_rate"] = m.pool.hit_rate;
  pool["utilization"] = m.pool.utilization;
  d["usage_mb"] = m.usage_mb;
  d["memory_pressure_level"] = std::string(PressureLevelName(m.level));
  d["memory_pressure_threshold_mb"] = m.threshold_mb;
  d["object_pool_utilization"] = m.pool.utilization;
  d["object_pool"] = pool;
  py::list shrunk;
  for (const std::string& what : m.shrunk) shrunk.append(py::str(what));
  d["shrunk"] = shrunk;
  d["pressure_changes"] = m.pressure_changes;
  d["rss_readings"] = m.readings;
  d["rss_read_errors"] = m.read_errors;
  d["rss_interval_s"] = s.rss_interval_s;
}

py::dict MemorySectionDict(const MemorySection& s) {
  py::dict d;
  MemoryStatsInto(d, s);
  d["object_pool_enabled"] = s.object_pool_enabled;
  d["memory_optimization_enabled"] = s.memory_optimization_enabled;
  return d;
}

TelemetrySection TelemetrySectionNow(const Executor& core) {
  const OptimizationConfig* cfg = core.current_config();
  TelemetrySection s;
  s.enabled = cfg->enable_optimized_telemetry;
  s.batch_size = cfg->telemetry_batch_size;
  s.flush_interval_seconds = cfg->telemetry_flush_interval_seconds;
  s.buffer_size = cfg->telemetry_buffer_size;
  s.recording = core.tracing();
  s.sampling_rate = core.spans().sampling_rate();
  s.spans = core.spans().GetStats();
  return s;
}

py::dict TelemetrySectionDict(const TelemetrySection& s, py::dict flusher) {
  py::dict d;
  d["enabled"] = s.enabled;
  d["batch_size"] = s.batch_size;
  d["flush_interval_seconds"] = s.flush_interval_seconds;
  d["buffer_size"] = s.buffer_size;
  d["recording"] = s.recording;
  d["sampling_rate"] = s.sampling_rate;
  d["spans_recorded"] = s.spans.recorded;
  d["spans_sampled_out"] = s.spans.sampled_out;
  d["spans_dropped"] = s.spans.dropped;
  d["spans_drained"] = s.spans.drained;
  d["spans_buffered"] = s.spans.buffered;
  d["thread_buffers"] = s.spans.threads;
  for (auto [k, v] : flusher) d[k] = v;
  return d;
}

SystemSection SystemSectionNow(Executor& core) {
  SystemSection s;
  s.cpu = core.CpuStats(core.NowNs());
  s.cpu_usage_threshold_percent =
      core.current_config()->cpu_usage_threshold_percent;
  return s;
}

py::dict SystemSectionDict(const SystemSection& sys) {
  const CpuSnapshot& s = sys.cpu;
  py::dict d;
  d["cpu_percent"] = s.percent;
  d["cpu_percent_per_core"] = s.per_core_percent;
  d["allowed_cpus"] = s.allowed_cpus;
  d["cpu_window_s"] = s.window_s;
  d["cpu_seconds"] = s.cpu_seconds;
  d["cpu_readings"] = s.readings;
  d["cpu_read_errors"] = s.read_errors;
  d["cpu_usage_threshold_percent"] = sys.cpu_usage_threshold_percent;
  return d;
}

py::dict CpuStatsDict(Executor& core) {
  return SystemSectionDict(SystemSectionNow(core));
}

py::dict BreakerSectionDict(Executor& core) {
  const OptimizationConfig* cfg = core.current_config();
  const BreakerSection s = BreakerSectionOf(core.BreakerSnapshots());
  const int64_t now = core.NowNs();
  py::dict d;
  d["enabled"] = cfg->enable_circuit_breaker;
  d["state"] = absl::AsciiStrToUpper(StateName(s.worst));
  d["failure_count"] = s.failure_count;
  d["success_count"] = s.success_count;
  d["rejected_count"] = s.rejected_count;
  d["open_count"] = s.open_count;
  d["failure_threshold"] = cfg->circuit_breaker_failure_threshold;
  d["recovery_timeout_seconds"] = cfg->circuit_breaker_recovery_timeout_seconds;
  py::dict breakers;
  for (const auto& n : s.breakers) {
    const CircuitBreaker::Snapshot& b = n.snapshot;
    py::dict bd;
    bd["name"] = n.name;
    bd["state"] = std::string(StateName(b.state));
    bd["consecutive_failures"] = b.consecutive_failures;
    bd["failure_count"] = b.failure_count;
    bd["success_count"] = b.success_count;
    bd["rejected_count"] = b.rejected_count;
    bd["open_count"] = b.open_count;
    bd["probes_in_flight"] = b.probes_in_flight;
    bd["window_calls"] = b.window_calls;
    bd["window_failures"] = b.window_failures;
    bd["last_transition_age_s"] =
        b.last_transition_ns
            ? py::cast(static_cast<double>(now - b.last_transition_ns) / 1e9)
            : py::none();
    bd["open_for_s"] =
        b.state == CircuitBreaker::State::kOpen
            ? py::cast(std::max<double>(
                  0, static_cast<double>(b.open_until_ns - now) / 1e9))
            : py::none();
    breakers[py::str(n.name)] = bd;
  }
  d["breakers"] = breakers;
  py::list transitions;
  for (const auto& t : core.RecentTransitions()) {
    py::dict td;
    td["breaker"] = t.breaker;
    td["from"] = std::string(StateName(t.transition.from));
    td["to"] = std::string(StateName(t.transition.to));
    td["age_s"] = static_cast<double>(now - t.transition.at_ns) / 1e9;
    td["seq"] = t.transition.seq;
    transitions.append(td);
  }
  d["transitions"] = transitions;
  return d;
}

py::dict ErrorSectionDict(Executor& core) {
  constexpr size_t kShownPatterns = 20;
  const ErrorSection s = ErrorSectionOf(
      core.stats().TakeTotal(), core.ErrorStats(), core.fail_fast_count(),
      core.ErrorPatterns(kShownPatterns));
  py::dict d;
  d["enabled"] = core.current_config()->enable_optimized_error_handling;
  d["error_rate"] = s.error_rate;
  d["errors"] = s.errors;
  d["retries"] = s.retries;
  d["recovered"] = s.recovered;
  d["recovery_success_rate"] = s.recovery_success_rate;
  d["retry_recovery_rate"] = s.table.recovery_success_rate;
  d["cached_patterns"] = s.table.cached_patterns;
  d["pattern_capacity"] = s.table.capacity;
  d["fail_fast"] = s.fail_fast;
  py::list patterns;
  for (const PatternSnapshot& p : s.patterns) {
    py::dict pd;
    pd["step"] = p.step;
    pd["exception"] = p.exc_type;
    pd["sample"] = p.sample;
    pd["occurrences"] = p.occurrences;
    pd["retried"] = p.retried;
    pd["recovered"] = p.recovered;
    pd["failed_after_retry"] = p.failed_after_retry;
    patterns.append(pd);
  }
  d["patterns"] = patterns;
  return d;
}

py::dict TrendDict(const StepTrend& t) {
  py::dict d;
  d["regressed"] = t.regressed;
  d["evaluated"] = t.evaluated;
  d["recent_p95_ms"] = t.recent_p95_ns / 1e6;
  d["baseline_p95_ms"] = t.baseline_p95_ns / 1e6;
  d["recent_executions"] = t.recent_executions;
  d["baseline_executions"] = t.baseline_executions;
  d["recent_window_s"] = t.recent_span_s;
  d["baseline_window_s"] = t.baseline_span_s;
  d["throughput_per_s"] = t.throughput_per_s;
  d["regressed_since_s"] =
      t.regressed
          ? py::object(py::float_(static_cast<double>(t.since_ns) / 1e9))
          : py::object(py::none());
  d["regressions"] = t.regressions;
  return d;
}

void SetCpuSource(Executor& core, py::object source, int allowed) {
  core.cpu_monitor().SetAllowedCpus(allowed);
  if (source.is_none()) {
    core.cpu_monitor().SetSource({});
    return;
  }
  // Owned by the monitor, which may drop it from any thread.
  std::shared_ptr<PyObject> fn(source.release().ptr(), DecRefWithGil);
  core.cpu_monitor().SetSource([fn]() -> absl::StatusOr<int64_t> {
    PyGILState_STATE g = PyGILState_Ensure();
    absl::StatusOr<int64_t> out = absl::UnavailableError("cpu source failed");
    PyObject* r = PyObject_CallNoArgs(fn.get());
    if (r != nullptr) {
      const long long v = PyLong_AsLongLong(r);
      Py_DECREF(r);
      if (!PyErr_Occurred()) out = static_cast<int64_t>(v);
    }
    PyErr_Clear();  // counted as a read error (cpu_read_errors)
    PyGILState_Release(g);
    return out;
  });
}

bool PublishEvent(Executor& core, const std::string& type,
                  const std::string& key, double value, double value2,
                  const std::string& detail) {
  const absl::optional<EventType> t = EventTypeFromName(type);
  if (!t) throw py::value_error("unknown event type '" + type + "'");
  if (!core.events().Wants(*t)) return false;
  Event e;
  e.type = *t;
  e.time_ns = core.NowNs();
  e.key = key;
  e.value = value;
  e.value2 = value2;
  e.detail = detail;
  core.events().Publish(e);
  return true;
}

}  // namespace caudal::bindings
