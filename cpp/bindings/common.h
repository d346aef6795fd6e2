// Shared helpers of the caudal._core bindings: status -> exception
// translation (the one place where a core absl::Status becomes a Python
// exception) and registration entry points of each binding file.
#ifndef CAUDAL_BINDINGS_COMMON_H_
#define CAUDAL_BINDINGS_COMMON_H_

#include <pybind11/pybind11.h>

#include "absl/status/status.h"

namespace caudal::bindings {

namespace py = pybind11;

// Raises the caudal exception matching `status` (caudal.ConfigurationError
// for kInvalidArgument, with one problem per line of the message in
// `.problems`; caudal.QueueFullError for kResourceExhausted; ...).
[[noreturn]] void ThrowStatus(const absl::Status& status);

// Looks up an attribute of the pure-Python caudal package lazily (used only
// off the hot path: error types, the step analyser).
py::object CaudalAttr(const char* module, const char* name);

// Py_DECREF from any thread: takes the GIL unless it is held (the last
// owner of a Python object held by the core may be a thread without it).
void DecRefWithGil(PyObject* o);

void RegisterConfig(py::module_& m);

}  // namespace caudal::bindings

#include "caudal/hash/key128.h"

namespace caudal::bindings {

// 16 bytes, little-endian lo then hi (the form Python sees keys in).
py::bytes KeyToBytes(const Key128& k);
Key128 KeyFromBytes(py::bytes b);

void RegisterExecutor(py::module_& m);
void RegisterCache(py::module_& m);
void RegisterPipeline(py::module_& m);
void RegisterContext(py::module_& m);
void RegisterPool(py::module_& m);

}  // namespace caudal::bindings

#endif  // CAUDAL_BINDINGS_COMMON_H_
