#include "monitor_bindings.h"

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

namespace caudal::bindings {
// ---- recommendations and the tuner: conversion only ----
namespace {

// d[key] (KeyError when missing, as the rules' Python spelling had it).
py::object Item(py::handle d, const char* key) {
  return py::reinterpret_borrow<py::object>(d)[key];
}
// d.get(key) (None when missing); `d` may be None or empty (`x or {}`).
py::object Get(py::handle d, const char* key) {
  if (d.is_none()) return py::none();
  return py::reinterpret_borrow<py::object>(d).attr("get")(key);
}
uint64_t U64(py::handle v, uint64_t missing = 0) {
  if (v.is_none()) return missing;
  const int64_t n = py::cast<int64_t>(v);
  return n < 0 ? 0 : static_cast<uint64_t>(n);
}
double F(py::handle v, double missing = 0.0) {
  return v.is_none() ? missing : py::cast<double>(v);
}
std::optional<double> OptF(py::handle v) {
  if (v.is_none()) return std::nullopt;
  return py::cast<double>(v);
}
std::optional<uint64_t> OptU64(py::handle v) {
  if (v.is_none()) return std::nullopt;
  return U64(v);
}
py::dict Items(py::handle d) { return py::reinterpret_borrow<py::dict>(d); }

std::optional<CounterMarks> MarksFrom(py::handle marks) {
  if (marks.is_none() || !py::bool_(py::reinterpret_borrow<py::object>(marks)))
    return std::nullopt;  // no previous analysis: everything counts
  CounterMarks m;
  m.cache_hits = OptU64(Get(marks, "cache_hits"));
  m.cache_misses = OptU64(Get(marks, "cache_misses"));
  m.cache_evictions = OptU64(Get(marks, "cache_evictions"));
  m.pool_waits = OptU64(Get(marks, "pool_waits"));
  m.export_seconds = OptF(Get(marks, "export_seconds"));
  m.uptime_seconds = OptF(Get(marks, "uptime_seconds"));
  py::object opens = Get(marks, "breaker_opens");
  if (!opens.is_none()) {
    for (auto [name, n] : Items(opens)) {
      m.breaker_opens[py::cast<std::string>(name)] = U64(n);
    }
  }
  return m;
}

py::object OrNone(const std::optional<uint64_t>& v) {
  return v ? py::object(py::int_(*v)) : py::object(py::none());
}
py::object OrNone(const std::optional<double>& v) {
  return v ? py::object(py::float_(*v)) : py::object(py::none());
}

py::dict MarksDict(const CounterMarks& m) {
  py::dict d;
  d["cache_hits"] = OrNone(m.cache_hits);
  d["cache_misses"] = OrNone(m.cache_misses);
  d["cache_evictions"] = OrNone(m.cache_evictions);
  d["pool_waits"] = OrNone(m.pool_waits);
  d["export_seconds"] = OrNone(m.export_seconds);
  d["uptime_seconds"] = OrNone(m.uptime_seconds);
  py::dict opens;
  for (const auto& [name, n] : m.breaker_opens) opens[py::str(name)] = n;
  d["breaker_opens"] = opens;
  return d;
}

py::object ValueOf(const ConfigValue& v) {
  switch (v.kind) {
    case FieldKind::kBool:
      return py::bool_(v.b);
    case FieldKind::kFloat:
      return py::float_(v.f);
    default:
      return py::int_(v.i);
  }
}

py::list RecommendationList(const std::vector<Recommendation>& recs) {
  py::list out;
  for (const Recommendation& r : recs) {
    py::dict d;
    d["description"] = r.description;
    d["impact"] = LevelName(r.impact);
    d["priority"] = LevelName(r.priority);
    d["automatic"] = r.automatic;
    if (r.step) d["step"] = *r.step;
    if (r.key) d["key"] = *r.key;
    if (r.action) {
      py::dict a;
      a["field"] = r.action->field;
      a["value"] = ValueOf(r.action->value);
      a["current"] = ValueOf(r.action->current);
      d["action"] = a;
    }
    out.append(d);
  }
  return out;
}

py::dict ChangeDict(const ConfigChange& c, bool applied) {
  py::dict d;
  d["analysis"] = c.analysis;
  d["field"] = c.field;
  d["old"] = ValueOf(c.old_value);
  d["new"] = ValueOf(c.new_value);
  d["reversal"] = c.reversal;
  d["reason"] = c.reason;
  if (applied) d["time"] = static_cast<double>(c.time_ns) / 1e9;
  return d;
}
py::list ChangeList(const std::vector<ConfigChange>& changes, bool applied) {
  py::list out;
  for (const ConfigChange& c : changes) out.append(ChangeDict(c, applied));
  return out;
}

// stats["automatic_optimization"].
py::dict TunerStatsDict(const Tuner& t, const OptimizationConfig& cfg) {
  py::dict d;
  d["enabled"] = cfg.enable_automatic_optimization;
  d["interval_seconds"] = cfg.optimization_analysis_interval_seconds;
  d["analyses"] = t.analyses();
  d["failed"] = t.failed();
  d["changes"] = ChangeList(t.changes(), true);
  py::object last = py::none();
  if (const std::optional<AnalysisOutcome> o = t.last()) {
    py::dict l;
    l["analysis"] = o->analysis;
    l["time"] = static_cast<double>(o->time_ns) / 1e9;
    l["proposed"] = o->proposed;
    l["applied"] = ChangeList(o->applied, true);
    py::list held;
    for (const HeldChange& h : o->held) {
      py::dict hd;
      hd["field"] = h.field;
      hd["value"] = ValueOf(h.value);
      hd["reason"] = h.reason;
      held.append(hd);
    }
    l["held"] = held;
    l["error"] = o->error ? py::object(py::str(*o->error)) : py::none();
    last = l;
  }
  d["last_analysis"] = last;
  d["cooldown_analyses"] = t.rules().cooldown;
  d["reversal_persistence"] = t.rules().reversal_persistence;
  d["reversal_cooldown_analyses"] = t.rules().reversal_cooldown;
  py::dict bounds;
  for (const TunedField& f : TunedFields()) {
    py::list lo_hi;
    lo_hi.append(ValueOf(f.lo));
    lo_hi.append(ValueOf(f.hi));
    bounds[f.name] = lo_hi;
  }
  d["bounds"] = bounds;
  return d;
}

}  // namespace

RecommendationInput RecommendationInputOf(py::handle stats,
                                          const OptimizationConfig& cfg) {
  RecommendationInput in;
  in.config = cfg;
  py::object ex = Item(stats, "execution");
  for (auto [name, s] : Items(Item(ex, "steps"))) {
    StepInput st;
    st.name = py::cast<std::string>(name);
    st.executions = U64(Item(s, "executions"));
    st.attempts = U64(Item(s, "attempts"));
    st.errors = U64(Item(s, "errors"));
    st.retries = U64(Item(s, "retries"));
    st.recovered = U64(Item(s, "recovered"));
    st.timeouts = U64(Item(s, "timeouts"));
    st.cache_hits = U64(Item(s, "cache_hits"));
    st.cache_misses = U64(Item(s, "cache_misses"));
    st.shared_flights = U64(Item(s, "shared_flights"));
    st.p95_ms = F(Item(s, "p95_ms"));
    py::object settings = Get(s, "settings");
    if (!settings.is_none()) {
      StepSettingsInput set;
      set.timeout_s = OptF(Get(settings, "timeout_s"));
      py::object cache = Get(settings, "cache");
      if (!cache.is_none()) set.cache = cache.ptr() == Py_True;
      set.max_retries = OptF(Get(settings, "max_retries"));
      set.breaker_opted_out = Get(settings, "breaker").ptr() == Py_False;
      st.settings = set;
    }
    in.steps.push_back(std::move(st));
  }
  for (auto [name, t] : Items(Item(ex, "regressions"))) {
    in.regressions.push_back(
        {py::cast<std::string>(name), F(Item(t, "recent_p95_ms")),
         F(Item(t, "baseline_p95_ms")), F(Item(t, "recent_window_s"))});
  }
  for (auto [name, b] :
       Items(Item(Item(stats, "circuit_breaker"), "breakers"))) {
    in.breakers.push_back(
        {py::cast<std::string>(name), U64(Item(b, "open_count"))});
  }
  py::object conc = Item(stats, "concurrency");
  for (auto [key, k] : Items(Item(conc, "keys"))) {
    ConcurrencyKeyInput ck;
    ck.key = py::cast<std::string>(key);
    ck.adaptive = py::cast<std::string>(Item(k, "mode")) == "adaptive";
    py::object limit = Item(k, "limit");
    if (!limit.is_none()) ck.limit = py::cast<int64_t>(limit);
    ck.in_flight = py::cast<int64_t>(Item(k, "in_flight"));
    ck.waiting = py::cast<int64_t>(Item(k, "waiting"));
    in.concurrency_keys.push_back(std::move(ck));
  }
  py::object pool = Item(conc, "worker_pool");
  if (!pool.is_none()) {
    in.pool_waits = U64(Get(pool, "room_waits")) + U64(Get(pool, "rejected"));
  }
  py::object cache = Item(stats, "cache");
  in.cache.enabled = py::bool_(Get(cache, "enabled"));
  in.cache.hits = U64(Get(cache, "hits"));
  in.cache.misses = U64(Get(cache, "misses"));
  in.cache.evictions = U64(Get(cache, "evictions"));
  in.cache.expirations = U64(Get(cache, "expirations"));
  in.cache.invalidations = U64(Get(cache, "invalidations"));
  py::object uncacheable = Get(cache, "uncacheable_steps");
  if (!uncacheable.is_none()) {
    for (auto [name, why] : Items(uncacheable)) {
      in.cache.uncacheable_steps[py::cast<std::string>(name)] =
          py::cast<std::string>(py::str(why));
    }
  }
  py::object mem = Item(stats, "memory");
  in.memory.level = py::cast<std::string>(Item(mem, "memory_pressure_level"));
  in.memory.usage_mb = F(Get(mem, "usage_mb"));
  in.memory.threshold_mb = F(Get(mem, "memory_pressure_threshold_mb"));
  py::object shrunk = Get(mem, "shrunk");
  if (!shrunk.is_none()) {
    for (py::handle what : shrunk) {
      in.memory.shrunk.push_back(py::cast<std::string>(py::str(what)));
    }
  }
  py::object system = Get(stats, "system");
  in.cpu.percent = F(Get(system, "cpu_percent"));
  in.cpu.per_core_percent = F(Get(system, "cpu_percent_per_core"));
  in.cpu.window_s = F(Get(system, "cpu_window_s"));
  in.cpu.allowed_cpus =
      static_cast<int64_t>(U64(Get(system, "allowed_cpus"), 1));
  py::object tele = Get(stats, "telemetry");
  in.telemetry.export_seconds = OptF(Get(tele, "export_seconds"));
  in.telemetry.uptime_seconds = OptF(Get(tele, "uptime_seconds"));
  in.telemetry.spans_exported = U64(Get(tele, "spans_exported"));
  return in;
}

void RegisterMonitor(py::module_& m) {
  m.def(
      "recommend",
      [](py::handle stats, const OptimizationConfig& cfg, py::handle marks,
         bool own_pool, py::handle unpaid) {
        RecommendationInput in = RecommendationInputOf(stats, cfg);
        in.marks = MarksFrom(marks);
        in.own_pool = own_pool;
        if (!unpaid.is_none()) {
          in.unpaid =
              UnpaidRaise{py::cast<int64_t>(Item(unpaid, "from")),
                          py::cast<int64_t>(Item(unpaid, "size")),
                          F(Item(unpaid, "rate")), F(Item(unpaid, "now"))};
        }
        return RecommendationList(Recommend(in));
      },
      py::arg("stats"), py::arg("config"), py::arg("marks") = py::none(),
      py::arg("own_pool") = true, py::arg("unpaid") = py::none(),
      "The recommendation rules over a get_optimization_stats() dict "
      "(cpp/caudal/monitor/recommendations.h). `marks`: the counters at the "
      "previous analysis (None: since the start); `unpaid`: the last cache "
      "raise that did not pay ({from, size, rate, now}).");

  py::dict rules;
  const TunerRules defaults;
  rules["cooldown"] = defaults.cooldown;
  rules["reversal_persistence"] = defaults.reversal_persistence;
  rules["reversal_cooldown"] = defaults.reversal_cooldown;
  rules["cache_min_gain"] = defaults.cache_min_gain;
  rules["cache_workload_change"] = defaults.cache_workload_change;
  m.attr("TUNER_RULES") = rules;
  py::dict bounds;
  for (const TunedField& f : TunedFields()) {
    bounds[f.name] = py::make_tuple(ValueOf(f.lo), ValueOf(f.hi));
  }
  m.attr("TUNED_BOUNDS") = bounds;
  m.attr("TUNER_HISTORY") = kTunerHistory;

  py::class_<Tuner>(
      m, "Tuner",
      "Automatic optimization's hysteresis "
      "(cpp/caudal/monitor/tuner.h); internal: caudal._executor.tuner.")
      .def(py::init([](int cooldown, int reversal_persistence,
                       int reversal_cooldown, double cache_min_gain,
                       double cache_workload_change) {
             TunerRules r;
             r.cooldown = cooldown;
             r.reversal_persistence = reversal_persistence;
             r.reversal_cooldown = reversal_cooldown;
             r.cache_min_gain = cache_min_gain;
             r.cache_workload_change = cache_workload_change;
             return std::make_unique<Tuner>(r);
           }),
           py::arg("cooldown") = defaults.cooldown,
           py::arg("reversal_persistence") = defaults.reversal_persistence,
           py::arg("reversal_cooldown") = defaults.reversal_cooldown,
           py::arg("cache_min_gain") = defaults.cache_min_gain,
           py::arg("cache_workload_change") = defaults.cache_workload_change)
      .def(
          "recommend",
          [](const Tuner& t, py::handle stats, const OptimizationConfig& cfg,
             bool own_pool) {
            RecommendationInput in = RecommendationInputOf(stats, cfg);
            in.own_pool = own_pool;
            return RecommendationList(t.Recommend(std::move(in)));
          },
          "The recommendations, judged since the last analysis.")
      .def(
          "plan",
          [](Tuner& t, py::handle stats, const OptimizationConfig& cfg,
             bool own_pool, bool dry_run) {
            RecommendationInput in = RecommendationInputOf(stats, cfg);
            in.own_pool = own_pool;
            return ChangeList(t.Plan(std::move(in), dry_run), false);
          },
          "One analysis: the changes to apply ({analysis, field, old, new, "
          "reversal, reason}); commit() must follow unless dry_run.")
      .def(
          "commit",
          [](Tuner& t, py::object error, int64_t now_ns) {
            std::optional<std::string> e;
            if (!error.is_none()) e = py::cast<std::string>(error);
            return ChangeList(t.Commit(e, now_ns), true);
          },
          py::arg("error"), py::arg("now_ns"),
          "The plan was applied at now_ns (error None) or refused: the "
          "changes applied, each with its time.")
      .def_property_readonly("marks",
                             [](const Tuner& t) -> py::object {
                               const auto m = t.marks();
                               if (!m) return py::none();
                               return MarksDict(*m);
                             })
      .def("stats", &TunerStatsDict,
           "stats['automatic_optimization'] for the config in force.");
}

}  // namespace caudal::bindings
