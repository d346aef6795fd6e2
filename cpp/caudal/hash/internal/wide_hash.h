// WideHash128: XXH3-128 of a large buffer using the widest vector unit the
// CPU has. Internal to hash/.
//
// The key hasher's default build targets baseline x86-64 (SSE2), which hashes
// about half as fast as AVX2 does. wide_hash_avx2.cc is compiled with -mavx2
// and called only when the CPU reports AVX2 at run time, as xxHash's own
// x86 dispatcher does. The output is the same XXH3-128 value whichever path
// runs, so keys do not change.
#ifndef CAUDAL_HASH_INTERNAL_WIDE_HASH_H_
#define CAUDAL_HASH_INTERNAL_WIDE_HASH_H_

#include <cstddef>
#include <cstdint>

namespace caudal::hash_internal {

struct Hash128 {
  uint64_t low64;
  uint64_t high64;
};

// Buffers shorter than this are hashed by the caller's inline XXH3.
inline constexpr size_t kWideHashMin = 2048;

Hash128 WideHash128(const void* data, size_t len, uint64_t seed);

}  // namespace caudal::hash_internal

#endif  // CAUDAL_HASH_INTERNAL_WIDE_HASH_H_
