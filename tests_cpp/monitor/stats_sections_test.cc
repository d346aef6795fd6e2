// The summary figures of the circuit_breaker and error_handling sections.
#include "caudal/monitor/stats_sections.h"

#include <vector>

#include "gtest/gtest.h"

namespace caudal {
namespace {

using State = CircuitBreaker::State;

BreakerRegistry::NamedSnapshot Breaker(const char* name, State state,
                                       uint64_t failures, uint64_t opens) {
  BreakerRegistry::NamedSnapshot n;
  n.name = name;
  n.snapshot = {};
  n.snapshot.state = state;
  n.snapshot.failure_count = failures;
  n.snapshot.success_count = 10;
  n.snapshot.rejected_count = 1;
  n.snapshot.open_count = opens;
  return n;
}

TEST(BreakerSectionTest, NoBreakerIsClosed) {
  const BreakerSection s = BreakerSectionOf({});
  EXPECT_EQ(s.worst, State::kClosed);
  EXPECT_EQ(s.failure_count, 0u);
  EXPECT_TRUE(s.breakers.empty());
}

TEST(BreakerSectionTest, WorstStateAndSums) {
  BreakerSection s = BreakerSectionOf({Breaker("a", State::kClosed, 1, 0),
                                       Breaker("b", State::kHalfOpen, 2, 1)});
  EXPECT_EQ(s.worst, State::kHalfOpen);
  s = BreakerSectionOf({Breaker("a", State::kClosed, 1, 0),
                        Breaker("b", State::kOpen, 2, 3),
                        Breaker("c", State::kHalfOpen, 4, 1)});
  EXPECT_EQ(s.worst, State::kOpen);
  EXPECT_EQ(s.failure_count, 7u);
  EXPECT_EQ(s.success_count, 30u);
  EXPECT_EQ(s.rejected_count, 3u);
  EXPECT_EQ(s.open_count, 4u);
  ASSERT_EQ(s.breakers.size(), 3u);
  EXPECT_EQ(s.breakers[1].name, "b");  // in the order given
}

TEST(ErrorSectionTest, Rates) {
  StepStats::Snapshot total{};
  ErrorTableStats table{};
  table.recovery_success_rate = 0.25;
  ErrorSection s = ErrorSectionOf(total, table, 0, {});
  EXPECT_EQ(s.error_rate, 0.0);  // no attempt
  EXPECT_EQ(s.recovery_success_rate, 0.0);
  total.attempts = 40;
  total.errors = 10;
  total.retries = 8;
  total.recovered = 3;
  total.failures = 1;
  s = ErrorSectionOf(total, table, 2, {});
  EXPECT_EQ(s.error_rate, 0.25);
  EXPECT_EQ(s.recovery_success_rate, 0.75);  // 3 of the 4 that failed once
  EXPECT_EQ(s.errors, 10u);
  EXPECT_EQ(s.retries, 8u);
  EXPECT_EQ(s.recovered, 3u);
  EXPECT_EQ(s.fail_fast, 2u);
  EXPECT_EQ(s.table.recovery_success_rate, 0.25);
}

}  // namespace
}  // namespace caudal
