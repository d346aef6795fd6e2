#include "caudal/hash/internal/wide_hash.h"

#define XXH_INLINE_ALL
#include "xxhash.h"

namespace caudal::hash_internal {

Hash128 WideHash128Portable(const void* data, size_t len, uint64_t seed) {
  const XXH128_hash_t h = XXH3_128bits_withSeed(data, len, seed);
  return {h.low64, h.high64};
}

#if !defined(CAUDAL_HAVE_AVX2_TU)
Hash128 WideHash128Avx2(const void* data, size_t len, uint64_t seed) {
  return WideHash128Portable(data, len, seed);
}
#endif
#if !defined(CAUDAL_HAVE_AVX512_TU)
Hash128 WideHash128Avx512(const void* data, size_t len, uint64_t seed) {
  return WideHash128Portable(data, len, seed);
}
#endif

bool HaveAvx2() {
#if defined(CAUDAL_HAVE_AVX2_TU)
  static const bool kAvx2 = __builtin_cpu_supports("avx2");
  return kAvx2;
#else
  return false;
#endif
}

bool HaveAvx512() {
#if defined(CAUDAL_HAVE_AVX512_TU)
  static const bool kAvx512 = __builtin_cpu_supports("avx512f");
  return kAvx512;
#else
  return false;
#endif
}

Hash128 WideHash128(const void* data, size_t len, uint64_t seed) {
  if (HaveAvx512()) return WideHash128Avx512(data, len, seed);
  if (HaveAvx2()) return WideHash128Avx2(data, len, seed);
  return WideHash128Portable(data, len, seed);
}

}  // namespace caudal::hash_internal
