// The executor's time source: the monotonic clock by default, else the
// ManualClock it was made with.
#include "caudal/executor/clock.h"

#include <memory>

#include "caudal/executor/executor.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

TEST(ManualClockTest, MovesOnlyForwardAndOnlyWhenAdvanced) {
  ManualClock c(100);
  EXPECT_EQ(c.now_ns(), 100);
  EXPECT_EQ(c.Advance(50), 150);
  EXPECT_EQ(c.Advance(-10), 150);  // never backwards
  EXPECT_EQ(c.now_ns(), 150);
}

TEST(ExecutorClockTest, NowFollowsTheManualClock) {
  auto clock = std::make_shared<ManualClock>();
  Executor ex(OptimizationConfig{}, 1, clock);
  EXPECT_EQ(ex.NowNs(), ManualClock::kStartNs);
  clock->Advance(5'000'000'000);
  EXPECT_EQ(ex.NowNs(), ManualClock::kStartNs + 5'000'000'000);
  Executor mono(OptimizationConfig{});
  const int64_t a = mono.NowNs();
  EXPECT_GE(mono.NowNs(), a);
  EXPECT_NEAR(static_cast<double>(a), static_cast<double>(MonotonicNowNs()),
              1e9);
}

}  // namespace
}  // namespace caudal
