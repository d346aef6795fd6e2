// ResultCache under pressure: values removed by a call survive it in
// `dropped` (and their destructors may call back into the cache), random
// concurrent operations keep the invariants, and invalidation epochs keep
// results of executions that began before an invalidation out of the cache.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "caudal/cache/result_cache.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "result_cache_test_util.h"

namespace caudal {
namespace {

using result_cache_test::Has;
using result_cache_test::K;
using result_cache_test::kNoTags;
using result_cache_test::Options;
using result_cache_test::PutSimple;
using ::testing::ElementsAre;
using ::testing::Optional;
using ::testing::UnorderedElementsAre;

struct Probe {
  explicit Probe(int id) : id(id) {}
  int id;
};
using ProbePtr = std::shared_ptr<Probe>;

TEST(ResultCacheDroppedTest, RemovedValuesSurviveTheCallInDropped) {
  ResultCache<ProbePtr> c(Options(2, 0));
  std::vector<std::weak_ptr<Probe>> watch;
  auto put = [&](int id, int64_t expires, std::vector<ProbePtr>* dropped) {
    auto p = std::make_shared<Probe>(id);
    watch.push_back(p);
    const std::vector<std::string> tags = {"t" + std::to_string(id % 2)};
    c.Put(K(id), std::move(p), 1, expires, id % 3, tags, dropped);
  };
  std::vector<ProbePtr> dropped;
  auto expect_dropped_alive = [&](size_t n) {
    ASSERT_EQ(dropped.size(), n);
    for (const ProbePtr& p : dropped) ASSERT_NE(p, nullptr);
    dropped.clear();
  };
  put(0, kNeverExpires, &dropped);
  put(1, 10, &dropped);
  put(2, kNeverExpires, &dropped);   // evicts 0
  EXPECT_FALSE(watch[0].expired());  // alive: the cache gave it to us
  expect_dropped_alive(1);
  EXPECT_TRUE(watch[0].expired());  // and we destroyed it
  put(2, kNeverExpires, &dropped);  // replaces 2
  EXPECT_FALSE(watch[2].expired());
  expect_dropped_alive(1);
  EXPECT_TRUE(watch[2].expired());
  EXPECT_EQ(c.Get(K(1), 10, &dropped), absl::nullopt);  // expired
  EXPECT_FALSE(watch[1].expired());
  expect_dropped_alive(1);
  put(4, kNeverExpires, &dropped);
  EXPECT_EQ(c.InvalidateTag("t0", &dropped), 2u);  // ids 2 (replaced) and 4
  expect_dropped_alive(2);
  put(5, kNeverExpires, &dropped);
  put(6, kNeverExpires, &dropped);
  EXPECT_EQ(c.InvalidateGroup(0, &dropped), 1u);  // id 6
  expect_dropped_alive(1);
  put(7, kNeverExpires, &dropped);
  ASSERT_TRUE(c.Resize(1, 0, &dropped).ok());
  expect_dropped_alive(1);
  EXPECT_TRUE(c.Erase(K(7), &dropped));
  expect_dropped_alive(1);
  put(8, kNeverExpires, &dropped);
  c.Clear(&dropped);
  expect_dropped_alive(1);
  put(9, 5, &dropped);
  EXPECT_EQ(c.EvictExpired(5, &dropped), 1u);
  expect_dropped_alive(1);
  // Nothing leaked: every value ever stored is gone.
  for (size_t i = 0; i < watch.size(); ++i) {
    EXPECT_TRUE(watch[i].expired()) << "value " << i << " leaked";
  }
}

// Runs fn on another thread; aborts the test binary if it does not finish
// (a value destroyed under the shard lock and calling back in deadlocks).
void RunOrDie(const std::function<void()>& fn) {
  absl::Notification done;
  std::thread t([&] {
    fn();
    done.Notify();
  });
  if (!done.WaitForNotificationWithTimeout(absl::Seconds(60))) {
    std::fprintf(stderr, "deadlock: a value was destroyed under a lock\n");
    std::abort();
  }
  t.join();
}

// A value whose destruction calls back into the cache, as a Python object's
// __del__ might.
class Reentrant {
 public:
  Reentrant(ResultCache<std::shared_ptr<Reentrant>>* cache, int* calls)
      : cache_(cache), calls_(calls) {}
  ~Reentrant() {
    cache_->Get(K(12345), 0);  // same (only) shard: would self-deadlock
    ++*calls_;
  }

 private:
  ResultCache<std::shared_ptr<Reentrant>>* cache_;
  int* calls_;
};

TEST(ResultCacheDroppedTest, DestructorsMayCallBackIntoTheCache) {
  using RPtr = std::shared_ptr<Reentrant>;
  ResultCache<RPtr> c(Options(1, 0));
  ASSERT_EQ(c.num_shards(), 1u);
  int calls = 0;
  auto value = [&] { return std::make_shared<Reentrant>(&c, &calls); };
  RunOrDie([&] {
    // With dropped == nullptr the cache destroys values after unlocking.
    c.Put(K(1), value(), 1, 5, 7, {"t"}, nullptr);
    c.Put(K(1), value(), 1, 5, 7, {"t"}, nullptr);  // replace
    c.Put(K(2), value(), 1, 5, 7, {"t"}, nullptr);  // evict
    EXPECT_EQ(c.Get(K(2), 5), absl::nullopt);       // expire
    c.Put(K(3), value(), 1, kNeverExpires, 7, {"t"}, nullptr);
    EXPECT_EQ(c.InvalidateTag("t"), 1u);
    c.Put(K(3), value(), 1, kNeverExpires, 7, {"t"}, nullptr);
    EXPECT_EQ(c.InvalidateGroup(7), 1u);
    c.Put(K(3), value(), 1, kNeverExpires, 7, {"t"}, nullptr);
    EXPECT_TRUE(c.Erase(K(3)));
    c.Put(K(3), value(), 1, kNeverExpires, 7, {"t"}, nullptr);
    ASSERT_TRUE(c.Resize(1, 0).ok());
    c.Clear();
    c.Put(K(3), value(), 1, 9, 7, {"t"}, nullptr);
    EXPECT_EQ(c.EvictExpired(9), 1u);
  });
  EXPECT_EQ(calls, 8);  // every value stored was destroyed, none under a lock
}

// --- Concurrency
// --------------------------------------------------------------

std::atomic<int64_t> g_live_values{0};

struct Tracked {
  explicit Tracked(uint64_t key_id) : key_id(key_id) { ++g_live_values; }
  ~Tracked() { --g_live_values; }
  uint64_t key_id;
};

TEST(ResultCacheConcurrencyTest, RandomOperationsKeepInvariants) {
  using TPtr = std::shared_ptr<Tracked>;
  constexpr size_t kMaxEntries = 400;
  constexpr size_t kMaxBytes = 8 << 20;
  constexpr int kThreads = 4;
  constexpr int kOpsPerThread = 100000;
  ResultCache<TPtr> cache(Options(kMaxEntries, kMaxBytes));
  ASSERT_GT(cache.num_shards(), 1u);
  std::atomic<int64_t> clock{0};
  std::atomic<bool> wrong_value{false};
  std::atomic<bool> invariants_broken{false};
  const std::vector<std::vector<std::string>> tag_sets = {
      {}, {"a"}, {"b"}, {"a", "b"}, {"c", "a"}, {"d"}};

  std::atomic<uint64_t> gets{0};
  auto worker = [&](int seed) {
    std::mt19937_64 rng(seed);
    std::vector<TPtr> dropped;
    for (int op = 0; op < kOpsPerThread; ++op) {
      const uint64_t id = rng() % 800;
      const int64_t now = clock.fetch_add(1, std::memory_order_relaxed);
      const uint32_t pick = rng() % 10000;
      if (pick < 5500) {
        gets.fetch_add(1, std::memory_order_relaxed);
        absl::optional<TPtr> v = cache.Get(K(id), now, &dropped);
        if (v.has_value() && (*v == nullptr || (*v)->key_id != id)) {
          wrong_value = true;
        }
      } else if (pick < 9400) {
        const size_t bytes = 1 + rng() % 60000;
        const int64_t ttl = 1 + static_cast<int64_t>(rng() % 20000);
        cache.Put(K(id), std::make_shared<Tracked>(id), bytes, now + ttl,
                  /*group=*/id % 5, tag_sets[rng() % tag_sets.size()],
                  &dropped);
      } else if (pick < 9800) {
        cache.Erase(K(id), &dropped);
      } else if (pick < 9830) {
        cache.InvalidateTag(rng() % 2 == 0 ? "a" : "d", &dropped);
      } else if (pick < 9850) {
        cache.InvalidateGroup(rng() % 5, &dropped);
      } else if (pick < 9900) {
        cache.EvictExpired(now, &dropped);
      } else if (pick < 9950) {
        const size_t entries = rng() % 2 == 0 ? kMaxEntries : kMaxEntries / 2;
        ASSERT_TRUE(cache.Resize(entries, kMaxBytes, &dropped).ok());
      } else if (pick < 9952) {
        cache.Clear(&dropped);
      } else if (pick < 9990) {
        const ResultCacheStats st = cache.GetStats();
        (void)st;
      } else {
        if (!cache.CheckInvariants().ok()) invariants_broken = true;
      }
      dropped.clear();  // destroyed here, outside every lock
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, 1000 + t);
  for (std::thread& t : threads) t.join();

  EXPECT_FALSE(wrong_value) << "Get returned a value stored under another key";
  EXPECT_FALSE(invariants_broken);
  const absl::Status status = cache.CheckInvariants();
  EXPECT_TRUE(status.ok()) << status;
  const ResultCacheStats st = cache.GetStats();
  EXPECT_LE(st.entries, st.max_entries);
  EXPECT_LE(st.bytes, kMaxBytes);
  std::printf(
      "hits %llu misses %llu inserts %llu evictions %llu expirations %llu "
      "invalidations %llu entries %zu bytes %zu\n",
      static_cast<unsigned long long>(st.hits),
      static_cast<unsigned long long>(st.misses),
      static_cast<unsigned long long>(st.inserts),
      static_cast<unsigned long long>(st.evictions),
      static_cast<unsigned long long>(st.expirations),
      static_cast<unsigned long long>(st.invalidations), st.entries, st.bytes);
  EXPECT_EQ(st.hits + st.misses, gets.load());
  EXPECT_GT(st.hits, 0u);
  EXPECT_GT(st.evictions, 0u);
  EXPECT_GT(st.expirations, 0u);
  EXPECT_GT(st.invalidations, 0u);
  // Nothing leaked: after Clear (and dropping what it returns) no value is
  // alive anywhere.
  std::vector<TPtr> dropped;
  cache.Clear(&dropped);
  dropped.clear();
  EXPECT_EQ(g_live_values.load(), 0);
}

// ---------------------------------------------------- invalidation epochs

namespace epochs {

const std::vector<std::string> kTagT = {"t"};
const std::vector<std::string> kTagU = {"u"};

TEST(ResultCacheEpochTest, PutSinceBeforeATagInvalidationIsNotStored) {
  ResultCache<std::string> c(Options(100));
  const uint64_t before = c.Epoch();
  EXPECT_EQ(c.InvalidateTag("t"), 0u);
  std::vector<std::string> dropped;
  EXPECT_FALSE(
      c.Put(K(1), "stale", 1, kNeverExpires, 0, kTagT, &dropped, before));
  EXPECT_THAT(dropped, ElementsAre("stale"));
  EXPECT_FALSE(Has(c, 1));
  EXPECT_EQ(c.GetStats().stale, 1u);
  EXPECT_EQ(c.GetStats().inserts, 0u);
  // Another tag, and no tag at all, are not covered by it.
  EXPECT_TRUE(
      c.Put(K(2), "other", 1, kNeverExpires, 0, kTagU, nullptr, before));
  EXPECT_TRUE(
      c.Put(K(3), "none", 1, kNeverExpires, 0, kNoTags, nullptr, before));
  // An execution that began after the invalidation stores.
  EXPECT_TRUE(
      c.Put(K(1), "fresh", 1, kNeverExpires, 0, kTagT, nullptr, c.Epoch()));
  EXPECT_THAT(c.Get(K(1), 0), Optional(std::string("fresh")));
  // Without since_epoch, Put is not checked (a caller that has none).
  EXPECT_TRUE(c.Put(K(4), "unchecked", 1, kNeverExpires, 0, kTagT));
  EXPECT_TRUE(c.CheckInvariants().ok());
}

TEST(ResultCacheEpochTest, GroupAndClearCoverTheirResults) {
  ResultCache<std::string> c(Options(100));
  const uint64_t before = c.Epoch();
  c.InvalidateGroup(7);
  EXPECT_FALSE(c.Storable(before, 7, kNoTags));
  EXPECT_TRUE(c.Storable(before, 8, kNoTags));
  EXPECT_FALSE(
      c.Put(K(1), "g7", 1, kNeverExpires, 7, kNoTags, nullptr, before));
  EXPECT_TRUE(c.Put(K(2), "g8", 1, kNeverExpires, 8, kNoTags, nullptr, before));
  const uint64_t before_clear = c.Epoch();
  EXPECT_TRUE(c.Storable(before_clear, 7, kTagT));
  c.Clear();
  for (uint64_t g : {0, 7, 8, 12345}) {
    EXPECT_FALSE(c.Storable(before_clear, g, kNoTags)) << g;
    EXPECT_FALSE(c.Storable(before, g, kTagU)) << g;
  }
  EXPECT_TRUE(c.Storable(c.Epoch(), 7, kTagT));
  EXPECT_TRUE(c.Storable(kAnyEpoch, 7, kTagT));
  EXPECT_EQ(c.GetStats().stale, 1u);
}

TEST(ResultCacheEpochTest, AStaleResultLeavesTheOlderEntryAlone) {
  // The invalidation that made it stale removed (or will remove) the older
  // entry itself; the refused Put does not count as superseding it.
  ResultCache<std::string> c(Options(100));
  const uint64_t before = c.Epoch();
  c.InvalidateTag("t");
  c.Put(K(1), "kept", 1, kNeverExpires, 0, kTagU);
  EXPECT_FALSE(
      c.Put(K(1), "stale", 1, kNeverExpires, 0, kTagT, nullptr, before));
  EXPECT_THAT(c.Get(K(1), 0), Optional(std::string("kept")));
}

TEST(ResultCacheEpochTest, EpochsOnlyGrowAndEachInvalidationTakesOne) {
  ResultCache<std::string> c(Options(100));
  const uint64_t e0 = c.Epoch();
  c.InvalidateTag("a");
  c.InvalidateGroup(1);
  c.Clear();
  EXPECT_EQ(c.Epoch(), e0 + 3);
  // A tag invalidated long ago does not make a later execution stale.
  const uint64_t e1 = c.Epoch();
  c.InvalidateTag("b");
  EXPECT_TRUE(c.Storable(e1, 0, {"a"}));
  EXPECT_FALSE(c.Storable(e1, 0, {"a", "b"}));
}

// Races: executions begin, an invalidation of their tag runs concurrently,
// then they store. A result from an execution that began before the
// invalidation started must not be in the cache once both are done.
TEST(ResultCacheEpochTest, NoStaleStoreSurvivesConcurrentInvalidations) {
  constexpr int kRounds = 2000;
  ResultCache<std::string> c(Options(1024));
  for (int round = 0; round < kRounds; ++round) {
    const uint64_t begun = c.Epoch();  // the execution began
    absl::Notification start;
    std::thread invalidator([&] {
      start.WaitForNotification();
      c.InvalidateTag(round % 2 ? "t" : "u");
      c.InvalidateGroup(3);
    });
    start.Notify();
    // Stores racing the invalidations (each covered by one of them).
    c.Put(K(round * 3), "t", 1, kNeverExpires, 0, kTagT, nullptr, begun);
    c.Put(K(round * 3 + 1), "u", 1, kNeverExpires, 0, kTagU, nullptr, begun);
    c.Put(K(round * 3 + 2), "g", 1, kNeverExpires, 3, kNoTags, nullptr, begun);
    invalidator.join();
    const char* tag = round % 2 ? "t" : "u";
    const uint64_t tagged = round % 2 ? round * 3 : round * 3 + 1;
    EXPECT_FALSE(Has(c, tagged)) << "round " << round << " tag " << tag;
    EXPECT_FALSE(Has(c, round * 3 + 2)) << "round " << round << " group";
    c.Clear();
  }
  EXPECT_TRUE(c.CheckInvariants().ok());
}

}  // namespace epochs

}  // namespace
}  // namespace caudal
