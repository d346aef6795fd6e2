// The key walk of objects: a class's own __caudal_key__ hook, enum members,
// subclasses of builtins (the stored value, then __slots__ and __dict__),
// dataclasses and pydantic models, each keyed within its class's digest
// (type_identity.h). The rules are in key_walk.h; the design note is at the
// top of key_walk.cc.
#include <Python.h>

#include "key_walker.h"
#include "type_identity.h"

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define CAUDAL_T_OBJECT_EX T_OBJECT_EX
#define CAUDAL_T_OBJECT T_OBJECT
#else
#define CAUDAL_T_OBJECT_EX Py_T_OBJECT_EX
#define CAUDAL_T_OBJECT _Py_T_OBJECT
#endif

namespace caudal::bindings::key_walk_internal {

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

}  // namespace caudal::bindings::key_walk_internal
