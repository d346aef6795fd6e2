// Adaptive limits against a simulated overloaded backend (simulated time, so
// these are exact, repeatable results, not timings): caudal's default
// algorithm must find the hidden capacity with no tuning.
#include "limit_simulation.h"

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
  Backend big;
  big.capacity = 100;
  const SimResult r = Simulate(&adaptive, big, 300, 20 * kSec, 10 * kSec);
  EXPECT_GE(r.mean_limit, 75);
  EXPECT_LE(r.mean_limit, 150);
}

}  // namespace
}  // namespace caudal
