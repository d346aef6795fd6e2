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
#include "key_walk.h"

#include <Python.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/container/flat_hash_map.h"
#include "type_identity.h"

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define CAUDAL_T_OBJECT_EX T_OBJECT_EX
#define CAUDAL_T_OBJECT T_OBJECT
#else
#define CAUDAL_T_OBJECT_EX Py_T_OBJECT_EX
#define CAUDAL_T_OBJECT _Py_T_OBJECT
#endif

namespace caudal::bindings {
namespace {

constexpr int kMaxDepth = 64;
constexpr const char* kTooDeep = "nested too deeply (or recursive)";
constexpr const char* kCycle = "contains itself (a reference cycle)";
constexpr const char* kNoStableKey =
    "type has no stable key (use keyable data, or add __caudal_key__)";

// Raw token kinds (KeyHasher::AddRaw) used by the walk.
constexpr uint8_t kRawUnsetSlot = 1;
constexpr uint8_t kRawClass = 2;  // a class as a value (defaultdict factory)

// Containers, str and bytes at least this long are worth a memo entry when
// they may be shared; shorter ones are re-walked (as cheap as a replay).
constexpr Py_ssize_t kMemoMinPayload = 1024;

PyObject* g_enum_type = nullptr;       // enum.Enum
PyObject* g_flag_type = nullptr;       // enum.Flag
PyTypeObject* g_odict_type = nullptr;  // collections.OrderedDict
PyTypeObject* g_ddict_type = nullptr;  // collections.defaultdict
PyObject* g_ddict_factory = nullptr;   // its default_factory descriptor
PyObject* g_dc_fields = nullptr;       // dataclasses.fields
PyObject* g_str_caudal_key = nullptr;
PyObject* g_str_dc_fields_attr = nullptr;
PyObject* g_str_name = nullptr;
PyObject* g_str_enum_name = nullptr;   // _name_
PyObject* g_str_enum_value = nullptr;  // _value_
PyObject* g_str_pydantic_fields = nullptr;
PyObject* g_str_pydantic_extra = nullptr;
PyObject* g_str_pydantic_private = nullptr;

bool InitGlobals() {
  if (g_str_pydantic_private) return true;
  PyObject* enum_mod = PyImport_ImportModule("enum");
  if (!enum_mod) return false;
  g_enum_type = PyObject_GetAttrString(enum_mod, "Enum");
  g_flag_type = PyObject_GetAttrString(enum_mod, "Flag");
  Py_DECREF(enum_mod);
  PyObject* dc = PyImport_ImportModule("dataclasses");
  if (!dc) return false;
  g_dc_fields = PyObject_GetAttrString(dc, "fields");
  Py_DECREF(dc);
  PyObject* coll = PyImport_ImportModule("collections");
  if (!coll) return false;
  g_odict_type = reinterpret_cast<PyTypeObject*>(
      PyObject_GetAttrString(coll, "OrderedDict"));
  g_ddict_type = reinterpret_cast<PyTypeObject*>(
      PyObject_GetAttrString(coll, "defaultdict"));
  Py_DECREF(coll);
  if (!g_enum_type || !g_flag_type || !g_dc_fields || !g_odict_type ||
      !g_ddict_type)
    return false;
  g_ddict_factory =
      PyDict_GetItemString(g_ddict_type->tp_dict, "default_factory");
  Py_XINCREF(g_ddict_factory);
  g_str_caudal_key = PyUnicode_InternFromString("__caudal_key__");
  g_str_dc_fields_attr = PyUnicode_InternFromString("__dataclass_fields__");
  g_str_name = PyUnicode_InternFromString("name");
  g_str_enum_name = PyUnicode_InternFromString("_name_");
  g_str_enum_value = PyUnicode_InternFromString("_value_");
  g_str_pydantic_fields = PyUnicode_InternFromString("__pydantic_fields__");
  g_str_pydantic_extra = PyUnicode_InternFromString("__pydantic_extra__");
  g_str_pydantic_private = PyUnicode_InternFromString("__pydantic_private__");
  return g_ddict_factory && g_str_pydantic_private;
}

// ---------------------------------------------------------------------------
// The walk.

class Walker {
 public:
  explicit Walker(KeyHasher& h) : h_(h) {}
  ~Walker() { Clear(); }
  Walker(const Walker&) = delete;
  Walker& operator=(const Walker&) = delete;

  UnkeyableReason Walk(PyObject* v, int depth);

  // Drops the memo (and its references); keeps its buffers.
  void Clear() {
    // Copy first: a __del__ run by a DECREF may key something (it then uses
    // a walker of its own) but must not see this memo half cleared.
    if (memo_.empty()) return;
    std::vector<MemoEntry> entries;
    entries.swap(memo_);
    memo_index_.clear();
    deepest_ = 0;
    // Keep small buffers for the next walk; give back what a huge input took.
    if (arena_.capacity() > kKeepMemoBytes) {
      std::string().swap(arena_);
    } else {
      arena_.clear();
    }
    for (const MemoEntry& e : entries) Py_DECREF(e.obj);
    entries.clear();
    if (memo_.empty() &&
        entries.capacity() * sizeof(MemoEntry) <= kKeepMemoBytes)
      memo_.swap(entries);
  }

 private:
  struct MemoEntry {
    PyObject* obj;
    size_t offset;  // encoding in arena_, once done
    size_t len;
    int height;  // nesting below the object
    bool done;
  };
  static constexpr size_t kLinearMemo = 8;
  static constexpr size_t kKeepMemoBytes = 1 << 20;

  // Keys an exact None, bool, int (64-bit), float or short str inline and
  // returns true; false for anything else (nothing added).
  bool AddScalar(PyObject* v);
  UnkeyableReason WalkShared(PyObject* v, int depth);
  UnkeyableReason WalkFresh(PyObject* v, int depth);
  UnkeyableReason WalkStr(PyObject* v);
  UnkeyableReason WalkInt(PyObject* v);
  UnkeyableReason WalkBigInt(PyObject* exact);
  UnkeyableReason WalkSequence(PyObject* v, bool tuple, int depth);
  UnkeyableReason WalkDict(PyObject* v, int depth);
  bool WalkSmallStrDict(PyObject* d, Py_ssize_t n, int depth,
                        UnkeyableReason* result);
  UnkeyableReason WalkOrderedDict(PyObject* v, int depth);
  UnkeyableReason WalkSet(PyObject* v, int depth);
  UnkeyableReason WalkObject(PyObject* v, PyTypeObject* t, int depth);
  UnkeyableReason WalkVia(PyTypeObject* t, PyObject* rep, int depth);
  UnkeyableReason WalkBuiltinSubclass(PyObject* v, PyTypeObject* t, int depth);
  UnkeyableReason WalkInstanceState(PyObject* v, PyTypeObject* t, int depth);
  UnkeyableReason WalkPydantic(PyObject* v, PyTypeObject* t, int depth);
  UnkeyableReason WalkDataclass(PyObject* v, PyTypeObject* t, int depth);
  // Walks a new reference and releases it.
  UnkeyableReason WalkOwned(PyObject* owned, int depth) {
    UnkeyableReason r = Walk(owned, depth);
    Py_DECREF(owned);
    return r;
  }
  UnkeyableReason WalkBorrowed(PyObject* v, int depth) {
    Py_INCREF(v);
    return WalkOwned(v, depth);
  }

  MemoEntry* FindMemo(PyObject* v) {
    if (memo_.size() <= kLinearMemo) {
      for (MemoEntry& e : memo_)
        if (e.obj == v) return &e;
      return nullptr;
    }
    auto it = memo_index_.find(v);
    return it == memo_index_.end() ? nullptr : &memo_[it->second];
  }

  KeyHasher& h_;
  int deepest_ = 0;
  std::vector<MemoEntry> memo_;
  absl::flat_hash_map<PyObject*, size_t> memo_index_;  // beyond kLinearMemo
  std::string arena_;
};

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
  // Reads the stored characters (never __str__).
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

UnkeyableReason Walker::WalkVia(PyTypeObject* t, PyObject* rep, int depth) {
  char token[16];
  if (UnkeyableReason r = ClassDigest(t, token)) return r;
  h_.BeginObject(absl::string_view(token, 16));
  UnkeyableReason r = Walk(rep, depth + 1);
  if (!r) h_.EndObject();
  return r;
}

UnkeyableReason Walker::WalkObject(PyObject* v, PyTypeObject* t, int depth) {
  // The explicit hook wins over everything else. It must be defined by the
  // class (a __getattr__ that answers every name does not count).
  if (_PyType_Lookup(t, g_str_caudal_key)) {
    PyObject* rep = PyObject_CallMethodNoArgs(v, g_str_caudal_key);
    if (!rep) {
      PyErr_Clear();
      return "a __caudal_key__ hook raised";
    }
    UnkeyableReason r = WalkVia(t, rep, depth);
    Py_DECREF(rep);
    return r;
  }
  // Enums (IntEnum, StrEnum ... too): a member by its name, within its class;
  // a Flag by its value (combinations of flags are members too).
  if (PyType_IsSubtype(t, reinterpret_cast<PyTypeObject*>(g_enum_type))) {
    const bool flag =
        PyType_IsSubtype(t, reinterpret_cast<PyTypeObject*>(g_flag_type));
    PyObject* rep =
        PyObject_GetAttr(v, flag ? g_str_enum_value : g_str_enum_name);
    if (!rep) {
      PyErr_Clear();
      return "enum member without a name";
    }
    UnkeyableReason r = WalkVia(t, rep, depth);
    Py_DECREF(rep);
    return r;
  }
  if (PyLong_Check(v) || PyUnicode_Check(v) || PyFloat_Check(v) ||
      PyBytes_Check(v) || PyByteArray_Check(v) || PyTuple_Check(v) ||
      PyList_Check(v) || PyDict_Check(v) || PyAnySet_Check(v))
    return WalkBuiltinSubclass(v, t, depth);
  // Dataclasses first: pydantic dataclasses are dataclasses.
  if (!PyType_Check(v) && _PyType_Lookup(t, g_str_dc_fields_attr))
    return WalkDataclass(v, t, depth);
  if (_PyType_Lookup(t, g_str_pydantic_fields))
    return WalkPydantic(v, t, depth);
  return kNoStableKey;
}

UnkeyableReason Walker::WalkBuiltinSubclass(PyObject* v, PyTypeObject* t,
                                            int depth) {
  char token[16];
  if (UnkeyableReason r = ClassDigest(t, token)) return r;
  h_.BeginObject(absl::string_view(token, 16));
  // The stored value, as its builtin base type is keyed.
  UnkeyableReason r = nullptr;
  if (PyLong_Check(v)) {
    r = WalkInt(v);
  } else if (PyFloat_Check(v)) {
    h_.AddFloat(PyFloat_AS_DOUBLE(v));
  } else if (PyUnicode_Check(v)) {
    r = WalkStr(v);
  } else if (PyBytes_Check(v)) {
    h_.AddBytes(absl::string_view(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v)));
  } else if (PyByteArray_Check(v)) {
    h_.AddBytes(
        absl::string_view(PyByteArray_AS_STRING(v), PyByteArray_GET_SIZE(v)));
  } else if (PyTuple_Check(v) || PyList_Check(v)) {
    r = WalkSequence(v, PyTuple_Check(v), depth + 1);
  } else if (PyDict_Check(v)) {
    if (PyType_IsSubtype(t, g_odict_type))
      r = WalkOrderedDict(v, depth + 1);
    else
      r = WalkDict(v, depth + 1);
    if (!r && PyType_IsSubtype(t, g_ddict_type)) {
      // A defaultdict's factory decides what a missing key reads as.
      PyObject* f = Py_TYPE(g_ddict_factory)
                        ->tp_descr_get(g_ddict_factory, v,
                                       reinterpret_cast<PyObject*>(t));
      if (!f) {
        PyErr_Clear();
        r = "defaultdict factory could not be read";
      } else if (f == Py_None) {
        h_.AddNone();
      } else if (PyType_Check(f)) {
        char ft[16];
        r = ClassDigest(reinterpret_cast<PyTypeObject*>(f), ft);
        if (!r) h_.AddRaw(kRawClass, absl::string_view(ft, 16));
      } else {
        r = "a defaultdict whose default_factory is not a class";
      }
      Py_XDECREF(f);
    }
  } else {
    r = WalkSet(v, depth + 1);
  }
  if (!r) r = WalkInstanceState(v, t, depth + 1);
  if (!r) h_.EndObject();
  return r;
}

UnkeyableReason Walker::WalkInstanceState(PyObject* v, PyTypeObject* t,
                                          int depth) {
  // Slots declared by the Python classes in the MRO, in MRO order.
  PyObject* mro = t->tp_mro;
  const Py_ssize_t nm = mro && PyTuple_Check(mro) ? PyTuple_GET_SIZE(mro) : 0;
  for (Py_ssize_t i = 0; i < nm; ++i) {
    PyTypeObject* b = reinterpret_cast<PyTypeObject*>(PyTuple_GET_ITEM(mro, i));
    // Only classes with a __slots__ statement (ht_slots); the members of C
    // types (defaultdict's default_factory ...) are theirs to key.
    if (!(b->tp_flags & Py_TPFLAGS_HEAPTYPE) || !b->tp_members ||
        !reinterpret_cast<PyHeapTypeObject*>(b)->ht_slots)
      continue;
    for (PyMemberDef* m = b->tp_members; m->name; ++m) {
      if (m->type != CAUDAL_T_OBJECT_EX && m->type != CAUDAL_T_OBJECT) continue;
      h_.AddString(m->name);
      PyObject* val = PyMember_GetOne(reinterpret_cast<const char*>(v), m);
      if (!val) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
          PyErr_Clear();
          return "a slot could not be read";
        }
        PyErr_Clear();
        h_.AddRaw(kRawUnsetSlot, absl::string_view());
        continue;
      }
      if (UnkeyableReason r = WalkOwned(val, depth)) return r;
    }
  }
  // The instance __dict__, when the class gives its instances one.
  if (t->tp_dictoffset != 0 || (t->tp_flags & Py_TPFLAGS_MANAGED_DICT)) {
    PyObject* d = PyObject_GenericGetDict(v, nullptr);
    if (!d) {
      PyErr_Clear();
      return "instance __dict__ could not be read";
    }
    return WalkOwned(d, depth);
  }
  return nullptr;
}

UnkeyableReason Walker::WalkPydantic(PyObject* v, PyTypeObject* t, int depth) {
  // pydantic v2 models: the values of all declared fields (excluded ones
  // included: exclude= shapes serialisation, not identity), then the extra
  // and private attributes, as pydantic's own equality compares them. Not
  // model_dump(): serialisers may map different values to the same output,
  // and nested models would lose their types.
  PyObject* fields = _PyType_Lookup(t, g_str_pydantic_fields);  // borrowed
  if (!fields || !PyDict_Check(fields)) return kNoStableKey;
  Py_INCREF(fields);
  PyObject* d = PyObject_GenericGetDict(v, nullptr);
  if (!d) {
    PyErr_Clear();
    Py_DECREF(fields);
    return "a pydantic model's fields could not be read";
  }
  char token[16];
  UnkeyableReason r = ClassDigest(t, token);
  if (!r) {
    h_.BeginObject(absl::string_view(token, 16));
    Py_ssize_t pos = 0;
    PyObject *name, *info;
    while (!r && PyDict_Next(fields, &pos, &name, &info)) {
      PyObject* val = PyDict_GetItemWithError(d, name);  // borrowed
      if (!val) {
        PyErr_Clear();
        r = "a pydantic model field is not set";
        break;
      }
      AddUtf8(h_, name);
      r = WalkBorrowed(val, depth + 1);
    }
    for (PyObject* attr : {g_str_pydantic_extra, g_str_pydantic_private}) {
      if (r) break;
      PyObject* extra = PyObject_GetAttr(v, attr);
      if (!extra) {
        PyErr_Clear();
        h_.AddNone();
      } else {
        r = WalkOwned(extra, depth + 1);
      }
    }
    if (!r) h_.EndObject();
  }
  Py_DECREF(d);
  Py_DECREF(fields);
  return r;
}

UnkeyableReason Walker::WalkDataclass(PyObject* v, PyTypeObject* t, int depth) {
  PyObject* fields = PyObject_CallOneArg(g_dc_fields, v);
  if (!fields) {
    PyErr_Clear();
    return "dataclasses.fields() raised";
  }
  char token[16];
  UnkeyableReason r = ClassDigest(t, token);
  if (r) {
    Py_DECREF(fields);
    return r;
  }
  const Py_ssize_t n = PyTuple_GET_SIZE(fields);
  h_.BeginObject(absl::string_view(token, 16));
  h_.BeginTuple(n);
  for (Py_ssize_t i = 0; i < n && !r; ++i) {
    PyObject* fname = PyObject_GetAttr(PyTuple_GET_ITEM(fields, i), g_str_name);
    PyObject* fval = fname ? PyObject_GetAttr(v, fname) : nullptr;
    if (!fname || !fval) {
      PyErr_Clear();
      r = "a dataclass field could not be read";
    } else {
      h_.BeginTuple(2);
      AddUtf8(h_, fname);
      r = Walk(fval, depth + 2);
      if (!r) h_.EndTuple();
    }
    Py_XDECREF(fname);
    Py_XDECREF(fval);
  }
  Py_DECREF(fields);
  if (r) return r;
  h_.EndTuple();
  h_.EndObject();
  return nullptr;
}

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
