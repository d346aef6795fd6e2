// caudal._core: the native module. Each binding file registers its part.
#include <string>

#include "absl/status/status.h"
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

namespace {

// The exception class for `code` (common.h has the table): a builtin, or
// the name of a class in caudal.errors.
struct ExceptionFor {
  PyObject* builtin;   // borrowed, or nullptr
  const char* caudal;  // caudal.errors class, when builtin is nullptr
};

ExceptionFor ExceptionForCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return {PyExc_SystemError, nullptr};
    case absl::StatusCode::kInvalidArgument:
      return {nullptr, "ConfigurationError"};
    case absl::StatusCode::kResourceExhausted:
      return {nullptr, "QueueFullError"};
    case absl::StatusCode::kUnavailable:
      return {nullptr, "OverloadedError"};
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kUnknown:
      return {nullptr, "CaudalError"};
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kDataLoss:
      return {PyExc_ValueError, nullptr};
    case absl::StatusCode::kOutOfRange:
      return {PyExc_IndexError, nullptr};
    case absl::StatusCode::kNotFound:
      return {PyExc_KeyError, nullptr};
    case absl::StatusCode::kDeadlineExceeded:
      return {PyExc_TimeoutError, nullptr};
    case absl::StatusCode::kUnimplemented:
      return {PyExc_NotImplementedError, nullptr};
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return {PyExc_PermissionError, nullptr};
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kInternal:
      return {PyExc_RuntimeError, nullptr};
    default:
      return {nullptr, "CaudalError"};
  }
}

}  // namespace

void SetStatusError(const absl::Status& status) {
  if (PyErr_Occurred()) return;  // the cause, already raised
  if (status.ok()) {
    PyErr_SetString(PyExc_SystemError,
                    "a status error was raised for an OK status");
    return;
  }
  // The whole message, whatever bytes it holds (a NUL, invalid UTF-8).
  const absl::string_view msg = status.message();
  py::object text = py::reinterpret_steal<py::object>(PyUnicode_DecodeUTF8(
      msg.data(), static_cast<Py_ssize_t>(msg.size()), "replace"));
  if (!text) return;  // MemoryError
  const ExceptionFor target = ExceptionForCode(status.code());
  if (target.builtin != nullptr) {
    PyErr_SetObject(target.builtin, text.ptr());
    return;
  }
  try {
    py::object type = CaudalAttr("caudal.errors", target.caudal);
    py::object exc;
    if (status.code() == absl::StatusCode::kInvalidArgument) {
      py::list problems;
      for (py::handle line : text.attr("split")("\n")) {
        if (PyUnicode_GET_LENGTH(line.ptr()) > 0) problems.append(line);
      }
      exc = type(problems);
    } else {
      exc = type(text);
    }
    PyErr_SetObject(type.ptr(), exc.ptr());
  } catch (py::error_already_set& e) {
    e.restore();  // caudal.errors failed to import or to build the error
  }
}

void ThrowStatus(const absl::Status& status) {
  SetStatusError(status);
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
  m.def(
      "_raise_status",
      [](int code, const std::string& message) {
        caudal::bindings::ThrowStatus(
            absl::Status(static_cast<absl::StatusCode>(code), message));
      },
      pybind11::arg("code"), pybind11::arg("message"),
      "Test hook: raises what a core status with this absl::StatusCode (an "
      "int) and message becomes in Python (docs/errors.md).");
}
