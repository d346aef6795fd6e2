// Executor::InvalidatePrefix: the steps whose name starts with a prefix,
// through the names the executor records, and the executions in flight.
#include <memory>
#include <string>
#include <vector>

#include "caudal/executor/executor.h"
#include "executor_test_util.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using testing_util::MakeEntry;

class InvalidatePrefixTest : public ::testing::Test {
 protected:
  InvalidatePrefixTest() : ex_(Config()) {}

  static OptimizationConfig Config() {
    OptimizationConfig cfg;
    cfg.enable_cache_optimization = true;
    return cfg;
  }

  // A step as the bindings register it: its group is its own.
  std::shared_ptr<StepEntry> Step(const std::string& name, uint64_t group) {
    auto e = MakeEntry(ex_, name);
    e->spec.cache_group = group;
    return e;
  }

  void Put(const StepEntry& step, uint64_t key,
           uint64_t since_epoch = kAnyEpoch) {
    ex_.CachePut(step, Config(), Key128{key, key}, std::make_shared<int>(1), 8,
                 0, nullptr, since_epoch);
  }

  bool Cached(StepEntry& step, uint64_t key) {
    return ex_.CacheLookup(step, Key128{key, key}, 1, nullptr).has_value();
  }

  Executor ex_;
};

TEST_F(InvalidatePrefixTest, DropsEveryStepWhoseNameStartsWithIt) {
  auto llm = Step("call_llm", 1);
  auto v2 = Step("call_llm_v2", 2);
  auto other = Step("other", 3);
  auto call = Step("call", 4);  // shorter than the prefix: not covered
  Put(*llm, 10);
  Put(*llm, 11);
  Put(*v2, 20);
  Put(*other, 30);
  Put(*call, 40);
  absl::StatusOr<size_t> n = ex_.InvalidatePrefix("call_llm", nullptr);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3u);
  EXPECT_FALSE(Cached(*llm, 10));
  EXPECT_FALSE(Cached(*llm, 11));
  EXPECT_FALSE(Cached(*v2, 20));
  EXPECT_TRUE(Cached(*other, 30));
  EXPECT_TRUE(Cached(*call, 40));
}

TEST_F(InvalidatePrefixTest, AFullNameIsAPrefixOfLongerNamesOnly) {
  auto llm = Step("call_llm", 1);
  auto v2 = Step("call_llm_v2", 2);
  Put(*llm, 10);
  Put(*v2, 20);
  EXPECT_EQ(*ex_.InvalidatePrefix("call_llm_v2", nullptr), 1u);
  EXPECT_TRUE(Cached(*llm, 10));
  EXPECT_FALSE(Cached(*v2, 20));
  // The exact-name call, by group.
  EXPECT_EQ(ex_.InvalidateGroup(1, nullptr), 1u);
  EXPECT_FALSE(Cached(*llm, 10));
}

TEST_F(InvalidatePrefixTest, AnEmptyPrefixIsRefused) {
  auto s = Step("s", 1);
  Put(*s, 10);
  absl::StatusOr<size_t> n = ex_.InvalidatePrefix("", nullptr);
  EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(n.status().message().find("clear_cache"), absl::string_view::npos);
  EXPECT_TRUE(Cached(*s, 10));
}

TEST_F(InvalidatePrefixTest, ResultsInFlightOfAStepNotCachedYetAreRefused) {
  auto fresh = Step("call_llm_v3", 5);
  const uint64_t began = ex_.CacheEpoch();  // an execution begins
  EXPECT_EQ(*ex_.InvalidatePrefix("call_llm", nullptr), 0u);  // unknown yet
  Put(*fresh, 50, began);  // its first store comes after
  EXPECT_FALSE(Cached(*fresh, 50));
  EXPECT_EQ(ex_.CacheStats().stale, 1u);
  // One that began after the invalidation is stored.
  Put(*fresh, 51, ex_.CacheEpoch());
  EXPECT_TRUE(Cached(*fresh, 51));
}

TEST_F(InvalidatePrefixTest, AnotherEntryOfTheNameRecordedMeanwhileIsCovered) {
  // Two entries of one name (two step objects): the first to store records
  // the name; the other's older execution must still be refused.
  auto late = Step("fetch", 6);
  auto early = Step("fetch", 6);
  const uint64_t early_began = ex_.CacheEpoch();
  ex_.InvalidatePrefix("fe", nullptr).IgnoreError();
  Put(*late, 60, ex_.CacheEpoch());
  EXPECT_TRUE(Cached(*late, 60));
  Put(*early, 61, early_began);
  EXPECT_FALSE(Cached(*early, 61));
}

TEST_F(InvalidatePrefixTest, AnotherPrefixDoesNotKeepAResultOut) {
  auto s = Step("fetch_user", 7);
  const uint64_t began = ex_.CacheEpoch();
  ex_.InvalidatePrefix("fetch_order", nullptr).IgnoreError();
  ex_.InvalidatePrefix("another", nullptr).IgnoreError();
  Put(*s, 70, began);
  EXPECT_TRUE(Cached(*s, 70));
  EXPECT_EQ(ex_.CacheStats().stale, 0u);
}

TEST_F(InvalidatePrefixTest, TheSharedTiersRuleSeesItToo) {
  auto s = Step("call_llm_v4", 8);
  const uint64_t began = ex_.CacheEpoch();
  ex_.InvalidatePrefix("call_", nullptr).IgnoreError();
  EXPECT_FALSE(ex_.MayStore(*s, /*success=*/true, /*fell_back=*/false, began));
  EXPECT_TRUE(ex_.MayStore(*s, true, false, ex_.CacheEpoch()));
}

TEST_F(InvalidatePrefixTest, AClearCoversWhatPrefixesCovered) {
  auto s = Step("call_llm", 1);
  const uint64_t before = ex_.CacheEpoch();
  ex_.InvalidatePrefix("call", nullptr).IgnoreError();
  ex_.ClearCache(nullptr);
  Put(*s, 10, before);  // refused by the clear
  EXPECT_FALSE(Cached(*s, 10));
  Put(*s, 11, ex_.CacheEpoch());
  EXPECT_TRUE(Cached(*s, 11));
  EXPECT_EQ(*ex_.InvalidatePrefix("call", nullptr), 1u);
}

}  // namespace
}  // namespace caudal
