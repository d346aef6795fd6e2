// Engine: the read-outs (off the hot path): stats, cache, concurrency,
// breakers, errors.
#include <algorithm>

#include "engine.h"

namespace caudal::bindings {

py::dict Engine::concurrency_stats() const {
  py::dict d;
  const OptimizationConfig* cfg = core_.current_config();
  d["max_concurrent_executions"] =
      cfg->max_concurrent_executions.has_value()
          ? py::object(py::int_(*cfg->max_concurrent_executions))
          : py::object(py::none());
  d["slots_in_use"] = core_.slots_in_flight();
  d["waiting"] = core_.slots_waiting();
  const GateCounters c = core_.slot_counters();
  d["acquired"] = c.acquired;
  d["waited"] = c.waited;
  d["cancelled_waits"] = c.cancelled;
  d["max_waiting"] = c.max_waiting;
  d["mode"] = cfg->max_concurrent_executions.has_value() ? "fixed"
              : cfg->enable_concurrency_optimization     ? "adaptive"
                                                         : "unlimited";
  py::dict keys;
  for (KeyLimiter* l : core_.Limiters()) {
    const KeyLimiter::Snapshot k = l->snapshot();
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
  return d;
}

py::list Engine::limit_history() const {
  std::vector<LimitChange> all;
  for (KeyLimiter* l : core_.Limiters()) {
    for (LimitChange& c : l->history()) all.push_back(std::move(c));
  }
  std::sort(all.begin(), all.end(),
            [](const LimitChange& a, const LimitChange& b) {
              return a.at_ns < b.at_ns;
            });
  const int64_t now = core_.NowNs();
  py::list out;
  for (const LimitChange& c : all) {
    py::dict d;
    d["key"] = c.key;
    d["time_s"] = static_cast<double>(c.at_ns) / 1e9;
    d["age_s"] = static_cast<double>(now - c.at_ns) / 1e9;
    d["from"] = c.from == KeyLimiter::kUnlimited ? py::object(py::none())
                                                 : py::object(py::int_(c.from));
    d["to"] = c.to == KeyLimiter::kUnlimited ? py::object(py::none())
                                             : py::object(py::int_(c.to));
    d["in_flight"] = c.in_flight;
    d["waiting"] = c.waiting;
    out.append(d);
  }
  return out;
}

py::object Engine::window(py::handle step) {
  PyStepEntry* e = FastLookup(step);
  const OptimizationConfig* cfg = core_.current_config();
  int64_t w = -1;
  if (KeyLimiter* l = core_.LimiterFor(*e, *cfg)) w = l->limit();
  if (cfg->max_concurrent_executions.has_value()) {
    const int64_t g = *cfg->max_concurrent_executions;
    w = w < 0 ? g : std::min(w, g);
  }
  if (w < 0) return py::none();
  return py::int_(w);
}

size_t Engine::invalidate_tag(const std::string& tag) {
  std::vector<CachedValue> dropped;
  return core_.InvalidateTag(tag, &dropped);
}

size_t Engine::invalidate_prefix(const std::string& prefix) {
  std::vector<CachedValue> dropped;
  absl::StatusOr<size_t> n = core_.InvalidatePrefix(prefix, &dropped);
  if (!n.ok()) ThrowStatus(n.status());
  return *n;
}

size_t Engine::invalidate_step(const std::string& step_name) {
  std::vector<CachedValue> dropped;
  return core_.InvalidateGroup(GroupOf(step_name).lo, &dropped);
}

void Engine::clear_cache() {
  std::vector<CachedValue> dropped;
  core_.ClearCache(&dropped);
}

py::dict Engine::cache_stats() const {
  const ResultCacheStats c = core_.CacheStats();
  py::dict d;
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
  py::dict reasons;
  uint64_t uncacheable = 0;
  for (const auto& [reason, n] : core_.UncacheableReasons()) {
    reasons[py::str(reason)] = n;
    uncacheable += n;
  }
  d["uncacheable"] = uncacheable;
  d["uncacheable_reasons"] = reasons;
  py::dict steps;  // step name -> why it has no cache identity
  for (const auto& [name, why] : core_.steps().UncacheableSteps())
    steps[py::str(name)] = why;
  d["uncacheable_steps"] = steps;
  return d;
}

py::dict Engine::step_stats() const {
  py::dict out;
  for (const auto& s : core_.stats().TakeAll()) {
    py::dict d = SnapshotDict(s);
    if (auto settings = core_.steps().SettingsOf(s.name))
      d["settings"] = SettingsDict(*settings);
    out[py::str(s.name)] = std::move(d);
  }
  return out;
}

py::dict Engine::total_stats() const {
  return SnapshotDict(core_.stats().TakeTotal());
}

py::list Engine::latency_buckets(py::object step_name) const {
  LatencyHistogram::Snapshot h;
  if (step_name.is_none()) {
    h = core_.stats().TakeTotal().latency;
  } else {
    const std::string name = py::cast<std::string>(step_name);
    for (auto& s : core_.stats().TakeAll()) {
      if (s.name == name) {
        h = std::move(s.latency);
        break;
      }
    }
  }
  py::list out;
  for (int i = 0; i < static_cast<int>(h.buckets.size()); ++i) {
    if (h.buckets[i] == 0) continue;
    out.append(py::make_tuple(LatencyHistogram::BucketLower(i),
                              LatencyHistogram::BucketUpper(i), h.buckets[i]));
  }
  return out;
}

py::dict Engine::step_table() const {
  py::dict d;
  d["size"] = core_.steps().size();
  d["analyses"] = core_.steps().analyses();
  return d;
}

py::dict Engine::SettingsDict(const StepSpec::Settings& s) {
  py::dict d;
  d["timeout_s"] = s.timeout_s ? py::object(py::float_(*s.timeout_s))
                               : py::object(py::none());
  d["cache"] = s.cache == StepSwitch::kDefault
                   ? py::object(py::none())
                   : py::object(py::bool_(s.cache == StepSwitch::kOn));
  d["max_retries"] = s.max_retries;
  d["breaker"] = s.breaker ? py::object(py::str(*s.breaker))
                           : py::object(py::bool_(false));
  return d;
}

py::dict Engine::SnapshotDict(const StepStats::Snapshot& s) {
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
  const auto& h = s.latency;
  d["avg_time_ms"] = h.MeanNs() / 1e6;
  d["p50_ms"] = h.QuantileNs(0.50) / 1e6;
  d["p95_ms"] = h.QuantileNs(0.95) / 1e6;
  d["p99_ms"] = h.QuantileNs(0.99) / 1e6;
  d["max_ms"] = static_cast<double>(h.max_ns) / 1e6;
  d["min_ms"] = static_cast<double>(h.min_ns) / 1e6;
  d["total_time_ms"] = static_cast<double>(h.sum_ns) / 1e6;
  return d;
}

}  // namespace caudal::bindings
