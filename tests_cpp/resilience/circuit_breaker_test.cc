#include "caudal/resilience/circuit_breaker.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Decision = CircuitBreaker::Decision;
using State = CircuitBreaker::State;

constexpr int64_t kSecond = 1'000'000'000;

CircuitBreaker::Options Opts(int failure_threshold, int64_t recovery_ns) {
  CircuitBreaker::Options o;
  o.failure_threshold = failure_threshold;
  o.recovery_timeout_ns = recovery_ns;
  return o;
}

// Fails `n` closed-state calls at `now`; returns the last transition seen.
absl::optional<CircuitBreaker::Transition> FailN(CircuitBreaker& b, int n,
                                                 int64_t now) {
  absl::optional<CircuitBreaker::Transition> last;
  for (int i = 0; i < n; ++i) {
    const auto a = b.TryAcquire(now);
    EXPECT_EQ(a.decision, Decision::kAllowed);
    auto t = b.OnFailure(now, a.probe());
    if (t.has_value()) last = t;
  }
  return last;
}

// --- Options ----------------------------------------------------------------

TEST(CircuitBreakerOptionsTest, DefaultsAreValid) {
  const CircuitBreaker::Options o;
  EXPECT_TRUE(o.Validate().ok());
  EXPECT_EQ(o.failure_threshold, 10);
  EXPECT_EQ(o.recovery_timeout_ns, 60 * kSecond);
  EXPECT_EQ(o.half_open_max_calls, 1);
  EXPECT_EQ(o.success_threshold, 1);
  EXPECT_EQ(o.window_size, 0);
}

TEST(CircuitBreakerOptionsTest, ValidateNamesEachBadField) {
  CircuitBreaker::Options o;
  o.failure_threshold = 0;
  o.recovery_timeout_ns = -1;
  o.half_open_max_calls = 0;
  o.success_threshold = -2;
  const absl::Status s = o.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "failure_threshold must be positive; recovery_timeout_ns must not "
            "be negative; half_open_max_calls must be positive; "
            "success_threshold must be positive");
}

TEST(CircuitBreakerOptionsTest, ValidateWindowFields) {
  CircuitBreaker::Options o;
  o.window_size = 10;
  o.minimum_calls = 11;
  o.failure_rate_threshold = 0.0;
  EXPECT_EQ(o.Validate().message(),
            "minimum_calls must be between 1 and window_size; "
            "failure_rate_threshold must be greater than 0.0 and at most 1.0");
  o.minimum_calls = 10;
  o.failure_rate_threshold = 1.0;
  EXPECT_TRUE(o.Validate().ok());
  o.failure_rate_threshold = std::nan("");
  EXPECT_THAT(std::string(o.Validate().message()),
              HasSubstr("failure_rate_threshold"));
  o.window_size = -1;
  EXPECT_EQ(o.Validate().message(), "window_size must not be negative");
}

TEST(CircuitBreakerTest, CreateRejectsInvalidOptions) {
  auto bad = CircuitBreaker::Create(Opts(0, kSecond));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  auto good = CircuitBreaker::Create(Opts(3, kSecond));
  ASSERT_TRUE(good.ok());
  EXPECT_EQ((*good)->state(), State::kClosed);
}

TEST(CircuitBreakerTest, StateNames) {
  EXPECT_EQ(StateName(State::kClosed), "closed");
  EXPECT_EQ(StateName(State::kOpen), "open");
  EXPECT_EQ(StateName(State::kHalfOpen), "half_open");
}

// --- Closed / open / half-open ----------------------------------------------

TEST(CircuitBreakerTest, ClosedAdmitsAndCounts) {
  CircuitBreaker b(Opts(3, kSecond));
  for (int i = 0; i < 5; ++i) {
    const auto a = b.TryAcquire(i);
    EXPECT_EQ(a.decision, Decision::kAllowed);
    EXPECT_TRUE(a.admitted());
    EXPECT_FALSE(a.probe());
    EXPECT_FALSE(a.transition.has_value());
    EXPECT_FALSE(b.OnSuccess(i, false).has_value());
  }
  const auto s = b.GetSnapshot();
  EXPECT_EQ(s.state, State::kClosed);
  EXPECT_EQ(s.success_count, 5u);
  EXPECT_EQ(s.failure_count, 0u);
  EXPECT_EQ(s.transition_seq, 0u);
  EXPECT_EQ(s.last_transition_ns, 0);
}

// The inlined closed-state paths of TryAcquire and OnSuccess (header) keep
// the breaker's rules: a success resets the consecutive failures and is
// counted; other states and the sliding window take the full paths.
TEST(CircuitBreakerTest, InlinedClosedPathsKeepTheRules) {
  CircuitBreaker b(Opts(3, kSecond));
  EXPECT_TRUE(b.TryAcquire(0).admitted());
  FailN(b, 2, 0);
  EXPECT_FALSE(b.OnSuccess(0, false).has_value());  // resets the failures:
  FailN(b, 2, 1);                                   // two more do not open it
  EXPECT_EQ(b.state(), State::kClosed);
  EXPECT_EQ(b.GetSnapshot().success_count, 1u);
  FailN(b, 1, 2);  // the third in a row opens it
  EXPECT_EQ(b.state(), State::kOpen);
  EXPECT_FALSE(b.TryAcquire(3).admitted());  // the open path
  // A late success while open is counted and changes nothing (full path).
  EXPECT_FALSE(b.OnSuccess(3, false).has_value());
  EXPECT_EQ(b.GetSnapshot().success_count, 2u);
  EXPECT_EQ(b.state(), State::kOpen);
  // With a sliding window the success goes into the ring.
  CircuitBreaker::Options o = Opts(3, kSecond);
  o.window_size = 10;
  o.minimum_calls = 5;
  CircuitBreaker w(o);
  EXPECT_TRUE(w.TryAcquire(0).admitted());
  w.OnSuccess(0, false);
  EXPECT_EQ(w.GetSnapshot().window_calls, 1u);
}

TEST(CircuitBreakerTest, OpensOnThresholdAndReturnsTransition) {
  CircuitBreaker b(Opts(3, 10 * kSecond));
  EXPECT_FALSE(FailN(b, 2, 100).has_value());
  EXPECT_EQ(b.GetSnapshot().consecutive_failures, 2);
  b.TryAcquire(200);
  const auto t = b.OnFailure(200, false);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->from, State::kClosed);
  EXPECT_EQ(t->to, State::kOpen);
  EXPECT_EQ(t->at_ns, 200);
  EXPECT_EQ(t->seq, 1u);
  const auto s = b.GetSnapshot();
  EXPECT_EQ(s.state, State::kOpen);
  EXPECT_EQ(s.open_count, 1u);
  EXPECT_EQ(s.failure_count, 3u);
  EXPECT_EQ(s.consecutive_failures, 3);
  EXPECT_EQ(s.last_transition_ns, 200);
  EXPECT_EQ(s.transition_seq, 1u);
  EXPECT_EQ(s.open_until_ns, 200 + 10 * kSecond);
}

TEST(CircuitBreakerTest, SuccessResetsConsecutiveFailures) {
  CircuitBreaker b(Opts(3, kSecond));
  FailN(b, 2, 0);
  b.OnSuccess(1, false);
  EXPECT_EQ(b.GetSnapshot().consecutive_failures, 0);
  FailN(b, 2, 2);
  EXPECT_EQ(b.state(), State::kClosed);
  EXPECT_EQ(b.GetSnapshot().failure_count, 4u);
}

TEST(CircuitBreakerTest, RejectsWhileOpenWithTimeLeft) {
  CircuitBreaker b(Opts(1, 10 * kSecond));
  FailN(b, 1, 1000);
  auto a = b.TryAcquire(1000);
  EXPECT_EQ(a.decision, Decision::kRejected);
  EXPECT_FALSE(a.admitted());
  EXPECT_EQ(a.retry_after_ns, 10 * kSecond);
  a = b.TryAcquire(1000 + 4 * kSecond);
  EXPECT_EQ(a.retry_after_ns, 6 * kSecond);
  a = b.TryAcquire(1000 + 10 * kSecond - 1);
  EXPECT_EQ(a.decision, Decision::kRejected);
  EXPECT_EQ(a.retry_after_ns, 1);
  EXPECT_EQ(b.GetSnapshot().rejected_count, 3u);
  EXPECT_EQ(b.state(), State::kOpen);
}

TEST(CircuitBreakerTest, HalfOpensLazilyAtFirstAcquireAfterTimeout) {
  CircuitBreaker b(Opts(1, 10 * kSecond));
  FailN(b, 1, 0);
  // No timers: still open until someone asks, even long after the deadline.
  EXPECT_EQ(b.state(), State::kOpen);
  const auto a = b.TryAcquire(50 * kSecond);
  EXPECT_EQ(a.decision, Decision::kProbe);
  EXPECT_TRUE(a.admitted());
  EXPECT_TRUE(a.probe());
  ASSERT_TRUE(a.transition.has_value());
  EXPECT_EQ(a.transition->from, State::kOpen);
  EXPECT_EQ(a.transition->to, State::kHalfOpen);
  EXPECT_EQ(a.transition->at_ns, 50 * kSecond);
  EXPECT_EQ(a.transition->seq, 2u);
  EXPECT_EQ(b.state(), State::kHalfOpen);
  EXPECT_EQ(b.GetSnapshot().probes_in_flight, 1);
}

TEST(CircuitBreakerTest, HalfOpenAdmitsAtMostMaxProbes) {
  auto o = Opts(1, kSecond);
  o.half_open_max_calls = 2;
  o.success_threshold = 2;
  CircuitBreaker b(o);
  FailN(b, 1, 0);
  const auto p1 = b.TryAcquire(kSecond);
  const auto p2 = b.TryAcquire(kSecond);
  const auto p3 = b.TryAcquire(kSecond);
  EXPECT_EQ(p1.decision, Decision::kProbe);
  EXPECT_EQ(p2.decision, Decision::kProbe);
  EXPECT_FALSE(p2.transition.has_value());
  EXPECT_EQ(p3.decision, Decision::kRejected);
  EXPECT_EQ(p3.retry_after_ns, 0);  // wait for a probe, not for a timer
  // A cancelled probe gives its slot back.
  b.OnIgnored(true);
  EXPECT_EQ(b.TryAcquire(kSecond).decision, Decision::kProbe);
  EXPECT_EQ(b.GetSnapshot().probes_in_flight, 2);
  EXPECT_EQ(b.GetSnapshot().rejected_count, 1u);
}

TEST(CircuitBreakerTest, SuccessThresholdProbesCloseAndResetCounters) {
  auto o = Opts(2, kSecond);
  o.success_threshold = 3;
  CircuitBreaker b(o);
  FailN(b, 2, 0);
  for (int i = 0; i < 2; ++i) {
    const auto a = b.TryAcquire(kSecond + i);
    ASSERT_EQ(a.decision, Decision::kProbe);
    EXPECT_FALSE(b.OnSuccess(kSecond + i, true).has_value());
    EXPECT_EQ(b.state(), State::kHalfOpen);
  }
  ASSERT_EQ(b.TryAcquire(kSecond + 5).decision, Decision::kProbe);
  const auto t = b.OnSuccess(kSecond + 5, true);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->from, State::kHalfOpen);
  EXPECT_EQ(t->to, State::kClosed);
  EXPECT_EQ(t->seq, 3u);
  const auto s = b.GetSnapshot();
  EXPECT_EQ(s.state, State::kClosed);
  EXPECT_EQ(s.consecutive_failures, 0);
  EXPECT_EQ(s.probes_in_flight, 0);
  EXPECT_EQ(s.success_count, 3u);
  EXPECT_EQ(s.failure_count, 2u);  // totals are kept
  // Counters were reset: it takes the full threshold to open again.
  EXPECT_FALSE(FailN(b, 1, kSecond + 6).has_value());
  EXPECT_TRUE(FailN(b, 1, kSecond + 7).has_value());
}

TEST(CircuitBreakerTest, ProbeFailureReopensWithNewTimer) {
  auto o = Opts(1, 10 * kSecond);
  o.success_threshold = 2;
  CircuitBreaker b(o);
  FailN(b, 1, 0);
  ASSERT_EQ(b.TryAcquire(10 * kSecond).decision, Decision::kProbe);
  b.OnSuccess(10 * kSecond, true);  // one of two
  ASSERT_EQ(b.TryAcquire(11 * kSecond).decision, Decision::kProbe);
  const auto t = b.OnFailure(12 * kSecond, true);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->from, State::kHalfOpen);
  EXPECT_EQ(t->to, State::kOpen);
  const auto s = b.GetSnapshot();
  EXPECT_EQ(s.open_count, 2u);
  EXPECT_EQ(s.open_until_ns, 22 * kSecond);
  EXPECT_EQ(b.TryAcquire(21 * kSecond).retry_after_ns, kSecond);
  // The earlier probe success does not carry over to the next half-open.
  ASSERT_EQ(b.TryAcquire(22 * kSecond).decision, Decision::kProbe);
  EXPECT_FALSE(b.OnSuccess(22 * kSecond, true).has_value());
  EXPECT_EQ(b.state(), State::kHalfOpen);
}

TEST(CircuitBreakerTest, ZeroRecoveryTimeoutHalfOpensAtOnce) {
  CircuitBreaker b(Opts(1, 0));
  FailN(b, 1, 5);
  EXPECT_EQ(b.TryAcquire(5).decision, Decision::kProbe);
}

TEST(CircuitBreakerTest, HugeRecoveryTimeoutSaturates) {
  CircuitBreaker b(Opts(1, std::numeric_limits<int64_t>::max()));
  FailN(b, 1, kSecond);
  EXPECT_EQ(b.GetSnapshot().open_until_ns, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(b.TryAcquire(2 * kSecond).decision, Decision::kRejected);
}

// --- Late verdicts ----------------------------------------------------------

TEST(CircuitBreakerLateVerdictTest, FailureWhileOpenKeepsTimer) {
  CircuitBreaker b(Opts(2, 10 * kSecond));
  // Three calls admitted while closed; two fail and open the breaker.
  for (int i = 0; i < 3; ++i) b.TryAcquire(0);
  b.OnFailure(100, false);
  ASSERT_TRUE(b.OnFailure(200, false).has_value());
  // The third reports long after: counted, timer untouched, no transition.
  EXPECT_FALSE(b.OnFailure(5 * kSecond, false).has_value());
  const auto s = b.GetSnapshot();
  EXPECT_EQ(s.state, State::kOpen);
  EXPECT_EQ(s.failure_count, 3u);
  EXPECT_EQ(s.open_until_ns, 200 + 10 * kSecond);
  EXPECT_EQ(s.open_count, 1u);
  EXPECT_EQ(s.transition_seq, 1u);
}

TEST(CircuitBreakerLateVerdictTest, SuccessWhileOpenIsOnlyCounted) {
  CircuitBreaker b(Opts(1, 10 * kSecond));
  b.TryAcquire(0);
  FailN(b, 1, 0);
  EXPECT_FALSE(b.OnSuccess(kSecond, false).has_value());
  const auto s = b.GetSnapshot();
  EXPECT_EQ(s.state, State::kOpen);
  EXPECT_EQ(s.success_count, 1u);
  EXPECT_EQ(s.open_until_ns, 10 * kSecond);
}

TEST(CircuitBreakerLateVerdictTest, NonProbeFailureDoesNotReopenHalfOpen) {
  CircuitBreaker b(Opts(1, kSecond));
  b.TryAcquire(0);  // admitted while closed, reports late
  FailN(b, 1, 0);
  ASSERT_EQ(b.TryAcquire(kSecond).decision, Decision::kProbe);
  EXPECT_FALSE(b.OnFailure(kSecond + 1, false).has_value());
  EXPECT_EQ(b.state(), State::kHalfOpen);
  EXPECT_EQ(b.GetSnapshot().probes_in_flight, 1);
  // The probe still decides.
  EXPECT_TRUE(b.OnSuccess(kSecond + 2, true).has_value());
  EXPECT_EQ(b.state(), State::kClosed);
  EXPECT_EQ(b.GetSnapshot().failure_count, 2u);
}

TEST(CircuitBreakerLateVerdictTest, NonProbeSuccessDoesNotCloseHalfOpen) {
  CircuitBreaker b(Opts(1, kSecond));
  b.TryAcquire(0);
  FailN(b, 1, 0);
  ASSERT_EQ(b.TryAcquire(kSecond).decision, Decision::kProbe);
  EXPECT_FALSE(b.OnSuccess(kSecond + 1, false).has_value());
  EXPECT_EQ(b.state(), State::kHalfOpen);
  EXPECT_TRUE(b.OnFailure(kSecond + 2, true).has_value());
  EXPECT_EQ(b.state(), State::kOpen);
}

TEST(CircuitBreakerLateVerdictTest, ProbeVerdictAfterAnotherProbeClosed) {
  auto o = Opts(1, kSecond);
  o.half_open_max_calls = 2;
  CircuitBreaker b(o);
  FailN(b, 1, 0);
  ASSERT_EQ(b.TryAcquire(kSecond).decision, Decision::kProbe);
  ASSERT_EQ(b.TryAcquire(kSecond).decision, Decision::kProbe);
  ASSERT_TRUE(b.OnSuccess(kSecond + 1, true).has_value());  // closes
  // The second probe fails after the close: counted, slot returned, the
  // closed breaker (failure_threshold 1) does not open on it.
  EXPECT_FALSE(b.OnFailure(kSecond + 2, true).has_value());
  const auto s = b.GetSnapshot();
  EXPECT_EQ(s.state, State::kClosed);
  EXPECT_EQ(s.consecutive_failures, 0);
  EXPECT_EQ(s.probes_in_flight, 0);
  EXPECT_EQ(s.failure_count, 2u);
}

TEST(CircuitBreakerLateVerdictTest, ProbeVerdictAfterAnotherProbeReopened) {
  auto o = Opts(1, 10 * kSecond);
  o.half_open_max_calls = 2;
  CircuitBreaker b(o);
  FailN(b, 1, 0);
  ASSERT_EQ(b.TryAcquire(10 * kSecond).decision, Decision::kProbe);
  ASSERT_EQ(b.TryAcquire(10 * kSecond).decision, Decision::kProbe);
  ASSERT_TRUE(b.OnFailure(11 * kSecond, true).has_value());  // reopens
  // The other probe fails later: no new timer, no second open.
  EXPECT_FALSE(b.OnFailure(15 * kSecond, true).has_value());
  auto s = b.GetSnapshot();
  EXPECT_EQ(s.open_until_ns, 21 * kSecond);
  EXPECT_EQ(s.open_count, 2u);
  EXPECT_EQ(s.probes_in_flight, 0);
}

TEST(CircuitBreakerLateVerdictTest, ProbeSlotsAreHeldAcrossReopen) {
  auto o = Opts(1, kSecond);
  o.half_open_max_calls = 2;
  CircuitBreaker b(o);
  FailN(b, 1, 0);
  ASSERT_EQ(b.TryAcquire(kSecond).decision, Decision::kProbe);  // slow probe
  ASSERT_EQ(b.TryAcquire(kSecond).decision, Decision::kProbe);
  ASSERT_TRUE(b.OnFailure(kSecond, true).has_value());  // reopens
  // Next half-open period: the slow probe still holds a slot, so only one
  // new probe may go out, keeping probes out at once <= 2.
  const auto p = b.TryAcquire(2 * kSecond);
  EXPECT_EQ(p.decision, Decision::kProbe);
  EXPECT_TRUE(p.transition.has_value());
  EXPECT_EQ(b.TryAcquire(2 * kSecond).decision, Decision::kRejected);
  EXPECT_EQ(b.GetSnapshot().probes_in_flight, 2);
  b.OnIgnored(true);  // the slow probe is cancelled
  EXPECT_EQ(b.TryAcquire(2 * kSecond).decision, Decision::kProbe);
}

TEST(CircuitBreakerLateVerdictTest, StrayProbeVerdictNeverGoesNegative) {
  // A caller bug (probe verdict without a probe admission) must not open
  // extra probe slots.
  CircuitBreaker b(Opts(1, kSecond));
  b.OnIgnored(true);
  b.OnSuccess(0, true);
  EXPECT_EQ(b.GetSnapshot().probes_in_flight, 0);
  FailN(b, 1, 0);
  EXPECT_EQ(b.TryAcquire(kSecond).decision, Decision::kProbe);
  EXPECT_EQ(b.TryAcquire(kSecond).decision, Decision::kRejected);
}

TEST(CircuitBreakerTest, IgnoredCountsAsNeither) {
  CircuitBreaker b(Opts(2, kSecond));
  FailN(b, 1, 0);
  b.TryAcquire(1);
  b.OnIgnored(false);
  const auto s = b.GetSnapshot();
  EXPECT_EQ(s.consecutive_failures, 1);
  EXPECT_EQ(s.success_count, 0u);
  EXPECT_EQ(s.failure_count, 1u);
}

// --- Sliding window ---------------------------------------------------------

CircuitBreaker::Options WindowOpts(int size, int min_calls, double rate) {
  CircuitBreaker::Options o;
  o.failure_threshold = 1000;  // keep the consecutive rule out of the way
  o.recovery_timeout_ns = kSecond;
  o.window_size = size;
  o.minimum_calls = min_calls;
  o.failure_rate_threshold = rate;
  return o;
}

TEST(CircuitBreakerWindowTest, OpensOnRateOnceMinimumCallsReached) {
  CircuitBreaker b(WindowOpts(10, 5, 0.5));
  // S F S F S F: the rate is 50% after every failure, but only the third
  // failure comes with >= 5 calls in the window.
  for (int i = 0; i < 2; ++i) {
    b.OnSuccess(0, false);
    EXPECT_FALSE(b.OnFailure(0, false).has_value());
  }
  b.OnSuccess(0, false);
  const auto t = b.OnFailure(0, false);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->to, State::kOpen);
  const auto s = b.GetSnapshot();
  EXPECT_EQ(s.window_calls, 6u);
  EXPECT_EQ(s.window_failures, 3u);
}

TEST(CircuitBreakerWindowTest, BelowRateStaysClosed) {
  CircuitBreaker b(WindowOpts(10, 5, 0.5));
  // F S S F S S F S S F: 4 of 10 = 40%.
  for (int i = 0; i < 10; ++i) {
    if (i % 3 == 0) {
      EXPECT_FALSE(b.OnFailure(0, false).has_value());
    } else {
      b.OnSuccess(0, false);
    }
  }
  EXPECT_EQ(b.state(), State::kClosed);
  EXPECT_EQ(b.GetSnapshot().window_failures, 4u);
  EXPECT_EQ(b.GetSnapshot().window_calls, 10u);
}

TEST(CircuitBreakerWindowTest, OldOutcomesSlideOut) {
  CircuitBreaker b(WindowOpts(4, 4, 0.75));
  for (int i = 0; i < 3; ++i) b.OnFailure(0, false);  // F F F (3 calls)
  EXPECT_EQ(b.state(), State::kClosed);
  for (int i = 0; i < 3; ++i) b.OnSuccess(0, false);  // window: F S S S
  EXPECT_EQ(b.GetSnapshot().window_failures, 1u);
  EXPECT_FALSE(b.OnFailure(0, false).has_value());  // S S S F = 25%
  EXPECT_EQ(b.GetSnapshot().window_failures, 1u);
  EXPECT_EQ(b.GetSnapshot().window_calls, 4u);
  b.OnFailure(0, false);                           // S S F F = 50%
  EXPECT_TRUE(b.OnFailure(0, false).has_value());  // S F F F = 75%
}

TEST(CircuitBreakerWindowTest, ExactRateThresholdTrips) {
  // 3 of 10 = 0.3 exactly; the comparison must not lose it to rounding.
  CircuitBreaker b(WindowOpts(10, 10, 0.3));
  for (int i = 0; i < 7; ++i) b.OnSuccess(0, false);
  b.OnFailure(0, false);
  b.OnFailure(0, false);
  EXPECT_TRUE(b.OnFailure(0, false).has_value());
}

TEST(CircuitBreakerWindowTest, ConsecutiveRuleStillApplies) {
  auto o = WindowOpts(100, 100, 1.0);
  o.failure_threshold = 3;
  CircuitBreaker b(o);
  b.OnFailure(0, false);
  b.OnFailure(0, false);
  EXPECT_TRUE(b.OnFailure(0, false).has_value());
}

TEST(CircuitBreakerWindowTest, WindowClearedOnClose) {
  CircuitBreaker b(WindowOpts(4, 2, 0.5));
  b.OnSuccess(0, false);
  ASSERT_TRUE(b.OnFailure(0, false).has_value());  // 1 of 2 = 50%
  ASSERT_EQ(b.TryAcquire(kSecond).decision, Decision::kProbe);
  ASSERT_TRUE(b.OnSuccess(kSecond, true).has_value());
  auto s = b.GetSnapshot();
  EXPECT_EQ(s.window_calls, 0u);
  EXPECT_EQ(s.window_failures, 0u);
  // One failure alone is below minimum_calls again.
  EXPECT_FALSE(b.OnFailure(kSecond, false).has_value());
  EXPECT_EQ(b.state(), State::kClosed);
}

TEST(CircuitBreakerWindowTest, VerdictsOutsideClosedDoNotEnterWindow) {
  CircuitBreaker b(WindowOpts(10, 2, 0.5));
  b.OnFailure(0, false);
  b.OnFailure(0, false);
  ASSERT_EQ(b.state(), State::kOpen);
  b.OnSuccess(1, false);  // late
  b.OnFailure(1, false);  // late
  const auto s = b.GetSnapshot();
  EXPECT_EQ(s.window_calls, 2u);
  EXPECT_EQ(s.window_failures, 2u);
}

// --- Reset ------------------------------------------------------------------

TEST(CircuitBreakerTest, ResetClosesAndZeroesCountersButNotSeq) {
  CircuitBreaker b(Opts(1, kSecond));
  b.OnSuccess(0, false);
  FailN(b, 1, 0);
  b.TryAcquire(1);  // rejected
  const auto t = b.Reset(7);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->from, State::kOpen);
  EXPECT_EQ(t->to, State::kClosed);
  EXPECT_EQ(t->seq, 2u);
  const auto s = b.GetSnapshot();
  EXPECT_EQ(s.state, State::kClosed);
  EXPECT_EQ(s.success_count, 0u);
  EXPECT_EQ(s.failure_count, 0u);
  EXPECT_EQ(s.rejected_count, 0u);
  EXPECT_EQ(s.open_count, 0u);
  EXPECT_EQ(s.consecutive_failures, 0);
  EXPECT_EQ(s.transition_seq, 2u);
  EXPECT_EQ(s.last_transition_ns, 7);
  // Reset of a closed breaker is not a transition.
  EXPECT_FALSE(b.Reset(8).has_value());
}

TEST(CircuitBreakerTest, ResetKeepsProbeSlotsOut) {
  CircuitBreaker b(Opts(1, kSecond));
  FailN(b, 1, 0);
  ASSERT_EQ(b.TryAcquire(kSecond).decision, Decision::kProbe);
  b.Reset(kSecond);
  EXPECT_EQ(b.GetSnapshot().probes_in_flight, 1);
  b.OnSuccess(kSecond, true);  // the probe reports: slot returned
  EXPECT_EQ(b.GetSnapshot().probes_in_flight, 0);
  EXPECT_EQ(b.state(), State::kClosed);
}

// --- Permit -----------------------------------------------------------------

TEST(CircuitBreakerPermitTest, DroppedProbePermitIsIgnored) {
  CircuitBreaker b(Opts(1, kSecond));
  FailN(b, 1, 0);
  {
    auto permit = b.Acquire(kSecond);
    EXPECT_TRUE(permit.admitted());
    EXPECT_TRUE(permit.probe());
    EXPECT_TRUE(permit.pending());
    EXPECT_TRUE(permit.admission().transition.has_value());
    EXPECT_EQ(b.GetSnapshot().probes_in_flight, 1);
  }
  const auto s = b.GetSnapshot();
  EXPECT_EQ(s.probes_in_flight, 0);
  EXPECT_EQ(s.success_count, 0u);
  EXPECT_EQ(s.failure_count, 1u);
  EXPECT_EQ(s.state, State::kHalfOpen);
}

TEST(CircuitBreakerPermitTest, VerdictReportedOnceAndMoves) {
  CircuitBreaker b(Opts(1, kSecond));
  FailN(b, 1, 0);
  auto permit = b.Acquire(kSecond);
  CircuitBreaker::Permit moved = std::move(permit);
  EXPECT_FALSE(permit.pending());  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(moved.pending());
  const auto t = moved.Succeed(kSecond + 1);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->to, State::kClosed);
  EXPECT_FALSE(moved.pending());
  EXPECT_FALSE(moved.Fail(kSecond + 2).has_value());  // no second verdict
  moved.Ignore();
  const auto s = b.GetSnapshot();
  EXPECT_EQ(s.success_count, 1u);
  EXPECT_EQ(s.failure_count, 1u);
}

TEST(CircuitBreakerPermitTest, MoveAssignIgnoresTheOverwrittenPermit) {
  auto o = Opts(1, kSecond);
  o.half_open_max_calls = 2;
  CircuitBreaker b(o);
  FailN(b, 1, 0);
  auto first = b.Acquire(kSecond);
  auto second = b.Acquire(kSecond);
  EXPECT_EQ(b.GetSnapshot().probes_in_flight, 2);
  first = std::move(second);
  EXPECT_EQ(b.GetSnapshot().probes_in_flight, 1);
  first.Fail(kSecond);
  EXPECT_EQ(b.GetSnapshot().probes_in_flight, 0);
  EXPECT_EQ(b.state(), State::kOpen);
}

TEST(CircuitBreakerPermitTest, RejectedPermitHoldsNothing) {
  CircuitBreaker b(Opts(1, kSecond));
  FailN(b, 1, 0);
  auto permit = b.Acquire(10);
  EXPECT_FALSE(permit.admitted());
  EXPECT_FALSE(permit.pending());
  EXPECT_EQ(permit.admission().retry_after_ns, kSecond - 10);
  EXPECT_FALSE(permit.Fail(11).has_value());
  EXPECT_EQ(b.GetSnapshot().failure_count, 1u);
}

// --- Registry ---------------------------------------------------------------

TEST(BreakerRegistryTest, CreatesOnFirstUseAndKeepsPointer) {
  BreakerRegistry r;
  EXPECT_EQ(r.Find("fetch"), nullptr);
  auto a = r.GetOrCreate("fetch", Opts(3, kSecond));
  ASSERT_TRUE(a.ok());
  // Later calls return the same breaker and ignore the options.
  auto b = r.GetOrCreate("fetch", Opts(99, kSecond));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ((*b)->options().failure_threshold, 3);
  EXPECT_EQ(r.Find("fetch"), *a);
  // Many more names do not move it.
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(r.GetOrCreate("step" + std::to_string(i), Opts(1, 1)).ok());
  }
  EXPECT_EQ(r.Find("fetch"), *a);
  EXPECT_EQ(r.size(), 1001u);
}

TEST(BreakerRegistryTest, InvalidOptionsNameTheBreaker) {
  BreakerRegistry r;
  auto bad = r.GetOrCreate("parse", Opts(0, kSecond));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "circuit breaker 'parse': failure_threshold must be positive");
  EXPECT_EQ(r.size(), 0u);
}

TEST(BreakerRegistryTest, ForEachAndSnapshotInNameOrder) {
  BreakerRegistry r;
  for (const char* name : {"c", "a", "b"}) {
    ASSERT_TRUE(r.GetOrCreate(name, Opts(1, kSecond)).ok());
  }
  (*r.GetOrCreate("b", {}))->OnFailure(5, false);
  std::vector<std::string> names;
  r.ForEach([&](absl::string_view name, CircuitBreaker& breaker) {
    names.emplace_back(name);
    // The registry lock is not held: using the registry here is fine.
    EXPECT_EQ(r.Find(name), &breaker);
  });
  EXPECT_THAT(names, ElementsAre("a", "b", "c"));
  const auto all = r.SnapshotAll();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[1].name, "b");
  EXPECT_EQ(all[1].snapshot.state, State::kOpen);
  EXPECT_EQ(all[0].snapshot.state, State::kClosed);
}

TEST(BreakerRegistryTest, ResetKeepsPointersAndClosesAll) {
  BreakerRegistry r;
  CircuitBreaker* b = *r.GetOrCreate("x", Opts(1, kSecond));
  b->OnFailure(0, false);
  ASSERT_EQ(b->state(), State::kOpen);
  r.Reset(10);
  EXPECT_EQ(r.Find("x"), b);
  EXPECT_EQ(b->state(), State::kClosed);
  EXPECT_EQ(b->GetSnapshot().failure_count, 0u);
}

TEST(BreakerRegistryTest, ConcurrentFirstUseCreatesOneBreaker) {
  BreakerRegistry r;
  constexpr int kThreads = 4;
  std::vector<CircuitBreaker*> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&r, &seen, t] {
      for (int i = 0; i < 200; ++i) {
        auto b = r.GetOrCreate("s" + std::to_string(i % 50), Opts(2, 10));
        ASSERT_TRUE(b.ok());
        (*b)->TryAcquire(i);
        (*b)->OnSuccess(i, false);
      }
      seen[t] = *r.GetOrCreate("s0", Opts(2, 10));
    });
  }
  for (auto& th : threads) th.join();
  for (CircuitBreaker* p : seen) EXPECT_EQ(p, seen[0]);
  EXPECT_EQ(r.size(), 50u);
  uint64_t successes = 0;
  for (const auto& s : r.SnapshotAll()) successes += s.snapshot.success_count;
  EXPECT_EQ(successes, kThreads * 200u);
}

// --- Timing (manual) --------------------------------------------------------
//
// Not a test of speed (tests never assert timings): prints ns per
// TryAcquire + OnSuccess pair. Run with
//   tests_cpp/resilience_circuit_breaker_test \
//     --gtest_also_run_disabled_tests --gtest_filter='*HotPathTiming*'

double NsPerPair(CircuitBreaker& b, int64_t iterations) {
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iterations; ++i) {
    const auto a = b.TryAcquire(i);
    b.OnSuccess(i, a.probe());
  }
  const auto end = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::nano>(end - start).count() /
         static_cast<double>(iterations);
}

TEST(CircuitBreakerTest, DISABLED_HotPathTiming) {
  constexpr int64_t kIterations = 20'000'000;
  CircuitBreaker plain(Opts(10, kSecond));
  CircuitBreaker windowed(WindowOpts(100, 10, 0.5));
  NsPerPair(plain, kIterations / 10);  // warm up
  std::printf("closed, consecutive only : %.2f ns per pair\n",
              NsPerPair(plain, kIterations));
  std::printf("closed, sliding window   : %.2f ns per pair\n",
              NsPerPair(windowed, kIterations));
  CircuitBreaker open(Opts(1, std::numeric_limits<int64_t>::max()));
  open.OnFailure(0, false);
  const auto start = std::chrono::steady_clock::now();
  int64_t rejected = 0;
  for (int64_t i = 0; i < kIterations; ++i) {
    rejected += open.TryAcquire(i).admitted() ? 0 : 1;
  }
  std::printf("open, rejection          : %.2f ns per TryAcquire (%lld)\n",
              std::chrono::duration<double, std::nano>(
                  std::chrono::steady_clock::now() - start)
                      .count() /
                  kIterations,
              static_cast<long long>(rejected));
  for (CircuitBreaker* b : {&plain, &windowed}) {
    double per_thread[2] = {0, 0};
    std::thread t0([&] { per_thread[0] = NsPerPair(*b, kIterations / 2); });
    std::thread t1([&] { per_thread[1] = NsPerPair(*b, kIterations / 2); });
    t0.join();
    t1.join();
    std::printf("%s, 2 threads, one breaker: %.2f / %.2f ns per pair\n",
                b == &plain ? "consecutive only" : "sliding window",
                per_thread[0], per_thread[1]);
  }
}

}  // namespace
}  // namespace caudal
