// The walk of a Python value that feeds a KeyHasher (cache keys).
//
// Keys are type-exact: two values get the same key only if they have the
// same exact types all the way down and equal contents (with KeyHasher's
// rules for floats, dicts and sets: cpp/caudal/hash/key_hasher.h).
//
// Keyable:
//   * None, bool, int (any size), float, str, bytes, bytearray, list, tuple,
//     dict, set, frozenset, nested to a depth of 64;
//   * subclasses of those: the exact class, the stored value (read from
//     storage, never through __str__, __int__, __iter__, items() ...), the
//     values of its __slots__ and its __dict__; an OrderedDict in its order,
//     a defaultdict with its factory (a class, or None);
//   * enum members (by name; Flag members by value);
//   * dataclass instances (class and every field);
//   * pydantic v2 models (class, every declared field including
//     exclude=True ones, extra and private attributes);
//   * any object whose class defines __caudal_key__() (its return value is
//     walked in its place, with the class).
// Classes are named by a digest of their module, qualified name and
// definition (type_identity.h); two live classes in one process with the
// same digest are refused. Anything else (an arbitrary
// object, a generator, a file, a class or a reference cycle) is not keyable:
// the execution runs uncached and the reason is counted.
//
// Cost: linear in the distinct objects of the value (a container referenced
// many times is walked once and its encoding replayed), plus the hashing of
// its bytes.
//
// Must be called with the GIL held. Calls Python code only for the hooks
// (__caudal_key__, dataclasses.fields, class digests the first time a class
// is seen, big ints).
#ifndef CAUDAL_BINDINGS_KEY_WALK_H_
#define CAUDAL_BINDINGS_KEY_WALK_H_

#include <Python.h>

#include "caudal/hash/key_hasher.h"

namespace caudal::bindings {

// Reasons a value could not be keyed (static strings, counted in stats).
// nullptr means "keyed".
using UnkeyableReason = const char*;

// Appends the tokens of `value` to `h`. Returns nullptr on success, else the
// reason. A Python exception raised by a hook is cleared and reported as a
// reason ("a __caudal_key__ hook raised", ...).
UnkeyableReason WalkValue(PyObject* value, KeyHasher& h);

// Key of (namespace string, value): the one the executor uses, with the
// step's cache namespace (its name plus its identity, docs/cache.md) as
// namespace. Returns nullptr on success.
UnkeyableReason KeyOf(const char* ns, Py_ssize_t ns_len, PyObject* value,
                      PyObject* extra, Key128* out);

}  // namespace caudal::bindings

#endif  // CAUDAL_BINDINGS_KEY_WALK_H_
