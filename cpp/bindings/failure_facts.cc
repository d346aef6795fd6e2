// What a failed attempt's exception says (failure_facts.h).
#include <cstring>
#include <string_view>

#include "engine.h"
#include "py_compat.h"

namespace caudal::bindings {

namespace {

// `getattr(o, name, None)` without the AttributeError: most exceptions
// carry none of the attributes probed here, and raising (and clearing) an
// AttributeError per probe cost more than the rest of a failed attempt.
// New reference, or nullptr when absent (an error raised by a property is
// cleared: a probe never fails).
PyObject* OptionalAttr(PyObject* o, PyObject* name) {
  PyObject* v = nullptr;
  if (compat::GetOptionalAttr(o, name, &v) < 0) {
    PyErr_Clear();
    return nullptr;
  }
  return v;
}

PyObject* Interned(const char* s) { return PyUnicode_InternFromString(s); }

}  // namespace

py::object FeedbackOf(py::handle exc) {
  py::str type_name = py::type::of(exc).attr("__name__");
  // Called once the execution has ended: a __str__ that raises must not
  // escape from here.
  PyObject* m = PyObject_Str(exc.ptr());
  if (m == nullptr) PyErr_Clear();
  py::str msg = m != nullptr ? py::reinterpret_steal<py::str>(m)
                             : py::str("<unprintable>");
  if (PyUnicode_GetLength(msg.ptr()) == 0) return std::move(type_name);
  return py::str("{}: {}").format(type_name, msg);
}

bool IsClientTransportError(PyObject* exc) {
  return IsClientTransportType(Py_TYPE(exc));
}

bool IsClientTransportType(PyTypeObject* tp) {
  struct Family {
    const char* module;  // the class's __module__, or a prefix + '.'
    const char* name;
  };
  static constexpr Family kFamilies[] = {
      {"httpx", "TransportError"},  // ConnectError, timeouts, NetworkError
      {"aiohttp", "ClientConnectionError"},
      {"requests", "ConnectionError"},
      {"requests", "Timeout"},
      {"openai", "APIConnectionError"},  // APITimeoutError too
      {"anthropic", "APIConnectionError"},
  };
  PyObject* mro = tp->tp_mro;
  if (mro == nullptr || !PyTuple_Check(mro)) return false;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); ++i) {
    auto* t = reinterpret_cast<PyTypeObject*>(PyTuple_GET_ITEM(mro, i));
    if (t == reinterpret_cast<PyTypeObject*>(PyExc_Exception)) break;
    std::string_view module, name;
    if (t->tp_flags & Py_TPFLAGS_HEAPTYPE) {  // a class written in Python
      name = t->tp_name;                      // __name__ for heap types
      bool known = false;
      for (const Family& f : kFamilies) known = known || name == f.name;
      if (!known || t->tp_dict == nullptr) continue;  // most classes
      static PyObject* const module_key =
          PyUnicode_InternFromString("__module__");
      PyObject* m = PyDict_GetItemWithError(t->tp_dict, module_key);
      const char* mod =
          m != nullptr && PyUnicode_Check(m) ? PyUnicode_AsUTF8(m) : nullptr;
      if (mod == nullptr) {
        PyErr_Clear();
        continue;
      }
      module = mod;
    } else {  // a static type: tp_name is "module.Name"
      const char* dot = std::strrchr(t->tp_name, '.');
      if (dot == nullptr) continue;
      module =
          std::string_view(t->tp_name, static_cast<size_t>(dot - t->tp_name));
      name = dot + 1;
    }
    for (const Family& f : kFamilies) {
      const std::string_view fm(f.module);
      if (name == f.name &&
          (module == fm ||
           (module.size() > fm.size() && module.substr(0, fm.size()) == fm &&
            module[fm.size()] == '.')))
        return true;
    }
  }
  return false;
}

std::string HeaderValue(PyObject* headers, const char* name) {
  PyObject* v = PyObject_CallMethod(headers, "get", "s", name);
  if (v == nullptr) {
    PyErr_Clear();
    return std::string();
  }
  std::string out;
  if (PyUnicode_Check(v)) {
    Py_ssize_t n = 0;
    const char* c = PyUnicode_AsUTF8AndSize(v, &n);
    if (c != nullptr && n <= 256) out.assign(c, static_cast<size_t>(n));
    if (c == nullptr) PyErr_Clear();
  }
  Py_DECREF(v);
  return out;
}

void RetryHeaders(PyObject* exc, PyObject* resp, std::string* ra,
                  std::string* ra_ms) {
  for (PyObject* holder : {resp, exc}) {
    if (holder == nullptr || holder == Py_None) continue;
    static PyObject* const name = Interned("headers");
    PyObject* headers = OptionalAttr(holder, name);
    if (headers == nullptr) continue;
    if (headers != Py_None) {
      *ra = HeaderValue(headers, "retry-after");
      *ra_ms = HeaderValue(headers, "retry-after-ms");
    }
    Py_DECREF(headers);
    return;
  }
}

TypeFacts FactsOfType(PyTypeObject* tp) {
  // One entry per thread, keyed by the type's version tag: it changes when
  // the type or any of its bases is modified (attributes, __bases__), and
  // is never reused by another type.
  struct Last {
    PyTypeObject* type;
    unsigned int version;
    TypeFacts facts;
  };
  static thread_local Last last __attribute__((tls_model("initial-exec"))) = {};
  if (last.type == tp && last.version != 0 &&
      last.version == tp->tp_version_tag)
    return last.facts;
  static auto* overloaded = reinterpret_cast<PyTypeObject*>(
      CaudalAttr("caudal.errors", "OverloadedError").release().ptr());
  static auto* permanent = reinterpret_cast<PyTypeObject*>(
      CaudalAttr("caudal.errors", "PermanentError").release().ptr());
  static auto* worker_died = reinterpret_cast<PyTypeObject*>(
      CaudalAttr("caudal.errors", "RemoteWorkerDiedError").release().ptr());
  static PyObject* const probed[] = {
      Interned("retry_after"), Interned("status_code"), Interned("status"),
      Interned("response"), Interned("headers")};
  auto type = [](PyObject* t) { return reinterpret_cast<PyTypeObject*>(t); };
  TypeFacts f;
  // As PyErr_GivenExceptionMatches decides for an instance: by the MRO.
  f.overload = PyType_IsSubtype(tp, overloaded) != 0;
  f.permanent = PyType_IsSubtype(tp, permanent) != 0;
  f.worker_lost = PyType_IsSubtype(tp, worker_died) != 0;
  f.network = PyType_IsSubtype(tp, type(PyExc_TimeoutError)) ||
              PyType_IsSubtype(tp, type(PyExc_ConnectionError)) ||
              IsClientTransportType(tp);
  f.plain = tp->tp_getattro == PyObject_GenericGetAttr;
  for (PyObject* name : probed) {
    if (f.plain && _PyType_Lookup(tp, name) != nullptr) f.plain = false;
  }
  last.type = tp;
  last.facts = f;
  last.version = compat::AssignVersionTag(tp) ? tp->tp_version_tag : 0;
  return f;
}

bool HasOwnAttributes(PyObject* exc) {
  PyObject* d = reinterpret_cast<PyBaseExceptionObject*>(exc)->dict;
  return d != nullptr && PyDict_GET_SIZE(d) != 0;
}

void ClassifyFailure(py::handle exc, AttemptError* err,
                     std::string* retry_after, std::string* retry_after_ms) {
  PyObject* e = exc.ptr();
  const bool instance = PyExceptionInstance_Check(e);
  const TypeFacts f = instance ? FactsOfType(Py_TYPE(e)) : TypeFacts{};
  // Nothing to probe: every probed name is absent from the type (plain
  // attribute lookup) and the instance has no attributes of its own.
  const bool bare = instance && f.plain && !HasOwnAttributes(e);
  err->permanent = f.permanent;
  err->worker_lost = f.worker_lost;
  if (!bare) err->retry_after_s = RetryAfterHint(exc);
  if (f.overload) {
    err->overload = true;
    return;
  }
  err->network_error = instance ? f.network : IsClientTransportError(e);
  if (bare) return;
  static PyObject* const names[] = {Interned("status_code"),
                                    Interned("status")};
  auto status_of = [](PyObject* o) -> long {
    for (PyObject* name : names) {
      PyObject* v = OptionalAttr(o, name);
      if (v == nullptr) continue;
      long code = -1;
      if (PyLong_Check(v) && !PyBool_Check(v)) code = PyLong_AsLong(v);
      Py_DECREF(v);
      if (code == -1) PyErr_Clear();
      if (code > 0) return code;
    }
    return -1;
  };
  long code = status_of(exc.ptr());
  static PyObject* const response = Interned("response");
  PyObject* resp = OptionalAttr(exc.ptr(), response);
  if (code < 0 && resp != nullptr && resp != Py_None) code = status_of(resp);
  if (code >= 100 && code <= 999) {
    err->http_status = static_cast<int>(code);
    // Only an HTTP error carries the headers worth a look.
    RetryHeaders(exc.ptr(), resp, retry_after, retry_after_ms);
  }
  Py_XDECREF(resp);
}

bool Matches(const py::object& spec, py::handle exc, bool if_none) {
  if (!spec || spec.is_none()) return if_none;
  if (PyTuple_Check(spec.ptr()) || PyType_Check(spec.ptr())) {
    return PyErr_GivenExceptionMatches(exc.ptr(), spec.ptr()) != 0;
  }
  py::object r = spec(exc);  // a predicate; its exception propagates
  return r.cast<bool>();
}

absl::string_view QualifiedTypeName(py::handle exc) {
  // One entry per thread: a retried step raises the same type again and
  // again. The key: the type's version tag (never reused; assigning
  // __module__ gives the type a new one) and, for a class written in
  // Python, its __qualname__ object (assigning it does not change the
  // tag), held so that its address cannot be reused while cached. Plain
  // data in initial-exec TLS: no __tls_get_addr call, no destructor (the
  // held name leaks at thread exit).
  struct Last {
    PyTypeObject* type;
    unsigned int version;
    PyObject* qualname;  // strong
    size_t len;
    char name[200];
  };
  static thread_local Last last __attribute__((tls_model("initial-exec"))) = {};
  PyTypeObject* tp = Py_TYPE(exc.ptr());
  PyObject* qualname =
      (tp->tp_flags & Py_TPFLAGS_HEAPTYPE)
          ? reinterpret_cast<PyHeapTypeObject*>(tp)->ht_qualname
          : nullptr;
  if (last.type == tp && last.version != 0 &&
      last.version == tp->tp_version_tag && last.qualname == qualname)
    return absl::string_view(last.name, last.len);
  py::handle t(reinterpret_cast<PyObject*>(tp));
  std::string mod = py::str(t.attr("__module__"));
  std::string qn = py::str(t.attr("__qualname__"));
  if (mod.size() + 1 + qn.size() > sizeof(last.name)) {
    // Too long for the entry (rare): not cached.
    static thread_local std::string long_name;
    long_name = mod + "." + qn;
    last.version = 0;
    return long_name;
  }
  char* p = last.name;
  std::memcpy(p, mod.data(), mod.size());
  p[mod.size()] = '.';
  std::memcpy(p + mod.size() + 1, qn.data(), qn.size());
  last.len = mod.size() + 1 + qn.size();
  last.type = tp;
  Py_XINCREF(qualname);
  Py_XSETREF(last.qualname, qualname);
  last.version = compat::AssignVersionTag(tp) ? tp->tp_version_tag : 0;
  return absl::string_view(last.name, last.len);
}

absl::string_view StrView(py::handle exc, py::object* holder) {
  PyObject* e = exc.ptr();
  PyObject* s = nullptr;
  // BaseException's own str() (a type that does not override __str__) of
  // an exception made with one str argument is that argument: read it
  // without the call (the common `raise ValueError("...")`).
  if (PyExceptionInstance_Check(e) &&
      Py_TYPE(e)->tp_str ==
          reinterpret_cast<PyTypeObject*>(PyExc_BaseException)->tp_str) {
    PyObject* args = reinterpret_cast<PyBaseExceptionObject*>(e)->args;
    if (args != nullptr && PyTuple_CheckExact(args) &&
        PyTuple_GET_SIZE(args) == 1 &&
        PyUnicode_CheckExact(PyTuple_GET_ITEM(args, 0))) {
      s = Py_NewRef(PyTuple_GET_ITEM(args, 0));
    }
  }
  if (s == nullptr) s = PyObject_Str(e);
  if (s == nullptr) {
    PyErr_Clear();
    return "<unprintable>";
  }
  *holder = py::reinterpret_steal<py::object>(s);
  Py_ssize_t n = 0;
  // A compact ASCII str is its own UTF-8; any other keeps the encoding it
  // makes (once) with the object.
  const char* c = PyUnicode_AsUTF8AndSize(s, &n);
  if (c == nullptr) {
    PyErr_Clear();
    return "<unprintable>";
  }
  return absl::string_view(c, static_cast<size_t>(n));
}

absl::optional<double> RetryAfterHint(py::handle exc) {
  static PyObject* const name = Interned("retry_after");
  PyObject* v = OptionalAttr(exc.ptr(), name);
  if (!v) return absl::nullopt;
  absl::optional<double> out;
  if ((PyFloat_Check(v) || PyLong_Check(v)) && !PyBool_Check(v)) {
    const double d = PyFloat_AsDouble(v);
    if (!PyErr_Occurred() && d >= 0) out = d;
    PyErr_Clear();
  }
  Py_DECREF(v);
  return out;
}

}  // namespace caudal::bindings
