#include "caudal/cache/result_cache.h"

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
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using ::testing::ElementsAre;
using ::testing::Optional;
using ::testing::UnorderedElementsAre;

// A well-spread key for a small integer (the shard comes from key.hi).
Key128 K(uint64_t i) {
  auto mix = [](uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  return Key128{mix(i * 2 + 1), mix(i * 2 + 2)};
}

const std::vector<std::string> kNoTags;

ResultCacheOptions Options(size_t max_entries, size_t max_bytes = 0,
                           size_t num_shards = 16) {
  ResultCacheOptions o;
  o.max_entries = max_entries;
  o.max_bytes = max_bytes;
  o.num_shards = num_shards;
  return o;
}

// Puts "v<i>" under K(i), 1 byte, never expiring, group 0, no tags.
void PutSimple(ResultCache<std::string>& c, uint64_t i,
               std::vector<std::string>* dropped = nullptr) {
  c.Put(K(i), "v" + std::to_string(i), 1, kNeverExpires, 0, kNoTags, dropped);
}

bool Has(ResultCache<std::string>& c, uint64_t i, int64_t now = 0) {
  return c.Get(K(i), now).has_value();
}

TEST(ResultCacheOptionsTest, Validation) {
  EXPECT_TRUE(ValidateResultCacheOptions(Options(1)).ok());
  EXPECT_EQ(ValidateResultCacheOptions(Options(0)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateResultCacheOptions(Options(10, 0, 3)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateResultCacheOptions(Options(10, 0, 0)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ResultCache<std::string>::Create(Options(0)).ok());
  auto cache = ResultCache<std::string>::Create(Options(10));
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ((*cache)->num_shards(), 1u);
}

TEST(ResultCacheOptionsTest, ShardCountKeepsShardsUseful) {
  using cache_internal::ShardCountFor;
  EXPECT_EQ(ShardCountFor(Options(3)), 1u);
  EXPECT_EQ(ShardCountFor(Options(63)), 1u);
  EXPECT_EQ(ShardCountFor(Options(64)), 2u);
  EXPECT_EQ(ShardCountFor(Options(500)), 8u);  // the default cache_max_size
  EXPECT_EQ(ShardCountFor(Options(100000)), 16u);
  EXPECT_EQ(ShardCountFor(Options(100000, 0, 4)), 4u);
  EXPECT_EQ(ShardCountFor(Options(100000, size_t{4} << 20)), 4u);
  EXPECT_EQ(ShardCountFor(Options(100000, 1000)), 1u);
  // Invalid shard counts are rounded down (the constructor clamps).
  EXPECT_EQ(ShardCountFor(Options(100000, 0, 12)), 8u);
  EXPECT_EQ(ShardCountFor(Options(100000, 0, 0)), 1u);
}

TEST(ResultCacheOptionsTest, SharesAddUp) {
  using cache_internal::ShareOf;
  size_t sum = 0;
  for (size_t i = 0; i < 8; ++i) sum += ShareOf(500, 8, i);
  EXPECT_EQ(sum, 500u);
  EXPECT_EQ(ShareOf(500, 8, 0), 63u);
  EXPECT_EQ(ShareOf(500, 8, 7), 62u);
}

TEST(ResultCacheTest, SmallCacheHoldsExactlyItsBound) {
  ResultCache<std::string> c(Options(3));  // 16 shards asked, 1 used
  for (uint64_t i = 0; i < 3; ++i) PutSimple(c, i);
  EXPECT_TRUE(Has(c, 0));
  EXPECT_TRUE(Has(c, 1));
  EXPECT_TRUE(Has(c, 2));
  EXPECT_EQ(c.GetStats().entries, 3u);
  PutSimple(c, 3);
  EXPECT_EQ(c.GetStats().entries, 3u);
  EXPECT_EQ(c.GetStats().evictions, 1u);
}

TEST(ResultCacheTest, GetReturnsWhatPutStored) {
  ResultCache<std::string> c(Options(10));
  EXPECT_EQ(c.Get(K(1), 0), absl::nullopt);
  PutSimple(c, 1);
  EXPECT_THAT(c.Get(K(1), 0), Optional(std::string("v1")));
  EXPECT_EQ(c.Get(K(2), 0), absl::nullopt);
}

TEST(ResultCacheTest, EvictsLeastRecentlyUsed) {
  ResultCache<std::string> c(Options(3));
  PutSimple(c, 1);
  PutSimple(c, 2);
  PutSimple(c, 3);
  // Order (most recent first): 3 2 1. A hit on 1 makes it the most recent.
  EXPECT_TRUE(Has(c, 1));  // 1 3 2
  PutSimple(c, 4);         // evicts 2 -> 4 1 3
  EXPECT_FALSE(Has(c, 2));
  PutSimple(c, 5);  // evicts 3 -> 5 4 1
  EXPECT_FALSE(Has(c, 3));
  // Replacing an entry also makes it the most recent.
  PutSimple(c, 1);  // 1 5 4
  PutSimple(c, 6);  // evicts 4
  EXPECT_FALSE(Has(c, 4));
  EXPECT_TRUE(Has(c, 1));
  EXPECT_TRUE(Has(c, 5));
  EXPECT_TRUE(Has(c, 6));
  // A miss does not change the order.
  EXPECT_FALSE(Has(c, 99));
  EXPECT_TRUE(c.CheckInvariants().ok()) << c.CheckInvariants();
}

TEST(ResultCacheTest, ExpiresExactlyAtExpiresAt) {
  ResultCache<std::string> c(Options(10));
  c.Put(K(1), "a", 1, /*expires_at_ns=*/100, 0, kNoTags);
  EXPECT_TRUE(Has(c, 1, 0));
  EXPECT_TRUE(Has(c, 1, 99));
  ResultCacheStats st = c.GetStats();
  EXPECT_EQ(st.hits, 2u);
  EXPECT_EQ(st.expirations, 0u);
  // Expired from expires_at on: counted as an expiration and a miss, removed.
  std::vector<std::string> dropped;
  EXPECT_EQ(c.Get(K(1), 100, &dropped), absl::nullopt);
  EXPECT_THAT(dropped, ElementsAre("a"));
  st = c.GetStats();
  EXPECT_EQ(st.expirations, 1u);
  EXPECT_EQ(st.misses, 1u);
  EXPECT_EQ(st.entries, 0u);
  EXPECT_EQ(st.bytes, 0u);
  // Now plainly absent: a miss, not another expiration.
  EXPECT_FALSE(Has(c, 1, 50));
  EXPECT_EQ(c.GetStats().expirations, 1u);
  EXPECT_EQ(c.GetStats().misses, 2u);
}

TEST(ResultCacheTest, ExpiryEdgeCases) {
  ResultCache<std::string> c(Options(10));
  c.Put(K(1), "never", 1, kNeverExpires, 0, kNoTags);
  EXPECT_TRUE(Has(c, 1, kNeverExpires - 1));
  // Already expired when stored: never returned.
  c.Put(K(2), "stale", 1, /*expires_at_ns=*/-5, 0, kNoTags);
  EXPECT_FALSE(Has(c, 2, -5));
  c.Put(K(3), "now", 1, /*expires_at_ns=*/7, 0, kNoTags);
  EXPECT_FALSE(Has(c, 3, 7));
  // Negative times work like any other (time is just an input).
  c.Put(K(4), "neg", 1, /*expires_at_ns=*/-10, 0, kNoTags);
  EXPECT_TRUE(Has(c, 4, -11));
}

TEST(ResultCacheTest, EvictExpiredSweepsEveryShard) {
  ResultCache<std::string> c(Options(10000));
  ASSERT_GT(c.num_shards(), 1u);
  for (uint64_t i = 0; i < 1000; ++i) {
    c.Put(K(i), "x", 1, i % 2 == 0 ? 100 : 200, 0, kNoTags);
  }
  std::vector<std::string> dropped;
  EXPECT_EQ(c.EvictExpired(99, &dropped), 0u);
  EXPECT_EQ(c.EvictExpired(100, &dropped), 500u);
  EXPECT_EQ(dropped.size(), 500u);
  EXPECT_EQ(c.GetStats().entries, 500u);
  EXPECT_EQ(c.GetStats().expirations, 500u);
  EXPECT_TRUE(Has(c, 1, 150));
  EXPECT_FALSE(Has(c, 2, 150));
  EXPECT_EQ(c.EvictExpired(1000), 500u);
  EXPECT_EQ(c.GetStats().entries, 0u);
  EXPECT_TRUE(c.CheckInvariants().ok()) << c.CheckInvariants();
}

TEST(ResultCacheTest, EntryBoundAcrossShards) {
  ResultCache<std::string> c(Options(100));
  ASSERT_EQ(c.num_shards(), 2u);
  std::vector<std::string> dropped;
  for (uint64_t i = 0; i < 1000; ++i) {
    PutSimple(c, i, &dropped);
    ASSERT_LE(c.GetStats().entries, 100u);
  }
  const ResultCacheStats st = c.GetStats();
  EXPECT_EQ(st.entries, 100u);  // both shards full
  EXPECT_EQ(st.evictions, 900u);
  EXPECT_EQ(st.inserts, 1000u);
  EXPECT_EQ(dropped.size(), 900u);
  // The most recent key is always still there.
  EXPECT_TRUE(Has(c, 999));
  EXPECT_TRUE(c.CheckInvariants().ok()) << c.CheckInvariants();
}

TEST(ResultCacheTest, ByteBound) {
  ResultCache<std::string> c(Options(10, /*max_bytes=*/100));
  ASSERT_EQ(c.num_shards(), 1u);
  std::vector<std::string> dropped;
  EXPECT_TRUE(c.Put(K(1), "a", 40, kNeverExpires, 0, kNoTags, &dropped));
  EXPECT_TRUE(c.Put(K(2), "b", 40, kNeverExpires, 0, kNoTags, &dropped));
  EXPECT_EQ(c.GetStats().bytes, 80u);
  EXPECT_TRUE(c.Put(K(3), "c", 30, kNeverExpires, 0, kNoTags, &dropped));
  EXPECT_THAT(dropped, ElementsAre("a"));  // 110 > 100: the LRU one goes
  EXPECT_EQ(c.GetStats().bytes, 70u);
  EXPECT_EQ(c.GetStats().evictions, 1u);
  dropped.clear();
  // Larger than the whole bound: rejected, the cache is unchanged.
  EXPECT_FALSE(c.Put(K(4), "huge", 101, kNeverExpires, 0, kNoTags, &dropped));
  EXPECT_THAT(dropped, ElementsAre("huge"));
  EXPECT_EQ(c.GetStats().rejections, 1u);
  EXPECT_EQ(c.GetStats().bytes, 70u);
  EXPECT_TRUE(Has(c, 2));
  EXPECT_TRUE(Has(c, 3));
  dropped.clear();
  // Exactly the bound fits, by evicting everything else.
  EXPECT_TRUE(c.Put(K(5), "full", 100, kNeverExpires, 0, kNoTags, &dropped));
  EXPECT_THAT(dropped, UnorderedElementsAre("b", "c"));
  EXPECT_EQ(c.GetStats().bytes, 100u);
  EXPECT_EQ(c.GetStats().entries, 1u);
  dropped.clear();
  // A rejected value removes the entry it would have replaced.
  EXPECT_FALSE(c.Put(K(5), "huge", 500, kNeverExpires, 0, kNoTags, &dropped));
  EXPECT_THAT(dropped, UnorderedElementsAre("full", "huge"));
  EXPECT_EQ(c.GetStats().entries, 0u);
  EXPECT_EQ(c.GetStats().bytes, 0u);
  EXPECT_TRUE(c.CheckInvariants().ok()) << c.CheckInvariants();
}

TEST(ResultCacheTest, ReplacementKeepsAccountingRight) {
  ResultCache<std::string> c(Options(10, 1000));
  std::vector<std::string> dropped;
  const std::vector<std::string> tags_a = {"a"};
  const std::vector<std::string> tags_b = {"b"};
  c.Put(K(1), "old", 400, kNeverExpires, /*group=*/1, tags_a, &dropped);
  c.Put(K(2), "other", 100, kNeverExpires, 1, kNoTags, &dropped);
  c.Put(K(1), "new", 10, 50, /*group=*/2, tags_b, &dropped);
  EXPECT_THAT(dropped, ElementsAre("old"));
  ResultCacheStats st = c.GetStats();
  EXPECT_EQ(st.entries, 2u);
  EXPECT_EQ(st.bytes, 110u);
  EXPECT_EQ(st.inserts, 3u);
  EXPECT_EQ(st.evictions, 0u);
  EXPECT_THAT(c.Get(K(1), 0), Optional(std::string("new")));
  // The old tag and group no longer reach it; the new ones (and expiry) do.
  EXPECT_EQ(c.InvalidateTag("a"), 0u);
  EXPECT_EQ(c.InvalidateGroup(1), 1u);  // only K(2)
  EXPECT_TRUE(Has(c, 1));
  EXPECT_FALSE(Has(c, 1, 50));
  EXPECT_EQ(c.GetStats().bytes, 0u);
  EXPECT_TRUE(c.CheckInvariants().ok()) << c.CheckInvariants();
}

TEST(ResultCacheTest, InvalidateTag) {
  ResultCache<std::string> c(Options(100000));
  ASSERT_EQ(c.num_shards(), 16u);
  const std::vector<std::string> even = {"all", "even"};
  const std::vector<std::string> odd = {"all", "odd", "odd"};  // repeated
  for (uint64_t i = 0; i < 200; ++i) {
    c.Put(K(i), "v", 1, kNeverExpires, 0, i % 2 == 0 ? even : odd);
  }
  c.Put(K(1000), "untagged", 1, kNeverExpires, 0, kNoTags);
  EXPECT_TRUE(c.CheckInvariants().ok()) << c.CheckInvariants();
  std::vector<std::string> dropped;
  EXPECT_EQ(c.InvalidateTag("odd", &dropped), 100u);
  EXPECT_EQ(dropped.size(), 100u);
  EXPECT_EQ(c.InvalidateTag("odd"), 0u);
  EXPECT_EQ(c.InvalidateTag("nope"), 0u);
  EXPECT_TRUE(Has(c, 0));
  EXPECT_FALSE(Has(c, 1));
  EXPECT_TRUE(c.CheckInvariants().ok()) << c.CheckInvariants();
  EXPECT_EQ(c.InvalidateTag("all"), 100u);
  EXPECT_EQ(c.InvalidateTag("even"), 0u);
  EXPECT_EQ(c.GetStats().entries, 1u);
  EXPECT_EQ(c.GetStats().invalidations, 200u);
  EXPECT_TRUE(c.CheckInvariants().ok()) << c.CheckInvariants();
}

TEST(ResultCacheTest, TagIndexFollowsEvictionAndExpiry) {
  ResultCache<std::string> c(Options(2));
  const std::vector<std::string> t = {"t"};
  c.Put(K(1), "a", 1, kNeverExpires, 0, t);
  c.Put(K(2), "b", 1, kNeverExpires, 0, t);
  c.Put(K(3), "c", 1, kNeverExpires, 0, kNoTags);   // evicts K(1)
  c.Put(K(4), "d", 1, /*expires_at_ns=*/10, 0, t);  // evicts K(2)
  EXPECT_EQ(c.GetStats().evictions, 2u);
  EXPECT_TRUE(c.CheckInvariants().ok()) << c.CheckInvariants();
  EXPECT_FALSE(Has(c, 4, 10));  // expired: removed with its tag
  EXPECT_TRUE(c.CheckInvariants().ok()) << c.CheckInvariants();
  // No tagged entry is left, so nothing is invalidated (or counted).
  EXPECT_EQ(c.InvalidateTag("t"), 0u);
  EXPECT_EQ(c.GetStats().invalidations, 0u);
  EXPECT_TRUE(Has(c, 3));
  c.Put(K(5), "e", 1, kNeverExpires, 0, t);
  EXPECT_EQ(c.InvalidateTag("t"), 1u);
  EXPECT_TRUE(Has(c, 3));
  EXPECT_TRUE(c.CheckInvariants().ok()) << c.CheckInvariants();
}

TEST(ResultCacheTest, InvalidateGroup) {
  ResultCache<std::string> c(Options(100000));
  for (uint64_t i = 0; i < 300; ++i) {
    c.Put(K(i), "v", 1, kNeverExpires, /*group=*/i % 3, kNoTags);
  }
  std::vector<std::string> dropped;
  EXPECT_EQ(c.InvalidateGroup(1, &dropped), 100u);
  EXPECT_EQ(dropped.size(), 100u);
  EXPECT_EQ(c.InvalidateGroup(1), 0u);
  EXPECT_EQ(c.InvalidateGroup(77), 0u);
  EXPECT_EQ(c.GetStats().entries, 200u);
  EXPECT_FALSE(Has(c, 1));
  EXPECT_TRUE(Has(c, 0));
  EXPECT_TRUE(Has(c, 2));
  // Remove group members one by one (head, middle, tail of the list).
  ResultCache<std::string> one(Options(10));
  for (uint64_t i = 0; i < 5; ++i) {
    one.Put(K(i), "v", 1, kNeverExpires, 9, kNoTags);
  }
  EXPECT_TRUE(one.Erase(K(4)));  // the list head (most recently linked)
  EXPECT_TRUE(one.Erase(K(2)));
  EXPECT_TRUE(one.Erase(K(0)));  // the tail
  EXPECT_FALSE(one.Erase(K(0)));
  EXPECT_TRUE(one.CheckInvariants().ok()) << one.CheckInvariants();
  EXPECT_EQ(one.InvalidateGroup(9), 2u);
  EXPECT_EQ(one.GetStats().invalidations, 5u);
  EXPECT_TRUE(one.CheckInvariants().ok()) << one.CheckInvariants();
}

TEST(ResultCacheTest, ClearEmptiesEverythingAndStaysUsable) {
  ResultCache<std::string> c(Options(100000));
  const std::vector<std::string> t = {"t"};
  for (uint64_t i = 0; i < 100; ++i) {
    c.Put(K(i), "v", 3, kNeverExpires, 1, t);
  }
  std::vector<std::string> dropped;
  c.Clear(&dropped);
  EXPECT_EQ(dropped.size(), 100u);
  ResultCacheStats st = c.GetStats();
  EXPECT_EQ(st.entries, 0u);
  EXPECT_EQ(st.bytes, 0u);
  EXPECT_EQ(st.invalidations, 100u);
  EXPECT_FALSE(Has(c, 5));
  EXPECT_EQ(c.InvalidateTag("t"), 0u);
  EXPECT_EQ(c.InvalidateGroup(1), 0u);
  PutSimple(c, 5);
  EXPECT_TRUE(Has(c, 5));
  EXPECT_TRUE(c.CheckInvariants().ok()) << c.CheckInvariants();
}

TEST(ResultCacheTest, ResizeShrinksAtOnce) {
  ResultCache<std::string> c(Options(10, 1000));
  for (uint64_t i = 0; i < 10; ++i) {
    c.Put(K(i), "v" + std::to_string(i), 50, kNeverExpires, 0, kNoTags);
  }
  EXPECT_TRUE(Has(c, 0));  // 0 is now the most recent
  std::vector<std::string> dropped;
  ASSERT_TRUE(c.Resize(4, 1000, &dropped).ok());
  EXPECT_THAT(dropped,
              UnorderedElementsAre("v1", "v2", "v3", "v4", "v5", "v6"));
  EXPECT_TRUE(Has(c, 0));
  EXPECT_TRUE(Has(c, 9));
  EXPECT_EQ(c.GetStats().entries, 4u);
  EXPECT_EQ(c.GetStats().max_entries, 4u);
  dropped.clear();
  ASSERT_TRUE(c.Resize(4, 120, &dropped).ok());  // bytes: 200 -> <= 120
  EXPECT_EQ(dropped.size(), 2u);
  EXPECT_EQ(c.GetStats().bytes, 100u);
  EXPECT_EQ(c.GetStats().evictions, 8u);
  EXPECT_EQ(c.Resize(0, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.GetStats().max_entries, 4u);
  // Growing again lets it hold more.
  ASSERT_TRUE(c.Resize(20, 0).ok());
  for (uint64_t i = 100; i < 120; ++i) PutSimple(c, i);
  EXPECT_EQ(c.GetStats().entries, 20u);
  EXPECT_TRUE(c.CheckInvariants().ok()) << c.CheckInvariants();
}

TEST(ResultCacheTest, StatsAndHitRate) {
  ResultCache<std::string> c(Options(10));
  EXPECT_EQ(c.GetStats().hit_rate, 0.0);
  PutSimple(c, 1);
  EXPECT_TRUE(Has(c, 1));
  EXPECT_TRUE(Has(c, 1));
  EXPECT_TRUE(Has(c, 1));
  EXPECT_FALSE(Has(c, 2));
  const ResultCacheStats st = c.GetStats();
  EXPECT_EQ(st.hits, 3u);
  EXPECT_EQ(st.misses, 1u);
  EXPECT_DOUBLE_EQ(st.hit_rate, 0.75);
  EXPECT_EQ(st.inserts, 1u);
  EXPECT_EQ(st.entries, 1u);
  EXPECT_EQ(st.bytes, 1u);
  EXPECT_EQ(st.max_entries, 10u);
  EXPECT_EQ(st.max_bytes, 0u);
  EXPECT_EQ(st.num_shards, 1u);
}

// --- The dropped-values convention ------------------------------------------

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
