#include "caudal/executor/executor.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace caudal {
namespace {

std::shared_ptr<StepEntry> MakeEntry(Executor& ex, const std::string& name,
                                     int max_retries = 0) {
  auto e = std::make_shared<StepEntry>();
  e->spec.name = name;
  e->spec.max_retries = max_retries;
  e->stats = ex.stats().ForStep(name);
  return e;
}

TEST(StepTableTest, FindInsertAndBound) {
  StepTable table(/*capacity=*/3);
  EXPECT_EQ(table.Find(1), nullptr);
  auto a = std::make_shared<StepEntry>();
  EXPECT_TRUE(table.Insert(1, a).empty());
  EXPECT_EQ(table.Find(1), a);
  table.Insert(2, std::make_shared<StepEntry>());
  table.Insert(3, std::make_shared<StepEntry>());
  // Replacing an existing key returns the old entry and does not flush.
  auto dropped = table.Insert(3, std::make_shared<StepEntry>());
  EXPECT_EQ(dropped.size(), 1u);
  EXPECT_EQ(table.size(), 3u);
  // A new key into a full table empties it first.
  dropped = table.Insert(4, std::make_shared<StepEntry>());
  EXPECT_EQ(dropped.size(), 3u);
  EXPECT_EQ(table.size(), 1u);
  EXPECT_EQ(table.Find(1), nullptr);
  EXPECT_EQ(table.analyses(), 5u);
  EXPECT_EQ(table.Clear().size(), 1u);
}

TEST(StepTableTest, EntriesOutliveTheTable) {
  StepTable table;
  table.Insert(7, std::make_shared<StepEntry>());
  std::shared_ptr<StepEntry> held = table.Find(7);
  table.Clear();
  EXPECT_EQ(held.use_count(), 1);  // the in-flight holder keeps it alive
}

TEST(StatsRegistryTest, StablePointersAndTotals) {
  StatsRegistry reg;
  StepStats* a = reg.ForStep("a");
  EXPECT_EQ(reg.ForStep("a"), a);
  StepStats* b = reg.ForStep("b");
  a->executions = 3;
  b->executions = 4;
  a->latency.Record(10);
  b->latency.Record(20);
  const auto all = reg.TakeAll();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "a");
  const auto total = reg.TakeTotal();
  EXPECT_EQ(total.executions, 7u);
  EXPECT_EQ(total.latency.count, 2u);
  reg.ResetAll();
  EXPECT_EQ(reg.TakeTotal().executions, 0u);
}

TEST(ExecutorTest, SuccessRecordsLatencyAndCounts) {
  Executor ex(OptimizationConfig{});
  auto entry = MakeEntry(ex, "s");
  ExecutionRecord* r = ex.Begin(entry, 1000);
  EXPECT_EQ(ex.in_flight(), 1);
  const ExecutionOutcome o = ex.Succeed(r, 1500);
  EXPECT_EQ(o.latency_ns, 500);
  EXPECT_EQ(o.attempts, 1);
  EXPECT_FALSE(o.slow);
  const auto s = entry->stats->Take();
  EXPECT_EQ(s.executions, 1u);
  EXPECT_EQ(s.successes, 1u);
  EXPECT_EQ(s.attempts, 1u);
  EXPECT_EQ(s.latency.max_ns, 500u);
  EXPECT_EQ(ex.in_flight(), 0);
}

TEST(ExecutorTest, RetriesUpToMaxThenFail) {
  Executor ex(OptimizationConfig{});
  auto entry = MakeEntry(ex, "r", /*max_retries=*/2);
  ExecutionRecord* r = ex.Begin(entry, 0);
  EXPECT_GE(ex.AttemptFailed(r, 10, false), 0.0);  // attempt 2
  EXPECT_GE(ex.AttemptFailed(r, 20, true), 0.0);  // attempt 3 (after a timeout)
  EXPECT_LT(ex.AttemptFailed(r, 30, false), 0.0);  // none left
  const ExecutionOutcome o = ex.Fail(r, 40, false);
  EXPECT_EQ(o.attempts, 3);
  const auto s = entry->stats->Take();
  EXPECT_EQ(s.attempts, 3u);
  EXPECT_EQ(s.retries, 2u);
  EXPECT_EQ(s.errors, 3u);
  EXPECT_EQ(s.timeouts, 1u);
  EXPECT_EQ(s.failures, 1u);
  EXPECT_EQ(s.recovered, 0u);
}

TEST(ExecutorTest, RecoveryFallbackCancelAndSlow) {
  OptimizationConfig cfg;
  cfg.slow_execution_threshold_ms = 1.0;  // 1e6 ns
  Executor ex(cfg);
  auto entry = MakeEntry(ex, "x", 1);
  ExecutionRecord* r = ex.Begin(entry, 0);
  ex.AttemptFailed(r, 5, false);
  EXPECT_TRUE(ex.Succeed(r, 2'000'000).slow);
  r = ex.Begin(entry, 0);
  ex.AttemptFailed(r, 1, false);
  ex.AttemptFailed(r, 2, false);
  ex.Fail(r, 3, /*fell_back=*/true);
  r = ex.Begin(entry, 0);
  ex.Cancel(r, 1);
  const auto s = entry->stats->Take();
  EXPECT_EQ(s.recovered, 1u);
  EXPECT_EQ(s.fallbacks, 1u);
  EXPECT_EQ(s.cancelled, 1u);
  EXPECT_EQ(s.slow, 1u);
  EXPECT_EQ(s.executions, 2u);  // a cancelled execution is not finished
  EXPECT_EQ(s.in_flight, 0);
}

TEST(ExecutorTest, ApplyConfigIsAtomicAndValidated) {
  Executor ex(OptimizationConfig{});
  auto entry = MakeEntry(ex, "c");
  ExecutionRecord* in_flight = ex.Begin(entry, 0);
  OptimizationConfig bad;
  bad.cache_max_size = 0;
  const uint64_t gen = ex.config_generation();
  EXPECT_FALSE(ex.ApplyConfig(bad).ok());
  EXPECT_EQ(ex.config_generation(), gen);
  EXPECT_EQ(ex.config()->cache_max_size, 500);
  OptimizationConfig next;
  next.slow_execution_threshold_ms = 0.0001;  // 100 ns
  ASSERT_TRUE(ex.ApplyConfig(next).ok());
  EXPECT_EQ(ex.config_generation(), gen + 1);
  // The execution that began under the old config (1 s threshold) finishes
  // under it.
  EXPECT_FALSE(ex.Succeed(in_flight, 1000).slow);
  EXPECT_TRUE(ex.Succeed(ex.Begin(entry, 0), 1000).slow);
}

TEST(ExecutorTest, ConcurrentExecutionsAndConfigSwaps) {
  Executor ex(OptimizationConfig{});
  auto entry = MakeEntry(ex, "p", 1);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5000; ++i) {
        ExecutionRecord* r = ex.Begin(entry, i);
        if (i % 3 == 0) ex.AttemptFailed(r, i + 1, false);
        if (i % 5 == 0) {
          ex.Cancel(r, i + 2);
        } else {
          ex.Succeed(r, i + 2);
        }
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < 200; ++i) {
      OptimizationConfig c;
      c.cache_max_size = 1 + i;
      ASSERT_TRUE(ex.ApplyConfig(c).ok());
    }
  });
  for (auto& th : threads) th.join();
  const auto s = entry->stats->Take();
  EXPECT_EQ(s.cancelled, 4u * 1000);
  EXPECT_EQ(s.executions, 4u * 4000);
  EXPECT_EQ(s.in_flight, 0);
  EXPECT_EQ(ex.in_flight(), 0);
  EXPECT_EQ(ex.config()->cache_max_size, 200);
}

}  // namespace
}  // namespace caudal
