#include "caudal/cache/compression.h"

#include <cstdint>
#include <random>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "zstd.h"

namespace caudal {
namespace {

using ::testing::HasSubstr;

std::string Compressible(size_t n) {
  std::string s;
  s.reserve(n);
  while (s.size() < n) {
    s += "{\"step\": \"fetch\", \"status\": 200, \"items\": [1, 2, 3]} ";
  }
  s.resize(n);
  return s;
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

void ExpectRoundTrip(const std::string& data, const std::string& framed) {
  absl::StatusOr<std::string> back = Decompress(framed);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, data);
}

TEST(CompressionTest, RoundTrips) {
  for (size_t n : {0, 1, 2, 15, 64, 1000, 4096, 100000, 1 << 20}) {
    for (int level : {1, 3, 19}) {
      const std::string text = Compressible(n);
      ExpectRoundTrip(text, CompressIfLarger(text, 0, level));
      const std::string noise = RandomBytes(n, n + level);
      ExpectRoundTrip(noise, CompressIfLarger(noise, 0, level));
    }
  }
}

TEST(CompressionTest, SmallDataStaysRaw) {
  const std::string text = Compressible(1000);
  const std::string framed = CompressIfLarger(text, 1000, 3);
  EXPECT_FALSE(IsCompressedFrame(framed));
  EXPECT_EQ(static_cast<uint8_t>(framed[0]), kFrameRaw);
  EXPECT_EQ(framed.substr(1), text);
  ExpectRoundTrip(text, framed);
  const std::string empty = CompressIfLarger("", 0, 3);
  EXPECT_EQ(empty, std::string(1, static_cast<char>(kFrameRaw)));
  ExpectRoundTrip("", empty);
}

TEST(CompressionTest, LargeCompressibleDataIsCompressed) {
  const std::string text = Compressible(1001);
  const std::string framed = CompressIfLarger(text, 1000, 3);
  EXPECT_TRUE(IsCompressedFrame(framed));
  EXPECT_EQ(static_cast<uint8_t>(framed[0]), kFrameZstd);
  EXPECT_LT(framed.size(), text.size() / 4);
  ExpectRoundTrip(text, framed);
}

TEST(CompressionTest, IncompressibleDataStaysRaw) {
  const std::string noise = RandomBytes(10000, 7);
  const std::string framed = CompressIfLarger(noise, 100, 3);
  EXPECT_FALSE(IsCompressedFrame(framed));
  EXPECT_EQ(framed.size(), noise.size() + 1);
  ExpectRoundTrip(noise, framed);
}

TEST(CompressionTest, OutOfRangeLevelsAreClamped) {
  const std::string text = Compressible(50000);
  for (int level : {-1000000, -5, 0, 22, 1000}) {
    const std::string framed = CompressIfLarger(text, 0, level);
    // zstd's most negative ("fastest") levels barely compress at all; the
    // frame may then stay raw. Every other level compresses this text.
    if (level != -1000000) EXPECT_TRUE(IsCompressedFrame(framed)) << level;
    ExpectRoundTrip(text, framed);
  }
}

TEST(CompressionTest, RejectsMalformedFrames) {
  EXPECT_EQ(Decompress("").status().code(), absl::StatusCode::kDataLoss);
  const absl::Status unknown = Decompress("{\"json\": 1}").status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(unknown.message()), HasSubstr("header byte 0x7b"));
  const std::string zstd_header(1, static_cast<char>(kFrameZstd));
  EXPECT_EQ(Decompress(zstd_header).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(Decompress(zstd_header + "not zstd at all").status().code(),
            absl::StatusCode::kDataLoss);
  const std::string framed = CompressIfLarger(Compressible(5000), 0, 3);
  ASSERT_TRUE(IsCompressedFrame(framed));
  // Trailing bytes, and two frames back to back.
  const absl::Status trailing = Decompress(framed + "x").status();
  EXPECT_EQ(trailing.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(trailing.message()), HasSubstr("1 unexpected"));
  EXPECT_EQ(Decompress(framed + framed.substr(1)).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(CompressionTest, EveryTruncationIsRejected) {
  const std::string data = Compressible(3000);
  const std::string framed = CompressIfLarger(data, 0, 3);
  ASSERT_TRUE(IsCompressedFrame(framed));
  for (size_t n = 0; n < framed.size(); ++n) {
    EXPECT_FALSE(Decompress(framed.substr(0, n)).ok()) << "length " << n;
  }
}

TEST(CompressionTest, CorruptionIsRejectedOrHarmless) {
  // Flipping any byte of a checksummed frame must either be detected or
  // leave the decoded data intact (e.g. a larger window size): never return
  // different data.
  const std::string data = Compressible(2000) + RandomBytes(200, 3);
  const std::string framed = CompressIfLarger(data, 0, 3);
  ASSERT_TRUE(IsCompressedFrame(framed));
  int rejected = 0;
  for (size_t i = 1; i < framed.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      std::string bad = framed;
      bad[i] = static_cast<char>(static_cast<uint8_t>(bad[i]) ^ mask);
      absl::StatusOr<std::string> out = Decompress(bad);
      if (out.ok()) {
        EXPECT_EQ(*out, data) << "byte " << i << " mask " << int{mask};
      } else {
        ++rejected;
        EXPECT_TRUE(out.status().code() == absl::StatusCode::kDataLoss ||
                    out.status().code() == absl::StatusCode::kResourceExhausted)
            << out.status();
      }
    }
  }
  EXPECT_GT(rejected, 0);
}

TEST(CompressionTest, RandomGarbageNeverCrashes) {
  std::mt19937_64 rng(99);
  const std::string magic("\x28\xb5\x2f\xfd", 4);
  for (int i = 0; i < 20000; ++i) {
    std::string garbage = RandomBytes(rng() % 64, rng());
    switch (i % 3) {
      case 0:
        garbage = std::string(1, static_cast<char>(kFrameZstd)) + garbage;
        break;
      case 1:
        garbage =
            std::string(1, static_cast<char>(kFrameZstd)) + magic + garbage;
        break;
      default:
        break;
    }
    (void)Decompress(garbage, /*max_bytes=*/1 << 20);
  }
}

TEST(CompressionTest, DeclaredSizeIsCheckedBeforeAllocating) {
  const std::string zeros(4 << 20, '\0');
  const std::string framed = CompressIfLarger(zeros, 0, 3);
  ASSERT_TRUE(IsCompressedFrame(framed));
  EXPECT_LT(framed.size(), 1000u);
  const absl::Status too_big = Decompress(framed, 1 << 20).status();
  EXPECT_EQ(too_big.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(too_big.message()), HasSubstr("4194304"));
  ExpectRoundTrip(zeros, framed);
  // A hand-made header that claims 2^62 bytes: rejected without allocating.
  std::string lie(1, static_cast<char>(kFrameZstd));
  lie += std::string("\x28\xb5\x2f\xfd", 4);
  lie += static_cast<char>(0xE0);  // FCS field 8 bytes, single segment
  for (int b = 0; b < 8; ++b) lie += static_cast<char>(b == 7 ? 0x40 : 0);
  lie += std::string("\x01\x00\x00", 3);  // a last raw block of 0 bytes
  EXPECT_EQ(Decompress(lie).status().code(),
            absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace caudal
