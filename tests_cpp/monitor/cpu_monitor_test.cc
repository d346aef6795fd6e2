// CpuMonitor with an injected CPU-time source and hand-driven time.
#include "caudal/monitor/cpu_monitor.h"

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

constexpr int64_t kSec = 1'000'000'000;

TEST(CpuMonitorTest, PercentOfAllowedCpusAndPerCore) {
  int64_t cpu = 0;
  CpuMonitor m([&]() -> absl::StatusOr<int64_t> { return cpu; },
               /*allowed_cpus=*/4);
  EXPECT_EQ(m.Snapshot().percent, 0.0);  // no samples yet
  ASSERT_TRUE(m.Sample(0));
  EXPECT_EQ(m.Snapshot().window_s, 0.0);  // one sample: not known yet
  cpu = kSec / 2;                         // half a core over one second
  ASSERT_TRUE(m.Sample(kSec));
  const CpuSnapshot s = m.Snapshot();
  EXPECT_DOUBLE_EQ(s.per_core_percent, 50.0);
  EXPECT_DOUBLE_EQ(s.percent, 12.5);
  EXPECT_EQ(s.allowed_cpus, 4);
  EXPECT_DOUBLE_EQ(s.window_s, 1.0);
  EXPECT_DOUBLE_EQ(s.cpu_seconds, 0.5);
  EXPECT_EQ(s.readings, 2u);
}

TEST(CpuMonitorTest, FiguresCoverTheLastWindowOnly) {
  int64_t cpu = 0;
  CpuMonitor m([&]() -> absl::StatusOr<int64_t> { return cpu; }, 2,
               /*window_ns=*/10 * kSec);
  // 20 s idle, then 10 s with both CPUs busy.
  for (int t = 0; t <= 20; ++t) m.Sample(t * kSec);
  EXPECT_DOUBLE_EQ(m.Snapshot().percent, 0.0);
  for (int t = 21; t <= 30; ++t) {
    cpu += 2 * kSec;
    m.Sample(t * kSec);
  }
  const CpuSnapshot s = m.Snapshot();
  EXPECT_DOUBLE_EQ(s.window_s, 10.0);
  EXPECT_DOUBLE_EQ(s.per_core_percent, 200.0);
  EXPECT_DOUBLE_EQ(s.percent, 100.0);
  // Five more idle seconds: half the window busy.
  for (int t = 31; t <= 35; ++t) m.Sample(t * kSec);
  EXPECT_DOUBLE_EQ(m.Snapshot().percent, 50.0);
}

TEST(CpuMonitorTest, FrequentReadsDoNotShrinkTheWindow) {
  int64_t cpu = 0;
  CpuMonitor m([&]() -> absl::StatusOr<int64_t> { return cpu; }, 1, 10 * kSec);
  for (int t = 0; t <= 10; ++t) {
    cpu = t * kSec / 4;  // a quarter of the CPU
    m.Sample(t * kSec);
  }
  // A thousand reads within 10 ms keep the window at 10 s.
  for (int i = 1; i <= 1000; ++i) m.Sample(10 * kSec + i * 10'000);
  const CpuSnapshot s = m.Snapshot();
  EXPECT_NEAR(s.window_s, 10.0, 0.02);
  EXPECT_NEAR(s.percent, 25.0, 0.1);
}

TEST(CpuMonitorTest, ReadErrorsAreCountedAndSkipped) {
  bool fail = false;
  int64_t cpu = 0;
  CpuMonitor m(
      [&]() -> absl::StatusOr<int64_t> {
        if (fail) return absl::UnavailableError("no clock");
        return cpu;
      },
      1);
  m.Sample(0);
  fail = true;
  EXPECT_FALSE(m.Sample(kSec));
  fail = false;
  cpu = kSec;
  m.Sample(2 * kSec);
  const CpuSnapshot s = m.Snapshot();
  EXPECT_EQ(s.read_errors, 1u);
  EXPECT_EQ(s.readings, 3u);
  EXPECT_DOUBLE_EQ(s.percent, 50.0);
}

TEST(CpuMonitorTest, TheRealProcessClock) {
  CpuMonitor m;
  ASSERT_TRUE(m.Sample(0));
  EXPECT_GE(m.Snapshot().allowed_cpus, 1);
  EXPECT_GT(m.Snapshot().cpu_seconds, 0.0);
  EXPECT_GE(AllowedCpuCount(), 1);
}

}  // namespace
}  // namespace caudal
