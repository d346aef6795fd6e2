// The executor's spans: recorded only while tracing is on, one per finished
// execution with its outcome, sampled, failures and slow ones always kept.
#include <string>
#include <vector>

#include "caudal/executor/executor.h"
#include "executor_test_util.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using testing_util::Err;
using testing_util::MakeEntry;

std::vector<SpanRecord> Drain(Executor& ex) {
  std::vector<SpanRecord> out;
  ex.spans().Drain(&out);
  return out;
}

TEST(ExecutorTracingTest, NothingIsRecordedWithoutExporters) {
  Executor ex(OptimizationConfig{});
  auto e = MakeEntry(ex, "s");
  ex.Succeed(ex.Begin(e, 0), 10);
  EXPECT_TRUE(Drain(ex).empty());
  EXPECT_EQ(ex.spans().GetStats().sampled_out, 0u);  // not even sampled
}

TEST(ExecutorTracingTest, SuccessSpanCarriesStepTimesAttemptsAndBreaker) {
  Executor ex(OptimizationConfig{});
  ex.SetTracing(true);
  auto e = MakeEntry(ex, "fetch", /*max_retries=*/1);
  ExecutionRecord* r = ex.Begin(e, 100);
  ex.AttemptFailed(r, 150, Err());
  ASSERT_TRUE(ex.StartAttempt(r, 160));
  ex.Succeed(r, 400);
  const auto spans = Drain(ex);
  ASSERT_EQ(spans.size(), 1u);
  const SpanRecord& s = spans[0];
  EXPECT_EQ(*s.step, "fetch");
  EXPECT_EQ(s.start_ns, 100);
  EXPECT_EQ(s.end_ns, 400);
  EXPECT_EQ(s.attempts, 2u);
  EXPECT_EQ(s.outcome, SpanOutcome::kOk);
  EXPECT_EQ(s.breaker_state,
            static_cast<uint8_t>(CircuitBreaker::State::kClosed));
  EXPECT_EQ(s.error(), "builtins.ValueError");  // the recovered error
  EXPECT_TRUE(s.sampled);
  EXPECT_FALSE(s.parent.valid);
}

TEST(ExecutorTracingTest, FailuresAndSlowExecutionsAreKeptAtRateZero) {
  OptimizationConfig cfg;
  cfg.telemetry_sampling_rate = 0.0;
  cfg.slow_execution_threshold_ms = 1.0;
  Executor ex(cfg);
  ex.SetTracing(true);
  auto e = MakeEntry(ex, "s");
  for (int i = 0; i < 10; ++i) ex.Succeed(ex.Begin(e, 0), 1000);  // fast, ok
  ExecutionRecord* r = ex.Begin(e, 0);
  ex.AttemptFailed(r, 5, Err(/*timed_out=*/true));
  ex.Fail(r, 6, false);
  ex.Succeed(ex.Begin(e, 0), 2'000'000);  // slow
  r = ex.Begin(e, 0);
  ex.AttemptFailed(r, 5, Err());
  ex.Fail(r, 7, /*fell_back=*/true);
  const auto spans = Drain(ex);
  ASSERT_EQ(spans.size(), 3u);
  EXPECT_EQ(spans[0].outcome, SpanOutcome::kTimeout);
  EXPECT_FALSE(spans[0].sampled);
  EXPECT_EQ(spans[1].outcome, SpanOutcome::kOk);
  EXPECT_TRUE(spans[1].slow);
  EXPECT_EQ(spans[2].outcome, SpanOutcome::kFallback);
  EXPECT_EQ(ex.spans().GetStats().sampled_out, 10u);
}

TEST(ExecutorTracingTest, RejectedCancelledAndCacheHitOutcomes) {
  OptimizationConfig cfg;
  cfg.circuit_breaker_failure_threshold = 1;
  Executor ex(cfg);
  ex.SetTracing(true);
  auto e = MakeEntry(ex, "api");
  ExecutionRecord* r = ex.Begin(e, 0);
  ex.AttemptFailed(r, 1, Err());
  ex.Fail(r, 2, false);
  r = ex.Begin(e, 3);  // the breaker is open now
  ASSERT_EQ(r->attempt, 0);
  ex.Reject(r, 3);
  auto other = MakeEntry(ex, "other");
  ex.Cancel(ex.Begin(other, 10), 20);
  ex.RecordCacheHit(*other, 50);
  const auto spans = Drain(ex);
  ASSERT_EQ(spans.size(), 4u);
  EXPECT_EQ(spans[0].outcome, SpanOutcome::kError);
  EXPECT_EQ(spans[1].outcome, SpanOutcome::kRejected);
  EXPECT_EQ(spans[1].attempts, 0u);
  EXPECT_EQ(spans[1].breaker_state,
            static_cast<uint8_t>(CircuitBreaker::State::kOpen));
  EXPECT_EQ(spans[2].outcome, SpanOutcome::kCancelled);
  EXPECT_EQ(spans[3].outcome, SpanOutcome::kCacheHit);
  EXPECT_EQ(spans[3].end_ns - spans[3].start_ns, 50);
}

TEST(ExecutorTracingTest, TelemetrySwitchAndSamplingFollowTheConfig) {
  Executor ex(OptimizationConfig{});
  ex.SetTracing(true);
  auto e = MakeEntry(ex, "s");
  OptimizationConfig off;
  off.enable_optimized_telemetry = false;
  ASSERT_TRUE(ex.ApplyConfig(off).ok());
  ex.Succeed(ex.Begin(e, 0), 1);
  EXPECT_TRUE(Drain(ex).empty());
  OptimizationConfig half;
  half.telemetry_sampling_rate = 0.5;
  ASSERT_TRUE(ex.ApplyConfig(half).ok());
  for (int i = 0; i < 1000; ++i) ex.Succeed(ex.Begin(e, 0), 1);
  const size_t kept = Drain(ex).size();
  EXPECT_GT(kept, 350u);
  EXPECT_LT(kept, 650u);
  ex.SetTracing(false);
  ex.Succeed(ex.Begin(e, 0), 1);
  EXPECT_TRUE(Drain(ex).empty());
}

struct FakeParent {
  int calls = 0;
};
TraceParent ReadFake(void* ctx) {
  auto* f = static_cast<FakeParent*>(ctx);
  ++f->calls;
  TraceParent p;
  p.trace_hi = 1;
  p.trace_lo = 2;
  p.span_id = 3;
  p.flags = 1;
  p.valid = true;
  return p;
}

TEST(ExecutorTracingTest, ParentSourceIsAskedOnlyForKeptSpans) {
  OptimizationConfig cfg;
  cfg.telemetry_sampling_rate = 0.0;
  Executor ex(cfg);
  FakeParent fake;
  ex.SetTraceParentSource(&ReadFake, &fake);
  ex.SetTracing(true);
  auto e = MakeEntry(ex, "s");
  for (int i = 0; i < 5; ++i) ex.Succeed(ex.Begin(e, 0), 1);
  EXPECT_EQ(fake.calls, 0);
  ExecutionRecord* r = ex.Begin(e, 0);
  ex.AttemptFailed(r, 1, Err());
  ex.Fail(r, 2, false);
  EXPECT_EQ(fake.calls, 1);
  const auto spans = Drain(ex);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_TRUE(spans[0].parent.valid);
  EXPECT_EQ(spans[0].parent.trace_lo, 2u);
  EXPECT_EQ(spans[0].parent.span_id, 3u);
}

}  // namespace
}  // namespace caudal
