#include "monitor_bindings.h"

#include <memory>
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

}  // namespace caudal::bindings
