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
// * Files: this one holds caudal.Context, the node type and the
//   registration; context_mutation.cc ContextMutation; context_views.cc the
//   views and iterators; context_types.h the traits, object layouts and
//   helpers they share.
#include <Python.h>

#include <cstdint>
#include <new>
#include <string>
#include <utility>

#include "context_types.h"

namespace caudal::bindings {
namespace context_internal {

PyTypeObject NodeType = {PyVarObject_HEAD_INIT(nullptr, 0)};
PyTypeObject ContextBaseType = {PyVarObject_HEAD_INIT(nullptr, 0)};
// caudal.Context: a heap subclass of ContextBaseType made with type() at
// import (see RegisterContext), so that its __getattr__ is wired the way
// CPython wires a Python class's and method calls keep their fast path.
PyTypeObject* g_context_type = nullptr;

void* PyTraits::AllocNode(size_t bytes) {
  const Py_ssize_t extra = static_cast<Py_ssize_t>(bytes - sizeof(Map::Node));
  return PyObject_GC_NewVar(PyVarObject, &NodeType, extra);
}

namespace {

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

PyObject* NewContextOfType(PyTypeObject* type, Map&& map) {
  ContextObject* c = PyObject_GC_New(ContextObject, type);
  if (c == nullptr) return nullptr;
  new (&c->map) Map(std::move(map));
  c->hash = -1;
  c->weakrefs = nullptr;
  PyObject_GC_Track(c);
  return reinterpret_cast<PyObject*>(c);
}

}  // namespace

PyObject* NewContext(Map&& map) {
  return NewContextOfType(g_context_type, std::move(map));
}

namespace {

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

PyObject* Ctx_mutate(PyObject* self, PyObject*) {
  return NewMutation(AsContext(self)->map);
}

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

PyObject* Ctx_iter(PyObject* self) {
  return NewIter(AsContext(self)->map, kKeys);
}

PyMappingMethods kContextMapping = {Ctx_length, Ctx_subscript, nullptr};
PySequenceMethods kContextSequence = {};

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

  if (!Ready(&NodeType) || !Ready(&ContextBaseType) || !InitMutationType() ||
      !InitViewTypes()) {
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
}  // namespace context_internal

void RegisterContext(py::module_& m) {
  if (!context_internal::InitTypes()) throw py::error_already_set();
  m.attr("Context") = py::reinterpret_borrow<py::object>(
      reinterpret_cast<PyObject*>(context_internal::g_context_type));
  m.attr("ContextMutation") = py::reinterpret_borrow<py::object>(
      reinterpret_cast<PyObject*>(&context_internal::MutationType));
}

}  // namespace caudal::bindings
