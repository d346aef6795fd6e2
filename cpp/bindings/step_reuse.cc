// Reusing step analyses: the analysis of plain functions shared by code
// object (FunctionTemplate, FunctionKey) and the analysis of a caudal.Step
// kept for the step's life (StepMemo). See step_reuse.h.
#include "step_reuse.h"

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace caudal::bindings {
namespace {

// Plain data for a function's identity: None, bool, int, float, str,
// bytes, and exact tuples, lists, dicts, sets and frozensets of those.
// Anything else (an object, a function, a subclass, deep or large data)
// is left to caudal._identity's walk.
bool IsPlain(PyObject* v, int depth, int* budget) {
  if (--*budget < 0 || depth > 16) return false;
  if (v == Py_None) return true;
  PyTypeObject* t = Py_TYPE(v);
  if (t == &PyBool_Type || t == &PyLong_Type || t == &PyFloat_Type ||
      t == &PyUnicode_Type || t == &PyBytes_Type)
    return true;
  if (t == &PyTuple_Type) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(v); ++i) {
      if (!IsPlain(PyTuple_GET_ITEM(v, i), depth + 1, budget)) return false;
    }
    return true;
  }
  if (t == &PyList_Type) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); ++i) {
      if (!IsPlain(PyList_GET_ITEM(v, i), depth + 1, budget)) return false;
    }
    return true;
  }
  if (t == &PyDict_Type) {
    Py_ssize_t pos = 0;
    PyObject *k, *x;
    while (PyDict_Next(v, &pos, &k, &x)) {
      if (!IsPlain(k, depth + 1, budget) || !IsPlain(x, depth + 1, budget))
        return false;
    }
    return true;
  }
  if (t == &PySet_Type || t == &PyFrozenSet_Type) {
    if (PySet_GET_SIZE(v) > *budget) return false;
    PyObject* it = PyObject_GetIter(v);
    if (it == nullptr) {
      PyErr_Clear();
      return false;
    }
    bool ok = true;
    while (PyObject* item = PyIter_Next(it)) {
      ok = ok && IsPlain(item, depth + 1, budget);
      Py_DECREF(item);
      if (!ok) break;
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
      PyErr_Clear();
      ok = false;
    }
    return ok;
  }
  return false;
}

bool SameStr(PyObject* a, PyObject* b) {
  if (a == b) return true;
  if (a == nullptr || b == nullptr || !PyUnicode_CheckExact(a) ||
      !PyUnicode_CheckExact(b))
    return false;
  return PyUnicode_Compare(a, b) == 0;  // two str: never raises
}

}  // namespace

FunctionFacts FunctionFactsOf(PyObject* fn) {
  FunctionFacts f;
  if (Py_TYPE(fn) != &PyFunction_Type) return f;
  auto* op = reinterpret_cast<PyFunctionObject*>(fn);
  if (op->func_dict != nullptr && PyDict_GET_SIZE(op->func_dict) != 0)
    return f;  // __wrapped__, __signature__, a marker: analysed in full
  if (op->func_module == nullptr || !PyUnicode_CheckExact(op->func_name) ||
      !PyUnicode_CheckExact(op->func_qualname))
    return f;
  f.code = op->func_code;
  f.name = op->func_name;
  f.qualname = op->func_qualname;
  f.module = op->func_module;
  f.defaults =
      op->func_defaults == nullptr ? 0 : PyTuple_GET_SIZE(op->func_defaults);
  return f;
}

bool FunctionTemplate::Matches(const FunctionFacts& f) const {
  return f.code == code.ptr() && f.defaults == defaults &&
         SameStr(f.name, name.ptr()) && SameStr(f.qualname, qualname.ptr()) &&
         (f.module == module.ptr() || SameStr(f.module, module.ptr()));
}

namespace {

// Runs `release` with the GIL held, taking it only when this thread does
// not hold it already (the usual case: dropped by the engine or by a weak
// reference's callback, even during interpreter shutdown).
template <typename F>
void WithGil(F release) {
  const bool held = PyGILState_Check() != 0;
  PyGILState_STATE st{};
  if (!held) st = PyGILState_Ensure();
  release();
  if (!held) PyGILState_Release(st);
}

void ReleaseObjects(StepAnalysis& a) {
  a.fn = a.fallback = a.retry_on = py::object();
  a.breaker_exclude = a.cache_context = a.identity_of = py::object();
}

}  // namespace

FunctionTemplate::~FunctionTemplate() {
  WithGil([this] {
    code = name = qualname = module = name_str = py::object();
    ReleaseObjects(analysis);
  });
}

namespace {

using MemoMap = absl::flat_hash_map<PyObject*, std::shared_ptr<StepMemo>>;
MemoMap& Memos() {
  static MemoMap* m = new MemoMap();  // never destroyed (outlives Python)
  return *m;
}

// The weak reference's callback: self is the step's address (an int).
PyObject* StepGone(PyObject* self, PyObject* wr) {
  void* addr = PyLong_AsVoidPtr(self);
  if (addr == nullptr && PyErr_Occurred()) return nullptr;
  MemoMap& m = Memos();
  auto it = m.find(static_cast<PyObject*>(addr));
  if (it != m.end() && it->second->weakref.ptr() == wr) {
    std::shared_ptr<StepMemo> gone = std::move(it->second);
    m.erase(it);
  }
  Py_RETURN_NONE;
}

PyMethodDef g_step_gone = {"_step_memo_gone", StepGone, METH_O, nullptr};
py::handle g_step_type;

}  // namespace

StepMemo::~StepMemo() {
  WithGil([this] {
    weakref = retry = name_str = py::object();
    ReleaseObjects(analysis);
  });
}

bool IsCaudalStep(PyObject* obj) {
  if (!g_step_type) {
    g_step_type = CaudalAttr("caudal._step", "Step").release();
  }
  return Py_TYPE(obj) == reinterpret_cast<PyTypeObject*>(g_step_type.ptr());
}

namespace {

// An attribute, or null (error cleared).
py::object GetAttr(PyObject* obj, PyObject* name) {
  PyObject* v = PyObject_GetAttr(obj, name);
  if (v == nullptr) PyErr_Clear();
  return py::reinterpret_steal<py::object>(v);
}

py::object Attr(PyObject* obj, const char* name) {
  PyObject* v = PyObject_GetAttrString(obj, name);
  if (v == nullptr) PyErr_Clear();
  return py::reinterpret_steal<py::object>(v);
}

// The retry_on of `retry` (a caudal.RetryStrategy), or null.
py::object RetryOnOf(PyObject* retry) {
  if (retry == nullptr || retry == Py_None) return py::object();
  return Attr(retry, "retry_on");
}

}  // namespace

std::shared_ptr<StepMemo> RecallStep(PyObject* step, PyObject* retry,
                                     const std::string& backend,
                                     RecalledObjects* out) {
  MemoMap& m = Memos();
  auto it = m.find(step);
  if (it == m.end()) return nullptr;
  const StepMemo& mm = *it->second;
  if (mm.retry.ptr() != retry || mm.backend != backend) return nullptr;
  static PyObject* const kFn = PyUnicode_InternFromString("fn");
  static PyObject* const kFallback = PyUnicode_InternFromString("fallback");
  static PyObject* const kExclude =
      PyUnicode_InternFromString("breaker_exclude");
  static PyObject* const kRetry = PyUnicode_InternFromString("retry");
  out->fn = GetAttr(step, kFn);
  out->fallback = GetAttr(step, kFallback);
  if (!out->fn || !out->fallback) return nullptr;
  out->breaker_exclude = py::none();
  if (mm.breaker_exclude) {
    out->breaker_exclude = GetAttr(step, kExclude);
    if (!out->breaker_exclude) return nullptr;
  }
  out->retry_on = py::none();
  if (mm.retry_on != StepMemo::RetryOn::kNone) {
    const py::object step_retry = mm.retry_on == StepMemo::RetryOn::kStepRetry
                                      ? GetAttr(step, kRetry)
                                      : mm.retry;
    out->retry_on = RetryOnOf(step_retry.ptr());
    if (!out->retry_on) return nullptr;
  }
  return it->second;
}

std::shared_ptr<StepMemo> RememberStep(PyObject* step, py::object retry,
                                       const std::string& backend,
                                       const StepAnalysis& analysis) {
  // Only an analysis made of the step's own attributes.
  const py::object fn = Attr(step, "fn");
  const py::object fallback = Attr(step, "fallback");
  const py::object breaker_exclude = Attr(step, "breaker_exclude");
  const py::object step_retry = Attr(step, "retry");
  if (!fn || !fallback || !breaker_exclude || !step_retry) return nullptr;
  if (analysis.fn.ptr() != fn.ptr() ||
      analysis.fallback.ptr() != fallback.ptr())
    return nullptr;
  if (!analysis.identity_of.is_none() && analysis.identity_of.ptr() != fn.ptr())
    return nullptr;
  if (!analysis.breaker_exclude.is_none() &&
      analysis.breaker_exclude.ptr() != breaker_exclude.ptr())
    return nullptr;
  StepMemo::RetryOn retry_on = StepMemo::RetryOn::kNone;
  if (!analysis.retry_on.is_none()) {
    const py::object own = RetryOnOf(step_retry.ptr());
    const py::object dflt = RetryOnOf(retry.ptr());
    if (own && own.ptr() == analysis.retry_on.ptr()) {
      retry_on = StepMemo::RetryOn::kStepRetry;
    } else if (dflt && dflt.ptr() == analysis.retry_on.ptr()) {
      retry_on = StepMemo::RetryOn::kDefaultRetry;
    } else {
      return nullptr;
    }
  }
  // cache_context is kept: a tuple of str refers to nothing.
  MemoMap& m = Memos();
  auto it = m.find(step);
  std::shared_ptr<StepMemo> memo;
  if (it != m.end()) {
    memo = it->second;  // made with other defaults: replaced in place
  } else {
    memo = std::make_shared<StepMemo>();
    py::object addr =
        py::reinterpret_steal<py::object>(PyLong_FromVoidPtr(step));
    if (!addr) throw py::error_already_set();
    py::object gone = py::reinterpret_steal<py::object>(
        PyCFunction_New(&g_step_gone, addr.ptr()));
    if (!gone) throw py::error_already_set();
    PyObject* wr = PyWeakref_NewRef(step, gone.ptr());
    if (wr == nullptr) {
      PyErr_Clear();
      return nullptr;
    }
    memo->weakref = py::reinterpret_steal<py::object>(wr);
    m.emplace(step, memo);
  }
  memo->retry = std::move(retry);
  memo->backend = backend;
  memo->analysis = analysis;
  memo->analysis.fn = py::none();
  memo->analysis.fallback = py::none();
  memo->analysis.breaker_exclude = py::none();
  memo->analysis.retry_on = py::none();
  memo->analysis.identity_of = py::none();
  memo->identity_is_fn = !analysis.identity_of.is_none();
  memo->retry_on = retry_on;
  memo->breaker_exclude = !analysis.breaker_exclude.is_none();
  memo->proto.reset();
  memo->last.reset();
  memo->proto_engine = 0;
  return memo;
}

size_t StepMemoSize() { return Memos().size(); }

void CopyEntryCaches(const StepEntry& from, StepEntry& to) {
  // Each pointer is read with its generation as it was published: a stale
  // pair fails the generation check and is looked up again.
  const uint64_t bgen = from.breaker_gen.load(std::memory_order_acquire);
  to.breaker.store(from.breaker.load(std::memory_order_relaxed),
                   std::memory_order_relaxed);
  to.breaker_gen.store(bgen, std::memory_order_release);
  const uint64_t lgen = from.limiter_gen.load(std::memory_order_acquire);
  to.limiter.store(from.limiter.load(std::memory_order_relaxed),
                   std::memory_order_relaxed);
  to.limiter_gen.store(lgen, std::memory_order_release);
  to.cache_named.store(from.cache_named.load(std::memory_order_acquire),
                       std::memory_order_release);
  to.cache_bypass.store(from.cache_bypass.load(std::memory_order_relaxed),
                        std::memory_order_relaxed);
  to.cache_probe.store(from.cache_probe.load(std::memory_order_relaxed),
                       std::memory_order_relaxed);
  to.admission_hits.store(from.admission_hits.load(std::memory_order_relaxed),
                          std::memory_order_relaxed);
  to.admission_lookups.store(
      from.admission_lookups.load(std::memory_order_relaxed),
      std::memory_order_relaxed);
}

bool FunctionKey(PyObject* fn, const std::string& static_digest, Key128* out) {
  if (Py_TYPE(fn) != &PyFunction_Type) return false;
  auto* op = reinterpret_cast<PyFunctionObject*>(fn);
  PyObject* defaults = op->func_defaults ? op->func_defaults : Py_None;
  PyObject* kwdefaults = op->func_kwdefaults ? op->func_kwdefaults : Py_None;
  PyObject* closure = op->func_closure;
  const Py_ssize_t ncells = closure ? PyTuple_GET_SIZE(closure) : 0;
  int budget = 4096;
  if (!IsPlain(defaults, 0, &budget) || !IsPlain(kwdefaults, 0, &budget))
    return false;
  for (Py_ssize_t i = 0; i < ncells; ++i) {
    PyObject* v = PyCell_GET(PyTuple_GET_ITEM(closure, i));
    if (v != nullptr && !IsPlain(v, 0, &budget)) return false;
  }
  // (defaults, kwdefaults, ((v,) per assigned cell, () per empty one)).
  py::tuple cells(ncells);
  for (Py_ssize_t i = 0; i < ncells; ++i) {
    PyObject* v = PyCell_GET(PyTuple_GET_ITEM(closure, i));
    PyObject* box = v == nullptr ? PyTuple_New(0) : PyTuple_Pack(1, v);
    if (box == nullptr) throw py::error_already_set();
    PyTuple_SET_ITEM(cells.ptr(), i, box);
  }
  PyObject* parts = PyTuple_Pack(3, defaults, kwdefaults, cells.ptr());
  if (parts == nullptr) throw py::error_already_set();
  const py::object hold = py::reinterpret_steal<py::object>(parts);
  std::string ns = "caudal.function\x1f";
  ns += static_digest;
  return KeyOf(ns.data(), static_cast<Py_ssize_t>(ns.size()), parts, nullptr,
               out) == nullptr;
}

}  // namespace caudal::bindings
