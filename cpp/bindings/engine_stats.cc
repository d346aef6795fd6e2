// Engine: the read-outs (off the hot path): stats, cache, concurrency,
// breakers, errors.
#include <algorithm>

#include "engine.h"

namespace caudal::bindings {

py::dict Engine::concurrency_stats() const {
  py::dict d;
  ConcurrencyStatsInto(d, ConcurrencySectionNow(core_));
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

size_t Engine::invalidate_prefix(const std::string& step_name) {
  std::vector<CachedValue> dropped;
  return core_.InvalidateGroup(GroupOf(step_name).lo, &dropped);
}

void Engine::clear_cache() {
  std::vector<CachedValue> dropped;
  core_.ClearCache(&dropped);
}

namespace {
// Every step's row, with the settings it was last analysed with.
std::vector<StepRow> StepRows(const Executor& core,
                              const std::map<std::string, StepSpec>& specs) {
  std::vector<StepRow> rows;
  for (auto& s : core.stats().TakeAll()) {
    auto it = specs.find(s.name);
    rows.push_back(
        StepRowOf(std::move(s), it != specs.end() ? &it->second : nullptr));
  }
  return rows;
}
}  // namespace

CacheSection Engine::cache_section() const {
  std::vector<std::pair<std::string, std::string>> steps(
      uncacheable_steps_.begin(), uncacheable_steps_.end());
  return CacheSectionOf(core_.current_config()->enable_cache_optimization,
                        core_.CacheStats(), core_.UncacheableReasons(),
                        std::move(steps));
}

py::dict Engine::cache_stats() const {
  py::dict d;
  CacheStatsInto(d, cache_section());
  return d;
}

ExecutionSection Engine::execution_section() const {
  return ExecutionSectionOf(StepRowOf(core_.stats().TakeTotal()),
                            StepRows(core_, step_specs_), core_.Trends(),
                            *core_.current_config(), core_.in_flight(),
                            core_.steps().size(), core_.steps().analyses(),
                            core_.trend_checkpoints());
}

py::dict Engine::step_stats() const {
  py::dict out;
  for (const StepRow& r : StepRows(core_, step_specs_)) {
    out[py::str(r.stats.name)] = StepRowDict(r);
  }
  return out;
}

py::dict Engine::total_stats() const {
  return StepRowDict(StepRowOf(core_.stats().TakeTotal()));
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
  return StepTableDict(core_.steps().size(), core_.steps().analyses());
}

py::list Engine::breaker_stats() const {
  py::list out;
  for (const auto& n : core_.BreakerSnapshots()) {
    const auto& b = n.snapshot;
    py::dict d;
    d["name"] = n.name;
    d["state"] = std::string(StateName(b.state));
    d["consecutive_failures"] = b.consecutive_failures;
    d["failure_count"] = b.failure_count;
    d["success_count"] = b.success_count;
    d["rejected_count"] = b.rejected_count;
    d["open_count"] = b.open_count;
    d["probes_in_flight"] = b.probes_in_flight;
    d["window_calls"] = b.window_calls;
    d["window_failures"] = b.window_failures;
    const int64_t now = core_.NowNs();
    d["last_transition_age_s"] =
        b.last_transition_ns
            ? py::cast(static_cast<double>(now - b.last_transition_ns) / 1e9)
            : py::none();
    d["open_for_s"] =
        b.state == CircuitBreaker::State::kOpen
            ? py::cast(std::max<double>(
                  0, static_cast<double>(b.open_until_ns - now) / 1e9))
            : py::none();
    out.append(d);
  }
  return out;
}

py::list Engine::transitions() const {
  py::list out;
  const int64_t now = core_.NowNs();
  for (const auto& t : core_.RecentTransitions()) {
    py::dict d;
    d["breaker"] = t.breaker;
    d["from"] = std::string(StateName(t.transition.from));
    d["to"] = std::string(StateName(t.transition.to));
    d["age_s"] = static_cast<double>(now - t.transition.at_ns) / 1e9;
    d["seq"] = t.transition.seq;
    out.append(d);
  }
  return out;
}

py::dict Engine::error_stats(size_t max_patterns) const {
  const ErrorTableStats st = core_.ErrorStats();
  py::dict d;
  d["total_errors"] = st.total_errors;
  d["retry_outcomes"] = st.total_retries;
  d["recoveries"] = st.recoveries;
  d["failures_after_retry"] = st.failures_after_retry;
  d["recovery_success_rate"] = st.recovery_success_rate;
  d["cached_patterns"] = st.cached_patterns;
  d["capacity"] = st.capacity;
  d["evictions"] = st.evictions;
  d["fail_fast"] = core_.fail_fast_count();
  py::list patterns;
  for (const auto& p : core_.ErrorPatterns(max_patterns)) {
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

}  // namespace caudal::bindings
