// ResultCache: options, LRU order, expiry, entry and byte bounds, tags,
// groups, Clear, Resize and stats. Values dropped by calls, concurrent use
// and invalidation epochs: result_cache_concurrency_test.cc.
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

TEST(ResultCacheTest, VisitHandsTheLiveValueOverOnlyOnAHit) {
  ResultCache<std::string> c(Options(10));
  std::vector<const std::string*> seen;
  auto visit = [&](const std::string& v) { seen.push_back(&v); };
  EXPECT_FALSE(c.Visit(K(1), 0, nullptr, visit));  // a miss: not called
  EXPECT_TRUE(seen.empty());
  c.Put(K(1), "a", 1, /*expires_at_ns=*/100, 0, kNoTags);
  EXPECT_TRUE(c.Visit(K(1), 99, nullptr, visit));
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(*seen[0], "a");  // the stored value itself, not a copy
  EXPECT_TRUE(c.Visit(K(1), 99, nullptr, visit));
  EXPECT_EQ(seen[1], seen[0]);
  // Expired: removed into `dropped`, counted as a miss, not called.
  std::vector<std::string> dropped;
  EXPECT_FALSE(c.Visit(K(1), 100, &dropped, visit));
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_THAT(dropped, ElementsAre("a"));
  const ResultCacheStats st = c.GetStats();
  EXPECT_EQ(st.hits, 2u);
  EXPECT_EQ(st.misses, 2u);
  EXPECT_EQ(st.expirations, 1u);
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

}  // namespace
}  // namespace caudal
