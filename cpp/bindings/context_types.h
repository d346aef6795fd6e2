// The shared parts of the caudal.Context bindings (context_bindings.cc,
// context_mutation.cc, context_views.cc): the map's traits for Python objects,
// the object layouts, the CPython type objects and the helpers all three use.
// Internal to the bindings; the design note is at the top of
// context_bindings.cc. Everything here runs with the GIL held.
#ifndef CAUDAL_BINDINGS_CONTEXT_TYPES_H_
#define CAUDAL_BINDINGS_CONTEXT_TYPES_H_

#include <Python.h>

#include <cstdint>
#include <string>

#include "caudal/context/hamt.h"
#include "common.h"

namespace caudal::bindings::context_internal {

extern PyTypeObject NodeType;
extern PyTypeObject ContextBaseType;
// caudal.Context: a heap subclass of ContextBaseType made with type() at
// import (see RegisterContext), so that its __getattr__ is wired the way
// CPython wires a Python class's and method calls keep their fast path.
extern PyTypeObject* g_context_type;
extern PyTypeObject MutationType;
extern PyTypeObject ViewTypes[3];  // by ViewKind
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

// ------------------------------------------------------------- helpers

inline uint64_t Mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

inline bool HashKey(PyObject* key, uint64_t* out) {
  const Py_hash_t h = PyObject_Hash(key);
  if (h == -1) return false;
  *out = Mix64(static_cast<uint64_t>(h));
  return true;
}

// A core operation failed: a key's __eq__ raised, or a node allocation failed
// (MemoryError); either way the Python exception is already set, and
// SetStatusError keeps it (common.h).
inline std::nullptr_t Fail(const absl::Status& s) {
  SetStatusError(s);
  return nullptr;
}

inline void SetKeyError(PyObject* key) {
  PyObject* args = PyTuple_Pack(1, key);
  if (args != nullptr) {
    PyErr_SetObject(PyExc_KeyError, args);
    Py_DECREF(args);
  }
}

// 1: found (*value borrowed from the map), 0: absent, -1: error.
inline int Lookup(const Map& map, PyObject* key, PyObject** value) {
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

inline bool IsDunder(PyObject* name) {
  const Py_ssize_t n = PyUnicode_GET_LENGTH(name);
  return n >= 4 && PyUnicode_READ_CHAR(name, 0) == '_' &&
         PyUnicode_READ_CHAR(name, 1) == '_' &&
         PyUnicode_READ_CHAR(name, n - 1) == '_' &&
         PyUnicode_READ_CHAR(name, n - 2) == '_';
}

inline PyObject* ToDict(const Map& map) {
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
inline bool FeedDict(PyObject* d, Sink& sink) {
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
inline bool FeedArgs(PyObject* arg, PyObject* kwargs, Sink&& sink) {
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

inline bool UnpackArgs(const char* fname, PyObject* args, PyObject** arg) {
  *arg = nullptr;
  return PyArg_UnpackTuple(args, fname, 0, 1, arg) != 0;
}

// ---------------------------------------------------------- shared by all

inline ContextObject* AsContext(PyObject* o) {
  return reinterpret_cast<ContextObject*>(o);
}

inline bool IsContext(PyObject* o) {
  return PyObject_TypeCheck(o, &ContextBaseType);
}

enum ViewKind { kKeys = 0, kValues = 1, kItems = 2 };

inline bool Ready(PyTypeObject* t) { return PyType_Ready(t) == 0; }

// A new caudal.Context holding `map` (context_bindings.cc).
PyObject* NewContext(Map&& map);
// A new ContextMutation starting from `base` (context_mutation.cc).
PyObject* NewMutation(const Map& base);
// A keys/values/items view of `ctx`, and an iterator over `map`
// (context_views.cc).
PyObject* NewView(PyObject* ctx, int kind);
PyObject* NewIter(const Map& map, int kind);

// Fill in and ready the type objects of each file; false with a Python
// exception set on failure.
bool InitMutationType();
bool InitViewTypes();

}  // namespace caudal::bindings::context_internal

#endif  // CAUDAL_BINDINGS_CONTEXT_TYPES_H_
