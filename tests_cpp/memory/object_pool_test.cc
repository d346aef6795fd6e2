#include "caudal/memory/object_pool.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

struct Rec {
  int value = 0;
  static inline std::atomic<int> live{0};
  Rec() { live++; }
  ~Rec() { live--; }
};

TEST(ObjectPoolTest, ReusesReleasedObjects) {
  ObjectPool<Rec> pool(4);
  Rec* a = pool.Acquire();
  a->value = 7;
  pool.Release(a);
  Rec* b = pool.Acquire();
  EXPECT_EQ(b, a);         // the same object back
  EXPECT_EQ(b->value, 7);  // as released: the caller resets it
  pool.Release(b);
  const ObjectPoolStats st = pool.Stats();
  EXPECT_EQ(st.misses, 1u);
  EXPECT_EQ(st.hits, 1u);
  EXPECT_EQ(st.releases, 2u);
  EXPECT_EQ(st.idle, 1u);
  EXPECT_EQ(st.in_use, 0);
  EXPECT_DOUBLE_EQ(st.hit_rate, 0.5);
}

TEST(ObjectPoolTest, IdleObjectsBoundedExactly) {
  const int live_before = Rec::live.load();
  {
    ObjectPool<Rec> pool(3);
    std::vector<Rec*> out;
    for (int i = 0; i < 10; ++i) out.push_back(pool.Acquire());
    ObjectPoolStats st = pool.Stats();
    EXPECT_EQ(st.in_use, 10);
    EXPECT_EQ(st.utilization, 1.0);
    for (Rec* r : out) pool.Release(r);
    st = pool.Stats();
    EXPECT_EQ(st.idle, 3u);
    EXPECT_EQ(st.releases, 3u);
    EXPECT_EQ(st.discards, 7u);  // deleted: the pool was full
    EXPECT_EQ(st.in_use, 0);
    EXPECT_EQ(st.utilization, 0.0);
    EXPECT_EQ(Rec::live.load() - live_before, 3);
    Rec* one = pool.Acquire();
    st = pool.Stats();
    EXPECT_DOUBLE_EQ(st.utilization, 1.0 / 3.0);  // 1 in use, 2 idle
    pool.Release(one);
  }
  EXPECT_EQ(Rec::live.load(), live_before);  // the pool frees its idle ones
}

TEST(ObjectPoolTest, TrimAndSetMaxIdle) {
  ObjectPool<Rec> pool(8);
  std::vector<Rec*> out;
  for (int i = 0; i < 8; ++i) out.push_back(pool.Acquire());
  for (Rec* r : out) pool.Release(r);
  EXPECT_EQ(pool.idle(), 8u);
  EXPECT_EQ(pool.Trim(5), 3u);
  EXPECT_EQ(pool.idle(), 5u);
  EXPECT_EQ(pool.SetMaxIdle(2), 3u);
  EXPECT_EQ(pool.idle(), 2u);
  EXPECT_EQ(pool.Stats().trimmed, 6u);
  // Cap 0: pooling off, releases delete.
  pool.SetMaxIdle(0);
  Rec* r = pool.Acquire();  // a miss: nothing idle
  pool.Release(r);
  EXPECT_EQ(pool.idle(), 0u);
  EXPECT_EQ(pool.Stats().discards, 1u);
  // Raised again: pooling resumes.
  pool.SetMaxIdle(4);
  r = pool.Acquire();
  pool.Release(r);
  EXPECT_EQ(pool.idle(), 1u);
}

TEST(ObjectPoolTest, ObjectsReleasedOnAnotherThreadAreFound) {
  ObjectPool<Rec> pool(4);
  Rec* r = pool.Acquire();
  std::thread([&] { pool.Release(r); }).join();  // lands in another shard
  EXPECT_EQ(pool.Acquire(), r);                  // found there
  pool.Release(r);
}

TEST(ObjectPoolTest, ConcurrentAcquireReleaseNeverSharesAnObject) {
  ObjectPool<Rec> pool(16);
  constexpr int kThreads = 4;
  constexpr int kRounds = 20000;
  std::atomic<int> owners_clash{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        Rec* a = pool.Acquire();
        Rec* b = pool.Acquire();
        if (a == b) owners_clash++;
        a->value = t;  // the thread owns it now (TSan sees a race otherwise)
        b->value = t;
        pool.Release(a);
        pool.Release(b);
        if (i % 1000 == 0) pool.Trim(4);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(owners_clash.load(), 0);
  const ObjectPoolStats st = pool.Stats();
  EXPECT_EQ(st.in_use, 0);
  EXPECT_EQ(st.hits + st.misses, uint64_t{kThreads} * kRounds * 2);
  EXPECT_EQ(st.releases + st.discards, st.hits + st.misses);
  EXPECT_LE(st.idle, 16u);
}

}  // namespace
}  // namespace caudal
