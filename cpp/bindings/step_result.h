// StepResult as a plain CPython type: the executor creates one per execution,
// so it must cost tens of nanoseconds, not the few hundred a pybind11 class
// instance costs. Fields are ordinary attributes (readable and writable).
#ifndef CAUDAL_BINDINGS_STEP_RESULT_H_
#define CAUDAL_BINDINGS_STEP_RESULT_H_

#include <Python.h>

#include <cstdint>

namespace caudal::bindings {

struct StepResultObject {
  PyObject_HEAD PyObject* name;
  PyObject* output;
  PyObject* feedback;
  PyObject* error;
  PyObject* metadata;  // NULL until first read
  PyObject* weakrefs;
  double latency_s;
  double cost_usd;
  long long token_counts;
  int attempts;
  char success;
  char cache_hit;
  // While the execution runs (a *pending* result, made by the engine's
  // `_begin` for an attempt that is awaited as it is): the attempt's
  // awaitable and the execution's handle. The Python layer awaits `_aw`
  // and hands the result back to `_succeed`, which fills it in; the result
  // then stands for no execution (None and 0). Never pending otherwise.
  PyObject* pending_aw;     // None unless pending
  uint64_t pending_handle;  // 0 unless pending
};

extern PyTypeObject StepResultType;

// Registers the type in `module` (once).
bool InitStepResultType(PyObject* module);

// New reference; steals nothing (increfs name/output/error).
PyObject* NewStepResult(PyObject* name, PyObject* output, bool success,
                        int attempts, double latency_s, PyObject* feedback,
                        PyObject* error, bool cache_hit);

inline bool IsStepResult(PyObject* o) { return Py_TYPE(o) == &StepResultType; }

// A pending result for a first attempt awaited as it is: the step's name,
// success, attempt 1, and `aw` and `handle` (see StepResultObject). The
// execute() frame that receives it is the only holder until it returns it.
// New reference.
PyObject* NewPendingStepResult(PyObject* name, uint64_t handle, PyObject* aw);

// The handle a pending result stands for; 0 for any other object.
inline uint64_t PendingHandle(PyObject* o) {
  return IsStepResult(o)
             ? reinterpret_cast<StepResultObject*>(o)->pending_handle
             : 0;
}

// Fills a pending result in as its execution's success and makes it stand
// for no execution any more. Returns a new reference to `res`.
PyObject* CompleteStepResult(PyObject* res, PyObject* output, int attempts,
                             double latency_s);

}  // namespace caudal::bindings

#endif  // CAUDAL_BINDINGS_STEP_RESULT_H_
