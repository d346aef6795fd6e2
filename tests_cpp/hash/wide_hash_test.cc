// Every path of WideHash128 (portable, AVX2, AVX-512: those the CPU has) is
// XXH3_128bits_withSeed, bit for bit: keys must not depend on the machine.
#include "caudal/hash/internal/wide_hash.h"

#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

#define XXH_INLINE_ALL
#include "xxhash.h"

namespace caudal::hash_internal {
namespace {

using Path = Hash128 (*)(const void*, size_t, uint64_t);

void ExpectXxh3(Path path, const char* name) {
  std::mt19937_64 rng(20);
  std::vector<uint8_t> buf(300'000);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  std::vector<size_t> lens;
  for (size_t n = 0; n < 2500; ++n) lens.push_back(n);  // short paths too
  // Around stripe (64), block (1024) and wide-hash (2048) boundaries.
  for (size_t n : {1023, 1024, 1025, 1087, 1088, 1089, 2047, 2048, 2049, 4096,
                   4097, 65536, 100'000, 299'990}) {
    lens.push_back(n);
  }
  for (int i = 0; i < 300; ++i) lens.push_back(rng() % 299'000);
  int mismatches = 0;
  for (size_t n : lens) {
    for (uint64_t seed :
         {uint64_t{0}, uint64_t{7}, uint64_t{0x63617564616c7031},
          static_cast<uint64_t>(rng())}) {
      for (size_t offset : {0, 1, 5}) {  // unaligned input
        const XXH128_hash_t want =
            XXH3_128bits_withSeed(buf.data() + offset, n, seed);
        const Hash128 got = path(buf.data() + offset, n, seed);
        if (got.low64 != want.low64 || got.high64 != want.high64) {
          if (++mismatches <= 5) {
            ADD_FAILURE() << name << ": len " << n << " seed " << seed
                          << " offset " << offset;
          }
        }
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << name;
}

TEST(WideHashTest, PortablePathIsXxh3) {
  ExpectXxh3(WideHash128Portable, "portable");
}

TEST(WideHashTest, Avx2PathIsXxh3) {
  if (!HaveAvx2()) GTEST_SKIP() << "no AVX2 on this CPU (or build)";
  ExpectXxh3(WideHash128Avx2, "avx2");
}

TEST(WideHashTest, Avx512PathIsXxh3) {
  if (!HaveAvx512()) GTEST_SKIP() << "no AVX-512F on this CPU (or build)";
  ExpectXxh3(WideHash128Avx512, "avx512");
}

TEST(WideHashTest, DispatchedPathIsXxh3) {
  ExpectXxh3(WideHash128, "dispatched");
}

}  // namespace
}  // namespace caudal::hash_internal
