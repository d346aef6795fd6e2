// WideHash128: XXH3-128 of a large buffer using the widest vector unit the
// CPU has. Internal to hash/.
//
// The key hasher's default build targets baseline x86-64 (SSE2), which hashes
// about half as fast as AVX2 does. wide_hash_avx512.cc (-mavx512f) and
// wide_hash_avx2.cc (-mavx2) run XXH3's long-input loop for their vector
// unit (wide_hash_long.h: the input of each stripe read once, which GCC 12's
// build of xxHash's own loop does not do) and are called only when the CPU
// reports the unit at run time, as xxHash's own x86 dispatcher does. The
// output is the same XXH3-128 value whichever path runs, so keys do not
// change (tests_cpp/hash/wide_hash_test.cc checks each path against
// XXH3_128bits_withSeed).
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

// The paths WideHash128 chooses between (for tests). The vector ones may be
// called only when Have...() is true; each is XXH3_128bits_withSeed.
Hash128 WideHash128Portable(const void* data, size_t len, uint64_t seed);
Hash128 WideHash128Avx2(const void* data, size_t len, uint64_t seed);
Hash128 WideHash128Avx512(const void* data, size_t len, uint64_t seed);
bool HaveAvx2();
bool HaveAvx512();

}  // namespace caudal::hash_internal

#endif  // CAUDAL_HASH_INTERNAL_WIDE_HASH_H_
