// The long-input loop of XXH3-128, written once for the vector widths of
// wide_hash_avx2.cc and wide_hash_avx512.cc. Internal to hash/; included
// only by those two translation units, each compiled for its own vector
// unit, so everything here has internal linkage (an anonymous namespace and
// xxHash's static functions under XXH_INLINE_ALL): no code built for one
// vector unit can be picked by the linker for a caller built for another.
//
// Why not XXH3_128bits_withSeed itself: GCC 12 folds the input load of
// xxHash's accumulate step into two instructions, so every 64-byte stripe
// reads its input twice, and loads (not arithmetic) bound the loop. Here the
// input is loaded once into a register (an empty asm statement keeps the
// compiler from re-reading it); the arithmetic is XXH3's, and the result is
// bit-for-bit XXH3_128bits_withSeed (tests_cpp/hash/wide_hash_test.cc).
//
// Before including: XXH_INLINE_ALL and XXH_VECTOR defined, xxhash.h
// included, and a `Lanes` type with
//   static Acc Load(const uint64_t* acc);        static void Store(...)
//   static void Stripe(Acc&, const uint8_t* in, const uint8_t* secret);
//   static void Scramble(Acc&, const uint8_t* secret);
//   static void InitSecret(uint8_t* secret, uint64_t seed);
#ifndef CAUDAL_HASH_INTERNAL_WIDE_HASH_LONG_H_
#define CAUDAL_HASH_INTERNAL_WIDE_HASH_LONG_H_

#include <cstddef>
#include <cstdint>

#include "caudal/hash/internal/wide_hash.h"

namespace caudal::hash_internal {
namespace {

template <typename Lanes>
Hash128 LongHash128(const void* data, size_t len, uint64_t seed) {
  if (len <= XXH3_MIDSIZE_MAX) {  // XXH3's short-input paths
    const XXH128_hash_t h = XXH3_128bits_withSeed(data, len, seed);
    return {h.low64, h.high64};
  }
  constexpr size_t kSecretSize = XXH_SECRET_DEFAULT_SIZE;
  alignas(64) uint8_t custom[kSecretSize];
  const uint8_t* secret = reinterpret_cast<const uint8_t*>(XXH3_kSecret);
  if (seed != 0) {
    Lanes::InitSecret(custom, seed);
    secret = custom;
  }
  const uint8_t* in = static_cast<const uint8_t*>(data);
  alignas(64) uint64_t acc[XXH_ACC_NB] = XXH3_INIT_ACC;
  auto a = Lanes::Load(acc);
  const size_t stripes_per_block =
      (kSecretSize - XXH_STRIPE_LEN) / XXH_SECRET_CONSUME_RATE;
  const size_t block_len = XXH_STRIPE_LEN * stripes_per_block;
  const size_t blocks = (len - 1) / block_len;
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* p = in + b * block_len;
    for (size_t s = 0; s < stripes_per_block; ++s) {
      Lanes::Stripe(a, p + s * XXH_STRIPE_LEN,
                    secret + s * XXH_SECRET_CONSUME_RATE);
    }
    Lanes::Scramble(a, secret + kSecretSize - XXH_STRIPE_LEN);
  }
  // The last partial block, then the last stripe (which may overlap it).
  const size_t stripes = ((len - 1) - block_len * blocks) / XXH_STRIPE_LEN;
  const uint8_t* p = in + blocks * block_len;
  for (size_t s = 0; s < stripes; ++s) {
    Lanes::Stripe(a, p + s * XXH_STRIPE_LEN,
                  secret + s * XXH_SECRET_CONSUME_RATE);
  }
  Lanes::Stripe(
      a, in + len - XXH_STRIPE_LEN,
      secret + kSecretSize - XXH_STRIPE_LEN - XXH_SECRET_LASTACC_START);
  Lanes::Store(acc, a);
  Hash128 h;
  h.low64 = XXH3_mergeAccs(acc, secret + XXH_SECRET_MERGEACCS_START,
                           static_cast<uint64_t>(len) * XXH_PRIME64_1);
  h.high64 = XXH3_mergeAccs(
      acc, secret + kSecretSize - sizeof(acc) - XXH_SECRET_MERGEACCS_START,
      ~(static_cast<uint64_t>(len) * XXH_PRIME64_2));
  return h;
}

}  // namespace
}  // namespace caudal::hash_internal

#endif  // CAUDAL_HASH_INTERNAL_WIDE_HASH_LONG_H_
