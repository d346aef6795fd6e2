// The views (ctx.keys(), values(), items()) and iterators of caudal.Context.
// An iterator holds its own reference to the map, so it stays valid
// whatever happens to the Context it came from.
#include <Python.h>

#include <new>

#include "context_types.h"

namespace caudal::bindings::context_internal {

// One type per kind: keys and items views are sets (as a dict's are, and
// registered as collections.abc.KeysView / ItemsView by caudal.context);
// values views are not.
PyTypeObject ViewTypes[3] = {{PyVarObject_HEAD_INIT(nullptr, 0)},
                             {PyVarObject_HEAD_INIT(nullptr, 0)},
                             {PyVarObject_HEAD_INIT(nullptr, 0)}};
PyTypeObject IterType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyObject* NewView(PyObject* ctx, int kind) {
  ViewObject* v = PyObject_GC_New(ViewObject, &ViewTypes[kind]);
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

namespace {

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

// Set behaviour of the keys and items views, as CPython's dict views have
// it: comparisons with any set-like object (collections.abc.Set), the
// operators building a new set, isdisjoint.
bool IsSetLike(PyObject* o) {
  if (PyAnySet_Check(o) || PyDictKeys_Check(o) || PyDictItems_Check(o) ||
      Py_IS_TYPE(o, &ViewTypes[kKeys]) || Py_IS_TYPE(o, &ViewTypes[kItems])) {
    return true;
  }
  static PyObject* abc_set = [] {
    PyObject* abc = PyImport_ImportModule("collections.abc");
    PyObject* set = abc ? PyObject_GetAttrString(abc, "Set") : nullptr;
    Py_XDECREF(abc);
    return set;  // kept for the process's life
  }();
  if (abc_set == nullptr) {
    PyErr_Clear();
    return false;
  }
  const int r = PyObject_IsInstance(o, abc_set);
  if (r < 0) PyErr_Clear();
  return r > 0;
}

// 1 if every element of `a` is in `b`, 0 if not, -1 on error.
int AllContainedIn(PyObject* a, PyObject* b) {
  PyObject* it = PyObject_GetIter(a);
  if (it == nullptr) return -1;
  int ok = 1;
  while (PyObject* x = PyIter_Next(it)) {
    ok = PySequence_Contains(b, x);
    Py_DECREF(x);
    if (ok <= 0) break;
  }
  Py_DECREF(it);
  return PyErr_Occurred() ? -1 : ok;
}

PyObject* View_richcompare(PyObject* self, PyObject* other, int op) {
  if (!IsSetLike(other)) Py_RETURN_NOTIMPLEMENTED;
  const Py_ssize_t n = PyObject_Size(self);
  const Py_ssize_t m = PyObject_Size(other);
  if (n < 0 || m < 0) return nullptr;
  int r = 0;
  switch (op) {
    case Py_EQ:
    case Py_NE:
      r = n == m ? AllContainedIn(self, other) : 0;
      if (r >= 0 && op == Py_NE) r = !r;
      break;
    case Py_LT:
      r = n < m ? AllContainedIn(self, other) : 0;
      break;
    case Py_LE:
      r = n <= m ? AllContainedIn(self, other) : 0;
      break;
    case Py_GT:
      r = n > m ? AllContainedIn(other, self) : 0;
      break;
    case Py_GE:
      r = n >= m ? AllContainedIn(other, self) : 0;
      break;
  }
  if (r < 0) return nullptr;
  return PyBool_FromLong(r);
}

// a <op> b as a new set: set(a), updated with b by `method`.
PyObject* SetOp(PyObject* a, PyObject* b, const char* method) {
  PyObject* out = PySet_New(a);
  if (out == nullptr) return nullptr;
  PyObject* r = PyObject_CallMethod(out, method, "O", b);
  if (r == nullptr) {
    Py_DECREF(out);
    return nullptr;
  }
  Py_DECREF(r);
  return out;
}

PyObject* View_sub(PyObject* a, PyObject* b) {
  return SetOp(a, b, "difference_update");
}
PyObject* View_and(PyObject* a, PyObject* b) {
  return SetOp(a, b, "intersection_update");
}
PyObject* View_or(PyObject* a, PyObject* b) { return SetOp(a, b, "update"); }
PyObject* View_xor(PyObject* a, PyObject* b) {
  return SetOp(a, b, "symmetric_difference_update");
}

PyObject* View_isdisjoint(PyObject* self, PyObject* other) {
  PyObject* it = PyObject_GetIter(other);
  if (it == nullptr) return nullptr;
  int found = 0;
  while (PyObject* x = PyIter_Next(it)) {
    found = PySequence_Contains(self, x);
    Py_DECREF(x);
    if (found != 0) break;
  }
  Py_DECREF(it);
  if (found < 0 || PyErr_Occurred()) return nullptr;
  return PyBool_FromLong(!found);
}

PyNumberMethods kSetNumber = [] {
  PyNumberMethods n{};
  n.nb_subtract = View_sub;
  n.nb_and = View_and;
  n.nb_or = View_or;
  n.nb_xor = View_xor;
  return n;
}();

PyMethodDef kSetMethods[] = {
    {"isdisjoint", View_isdisjoint, METH_O,
     "True if the view and the iterable have no element in common."},
    {nullptr}};

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

}  // namespace

bool InitViewTypes() {
  static const char* kTypeNames[] = {"caudal._core.ContextKeys",
                                     "caudal._core.ContextValues",
                                     "caudal._core.ContextItems"};
  for (int kind : {kKeys, kValues, kItems}) {
    PyTypeObject& t = ViewTypes[kind];
    t.tp_name = kTypeNames[kind];
    t.tp_basicsize = sizeof(ViewObject);
    t.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
    t.tp_dealloc = View_dealloc;
    t.tp_traverse = View_traverse;
    t.tp_as_sequence = &kViewSequence;
    t.tp_iter = View_iter;
    t.tp_repr = View_repr;
    if (kind != kValues) {
      t.tp_richcompare = View_richcompare;
      t.tp_as_number = &kSetNumber;
      t.tp_methods = kSetMethods;
    }
    if (!Ready(&t)) return false;
  }

  IterType.tp_name = "caudal._core.ContextIterator";
  IterType.tp_basicsize = sizeof(IterObject);
  IterType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  IterType.tp_dealloc = Iter_dealloc;
  IterType.tp_traverse = Iter_traverse;
  IterType.tp_clear = Iter_clear;
  IterType.tp_iter = PyObject_SelfIter;
  IterType.tp_iternext = Iter_next;
  IterType.tp_methods = kIterMethods;
  return Ready(&IterType);
}

}  // namespace caudal::bindings::context_internal
