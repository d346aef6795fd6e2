// The views (ctx.keys(), values(), items()) and iterators of caudal.Context.
// An iterator holds its own reference to the map, so it stays valid
// whatever happens to the Context it came from.
#include <Python.h>

#include <new>

#include "context_types.h"

namespace caudal::bindings::context_internal {

PyTypeObject ViewType = {PyVarObject_HEAD_INIT(nullptr, 0)};
PyTypeObject IterType = {PyVarObject_HEAD_INIT(nullptr, 0)};

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
  return Ready(&ViewType) && Ready(&IterType);
}

}  // namespace caudal::bindings::context_internal
