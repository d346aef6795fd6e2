// The identity of a Python class in cache keys.
//
// An object token names its class by a 16-byte digest of the class's module,
// qualified name and definition: the digests of its bases, the sorted names
// in its own namespace (methods, class attributes, enum members) and its own
// annotations (dataclass and pydantic fields). The same class gets the same
// digest in every process. Two live classes with the same digest in one
// process (factory-made classes with identical definitions, or a class and
// its reloaded copy while instances of the old one live) cannot be told apart
// across processes, so both are refused (uncacheable) from then on rather
// than given a shared key. A class whose digest was taken by a class that has
// since been freed inherits it.
//
// Digests are cached per class, checked through a weak reference (a freed
// class's address may be reused by a new one). Static (C) types never die and
// are named by module and qualified name alone.
//
// Must be called with the GIL held (the caches are guarded by it).
#ifndef CAUDAL_BINDINGS_TYPE_IDENTITY_H_
#define CAUDAL_BINDINGS_TYPE_IDENTITY_H_

#include <Python.h>

#include "caudal/hash/key_hasher.h"

namespace caudal::bindings {

// Adds str `s` to `h` as its UTF-8 bytes; None for a non-str or a str that
// does not encode (the error is cleared).
void AddUtf8(KeyHasher& h, PyObject* s);

// Writes the 16-byte digest naming class `t` to `out` and returns nullptr;
// or returns why it has none (a static string): when `refuse_ambiguous`, a
// class that shares its digest with another live class has none.
const char* ClassDigest(PyTypeObject* t, char out[16],
                        bool refuse_ambiguous = true);

}  // namespace caudal::bindings

#endif  // CAUDAL_BINDINGS_TYPE_IDENTITY_H_
