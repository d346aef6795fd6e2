// Shared helpers of the caudal._core bindings: status -> exception
// translation (the one place where a core absl::Status becomes a Python
// exception) and registration entry points of each binding file.
#ifndef CAUDAL_BINDINGS_COMMON_H_
#define CAUDAL_BINDINGS_COMMON_H_

#include <pybind11/pybind11.h>

#include "absl/status/status.h"

namespace caudal::bindings {

namespace py = pybind11;

// ---------------------------------------------------- status -> exception
//
// The one translation of a core absl::Status into a Python exception. Every
// binding that gets a non-OK status from the core hands it to ThrowStatus
// (pybind11 code) or SetStatusError (CPython-API code returning NULL); no
// binding picks an exception type for a status itself. The exception's
// message is the status message. docs/errors.md has the same table.
//
//   absl::StatusCode     Python exception
//   -------------------  --------------------------------------------------
//   kInvalidArgument     caudal.ConfigurationError (a ValueError); one
//                        problem per line of the message in `.problems`
//   kResourceExhausted   caudal.QueueFullError (no capacity: a full queue)
//   kUnavailable         caudal.OverloadedError (retry later, like a 503)
//   kCancelled           caudal.CaudalError (not asyncio.CancelledError,
//                        which would read as the awaiting task's own
//                        cancellation)
//   kUnknown             caudal.CaudalError
//   kFailedPrecondition  ValueError (the object's state forbids the call,
//                        as for a closed file: "the worker pool is shut
//                        down", "step 'x' is done, not ready")
//   kOutOfRange          IndexError
//   kNotFound            KeyError
//   kAlreadyExists       ValueError
//   kDataLoss            ValueError (corrupt data: a bad cache frame)
//   kDeadlineExceeded    TimeoutError
//   kUnimplemented       NotImplementedError
//   kPermissionDenied    PermissionError
//   kUnauthenticated     PermissionError
//   kAborted             RuntimeError
//   kInternal            RuntimeError
//   kOk                  SystemError (a binding bug: there is no error)
//   any other code       caudal.CaudalError
//
// A Python exception already pending is the cause (a key's __eq__ raised
// in the middle of a core operation, a node allocation raised MemoryError):
// it propagates unchanged, whatever the code.
//
// Call with the GIL held. Off the hot path only: the caudal classes are
// looked up on each call.

// Sets the Python error indicator for `status` (the table above).
void SetStatusError(const absl::Status& status);

// SetStatusError, then throws py::error_already_set.
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
