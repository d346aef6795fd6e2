// Collision test: keys of millions of distinct random structured values
// (nested lists, tuples, dicts, sets, objects, ints, floats, strings ...)
// must all differ.
//
// Values are drawn from tiny scalar domains (ints 0..9, strings over "ab" of
// length 0..2, ...) so that many of them differ only in structure: nesting,
// container type, element order within ordered containers, multiplicity
// within sets. Each value carries exactly one "index marker" (a raw token of
// a kind the generator never uses otherwise, holding the value's index) at a
// random leaf position, which makes all generated values distinct without a
// dedupe pass.
//
// Size: CAUDAL_COLLISION_N values (default 10 million; 1 million in
// sanitizer builds, where everything runs ~10x slower).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "caudal/hash/key_hasher.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr size_t kDefaultN = 1000000;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr size_t kDefaultN = 1000000;
#else
constexpr size_t kDefaultN = 10000000;
#endif
#else
constexpr size_t kDefaultN = 10000000;
#endif

constexpr uint8_t kMarkerKind = 0x7f;

size_t ValueCount() {
  const char* env = std::getenv("CAUDAL_COLLISION_N");
  if (env != nullptr && *env != '\0') {
    const long long n = std::atoll(env);
    if (n > 0) return static_cast<size_t>(n);
  }
  return kDefaultN;
}

// splitmix64: a small deterministic PRNG, so a failure is reproducible.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint32_t Below(uint32_t n) {
    return static_cast<uint32_t>((Next() >> 32) * n >> 32);
  }

 private:
  uint64_t state_;
};

class ValueGenerator {
 public:
  explicit ValueGenerator(uint64_t seed) : rng_(seed) {}

  // Feeds one random value with the marker `index` somewhere inside.
  void Generate(KeyHasher& h, uint64_t index) {
    index_ = index;
    leaves_ = 0;
    marker_leaf_ = rng_.Below(6);
    marker_done_ = false;
    Value(h, 0);
    // The value had fewer leaves than marker_leaf_: put the marker after it.
    if (!marker_done_) Marker(h);
  }

 private:
  void Marker(KeyHasher& h) {
    char bytes[8];
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(index_ >> (8 * i));
    h.AddRaw(kMarkerKind, absl::string_view(bytes, 8));
    marker_done_ = true;
  }

  void Value(KeyHasher& h, int depth) {
    const uint32_t pick = rng_.Below(depth >= 3 ? 10 : 16);
    if (pick < 10) {
      Leaf(h);
      return;
    }
    const uint32_t n = rng_.Below(4);
    switch (pick) {
      case 10:
        h.BeginList(n);
        for (uint32_t i = 0; i < n; ++i) Value(h, depth + 1);
        h.EndList();
        break;
      case 11:
        h.BeginTuple(n);
        for (uint32_t i = 0; i < n; ++i) Value(h, depth + 1);
        h.EndTuple();
        break;
      case 12:
      case 13:
        h.BeginDict(n);
        for (uint32_t i = 0; i < n; ++i) {
          Value(h, depth + 1);
          Value(h, depth + 1);
        }
        h.EndDict();
        break;
      case 14:
        h.BeginSet(n, rng_.Below(2) == 1);
        for (uint32_t i = 0; i < n; ++i) Value(h, depth + 1);
        h.EndSet();
        break;
      default:
        h.BeginObject(rng_.Below(2) == 1 ? "m.A" : "m.B");
        for (uint32_t i = 0; i < n; ++i) Value(h, depth + 1);
        h.EndObject();
        break;
    }
  }

  void Leaf(KeyHasher& h) {
    if (!marker_done_ && leaves_++ == marker_leaf_) {
      Marker(h);
      return;
    }
    static const char kStrings[][3] = {"", "a", "b", "aa", "ab", "ba", "bb"};
    static const double kFloats[] = {0.0, -0.0, 1.0, -1.5, 1e300, 0.1};
    switch (rng_.Below(8)) {
      case 0:
        h.AddNone();
        break;
      case 1:
        h.AddBool(rng_.Below(2) == 1);
        break;
      case 2:
      case 3:
        h.AddInt(static_cast<int64_t>(rng_.Below(10)));
        break;
      case 4:
        h.AddFloat(kFloats[rng_.Below(6)]);
        break;
      case 5:
        h.AddString(kStrings[rng_.Below(7)]);
        break;
      case 6:
        h.AddBytes(kStrings[rng_.Below(7)]);
        break;
      default: {
        // A big int just above 2^64 (or a small one spelled as big).
        char mag[9] = {static_cast<char>(rng_.Below(4)), 0, 0, 0, 0, 0, 0, 0,
                       static_cast<char>(rng_.Below(2))};
        h.AddBigInt(absl::string_view(mag, 9), rng_.Below(2) == 1);
        break;
      }
    }
  }

  Rng rng_;
  uint64_t index_ = 0;
  uint32_t leaves_ = 0;
  uint32_t marker_leaf_ = 0;
  bool marker_done_ = false;
};

TEST(KeyHasherCollisionTest, DistinctRandomStructuredValuesGetDistinctKeys) {
  const size_t n = ValueCount();
  absl::flat_hash_set<Key128> keys;
  keys.reserve(n);
  ValueGenerator gen(/*seed=*/0x5eed0001);
  KeyHasher h;
  size_t collisions = 0;
  for (size_t i = 0; i < n; ++i) {
    h.Reset();
    gen.Generate(h, i);
    const Key128 key = h.Finish();
    ASSERT_TRUE(h.ok()) << h.status();
    if (!keys.insert(key).second) {
      ++collisions;
      ADD_FAILURE() << "value " << i << " collides: key " << key.ToHex();
      if (collisions > 10) break;
    }
  }
  EXPECT_EQ(collisions, 0u);
  std::printf("hashed %zu distinct values, %zu distinct keys\n", n,
              keys.size());
}

// Two generators with the same seed feed identical token streams to two
// hashers: their keys must agree value by value (nothing of an earlier value
// survives Reset, nothing depends on the hasher instance).
TEST(KeyHasherCollisionTest, KeysAreDeterministicAcrossRuns) {
  constexpr size_t kN = 20000;
  ValueGenerator a(/*seed=*/42), b(/*seed=*/42);
  KeyHasher ha, hb;
  for (size_t i = 0; i < kN; ++i) {
    ha.Reset();
    hb.Reset();
    a.Generate(ha, i);
    b.Generate(hb, i);
    ASSERT_EQ(ha.Finish(), hb.Finish()) << "value " << i;
  }
}

}  // namespace
}  // namespace caudal
