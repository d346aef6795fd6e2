// The walk of a Python value that feeds a KeyHasher (cache keys).
//
// Keyable: None, bool, int (any size), float, str, bytes, bytearray, list,
// tuple, dict, set, frozenset, enums, dataclass instances, pydantic models
// (through model_dump()), and any object with a __caudal_key__() method
// (whose return value is walked in its place). Anything else — an arbitrary
// object, a generator, a file — is not keyable: the execution then runs
// uncached and the reason is counted. The equality rules are KeyHasher's
// (cpp/caudal/hash/key_hasher.h) and docs/cache.md.
//
// Must be called with the GIL held. Calls Python code only for the hooks
// (model_dump, __caudal_key__, dataclass fields, big ints).
#ifndef CAUDAL_BINDINGS_KEY_WALK_H_
#define CAUDAL_BINDINGS_KEY_WALK_H_

#include <Python.h>

#include "caudal/hash/key_hasher.h"

namespace caudal::bindings {

// Reasons a value could not be keyed (static strings, counted in stats).
// nullptr means "keyed".
using UnkeyableReason = const char*;

// Appends the tokens of `value` to `h`. Returns nullptr on success, else the
// reason. A Python exception raised by a hook is cleared and reported as the
// reason "a __caudal_key__/model_dump hook raised".
UnkeyableReason WalkValue(PyObject* value, KeyHasher& h);

// Key of (namespace string, value): the one the executor uses, with the
// step's name as namespace. Returns nullptr on success.
UnkeyableReason KeyOf(const char* ns, Py_ssize_t ns_len, PyObject* value,
                      PyObject* extra, Key128* out);

}  // namespace caudal::bindings

#endif  // CAUDAL_BINDINGS_KEY_WALK_H_
