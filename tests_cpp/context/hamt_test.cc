#include "caudal/context/hamt.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

// Live reference and node counts, to check that everything is released.
std::atomic<int64_t> g_refs{0};   // retained minus released keys and values
std::atomic<int64_t> g_nodes{0};  // allocated minus freed nodes
std::atomic<int64_t> g_fail_after{-1};  // AllocNode fails when this hits 0
std::atomic<int64_t> g_allocs{0};

// Keys below kBadKey make Eq fail (a Python __eq__ that raises).
constexpr int kBadKey = -1000;

struct IntTraits : AtomicNodes {
  using Key = int;
  using Value = int;
  static void RetainKey(int) { g_refs.fetch_add(1, std::memory_order_relaxed); }
  static void ReleaseKey(int) {
    g_refs.fetch_sub(1, std::memory_order_relaxed);
  }
  static void RetainValue(int) {
    g_refs.fetch_add(1, std::memory_order_relaxed);
  }
  static void ReleaseValue(int) {
    g_refs.fetch_sub(1, std::memory_order_relaxed);
  }
  static int Eq(int stored, int probe) {
    if (stored <= kBadKey || probe <= kBadKey) return -1;
    return stored == probe;
  }
  static bool SameValue(int a, int b) { return a == b; }
  static void* AllocNode(size_t bytes) {
    if (g_fail_after.load() >= 0 && g_fail_after.fetch_sub(1) == 0) {
      return nullptr;
    }
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    g_nodes.fetch_add(1, std::memory_order_relaxed);
    return AtomicNodes::AllocNode(bytes);
  }
  static void FreeNode(NodeHeader* node) {
    g_nodes.fetch_sub(1, std::memory_order_relaxed);
    AtomicNodes::FreeNode(node);
  }
};

using Map = Hamt<IntTraits>;

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// Hash functions the suites run with: well mixed; a constant (every key in
// one collision node); few distinct hashes sharing their first 60 bits (the
// deepest bitmap chains, then collision nodes); only 8 distinct low bits.
struct Hasher {
  const char* name;
  uint64_t (*fn)(int);
};
const Hasher kHashers[] = {
    {"mixed", [](int k) { return Mix(static_cast<uint64_t>(k)); }},
    {"constant", [](int) { return uint64_t{0x5eed}; }},
    {"deep",
     [](int k) {
       return (uint64_t{0xABCDEF0123456789ULL} &
               hamt_internal::PrefixMask(60)) |
              (static_cast<uint64_t>(k % 5) << 60);
     }},
    {"lowbits", [](int k) { return static_cast<uint64_t>(k & 7) << 3; }},
};

class HamtTest : public ::testing::TestWithParam<Hasher> {
 protected:
  void SetUp() override {
    g_fail_after = -1;
    refs0_ = g_refs.load();
    nodes0_ = g_nodes.load();
  }
  void TearDown() override {
    g_fail_after = -1;
    EXPECT_EQ(g_refs.load(), refs0_) << "key/value references leaked";
    EXPECT_EQ(g_nodes.load(), nodes0_) << "nodes leaked";
  }
  uint64_t H(int k) const { return GetParam().fn(k); }

  Map Set(const Map& m, int k, int v) {
    Map out;
    absl::Status s = m.Set(k, H(k), v, &out);
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }
  Map Del(const Map& m, int k, bool* found = nullptr) {
    Map out;
    bool f = false;
    absl::Status s = m.Delete(k, H(k), &out, &f);
    EXPECT_TRUE(s.ok()) << s;
    if (found) *found = f;
    return out;
  }
  const int* Get(const Map& m, int k) {
    const int* v = nullptr;
    absl::Status s = m.Find(k, H(k), &v);
    EXPECT_TRUE(s.ok()) << s;
    return v;
  }
  void ExpectEquals(const Map& m, const std::unordered_map<int, int>& model) {
    ASSERT_EQ(m.size(), model.size());
    ASSERT_TRUE(m.CheckInvariants().ok()) << m.CheckInvariants();
    std::map<int, int> seen;
    for (const auto& e : m) {
      EXPECT_EQ(e.hash, H(e.key));
      EXPECT_TRUE(seen.emplace(e.key, e.value).second)
          << "key twice: " << e.key;
    }
    const std::map<int, int> expected(model.begin(), model.end());
    EXPECT_EQ(seen, expected);
    for (const auto& [k, v] : model) {
      const int* got = Get(m, k);
      ASSERT_NE(got, nullptr) << k;
      EXPECT_EQ(*got, v);
    }
  }

  int64_t refs0_ = 0;
  int64_t nodes0_ = 0;
};

TEST_P(HamtTest, EmptyMap) {
  Map m;
  EXPECT_EQ(m.size(), 0u);
  EXPECT_TRUE(m.empty());
  EXPECT_EQ(Get(m, 1), nullptr);
  bool found = true;
  Map d = Del(m, 1, &found);
  EXPECT_FALSE(found);
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(m.begin(), m.end());
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST_P(HamtTest, SetFindDeleteOneKey) {
  Map m = Set(Map(), 7, 70);
  EXPECT_EQ(m.size(), 1u);
  ASSERT_NE(Get(m, 7), nullptr);
  EXPECT_EQ(*Get(m, 7), 70);
  EXPECT_EQ(Get(m, 8), nullptr);
  Map same = Set(m, 7, 70);  // the value it already has: same version
  EXPECT_TRUE(same.SameVersion(m));
  Map m2 = Set(m, 7, 71);
  EXPECT_EQ(*Get(m2, 7), 71);
  EXPECT_EQ(*Get(m, 7), 70);
  bool found = false;
  Map e = Del(m2, 7, &found);
  EXPECT_TRUE(found);
  EXPECT_TRUE(e.empty());
  EXPECT_TRUE(e.CheckInvariants().ok());
}

TEST_P(HamtTest, RandomOperationsMatchUnorderedMap) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    std::mt19937 rng(seed);
    const int key_space = seed == 1 ? 64 : 2000;
    std::uniform_int_distribution<int> key(0, key_space - 1);
    std::uniform_int_distribution<int> op(0, 9);
    Map m;
    std::unordered_map<int, int> model;
    for (int i = 0; i < 4000; ++i) {
      const int k = key(rng);
      const int o = op(rng);
      if (o < 5) {
        m = Set(m, k, i);
        model[k] = i;
      } else if (o < 8) {
        bool found = false;
        m = Del(m, k, &found);
        EXPECT_EQ(found, model.erase(k) == 1);
      } else {
        const int* v = Get(m, k);
        auto it = model.find(k);
        ASSERT_EQ(v != nullptr, it != model.end());
        if (v) EXPECT_EQ(*v, it->second);
      }
      ASSERT_EQ(m.size(), model.size());
      if (i % 500 == 0) {
        ASSERT_TRUE(m.CheckInvariants().ok()) << m.CheckInvariants();
      }
    }
    ExpectEquals(m, model);
    // Delete everything, in random order: back to an empty root.
    std::vector<int> keys;
    for (const auto& kv : model) keys.push_back(kv.first);
    std::shuffle(keys.begin(), keys.end(), rng);
    for (int k : keys) {
      bool found = false;
      m = Del(m, k, &found);
      ASSERT_TRUE(found);
      model.erase(k);
      if (key_space < 100 || model.size() % 97 == 0) ExpectEquals(m, model);
    }
    EXPECT_TRUE(m.empty());
    EXPECT_EQ(m.root_header(), nullptr);
  }
}

TEST_P(HamtTest, OldVersionsAreUnchangedByLaterEdits) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> key(0, 499);
  std::vector<std::pair<Map, std::unordered_map<int, int>>> versions;
  Map m;
  std::unordered_map<int, int> model;
  for (int i = 0; i < 3000; ++i) {
    const int k = key(rng);
    if (rng() % 3 == 0) {
      m = Del(m, k);
      model.erase(k);
    } else {
      m = Set(m, k, i);
      model[k] = i;
    }
    if (i % 150 == 0) versions.emplace_back(m, model);
  }
  for (const auto& [version, expected] : versions)
    ExpectEquals(version, expected);
}

TEST_P(HamtTest, DestroyingEveryVersionFreesEverything) {
  const int64_t nodes_before = g_nodes.load();
  {
    std::vector<Map> versions;
    Map m;
    for (int i = 0; i < 3000; ++i) {
      m = Set(m, i % 700, i);
      if (i % 10 == 0) versions.push_back(m);
    }
    EXPECT_GT(g_nodes.load(), nodes_before);
    EXPECT_GT(g_refs.load(), refs0_);
  }
  // TearDown checks that the counts are back where they started.
}

TEST_P(HamtTest, MutationMatchesPersistentEditsAndLeavesBaseAlone) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> key(0, 999);
  Map base;
  for (int i = 0; i < 500; ++i) base = Set(base, key(rng), i);
  std::unordered_map<int, int> base_model;
  for (const auto& e : base) base_model[e.key] = e.value;

  Map persistent = base;
  std::unordered_map<int, int> model = base_model;
  Map::Mutation mut(base);
  for (int i = 0; i < 3000; ++i) {
    const int k = key(rng);
    if (rng() % 3 == 0) {
      bool found = false;
      ASSERT_TRUE(mut.Delete(k, H(k), &found).ok());
      EXPECT_EQ(found, model.erase(k) == 1);
      persistent = Del(persistent, k);
    } else {
      Map::Garbage garbage;  // released at the end of the iteration
      ASSERT_TRUE(mut.Set(k, H(k), i, &garbage).ok());
      model[k] = i;
      persistent = Set(persistent, k, i);
    }
    ASSERT_EQ(mut.size(), model.size());
    if (i % 250 == 0) {
      ASSERT_TRUE(mut.CheckInvariants().ok()) << mut.CheckInvariants();
    }
  }
  ASSERT_TRUE(mut.CheckInvariants().ok()) << mut.CheckInvariants();
  Map done = mut.Finish();
  ExpectEquals(done, model);
  ExpectEquals(persistent, model);
  ExpectEquals(base, base_model);

  // The Mutation goes on after Finish without touching the finished version.
  std::unordered_map<int, int> after = model;
  for (int i = 0; i < 300; ++i) {
    const int k = key(rng);
    ASSERT_TRUE(mut.Set(k, H(k), -i).ok());
    after[k] = -i;
  }
  ASSERT_TRUE(mut.CheckInvariants().ok()) << mut.CheckInvariants();
  ExpectEquals(done, model);
  ExpectEquals(mut.Finish(), after);
}

TEST_P(HamtTest, DiffReportsExactlyTheChangedKeys) {
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> key(0, 2999);
  Map base;
  for (int i = 0; i < 2000; ++i) base = Set(base, key(rng), i);
  for (int round = 0; round < 30; ++round) {
    Map branch = base;
    const int edits = round % 5 == 0 ? 400 : 1 + round;
    if (round % 2 == 0) {
      for (int i = 0; i < edits; ++i) {
        const int k = key(rng);
        branch = rng() % 3 == 0 ? Del(branch, k) : Set(branch, k, -i);
      }
    } else {
      Map::Mutation mut(base);
      for (int i = 0; i < edits; ++i) {
        const int k = key(rng);
        bool found;
        ASSERT_TRUE((rng() % 3 == 0 ? mut.Delete(k, H(k), &found)
                                    : mut.Set(k, H(k), -i))
                        .ok());
      }
      branch = mut.Finish();
    }
    std::map<int, std::pair<int, int>> expected;  // key -> (before, after)
    std::unordered_map<int, int> a, b;
    for (const auto& e : base) a[e.key] = e.value;
    for (const auto& e : branch) b[e.key] = e.value;
    constexpr int kNone = INT32_MIN;
    for (const auto& [k, v] : a) {
      auto it = b.find(k);
      if (it == b.end()) {
        expected[k] = {v, kNone};
      } else if (it->second != v) {
        expected[k] = {v, it->second};
      }
    }
    for (const auto& [k, v] : b) {
      if (!a.count(k)) expected[k] = {kNone, v};
    }
    std::map<int, std::pair<int, int>> got;
    absl::Status s = branch.Diff(base, [&](const Map::Entry* before,
                                           const Map::Entry* after) {
      const int k = before ? before->key : after->key;
      EXPECT_TRUE(got.emplace(k, std::make_pair(before ? before->value : kNone,
                                                after ? after->value : kNone))
                      .second)
          << "key reported twice: " << k;
      return absl::OkStatus();
    });
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(got, expected) << "round " << round;
  }
  // Identical versions differ in nothing; a callback error stops the walk.
  int calls = 0;
  EXPECT_TRUE(base.Diff(base,
                        [&](auto, auto) {
                          ++calls;
                          return absl::OkStatus();
                        })
                  .ok());
  EXPECT_EQ(calls, 0);
  Map changed = Set(Set(base, 100001, 1), 100002, 2);
  absl::Status s = changed.Diff(base, [&](auto, auto) {
    ++calls;
    return absl::CancelledError("stop");
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 1);
  // Against an empty map, everything is added (or removed).
  calls = 0;
  EXPECT_TRUE(base.Diff(Map(),
                        [&](const Map::Entry* before, auto) {
                          EXPECT_EQ(before, nullptr);
                          ++calls;
                          return absl::OkStatus();
                        })
                  .ok());
  EXPECT_EQ(static_cast<size_t>(calls), base.size());
}

TEST_P(HamtTest, FailingKeyComparisonChangesNothing) {
  Map m;
  for (int i = 0; i < 300; ++i) m = Set(m, i, i);
  const Map before = m;
  Map::Mutation mut(m);
  ASSERT_TRUE(mut.Set(1, H(1), -1).ok());  // part of the tree is now owned
  // A probe whose hash meets stored keys gets compared, and the comparison
  // fails (kBadKey stands for a key whose __eq__ raises).
  for (int target : {0, 17, 299}) {
    const uint64_t h = H(target);
    const int* v = nullptr;
    EXPECT_EQ(m.Find(kBadKey, h, &v).code(), absl::StatusCode::kUnknown);
    Map out;
    EXPECT_EQ(m.Set(kBadKey, h, 5, &out).code(), absl::StatusCode::kUnknown);
    bool found = true;
    EXPECT_EQ(m.Delete(kBadKey, h, &out, &found).code(),
              absl::StatusCode::kUnknown);
    EXPECT_EQ(mut.Set(kBadKey, h, 5).code(), absl::StatusCode::kUnknown);
    EXPECT_EQ(mut.Delete(kBadKey, h, &found).code(),
              absl::StatusCode::kUnknown);
    int calls = 0;
    Map other = Set(Set(m, target, -7), 1000, 1);
    // Diff compares keys only where the two versions differ.
    absl::Status ds = other.Diff(m, [&](auto, auto) {
      ++calls;
      return absl::OkStatus();
    });
    EXPECT_TRUE(ds.ok()) << ds;
  }
  EXPECT_TRUE(m.SameVersion(before));
  EXPECT_EQ(m.size(), 300u);
  EXPECT_TRUE(mut.CheckInvariants().ok()) << mut.CheckInvariants();
  EXPECT_EQ(mut.size(), 300u);
  EXPECT_EQ(*Get(mut.current(), 1), -1);
}

TEST_P(HamtTest, OutOfMemoryChangesNothingAndLeaksNothing) {
  std::mt19937 rng(3);
  Map m;
  for (int i = 0; i < 400; ++i) m = Set(m, static_cast<int>(rng() % 1000), i);
  std::unordered_map<int, int> model;
  for (const auto& e : m) model[e.key] = e.value;
  // Each edit with its n-th allocation failing, for every n it reaches; the
  // Mutation variant first makes part of the tree its own.
  for (int trial = 0; trial < 40; ++trial) {
    const int k = static_cast<int>(rng() % 1200);
    const int warm = static_cast<int>(rng() % 1200);
    const bool del = trial % 3 == 0;
    for (int n = 0;; ++n) {
      bool failed_somewhere = false;
      Map out;
      bool found = false;
      g_fail_after = n;
      absl::Status s =
          del ? m.Delete(k, H(k), &out, &found) : m.Set(k, H(k), -trial, &out);
      failed_somewhere |= g_fail_after.load() < 0;
      g_fail_after = -1;
      if (!s.ok()) EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);

      Map::Mutation mut(m);
      ASSERT_TRUE(mut.Set(warm, H(warm), 12345).ok());
      std::unordered_map<int, int> warm_model = model;
      warm_model[warm] = 12345;
      g_fail_after = n;
      absl::Status ms =
          del ? mut.Delete(k, H(k), &found) : mut.Set(k, H(k), -trial);
      failed_somewhere |= g_fail_after.load() < 0;
      g_fail_after = -1;
      ASSERT_TRUE(mut.CheckInvariants().ok()) << mut.CheckInvariants();
      if (!ms.ok()) {
        EXPECT_EQ(ms.code(), absl::StatusCode::kResourceExhausted);
        ExpectEquals(mut.Finish(), warm_model);  // the failed edit did nothing
      }
      if (!failed_somewhere) break;  // both edits needed at most n allocations
    }
    ExpectEquals(m, model);
  }
}

INSTANTIATE_TEST_SUITE_P(Hashes, HamtTest, ::testing::ValuesIn(kHashers),
                         [](const auto& info) { return info.param.name; });

// ------------------------------------------------------- shape and cost

TEST(HamtShapeTest, OneSetCopiesOnlyThePath) {
  Map m;
  {
    Map::Mutation mut(m);
    for (int i = 0; i < 10000; ++i) {
      ASSERT_TRUE(mut.Set(i, Mix(i), i).ok());
    }
    m = mut.Finish();
  }
  const int64_t before = g_allocs.load();
  Map m2;
  ASSERT_TRUE(m.Set(5, Mix(5), -5, &m2).ok());
  const int64_t path = g_allocs.load() - before;
  EXPECT_GE(path, 1);
  EXPECT_LE(path, 5);  // depth of a 10,000-key trie: ~3-4 levels
  int changes = 0;
  ASSERT_TRUE(m2.Diff(m, [&](const Map::Entry* a, const Map::Entry* b) {
                  EXPECT_EQ(a->key, 5);
                  EXPECT_EQ(b->value, -5);
                  ++changes;
                  return absl::OkStatus();
                }).ok());
  EXPECT_EQ(changes, 1);
}

TEST(HamtShapeTest, MutationEditsItsOwnNodesInPlace) {
  Map base;
  {
    Map::Mutation mut(base);
    for (int i = 0; i < 10000; ++i) ASSERT_TRUE(mut.Set(i, Mix(i), i).ok());
    base = mut.Finish();
  }
  // Replacing 1000 values of one Mutation copies each path at most once.
  int64_t before = g_allocs.load();
  Map::Mutation mut(base);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(mut.Set(i, Mix(i), -i).ok());
  const int64_t batched = g_allocs.load() - before;
  before = g_allocs.load();
  Map persistent = base;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(persistent.Set(i, Mix(i), -i, &persistent).ok());
  }
  const int64_t one_by_one = g_allocs.load() - before;
  EXPECT_GE(one_by_one, 3000);  // a whole path per edit
  EXPECT_LT(batched, one_by_one / 2);
  // Edits of values only: the second pass over the same keys allocates
  // nothing at all.
  before = g_allocs.load();
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(mut.Set(i, Mix(i), i * 7).ok());
  EXPECT_EQ(g_allocs.load() - before, 0);
  EXPECT_TRUE(mut.CheckInvariants().ok()) << mut.CheckInvariants();
}

TEST(HamtShapeTest, CanonicalShapeDependsOnlyOnTheKeys) {
  // Building a key set directly, or building a superset and deleting down
  // to it (one key at a time, checking the shape after each), ends with the
  // same number of nodes. The kept sets include whole hash classes, so that
  // deletions empty collision nodes and collapse chains of single children.
  auto nodes_of = [](const std::vector<int>& keys, const std::vector<int>& drop,
                     uint64_t (*h)(int)) {
    const int64_t before = g_nodes.load();
    Map m;
    for (int k : keys) EXPECT_TRUE(m.Set(k, h(k), k, &m).ok());
    for (int k : drop) {
      bool found;
      EXPECT_TRUE(m.Delete(k, h(k), &m, &found).ok());
      EXPECT_TRUE(found);
      absl::Status s = m.CheckInvariants();
      EXPECT_TRUE(s.ok()) << s;
      if (!s.ok()) break;
    }
    return g_nodes.load() - before;
  };
  std::mt19937 rng(1);
  for (const Hasher& hasher : kHashers) {
    for (int keep_mod : {1, 2, 3, 5}) {
      std::vector<int> kept, dropped;
      for (int i = 0; i < 240; ++i)
        (i % 5 < keep_mod ? kept : dropped).push_back(i);
      std::vector<int> all = kept;
      all.insert(all.end(), dropped.begin(), dropped.end());
      std::shuffle(all.begin(), all.end(), rng);
      std::shuffle(dropped.begin(), dropped.end(), rng);
      EXPECT_EQ(nodes_of(all, dropped, hasher.fn),
                nodes_of(kept, {}, hasher.fn))
          << hasher.name << " keeping i % 5 < " << keep_mod;
    }
  }
}

// ------------------------------------------------------------- threads

// Threads share snapshots: every thread reads, iterates, derives from and
// finally drops the same versions, and the main thread lets go of them
// first, so the last reference to a version (and the freeing of its nodes)
// is dropped by whichever worker finishes with it last, while others may
// still be reading it. TSan checks that the reference counts order those
// reads before the frees.
TEST(HamtThreadsTest, SharedSnapshotsAcrossThreads) {
  const int64_t nodes0 = g_nodes.load();
  const int64_t refs0 = g_refs.load();
  constexpr int kThreads = 4;
  constexpr int kVersions = 40;
  std::atomic<int> errors{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  {
    std::vector<Map> versions;
    Map m;
    for (int i = 0; i < 3000; ++i) ASSERT_TRUE(m.Set(i, Mix(i), i, &m).ok());
    for (int v = 0; v < kVersions; ++v) {
      ASSERT_TRUE(m.Set(v, Mix(v), -v, &m).ok());
      bool found;
      ASSERT_TRUE(m.Delete(3000 - v, Mix(3000 - v), &m, &found).ok());
      versions.push_back(m);
    }
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&errors, &go, t, mine = versions]() mutable {
        while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
        std::mt19937 rng(t);
        std::vector<int> order(mine.size());
        for (size_t i = 0; i < order.size(); ++i)
          order[i] = static_cast<int>(i);
        std::shuffle(order.begin(), order.end(), rng);
        for (int v : order) {
          Map& version = mine[v];
          for (int i = 0; i < 200; ++i) {
            const int k = static_cast<int>(rng() % 3100);
            const int* got = nullptr;
            if (!version.Find(k, Mix(k), &got).ok()) errors.fetch_add(1);
            const bool expect = k < 3000 && k <= 3000 - kVersions;
            if (expect && (got == nullptr || *got != (k <= v ? -k : k))) {
              errors.fetch_add(1);
            }
          }
          size_t n = 0;
          for (const auto& e : version) n += e.key >= 0;
          if (n != version.size()) errors.fetch_add(1);
          Map derived;
          if (!version.Set(-1, Mix(-1), t, &derived).ok()) errors.fetch_add(1);
          Map::Mutation mut(version);
          bool found;
          if (!mut.Delete(v, Mix(v), &found).ok() || !found)
            errors.fetch_add(1);
          derived = mut.Finish();
          version = Map();  // maybe the last reference: frees nodes here
        }
      });
    }
    m = Map();
  }  // the main thread's references are gone before the workers start
  go.store(true, std::memory_order_release);
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(g_nodes.load(), nodes0);
  EXPECT_EQ(g_refs.load(), refs0);
}

}  // namespace
}  // namespace caudal
