// Compiled with -mavx512f (see cpp/caudal/CMakeLists.txt) and called only
// when the CPU supports AVX-512F. Like wide_hash_avx2.cc: xxHash and the
// loop of wide_hash_long.h only, all with internal linkage.
#if defined(CAUDAL_HAVE_AVX512_TU)
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX512
#include "xxhash.h"
// (after xxhash.h)
#include "caudal/hash/internal/wide_hash_long.h"

namespace caudal::hash_internal {
namespace {

// XXH3's eight 64-bit accumulators in one AVX-512 register.
struct Avx512Lanes {
  using Acc = __m512i;
  static Acc Load(const uint64_t* acc) { return _mm512_load_si512(acc); }
  static void Store(uint64_t* acc, const Acc& a) { _mm512_store_si512(acc, a); }
  // XXH3_accumulate_512_avx512, reading the input once.
  static void Stripe(Acc& a, const uint8_t* in, const uint8_t* sec) {
    __m512i d = _mm512_loadu_si512(in);
    asm("" : "+v"(d));  // in a register: one load
    const __m512i dk = _mm512_xor_si512(d, _mm512_loadu_si512(sec));
    const __m512i product = _mm512_mul_epu32(
        dk, _mm512_shuffle_epi32(
                dk, static_cast<_MM_PERM_ENUM>(_MM_SHUFFLE(0, 3, 0, 1))));
    a = _mm512_add_epi64(
        a, _mm512_add_epi64(
               product, _mm512_shuffle_epi32(d, static_cast<_MM_PERM_ENUM>(
                                                    _MM_SHUFFLE(1, 0, 3, 2)))));
  }
  // XXH3_scrambleAcc_avx512.
  static void Scramble(Acc& a, const uint8_t* sec) {
    const __m512i prime = _mm512_set1_epi32(static_cast<int>(XXH_PRIME32_1));
    const __m512i x = _mm512_xor_si512(
        _mm512_xor_si512(a, _mm512_srli_epi64(a, 47)), _mm512_loadu_si512(sec));
    const __m512i hi = _mm512_shuffle_epi32(
        x, static_cast<_MM_PERM_ENUM>(_MM_SHUFFLE(0, 3, 0, 1)));
    a = _mm512_add_epi64(_mm512_mul_epu32(x, prime),
                         _mm512_slli_epi64(_mm512_mul_epu32(hi, prime), 32));
  }
  static void InitSecret(uint8_t* secret, uint64_t seed) {
    XXH3_initCustomSecret_avx512(secret, seed);
  }
};

}  // namespace

Hash128 WideHash128Avx512(const void* data, size_t len, uint64_t seed) {
  return LongHash128<Avx512Lanes>(data, len, seed);
}

}  // namespace caudal::hash_internal
#endif
