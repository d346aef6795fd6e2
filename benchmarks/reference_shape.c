/* bench_overhead.py's row (i): the least an execute can do on this
 * interpreter, as one native call from an `async def` wrapper (caudal's
 * shape): read the monotonic clock, call the step, send its coroutine its
 * first value, read the clock again, and return a new result object (a
 * 3-tuple: step, output, latency in seconds; a StepResult is a GC object of
 * about the same cost). No admission, statistics, record or cache.
 *
 * Not part of caudal: a measuring stick, built by bench_overhead.py into
 * build/bench/ with the interpreter's own compiler flags. Only steps that
 * finish without suspending are supported (the benchmark's step); any other
 * raises RuntimeError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* start(step, data, context, resources) -> (step, output, latency_s); the
 * step is called with data alone (the benchmark's step takes nothing else). */
static PyObject* start(PyObject* module, PyObject* const* args,
                       Py_ssize_t nargs) {
  (void)module;
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError, "start(step, data, context, resources)");
    return NULL;
  }
  const int64_t t0 = now_ns();
  PyObject* coro = PyObject_CallOneArg(args[0], args[1]);
  if (coro == NULL) return NULL;
  PyObject* out = NULL;
  const PySendResult r = PyIter_Send(coro, Py_None, &out);
  Py_DECREF(coro);
  if (r == PYGEN_ERROR) return NULL;
  if (r == PYGEN_NEXT) {
    Py_DECREF(out);
    PyErr_SetString(PyExc_RuntimeError,
                    "the reference runs steps that do not suspend");
    return NULL;
  }
  PyObject* latency = PyFloat_FromDouble((double)(now_ns() - t0) / 1e9);
  if (latency == NULL) {
    Py_DECREF(out);
    return NULL;
  }
  PyObject* res = PyTuple_Pack(3, args[0], out, latency);
  Py_DECREF(out);
  Py_DECREF(latency);
  return res;
}

static PyMethodDef methods[] = {
    {"start", (PyCFunction)(void (*)(void))start, METH_FASTCALL,
     "start(step, data, context, resources): (step, output, latency_s)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "reference_shape",
                                    NULL, -1, methods};

PyMODINIT_FUNC PyInit_reference_shape(void) { return PyModule_Create(&module); }
