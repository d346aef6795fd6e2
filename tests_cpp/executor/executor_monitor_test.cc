// The executor's performance monitor (executor_monitor.cc): CPU samples
// and regression checkpoints taken by Maintain, regression events, the
// automatic-optimization clock. Time is driven by hand.
#include <vector>

#include "caudal/executor/executor.h"
#include "executor_test_util.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using testing_util::Err;
using testing_util::MakeEntry;

constexpr int64_t kSec = 1'000'000'000;

// `n` executions of `latency_ns` each, starting at `t`.
void RunSteps(Executor& ex, const std::shared_ptr<StepEntry>& e, int64_t t,
              int n, int64_t latency_ns) {
  for (int i = 0; i < n; ++i) ex.Succeed(ex.Begin(e, t), t + latency_ns);
}

TEST(ExecutorMonitorTest, MaintainSamplesCpuTime) {
  Executor ex(OptimizationConfig{});
  int64_t cpu = 0;
  ex.cpu_monitor().SetSource([&]() -> absl::StatusOr<int64_t> { return cpu; });
  ex.cpu_monitor().SetAllowedCpus(2);
  auto e = MakeEntry(ex, "s");
  RunSteps(ex, e, 0, 1, 10);
  cpu = kSec;  // one of two CPUs busy for a second
  RunSteps(ex, e, kSec, 1, 10);
  EXPECT_EQ(ex.cpu_monitor().Snapshot().readings, 2u);
  const CpuSnapshot s = ex.CpuStats(2 * kSec);  // and one more, idle second
  EXPECT_DOUBLE_EQ(s.per_core_percent, 50.0);
  EXPECT_DOUBLE_EQ(s.percent, 25.0);
}

TEST(ExecutorMonitorTest, NoSamplesWithMonitoringOff) {
  OptimizationConfig cfg;
  cfg.enable_performance_monitoring = false;
  Executor ex(cfg);
  ex.cpu_monitor().SetSource([]() -> absl::StatusOr<int64_t> { return 0; });
  auto e = MakeEntry(ex, "s");
  for (int t = 0; t < 10; ++t) RunSteps(ex, e, t * kSec, 1, 10);
  EXPECT_EQ(ex.cpu_monitor().Snapshot().readings, 0u);
  EXPECT_EQ(ex.trend_checkpoints(), 0u);
}

TEST(ExecutorMonitorTest, RegressionEventsFromMaintain) {
  OptimizationConfig cfg;
  cfg.performance_window_seconds = 60;
  Executor ex(cfg);
  auto sub = ex.events().Subscribe(MaskOf(EventType::kRegressionDetected) |
                                       MaskOf(EventType::kRegressionCleared),
                                   16);
  auto e = MakeEntry(ex, "s");
  // 10 executions every 15 s (each Begin at a checkpoint time runs
  // Maintain first, so the checkpoint at t sees what ran before t).
  auto latency = [](int t) { return t >= 120 && t < 210 ? 2000 : 1000; };
  std::vector<Event> got;
  std::vector<int> at;
  for (int t = 0; t <= 300; t += 15) {
    RunSteps(ex, e, t * kSec, 10, latency(t));
    std::vector<Event> batch;
    sub->Drain(&batch);
    for (const Event& ev : batch) {
      got.push_back(ev);
      at.push_back(t);
    }
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].type, EventType::kRegressionDetected);
  EXPECT_EQ(got[0].key, "s");
  EXPECT_EQ(at[0], 135);
  EXPECT_DOUBLE_EQ(got[0].value, 2016e-9);
  EXPECT_DOUBLE_EQ(got[0].value2, 1008e-9);
  EXPECT_EQ(got[1].type, EventType::kRegressionCleared);
  EXPECT_EQ(at[1], 270);
  const std::vector<StepTrend> trends = ex.Trends();
  ASSERT_EQ(trends.size(), 1u);
  EXPECT_FALSE(trends[0].regressed);
  EXPECT_EQ(trends[0].regressions, 1u);
  EXPECT_EQ(ex.trend_checkpoints(), 21u);
}

TEST(ExecutorMonitorTest, AnalysisDueOncePerInterval) {
  OptimizationConfig cfg;
  cfg.enable_automatic_optimization = true;
  cfg.optimization_analysis_interval_seconds = 10;
  Executor ex(cfg);
  auto e = MakeEntry(ex, "s");
  std::vector<int> due;
  for (int t = 1; t <= 35; ++t) {
    RunSteps(ex, e, t * kSec, 1, 10);
    if (ex.TakeAnalysisDue()) due.push_back(t);
    EXPECT_FALSE(ex.TakeAnalysisDue());  // taken once
  }
  EXPECT_EQ(due, (std::vector<int>{11, 21, 31}));
  // Turned off: nothing is due any more.
  cfg.enable_automatic_optimization = false;
  ASSERT_TRUE(ex.ApplyConfig(cfg).ok());
  for (int t = 36; t <= 60; ++t) {
    RunSteps(ex, e, t * kSec, 1, 10);
    EXPECT_FALSE(ex.TakeAnalysisDue());
  }
}

}  // namespace
}  // namespace caudal
