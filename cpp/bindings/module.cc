// caudal._core: the native module. Each binding file registers its part.
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common.h"
#include "event_bindings.h"
#include "memory_bindings.h"
#include "monitor_bindings.h"

namespace caudal::bindings {

py::object CaudalAttr(const char* module, const char* name) {
  return py::module_::import(module).attr(name);
}

void DecRefWithGil(PyObject* o) {
  if (o == nullptr) return;
  if (PyGILState_Check()) {
    Py_DECREF(o);
    return;
  }
  PyGILState_STATE g = PyGILState_Ensure();
  Py_DECREF(o);
  PyGILState_Release(g);
}

void ThrowStatus(const absl::Status& status) {
  const std::string msg(status.message());
  py::list problems;
  for (absl::string_view line : absl::StrSplit(msg, '\n', absl::SkipEmpty())) {
    problems.append(py::str(std::string(line)));
  }
  const char* type = "CaudalError";
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      type = "ConfigurationError";
      break;
    case absl::StatusCode::kResourceExhausted:
      type = "QueueFullError";
      break;
    default:
      break;
  }
  py::object exc_type = CaudalAttr("caudal.errors", type);
  py::object exc = type == std::string("ConfigurationError")
                       ? exc_type(problems)
                       : exc_type(py::str(msg));
  PyErr_SetObject(exc_type.ptr(), exc.ptr());
  throw py::error_already_set();
}

}  // namespace caudal::bindings

PYBIND11_MODULE(_core, m) {
  m.doc() = "caudal's native core (C++): config, executor engine, components";
  // Abseil's mutex deadlock detector (on unless the library was built with
  // NDEBUG) builds a lock graph on every Lock(): measured at several percent
  // of a cache hit. The core's lock order is fixed and TSan-tested; turn the
  // detector off for the process.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  caudal::bindings::RegisterConfig(m);
  caudal::bindings::RegisterExecutor(m);
  caudal::bindings::RegisterCache(m);
  caudal::bindings::RegisterPipeline(m);
  caudal::bindings::RegisterContext(m);
  caudal::bindings::RegisterPool(m);
  caudal::bindings::RegisterEvents(m);
  caudal::bindings::RegisterMemory(m);
  caudal::bindings::RegisterMonitor(m);
}
