#include "step_result.h"

#include <structmember.h>

namespace caudal::bindings {
namespace {

int SR_traverse(StepResultObject* self, visitproc visit, void* arg) {
  Py_VISIT(self->name);
  Py_VISIT(self->output);
  Py_VISIT(self->feedback);
  Py_VISIT(self->error);
  Py_VISIT(self->metadata);
  Py_VISIT(self->pending_aw);
  return 0;
}

int SR_clear(StepResultObject* self) {
  Py_CLEAR(self->name);
  Py_CLEAR(self->output);
  Py_CLEAR(self->feedback);
  Py_CLEAR(self->error);
  Py_CLEAR(self->metadata);
  Py_CLEAR(self->pending_aw);
  return 0;
}

// Results freed recently, kept for the next ones: an execute makes one
// result and its caller usually drops it before the next, so most results
// reuse the memory of the last instead of a trip through the allocator and
// the collector's bookkeeping. Guarded by the GIL, so not kept in builds
// without it. A kept result is untracked, holds no reference and no weak
// reference; its `name` slot links the list. The type cannot be subclassed
// (no Py_TPFLAGS_BASETYPE), so every instance has the same size. Not kept
// under AddressSanitizer either: a result used after it was freed must
// reach the sanitizer, not a reused object.
#if defined(__SANITIZE_ADDRESS__)
#define CAUDAL_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CAUDAL_UNDER_ASAN 1
#endif
#endif
#if defined(Py_GIL_DISABLED) || defined(CAUDAL_UNDER_ASAN)
#define CAUDAL_RESULT_FREE_LIST 0
#else
#define CAUDAL_RESULT_FREE_LIST 1
#endif

#if CAUDAL_RESULT_FREE_LIST
constexpr int kFreeListMax = 128;
StepResultObject* free_list = nullptr;
int free_count = 0;
#endif

void SR_dealloc(StepResultObject* self) {
  PyObject_GC_UnTrack(self);
  if (self->weakrefs) PyObject_ClearWeakRefs(reinterpret_cast<PyObject*>(self));
  SR_clear(self);
#if CAUDAL_RESULT_FREE_LIST
  if (free_count < kFreeListMax) {
    self->name = reinterpret_cast<PyObject*>(free_list);
    free_list = self;
    ++free_count;
    return;
  }
#endif
  Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

// Memory for a new result, not yet tracked and with every field unset.
StepResultObject* AllocStepResult() {
#if CAUDAL_RESULT_FREE_LIST
  if (StepResultObject* r = free_list) {
    free_list = reinterpret_cast<StepResultObject*>(r->name);
    --free_count;
    // A fresh reference count and type (the type is static: no incref).
    PyObject_Init(reinterpret_cast<PyObject*>(r), &StepResultType);
    return r;
  }
#endif
  return PyObject_GC_New(StepResultObject, &StepResultType);
}

PyObject* SR_new(PyTypeObject* type, PyObject*, PyObject*) {
  auto* self = reinterpret_cast<StepResultObject*>(type->tp_alloc(type, 0));
  if (!self) return nullptr;
  self->name = PyUnicode_FromString("");
  Py_INCREF(Py_None);
  self->output = Py_None;
  Py_INCREF(Py_None);
  self->feedback = Py_None;
  Py_INCREF(Py_None);
  self->error = Py_None;
  self->attempts = 1;
  self->success = 1;
  self->pending_aw = Py_NewRef(Py_None);
  self->pending_handle = 0;
  return reinterpret_cast<PyObject*>(self);
}

int SR_init(StepResultObject* self, PyObject* args, PyObject* kwds) {
  static const char* kw[] = {
      "name",  "output",    "success",  "attempts", "latency_s",    "feedback",
      "error", "cache_hit", "metadata", "cost_usd", "token_counts", nullptr};
  PyObject *name = nullptr, *output = nullptr, *feedback = nullptr,
           *error = nullptr, *metadata = nullptr;
  int success = self->success, cache_hit = 0, attempts = self->attempts;
  double latency = 0, cost = 0;
  long long tokens = 0;
  if (!PyArg_ParseTupleAndKeywords(
          args, kwds, "|$OOpidOOpOdL", const_cast<char**>(kw), &name, &output,
          &success, &attempts, &latency, &feedback, &error, &cache_hit,
          &metadata, &cost, &tokens)) {
    return -1;
  }
  auto set = [](PyObject*& slot, PyObject* v) {
    if (!v) return;
    Py_INCREF(v);
    Py_XSETREF(slot, v);
  };
  set(self->name, name);
  set(self->output, output);
  set(self->feedback, feedback);
  set(self->error, error);
  if (metadata && metadata != Py_None) set(self->metadata, metadata);
  self->success = static_cast<char>(success);
  self->cache_hit = static_cast<char>(cache_hit);
  self->attempts = attempts;
  self->latency_s = latency;
  self->cost_usd = cost;
  self->token_counts = tokens;
  return 0;
}

PyObject* SR_get_metadata(StepResultObject* self, void*) {
  if (!self->metadata) {
    self->metadata = PyDict_New();
    if (!self->metadata) return nullptr;
  }
  Py_INCREF(self->metadata);
  return self->metadata;
}

int SR_set_metadata(StepResultObject* self, PyObject* v, void*) {
  if (!v) {
    PyErr_SetString(PyExc_AttributeError, "cannot delete StepResult.metadata");
    return -1;
  }
  Py_INCREF(v);
  Py_XSETREF(self->metadata, v);
  return 0;
}

PyObject* GetBool(char v) { return PyBool_FromLong(v); }
int SetBool(char& slot, PyObject* v, const char* what) {
  if (!v) {
    PyErr_Format(PyExc_AttributeError, "cannot delete StepResult.%s", what);
    return -1;
  }
  const int t = PyObject_IsTrue(v);
  if (t < 0) return -1;
  slot = static_cast<char>(t);
  return 0;
}
PyObject* SR_get_success(StepResultObject* s, void*) {
  return GetBool(s->success);
}
int SR_set_success(StepResultObject* s, PyObject* v, void*) {
  return SetBool(s->success, v, "success");
}
PyObject* SR_get_cache_hit(StepResultObject* s, void*) {
  return GetBool(s->cache_hit);
}
int SR_set_cache_hit(StepResultObject* s, PyObject* v, void*) {
  return SetBool(s->cache_hit, v, "cache_hit");
}

PyObject* SR_unwrap(StepResultObject* self, PyObject*) {
  if (self->success) {
    Py_INCREF(self->output);
    return self->output;
  }
  if (self->error && PyExceptionInstance_Check(self->error)) {
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(self->error)),
                    self->error);
    return nullptr;
  }
  PyErr_Format(PyExc_RuntimeError, "step %R failed: %S", self->name,
               self->feedback);
  return nullptr;
}

// Calls caudal._display.<fn>(self): the display code (HTML, truncation of
// long outputs) is Python; nothing here runs on the hot path.
PyObject* CallDisplay(StepResultObject* self, const char* fn) {
  PyObject* mod = PyImport_ImportModule("caudal._display");
  if (!mod) return nullptr;
  PyObject* r = PyObject_CallMethod(mod, fn, "O", self);
  Py_DECREF(mod);
  return r;
}

PyObject* SR_repr_html(StepResultObject* self, PyObject*) {
  return CallDisplay(self, "step_result_html");
}

PyObject* SR_plain_repr(StepResultObject* self);

PyObject* SR_repr(StepResultObject* self) {
  PyObject* r = CallDisplay(self, "step_result_repr");
  if (r || !PyErr_ExceptionMatches(PyExc_ImportError)) return r;
  PyErr_Clear();  // caudal._display cannot be imported (interpreter shutdown)
  return SR_plain_repr(self);
}

PyObject* SR_plain_repr(StepResultObject* self) {
  PyObject* latency = PyFloat_FromDouble(self->latency_s);
  if (!latency) return nullptr;
  PyObject* out;
  if (self->success) {
    out = PyUnicode_FromFormat(
        "StepResult(name=%R, success=True, output=%R, attempts=%d, "
        "latency_s=%R%s)",
        self->name, self->output, self->attempts, latency,
        self->cache_hit ? ", cache_hit=True" : "");
  } else {
    out = PyUnicode_FromFormat(
        "StepResult(name=%R, success=False, feedback=%R, attempts=%d, "
        "latency_s=%R)",
        self->name, self->feedback, self->attempts, latency);
  }
  Py_DECREF(latency);
  return out;
}

PyObject* SR_reduce(StepResultObject* self, PyObject*) {
  PyObject* kwargs = Py_BuildValue(
      "{s:O,s:O,s:O,s:i,s:d,s:O,s:O,s:O,s:O,s:d,s:L}", "name", self->name,
      "output", self->output, "success", self->success ? Py_True : Py_False,
      "attempts", self->attempts, "latency_s", self->latency_s, "feedback",
      self->feedback, "error", self->error, "cache_hit",
      self->cache_hit ? Py_True : Py_False, "metadata",
      self->metadata ? self->metadata : Py_None, "cost_usd", self->cost_usd,
      "token_counts", self->token_counts);
  if (!kwargs) return nullptr;
  PyObject* helper = PyObject_GetAttrString(
      reinterpret_cast<PyObject*>(&StepResultType), "_from_kwargs");
  if (!helper) {
    Py_DECREF(kwargs);
    return nullptr;
  }
  return Py_BuildValue("(N(N))", helper, kwargs);
}

PyObject* SR_from_kwargs(PyObject* cls, PyObject* args) {
  PyObject* kwargs = nullptr;
  if (!PyArg_ParseTuple(args, "O!", &PyDict_Type, &kwargs)) return nullptr;
  PyObject* empty = PyTuple_New(0);
  PyObject* r = PyObject_Call(cls, empty, kwargs);
  Py_DECREF(empty);
  return r;
}

PyMemberDef kMembers[] = {
    {"name", T_OBJECT, offsetof(StepResultObject, name), 0, "Step name."},
    {"output", T_OBJECT, offsetof(StepResultObject, output), 0,
     "What the step returned."},
    {"feedback", T_OBJECT, offsetof(StepResultObject, feedback), 0,
     "Text of the failure ('ValueError: ...'), None on success."},
    {"error", T_OBJECT, offsetof(StepResultObject, error), 0,
     "The step's own exception (traceback intact), None on success."},
    {"attempts", T_INT, offsetof(StepResultObject, attempts), 0,
     "Attempts made."},
    {"latency_s", T_DOUBLE, offsetof(StepResultObject, latency_s), 0,
     "Wall time of the execution, all attempts included."},
    {"cost_usd", T_DOUBLE, offsetof(StepResultObject, cost_usd), 0,
     "Cost reported by the step."},
    {"token_counts", T_LONGLONG, offsetof(StepResultObject, token_counts), 0,
     "Tokens reported by the step."},
    // Internal (the executor's hot path): a pending result's awaitable.
    {"_aw", T_OBJECT, offsetof(StepResultObject, pending_aw), READONLY,
     nullptr},
    {nullptr}};

PyGetSetDef kGetSet[] = {
    {"metadata", reinterpret_cast<getter>(SR_get_metadata),
     reinterpret_cast<setter>(SR_set_metadata),
     "Free-form dict (fallback details, ...).", nullptr},
    {"success", reinterpret_cast<getter>(SR_get_success),
     reinterpret_cast<setter>(SR_set_success),
     "True when the step (or its fallback) produced an output.", nullptr},
    {"cache_hit", reinterpret_cast<getter>(SR_get_cache_hit),
     reinterpret_cast<setter>(SR_set_cache_hit),
     "True when the output came from the cache.", nullptr},
    {nullptr}};

PyMethodDef kMethods[] = {
    {"unwrap", reinterpret_cast<PyCFunction>(SR_unwrap), METH_NOARGS,
     "The output on success; otherwise the step's own exception is re-raised."},
    {"__reduce__", reinterpret_cast<PyCFunction>(SR_reduce), METH_NOARGS,
     nullptr},
    {"_repr_html_", reinterpret_cast<PyCFunction>(SR_repr_html), METH_NOARGS,
     "HTML table of the result, for notebooks (caudal._display)."},
    {"_from_kwargs", reinterpret_cast<PyCFunction>(SR_from_kwargs),
     METH_VARARGS | METH_CLASS, nullptr},
    {nullptr}};

}  // namespace

PyTypeObject StepResultType = {PyVarObject_HEAD_INIT(nullptr, 0)};

bool InitStepResultType(PyObject* module) {
  StepResultType.tp_name = "caudal.StepResult";
  StepResultType.tp_basicsize = sizeof(StepResultObject);
  StepResultType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  StepResultType.tp_doc =
      "StepResult(*, name='', output=None, success=True, attempts=1, "
      "latency_s=0.0, "
      "feedback=None, error=None, cache_hit=False, metadata=None, "
      "cost_usd=0.0, "
      "token_counts=0)\n\nThe outcome of one execution.";
  StepResultType.tp_new = SR_new;
  StepResultType.tp_init = reinterpret_cast<initproc>(SR_init);
  StepResultType.tp_dealloc = reinterpret_cast<destructor>(SR_dealloc);
  StepResultType.tp_traverse = reinterpret_cast<traverseproc>(SR_traverse);
  StepResultType.tp_clear = reinterpret_cast<inquiry>(SR_clear);
  StepResultType.tp_repr = reinterpret_cast<reprfunc>(SR_repr);
  StepResultType.tp_members = kMembers;
  StepResultType.tp_getset = kGetSet;
  StepResultType.tp_methods = kMethods;
  StepResultType.tp_weaklistoffset = offsetof(StepResultObject, weakrefs);
  if (PyType_Ready(&StepResultType) < 0) return false;
  Py_INCREF(&StepResultType);
  if (PyModule_AddObject(module, "StepResult",
                         reinterpret_cast<PyObject*>(&StepResultType)) < 0) {
    Py_DECREF(&StepResultType);
    return false;
  }
  return true;
}

PyObject* NewStepResult(PyObject* name, PyObject* output, bool success,
                        int attempts, double latency_s, PyObject* feedback,
                        PyObject* error, bool cache_hit) {
  StepResultObject* r = AllocStepResult();
  if (!r) return nullptr;
  Py_INCREF(name);
  r->name = name;
  Py_INCREF(output);
  r->output = output;
  Py_INCREF(feedback);
  r->feedback = feedback;
  Py_INCREF(error);
  r->error = error;
  r->metadata = nullptr;
  r->weakrefs = nullptr;
  r->latency_s = latency_s;
  r->cost_usd = 0;
  r->token_counts = 0;
  r->attempts = attempts;
  r->success = success;
  r->cache_hit = cache_hit;
  r->pending_aw = Py_NewRef(Py_None);
  r->pending_handle = 0;
  PyObject_GC_Track(r);
  return reinterpret_cast<PyObject*>(r);
}

PyObject* NewPendingStepResult(PyObject* name, uint64_t handle, PyObject* aw) {
  PyObject* o =
      NewStepResult(name, Py_None, true, 1, 0.0, Py_None, Py_None, false);
  if (!o) return nullptr;
  auto* r = reinterpret_cast<StepResultObject*>(o);
  Py_SETREF(r->pending_aw, Py_NewRef(aw));
  r->pending_handle = handle;
  return o;
}

PyObject* CompleteStepResult(PyObject* res, PyObject* output, int attempts,
                             double latency_s) {
  auto* r = reinterpret_cast<StepResultObject*>(res);
  Py_SETREF(r->output, Py_NewRef(output));
  r->attempts = attempts;
  r->latency_s = latency_s;
  r->pending_handle = 0;
  Py_SETREF(r->pending_aw, Py_NewRef(Py_None));
  return Py_NewRef(res);
}

}  // namespace caudal::bindings
