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

namespace {
// Every step's row, with the settings it was last analysed with.
std::vector<StepRow> StepRows(const Executor& core) {
  std::vector<StepRow> rows;
  for (auto& s : core.stats().TakeAll()) {
    const absl::optional<StepSpec::Settings> settings =
        core.steps().SettingsOf(s.name);
    rows.push_back(StepRowOf(std::move(s), settings ? &*settings : nullptr));
  }
  // The names reclaimed under max_tracked_steps, summed: rows and total
  // still add up.
  if (auto r = core.stats().TakeReclaimed())
    rows.push_back(StepRowOf(std::move(*r), nullptr));
  return rows;
}
}  // namespace

CacheSection Engine::cache_section() const {
  std::vector<std::pair<std::string, std::string>> steps =
      core_.steps().UncacheableSteps();
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
  ExecutionSection s = ExecutionSectionOf(
      StepRowOf(core_.stats().TakeTotal()), StepRows(core_), core_.Trends(),
      *core_.current_config(), core_.in_flight(), core_.steps().size(),
      core_.steps().analyses(), core_.trend_checkpoints());
  s.step_table_capacity = core_.steps().capacity();
  s.step_table_evictions = core_.steps().evictions();
  s.names_tracked = core_.stats().tracked();
  s.names_reclaimed = core_.stats().reclaimed_names();
  return s;
}

py::dict Engine::step_stats() const {
  py::dict out;
  for (const StepRow& r : StepRows(core_)) {
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
    if (auto s = core_.stats().Take(name)) h = std::move(s->latency);
    if (name == StatsRegistry::kReclaimedName) {
      if (auto r = core_.stats().TakeReclaimed()) h = std::move(r->latency);
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

}  // namespace caudal::bindings
