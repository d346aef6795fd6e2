// Compiled with -mavx2 (see cpp/caudal/CMakeLists.txt) and called only when
// the CPU supports AVX2. Includes nothing but xxHash and the loop of
// wide_hash_long.h, all with internal linkage, so no AVX2 code can leak into
// other translation units through shared inline definitions.
#if defined(CAUDAL_HAVE_AVX2_TU)
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include "xxhash.h"
// (after xxhash.h)
#include "caudal/hash/internal/wide_hash_long.h"

namespace caudal::hash_internal {
namespace {

// XXH3's eight 64-bit accumulators as two AVX2 registers.
struct Avx2Lanes {
  struct Acc {
    __m256i lo, hi;
  };
  static Acc Load(const uint64_t* acc) {
    return {_mm256_load_si256(reinterpret_cast<const __m256i*>(acc)),
            _mm256_load_si256(reinterpret_cast<const __m256i*>(acc + 4))};
  }
  static void Store(uint64_t* acc, const Acc& a) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc), a.lo);
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc + 4), a.hi);
  }
  // XXH3_accumulate_512_avx2, reading the input once.
  static void Half(__m256i& acc, __m256i d, const uint8_t* sec) {
    const __m256i dk = _mm256_xor_si256(
        d, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sec)));
    const __m256i product =
        _mm256_mul_epu32(dk, _mm256_shuffle_epi32(dk, _MM_SHUFFLE(0, 3, 0, 1)));
    acc = _mm256_add_epi64(
        acc, _mm256_add_epi64(
                 product, _mm256_shuffle_epi32(d, _MM_SHUFFLE(1, 0, 3, 2))));
  }
  static void Stripe(Acc& a, const uint8_t* in, const uint8_t* sec) {
    __m256i d0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in));
    __m256i d1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + 32));
    asm("" : "+x"(d0), "+x"(d1));  // in registers: one load each
    Half(a.lo, d0, sec);
    Half(a.hi, d1, sec + 32);
  }
  // XXH3_scrambleAcc_avx2.
  static void ScrambleHalf(__m256i& acc, const uint8_t* sec) {
    const __m256i prime = _mm256_set1_epi32(static_cast<int>(XXH_PRIME32_1));
    const __m256i x = _mm256_xor_si256(
        _mm256_xor_si256(acc, _mm256_srli_epi64(acc, 47)),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sec)));
    const __m256i hi = _mm256_shuffle_epi32(x, _MM_SHUFFLE(0, 3, 0, 1));
    acc = _mm256_add_epi64(_mm256_mul_epu32(x, prime),
                           _mm256_slli_epi64(_mm256_mul_epu32(hi, prime), 32));
  }
  static void Scramble(Acc& a, const uint8_t* sec) {
    ScrambleHalf(a.lo, sec);
    ScrambleHalf(a.hi, sec + 32);
  }
  static void InitSecret(uint8_t* secret, uint64_t seed) {
    XXH3_initCustomSecret_avx2(secret, seed);
  }
};

}  // namespace

Hash128 WideHash128Avx2(const void* data, size_t len, uint64_t seed) {
  return LongHash128<Avx2Lanes>(data, len, seed);
}

}  // namespace caudal::hash_internal
#endif
