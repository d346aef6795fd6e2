// A failed attempt in the core (executor_failure.cc): what it records in the
// error-pattern table, and that a retry of a seen error allocates nothing.
#include <cstdint>
#include <string>

#include "caudal/base/alloc_counter.h"
#include "caudal/executor/executor.h"
#include "executor_test_util.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using testing_util::Err;
using testing_util::MakeEntry;

constexpr int kRetries = 4;
constexpr int64_t kHour = int64_t{3600} * 1'000'000'000;

// One execution: `failures` failed attempts (each with `msg`), then success.
void FailingThenSucceeding(Executor& ex, const std::shared_ptr<StepEntry>& e,
                           const std::string& msg, int64_t* now,
                           int failures = kRetries) {
  ExecutionRecord* r = ex.Begin(e, ++*now);
  for (int i = 0; i < failures; ++i) {
    const FailureDecision d =
        ex.AttemptFailed(r, ++*now, Err(false, "builtins.ValueError", msg));
    ASSERT_EQ(d.verdict, FailureVerdict::kRetry);
    ASSERT_TRUE(ex.StartAttempt(r, *now));
  }
  ex.Succeed(r, ++*now);
}

TEST(ExecutorFailureTest, EachFailedAttemptIsOneOccurrenceOfItsPattern) {
  Executor ex(OptimizationConfig{});
  auto e = MakeEntry(ex, "flaky", kRetries);
  int64_t now = 0;
  // Seen to recover first: a pattern retried error_pattern_min_observations
  // (3) times without a recovery fails fast.
  FailingThenSucceeding(ex, e, "not yet 9", &now, 1);
  for (int i = 0; i < 3; ++i)
    FailingThenSucceeding(ex, e, "not yet " + std::to_string(i), &now);
  const auto patterns = ex.ErrorPatterns(10);
  ASSERT_EQ(patterns.size(), 1u);  // the messages differ in a number only
  const PatternSnapshot& p = patterns[0];
  EXPECT_EQ(p.id, ErrorPatternId("flaky", "builtins.ValueError",
                                 NormalizeMessage("not yet 0")));
  EXPECT_EQ(p.step, "flaky");
  EXPECT_EQ(p.sample, "not yet 2");
  EXPECT_EQ(p.occurrences, 1u + 3u * kRetries);
  // Each retry but the last of an execution failed; the last recovered.
  EXPECT_EQ(p.retried, 1u + 3u * kRetries);
  EXPECT_EQ(p.recovered, 4u);
  EXPECT_EQ(p.failed_after_retry, 3u * (kRetries - 1));
  const ErrorTableStats s = ex.ErrorStats();
  EXPECT_EQ(s.total_errors, 1u + 3u * kRetries);
  EXPECT_EQ(s.total_retries, 1u + 3u * kRetries);
  EXPECT_EQ(s.recoveries, 4u);
}

TEST(ExecutorFailureTest, AFailedAttemptOfASeenErrorAllocatesNothing) {
  if (!alloc_counter::Enabled()) GTEST_SKIP() << "allocations not counted";
  OptimizationConfig cfg;
  cfg.enable_object_pool = true;
  Executor ex(cfg);
  ex.memory_monitor().SetInterval(kHour);  // no maintenance in the loop
  auto e = MakeEntry(ex, "flaky", kRetries);
  // Long enough that a copy of it, or of its normalised form, allocates.
  const std::string msg = "upstream said no: " + std::string(100, 'x');
  int64_t now = 0;
  // Warm: the pattern (seen to recover), the pooled record, the step's
  // latency histogram (its buckets are allocated at its 5th sample).
  FailingThenSucceeding(ex, e, msg, &now, 1);
  for (int i = 0; i < 10; ++i) FailingThenSucceeding(ex, e, msg, &now);
  const uint64_t before = alloc_counter::ThreadAllocations();
  for (int i = 0; i < 50; ++i) FailingThenSucceeding(ex, e, msg, &now);
  EXPECT_EQ(alloc_counter::ThreadAllocations() - before, 0u);
  EXPECT_EQ(ex.ErrorStats().total_errors, 1u + 60u * kRetries);
}

}  // namespace
}  // namespace caudal
