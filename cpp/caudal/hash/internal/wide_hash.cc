#include "caudal/hash/internal/wide_hash.h"

#define XXH_INLINE_ALL
#include "xxhash.h"

namespace caudal::hash_internal {

#if defined(CAUDAL_HAVE_AVX2_TU)
Hash128 WideHash128Avx2(const void* data, size_t len,
                        uint64_t seed);  // -mavx2 TU
#endif

Hash128 WideHash128(const void* data, size_t len, uint64_t seed) {
#if defined(CAUDAL_HAVE_AVX2_TU)
  static const bool kAvx2 = __builtin_cpu_supports("avx2");
  if (kAvx2) return WideHash128Avx2(data, len, seed);
#endif
  const XXH128_hash_t h = XXH3_128bits_withSeed(data, len, seed);
  return {h.low64, h.high64};
}

}  // namespace caudal::hash_internal
