// caudal.ContextMutation: a batch of edits to a Context (ctx.mutate()),
// finished in O(1) into a new Context. Key comparisons run Python code in
// the middle of a core edit: the mutation refuses to be changed while one
// of its own operations is in progress, and what an edit drops is released
// only after the edit is complete (design note: context_bindings.cc).
#include <Python.h>

#include <cstdint>
#include <new>
#include <string>

#include "context_types.h"

namespace caudal::bindings::context_internal {

PyTypeObject MutationType = {PyVarObject_HEAD_INIT(nullptr, 0)};

namespace {

// ------------------------------------------------------- ContextMutation

MutationObject* AsMutation(PyObject* o) {
  return reinterpret_cast<MutationObject*>(o);
}

}  // namespace

PyObject* NewMutation(const Map& base) {
  MutationObject* m = PyObject_GC_New(MutationObject, &MutationType);
  if (m == nullptr) return nullptr;
  new (&m->m) Map::Mutation(base);
  m->busy = 0;
  m->finished = false;
  PyObject_GC_Track(m);
  return reinterpret_cast<PyObject*>(m);
}

namespace {

int Mut_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(AsMutation(self)->m.current().root_header());
  return 0;
}

int Mut_clear(PyObject* self) {
  MutationObject* m = AsMutation(self);
  m->m.~Mutation();
  new (&m->m) Map::Mutation(Map());
  return 0;
}

void Mut_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  AsMutation(self)->m.~Mutation();
  PyObject_GC_Del(self);
}

// Writes need the mutation open and idle.
bool CheckWritable(MutationObject* m) {
  if (m->finished) {
    PyErr_SetString(PyExc_ValueError,
                    "this ContextMutation is finished; start a new one with "
                    "ctx.mutate()");
    return false;
  }
  if (m->busy) {
    PyErr_SetString(PyExc_RuntimeError,
                    "ContextMutation changed while one of its own operations "
                    "was comparing keys");
    return false;
  }
  return true;
}

// Reads may nest; a write may not start while any operation is in progress.
struct BusyScope {
  explicit BusyScope(MutationObject* m) : m_(m) { ++m_->busy; }
  ~BusyScope() { --m_->busy; }
  MutationObject* m_;
};

int MutLookup(MutationObject* m, PyObject* key, PyObject** value) {
  uint64_t h;
  if (!HashKey(key, &h)) return -1;
  PyObject* const* v = nullptr;
  absl::Status s;
  {
    BusyScope busy(m);
    s = m->m.Find(key, h, &v);
  }
  if (!s.ok()) {
    Fail(s);
    return -1;
  }
  if (v == nullptr) return 0;
  *value = *v;
  return 1;
}

bool MutSet(MutationObject* m, PyObject* key, uint64_t h, PyObject* value) {
  if (!CheckWritable(m)) return false;
  Map::Garbage garbage;
  absl::Status s;
  {
    BusyScope busy(m);
    s = m->m.Set(key, h, value, &garbage);
  }
  garbage.Release();  // may run __del__, which may use this mutation
  return s.ok() || Fail(s);
}

// 1 deleted, 0 absent, -1 error.
int MutDelete(MutationObject* m, PyObject* key) {
  if (!CheckWritable(m)) return -1;
  uint64_t h;
  if (!HashKey(key, &h)) return -1;
  if (!CheckWritable(m)) return -1;  // __hash__ may have finished it
  Map::Garbage garbage;
  bool found = false;
  absl::Status s;
  {
    BusyScope busy(m);
    s = m->m.Delete(key, h, &found, &garbage);
  }
  garbage.Release();
  if (!s.ok()) {
    Fail(s);
    return -1;
  }
  return found ? 1 : 0;
}

Py_ssize_t Mut_length(PyObject* self) {
  return static_cast<Py_ssize_t>(AsMutation(self)->m.size());
}

PyObject* Mut_subscript(PyObject* self, PyObject* key) {
  PyObject* v;
  const int r = MutLookup(AsMutation(self), key, &v);
  if (r > 0) return Py_NewRef(v);
  if (r == 0) SetKeyError(key);
  return nullptr;
}

int Mut_ass_subscript(PyObject* self, PyObject* key, PyObject* value) {
  MutationObject* m = AsMutation(self);
  if (value == nullptr) {
    const int r = MutDelete(m, key);
    if (r == 0) SetKeyError(key);
    return r > 0 ? 0 : -1;
  }
  if (!CheckWritable(m)) return -1;
  uint64_t h;
  if (!HashKey(key, &h)) return -1;
  return MutSet(m, key, h, value) ? 0 : -1;
}

int Mut_contains(PyObject* self, PyObject* key) {
  PyObject* v;
  return MutLookup(AsMutation(self), key, &v);
}

PyObject* Mut_get(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1 || nargs > 2) {
    PyErr_Format(PyExc_TypeError, "get expected 1 or 2 arguments, got %zd",
                 nargs);
    return nullptr;
  }
  PyObject* v;
  const int r = MutLookup(AsMutation(self), args[0], &v);
  if (r < 0) return nullptr;
  if (r > 0) return Py_NewRef(v);
  return Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

PyObject* Mut_set(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2) {
    PyErr_Format(PyExc_TypeError, "set expected 2 arguments, got %zd", nargs);
    return nullptr;
  }
  if (Mut_ass_subscript(self, args[0], args[1]) < 0) return nullptr;
  Py_RETURN_NONE;
}

PyObject* Mut_delete(PyObject* self, PyObject* key) {
  if (Mut_ass_subscript(self, key, nullptr) < 0) return nullptr;
  Py_RETURN_NONE;
}

PyObject* Mut_pop(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1 || nargs > 2) {
    PyErr_Format(PyExc_TypeError, "pop expected 1 or 2 arguments, got %zd",
                 nargs);
    return nullptr;
  }
  MutationObject* m = AsMutation(self);
  if (!CheckWritable(m)) return nullptr;
  PyObject* v;
  const int r = MutLookup(m, args[0], &v);
  if (r < 0) return nullptr;
  if (r == 0) {
    if (nargs == 2) return Py_NewRef(args[1]);
    SetKeyError(args[0]);
    return nullptr;
  }
  Py_INCREF(v);  // the delete drops the map's reference
  const int d = MutDelete(m, args[0]);
  if (d <= 0) {
    Py_DECREF(v);
    if (d == 0) SetKeyError(args[0]);  // removed by a comparison's side effect
    return nullptr;
  }
  return v;
}

PyObject* Mut_update(PyObject* self, PyObject* args, PyObject* kwargs) {
  MutationObject* m = AsMutation(self);
  PyObject* arg;
  if (!UnpackArgs("update", args, &arg)) return nullptr;
  if (!CheckWritable(m)) return nullptr;
  auto sink = [&](PyObject* k, uint64_t h, PyObject* v) {
    return MutSet(m, k, h, v);
  };
  if (!FeedArgs(arg, kwargs, sink)) return nullptr;
  Py_RETURN_NONE;
}

PyObject* Mut_finish(PyObject* self, PyObject*) {
  MutationObject* m = AsMutation(self);
  if (m->busy) {
    PyErr_SetString(PyExc_RuntimeError,
                    "ContextMutation finished while one of its own operations "
                    "was comparing keys");
    return nullptr;
  }
  m->finished = true;
  return NewContext(m->m.Finish());
}

PyObject* Mut_enter(PyObject* self, PyObject*) { return Py_NewRef(self); }

PyObject* Mut_exit(PyObject* self, PyObject* const*, Py_ssize_t) {
  PyObject* ctx = Mut_finish(self, nullptr);
  if (ctx == nullptr) return nullptr;
  Py_DECREF(ctx);
  Py_RETURN_FALSE;
}

PyObject* Mut_repr(PyObject* self) {
  MutationObject* m = AsMutation(self);
  PyObject* d;
  {
    BusyScope busy(m);  // dict insertion runs key __hash__/__eq__
    d = ToDict(m->m.current());
  }
  if (d == nullptr) return nullptr;
  PyObject* out = PyUnicode_FromFormat("ContextMutation(%R)", d);
  Py_DECREF(d);
  return out;
}

PyObject* Mut_check_invariants(PyObject* self, PyObject*) {
  absl::Status s = AsMutation(self)->m.CheckInvariants();
  if (!s.ok()) {
    if (PyErr_Occurred()) return nullptr;
    PyErr_SetString(PyExc_AssertionError, std::string(s.message()).c_str());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyMethodDef kMutationMethods[] = {
    {"get", reinterpret_cast<PyCFunction>(Mut_get), METH_FASTCALL,
     "get(key, default=None)"},
    {"set", reinterpret_cast<PyCFunction>(Mut_set), METH_FASTCALL,
     "set(key, value): m[key] = value."},
    {"delete", Mut_delete, METH_O, "delete(key): del m[key] (KeyError)."},
    {"pop", reinterpret_cast<PyCFunction>(Mut_pop), METH_FASTCALL,
     "pop(key[, default]): remove key and return its value."},
    {"update", reinterpret_cast<PyCFunction>(Mut_update),
     METH_VARARGS | METH_KEYWORDS,
     "update(mapping_or_pairs=(), /, **kw): set the items."},
    {"finish", Mut_finish, METH_NOARGS,
     "finish() -> Context: the result (O(1)); the mutation refuses further "
     "writes."},
    {"__enter__", Mut_enter, METH_NOARGS, nullptr},
    {"__exit__", reinterpret_cast<PyCFunction>(Mut_exit), METH_FASTCALL,
     nullptr},
    {"_check_invariants", Mut_check_invariants, METH_NOARGS, nullptr},
    {nullptr}};

PyMappingMethods kMutationMapping = {Mut_length, Mut_subscript,
                                     Mut_ass_subscript};
PySequenceMethods kMutationSequence = {};

}  // namespace

bool InitMutationType() {
  MutationType.tp_name = "caudal.ContextMutation";
  MutationType.tp_basicsize = sizeof(MutationObject);
  MutationType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  MutationType.tp_doc =
      "A batch of edits to a Context (from ctx.mutate()): m[key] = value,\n"
      "del m[key], set, delete, pop, update; finish() returns the new\n"
      "Context in O(1). Usable as a context manager (finishes on exit).";
  MutationType.tp_dealloc = Mut_dealloc;
  MutationType.tp_traverse = Mut_traverse;
  MutationType.tp_clear = Mut_clear;
  MutationType.tp_as_mapping = &kMutationMapping;
  kMutationSequence.sq_contains = Mut_contains;
  MutationType.tp_as_sequence = &kMutationSequence;
  MutationType.tp_hash = PyObject_HashNotImplemented;
  MutationType.tp_repr = Mut_repr;
  MutationType.tp_methods = kMutationMethods;
  return Ready(&MutationType);
}

}  // namespace caudal::bindings::context_internal
