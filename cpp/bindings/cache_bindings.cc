// Cache helpers for Python: the native key of a value (what the executor's
// cache uses), and the compression frame of the shared (Redis) tier. Large
// payloads are compressed and hashed with the GIL released.
#include <pybind11/stl.h>

#include <string>

#include "caudal/cache/compression.h"
#include "common.h"
#include "key_walk.h"

namespace caudal::bindings {
namespace {

constexpr size_t kReleaseGilAbove = 64 * 1024;

py::bytes KeyBytes(const Key128& k) {
  char buf[16];
  for (int i = 0; i < 8; ++i) {
    buf[i] = static_cast<char>((k.lo >> (8 * i)) & 0xff);
    buf[8 + i] = static_cast<char>((k.hi >> (8 * i)) & 0xff);
  }
  return py::bytes(buf, 16);
}

}  // namespace

py::bytes KeyToBytes(const Key128& k) { return KeyBytes(k); }

Key128 KeyFromBytes(py::bytes b) {
  std::string s = b;
  if (s.size() != 16) throw py::value_error("a cache key is 16 bytes");
  Key128 k{0, 0};
  for (int i = 0; i < 8; ++i) {
    k.lo |= static_cast<uint64_t>(static_cast<unsigned char>(s[i])) << (8 * i);
    k.hi |= static_cast<uint64_t>(static_cast<unsigned char>(s[8 + i]))
            << (8 * i);
  }
  return k;
}

void RegisterCache(py::module_& m) {
  m.def(
      "cache_key",
      [](py::handle value, const std::string& ns) {
        Key128 k;
        UnkeyableReason why =
            KeyOf(ns.data(), static_cast<Py_ssize_t>(ns.size()), value.ptr(),
                  nullptr, &k);
        if (why)
          throw py::type_error(std::string("cannot key this value: ") + why);
        return KeyBytes(k);
      },
      py::arg("value"), py::arg("namespace") = "",
      "The 16-byte cache key of `value` (little-endian lo, hi) in "
      "`namespace`; the executor uses the step's cache namespace (its name "
      "and identity, see docs/cache.md). Raises TypeError naming the reason "
      "for a value that has no stable key.");
  m.def(
      "compress",
      [](py::bytes data, size_t threshold, int level) {
        char* p;
        Py_ssize_t n;
        PyBytes_AsStringAndSize(data.ptr(), &p, &n);
        std::string out;
        if (static_cast<size_t>(n) > kReleaseGilAbove) {
          py::gil_scoped_release nogil;
          out = CompressIfLarger(absl::string_view(p, n), threshold, level);
        } else {
          out = CompressIfLarger(absl::string_view(p, n), threshold, level);
        }
        return py::bytes(out);
      },
      py::arg("data"), py::arg("threshold") = 1024, py::arg("level") = 3,
      "Frames `data` for the shared tier: zstd-compressed when longer than "
      "`threshold` "
      "bytes (and smaller that way), raw otherwise; a 1-byte header says "
      "which.");
  m.def(
      "decompress",
      [](py::bytes framed) {
        char* p;
        Py_ssize_t n;
        PyBytes_AsStringAndSize(framed.ptr(), &p, &n);
        absl::StatusOr<std::string> out;
        if (static_cast<size_t>(n) > kReleaseGilAbove) {
          py::gil_scoped_release nogil;
          out = Decompress(absl::string_view(p, n));
        } else {
          out = Decompress(absl::string_view(p, n));
        }
        if (!out.ok()) ThrowStatus(out.status());
        return py::bytes(*out);
      },
      py::arg("framed"),
      "Inverse of compress(). A corrupt frame raises ValueError; one that "
      "declares more bytes than the size limit raises QueueFullError (the "
      "status table of docs/errors.md).");
}

}  // namespace caudal::bindings
