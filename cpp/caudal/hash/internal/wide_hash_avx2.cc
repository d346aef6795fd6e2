// Compiled with -mavx2 (see cpp/caudal/CMakeLists.txt) and called only when
// the CPU supports AVX2. Includes nothing but xxHash, whose functions are
// static here (XXH_INLINE_ALL), so no AVX2 code can leak into other
// translation units through shared inline definitions.
#if defined(CAUDAL_HAVE_AVX2_TU)
#include <cstddef>
#include <cstdint>

#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include "xxhash.h"

namespace caudal::hash_internal {

struct Hash128 {
  uint64_t low64;
  uint64_t high64;
};

Hash128 WideHash128Avx2(const void* data, size_t len, uint64_t seed) {
  const XXH128_hash_t h = XXH3_128bits_withSeed(data, len, seed);
  return {h.low64, h.high64};
}

}  // namespace caudal::hash_internal
#endif
