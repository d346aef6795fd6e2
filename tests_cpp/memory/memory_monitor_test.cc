#include "caudal/memory/memory_monitor.h"

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

constexpr uint64_t kMb = 1024 * 1024;
using L = PressureLevel;

TEST(MemoryMonitorTest, ReadsThisProcess) {
  const absl::StatusOr<uint64_t> rss = ReadProcessRss();
  ASSERT_TRUE(rss.ok()) << rss.status();
  EXPECT_GT(*rss, kMb);  // a running test binary holds more than 1 MB
}

TEST(MemoryMonitorTest, ClassifyWithHysteresis) {
  const double t = 100;
  EXPECT_EQ(MemoryMonitor::Classify(L::kNormal, 99.9, t), L::kNormal);
  EXPECT_EQ(MemoryMonitor::Classify(L::kNormal, 100, t), L::kElevated);
  EXPECT_EQ(MemoryMonitor::Classify(L::kNormal, 125, t), L::kCritical);
  // Elevated holds down to 90 MB.
  EXPECT_EQ(MemoryMonitor::Classify(L::kElevated, 95, t), L::kElevated);
  EXPECT_EQ(MemoryMonitor::Classify(L::kElevated, 90, t), L::kElevated);
  EXPECT_EQ(MemoryMonitor::Classify(L::kElevated, 89.9, t), L::kNormal);
  // Critical holds down to 112.5 MB, then elevated, then normal.
  EXPECT_EQ(MemoryMonitor::Classify(L::kCritical, 115, t), L::kCritical);
  EXPECT_EQ(MemoryMonitor::Classify(L::kCritical, 112, t), L::kElevated);
  EXPECT_EQ(MemoryMonitor::Classify(L::kCritical, 50, t), L::kNormal);
  // Off.
  EXPECT_EQ(MemoryMonitor::Classify(L::kCritical, 1e9, 0), L::kNormal);
}

TEST(MemoryMonitorTest, InjectedSourceDrivesExactTransitions) {
  uint64_t rss = 50 * kMb;
  MemoryMonitor m([&]() -> absl::StatusOr<uint64_t> { return rss; }, 100,
                  /*interval_ns=*/1000);
  EXPECT_FALSE(m.Poll(0).has_value());
  EXPECT_EQ(m.readings(), 1u);
  EXPECT_DOUBLE_EQ(m.last_rss_mb(), 50);
  rss = 110 * kMb;
  EXPECT_FALSE(m.Poll(500).has_value());  // not due: no read
  EXPECT_EQ(m.readings(), 1u);
  EXPECT_FALSE(m.Due(999));
  EXPECT_TRUE(m.Due(1000));
  auto c = m.Poll(1000);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->from, L::kNormal);
  EXPECT_EQ(c->to, L::kElevated);
  EXPECT_DOUBLE_EQ(c->rss_mb, 110);
  EXPECT_EQ(c->at_ns, 1000);
  rss = 95 * kMb;  // within the hysteresis band: stays
  EXPECT_FALSE(m.Poll(2000).has_value());
  EXPECT_EQ(m.level(), L::kElevated);
  rss = 130 * kMb;
  c = m.Poll(3000);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->to, L::kCritical);
  rss = 10 * kMb;  // one reading, two levels down
  c = m.Poll(4000);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->from, L::kCritical);
  EXPECT_EQ(c->to, L::kNormal);
  EXPECT_EQ(m.readings(), 5u);
}

TEST(MemoryMonitorTest, ErrorsAreCountedAndSkipped) {
  bool fail = true;
  MemoryMonitor m(
      [&]() -> absl::StatusOr<uint64_t> {
        if (fail) return absl::UnavailableError("no");
        return 200 * kMb;
      },
      100, 0);
  EXPECT_FALSE(m.Poll(1).has_value());
  EXPECT_EQ(m.read_errors(), 1u);
  EXPECT_EQ(m.level(), L::kNormal);
  fail = false;
  EXPECT_TRUE(m.ReadNow(2).has_value());
  EXPECT_EQ(m.level(), L::kCritical);
  m.SetThreshold(1000);
  EXPECT_TRUE(m.ReadNow(3).has_value());  // 200 MB is now far below
  EXPECT_EQ(m.level(), L::kNormal);
  EXPECT_TRUE(m.Sample());
  EXPECT_DOUBLE_EQ(m.last_rss_mb(), 200);
}

}  // namespace
}  // namespace caudal
