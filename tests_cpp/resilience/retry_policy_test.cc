#include "caudal/resilience/retry_policy.h"

#include <cmath>
#include <limits>
#include <set>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

constexpr uint64_t kLowBits = 0;                   // u = 0
constexpr uint64_t kHalfBits = uint64_t{1} << 63;  // u = 0.5
constexpr uint64_t kHighBits = ~uint64_t{0};       // u = 1 - 2^-53

RetryPolicy Policy(RetryPolicy::Kind kind, double base, double factor,
                   double cap, double jitter = 0.0) {
  RetryPolicy p;
  p.kind = kind;
  p.max_attempts = 10;
  p.base_delay_s = base;
  p.backoff_factor = factor;
  p.max_backoff_s = cap;
  p.jitter = jitter;
  return p;
}

double Delay(const RetryPolicy& p, int n, uint64_t bits = kLowBits) {
  return p.DelayBeforeAttempt(n, absl::nullopt, bits);
}

TEST(RetryPolicyTest, DefaultsAreValid) {
  const RetryPolicy p;
  EXPECT_TRUE(p.Validate().ok());
  EXPECT_EQ(p.kind, RetryPolicy::kExponential);
  EXPECT_EQ(p.max_attempts, 3);
}

TEST(RetryPolicyTest, ExponentialExactDelays) {
  const auto p = Policy(RetryPolicy::kExponential, 0.5, 2.0, 60.0);
  EXPECT_EQ(Delay(p, 1), 0.0);  // no wait before the first attempt
  EXPECT_EQ(Delay(p, 2), 0.5);
  EXPECT_EQ(Delay(p, 3), 1.0);
  EXPECT_EQ(Delay(p, 4), 2.0);
  EXPECT_EQ(Delay(p, 5), 4.0);
  EXPECT_EQ(Delay(p, 9), 60.0);  // 64 capped
  const auto q = Policy(RetryPolicy::kExponential, 0.1, 3.0, 60.0);
  EXPECT_DOUBLE_EQ(Delay(q, 4), 0.9);
}

TEST(RetryPolicyTest, ExponentialCapAndOverflow) {
  const auto p = Policy(RetryPolicy::kExponential, 1.0, 10.0, 30.0);
  EXPECT_EQ(Delay(p, 2), 1.0);
  EXPECT_EQ(Delay(p, 3), 10.0);
  EXPECT_EQ(Delay(p, 4), 30.0);       // 100 capped
  EXPECT_EQ(Delay(p, 100000), 30.0);  // 10^99998 overflows to inf, capped
  // A zero base stays zero even when the power overflows (no 0 * inf).
  const auto zero = Policy(RetryPolicy::kExponential, 0.0, 10.0, 30.0);
  EXPECT_EQ(Delay(zero, 100000), 0.0);
  // factor 1: constant.
  const auto flat = Policy(RetryPolicy::kExponential, 0.2, 1.0, 30.0);
  EXPECT_EQ(Delay(flat, 7), 0.2);
}

TEST(RetryPolicyTest, LinearExactDelays) {
  const auto p = Policy(RetryPolicy::kLinear, 0.25, 99.0, 1.0);
  EXPECT_EQ(Delay(p, 1), 0.0);
  EXPECT_EQ(Delay(p, 2), 0.25);
  EXPECT_EQ(Delay(p, 3), 0.5);
  EXPECT_EQ(Delay(p, 4), 0.75);
  EXPECT_EQ(Delay(p, 5), 1.0);
  EXPECT_EQ(Delay(p, 6), 1.0);  // 1.25 capped
}

TEST(RetryPolicyTest, FixedExactDelays) {
  const auto p = Policy(RetryPolicy::kFixed, 0.75, 99.0, 60.0);
  EXPECT_EQ(Delay(p, 1), 0.0);
  EXPECT_EQ(Delay(p, 2), 0.75);
  EXPECT_EQ(Delay(p, 10), 0.75);
  EXPECT_EQ(Delay(Policy(RetryPolicy::kFixed, 5.0, 1.0, 2.0), 2), 2.0);
}

TEST(RetryPolicyTest, JitterWithFixedBits) {
  const auto half = Policy(RetryPolicy::kFixed, 1.0, 1.0, 60.0, 0.5);
  EXPECT_EQ(Delay(half, 2, kLowBits), 0.5);
  EXPECT_EQ(Delay(half, 2, kHalfBits), 0.75);
  // u = 1 - 2^-53 gives 1 - 2^-54, which rounds to the top of the range.
  EXPECT_EQ(Delay(half, 2, kHighBits), 1.0);
  EXPECT_LT(Delay(half, 2, kHighBits - (uint64_t{1} << 40)), 1.0);

  const auto full = Policy(RetryPolicy::kFixed, 2.0, 1.0, 60.0, 1.0);
  EXPECT_EQ(Delay(full, 2, kLowBits), 0.0);
  EXPECT_EQ(Delay(full, 2, kHalfBits), 1.0);

  const auto none = Policy(RetryPolicy::kFixed, 2.0, 1.0, 60.0, 0.0);
  EXPECT_EQ(Delay(none, 2, kHalfBits), 2.0);
  EXPECT_EQ(Delay(none, 2, kHighBits), 2.0);
}

TEST(RetryPolicyTest, JitterAppliesAfterTheCap) {
  const auto p = Policy(RetryPolicy::kExponential, 1.0, 2.0, 2.0, 0.5);
  EXPECT_EQ(Delay(p, 10, kLowBits), 1.0);  // cap 2, then [1, 2)
  EXPECT_EQ(Delay(p, 10, kHalfBits), 1.5);
}

TEST(RetryPolicyTest, JitterStaysInBounds) {
  const auto p = Policy(RetryPolicy::kExponential, 0.1, 2.0, 5.0, 0.3);
  const auto plain = Policy(RetryPolicy::kExponential, 0.1, 2.0, 5.0, 0.0);
  RetryRandom random(42);
  for (int n = 2; n < 12; ++n) {
    const double d = Delay(plain, n);
    for (int i = 0; i < 2000; ++i) {
      const double v = Delay(p, n, random.Next());
      EXPECT_GE(v, d * 0.7 - 1e-12);
      EXPECT_LE(v, d);
    }
  }
}

TEST(RetryPolicyTest, RetryAfterHintOverridesAndIsCapped) {
  const auto p = Policy(RetryPolicy::kExponential, 0.1, 2.0, 60.0, 1.0);
  // A hint is a minimum, spread upwards by up to kHintSpread (20 %).
  EXPECT_EQ(p.DelayBeforeAttempt(2, 3.0, kLowBits), 3.0);
  EXPECT_DOUBLE_EQ(p.DelayBeforeAttempt(2, 3.0, kHalfBits), 3.3);
  EXPECT_LT(p.DelayBeforeAttempt(2, 3.0, kHighBits), 3.6);
  EXPECT_GT(p.DelayBeforeAttempt(2, 3.0, kHighBits), 3.59);
  EXPECT_EQ(p.DelayBeforeAttempt(5, 120.0, kLowBits), 60.0);  // capped
  EXPECT_EQ(p.DelayBeforeAttempt(2, 0.0, kLowBits), 0.0);
  // Shorter than the computed delay is honoured too.
  const auto slow = Policy(RetryPolicy::kFixed, 10.0, 1.0, 60.0);
  EXPECT_EQ(slow.DelayBeforeAttempt(3, 0.5, kLowBits), 0.5);
  // Invalid hints are ignored.
  EXPECT_EQ(slow.DelayBeforeAttempt(3, -1.0, kLowBits), 10.0);
  EXPECT_EQ(slow.DelayBeforeAttempt(3, std::nan(""), kLowBits), 10.0);
  EXPECT_EQ(slow.DelayBeforeAttempt(3, std::numeric_limits<double>::infinity(),
                                    kLowBits),
            10.0);
  // No wait before the first attempt, hint or not.
  EXPECT_EQ(slow.DelayBeforeAttempt(1, 5.0, kLowBits), 0.0);
}

TEST(RetryPolicyTest, HasAttemptLeft) {
  RetryPolicy p;
  p.max_attempts = 3;
  EXPECT_TRUE(p.HasAttemptLeft(1));
  EXPECT_TRUE(p.HasAttemptLeft(2));
  EXPECT_FALSE(p.HasAttemptLeft(3));
  p.max_attempts = 1;
  EXPECT_FALSE(p.HasAttemptLeft(1));
}

TEST(RetryPolicyTest, ValidateNamesEachBadField) {
  RetryPolicy p;
  p.max_attempts = 0;
  p.base_delay_s = -1.0;
  p.backoff_factor = 0.5;
  p.max_backoff_s = std::numeric_limits<double>::infinity();
  p.jitter = 1.5;
  const absl::Status s = p.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "max_attempts must be at least 1; base_delay_s must be a finite "
            "number >= 0; backoff_factor must be a finite number >= 1.0; "
            "max_backoff_s must be a finite number >= 0; jitter must be "
            "between 0.0 and 1.0");
}

TEST(RetryPolicyTest, ValidateSingleProblems) {
  RetryPolicy p;
  p.jitter = std::nan("");
  EXPECT_EQ(p.Validate().message(), "jitter must be between 0.0 and 1.0");
  p = RetryPolicy();
  p.base_delay_s = std::nan("");
  EXPECT_EQ(p.Validate().message(),
            "base_delay_s must be a finite number >= 0");
  // backoff_factor matters only for exponential back-off.
  p = RetryPolicy();
  p.kind = RetryPolicy::kLinear;
  p.backoff_factor = 0.0;
  EXPECT_TRUE(p.Validate().ok());
  p.kind = static_cast<RetryPolicy::Kind>(7);
  EXPECT_EQ(p.Validate().message(),
            "kind must be exponential, linear or fixed");
}

TEST(RetryPolicyTest, KindNames) {
  EXPECT_EQ(RetryKindName(RetryPolicy::kExponential), "exponential");
  EXPECT_EQ(RetryKindName(RetryPolicy::kLinear), "linear");
  EXPECT_EQ(RetryKindName(RetryPolicy::kFixed), "fixed");
  EXPECT_EQ(*ParseRetryKind("linear"), RetryPolicy::kLinear);
  const auto bad = ParseRetryKind("random");
  EXPECT_EQ(bad.status().message(),
            "unknown retry kind 'random' (expected exponential, linear or "
            "fixed)");
}

TEST(RetryRandomTest, UnitIntervalFromBits) {
  EXPECT_EQ(UnitIntervalFromBits(0), 0.0);
  EXPECT_EQ(UnitIntervalFromBits(kHalfBits), 0.5);
  EXPECT_EQ(UnitIntervalFromBits(kHighBits), 1.0 - 0x1.0p-53);
  EXPECT_EQ(UnitIntervalFromBits(0x7ff), 0.0);  // low 11 bits are dropped
}

TEST(RetryRandomTest, MatchesSplitMix64ReferenceVectors) {
  // splitmix64 seeded with 0: the first outputs of the reference algorithm.
  RetryRandom r(0);
  EXPECT_EQ(r.Next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(r.Next(), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(r.Next(), 0x06c45d188009454fULL);
}

TEST(RetryRandomTest, SeededAndRepeatable) {
  RetryRandom a(1234), b(1234), c(1235);
  std::vector<uint64_t> va, vb, vc;
  for (int i = 0; i < 100; ++i) {
    va.push_back(a.Next());
    vb.push_back(b.Next());
    vc.push_back(c.Next());
  }
  EXPECT_EQ(va, vb);
  EXPECT_NE(va, vc);
}

TEST(RetryRandomTest, ConcurrentCallersGetDistinctValues) {
  // Each call takes its own state step, and the mix is a bijection, so
  // values from concurrent callers never repeat.
  RetryRandom r(7);
  constexpr int kThreads = 4, kPerThread = 5000;
  std::vector<std::vector<uint64_t>> out(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&r, &out, t] {
      for (int i = 0; i < kPerThread; ++i) out[t].push_back(r.Next());
    });
  }
  for (auto& th : threads) th.join();
  std::set<uint64_t> all;
  for (const auto& v : out) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kPerThread));
}

}  // namespace
}  // namespace caudal

namespace caudal {
namespace {

TEST(RetryAfterTest, DelaySecondsInTheirPlainAndFractionalForms) {
  EXPECT_EQ(ParseRetryAfter("120", 0), 120.0);
  EXPECT_EQ(ParseRetryAfter(" 1 ", 0), 1.0);
  EXPECT_EQ(ParseRetryAfter("1.5", 0), 1.5);
  EXPECT_EQ(ParseRetryAfter("0", 0), 0.0);
  EXPECT_FALSE(ParseRetryAfter("", 0).has_value());
  EXPECT_FALSE(ParseRetryAfter("-1", 0).has_value());
  EXPECT_FALSE(ParseRetryAfter("soon", 0).has_value());
  EXPECT_FALSE(ParseRetryAfter("1e999", 0).has_value());
  EXPECT_FALSE(ParseRetryAfter("12abc", 0).has_value());
}

TEST(RetryAfterTest, HttpDatesInAllThreeFormsCountFromNow) {
  // Wed, 21 Oct 2015 07:28:00 GMT is 1445412480 s after the epoch.
  const double at = 1445412480.0;
  EXPECT_EQ(ParseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT", at - 30), 30.0);
  EXPECT_EQ(ParseRetryAfter("Wednesday, 21-Oct-15 07:28:00 GMT", at - 5), 5.0);
  EXPECT_EQ(ParseRetryAfter("Wed Oct 21 07:28:00 2015", at - 2), 2.0);
  // A date in the past asks for no wait at all.
  EXPECT_EQ(ParseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT", at + 60), 0.0);
  EXPECT_FALSE(
      ParseRetryAfter("Wed, 32 Oct 2015 07:28:00 GMT", at).has_value());
}

TEST(RetryAfterTest, MillisecondsHeader) {
  EXPECT_EQ(ParseRetryAfterMs("250"), 0.25);
  EXPECT_EQ(ParseRetryAfterMs("1500.5"), 1.5005);
  EXPECT_FALSE(ParseRetryAfterMs("-3").has_value());
  EXPECT_FALSE(ParseRetryAfterMs("x").has_value());
  EXPECT_FALSE(ParseRetryAfterMs("").has_value());
}

}  // namespace
}  // namespace caudal
