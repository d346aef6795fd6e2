// The key walk. Design note (the rules themselves are in key_walk.h and
// docs/cache.md):
//
// * Type-exact. Exact builtin types are keyed from their storage. Anything
//   else is an object token: the identity of its exact class
//   (ClassDigest, type_identity.h), then its state. A subclass of a builtin is
//   keyed from the stored value (never through __str__, __int__, __iter__,
//   items() ... which a subclass may override) plus its slots and its __dict__.
// * One visit per distinct object. A container or object that may be
//   referenced twice in the input (its reference count says so) is entered in
//   a per-walk memo when first walked; when met again, its encoding (at most
//   KeyHasher::kCollapseAbove + a few bytes, see key_hasher.h) is replayed
//   instead of walking it again. The encoding of a value does not depend on
//   where it sits, so [a, a] and [a, copy(a)] get the same key. An object met
//   again while it is still being walked is a reference cycle: unkeyable.
//   Cost when nothing is shared: one reference count test per container.
// * The memo holds a reference to each object in it until the walk ends, so
//   an id cannot be reused by another object during the walk (hooks may
//   create and drop temporaries).
//
// Files: this one walks builtin values and holds the memo and the per-thread
// entry points; key_walk_objects.cc keys objects through their class;
// key_walker.h declares the Walker both share.
#include "key_walk.h"

#include <Python.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/attributes.h"
#include "key_walker.h"
#include "type_identity.h"

namespace caudal::bindings {
namespace key_walk_internal {

// Whether a value that may be referenced more than once is worth a memo
// entry (a replay is a copy of its encoding; short scalars copy as fast).
// A short tuple or list of scalars (a constant, typically) is re-walked:
// as cheap as a replay, and it has no children a memo could save.
constexpr Py_ssize_t kFlatMax = 8;

inline bool SmallAndFlat(PyObject* const* items, Py_ssize_t n) {
  if (n > kFlatMax) return false;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyTypeObject* t = Py_TYPE(items[i]);
    if (t != &PyLong_Type && t != &PyFloat_Type && t != &PyBool_Type &&
        items[i] != Py_None &&
        (t != &PyUnicode_Type ||
         PyUnicode_GET_LENGTH(items[i]) >= kMemoMinPayload))
      return false;
  }
  return true;
}

inline bool WorthMemo(PyObject* v, PyTypeObject* t) {
  if (t == &PyUnicode_Type) return PyUnicode_GET_LENGTH(v) >= kMemoMinPayload;
  if (t == &PyBytes_Type) return PyBytes_GET_SIZE(v) >= kMemoMinPayload;
  if (t == &PyTuple_Type)
    return PyTuple_GET_SIZE(v) != 0 &&
           !SmallAndFlat(&PyTuple_GET_ITEM(v, 0), PyTuple_GET_SIZE(v));
  if (t == &PyList_Type)
    return PyList_GET_SIZE(v) != 0 &&
           !SmallAndFlat(&PyList_GET_ITEM(v, 0), PyList_GET_SIZE(v));
  if (t == &PyDict_Type) return PyDict_GET_SIZE(v) != 0;
  if (t == &PySet_Type || t == &PyFrozenSet_Type) return PySet_GET_SIZE(v) != 0;
  return true;  // objects
}

ABSL_ATTRIBUTE_ALWAYS_INLINE inline bool Walker::AddScalar(PyObject* v) {
  PyTypeObject* t = Py_TYPE(v);
  if (t == &PyLong_Type) {
#if PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact(reinterpret_cast<PyLongObject*>(v))) {
      h_.AddInt(
          PyUnstable_Long_CompactValue(reinterpret_cast<PyLongObject*>(v)));
      return true;
    }
#endif
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
      PyErr_Clear();
      return false;  // WalkInt
    }
    h_.AddInt(x);
    return true;
  }
  if (t == &PyUnicode_Type) {
    if (PyUnicode_GET_LENGTH(v) >= kMemoMinPayload) return false;
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(v, &n);
    if (!s) {
      PyErr_Clear();
      return false;  // WalkStr: lone surrogates
    }
    h_.AddString(absl::string_view(s, n));
    return true;
  }
  if (v == Py_None) {
    h_.AddNone();
    return true;
  }
  if (t == &PyFloat_Type) {
    h_.AddFloat(PyFloat_AS_DOUBLE(v));
    return true;
  }
  if (t == &PyBool_Type) {
    h_.AddBool(v == Py_True);
    return true;
  }
  return false;
}

UnkeyableReason Walker::Walk(PyObject* v, int depth) {
  if (depth > kMaxDepth) return kTooDeep;
  if (depth > deepest_) deepest_ = depth;
  if (AddScalar(v)) return nullptr;
  PyTypeObject* t = Py_TYPE(v);
  if (t == &PyLong_Type) return WalkInt(v);
  // Every caller holds a reference of its own besides the one in the
  // container: more than two references means it may be met again.
  if (depth > 0 && Py_REFCNT(v) > 2 && WorthMemo(v, t))
    return WalkShared(v, depth);
  return WalkFresh(v, depth);
}

UnkeyableReason Walker::WalkShared(PyObject* v, int depth) {
  if (MemoEntry* e = FindMemo(v)) {
    if (!e->done) return kCycle;
    if (depth + e->height > kMaxDepth) return kTooDeep;
    deepest_ = std::max(deepest_, depth + e->height);
    h_.AddReplay(absl::string_view(arena_.data() + e->offset, e->len));
    return nullptr;
  }
  const size_t index = memo_.size();
  Py_INCREF(v);
  memo_.push_back(MemoEntry{v, 0, 0, 0, false});
  if (memo_.size() > kLinearMemo) {
    if (memo_index_.empty())
      for (size_t i = 0; i < memo_.size(); ++i) memo_index_[memo_[i].obj] = i;
    else
      memo_index_[v] = index;
  }
  const size_t mark = h_.Mark();
  const int saved = deepest_;
  deepest_ = depth;
  UnkeyableReason r = WalkFresh(v, depth);
  if (r) return r;
  const absl::string_view enc = h_.Since(mark);
  MemoEntry& e = memo_[index];
  e.offset = arena_.size();
  e.len = enc.size();
  arena_.append(enc.data(), enc.size());
  e.height = deepest_ - depth;
  e.done = true;
  deepest_ = std::max(saved, deepest_);
  return nullptr;
}

UnkeyableReason Walker::WalkStr(PyObject* v) {
  // Reads the stored characters (never __str__). A long non-ASCII str is
  // keyed from its storage as it is (Latin-1, UCS-2 or UCS-4 code units):
  // no UTF-8 encoding pass, and no UTF-8 copy left attached to the str
  // (PyUnicode_AsUTF8AndSize keeps one for the str's lifetime). ASCII is
  // its own UTF-8 and is read in place below. The rule depends only on the
  // value (a str's storage kind is the narrowest that holds its code
  // points), so equal strings always take the same form.
  if (!PyUnicode_IS_ASCII(v)) {
    const int kind = PyUnicode_KIND(v);
    const Py_ssize_t len = PyUnicode_GET_LENGTH(v);
    if (static_cast<size_t>(len) * static_cast<size_t>(kind) >
        KeyHasher::kLargePayload) {
      h_.AddStringUnits(kind, PyUnicode_DATA(v), static_cast<size_t>(len));
      return nullptr;
    }
  }
  Py_ssize_t n = 0;
  const char* s = PyUnicode_AsUTF8AndSize(v, &n);
  if (s) {
    h_.AddString(absl::string_view(s, n));
    return nullptr;
  }
  // Lone surrogates: key the code points losslessly instead (their
  // encoding is not valid UTF-8, so it equals no other str's).
  PyErr_Clear();
  PyObject* b = PyUnicode_AsEncodedString(v, "utf-8", "surrogatepass");
  if (!b) {
    PyErr_Clear();
    return "str could not be encoded";
  }
  h_.AddString(absl::string_view(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b)));
  Py_DECREF(b);
  return nullptr;
}

UnkeyableReason Walker::WalkInt(PyObject* v) {
  // Reads the stored digits of any int, subclasses included (never __int__
  // or __index__).
  int overflow = 0;
  const long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
  if (x == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    return "int could not be converted";
  }
  if (!overflow) {
    h_.AddInt(x);
    return nullptr;
  }
  // An exact copy of a subclass's value (PyNumber_Index does not call
  // __index__ on an int subclass; it copies the digits).
  PyObject* exact =
      PyLong_CheckExact(v) ? (Py_INCREF(v), v) : PyNumber_Index(v);
  if (!exact) {
    PyErr_Clear();
    return "int could not be converted";
  }
  UnkeyableReason r = WalkBigInt(exact);
  Py_DECREF(exact);
  return r;
}

UnkeyableReason Walker::WalkBigInt(PyObject* v) {
  // |v| as little-endian bytes through int.to_bytes (rare: beyond 64 bits).
  PyObject* zero = PyLong_FromLong(0);
  const int negative = zero ? PyObject_RichCompareBool(v, zero, Py_LT) : -1;
  Py_XDECREF(zero);
  PyObject* mag = negative >= 0 ? PyNumber_Absolute(v) : nullptr;
  PyObject* nbits =
      mag ? PyObject_CallMethod(mag, "bit_length", nullptr) : nullptr;
  const Py_ssize_t bits = nbits ? PyLong_AsSsize_t(nbits) : -1;
  Py_XDECREF(nbits);
  PyObject* bytes = bits >= 0 ? PyObject_CallMethod(mag, "to_bytes", "ns",
                                                    (bits + 7) / 8, "little")
                              : nullptr;
  Py_XDECREF(mag);
  if (!bytes) {
    PyErr_Clear();
    return "int could not be converted";
  }
  h_.AddBigInt(
      absl::string_view(PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes)),
      negative == 1);
  Py_DECREF(bytes);
  return nullptr;
}

UnkeyableReason Walker::WalkSequence(PyObject* v, bool tuple, int depth) {
  // The stored items (PyTuple/PyList_GET_ITEM work on subclasses too).
  const Py_ssize_t n = tuple ? PyTuple_GET_SIZE(v) : PyList_GET_SIZE(v);
  tuple ? h_.BeginTuple(n) : h_.BeginList(n);
  // Exact scalars are keyed inline (they run no Python code, so need no
  // reference of their own), at depth + 1.
  const bool inline_scalars = n != 0 && depth + 1 <= kMaxDepth;
  if (inline_scalars && depth + 1 > deepest_) deepest_ = depth + 1;
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (!tuple && PyList_GET_SIZE(v) != n)
      return "list changed while being keyed";
    PyObject* item = tuple ? PyTuple_GET_ITEM(v, i) : PyList_GET_ITEM(v, i);
    if (inline_scalars && AddScalar(item)) continue;
    UnkeyableReason r = WalkBorrowed(item, depth + 1);
    if (r) return r;
  }
  tuple ? h_.EndTuple() : h_.EndList();
  return nullptr;
}

// Small dicts whose keys are all str (records, kwargs, JSON objects) are
// keyed in sorted key order as one ordered token sequence: as insensitive to
// insertion order as the general unordered fold, without its per-item hash.
// Equal dicts have the same size and keys, so both always take the same
// path. The token ("builtins.dict#sorted", a name no class digest can have)
// keeps them apart from every list, tuple and object.
constexpr Py_ssize_t kSortedDictMax = 8;

bool Walker::WalkSmallStrDict(PyObject* d, Py_ssize_t n, int depth,
                              UnkeyableReason* result) {
  struct Item {
    const char* key;
    Py_ssize_t len;
    PyObject* value;
  };
  Item items[kSortedDictMax];
  Py_ssize_t pos = 0, i = 0;
  PyObject *key, *val;
  while (PyDict_Next(d, &pos, &key, &val)) {
    if (Py_TYPE(key) != &PyUnicode_Type) return false;
    Py_ssize_t len = 0;
    const char* s = PyUnicode_AsUTF8AndSize(key, &len);
    if (s == nullptr) {
      PyErr_Clear();
      return false;  // lone surrogates: the general path handles them
    }
    items[i++] = {s, len, val};
  }
  // Insertion sort: n <= 8. Keys are distinct, so the order is total.
  for (Py_ssize_t a = 1; a < i; ++a) {
    Item x = items[a];
    Py_ssize_t b = a;
    for (; b > 0; --b) {
      const Item& y = items[b - 1];
      const int c = std::memcmp(y.key, x.key,
                                static_cast<size_t>(std::min(y.len, x.len)));
      if (c < 0 || (c == 0 && y.len <= x.len)) break;
      items[b] = y;
    }
    items[b] = x;
  }
  // The values keep their references while walking (a hook may run Python).
  for (Py_ssize_t k = 0; k < i; ++k) Py_INCREF(items[k].value);
  h_.BeginObject("builtins.dict#sorted");
  h_.BeginTuple(2 * i);  // key, value, key, value ... in key order
  UnkeyableReason r = nullptr;
  Py_ssize_t k = 0;
  const bool inline_scalars = depth + 1 <= kMaxDepth;
  if (inline_scalars && i != 0 && depth + 1 > deepest_) deepest_ = depth + 1;
  for (; k < i && !r; ++k) {
    h_.AddString(absl::string_view(items[k].key, items[k].len));
    if (inline_scalars && AddScalar(items[k].value)) continue;
    r = Walk(items[k].value, depth + 1);
  }
  for (Py_ssize_t j = 0; j < i; ++j) Py_DECREF(items[j].value);
  if (!r) {
    h_.EndTuple();
    h_.EndObject();
  }
  *result = r;
  (void)n;
  return true;
}

UnkeyableReason Walker::WalkDict(PyObject* v, int depth) {
  // The stored items (PyDict_Next works on subclasses too, never items()).
  const Py_ssize_t n = PyDict_GET_SIZE(v);
  if (n <= kSortedDictMax) {
    UnkeyableReason r = nullptr;
    if (WalkSmallStrDict(v, n, depth, &r)) return r;
  }
  h_.BeginDict(n);
  Py_ssize_t pos = 0;
  PyObject *key, *val;
  while (PyDict_Next(v, &pos, &key, &val)) {
    Py_INCREF(key);
    Py_INCREF(val);
    UnkeyableReason r = Walk(key, depth + 1);
    if (!r) r = Walk(val, depth + 1);
    Py_DECREF(key);
    Py_DECREF(val);
    if (r) return r;
    if (PyDict_GET_SIZE(v) != n) return "dict changed while being keyed";
  }
  h_.EndDict();
  return nullptr;
}

UnkeyableReason Walker::WalkOrderedDict(PyObject* v, int depth) {
  // OrderedDict equality is order-sensitive: its items in its own order
  // (OrderedDict's iterator, not a subclass's __iter__).
  const Py_ssize_t n = PyDict_GET_SIZE(v);
  PyObject* it = g_odict_type->tp_iter(v);
  if (!it) {
    PyErr_Clear();
    return "OrderedDict could not be iterated";
  }
  h_.BeginList(n);
  UnkeyableReason r = nullptr;
  Py_ssize_t count = 0;
  PyObject* key;
  while (!r && (key = PyIter_Next(it))) {
    PyObject* val = PyDict_GetItemWithError(v, key);
    if (!val || ++count > n) {
      r = "OrderedDict changed while being keyed";
    } else {
      Py_INCREF(val);
      h_.BeginTuple(2);
      r = Walk(key, depth + 2);
      if (!r) r = Walk(val, depth + 2);
      if (!r) h_.EndTuple();
      Py_DECREF(val);
    }
    Py_DECREF(key);
  }
  Py_DECREF(it);
  if (PyErr_Occurred()) {
    PyErr_Clear();
    if (!r) r = "OrderedDict changed while being keyed";
  }
  if (r) return r;
  if (count != n) return "OrderedDict changed while being keyed";
  h_.EndList();
  return nullptr;
}

UnkeyableReason Walker::WalkSet(PyObject* v, int depth) {
  // The stored elements: the base type's iterator, never a subclass's.
  const bool frozen = PyFrozenSet_Check(v);
  h_.BeginSet(PySet_GET_SIZE(v), frozen);
  PyObject* it = frozen ? PyFrozenSet_Type.tp_iter(v) : PySet_Type.tp_iter(v);
  if (!it) {
    PyErr_Clear();
    return "set could not be iterated";
  }
  PyObject* item;
  UnkeyableReason r = nullptr;
  while (!r && (item = PyIter_Next(it))) r = WalkOwned(item, depth + 1);
  Py_DECREF(it);
  if (PyErr_Occurred()) {
    PyErr_Clear();
    return "set changed while being keyed";
  }
  if (r) return r;
  h_.EndSet();
  return nullptr;
}

UnkeyableReason Walker::WalkFresh(PyObject* v, int depth) {
  PyTypeObject* t = Py_TYPE(v);
  if (t == &PyUnicode_Type) return WalkStr(v);
  if (t == &PyTuple_Type || t == &PyList_Type)
    return WalkSequence(v, t == &PyTuple_Type, depth);
  if (t == &PyDict_Type) return WalkDict(v, depth);
  if (t == &PyBytes_Type) {
    h_.AddBytes(absl::string_view(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v)));
    return nullptr;
  }
  if (t == &PySet_Type || t == &PyFrozenSet_Type) return WalkSet(v, depth);
  if (t == &PyByteArray_Type) {
    h_.BeginObject("builtins.bytearray");
    h_.AddBytes(
        absl::string_view(PyByteArray_AS_STRING(v), PyByteArray_GET_SIZE(v)));
    h_.EndObject();
    return nullptr;
  }
  if (!InitGlobals()) {
    PyErr_Clear();
    return "key walker could not initialise";
  }
  return WalkObject(v, t, depth);
}

namespace {

// One hasher and walker per thread, reached through an initial-exec TLS
// pointer: a thread_local object in a shared library costs a __tls_get_addr
// call per access (measured at ~5% of a cache hit); the pointer needs 8
// bytes of static TLS. Never freed (one per thread). A key computed while
// another is in progress on the same thread (a hook that keys something)
// uses a walker of its own.
struct ThreadKeyState {
  KeyHasher hasher;
  Walker walker{hasher};
  bool busy = false;
};

ABSL_ATTRIBUTE_ALWAYS_INLINE inline UnkeyableReason KeyWith(
    KeyHasher& h, Walker& w, const char* ns, Py_ssize_t ns_len, PyObject* value,
    PyObject* extra, Key128* out) {
  h.Reset();
  h.AddString(absl::string_view(ns, ns_len));
  UnkeyableReason r = w.Walk(value, 0);
  if (!r && extra) r = w.Walk(extra, 0);
  w.Clear();
  if (r) return r;
  *out = h.Finish();
  if (!h.ok()) return "internal: key stream misuse";
  return nullptr;
}

// A key computed while another is in progress on this thread.
ABSL_ATTRIBUTE_NOINLINE UnkeyableReason NestedKeyOf(const char* ns,
                                                    Py_ssize_t ns_len,
                                                    PyObject* value,
                                                    PyObject* extra,
                                                    Key128* out) {
  auto h = std::make_unique<KeyHasher>();
  Walker w(*h);
  return KeyWith(*h, w, ns, ns_len, value, extra, out);
}

}  // namespace
}  // namespace key_walk_internal

using key_walk_internal::KeyWith;
using key_walk_internal::NestedKeyOf;
using key_walk_internal::ThreadKeyState;
using key_walk_internal::Walker;

UnkeyableReason WalkValue(PyObject* value, KeyHasher& h) {
  Walker w(h);
  return w.Walk(value, 0);
}

UnkeyableReason KeyOf(const char* ns, Py_ssize_t ns_len, PyObject* value,
                      PyObject* extra, Key128* out) {
  static thread_local ThreadKeyState* tls_state
      __attribute__((tls_model("initial-exec"))) = nullptr;
  if (tls_state == nullptr) tls_state = new ThreadKeyState();
  ThreadKeyState& s = *tls_state;
  if (s.busy) return NestedKeyOf(ns, ns_len, value, extra, out);
  s.busy = true;
  UnkeyableReason r =
      KeyWith(s.hasher, s.walker, ns, ns_len, value, extra, out);
  s.busy = false;
  return r;
}

}  // namespace caudal::bindings
