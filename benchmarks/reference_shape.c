/* bench_overhead.py's row (i): the least an execute can do on this
 * interpreter, as one native call from an `async def` wrapper (caudal's
 * shape): read the monotonic clock, call the step, send its coroutine its
 * first value, read the clock again, and return a new result object (a
 * 3-tuple: step, output, latency in seconds; a StepResult is a GC object of
 * about the same cost). No admission, statistics, record or cache.
 *
 * The clock is the cheapest one there is: on x86-64 a plain read of the
 * CPU's time-stamp counter, scaled to nanoseconds by a rate measured when
 * the module loads (caudal's own clock reads the same counter, and also
 * keeps it on the system clock, which this does not); elsewhere
 * clock_gettime(CLOCK_MONOTONIC).
 *
 * Not part of caudal: a measuring stick, built by bench_overhead.py into
 * build/bench/ with the interpreter's own compiler flags. Only steps that
 * finish without suspending are supported (the benchmark's step); any other
 * raises RuntimeError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

static int64_t system_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <x86intrin.h>
static double ns_per_tick = 0.0; /* set by calibrate() */

static void calibrate(void) {
  const struct timespec pause = {0, 20000000}; /* 20 ms */
  const int64_t s0 = system_ns();
  const uint64_t t0 = __rdtsc();
  nanosleep(&pause, NULL);
  const int64_t s1 = system_ns();
  const uint64_t t1 = __rdtsc();
  ns_per_tick = t1 > t0 ? (double)(s1 - s0) / (double)(t1 - t0) : 0.0;
}

static int64_t now_ns(void) {
  if (ns_per_tick <= 0.0) return system_ns(); /* a counter that did not move */
  return (int64_t)((double)__rdtsc() * ns_per_tick);
}
#else
static void calibrate(void) {}
static int64_t now_ns(void) { return system_ns(); }
#endif

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


/* Row (j)'s shape: no `async def` frame. The execute is the native call
 * itself, and it returns a finished awaitable holding the result. Awaiting
 * it costs one call of its tp_iternext, which on CPython 3.11 to 3.13 hands
 * the result back the only way an iterator can: in a StopIteration. */
typedef struct {
  PyObject_HEAD PyObject* result; /* owned; NULL once handed back */
} Finished;

static void finished_dealloc(PyObject* self) {
  Py_XDECREF(((Finished*)self)->result);
  PyObject_Free(self);
}

static PyObject* finished_await(PyObject* self) { return Py_NewRef(self); }

static PyObject* finished_next(PyObject* self) {
  Finished* f = (Finished*)self;
  if (f->result == NULL) return NULL; /* exhausted: StopIteration(None) */
  PyObject* stop = PyObject_CallOneArg(PyExc_StopIteration, f->result);
  Py_CLEAR(f->result);
  if (stop == NULL) return NULL;
  PyErr_SetObject(PyExc_StopIteration, stop);
  Py_DECREF(stop);
  return NULL;
}

static PyAsyncMethods finished_async = {finished_await, NULL, NULL, NULL};

static PyTypeObject FinishedType = {PyVarObject_HEAD_INIT(NULL, 0)};

/* start_awaitable(step, data, context, resources): what `start` returns,
 * inside a finished awaitable. */
static PyObject* start_awaitable(PyObject* module, PyObject* const* args,
                                 Py_ssize_t nargs) {
  PyObject* res = start(module, args, nargs);
  if (res == NULL) return NULL;
  Finished* f = PyObject_New(Finished, &FinishedType);
  if (f == NULL) {
    Py_DECREF(res);
    return NULL;
  }
  f->result = res;
  return (PyObject*)f;
}

static PyMethodDef methods[] = {
    {"start", (PyCFunction)(void (*)(void))start, METH_FASTCALL,
     "start(step, data, context, resources): (step, output, latency_s)"},
    {"start_awaitable", (PyCFunction)(void (*)(void))start_awaitable,
     METH_FASTCALL,
     "start_awaitable(step, data, context, resources): start's result in a "
     "finished awaitable"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "reference_shape",
                                    NULL, -1, methods};

PyMODINIT_FUNC PyInit_reference_shape(void) {
  FinishedType.tp_name = "reference_shape.Finished";
  FinishedType.tp_basicsize = sizeof(Finished);
  FinishedType.tp_flags = Py_TPFLAGS_DEFAULT;
  FinishedType.tp_dealloc = finished_dealloc;
  FinishedType.tp_as_async = &finished_async;
  FinishedType.tp_iter = PyObject_SelfIter;
  FinishedType.tp_iternext = finished_next;
  if (PyType_Ready(&FinishedType) < 0) return NULL;
  calibrate();
  return PyModule_Create(&module);
}
