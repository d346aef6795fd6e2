// RegressionDetector driven by hand: latencies recorded into a real
// StepStats, checkpoints every 15 s of a 60 s window.
#include "caudal/monitor/regression_detector.h"

#include <vector>

#include "gtest/gtest.h"

namespace caudal {
namespace {

constexpr int64_t kSec = 1'000'000'000;
// Midpoints of the histogram buckets holding 1000 ns and 2000 ns.
constexpr double kP95Of1000 = 1008.0;
constexpr double kP95Of2000 = 2016.0;

class RegressionDetectorTest : public ::testing::Test {
 protected:
  RegressionOptions Options() const {
    RegressionOptions o;
    o.window_ns = 60 * kSec;
    o.threshold = 0.2;
    o.min_executions = 20;
    return o;
  }
  // `n` executions of `latency_ns` during the interval ending at `t_s`,
  // then the checkpoint at t_s.
  std::vector<TrendChange> Tick(int t_s, int n, int64_t latency_ns) {
    for (int i = 0; i < n; ++i) step_.latency.Record(latency_ns);
    EXPECT_TRUE(det_.Due(t_s * kSec));
    return det_.Checkpoint(t_s * kSec, {step_.Take()}, Options());
  }
  StepTrend Trend() const { return det_.Trends().at(0); }

  StepStats step_{"s"};
  RegressionDetector det_;
};

TEST_F(RegressionDetectorTest, SteadyLatencyNeverRegresses) {
  for (int t = 0; t <= 600; t += 15) EXPECT_TRUE(Tick(t, 10, 1000).empty());
  const StepTrend tr = Trend();
  EXPECT_FALSE(tr.regressed);
  EXPECT_TRUE(tr.evaluated);
  EXPECT_EQ(tr.recent_executions, 40u);
  EXPECT_DOUBLE_EQ(tr.recent_span_s, 60.0);
  EXPECT_DOUBLE_EQ(tr.throughput_per_s, 40.0 / 60.0);
  EXPECT_EQ(tr.baseline_executions, 160u);  // four windows before it
  EXPECT_DOUBLE_EQ(tr.baseline_span_s, 240.0);
  EXPECT_DOUBLE_EQ(tr.recent_p95_ns, kP95Of1000);
  EXPECT_DOUBLE_EQ(tr.baseline_p95_ns, kP95Of1000);
  EXPECT_EQ(det_.checkpoints(), 41u);
}

TEST_F(RegressionDetectorTest, NoVerdictBeforeAWindowOfBaseline) {
  Tick(0, 0, 1000);
  // Latency doubles after 30 s: the baseline [0, t - 60] is too short
  // until t = 120.
  Tick(15, 10, 1000);
  Tick(30, 10, 1000);
  for (int t = 45; t <= 105; t += 15) {
    EXPECT_TRUE(Tick(t, 10, 2000).empty()) << t;
    EXPECT_FALSE(Trend().evaluated) << t;
  }
  // At 120 the baseline [0, 60] has a window: 20 fast, 20 slow; p95 slow.
  EXPECT_TRUE(Tick(120, 10, 2000).empty());
  EXPECT_TRUE(Trend().evaluated);
  EXPECT_FALSE(Trend().regressed);
}

TEST_F(RegressionDetectorTest, RegressesOnceAndRecoversWithHysteresis) {
  for (int t = 0; t <= 120; t += 15) ASSERT_TRUE(Tick(t, 10, 1000).empty());
  // From 120 s on the step takes twice as long.
  std::vector<TrendChange> c = Tick(135, 10, 2000);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_TRUE(c[0].regressed);
  EXPECT_EQ(c[0].step, "s");
  EXPECT_DOUBLE_EQ(c[0].recent_p95_ns, kP95Of2000);
  EXPECT_DOUBLE_EQ(c[0].baseline_p95_ns, kP95Of1000);
  EXPECT_EQ(c[0].at_ns, 135 * kSec);
  EXPECT_TRUE(Trend().regressed);
  EXPECT_EQ(Trend().since_ns, 135 * kSec);
  // Still slow: no new change (published once).
  for (int t = 150; t <= 210; t += 15) EXPECT_TRUE(Tick(t, 10, 2000).empty());
  // Fast again after 210 s. The window still holds slow executions until
  // it starts at 210 (t = 270): only then does p95 fall back.
  for (int t = 225; t <= 255; t += 15) {
    EXPECT_TRUE(Tick(t, 10, 1000).empty()) << t;
    EXPECT_TRUE(Trend().regressed) << t;
  }
  c = Tick(270, 10, 1000);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_FALSE(c[0].regressed);
  EXPECT_DOUBLE_EQ(c[0].recent_p95_ns, kP95Of1000);
  EXPECT_DOUBLE_EQ(c[0].baseline_p95_ns, kP95Of1000);  // the frozen one
  EXPECT_FALSE(Trend().regressed);
  EXPECT_EQ(Trend().regressions, 1u);
}

TEST_F(RegressionDetectorTest, SmallGrowthIsNotARegression) {
  // 1000 -> 1150 ns: +15%, below the 20% threshold.
  for (int t = 0; t <= 120; t += 15) Tick(t, 10, 1000);
  for (int t = 135; t <= 300; t += 15) EXPECT_TRUE(Tick(t, 10, 1150).empty());
  EXPECT_FALSE(Trend().regressed);
  EXPECT_TRUE(Trend().evaluated);
}

TEST_F(RegressionDetectorTest, TooFewExecutionsGiveNoVerdict) {
  // One execution per 15 s: 4 in a window, below min_executions, so even
  // a doubling after 120 s is not judged.
  for (int t = 0; t <= 300; t += 15) {
    EXPECT_TRUE(Tick(t, 1, t > 120 ? 2000 : 1000).empty());
  }
  EXPECT_FALSE(Trend().regressed);
  EXPECT_FALSE(Trend().evaluated);
  EXPECT_EQ(Trend().recent_executions, 4u);
  EXPECT_DOUBLE_EQ(Trend().throughput_per_s, 4.0 / 60.0);
}

TEST_F(RegressionDetectorTest, AResetStartsTheHistoryAfresh) {
  for (int t = 0; t <= 120; t += 15) Tick(t, 10, 1000);
  step_.Reset();
  // Slow from now on, but there is no baseline after the reset.
  for (int t = 135; t <= 240; t += 15) EXPECT_TRUE(Tick(t, 10, 2000).empty());
  EXPECT_FALSE(Trend().regressed);
}

TEST_F(RegressionDetectorTest, CheckpointsAreDueAQuarterWindowApart) {
  EXPECT_TRUE(det_.Due(0));
  det_.Checkpoint(0, {step_.Take()}, Options());
  EXPECT_FALSE(det_.Due(15 * kSec - 1));
  EXPECT_TRUE(det_.Due(15 * kSec));
}

}  // namespace
}  // namespace caudal
