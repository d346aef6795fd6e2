// caudal.Context and caudal.ContextMutation: the persistent map of
// caudal/context/hamt.h holding Python objects, as plain CPython types (a
// pybind11 instance would cost more than a whole Find).
//
// * Traits: keys and values are PyObject* (INCREF/DECREF); key equality is
//   PyObject_RichCompareBool, whose exceptions surface as the core's
//   kUnknown status with the Python exception pending. Hashes are
//   PyObject_Hash, mixed (a bijection, so only equal Python hashes collide).
// * Nodes are Python objects (a GC type, `_ContextNode`): the node policy
//   allocates them with PyObject_GC_NewVar and counts them with the Python
//   reference count. A node shared by several Contexts then holds exactly one
//   reference to each of its keys and values, and the cycle collector sees
//   that reference once, from the node; a Context only visits its root. (A
//   Context visiting the stored objects itself would count a shared node's
//   references once per Context and could collect live objects.)
// * caudal.Context is `type("Context", (_ContextBase,), {"__slots__": ()})`,
//   made at import: the static base keeps the generic attribute lookup and
//   defines __getattr__ (key reads as attributes), and type() wires that
//   the way it does for a Python class, which CPython's attribute
//   specialisation understands. A custom tp_getattro on the type itself
//   would cost every method call ~55 ns (no method-call fast path; measured).
// * Everything here runs with the GIL held. Key comparisons run Python code
//   in the middle of a core operation: a ContextMutation refuses to be
//   changed (RuntimeError) while one of its own operations is in progress,
//   and what an edit drops is released only after the edit is complete.
#include <Python.h>

#include <cstdint>
#include <new>
#include <string>
#include <utility>

#include "caudal/context/hamt.h"
#include "common.h"

namespace caudal::bindings {
namespace {

extern PyTypeObject NodeType;
extern PyTypeObject ContextBaseType;
// caudal.Context: a heap subclass of ContextBaseType made with type() at
// import (see RegisterContext), so that its __getattr__ is wired the way
// CPython wires a Python class's and method calls keep their fast path.
PyTypeObject* g_context_type = nullptr;
extern PyTypeObject MutationType;
extern PyTypeObject ViewType;
extern PyTypeObject IterType;

struct PyTraits {
  using Key = PyObject*;
  using Value = PyObject*;
  using NodeHeader = PyVarObject;
  static void RetainKey(PyObject* o) { Py_INCREF(o); }
  static void ReleaseKey(PyObject* o) { Py_DECREF(o); }
  static void RetainValue(PyObject* o) { Py_INCREF(o); }
  static void ReleaseValue(PyObject* o) { Py_DECREF(o); }
  static int Eq(PyObject* stored, PyObject* probe) {
    if (stored == probe) return 1;
    return PyObject_RichCompareBool(stored, probe, Py_EQ);
  }
  static bool SameValue(PyObject* a, PyObject* b) { return a == b; }
  static void* AllocNode(size_t bytes);
  static void FreeNode(PyVarObject*) {}  // nodes die in Node_dealloc
  static void RetainNode(PyVarObject* n) { Py_INCREF(n); }
  static bool ReleaseNode(PyVarObject* n) {
    Py_DECREF(n);
    return false;
  }
  static uint32_t NodeRefs(const PyVarObject* n) {
    return static_cast<uint32_t>(Py_REFCNT(const_cast<PyVarObject*>(n)));
  }
  static void NodeBuilt(PyVarObject* n) { PyObject_GC_Track(n); }
};

using Map = Hamt<PyTraits>;

struct ContextObject {
  PyObject_HEAD Map map;
  Py_hash_t hash;  // -1 until computed
  PyObject* weakrefs;
};

struct MutationObject {
  PyObject_HEAD Map::Mutation m;
  int busy;  // operations in progress (a key comparison may run Python code)
  bool finished;
};

struct ViewObject {
  PyObject_HEAD PyObject* ctx;
  int kind;
};

struct IterObject {
  PyObject_HEAD Map map;  // its own reference: independent of the Context
  Map::Iterator it;
  Py_ssize_t remaining;
  int kind;
};

void* PyTraits::AllocNode(size_t bytes) {
  const Py_ssize_t extra = static_cast<Py_ssize_t>(bytes - sizeof(Map::Node));
  return PyObject_GC_NewVar(PyVarObject, &NodeType, extra);
}

// ------------------------------------------------------------- helpers

uint64_t Mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

bool HashKey(PyObject* key, uint64_t* out) {
  const Py_hash_t h = PyObject_Hash(key);
  if (h == -1) return false;
  *out = Mix64(static_cast<uint64_t>(h));
  return true;
}

// A core operation failed: a key's __eq__ raised, or a node allocation failed
// (MemoryError); either way the Python exception is already set.
std::nullptr_t Fail(const absl::Status& s) {
  if (!PyErr_Occurred()) {
    PyErr_SetString(PyExc_RuntimeError, std::string(s.message()).c_str());
  }
  return nullptr;
}

void SetKeyError(PyObject* key) {
  PyObject* args = PyTuple_Pack(1, key);
  if (args != nullptr) {
    PyErr_SetObject(PyExc_KeyError, args);
    Py_DECREF(args);
  }
}

// 1: found (*value borrowed from the map), 0: absent, -1: error.
int Lookup(const Map& map, PyObject* key, PyObject** value) {
  uint64_t h;
  if (!HashKey(key, &h)) return -1;
  PyObject* const* v = nullptr;
  absl::Status s = map.Find(key, h, &v);
  if (!s.ok()) {
    Fail(s);
    return -1;
  }
  if (v == nullptr) return 0;
  *value = *v;
  return 1;
}

bool IsDunder(PyObject* name) {
  const Py_ssize_t n = PyUnicode_GET_LENGTH(name);
  return n >= 4 && PyUnicode_READ_CHAR(name, 0) == '_' &&
         PyUnicode_READ_CHAR(name, 1) == '_' &&
         PyUnicode_READ_CHAR(name, n - 1) == '_' &&
         PyUnicode_READ_CHAR(name, n - 2) == '_';
}

PyObject* ToDict(const Map& map) {
  PyObject* d = PyDict_New();
  if (d == nullptr) return nullptr;
  for (const auto& e : map) {
    if (PyDict_SetItem(d, e.key, e.value) < 0) {
      Py_DECREF(d);
      return nullptr;
    }
  }
  return d;
}

// Feeds the items of `d` (a dict) to sink(key, hash, value).
template <typename Sink>
bool FeedDict(PyObject* d, Sink& sink) {
  Py_ssize_t pos = 0;
  PyObject *k, *v;
  while (PyDict_Next(d, &pos, &k, &v)) {
    // Hashing and comparing run Python code that may change the dict.
    Py_INCREF(k);
    Py_INCREF(v);
    uint64_t h;
    const bool ok = HashKey(k, &h) && sink(k, h, v);
    Py_DECREF(k);
    Py_DECREF(v);
    if (!ok) return false;
  }
  return true;
}

// dict(arg, **kwargs) semantics: `arg` is a Context, a dict, an object with
// keys(), or an iterable of pairs; kwargs come last and win.
template <typename Sink>
bool FeedArgs(PyObject* arg, PyObject* kwargs, Sink&& sink) {
  if (arg != nullptr) {
    if (PyObject_TypeCheck(arg, &ContextBaseType)) {
      // Stored hashes are reused; the source is immutable and held by the
      // caller for the whole call.
      for (const auto& e : reinterpret_cast<ContextObject*>(arg)->map) {
        if (!sink(e.key, e.hash, e.value)) return false;
      }
    } else if (PyDict_CheckExact(arg)) {
      if (!FeedDict(arg, sink)) return false;
    } else {
      PyObject* d = PyDict_New();
      if (d == nullptr) return false;
      const int r = PyObject_HasAttrString(arg, "keys")
                        ? PyDict_Merge(d, arg, 1)
                        : PyDict_MergeFromSeq2(d, arg, 1);
      const bool ok = r == 0 && FeedDict(d, sink);
      Py_DECREF(d);
      if (!ok) return false;
    }
  }
  if (kwargs != nullptr && !FeedDict(kwargs, sink)) return false;
  return true;
}

bool UnpackArgs(const char* fname, PyObject* args, PyObject** arg) {
  *arg = nullptr;
  return PyArg_UnpackTuple(args, fname, 0, 1, arg) != 0;
}

// ------------------------------------------------------------------ nodes

int Node_traverse(PyObject* self, visitproc visit, void* arg) {
  return Map::VisitNode(
      reinterpret_cast<PyVarObject*>(self),
      [&](const PyVarObject* child) -> int {
        Py_VISIT(child);
        return 0;
      },
      [&](const Map::Entry& e) -> int {
        Py_VISIT(e.key);
        Py_VISIT(e.value);
        return 0;
      });
}

void Node_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  Py_TRASHCAN_BEGIN(self, Node_dealloc)
      Map::ReleaseContents(reinterpret_cast<PyVarObject*>(self));
  PyObject_GC_Del(self);
  Py_TRASHCAN_END
}

// ---------------------------------------------------------------- Context

ContextObject* AsContext(PyObject* o) {
  return reinterpret_cast<ContextObject*>(o);
}

PyObject* NewContextOfType(PyTypeObject* type, Map&& map) {
  ContextObject* c = PyObject_GC_New(ContextObject, type);
  if (c == nullptr) return nullptr;
  new (&c->map) Map(std::move(map));
  c->hash = -1;
  c->weakrefs = nullptr;
  PyObject_GC_Track(c);
  return reinterpret_cast<PyObject*>(c);
}

PyObject* NewContext(Map&& map) {
  return NewContextOfType(g_context_type, std::move(map));
}

bool IsContext(PyObject* o) { return PyObject_TypeCheck(o, &ContextBaseType); }

int Ctx_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(AsContext(self)->map.root_header());
  return 0;
}

int Ctx_clear(PyObject* self) {
  AsContext(self)->map.Clear();
  return 0;
}

void Ctx_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  Py_TRASHCAN_BEGIN(self, Ctx_dealloc) if (AsContext(self)->weakrefs != nullptr)
      PyObject_ClearWeakRefs(self);
  AsContext(self)->map.~Map();
  PyObject_GC_Del(self);
  Py_TRASHCAN_END
}

PyObject* Ctx_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  PyObject* arg;
  if (!UnpackArgs("Context", args, &arg)) return nullptr;
  const bool no_kwargs = kwargs == nullptr || PyDict_GET_SIZE(kwargs) == 0;
  if (arg != nullptr && Py_TYPE(arg) == type && no_kwargs) {
    return Py_NewRef(arg);  // immutable: Context(ctx) is ctx
  }
  Map::Mutation m{Map()};
  auto sink = [&](PyObject* k, uint64_t h, PyObject* v) {
    absl::Status s = m.Set(k, h, v);
    return s.ok() || Fail(s);
  };
  if (!FeedArgs(arg, no_kwargs ? nullptr : kwargs, sink)) return nullptr;
  return NewContextOfType(type, m.Finish());
}

Py_ssize_t Ctx_length(PyObject* self) {
  return static_cast<Py_ssize_t>(AsContext(self)->map.size());
}

PyObject* Ctx_subscript(PyObject* self, PyObject* key) {
  PyObject* v;
  const int r = Lookup(AsContext(self)->map, key, &v);
  if (r > 0) return Py_NewRef(v);
  if (r == 0) SetKeyError(key);
  return nullptr;
}

int Ctx_contains(PyObject* self, PyObject* key) {
  PyObject* v;
  return Lookup(AsContext(self)->map, key, &v);
}

PyObject* Ctx_get(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1 || nargs > 2) {
    PyErr_Format(PyExc_TypeError, "get expected 1 or 2 arguments, got %zd",
                 nargs);
    return nullptr;
  }
  PyObject* v;
  const int r = Lookup(AsContext(self)->map, args[0], &v);
  if (r < 0) return nullptr;
  if (r > 0) return Py_NewRef(v);
  return Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

PyObject* Ctx_set(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2) {
    PyErr_Format(PyExc_TypeError, "set expected 2 arguments, got %zd", nargs);
    return nullptr;
  }
  uint64_t h;
  if (!HashKey(args[0], &h)) return nullptr;
  const Map& map = AsContext(self)->map;
  Map out;
  absl::Status s = map.Set(args[0], h, args[1], &out);
  if (!s.ok()) return Fail(s);
  if (out.SameVersion(map)) return Py_NewRef(self);
  return NewContext(std::move(out));
}

PyObject* Ctx_delete(PyObject* self, PyObject* key) {
  uint64_t h;
  if (!HashKey(key, &h)) return nullptr;
  Map out;
  bool found = false;
  absl::Status s = AsContext(self)->map.Delete(key, h, &out, &found);
  if (!s.ok()) return Fail(s);
  if (!found) {
    SetKeyError(key);
    return nullptr;
  }
  return NewContext(std::move(out));
}

PyObject* Ctx_update(PyObject* self, PyObject* args, PyObject* kwargs) {
  PyObject* arg;
  if (!UnpackArgs("update", args, &arg)) return nullptr;
  const Map& map = AsContext(self)->map;
  Map::Mutation m(map);
  auto sink = [&](PyObject* k, uint64_t h, PyObject* v) {
    absl::Status s = m.Set(k, h, v);
    return s.ok() || Fail(s);
  };
  if (!FeedArgs(arg, kwargs, sink)) return nullptr;
  Map out = m.Finish();
  if (out.SameVersion(map)) return Py_NewRef(self);
  return NewContext(std::move(out));
}

PyObject* Ctx_snapshot(PyObject* self, PyObject*) { return Py_NewRef(self); }

PyObject* Ctx_to_dict(PyObject* self, PyObject*) {
  return ToDict(AsContext(self)->map);
}

PyObject* NewMutation(const Map& base);
PyObject* NewView(PyObject* ctx, int kind);

PyObject* Ctx_mutate(PyObject* self, PyObject*) {
  return NewMutation(AsContext(self)->map);
}

enum ViewKind { kKeys = 0, kValues = 1, kItems = 2 };

PyObject* Ctx_keys(PyObject* self, PyObject*) { return NewView(self, kKeys); }
PyObject* Ctx_values(PyObject* self, PyObject*) {
  return NewView(self, kValues);
}
PyObject* Ctx_items(PyObject* self, PyObject*) { return NewView(self, kItems); }

PyObject* Ctx_reduce(PyObject* self, PyObject*) {
  PyObject* d = ToDict(AsContext(self)->map);
  if (d == nullptr) return nullptr;
  return Py_BuildValue("(O(N))", reinterpret_cast<PyObject*>(Py_TYPE(self)), d);
}

// _diff(base, missing) -> [(key, value in base or missing, value here or
// missing)] for every key whose value is not the same object in both.
PyObject* Ctx_diff(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2 || !IsContext(args[0])) {
    PyErr_SetString(PyExc_TypeError, "_diff(base: Context, missing)");
    return nullptr;
  }
  PyObject* missing = args[1];
  PyObject* out = PyList_New(0);
  if (out == nullptr) return nullptr;
  absl::Status s = AsContext(self)->map.Diff(
      AsContext(args[0])->map,
      [&](const Map::Entry* before, const Map::Entry* after) {
        PyObject* t = PyTuple_Pack(3, before ? before->key : after->key,
                                   before ? before->value : missing,
                                   after ? after->value : missing);
        const bool ok = t != nullptr && PyList_Append(out, t) == 0;
        Py_XDECREF(t);
        return ok ? absl::OkStatus() : absl::UnknownError("python error");
      });
  if (!s.ok()) {
    Py_DECREF(out);
    return Fail(s);
  }
  return out;
}

PyObject* Ctx_check_invariants(PyObject* self, PyObject*) {
  absl::Status s = AsContext(self)->map.CheckInvariants();
  if (!s.ok()) {
    if (PyErr_Occurred()) return nullptr;
    PyErr_SetString(PyExc_AssertionError, std::string(s.message()).c_str());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject* Ctx_copy(PyObject* self, PyObject*) { return Py_NewRef(self); }

// 1 equal, 0 not, -1 error.
int ContextEqualsContext(const Map& a, const Map& b) {
  if (a.SameVersion(b)) return 1;
  if (a.size() != b.size()) return 0;
  const absl::Status kDiffers = absl::CancelledError("differs");
  absl::Status s =
      a.Diff(b, [&](const Map::Entry* before, const Map::Entry* after) {
        if (before == nullptr || after == nullptr) return kDiffers;
        const int r =
            PyObject_RichCompareBool(before->value, after->value, Py_EQ);
        if (r < 0) return absl::UnknownError("python error");
        return r ? absl::OkStatus() : kDiffers;
      });
  if (s.ok()) return 1;
  if (s.code() == absl::StatusCode::kCancelled) return 0;
  Fail(s);
  return -1;
}

int ContextEqualsDict(const Map& a, PyObject* d) {
  if (static_cast<size_t>(PyDict_GET_SIZE(d)) != a.size()) return 0;
  for (const auto& e : a) {
    PyObject* v = PyDict_GetItemWithError(d, e.key);
    if (v == nullptr) return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(v);  // comparing may run code that changes the dict
    const int r = PyObject_RichCompareBool(e.value, v, Py_EQ);
    Py_DECREF(v);
    if (r <= 0) return r;
  }
  return 1;
}

PyObject* Ctx_richcompare(PyObject* self, PyObject* other, int op) {
  if ((op != Py_EQ && op != Py_NE) ||
      (!IsContext(other) && !PyDict_Check(other))) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  const int r =
      IsContext(other)
          ? ContextEqualsContext(AsContext(self)->map, AsContext(other)->map)
          : ContextEqualsDict(AsContext(self)->map, other);
  if (r < 0) return nullptr;
  return PyBool_FromLong(op == Py_EQ ? r : !r);
}

// Order-independent hash of the items (values must be hashable), cached.
// python/caudal/context.py computes the same number for PyContext.
Py_hash_t Ctx_hash(PyObject* self) {
  ContextObject* c = AsContext(self);
  if (c->hash != -1) return c->hash;
  uint64_t acc = 0;
  for (const auto& e : c->map) {
    const Py_hash_t hv = PyObject_Hash(e.value);
    if (hv == -1) return -1;
    acc += Mix64(e.hash ^ (static_cast<uint64_t>(hv) * 0x9E3779B97F4A7C15ULL));
  }
  const uint64_t mixed = Mix64(
      acc ^ (static_cast<uint64_t>(c->map.size()) * 0xC2B2AE3D27D4EB4FULL));
  Py_hash_t h = static_cast<Py_hash_t>(mixed);
  if (h == -1) h = -2;
  c->hash = h;
  return h;
}

PyObject* Ctx_repr(PyObject* self) {
  const int rec = Py_ReprEnter(self);
  if (rec != 0)
    return rec > 0 ? PyUnicode_FromString("Context({...})") : nullptr;
  PyObject* d = ToDict(AsContext(self)->map);
  PyObject* out = d ? PyUnicode_FromFormat("Context(%R)", d) : nullptr;
  Py_XDECREF(d);
  Py_ReprLeave(self);
  return out;
}

// ctx.name: called by CPython only after the normal lookup failed (so methods
// win over keys); reads key "name", except for dunder names.
PyObject* Ctx_getattr(PyObject* self, PyObject* name) {
  if (PyUnicode_Check(name) && !IsDunder(name)) {
    PyObject* v;
    const int r = Lookup(AsContext(self)->map, name, &v);
    if (r > 0) return Py_NewRef(v);
    if (r < 0) return nullptr;
  }
  PyErr_Format(PyExc_AttributeError,
               "'Context' object has no attribute or key %R", name);
  return nullptr;
}

int Ctx_setattro(PyObject*, PyObject* name, PyObject*) {
  PyErr_Format(PyExc_AttributeError,
               "Context is immutable: cannot set or delete %R; "
               "ctx.set(key, value) returns a new Context",
               name);
  return -1;
}

PyMethodDef kContextMethods[] = {
    {"get", reinterpret_cast<PyCFunction>(Ctx_get), METH_FASTCALL,
     "get(key, default=None): the value for key, else default."},
    {"set", reinterpret_cast<PyCFunction>(Ctx_set), METH_FASTCALL,
     "set(key, value) -> Context: a new Context with key set (self when the "
     "key already holds this very object)."},
    {"delete", Ctx_delete, METH_O,
     "delete(key) -> Context: a new Context without key; KeyError if absent."},
    {"update", reinterpret_cast<PyCFunction>(Ctx_update),
     METH_VARARGS | METH_KEYWORDS,
     "update(mapping_or_pairs=(), /, **kw) -> Context: a new Context with "
     "the items set, as dict.update would (one batched mutation)."},
    {"snapshot", Ctx_snapshot, METH_NOARGS,
     "snapshot() -> Context: O(1); a Context is immutable, so this is self."},
    {"mutate", Ctx_mutate, METH_NOARGS,
     "mutate() -> ContextMutation: batched edits; finish() returns the new "
     "Context."},
    {"to_dict", Ctx_to_dict, METH_NOARGS, "to_dict() -> dict: a new dict."},
    {"keys", Ctx_keys, METH_NOARGS, "A view of the keys."},
    {"values", Ctx_values, METH_NOARGS, "A view of the values."},
    {"items", Ctx_items, METH_NOARGS, "A view of the (key, value) pairs."},
    {"__reduce__", Ctx_reduce, METH_NOARGS, nullptr},
    {"__copy__", Ctx_copy, METH_NOARGS, nullptr},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, nullptr},
    {"_diff", reinterpret_cast<PyCFunction>(Ctx_diff), METH_FASTCALL,
     "_diff(base, missing): [(key, base value, own value)] for each key whose "
     "value is not the same object in both (missing stands for absent); "
     "subtrees shared with base are skipped."},
    {"_check_invariants", Ctx_check_invariants, METH_NOARGS,
     "Checks the trie's invariants (AssertionError if broken)."},
    {"__getattr__", Ctx_getattr, METH_O,
     "ctx.name reads key 'name' when no attribute has that name."},
    {nullptr}};

PyMappingMethods kContextMapping = {Ctx_length, Ctx_subscript, nullptr};
PySequenceMethods kContextSequence = {};

// ------------------------------------------------------- ContextMutation

MutationObject* AsMutation(PyObject* o) {
  return reinterpret_cast<MutationObject*>(o);
}

PyObject* NewMutation(const Map& base) {
  MutationObject* m = PyObject_GC_New(MutationObject, &MutationType);
  if (m == nullptr) return nullptr;
  new (&m->m) Map::Mutation(base);
  m->busy = 0;
  m->finished = false;
  PyObject_GC_Track(m);
  return reinterpret_cast<PyObject*>(m);
}

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

// ------------------------------------------------------ views, iterators

PyObject* NewView(PyObject* ctx, int kind) {
  ViewObject* v = PyObject_GC_New(ViewObject, &ViewType);
  if (v == nullptr) return nullptr;
  v->ctx = Py_NewRef(ctx);
  v->kind = kind;
  PyObject_GC_Track(v);
  return reinterpret_cast<PyObject*>(v);
}

PyObject* NewIter(const Map& map, int kind) {
  IterObject* it = PyObject_GC_New(IterObject, &IterType);
  if (it == nullptr) return nullptr;
  new (&it->map) Map(map);
  new (&it->it) Map::Iterator(it->map.begin());
  it->remaining = static_cast<Py_ssize_t>(map.size());
  it->kind = kind;
  PyObject_GC_Track(it);
  return reinterpret_cast<PyObject*>(it);
}

PyObject* Ctx_iter(PyObject* self) {
  return NewIter(AsContext(self)->map, kKeys);
}

const Map& ViewMap(PyObject* self) {
  return AsContext(reinterpret_cast<ViewObject*>(self)->ctx)->map;
}

int View_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(reinterpret_cast<ViewObject*>(self)->ctx);
  return 0;
}

void View_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  Py_DECREF(reinterpret_cast<ViewObject*>(self)->ctx);
  PyObject_GC_Del(self);
}

Py_ssize_t View_length(PyObject* self) {
  return static_cast<Py_ssize_t>(ViewMap(self).size());
}

PyObject* View_iter(PyObject* self) {
  return NewIter(ViewMap(self), reinterpret_cast<ViewObject*>(self)->kind);
}

int View_contains(PyObject* self, PyObject* x) {
  const Map& map = ViewMap(self);
  switch (reinterpret_cast<ViewObject*>(self)->kind) {
    case kKeys: {
      PyObject* v;
      return Lookup(map, x, &v);
    }
    case kItems: {
      if (!PyTuple_Check(x) || PyTuple_GET_SIZE(x) != 2) return 0;
      PyObject* v;
      const int r = Lookup(map, PyTuple_GET_ITEM(x, 0), &v);
      if (r <= 0) return r;
      return PyObject_RichCompareBool(v, PyTuple_GET_ITEM(x, 1), Py_EQ);
    }
    default:
      for (const auto& e : map) {
        const int r = PyObject_RichCompareBool(e.value, x, Py_EQ);
        if (r != 0) return r;
      }
      return 0;
  }
}

PyObject* View_repr(PyObject* self) {
  static const char* kNames[] = {"context_keys", "context_values",
                                 "context_items"};
  PyObject* list = PySequence_List(self);
  if (list == nullptr) return nullptr;
  PyObject* out = PyUnicode_FromFormat(
      "%s(%R)", kNames[reinterpret_cast<ViewObject*>(self)->kind], list);
  Py_DECREF(list);
  return out;
}

PySequenceMethods kViewSequence = {View_length, nullptr,      nullptr,
                                   nullptr,     nullptr,      nullptr,
                                   nullptr,     View_contains};

int Iter_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(reinterpret_cast<IterObject*>(self)->map.root_header());
  return 0;
}

int Iter_clear(PyObject* self) {
  IterObject* it = reinterpret_cast<IterObject*>(self);
  it->it = Map::Iterator();
  it->remaining = 0;
  it->map.Clear();
  return 0;
}

void Iter_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  IterObject* it = reinterpret_cast<IterObject*>(self);
  it->it.~Iterator();
  it->map.~Map();
  PyObject_GC_Del(self);
}

PyObject* Iter_next(PyObject* self) {
  IterObject* it = reinterpret_cast<IterObject*>(self);
  if (it->it.done()) return nullptr;
  const Map::Entry& e = *it->it;
  PyObject* out;
  switch (it->kind) {
    case kKeys:
      out = Py_NewRef(e.key);
      break;
    case kValues:
      out = Py_NewRef(e.value);
      break;
    default:
      out = PyTuple_Pack(2, e.key, e.value);
      break;
  }
  ++it->it;
  --it->remaining;
  return out;
}

PyObject* Iter_length_hint(PyObject* self, PyObject*) {
  return PyLong_FromSsize_t(reinterpret_cast<IterObject*>(self)->remaining);
}

PyMethodDef kIterMethods[] = {
    {"__length_hint__", Iter_length_hint, METH_NOARGS, nullptr}, {nullptr}};

bool Ready(PyTypeObject* t) { return PyType_Ready(t) == 0; }

PyTypeObject NodeType = {PyVarObject_HEAD_INIT(nullptr, 0)};
PyTypeObject ContextBaseType = {PyVarObject_HEAD_INIT(nullptr, 0)};
PyTypeObject MutationType = {PyVarObject_HEAD_INIT(nullptr, 0)};
PyTypeObject ViewType = {PyVarObject_HEAD_INIT(nullptr, 0)};
PyTypeObject IterType = {PyVarObject_HEAD_INIT(nullptr, 0)};

bool InitTypes() {
  NodeType.tp_name = "caudal._core._ContextNode";
  NodeType.tp_basicsize = sizeof(Map::Node);
  NodeType.tp_itemsize = 1;
  NodeType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  NodeType.tp_doc = "A node of a Context's trie (internal).";
  NodeType.tp_dealloc = Node_dealloc;
  NodeType.tp_traverse = Node_traverse;

  ContextBaseType.tp_name = "caudal._core._ContextBase";
  ContextBaseType.tp_basicsize = sizeof(ContextObject);
  ContextBaseType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE |
                             Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_MAPPING;
  ContextBaseType.tp_doc =
      "Context(mapping_or_pairs=(), /, **kw)\n\n"
      "An immutable mapping with O(1) snapshots: set/delete/update return a\n"
      "new Context sharing all untouched structure (a persistent hash array\n"
      "mapped trie). str keys read as attributes (ctx.user_id).";
  ContextBaseType.tp_new = Ctx_new;
  ContextBaseType.tp_dealloc = Ctx_dealloc;
  ContextBaseType.tp_traverse = Ctx_traverse;
  ContextBaseType.tp_clear = Ctx_clear;
  ContextBaseType.tp_as_mapping = &kContextMapping;
  kContextSequence.sq_contains = Ctx_contains;
  ContextBaseType.tp_as_sequence = &kContextSequence;
  ContextBaseType.tp_iter = Ctx_iter;
  ContextBaseType.tp_richcompare = Ctx_richcompare;
  ContextBaseType.tp_hash = Ctx_hash;
  ContextBaseType.tp_repr = Ctx_repr;
  // tp_getattro stays NULL (inherited generic lookup): see g_context_type.
  ContextBaseType.tp_setattro = Ctx_setattro;
  ContextBaseType.tp_methods = kContextMethods;
  ContextBaseType.tp_weaklistoffset = offsetof(ContextObject, weakrefs);

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

  ViewType.tp_name = "caudal._core.ContextView";
  ViewType.tp_basicsize = sizeof(ViewObject);
  ViewType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  ViewType.tp_dealloc = View_dealloc;
  ViewType.tp_traverse = View_traverse;
  ViewType.tp_as_sequence = &kViewSequence;
  ViewType.tp_iter = View_iter;
  ViewType.tp_repr = View_repr;

  IterType.tp_name = "caudal._core.ContextIterator";
  IterType.tp_basicsize = sizeof(IterObject);
  IterType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  IterType.tp_dealloc = Iter_dealloc;
  IterType.tp_traverse = Iter_traverse;
  IterType.tp_clear = Iter_clear;
  IterType.tp_iter = PyObject_SelfIter;
  IterType.tp_iternext = Iter_next;
  IterType.tp_methods = kIterMethods;

  if (!Ready(&NodeType) || !Ready(&ContextBaseType) || !Ready(&MutationType) ||
      !Ready(&ViewType) || !Ready(&IterType)) {
    return false;
  }
  // caudal.Context = type("Context", (_ContextBase,), {...}): type() sees
  // the inherited __getattr__ and installs CPython's own getattr hook, which
  // the interpreter's attribute specialisation understands.
  PyObject* cls = PyObject_CallFunction(
      reinterpret_cast<PyObject*>(&PyType_Type), "s(O){s:(),s:s,s:s,s:s}",
      "Context", reinterpret_cast<PyObject*>(&ContextBaseType), "__slots__",
      "__module__", "caudal", "__qualname__", "Context", "__doc__",
      ContextBaseType.tp_doc);
  if (cls == nullptr) return false;
  g_context_type = reinterpret_cast<PyTypeObject*>(cls);  // kept for good
  return true;
}

}  // namespace

void RegisterContext(py::module_& m) {
  if (!InitTypes()) throw py::error_already_set();
  m.attr("Context") = py::reinterpret_borrow<py::object>(
      reinterpret_cast<PyObject*>(g_context_type));
  m.attr("ContextMutation") = py::reinterpret_borrow<py::object>(
      reinterpret_cast<PyObject*>(&MutationType));
}

}  // namespace caudal::bindings
