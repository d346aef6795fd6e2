#include "key_walk.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace caudal::bindings {
namespace {

constexpr int kMaxDepth = 64;

PyObject* g_enum_type = nullptr;  // enum.Enum
PyObject* g_dc_fields = nullptr;  // dataclasses.fields
PyObject* g_str_model_dump = nullptr;
PyObject* g_str_caudal_key = nullptr;
PyObject* g_str_dc_fields_attr = nullptr;
PyObject* g_str_name = nullptr;
PyObject* g_str_value = nullptr;
PyObject* g_str_pydantic_fields = nullptr;

bool InitGlobals() {
  if (g_enum_type) return true;
  PyObject* enum_mod = PyImport_ImportModule("enum");
  if (!enum_mod) return false;
  g_enum_type = PyObject_GetAttrString(enum_mod, "Enum");
  Py_DECREF(enum_mod);
  PyObject* dc = PyImport_ImportModule("dataclasses");
  if (!dc) return false;
  g_dc_fields = PyObject_GetAttrString(dc, "fields");
  Py_DECREF(dc);
  g_str_model_dump = PyUnicode_InternFromString("model_dump");
  g_str_caudal_key = PyUnicode_InternFromString("__caudal_key__");
  g_str_dc_fields_attr = PyUnicode_InternFromString("__dataclass_fields__");
  g_str_name = PyUnicode_InternFromString("name");
  g_str_value = PyUnicode_InternFromString("value");
  g_str_pydantic_fields = PyUnicode_InternFromString("__pydantic_fields__");
  return g_enum_type && g_dc_fields && g_str_model_dump && g_str_caudal_key;
}

// module.qualname of the type, for object tokens.
std::string TypeName(PyTypeObject* t) {
  std::string out;
  PyObject* mod =
      PyObject_GetAttrString(reinterpret_cast<PyObject*>(t), "__module__");
  if (mod && PyUnicode_Check(mod)) {
    out = PyUnicode_AsUTF8(mod);
    out += ".";
  }
  Py_XDECREF(mod);
  PyErr_Clear();
  PyObject* qn =
      PyObject_GetAttrString(reinterpret_cast<PyObject*>(t), "__qualname__");
  if (qn && PyUnicode_Check(qn))
    out += PyUnicode_AsUTF8(qn);
  else
    out += t->tp_name;
  Py_XDECREF(qn);
  PyErr_Clear();
  return out;
}

UnkeyableReason Walk(PyObject* v, KeyHasher& h, int depth);

// Small dicts whose keys are all str (records, kwargs, JSON objects) are
// keyed in sorted key order as one ordered token sequence: as insensitive to
// insertion order as the general unordered fold, without its per-item hash.
// Equal dicts have the same size and keys, so both always take the same
// path. The token ("builtins.dict#sorted", a name no Python type can have)
// keeps them apart from every list, tuple and object.
constexpr Py_ssize_t kSortedDictMax = 8;

bool WalkSmallStrDict(PyObject* d, Py_ssize_t n, KeyHasher& h, int depth,
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
  h.BeginObject("builtins.dict#sorted");
  h.BeginTuple(2 * i);  // key, value, key, value ... in key order
  UnkeyableReason r = nullptr;
  Py_ssize_t k = 0;
  for (; k < i && !r; ++k) {
    h.AddString(absl::string_view(items[k].key, items[k].len));
    r = Walk(items[k].value, h, depth + 1);
  }
  for (Py_ssize_t j = 0; j < i; ++j) Py_DECREF(items[j].value);
  if (!r) {
    h.EndTuple();
    h.EndObject();
  }
  *result = r;
  return true;
}

UnkeyableReason WalkBigInt(PyObject* v, KeyHasher& h) {
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
  h.AddBigInt(
      absl::string_view(PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes)),
      negative == 1);
  Py_DECREF(bytes);
  return nullptr;
}

UnkeyableReason WalkObjectVia(PyObject* v, PyObject* replacement, KeyHasher& h,
                              int depth) {
  h.BeginObject(TypeName(Py_TYPE(v)));
  UnkeyableReason r = Walk(replacement, h, depth + 1);
  h.EndObject();
  return r;
}

UnkeyableReason Walk(PyObject* v, KeyHasher& h, int depth) {
  if (depth > kMaxDepth) return "nested too deeply (or recursive)";
  PyTypeObject* t = Py_TYPE(v);
  if (v == Py_None) {
    h.AddNone();
    return nullptr;
  }
  if (t == &PyBool_Type) {
    h.AddBool(v == Py_True);
    return nullptr;
  }
  if (t == &PyLong_Type) {
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (!overflow) {
      h.AddInt(x);
      return nullptr;
    }
    return WalkBigInt(v, h);
  }
  if (t == &PyUnicode_Type) {
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(v, &n);
    if (!s) {  // lone surrogates: key the code points losslessly instead
      PyErr_Clear();
      PyObject* b = PyUnicode_AsEncodedString(v, "utf-8", "surrogatepass");
      if (!b) {
        PyErr_Clear();
        return "str could not be encoded";
      }
      h.AddString(absl::string_view(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b)));
      Py_DECREF(b);
      return nullptr;
    }
    h.AddString(absl::string_view(s, n));
    return nullptr;
  }
  if (t == &PyFloat_Type) {
    h.AddFloat(PyFloat_AS_DOUBLE(v));
    return nullptr;
  }
  if (t == &PyTuple_Type || t == &PyList_Type) {
    const bool tuple = t == &PyTuple_Type;
    const Py_ssize_t n = tuple ? PyTuple_GET_SIZE(v) : PyList_GET_SIZE(v);
    tuple ? h.BeginTuple(n) : h.BeginList(n);
    for (Py_ssize_t i = 0; i < n; ++i) {
      if (!tuple && PyList_GET_SIZE(v) != n)
        return "list changed while being keyed";
      PyObject* item = tuple ? PyTuple_GET_ITEM(v, i) : PyList_GET_ITEM(v, i);
      Py_INCREF(item);
      UnkeyableReason r = Walk(item, h, depth + 1);
      Py_DECREF(item);
      if (r) return r;
    }
    tuple ? h.EndTuple() : h.EndList();
    return nullptr;
  }
  if (t == &PyDict_Type) {
    const Py_ssize_t n = PyDict_GET_SIZE(v);
    if (n <= kSortedDictMax) {
      UnkeyableReason r = nullptr;
      if (WalkSmallStrDict(v, n, h, depth, &r)) return r;
    }
    h.BeginDict(n);
    Py_ssize_t pos = 0;
    PyObject *key, *val;
    while (PyDict_Next(v, &pos, &key, &val)) {
      Py_INCREF(key);
      Py_INCREF(val);
      UnkeyableReason r = Walk(key, h, depth + 1);
      if (!r) r = Walk(val, h, depth + 1);
      Py_DECREF(key);
      Py_DECREF(val);
      if (r) return r;
      if (PyDict_GET_SIZE(v) != n) return "dict changed while being keyed";
    }
    h.EndDict();
    return nullptr;
  }
  if (t == &PyBytes_Type) {
    h.AddBytes(absl::string_view(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v)));
    return nullptr;
  }
  if (t == &PySet_Type || t == &PyFrozenSet_Type) {
    h.BeginSet(PySet_GET_SIZE(v), t == &PyFrozenSet_Type);
    PyObject* it = PyObject_GetIter(v);
    if (!it) {
      PyErr_Clear();
      return "set could not be iterated";
    }
    PyObject* item;
    UnkeyableReason r = nullptr;
    while (!r && (item = PyIter_Next(it))) {
      r = Walk(item, h, depth + 1);
      Py_DECREF(item);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
      PyErr_Clear();
      return "set changed while being keyed";
    }
    if (r) return r;
    h.EndSet();
    return nullptr;
  }
  if (t == &PyByteArray_Type) {
    h.BeginObject("builtins.bytearray");
    h.AddBytes(
        absl::string_view(PyByteArray_AS_STRING(v), PyByteArray_GET_SIZE(v)));
    h.EndObject();
    return nullptr;
  }
  if (!InitGlobals()) {
    PyErr_Clear();
    return "key walker could not initialise";
  }
  // The explicit hook wins over everything else.
  PyObject* hook = PyObject_GetAttr(v, g_str_caudal_key);
  if (hook) {
    PyObject* rep = PyObject_CallNoArgs(hook);
    Py_DECREF(hook);
    if (!rep) {
      PyErr_Clear();
      return "a __caudal_key__ hook raised";
    }
    UnkeyableReason r = WalkObjectVia(v, rep, h, depth);
    Py_DECREF(rep);
    return r;
  }
  PyErr_Clear();
  // Subclasses of the builtins (int/str/... subclasses, IntEnum): enums first.
  const int is_enum = PyObject_IsInstance(v, g_enum_type);
  if (is_enum == 1) {
    PyObject* name = PyObject_GetAttr(v, g_str_name);
    if (!name) {
      PyErr_Clear();
      return "enum member without a name";
    }
    UnkeyableReason r = WalkObjectVia(v, name, h, depth);
    Py_DECREF(name);
    return r;
  }
  PyErr_Clear();
  // pydantic v2 models.
  if (PyObject_HasAttr(reinterpret_cast<PyObject*>(t), g_str_pydantic_fields)) {
    PyObject* dumped = PyObject_CallMethodNoArgs(v, g_str_model_dump);
    if (!dumped) {
      PyErr_Clear();
      return "a pydantic model_dump() raised";
    }
    UnkeyableReason r = WalkObjectVia(v, dumped, h, depth);
    Py_DECREF(dumped);
    return r;
  }
  // Dataclass instances (not the classes themselves).
  if (!PyType_Check(v) &&
      PyObject_HasAttr(reinterpret_cast<PyObject*>(t), g_str_dc_fields_attr)) {
    PyObject* fields = PyObject_CallOneArg(g_dc_fields, v);
    if (!fields) {
      PyErr_Clear();
      return "dataclasses.fields() raised";
    }
    const Py_ssize_t n = PyTuple_GET_SIZE(fields);
    h.BeginObject(TypeName(t));
    h.BeginTuple(n);
    UnkeyableReason r = nullptr;
    for (Py_ssize_t i = 0; i < n && !r; ++i) {
      PyObject* fname =
          PyObject_GetAttr(PyTuple_GET_ITEM(fields, i), g_str_name);
      PyObject* fval = fname ? PyObject_GetAttr(v, fname) : nullptr;
      if (!fname || !fval) {
        PyErr_Clear();
        r = "a dataclass field could not be read";
      } else {
        h.BeginTuple(2);
        r = Walk(fname, h, depth + 1);
        if (!r) r = Walk(fval, h, depth + 1);
        h.EndTuple();
      }
      Py_XDECREF(fname);
      Py_XDECREF(fval);
    }
    Py_DECREF(fields);
    if (r) return r;
    h.EndTuple();
    h.EndObject();
    return nullptr;
  }
  PyErr_Clear();
  // Subclasses of builtin value types key as their base value, typed.
  if (PyLong_Check(v) || PyUnicode_Check(v) || PyFloat_Check(v) ||
      PyBytes_Check(v) || PyTuple_Check(v)) {
    PyObject* base = nullptr;
    if (PyLong_Check(v))
      base = PyNumber_Long(v);
    else if (PyUnicode_Check(v))
      base = PyObject_Str(v);
    else if (PyFloat_Check(v))
      base = PyFloat_FromDouble(PyFloat_AS_DOUBLE(v));
    else if (PyBytes_Check(v))
      base =
          PyBytes_FromStringAndSize(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
    else
      base = PySequence_Tuple(v);
    if (!base) {
      PyErr_Clear();
      return "value of a builtin subclass could not be read";
    }
    UnkeyableReason r = WalkObjectVia(v, base, h, depth);
    Py_DECREF(base);
    return r;
  }
  return "type has no stable key (use keyable data, or add __caudal_key__)";
}

}  // namespace

UnkeyableReason WalkValue(PyObject* value, KeyHasher& h) {
  return Walk(value, h, 0);
}

UnkeyableReason KeyOf(const char* ns, Py_ssize_t ns_len, PyObject* value,
                      PyObject* extra, Key128* out) {
  // One hasher per thread, reached through an initial-exec TLS pointer: a
  // thread_local object in a shared library costs a __tls_get_addr call per
  // access (measured at ~5% of a cache hit); the pointer needs 8 bytes of
  // static TLS. The hasher itself is never freed (one per thread).
  static thread_local KeyHasher* tls_hasher
      __attribute__((tls_model("initial-exec"))) = nullptr;
  if (tls_hasher == nullptr) tls_hasher = new KeyHasher();
  KeyHasher& h = *tls_hasher;
  h.Reset();
  h.AddString(absl::string_view(ns, ns_len));
  UnkeyableReason r = Walk(value, h, 0);
  if (!r && extra) r = Walk(extra, h, 0);
  if (r) return r;
  *out = h.Finish();
  if (!h.ok()) return "internal: key stream misuse";
  return nullptr;
}

}  // namespace caudal::bindings
