// The executor's own events on its bus (telemetry/event_bus.h).
#include <vector>

#include "caudal/executor/executor.h"
#include "executor_test_util.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using testing_util::Err;
using testing_util::MakeEntry;

std::vector<Event> Drain(EventSubscription& s) {
  std::vector<Event> out;
  s.Drain(&out);
  return out;
}

TEST(ExecutorEventsTest, StepEventsOnlyWhenSubscribed) {
  Executor ex(OptimizationConfig{});
  auto entry = MakeEntry(ex, "s", /*max_retries=*/1);
  ex.Succeed(ex.Begin(entry, 0), 10);
  EXPECT_EQ(ex.events().Stats().published, 0u);

  auto sub = ex.events().Subscribe(kAllEvents, 100);
  ExecutionRecord* r = ex.Begin(entry, 100);
  ex.AttemptFailed(r, 110, Err());
  ASSERT_TRUE(ex.StartAttempt(r, 120));
  ex.Succeed(r, 150);
  r = ex.Begin(entry, 200);
  ex.AttemptFailed(r, 210, Err());
  ex.StartAttempt(r, 211);
  ex.AttemptFailed(r, 220, Err());
  ex.Fail(r, 230, /*fell_back=*/true);
  ex.Cancel(ex.Begin(entry, 300), 305);
  const auto got = Drain(*sub);
  ASSERT_EQ(got.size(), 8u);
  EXPECT_EQ(got[0].type, EventType::kStepStarted);
  EXPECT_EQ(got[0].value, 1);
  EXPECT_EQ(got[0].time_ns, 100);
  EXPECT_EQ(got[1].type, EventType::kStepStarted);
  EXPECT_EQ(got[1].value, 2);
  EXPECT_EQ(got[2].type, EventType::kStepFinished);
  EXPECT_EQ(got[2].key, "s");
  EXPECT_DOUBLE_EQ(got[2].value, 50e-9);  // latency, seconds
  EXPECT_EQ(got[2].value2, 2);            // attempts
  EXPECT_EQ(got[5].type, EventType::kStepFailed);
  EXPECT_EQ(got[5].detail, "fallback");
  EXPECT_EQ(got[6].type, EventType::kStepStarted);
  EXPECT_EQ(got[7].type, EventType::kStepCancelled);
}

TEST(ExecutorEventsTest, ConfigChangedNamesTheFields) {
  Executor ex(OptimizationConfig{});
  auto sub = ex.events().Subscribe(MaskOf(EventType::kConfigChanged), 10);
  OptimizationConfig next;
  next.cache_max_size = 7;
  next.enable_object_pool = false;
  ASSERT_TRUE(ex.ApplyConfig(next).ok());
  OptimizationConfig bad;
  bad.cache_max_size = -1;
  EXPECT_FALSE(ex.ApplyConfig(bad).ok());  // nothing changed: no event
  const auto got = Drain(*sub);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].detail, "enable_object_pool,cache_max_size");
  EXPECT_EQ(got[0].value, static_cast<double>(ex.config_generation()));
}

TEST(ExecutorEventsTest, BreakerTransitions) {
  OptimizationConfig cfg;
  cfg.circuit_breaker_failure_threshold = 2;
  Executor ex(cfg);
  auto entry = MakeEntry(ex, "api");
  auto sub = ex.events().Subscribe(MaskOf(EventType::kBreakerTransition), 10);
  for (int i = 0; i < 2; ++i) {
    ExecutionRecord* r = ex.Begin(entry, i * 10);
    ex.AttemptFailed(r, i * 10 + 1, Err());
    ex.Fail(r, i * 10 + 2, false);
  }
  const auto got = Drain(*sub);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].key, "api");
  EXPECT_EQ(got[0].detail, "closed->open");
  EXPECT_EQ(got[0].time_ns, 11);
  EXPECT_EQ(got[0].value, 0);   // from: closed
  EXPECT_EQ(got[0].value2, 1);  // to: open
}

TEST(ExecutorEventsTest, CacheHitAndMiss) {
  OptimizationConfig cfg;
  cfg.enable_cache_optimization = true;
  Executor ex(cfg);
  auto entry = MakeEntry(ex, "c");
  auto sub = ex.events().Subscribe(
      MaskOf(EventType::kCacheHit) | MaskOf(EventType::kCacheMiss), 10);
  const Key128 key{1, 2};
  EXPECT_FALSE(ex.CacheLookup(*entry, key, 5, nullptr).has_value());
  ex.CachePut(*entry, cfg, key, std::make_shared<int>(3), 0, 6, nullptr);
  EXPECT_TRUE(ex.CacheLookup(*entry, key, 7, nullptr).has_value());
  const auto got = Drain(*sub);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].type, EventType::kCacheMiss);
  EXPECT_EQ(got[1].type, EventType::kCacheHit);
  EXPECT_EQ(got[1].key, "c");
}

}  // namespace
}  // namespace caudal
