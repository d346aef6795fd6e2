// Per-name state: the compact histogram, reclaiming idle names under a
// bound with exact totals, and reclaiming while executions of other (and
// the same) names are in flight on other threads (run it under ASan/TSan).
#include "caudal/monitor/execution_stats.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../executor/executor_test_util.h"
#include "absl/strings/str_cat.h"
#include "caudal/executor/executor.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using testing_util::MakeEntry;

TEST(LatencyHistogramTest, StartsWithoutBucketsAndGrowsThem) {
  LatencyHistogram h;
  EXPECT_FALSE(h.has_buckets());
  for (int i = 1; i <= LatencyHistogram::kInline; ++i) h.Record(i * 1000);
  EXPECT_FALSE(h.has_buckets());  // the first samples are kept inline
  h.Record(123'456);
  EXPECT_TRUE(h.has_buckets());
}

TEST(LatencyHistogramTest, InlineAndBucketedSamplesCountAlike) {
  // The same samples give the same snapshot whether they stay inline or
  // land in buckets: compare a histogram fed 3 samples with the expected
  // buckets, then one fed 1,000.
  for (int n : {3, LatencyHistogram::kInline, 1000}) {
    LatencyHistogram h;
    std::vector<uint64_t> want;
    uint64_t sum = 0;
    for (int i = 0; i < n; ++i) {
      const int64_t v = 37 * i * i + i;  // includes 0
      h.Record(v);
      sum += static_cast<uint64_t>(v);
      const size_t b = static_cast<size_t>(LatencyHistogram::BucketOf(v));
      if (want.size() <= b) want.resize(b + 1, 0);
      ++want[b];
    }
    const LatencyHistogram::Snapshot s = h.Take();
    EXPECT_EQ(s.count, static_cast<uint64_t>(n)) << n;
    EXPECT_EQ(s.sum_ns, sum) << n;
    EXPECT_EQ(s.buckets, want) << n;
    EXPECT_EQ(s.min_ns, 0u);
  }
}

TEST(LatencyHistogramTest, ResetEmptiesInlineAndBuckets) {
  LatencyHistogram h;
  for (int i = 0; i < 20; ++i) h.Record(1000);
  h.Reset();
  EXPECT_EQ(h.Take().count, 0u);
  EXPECT_TRUE(h.Take().buckets.empty());
  h.Record(5);
  const auto s = h.Take();
  EXPECT_EQ(s.count, 1u);
  EXPECT_EQ(s.min_ns, 5u);
  EXPECT_EQ(s.max_ns, 5u);
}

TEST(LatencyHistogramTest, MergeOfTrimmedSnapshots) {
  LatencyHistogram a, b;
  a.Record(3);
  b.Record(1'000'000);
  auto s = a.Take();
  s.Merge(b.Take());
  EXPECT_EQ(s.count, 2u);
  EXPECT_EQ(s.QuantileNs(0.0), 3.0);
  EXPECT_NEAR(s.QuantileNs(1.0), 1'000'000.0, 1'000'000.0 * 0.04);
}

TEST(LatencyHistogramTest, ConcurrentRecordsAcrossTheInlineBoundary) {
  LatencyHistogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h] {
      for (int i = 0; i < 1000; ++i) h.Record(100 + i);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(h.Take().count, 4000u);
}

TEST(StatsRegistryTest, ReclaimsOnlyIdleNamesOldestFirst) {
  StatsRegistry reg;
  std::shared_ptr<StepStats> held = reg.ForStep("n0");  // busy: kept
  for (int i = 1; i < 16; ++i) reg.ForStep(absl::StrCat("n", i));
  EXPECT_EQ(reg.tracked(), 16u);
  EXPECT_TRUE(reg.Reclaim(16).empty());  // at the bound: nothing to do
  const std::vector<std::string> gone = reg.Reclaim(8);
  // Down to 8 - 8 / 8 = 7 names: 9 reclaimed, the oldest idle ones.
  ASSERT_EQ(gone.size(), 9u);
  EXPECT_EQ(gone.front(), "n1");
  EXPECT_EQ(gone.back(), "n9");
  EXPECT_EQ(reg.tracked(), 7u);
  EXPECT_EQ(reg.reclaimed_names(), 9u);
  const auto rows = reg.TakeAll();
  ASSERT_EQ(rows.size(), 7u);
  EXPECT_EQ(rows[0].name, "n0");  // held, so still tracked
  EXPECT_EQ(rows[1].name, "n10");
  EXPECT_EQ(reg.ForStep("n0"), held);
}

TEST(StatsRegistryTest, TakeReadsOneNameOrNone) {
  StatsRegistry reg;
  reg.ForStep("a")->executions.fetch_add(3);
  reg.ForStep("b")->executions.fetch_add(5);
  ASSERT_TRUE(reg.Take("b").has_value());
  EXPECT_EQ(reg.Take("b")->name, "b");
  EXPECT_EQ(reg.Take("b")->executions, 5u);
  EXPECT_EQ(reg.Take("a")->executions, 3u);
  EXPECT_FALSE(reg.Take("c").has_value());
  reg.Reclaim(1);  // the oldest idle name, "a", goes to the reclaimed row
  EXPECT_FALSE(reg.Take("a").has_value());
  EXPECT_EQ(reg.Take("b")->executions, 5u);
}

TEST(StepStatsTest, AHitIsCountedOnceAsAnExecutionAndASuccess) {
  StepStats s("a");
  s.executions.fetch_add(3);  // executions that ran the step
  s.successes.fetch_add(2);
  s.failures.fetch_add(1);
  s.hit_executions.fetch_add(4);  // answered from the cache
  const StepStats::Snapshot snap = s.Take();
  EXPECT_EQ(snap.executions, 7u);
  EXPECT_EQ(snap.successes, 6u);
  EXPECT_EQ(snap.failures, 1u);
  s.Reset();
  EXPECT_EQ(s.Take().executions, 0u);
  EXPECT_EQ(s.Take().successes, 0u);
}

TEST(StatsRegistryTest, TotalsStayExactAcrossReclaim) {
  StatsRegistry reg;
  uint64_t executions = 0;
  for (int i = 0; i < 100; ++i) {
    std::shared_ptr<StepStats> s = reg.ForStep(absl::StrCat("step", i));
    for (int k = 0; k <= i % 5; ++k) {
      s->executions.fetch_add(1);
      s->successes.fetch_add(1);
      s->latency.Record(1000 * (k + 1));
      ++executions;
    }
    s->cache_hits.fetch_add(2);
  }
  const StepStats::Snapshot before = reg.TakeTotal();
  EXPECT_FALSE(reg.TakeReclaimed().has_value());
  reg.Reclaim(10);
  const StepStats::Snapshot after = reg.TakeTotal();
  EXPECT_EQ(after.executions, executions);
  EXPECT_EQ(after.executions, before.executions);
  EXPECT_EQ(after.successes, before.successes);
  EXPECT_EQ(after.cache_hits, 200u);
  EXPECT_EQ(after.latency.count, before.latency.count);
  EXPECT_EQ(after.latency.sum_ns, before.latency.sum_ns);
  EXPECT_EQ(after.latency.buckets, before.latency.buckets);
  // Rows plus the reclaimed row add up to the total.
  auto reclaimed = reg.TakeReclaimed();
  ASSERT_TRUE(reclaimed.has_value());
  EXPECT_EQ(reclaimed->name, StatsRegistry::kReclaimedName);
  uint64_t rows = reclaimed->executions;
  for (const auto& r : reg.TakeAll()) rows += r.executions;
  EXPECT_EQ(rows, executions);
  // A reclaimed name used again starts a fresh row.
  EXPECT_EQ(reg.ForStep("step0")->Take().executions, 0u);
  reg.ResetAll();
  EXPECT_EQ(reg.TakeTotal().executions, 0u);
}

TEST(StatsRegistryTest, BusyRegistryDoesNotRescanEveryName) {
  StatsRegistry reg;
  std::vector<std::shared_ptr<StepStats>> held;
  for (int i = 0; i < 64; ++i) held.push_back(reg.ForStep(absl::StrCat(i)));
  EXPECT_TRUE(reg.Reclaim(32).empty());  // all busy
  held.clear();                          // now all idle
  reg.ForStep("x");
  // The next pass waits for 32 / 8 more names.
  EXPECT_TRUE(reg.Reclaim(32).empty());
  for (int i = 0; i < 3; ++i) reg.ForStep(absl::StrCat("y", i));
  EXPECT_EQ(reg.Reclaim(32).size(), 68u - 28u);
}

OptimizationConfig Bounded(int64_t max_tracked) {
  OptimizationConfig c;
  c.max_tracked_steps = max_tracked;
  return c;
}

TEST(ExecutorNamesTest, StatsForReclaimsUnderTheBoundWithExactTotals) {
  Executor ex(Bounded(16));
  for (int i = 0; i < 200; ++i) {
    auto e = MakeEntry(ex, absl::StrCat("name", i));
    ExecutionRecord* r = ex.Begin(e, 1000);
    ex.Succeed(r, 1000 + 10 * i);
  }  // each entry is dropped: its name is idle
  EXPECT_LE(ex.stats().tracked(), 17u);
  EXPECT_GT(ex.stats().reclaimed_names(), 0u);
  const auto total = ex.stats().TakeTotal();
  EXPECT_EQ(total.executions, 200u);
  EXPECT_EQ(total.successes, 200u);
  EXPECT_EQ(total.attempts, 200u);
  EXPECT_EQ(total.in_flight, 0);
}

TEST(ExecutorNamesTest, NoBoundKeepsEveryName) {
  Executor ex(OptimizationConfig{});
  for (int i = 0; i < 100; ++i) MakeEntry(ex, absl::StrCat("name", i));
  EXPECT_EQ(ex.stats().tracked(), 100u);
  EXPECT_EQ(ex.stats().reclaimed_names(), 0u);
}

// Executions in flight on several threads while other threads keep making
// new names (each new name may reclaim idle ones): a name with an entry or
// an execution in flight is never freed (ASan / TSan would report the
// use), and every execution is counted once.
TEST(ExecutorNamesTest, ReclaimWhileExecutionsAreInFlight) {
  Executor ex(Bounded(8));
  constexpr int kThreads = 4;
  constexpr int kRounds = 400;
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      while (!go.load()) {
      }
      for (int i = 0; i < kRounds; ++i) {
        // A shared name (several threads at once) and a fresh one.
        const std::string name = i % 2 == 0 ? absl::StrCat("shared", i % 6)
                                            : absl::StrCat("t", t, "-", i);
        auto e = MakeEntry(ex, name);
        ExecutionRecord* r = ex.Begin(e, 1000);
        e.reset();  // only the record holds the entry now
        std::this_thread::yield();
        if (i % 3 == 0) {
          ex.Fail(r, 2000, /*fell_back=*/false);
        } else {
          ex.Succeed(r, 2000);
        }
      }
    });
  }
  go.store(true);
  for (auto& t : threads) t.join();
  const auto total = ex.stats().TakeTotal();
  EXPECT_EQ(total.executions, static_cast<uint64_t>(kThreads * kRounds));
  EXPECT_EQ(total.attempts, static_cast<uint64_t>(kThreads * kRounds));
  EXPECT_EQ(total.successes + total.failures,
            static_cast<uint64_t>(kThreads * kRounds));
  EXPECT_EQ(total.in_flight, 0);
  EXPECT_EQ(total.latency.count, static_cast<uint64_t>(kThreads * kRounds));
  EXPECT_GT(ex.stats().reclaimed_names(), 0u);
}

}  // namespace
}  // namespace caudal
