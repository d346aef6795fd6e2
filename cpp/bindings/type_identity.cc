#include "type_identity.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "caudal/hash/key_hasher.h"

namespace caudal::bindings {
namespace {

PyObject* g_str_annotations = nullptr;
PyObject* g_str_module = nullptr;
PyObject* g_str_qualname = nullptr;

struct IdentityRecord {
  PyObject* owner = nullptr;  // weak reference to the class holding the digest
  bool ambiguous = false;
};

struct TypeEntry {
  PyObject* weakref = nullptr;  // nullptr for static types
  char digest[16];
  std::shared_ptr<IdentityRecord> record;  // nullptr for static types
};

// Never freed: they hold Python references and must not be destroyed at exit.
absl::flat_hash_map<PyTypeObject*, TypeEntry>* g_types = nullptr;
absl::flat_hash_map<std::string, std::shared_ptr<IdentityRecord>>*
    g_identities = nullptr;
size_t g_types_sweep_at = 256;

// New reference to the target of a weak reference, or nullptr if it died.
PyObject* WeakTarget(PyObject* ref) {
#if PY_VERSION_HEX >= 0x030D0000
  PyObject* obj = nullptr;
  if (PyWeakref_GetRef(ref, &obj) < 0) PyErr_Clear();
  return obj;
#else
  PyObject* obj = PyWeakref_GetObject(ref);
  if (obj == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  if (obj == Py_None) return nullptr;
  Py_INCREF(obj);
  return obj;
#endif
}

bool WeakIs(PyObject* ref, PyObject* target) {
  PyObject* obj = WeakTarget(ref);
  Py_XDECREF(obj);
  return obj == target;
}

// module.qualname of a class (for the digest; never raises).
std::string TypeName(PyTypeObject* t) {
  std::string out;
  PyObject* mod =
      PyObject_GetAttr(reinterpret_cast<PyObject*>(t), g_str_module);
  if (mod && PyUnicode_Check(mod)) {
    const char* s = PyUnicode_AsUTF8(mod);
    if (s) out = s;
    out += ".";
  }
  Py_XDECREF(mod);
  PyErr_Clear();
  PyObject* qn =
      PyObject_GetAttr(reinterpret_cast<PyObject*>(t), g_str_qualname);
  const char* q = qn && PyUnicode_Check(qn) ? PyUnicode_AsUTF8(qn) : nullptr;
  out += q ? q : t->tp_name;
  Py_XDECREF(qn);
  PyErr_Clear();
  return out;
}

void AddAnnotation(KeyHasher& h, PyObject* a) {
  if (PyUnicode_Check(a)) {
    AddUtf8(h, a);
  } else if (PyType_Check(a)) {
    h.AddString(TypeName(reinterpret_cast<PyTypeObject*>(a)));
  } else {
    PyObject* r = PyObject_Repr(a);
    if (r) {
      AddUtf8(h, r);
      Py_DECREF(r);
    } else {
      PyErr_Clear();
      h.AddNone();
    }
  }
}

const char* TypeDigest(PyTypeObject* t, char out[16],
                       bool refuse_ambiguous = true);

const char* ComputeDigest(PyTypeObject* t, char out[16]) {
  KeyHasher fh;
  const bool heap = (t->tp_flags & Py_TPFLAGS_HEAPTYPE) != 0;
  fh.AddString(heap ? "class" : "static class");
  fh.AddString(TypeName(t));
  if (heap) {
    // Bases, by their own digests.
    PyObject* bases = t->tp_bases;
    const Py_ssize_t nb =
        bases && PyTuple_Check(bases) ? PyTuple_GET_SIZE(bases) : 0;
    fh.BeginTuple(static_cast<size_t>(nb));
    for (Py_ssize_t i = 0; i < nb; ++i) {
      char d[16];
      const char* r = TypeDigest(
          reinterpret_cast<PyTypeObject*>(PyTuple_GET_ITEM(bases, i)), d,
          /*refuse_ambiguous=*/false);
      if (r) return r;
      fh.AddBytes(absl::string_view(d, 16));
    }
    fh.EndTuple();
    // The names of its own namespace, sorted.
    std::vector<std::string> names;
    PyObject* dict = t->tp_dict;
    if (dict && PyDict_Check(dict)) {
      Py_ssize_t pos = 0;
      PyObject *k, *v;
      while (PyDict_Next(dict, &pos, &k, &v)) {
        Py_ssize_t n = 0;
        const char* s =
            PyUnicode_Check(k) ? PyUnicode_AsUTF8AndSize(k, &n) : nullptr;
        if (!s) {
          PyErr_Clear();
          continue;
        }
        names.emplace_back(s, n);
      }
    }
    std::sort(names.begin(), names.end());
    fh.BeginList(names.size());
    for (const std::string& n : names) fh.AddString(n);
    fh.EndList();
    // Its own annotations, in order (the fields of dataclasses and models).
    PyObject* ann =
        PyObject_GetAttr(reinterpret_cast<PyObject*>(t), g_str_annotations);
    if (ann && PyDict_Check(ann)) {
      fh.BeginList(static_cast<size_t>(2 * PyDict_GET_SIZE(ann)));
      Py_ssize_t pos = 0;
      PyObject *k, *v;
      while (PyDict_Next(ann, &pos, &k, &v)) {
        AddUtf8(fh, k);
        AddAnnotation(fh, v);
      }
      fh.EndList();
    } else {
      fh.AddNone();
    }
    Py_XDECREF(ann);
    PyErr_Clear();
  }
  const Key128 k = fh.Finish();
  if (!fh.ok()) return "internal: class digest misuse";
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<char>((k.lo >> (8 * i)) & 0xff);
    out[8 + i] = static_cast<char>((k.hi >> (8 * i)) & 0xff);
  }
  return nullptr;
}

void SweepDeadTypes() {
  for (auto it = g_types->begin(); it != g_types->end();) {
    PyObject* ref = it->second.weakref;
    if (ref && !WeakIs(ref, reinterpret_cast<PyObject*>(it->first))) {
      Py_DECREF(ref);
      g_types->erase(it++);
    } else {
      ++it;
    }
  }
  g_types_sweep_at = std::max<size_t>(256, 2 * g_types->size());
}

// The digest naming class `t` in object tokens, or why it has none (when
// `refuse_ambiguous`, a class sharing its digest with another live class has
// none).
const char* TypeDigest(PyTypeObject* t, char out[16], bool refuse_ambiguous) {
  if (!g_types) {
    g_types = new absl::flat_hash_map<PyTypeObject*, TypeEntry>();
    g_identities =
        new absl::flat_hash_map<std::string, std::shared_ptr<IdentityRecord>>();
  }
  auto it = g_types->find(t);
  if (it != g_types->end()) {
    TypeEntry& e = it->second;
    if (!e.weakref || WeakIs(e.weakref, reinterpret_cast<PyObject*>(t))) {
      if (refuse_ambiguous && e.record && e.record->ambiguous)
        return "another live class has the same module, qualified name and "
               "definition";
      std::memcpy(out, e.digest, 16);
      return nullptr;
    }
    // A freed class's address, reused by a new class.
    Py_DECREF(e.weakref);
    g_types->erase(it);
  }
  if (g_types->size() >= g_types_sweep_at) SweepDeadTypes();
  char digest[16];
  const char* r = ComputeDigest(t, digest);
  if (r) return r;
  TypeEntry entry;
  std::memcpy(entry.digest, digest, 16);
  if (t->tp_flags & Py_TPFLAGS_HEAPTYPE) {
    entry.weakref = PyWeakref_NewRef(reinterpret_cast<PyObject*>(t), nullptr);
    if (!entry.weakref) {
      PyErr_Clear();
      return "class cannot be referenced weakly";
    }
    std::shared_ptr<IdentityRecord>& rec =
        (*g_identities)[std::string(digest, 16)];
    if (!rec) rec = std::make_shared<IdentityRecord>();
    PyObject* owner = rec->owner ? WeakTarget(rec->owner) : nullptr;
    if (owner == nullptr) {
      Py_XDECREF(rec->owner);
      rec->owner = entry.weakref;
      Py_INCREF(entry.weakref);
    } else if (owner != reinterpret_cast<PyObject*>(t)) {
      rec->ambiguous = true;
    }
    Py_XDECREF(owner);
    entry.record = rec;
  }
  const bool ambiguous =
      refuse_ambiguous && entry.record && entry.record->ambiguous;
  (*g_types)[t] = std::move(entry);
  if (ambiguous)
    return "another live class has the same module, qualified name and "
           "definition";
  std::memcpy(out, digest, 16);
  return nullptr;
}

}  // namespace

void AddUtf8(KeyHasher& h, PyObject* s) {
  Py_ssize_t n = 0;
  const char* p = PyUnicode_Check(s) ? PyUnicode_AsUTF8AndSize(s, &n) : nullptr;
  if (p) {
    h.AddString(absl::string_view(p, n));
  } else {
    PyErr_Clear();
    h.AddNone();
  }
}

const char* ClassDigest(PyTypeObject* t, char out[16], bool refuse_ambiguous) {
  if (!g_str_qualname) {
    g_str_annotations = PyUnicode_InternFromString("__annotations__");
    g_str_module = PyUnicode_InternFromString("__module__");
    g_str_qualname = PyUnicode_InternFromString("__qualname__");
    if (!g_str_annotations || !g_str_module || !g_str_qualname) {
      PyErr_Clear();
      return "key walker could not initialise";
    }
  }
  return TypeDigest(t, out, refuse_ambiguous);
}

}  // namespace caudal::bindings
