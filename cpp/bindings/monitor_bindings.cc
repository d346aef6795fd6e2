#include "monitor_bindings.h"

#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"

namespace caudal::bindings {

py::dict CpuStatsDict(Executor& core) {
  const CpuSnapshot s = core.CpuStats(MonotonicNowNs());
  py::dict d;
  d["cpu_percent"] = s.percent;
  d["cpu_percent_per_core"] = s.per_core_percent;
  d["allowed_cpus"] = s.allowed_cpus;
  d["cpu_window_s"] = s.window_s;
  d["cpu_seconds"] = s.cpu_seconds;
  d["cpu_readings"] = s.readings;
  d["cpu_read_errors"] = s.read_errors;
  return d;
}

py::dict TrendsDict(const Executor& core) {
  py::dict out;
  for (const StepTrend& t : core.Trends()) {
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
    out[py::str(t.step)] = d;
  }
  return out;
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
  e.time_ns = MonotonicNowNs();
  e.key = key;
  e.value = value;
  e.value2 = value2;
  e.detail = detail;
  core.events().Publish(e);
  return true;
}

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
}

}  // namespace caudal::bindings
