// CalibratedClock: system reads until calibrated, tick reads after, kept on
// the system clock by re-anchoring, back to the system clock for good when
// the two disagree; never backwards within a thread. Fake sources drive the
// clock by hand; the last tests read the real one (MonotonicNowNs).
#include "caudal/executor/calibrated_clock.h"

#include <time.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "caudal/executor/clock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

// A system clock and a 2 GHz tick counter moved by hand.
struct FakeSources {
  static std::atomic<int64_t> sys_ns;
  static std::atomic<uint64_t> ticks;
  // When set, the thread reading the system clock is descheduled right
  // after its read for this long: both clocks move on meanwhile.
  static std::atomic<int64_t> stall_ns;
  static int64_t SystemNs() {
    const int64_t v = sys_ns.load();
    if (const int64_t stall = stall_ns.load()) Advance(stall);
    return v;
  }
  static uint64_t Ticks() { return ticks.load(); }
  static void Reset() {
    stall_ns = 0;
    sys_ns = 1'000'000'000'000;
    ticks = 77'000'000'000;
  }
  // Both clocks move by `ns` (ticks at 2 per ns, times `tick_ratio`).
  static void Advance(int64_t ns, double tick_ratio = 1.0) {
    sys_ns += ns;
    ticks += static_cast<uint64_t>(2.0 * static_cast<double>(ns) * tick_ratio);
  }
};
std::atomic<int64_t> FakeSources::sys_ns{0};
std::atomic<uint64_t> FakeSources::ticks{0};
std::atomic<int64_t> FakeSources::stall_ns{0};

using Clock = CalibratedClock<FakeSources>;
constexpr int64_t kMs = 1'000'000;

class CalibratedClockTest : public ::testing::Test {
 protected:
  void SetUp() override { FakeSources::Reset(); }
  // Calibrated: past kCalibrateNs, one read sets the first anchor.
  static void Calibrate(Clock& c) {
    FakeSources::Advance(Clock::kCalibrateNs + kMs);
    c.Now();
    ASSERT_EQ(c.mode(), Clock::Mode::kTicks);
  }
};

TEST_F(CalibratedClockTest, ReadsTheSystemClockUntilCalibratedThenTheTicks) {
  Clock c(true);
  EXPECT_EQ(c.mode(), Clock::Mode::kCalibrating);
  FakeSources::Advance(5 * kMs);
  EXPECT_EQ(c.Now(), FakeSources::sys_ns.load());
  EXPECT_EQ(c.mode(), Clock::Mode::kCalibrating);
  FakeSources::Advance(6 * kMs);
  const int64_t at = FakeSources::sys_ns.load();
  EXPECT_EQ(c.Now(), at);
  EXPECT_EQ(c.mode(), Clock::Mode::kTicks);
  EXPECT_NEAR(c.TicksPerSecond(), 2e9, 1e3);
  // Only the ticks move: the reading follows them, not the system clock.
  FakeSources::ticks += 2'000;  // 1 µs
  EXPECT_NEAR(static_cast<double>(c.Now()), static_cast<double>(at + 1'000),
              1.0);
}

TEST_F(CalibratedClockTest, WithoutTicksEveryReadIsASystemRead) {
  Clock c(false);
  FakeSources::Advance(20 * kMs);
  EXPECT_EQ(c.Now(), FakeSources::sys_ns.load());
  FakeSources::ticks += 1'000'000;
  EXPECT_EQ(c.Now(), FakeSources::sys_ns.load());
  EXPECT_EQ(c.mode(), Clock::Mode::kSystem);
}

TEST_F(CalibratedClockTest, TicksThatDoNotMoveAreNotUsed) {
  Clock c(true);
  FakeSources::sys_ns += 20 * kMs;  // ticks stay
  EXPECT_EQ(c.Now(), FakeSources::sys_ns.load());
  EXPECT_EQ(c.mode(), Clock::Mode::kSystem);
}

TEST_F(CalibratedClockTest, StaysOnASystemClockThatRunsAtAnotherRate) {
  // After calibration the system clock runs 200 ppm fast against the ticks
  // (NTP slewing is at most 500 ppm): re-anchoring keeps the reading within
  // a few microseconds of it, and never backwards.
  Clock c(true);
  Calibrate(c);
  int64_t last = c.Now();
  int64_t worst = 0;
  for (int i = 0; i < 4000; ++i) {  // 2 s in 0.5 ms steps
    FakeSources::Advance(kMs / 2, 1.0 / 1.0002);
    const int64_t now = c.Now();
    ASSERT_GE(now, last) << "step " << i;
    last = now;
    if (i > 400) {  // once the rate has been re-measured
      worst = std::max(worst, std::abs(now - FakeSources::sys_ns.load()));
    }
  }
  EXPECT_EQ(c.mode(), Clock::Mode::kTicks);
  // 200 ppm over one 50 ms anchor is 10 µs.
  EXPECT_LE(worst, 12'000) << "ns from the system clock";
}

TEST_F(CalibratedClockTest, AfterAPauseInReadsItIsStillOnTheSystemClock) {
  // 10 s of reads, then the system clock runs 200 ppm fast for one span,
  // so the next anchor carries a scale slewed by as much; then nobody reads
  // the clock for 5 s. The first read after the pause must not have carried
  // that slew over the whole pause (1 ms off): past its span an anchor
  // reads at the rate measured over the 10 s.
  Clock c(true);
  Calibrate(c);
  for (int i = 0; i < 20000; ++i) FakeSources::Advance(kMs / 2);
  for (int i = 0; i < 100; ++i) FakeSources::Advance(kMs / 2, 1.0 / 1.0002);
  int64_t last = c.Now();
  for (int pause = 0; pause < 2; ++pause) {
    FakeSources::Advance(5'000 * kMs);
    const int64_t now = c.Now();
    EXPECT_GE(now, last);
    EXPECT_LE(std::abs(now - FakeSources::sys_ns.load()), 20'000)
        << "ns from the system clock after a 5 s pause";
    EXPECT_EQ(c.mode(), Clock::Mode::kTicks);
    last = now;
  }
}

TEST_F(CalibratedClockTest, AClockAheadAfterAPauseSlewsBackWithoutGoingBack) {
  // The ticks run 500 ppm fast against the system clock during a 10 s
  // pause (the worst NTP slewing): the clock is 5 ms ahead at the next
  // read. It is not a jump (the pause explains it): the ticks stay in use,
  // and the clock comes back to the system clock without going backwards.
  Clock c(true);
  Calibrate(c);
  FakeSources::Advance(10'000 * kMs, 1.0005);
  int64_t last = c.Now();
  EXPECT_GT(last - FakeSources::sys_ns.load(), 4 * kMs);
  EXPECT_EQ(c.mode(), Clock::Mode::kTicks);
  for (int i = 0; i < 2000; ++i) {  // 1 s in 0.5 ms steps
    FakeSources::Advance(kMs / 2);
    const int64_t now = c.Now();
    ASSERT_GT(now, last) << "step " << i;
    last = now;
  }
  // Within the rate's error over one span: the rate measured across the
  // pause is 500 ppm off (25 µs per 50 ms), caught up at each re-anchor.
  EXPECT_LE(std::abs(last - FakeSources::sys_ns.load()), 30'000);
  EXPECT_EQ(c.mode(), Clock::Mode::kTicks);
}

TEST_F(CalibratedClockTest, ABehindClockCatchesUpAtOnce) {
  Clock c(true);
  Calibrate(c);
  FakeSources::Advance(10'000 * kMs, 0.9995);  // ticks 500 ppm slow
  const int64_t sys = FakeSources::sys_ns.load();
  const int64_t now = c.Now();
  EXPECT_GE(now, sys);  // caught up (5 ms), a jump forward
  EXPECT_LE(now - sys, 1'000);
}

TEST_F(CalibratedClockTest, ADescheduledReadIsNotTakenForAJump) {
  // The thread that re-anchors is descheduled for 5 ms right after each of
  // its system reads: its tick read comes 5 ms later. That is not a skew
  // between the clocks (the ticks stay in use, the anchor is kept), and the
  // next undisturbed read re-anchors.
  Clock c(true);
  Calibrate(c);
  FakeSources::Advance(60 * kMs);  // the anchor has run out
  FakeSources::stall_ns = 5 * kMs;
  const int64_t during = c.Now();
  FakeSources::stall_ns = 0;
  EXPECT_EQ(c.mode(), Clock::Mode::kTicks);
  FakeSources::Advance(kMs);
  const int64_t after = c.Now();
  EXPECT_GT(after, during);
  EXPECT_EQ(c.mode(), Clock::Mode::kTicks);
  EXPECT_LE(std::abs(after - FakeSources::sys_ns.load()), 1'000);
}

TEST_F(CalibratedClockTest, TicksThatJumpSendItBackToTheSystemClockForGood) {
  Clock c(true);
  Calibrate(c);
  FakeSources::Advance(10 * kMs);
  const int64_t before = c.Now();
  // The ticks jump 100 ms ahead of the system clock (a paused VM whose
  // counter was not), then the anchor runs out.
  FakeSources::ticks += 200 * kMs;
  FakeSources::Advance(60 * kMs);
  const int64_t jumped = c.Now();
  EXPECT_GE(jumped, before);
  EXPECT_EQ(c.mode(), Clock::Mode::kSystem);
  // Never below what it returned, then the system clock once it passes.
  FakeSources::Advance(kMs);
  EXPECT_GE(c.Now(), jumped);
  FakeSources::sys_ns += 500 * kMs;
  EXPECT_EQ(c.Now(), FakeSources::sys_ns.load());
}

TEST_F(CalibratedClockTest, TicksALittleBehindTheAnchorDoNotGoBack) {
  Clock c(true);
  Calibrate(c);
  FakeSources::Advance(60 * kMs);  // past the span: the next read re-anchors
  const int64_t anchored = c.Now();
  FakeSources::ticks -= 100;  // read on a CPU 100 cycles behind
  EXPECT_GE(c.Now(), anchored - 50);
  EXPECT_EQ(c.mode(), Clock::Mode::kTicks);
}

TEST_F(CalibratedClockTest, ReadersOnManyThreadsNeverGoBackwards) {
  Clock c(true);
  Calibrate(c);
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  std::atomic<int> backwards{0};
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      int64_t last = c.Now();
      while (!stop.load()) {
        const int64_t now = c.Now();
        if (now < last) backwards.fetch_add(1);
        last = now;
      }
    });
  }
  // The clocks move (re-anchors every 50 ms of them) while the threads read.
  for (int i = 0; i < 20000; ++i) FakeSources::Advance(50'000, 1.0001);
  stop = true;
  for (auto& r : readers) r.join();
  EXPECT_EQ(backwards.load(), 0);
  EXPECT_EQ(c.mode(), Clock::Mode::kTicks);
}

int64_t SystemMonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

TEST(MonotonicNowNsTest, StaysOnClockMonotonicAndNeverGoesBack) {
  // 300 ms of reads: calibration and a few re-anchors. Each reading lies
  // between two system reads around it (give or take 50 µs); brackets
  // stretched by preemption are skipped.
  int64_t last = MonotonicNowNs();
  int checked = 0;
  const int64_t end = SystemMonotonicNs() + 300 * kMs;
  while (SystemMonotonicNs() < end) {
    const int64_t before = SystemMonotonicNs();
    const int64_t now = MonotonicNowNs();
    const int64_t after = SystemMonotonicNs();
    ASSERT_GE(now, last);
    last = now;
    if (after - before > 20'000) continue;
    ++checked;
    ASSERT_GE(now, before - 50'000) << MonotonicClockSource();
    ASSERT_LE(now, after + 50'000) << MonotonicClockSource();
  }
  EXPECT_GT(checked, 1000);
  const std::string source = MonotonicClockSource();
  EXPECT_TRUE(source == "tsc" || source == "system") << source;
  if (source == "tsc") EXPECT_GT(MonotonicClockTicksPerSecond(), 1e8);
}

TEST(MonotonicNowNsTest, ThreadsReadingAtOnceNeverGoBack) {
  std::vector<std::thread> threads;
  std::atomic<int> backwards{0};
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      int64_t last = MonotonicNowNs();
      const int64_t end = last + 120 * kMs;  // past a re-anchor or two
      while (last < end) {
        const int64_t now = MonotonicNowNs();
        if (now < last) backwards.fetch_add(1);
        last = now;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(backwards.load(), 0);
}

}  // namespace
}  // namespace caudal
