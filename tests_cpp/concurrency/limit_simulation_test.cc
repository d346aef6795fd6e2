// Adaptive limits against a simulated overloaded backend (simulated time, so
// these are exact, repeatable results, not timings): caudal's default
// algorithm must find the hidden capacity with no tuning.
#include "limit_simulation.h"

#include <algorithm>
#include <memory>

#include "caudal/concurrency/limit_algorithms.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using testing_sim::Backend;
using testing_sim::SimResult;
using testing_sim::Simulate;

constexpr int64_t kSec = 1'000'000'000;

struct Case {
  int capacity;
  int load_multiple;
  double jitter;
};

class BaselineGradientSimTest : public ::testing::TestWithParam<Case> {};

TEST_P(BaselineGradientSimTest, FindsTheCapacityOfAnOverloadedBackend) {
  const Case c = GetParam();
  Backend b;
  b.capacity = c.capacity;
  b.jitter = c.jitter;
  const int clients = c.capacity * c.load_multiple;
  double best = 0;
  for (int fixed : {c.capacity / 2, c.capacity, 2 * c.capacity}) {
    FixedLimit f(fixed);
    best = std::max(
        best, Simulate(&f, b, clients, 20 * kSec, 10 * kSec).goodput_per_s);
  }
  FixedLimit light(c.capacity / 2);
  const SimResult unloaded =
      Simulate(&light, b, c.capacity / 2, 20 * kSec, 10 * kSec);
  BaselineGradientLimit adaptive;
  const SimResult r = Simulate(&adaptive, b, clients, 20 * kSec, 10 * kSec);
  EXPECT_GE(r.goodput_per_s, 0.9 * best);
  EXPECT_LE(r.p99_ms, 1.5 * unloaded.p99_ms);
  EXPECT_LE(r.settle_ns, 5 * kSec);
  EXPECT_GE(r.mean_limit, 0.75 * c.capacity);
  EXPECT_LE(r.mean_limit, 1.5 * c.capacity);
  // With no limit at all the same load loses goodput and latency.
  const SimResult none = Simulate(nullptr, b, clients, 20 * kSec, 10 * kSec);
  EXPECT_LT(none.goodput_per_s, r.goodput_per_s);
  EXPECT_GT(none.p99_ms, r.p99_ms);
}

INSTANTIATE_TEST_SUITE_P(Backends, BaselineGradientSimTest,
                         ::testing::Values(Case{20, 2, 0.1}, Case{20, 5, 0.1},
                                           Case{20, 5, 0.4}, Case{60, 3, 0.4},
                                           Case{200, 2, 0.1},
                                           Case{200, 5, 0.4}));

TEST(BaselineGradientSimTest, GrowsBackWhenTheBackendRecovers) {
  // Phase 1: capacity 20; phase 2 the same limiter meets capacity 100.
  BaselineGradientLimit adaptive;
  Backend small;
  small.capacity = 20;
  Simulate(&adaptive, small, 100, 10 * kSec, 5 * kSec);
  EXPECT_LE(adaptive.limit(), 30);
  EXPECT_GT(adaptive.drop_cap(), 0);  // it remembers where drops began
  // Growth past that level waits for a probe, and failed probes in phase 1
  // spaced them out: the limit must be back to the new capacity within
  // 30 s (it takes about 16 s here).
  Backend big;
  big.capacity = 100;
  const SimResult r = Simulate(&adaptive, big, 300, 50 * kSec, 30 * kSec);
  EXPECT_GE(r.FirstReached(75), 0);
  EXPECT_LE(r.FirstReached(75), 30 * kSec);
  EXPECT_GE(r.mean_limit, 75);
  EXPECT_LE(r.mean_limit, 150);
}

// ------------------------------------------------------- a rejecting API
//
// The API the default was failing against: answers in 20-60 ms, 5% of
// answers take 50-100x that whatever the load, and beyond its capacity it
// answers 429 at once instead of queueing, so latency never grows with
// load: the drops are the only signal. The caller retries a rejected
// attempt after 100 ms (caudal's default first back-off) holding its permit.

Backend RejectingApi(int capacity) {
  Backend b;
  b.rejecting = true;
  b.capacity = capacity;
  b.base_rtt_ns = 40'000'000;
  b.jitter = 0.5;
  b.outlier_rate = 0.05;
  b.retry_backoff_ns = 100'000'000;
  return b;
}

BaselineGradientLimit StartingAt(int initial) {
  BaselineGradientLimit::Options o;
  o.initial_limit = initial;
  return *BaselineGradientLimit::Create(o);
}

class RejectingApiTest : public ::testing::TestWithParam<int> {};

TEST_P(RejectingApiTest, SettlesAtTheCapacityWithFewRejections) {
  // A caller backing off 100 ms, and one retrying at once (caudal's plain
  // max_retries=N): each retry of an over-capacity request is a 429.
  for (int64_t backoff : {100'000'000, 0}) {
    SCOPED_TRACE(backoff);
    Backend b = RejectingApi(8);
    b.retry_backoff_ns = backoff;
    BaselineGradientLimit adaptive = StartingAt(GetParam());
    // Settled within 10 s (slow answers make windows long: at a limit of 1,
    // ten answers take about 2 s), then measured for 20 s.
    const SimResult r = Simulate(&adaptive, b, 32, 30 * kSec, 10 * kSec);
    const auto [lo, hi] = r.LimitRange(10 * kSec, 30 * kSec);
    EXPECT_GE(lo, 6);
    EXPECT_LE(hi, 9);
    EXPECT_GE(r.MeanLimit(10 * kSec, 30 * kSec), 7.5);
    EXPECT_LE(r.MeanLimit(10 * kSec, 30 * kSec), 8.5);
    EXPECT_LE(r.drops, 10);
    EXPECT_GE(r.SettledAt(6, 9), 0);
    EXPECT_LE(r.SettledAt(6, 9), GetParam() == 1 ? 10 * kSec : 5 * kSec);
    // And loses little against a limit told the capacity.
    FixedLimit told(8);
    const SimResult best = Simulate(&told, b, 32, 30 * kSec, 10 * kSec);
    EXPECT_GE(r.goodput_per_s, 0.9 * best.goodput_per_s);
  }
}

INSTANTIATE_TEST_SUITE_P(InitialLimits, RejectingApiTest,
                         ::testing::Values(1, 4, 20, 100));

TEST(RejectingApiTest, StartsAtTheDefaultWithOneOrTwoRejections) {
  BaselineGradientLimit adaptive;  // the default initial limit
  const SimResult r = Simulate(&adaptive, RejectingApi(8), 32, 5 * kSec, 0);
  EXPECT_LE(r.DropsBetween(0, 5 * kSec), 3);
  EXPECT_GE(r.final_limit, 7);
  EXPECT_LE(r.LimitRange(0, 5 * kSec).second, 9);
}

TEST(RejectingApiTest, SlowOutliersAloneNeverCutBelowTheFloor) {
  // Capacity far above the load: nothing is rejected, and the 5% slow
  // answers (50-100x the median) are the only latency excursions.
  Backend b = RejectingApi(1000);
  for (int initial : {4, 16}) {
    BaselineGradientLimit adaptive = StartingAt(initial);
    const SimResult r = Simulate(&adaptive, b, 64, 60 * kSec, 0);
    EXPECT_EQ(r.drops, 0);
    EXPECT_GE(r.LimitRange(0, 60 * kSec).first, std::min(4, initial))
        << initial;
    EXPECT_GE(r.final_limit, 32) << initial;  // grew with the load
  }
  // The same on a queueing backend that is never overloaded.
  Backend q;
  q.capacity = 1000;
  q.base_rtt_ns = 40'000'000;
  q.jitter = 0.5;
  q.outlier_rate = 0.05;
  BaselineGradientLimit adaptive = StartingAt(8);
  const SimResult r = Simulate(&adaptive, q, 64, 60 * kSec, 0);
  EXPECT_GE(r.LimitRange(0, 60 * kSec).first, 4);
}

TEST(RejectingApiTest, StrayDropsDoNotRatchetTheLimitDown) {
  // One served request in 500 fails with a connection reset, whatever the
  // load: a drop that says nothing about capacity. Each costs a cut, but
  // only drops again before the level held move the remembered cap.
  Backend b = RejectingApi(8);
  b.stray_drop_rate = 0.002;
  BaselineGradientLimit adaptive = StartingAt(4);
  const SimResult r = Simulate(&adaptive, b, 32, 70 * kSec, 10 * kSec);
  EXPECT_GE(r.MeanLimit(10 * kSec, 70 * kSec), 7.0);
  EXPECT_GE(r.LimitRange(10 * kSec, 70 * kSec).first, 5);
  EXPECT_LE(r.LimitRange(10 * kSec, 70 * kSec).second, 9);
}

TEST(RejectingApiTest, FollowsTheCapacityWhenItHalves) {
  Backend b = RejectingApi(8);
  b.capacity_changes = {{20 * kSec, 4}};
  BaselineGradientLimit adaptive = StartingAt(4);
  const SimResult r = Simulate(&adaptive, b, 32, 50 * kSec, 0);
  EXPECT_GE(r.MeanLimit(10 * kSec, 20 * kSec), 7.5);
  // Within 5 s of the change the limit is at the new capacity and stays.
  const int64_t settled = r.SettledAt(3, 5, 20 * kSec);
  EXPECT_GE(settled, 20 * kSec);
  EXPECT_LE(settled, 25 * kSec);
  EXPECT_GE(r.MeanLimit(30 * kSec, 50 * kSec), 3.5);
  EXPECT_LE(r.DropsBetween(30 * kSec, 50 * kSec), 10);
}

TEST(RejectingApiTest, FollowsTheCapacityWhenItDoubles) {
  Backend b = RejectingApi(8);
  b.capacity_changes = {{20 * kSec, 16}};
  BaselineGradientLimit adaptive = StartingAt(4);
  const SimResult r = Simulate(&adaptive, b, 64, 150 * kSec, 0);
  EXPECT_LE(r.LimitRange(10 * kSec, 20 * kSec).second, 9);
  const int64_t reached = r.FirstReached(14, 20 * kSec);
  EXPECT_GE(reached, 20 * kSec);
  EXPECT_LE(reached, 80 * kSec);
  EXPECT_LE(r.LimitRange(reached, 150 * kSec).second, 17);
  EXPECT_GE(r.MeanLimit(100 * kSec, 150 * kSec), 14);
}

}  // namespace
}  // namespace caudal
