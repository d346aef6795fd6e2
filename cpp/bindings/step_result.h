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
};

extern PyTypeObject StepResultType;

// Registers the type in `module` (once).
bool InitStepResultType(PyObject* module);

// New reference; steals nothing (increfs name/output/error).
PyObject* NewStepResult(PyObject* name, PyObject* output, bool success,
                        int attempts, double latency_s, PyObject* feedback,
                        PyObject* error, bool cache_hit);

inline bool IsStepResult(PyObject* o) { return Py_TYPE(o) == &StepResultType; }

}  // namespace caudal::bindings

#endif  // CAUDAL_BINDINGS_STEP_RESULT_H_
