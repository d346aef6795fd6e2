// The CPython C API calls caudal uses that not every supported version
// (3.11 to 3.13) has, each with what the older versions offer instead.
#ifndef CAUDAL_BINDINGS_PY_COMPAT_H_
#define CAUDAL_BINDINGS_PY_COMPAT_H_

#include <Python.h>

namespace caudal::bindings::compat {

// PyObject_GetOptionalAttr (3.13): 1 and a new reference in *out when the
// attribute exists, 0 and nullptr when it does not (no AttributeError
// raised), -1 on another error. 3.11 and 3.12 have it as
// _PyObject_LookupAttr, with the same contract.
inline int GetOptionalAttr(PyObject* o, PyObject* name, PyObject** out) {
#if PY_VERSION_HEX >= 0x030D0000
  return PyObject_GetOptionalAttr(o, name, out);
#else
  return _PyObject_LookupAttr(o, name, out);
#endif
}

// PyUnstable_Type_AssignVersionTag (3.12): gives `tp` a valid
// tp_version_tag if it can; nonzero when it has one. On 3.11 a method-cache
// lookup assigns the tag as a side effect, and a flag says it is valid.
inline int AssignVersionTag(PyTypeObject* tp) {
#if PY_VERSION_HEX >= 0x030C0000
  return PyUnstable_Type_AssignVersionTag(tp);
#else
  static PyObject* const probe =
      PyUnicode_InternFromString("__caudal_version_tag__");
  (void)_PyType_Lookup(tp, probe);
  return PyType_HasFeature(tp, Py_TPFLAGS_VALID_VERSION_TAG);
#endif
}

// PyErr_GetRaisedException (3.12): the exception being raised, normalized,
// with its traceback, as a new reference (nullptr when none); the error
// indicator is cleared.
inline PyObject* TakeRaisedException() {
#if PY_VERSION_HEX >= 0x030C0000
  return PyErr_GetRaisedException();
#else
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  if (type == nullptr) return nullptr;
  PyErr_NormalizeException(&type, &value, &tb);
  if (tb != nullptr) PyException_SetTraceback(value, tb);
  Py_XDECREF(type);
  Py_XDECREF(tb);
  return value;
#endif
}

// PyErr_SetRaisedException (3.12): raises `exc` again (steals it).
inline void SetRaisedException(PyObject* exc) {
#if PY_VERSION_HEX >= 0x030C0000
  PyErr_SetRaisedException(exc);
#else
  PyErr_Restore(Py_NewRef(reinterpret_cast<PyObject*>(Py_TYPE(exc))), exc,
                PyException_GetTraceback(exc));
#endif
}

}  // namespace caudal::bindings::compat

#endif  // CAUDAL_BINDINGS_PY_COMPAT_H_
