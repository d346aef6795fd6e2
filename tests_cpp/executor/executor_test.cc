#include "caudal/executor/executor.h"

#include <functional>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "executor_test_util.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using testing_util::Err;
using testing_util::MakeEntry;

TEST(StepTableTest, FindInsertAndBound) {
  StepTable table(/*capacity=*/3);
  EXPECT_EQ(table.Find(1), nullptr);
  auto a = std::make_shared<StepEntry>();
  EXPECT_EQ(table.Insert(1, a), nullptr);
  EXPECT_EQ(table.Find(1), a);
  table.Insert(2, std::make_shared<StepEntry>());
  table.Insert(3, std::make_shared<StepEntry>());
  // Replacing an existing key returns the old entry and does not flush.
  auto dropped = table.Insert(3, std::make_shared<StepEntry>());
  EXPECT_NE(dropped, nullptr);
  EXPECT_EQ(table.size(), 3u);
  // A new key into a full table evicts the least recently used entry, and
  // only it (1: found before 2 and 3 were inserted).
  dropped = table.Insert(4, std::make_shared<StepEntry>());
  EXPECT_EQ(dropped, a);
  EXPECT_EQ(table.size(), 3u);
  EXPECT_EQ(table.Find(1), nullptr);
  EXPECT_EQ(table.analyses(), 5u);
  EXPECT_EQ(table.evictions(), 1u);
  EXPECT_EQ(table.Clear().size(), 3u);
}

TEST(StepTableTest, EntriesOutliveTheTable) {
  StepTable table;
  table.Insert(7, std::make_shared<StepEntry>());
  std::shared_ptr<StepEntry> held = table.Find(7);
  table.Clear();
  EXPECT_EQ(held.use_count(), 1);  // the in-flight holder keeps it alive
}

TEST(StatsRegistryTest, StablePointersAndTotals) {
  StatsRegistry reg;
  std::shared_ptr<StepStats> a = reg.ForStep("a");
  EXPECT_EQ(reg.ForStep("a"), a);
  std::shared_ptr<StepStats> b = reg.ForStep("b");
  a->executions = 3;
  b->executions = 4;
  a->latency.Record(10);
  b->latency.Record(20);
  const auto all = reg.TakeAll();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "a");
  const auto total = reg.TakeTotal();
  EXPECT_EQ(total.executions, 7u);
  EXPECT_EQ(total.latency.count, 2u);
  reg.ResetAll();
  EXPECT_EQ(reg.TakeTotal().executions, 0u);
}

TEST(ExecutorTest, SuccessRecordsLatencyAndCounts) {
  Executor ex(OptimizationConfig{});
  auto entry = MakeEntry(ex, "s");
  ExecutionRecord* r = ex.Begin(entry, 1000);
  EXPECT_EQ(ex.in_flight(), 1);
  const ExecutionOutcome o = ex.Succeed(r, 1500);
  EXPECT_EQ(o.latency_ns, 500);
  EXPECT_EQ(o.attempts, 1);
  EXPECT_FALSE(o.slow);
  const auto s = entry->stats->Take();
  EXPECT_EQ(s.executions, 1u);
  EXPECT_EQ(s.successes, 1u);
  EXPECT_EQ(s.attempts, 1u);
  EXPECT_EQ(s.latency.max_ns, 500u);
  EXPECT_EQ(ex.in_flight(), 0);
}

TEST(ExecutorTest, RetriesUpToMaxThenFail) {
  Executor ex(OptimizationConfig{});
  auto entry = MakeEntry(ex, "r", /*max_retries=*/2);
  ExecutionRecord* r = ex.Begin(entry, 0);
  EXPECT_EQ(ex.AttemptFailed(r, 10, Err()).verdict, FailureVerdict::kRetry);
  ASSERT_TRUE(ex.StartAttempt(r, 11));  // attempt 2
  EXPECT_EQ(ex.AttemptFailed(r, 20, Err(/*timed_out=*/true)).verdict,
            FailureVerdict::kRetry);
  ASSERT_TRUE(ex.StartAttempt(r, 21));  // attempt 3
  EXPECT_EQ(ex.AttemptFailed(r, 30, Err()).verdict,
            FailureVerdict::kNoAttemptsLeft);
  const ExecutionOutcome o = ex.Fail(r, 40, false);
  EXPECT_EQ(o.attempts, 3);
  const auto s = entry->stats->Take();
  EXPECT_EQ(s.attempts, 3u);
  EXPECT_EQ(s.retries, 2u);
  EXPECT_EQ(s.errors, 3u);
  EXPECT_EQ(s.timeouts, 1u);
  EXPECT_EQ(s.failures, 1u);
  EXPECT_EQ(s.recovered, 0u);
}

TEST(ExecutorTest, RecoveryFallbackCancelAndSlow) {
  OptimizationConfig cfg;
  cfg.slow_execution_threshold_ms = 1.0;  // 1e6 ns
  Executor ex(cfg);
  auto entry = MakeEntry(ex, "x", 1);
  ExecutionRecord* r = ex.Begin(entry, 0);
  ex.AttemptFailed(r, 5, Err());
  ex.StartAttempt(r, 6);
  EXPECT_TRUE(ex.Succeed(r, 2'000'000).slow);
  r = ex.Begin(entry, 0);
  ex.AttemptFailed(r, 1, Err());
  ex.StartAttempt(r, 2);
  ex.AttemptFailed(r, 2, Err());
  ex.Fail(r, 3, /*fell_back=*/true);
  r = ex.Begin(entry, 0);
  ex.Cancel(r, 1);
  const auto s = entry->stats->Take();
  EXPECT_EQ(s.recovered, 1u);
  EXPECT_EQ(s.fallbacks, 1u);
  EXPECT_EQ(s.cancelled, 1u);
  EXPECT_EQ(s.slow, 1u);
  EXPECT_EQ(s.executions, 2u);  // a cancelled execution is not finished
  EXPECT_EQ(s.in_flight, 0);
}

TEST(ExecutorTest, ApplyConfigIsAtomicAndValidated) {
  Executor ex(OptimizationConfig{});
  auto entry = MakeEntry(ex, "c");
  ExecutionRecord* in_flight = ex.Begin(entry, 0);
  OptimizationConfig bad;
  bad.cache_max_size = 0;
  const uint64_t gen = ex.config_generation();
  EXPECT_FALSE(ex.ApplyConfig(bad).ok());
  EXPECT_EQ(ex.config_generation(), gen);
  EXPECT_EQ(ex.config()->cache_max_size, 500);
  OptimizationConfig next;
  next.slow_execution_threshold_ms = 0.0001;  // 100 ns
  ASSERT_TRUE(ex.ApplyConfig(next).ok());
  EXPECT_EQ(ex.config_generation(), gen + 1);
  // The execution that began under the old config (1 s threshold) finishes
  // under it.
  EXPECT_FALSE(ex.Succeed(in_flight, 1000).slow);
  EXPECT_TRUE(ex.Succeed(ex.Begin(entry, 0), 1000).slow);
}

TEST(ExecutorTest, ConcurrentExecutionsAndConfigSwaps) {
  Executor ex(OptimizationConfig{});
  auto entry = MakeEntry(ex, "p", 1);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5000; ++i) {
        ExecutionRecord* r = ex.Begin(entry, i);
        if (i % 3 == 0 && ex.AttemptFailed(r, i + 1, Err()).verdict ==
                              FailureVerdict::kRetry) {
          ex.StartAttempt(r, i + 1);
        }
        if (i % 5 == 0) {
          ex.Cancel(r, i + 2);
        } else {
          ex.Succeed(r, i + 2);
        }
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < 200; ++i) {
      OptimizationConfig c;
      c.cache_max_size = 1 + i;
      ASSERT_TRUE(ex.ApplyConfig(c).ok());
    }
  });
  for (auto& th : threads) th.join();
  const auto s = entry->stats->Take();
  EXPECT_EQ(s.cancelled, 4u * 1000);
  EXPECT_EQ(s.executions, 4u * 4000);
  EXPECT_EQ(s.in_flight, 0);
  EXPECT_EQ(ex.in_flight(), 0);
  EXPECT_EQ(ex.config()->cache_max_size, 200);
}

OptimizationConfig BreakerConfig(int threshold, double recovery_s) {
  OptimizationConfig c;
  c.circuit_breaker_failure_threshold = threshold;
  c.circuit_breaker_recovery_timeout_seconds = recovery_s;
  return c;
}

TEST(ExecutorResilienceTest, BreakerOpensRejectsThenRecoversThroughAProbe) {
  Executor ex(BreakerConfig(2, 1.0));
  auto entry = MakeEntry(ex, "api");
  for (int i = 0; i < 2; ++i) {
    ExecutionRecord* r = ex.Begin(entry, i);
    ASSERT_EQ(r->attempt, 1);
    ex.AttemptFailed(r, i, Err());
    ex.Fail(r, i, false);
  }
  // Open: refused without running, with the time left until half-open.
  ExecutionRecord* r = ex.Begin(entry, 500'000'000);
  EXPECT_EQ(r->attempt, 0);
  EXPECT_EQ(r->retry_after_ns, 1'000'000'000 + 1 - 500'000'000);
  ex.Reject(r, 500'000'000);
  EXPECT_EQ(entry->stats->Take().rejected, 1u);
  // After the recovery timeout one probe is admitted; a second is refused.
  ExecutionRecord* probe = ex.Begin(entry, 1'100'000'000);
  ASSERT_EQ(probe->attempt, 1);
  EXPECT_TRUE(probe->probe);
  ExecutionRecord* second = ex.Begin(entry, 1'100'000'001);
  EXPECT_EQ(second->attempt, 0);
  ex.Reject(second, 1'100'000'001);
  ex.Succeed(probe, 1'200'000'000);
  const auto snaps = ex.BreakerSnapshots();
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0].name, "api");
  EXPECT_EQ(snaps[0].snapshot.state, CircuitBreaker::State::kClosed);
  EXPECT_EQ(snaps[0].snapshot.open_count, 1u);
  // closed->open, open->half_open, half_open->closed, in order.
  const auto log = ex.RecentTransitions();
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[0].transition.to, CircuitBreaker::State::kOpen);
  EXPECT_EQ(log[2].transition.to, CircuitBreaker::State::kClosed);
}

TEST(ExecutorResilienceTest, RetryRefusedByTheBreakerEndsWithTheTrippingError) {
  Executor ex(BreakerConfig(1, 60.0));
  auto entry = MakeEntry(ex, "trip", /*max_retries=*/3);
  ExecutionRecord* r = ex.Begin(entry, 0);
  EXPECT_EQ(ex.AttemptFailed(r, 1, Err()).verdict, FailureVerdict::kRetry);
  EXPECT_FALSE(ex.StartAttempt(r, 2));  // the breaker opened on attempt 1
  EXPECT_EQ(ex.Fail(r, 3, false).attempts, 1);
}

TEST(ExecutorResilienceTest, CancelledProbeGivesItsSlotBack) {
  Executor ex(BreakerConfig(1, 1.0));
  auto entry = MakeEntry(ex, "c");
  ExecutionRecord* r = ex.Begin(entry, 0);
  ex.AttemptFailed(r, 0, Err());
  ex.Fail(r, 0, false);
  ExecutionRecord* probe = ex.Begin(entry, 2'000'000'000);
  ASSERT_TRUE(probe->probe);
  ex.Cancel(probe, 2'000'000'001);
  ExecutionRecord* again = ex.Begin(entry, 2'000'000'002);
  EXPECT_TRUE(again->probe);  // the slot came back
  ex.Succeed(again, 2'000'000'003);
}

TEST(ExecutorResilienceTest, ExcludedErrorsAndDisabledBreakerDoNotTrip) {
  OptimizationConfig c = BreakerConfig(1, 60.0);
  Executor ex(c);
  auto entry = MakeEntry(ex, "x");
  AttemptError excluded = Err();
  excluded.counts_for_breaker = false;
  for (int i = 0; i < 3; ++i) {
    ExecutionRecord* r = ex.Begin(entry, i);
    ASSERT_EQ(r->attempt, 1);
    ex.AttemptFailed(r, i, excluded);
    ex.Fail(r, i, false);
  }
  c.enable_circuit_breaker = false;
  ASSERT_TRUE(ex.ApplyConfig(c).ok());
  for (int i = 0; i < 3; ++i) {
    ExecutionRecord* r = ex.Begin(entry, i);
    ASSERT_EQ(r->attempt, 1);
    ex.AttemptFailed(r, i, Err());
    ex.Fail(r, i, false);
  }
}

// An exponential back-off policy: 0.5 s, doubling, capped at max_backoff_s.
void SetExponentialRetries(StepEntry* e, int max_attempts,
                           double max_backoff_s) {
  e->spec.retry.kind = RetryPolicy::kExponential;
  e->spec.retry.max_attempts = max_attempts;
  e->spec.retry.base_delay_s = 0.5;
  e->spec.retry.backoff_factor = 2.0;
  e->spec.retry.max_backoff_s = max_backoff_s;
}

// The process running the attempt died (caudal.errors.RemoteWorkerDiedError).
AttemptError LostWorker() {
  AttemptError e = Err(false, "caudal.errors.RemoteWorkerDiedError", "x");
  e.worker_lost = true;
  return e;
}

TEST(ExecutorResilienceTest, BackoffDelaysComeFromTheStepsPolicy) {
  OptimizationConfig c;
  c.enable_circuit_breaker = false;
  Executor ex(c);
  auto entry = MakeEntry(ex, "b");
  SetExponentialRetries(entry.get(), 4, 1.5);
  ExecutionRecord* r = ex.Begin(entry, 0);
  EXPECT_DOUBLE_EQ(ex.AttemptFailed(r, 0, Err()).delay_s, 0.5);
  ex.StartAttempt(r, 1);
  EXPECT_DOUBLE_EQ(ex.AttemptFailed(r, 1, Err()).delay_s, 1.0);
  ex.StartAttempt(r, 2);
  AttemptError hinted = Err();
  hinted.retry_after_s = 30.0;  // a Retry-After hint, capped by max_backoff
  EXPECT_DOUBLE_EQ(ex.AttemptFailed(r, 2, hinted).delay_s, 1.5);
  ex.StartAttempt(r, 3);
  AttemptError not_retryable = Err();
  not_retryable.retryable = false;
  EXPECT_EQ(ex.AttemptFailed(r, 3, not_retryable).verdict,
            FailureVerdict::kNotRetryable);
  ex.Fail(r, 4, false);
}

TEST(ExecutorResilienceTest, PermanentErrorsFailAtOnceAndNeverTripTheBreaker) {
  // An input or output that cannot be used (caudal.errors.DataError, a
  // PermanentError): the data is at fault, not the backend. No retry though
  // attempts are left, and the breaker (threshold 1) does not count it.
  Executor ex(BreakerConfig(1, 60.0));
  auto entry = MakeEntry(ex, "d", /*max_retries=*/5);
  AttemptError data = Err(false, "caudal.errors.SerializationError", "lock");
  data.permanent = true;
  for (int i = 0; i < 3; ++i) {
    ExecutionRecord* r = ex.Begin(entry, i);
    ASSERT_EQ(r->attempt, 1);  // admitted: the breaker stayed closed
    EXPECT_EQ(ex.AttemptFailed(r, i, data).verdict,
              FailureVerdict::kNotRetryable);
    EXPECT_EQ(ex.Fail(r, i, false).attempts, 1);
  }
  // The same step's ordinary failure is retried, and trips the breaker.
  ExecutionRecord* r = ex.Begin(entry, 10);
  EXPECT_EQ(ex.AttemptFailed(r, 10, Err()).verdict, FailureVerdict::kRetry);
  EXPECT_FALSE(ex.StartAttempt(r, 11));
  ex.Fail(r, 12, false);
}

TEST(ExecutorResilienceTest, LostWorkersAreRetriedByDefaultBeyondThePolicy) {
  // The process running the attempt died (caudal.RemoteWorkerDiedError):
  // retried at once up to kWorkerLostRetries times even with no retry
  // policy, as Ray retries system failures, without spending the policy's
  // attempts, and never a failure for the breaker (threshold 1 here).
  Executor ex(BreakerConfig(1, 60.0));
  const AttemptError lost = LostWorker();
  auto single = MakeEntry(ex, "one_attempt");
  ExecutionRecord* r = ex.Begin(single, 0);
  for (int i = 0; i < kWorkerLostRetries; ++i) {
    const FailureDecision d = ex.AttemptFailed(r, i, lost);
    ASSERT_EQ(d.verdict, FailureVerdict::kRetry) << i;
    EXPECT_EQ(d.delay_s, 0.0);
    ASSERT_TRUE(ex.StartAttempt(r, i));  // the breaker stayed closed
  }
  EXPECT_EQ(ex.AttemptFailed(r, 9, lost).verdict,
            FailureVerdict::kNoAttemptsLeft);
  EXPECT_EQ(ex.Fail(r, 10, false).attempts, kWorkerLostRetries + 1);
  // A step with two retries keeps both for its own failures after a loss.
  auto two = MakeEntry(ex, "two_retries", /*max_retries=*/2);
  r = ex.Begin(two, 20);
  EXPECT_EQ(ex.AttemptFailed(r, 21, lost).verdict, FailureVerdict::kRetry);
  ASSERT_TRUE(ex.StartAttempt(r, 22));
  AttemptError data = Err(false, "builtins.KeyError", "k");
  data.counts_for_breaker = false;  // keep this step's breaker closed
  EXPECT_EQ(ex.AttemptFailed(r, 23, data).verdict, FailureVerdict::kRetry);
  ASSERT_TRUE(ex.StartAttempt(r, 24));
  EXPECT_EQ(ex.AttemptFailed(r, 25, data).verdict, FailureVerdict::kRetry);
  ASSERT_TRUE(ex.StartAttempt(r, 26));
  EXPECT_EQ(ex.AttemptFailed(r, 27, data).verdict,
            FailureVerdict::kNoAttemptsLeft);
  EXPECT_EQ(ex.Fail(r, 28, false).attempts, 4);
}

TEST(ExecutorResilienceTest, BackOffAfterLostWorkersStartsAtTheFirstDelay) {
  // Attempts made for lost workers are not the policy's: its first retry
  // after them waits its first delay, not the fourth.
  OptimizationConfig c;
  c.enable_circuit_breaker = false;
  Executor ex(c);
  auto entry = MakeEntry(ex, "backoff");
  SetExponentialRetries(entry.get(), 3, 60.0);
  const AttemptError lost = LostWorker();
  ExecutionRecord* r = ex.Begin(entry, 0);
  for (int i = 0; i < kWorkerLostRetries; ++i) {
    ASSERT_EQ(ex.AttemptFailed(r, i, lost).delay_s, 0.0);
    ex.StartAttempt(r, i);
  }
  EXPECT_DOUBLE_EQ(ex.AttemptFailed(r, 10, Err()).delay_s, 0.5);
  ex.StartAttempt(r, 11);
  EXPECT_DOUBLE_EQ(ex.AttemptFailed(r, 12, Err()).delay_s, 1.0);
  ex.StartAttempt(r, 13);
  EXPECT_EQ(ex.AttemptFailed(r, 14, Err()).verdict,
            FailureVerdict::kNoAttemptsLeft);
  ex.Fail(r, 15, false);
}

TEST(ExecutorResilienceTest, ErrorsThatNeverRecoverFailFast) {
  OptimizationConfig c;
  c.enable_circuit_breaker = false;
  c.error_pattern_min_observations = 2;
  Executor ex(c);
  auto entry = MakeEntry(ex, "p", /*max_retries=*/5);
  // Two executions whose every retry of "KeyError: 'x'" fails again.
  int retries_granted = 0;
  for (int n = 0; n < 3; ++n) {
    ExecutionRecord* r = ex.Begin(entry, 0);
    while (ex.AttemptFailed(r, 0, Err(false, "builtins.KeyError", "'user 12'"))
               .verdict == FailureVerdict::kRetry) {
      ++retries_granted;
      ex.StartAttempt(r, 0);
    }
    ex.Fail(r, 0, false);
  }
  EXPECT_EQ(retries_granted, 2);  // then the pattern fails fast
  EXPECT_GE(ex.fail_fast_count(), 1u);
  // A different error of the same step keeps its retries; it recovers.
  ExecutionRecord* r = ex.Begin(entry, 0);
  EXPECT_EQ(ex.AttemptFailed(r, 0, Err(false, "builtins.TimeoutError", "slow"))
                .verdict,
            FailureVerdict::kRetry);
  ex.StartAttempt(r, 0);
  ex.Succeed(r, 1);
  const auto stats = ex.ErrorStats();
  EXPECT_EQ(stats.cached_patterns, 2u);
  EXPECT_EQ(stats.recoveries, 1u);
  EXPECT_GT(stats.failures_after_retry, 0u);
}

}  // namespace
}  // namespace caudal

namespace caudal {
namespace {

CachedValue Value(int v, int* live) {
  ++*live;
  return CachedValue(new int(v), [live](const void* p) {
    --*live;
    delete static_cast<const int*>(p);
  });
}

TEST(ExecutorCacheTest, StepSwitchOverridesConfig) {
  OptimizationConfig c;
  StepEntry e;
  EXPECT_FALSE(Executor::CacheEnabled(e, c));
  e.spec.cache = StepSwitch::kOn;
  EXPECT_TRUE(Executor::CacheEnabled(e, c));
  c.enable_cache_optimization = true;
  e.spec.cache = StepSwitch::kOff;
  EXPECT_FALSE(Executor::CacheEnabled(e, c));
}

TEST(ExecutorCacheTest, StoreLookupTtlAndInvalidation) {
  OptimizationConfig c;
  c.enable_cache_optimization = true;
  c.cache_ttl_seconds = 10;
  int live = 0;
  {
    Executor ex(c);
    auto entry = MakeEntry(ex, "s");
    entry->spec.tags = {"t1"};
    entry->spec.cache_group = 77;
    const Key128 k{1, 2};
    std::vector<CachedValue> dropped;
    EXPECT_FALSE(ex.CacheLookup(*entry, k, 0, &dropped).has_value());
    ExecutionRecord* r = ex.Begin(entry, 0);
    r->cache_lead = true;
    r->cache_key = k;
    ex.CacheStore(*r, Value(42, &live), 8, 0, &dropped);
    ex.Succeed(r, 1);
    auto hit = ex.CacheLookup(*entry, k, 5'000'000'000, &dropped);
    ASSERT_TRUE(hit.has_value());
    EXPECT_EQ(*static_cast<const int*>(hit->get()), 42);
    hit.reset();
    // Expired after the TTL: removed into `dropped`, not destroyed inside.
    EXPECT_FALSE(
        ex.CacheLookup(*entry, k, 10'000'000'001, &dropped).has_value());
    EXPECT_EQ(live, 1);
    dropped.clear();
    EXPECT_EQ(live, 0);
    // Tags and groups.
    r = ex.Begin(entry, 0);
    r->cache_lead = true;
    r->cache_key = k;
    ex.CacheStore(*r, Value(1, &live), 8, 0, &dropped);
    ex.Succeed(r, 1);
    EXPECT_EQ(ex.InvalidateTag("t1", &dropped), 1u);
    r = ex.Begin(entry, 0);
    r->cache_lead = true;
    r->cache_key = k;
    ex.CacheStore(*r, Value(2, &live), 8, 0, &dropped);
    ex.Succeed(r, 1);
    EXPECT_EQ(ex.InvalidateGroup(78, &dropped), 0u);
    EXPECT_EQ(ex.InvalidateGroup(77, &dropped), 1u);
    dropped.clear();
    const auto s = entry->stats->Take();
    EXPECT_EQ(s.cache_hits, 1u);
    EXPECT_EQ(s.cache_misses, 2u);
    ex.RecordUncacheable(*entry, "generator");
    ex.RecordUncacheable(*entry, "generator");
    EXPECT_EQ(ex.UncacheableReasons()[0].second, 2u);
    // Resizing through the config evicts at once.
    r = ex.Begin(entry, 0);
    for (uint64_t i = 0; i < 5; ++i) {
      r->cache_lead = true;
      r->cache_key = Key128{i, i};
      ex.CacheStore(*r, Value(static_cast<int>(i), &live), 8, 0, &dropped);
    }
    ex.Succeed(r, 1);
    c.cache_max_size = 2;
    ASSERT_TRUE(ex.ApplyConfig(c).ok());
    EXPECT_EQ(ex.CacheStats().entries, 2u);
  }
  EXPECT_EQ(live, 0);  // the executor's cache released everything
}

// An execution that began before an invalidation covering its step does not
// store its result, whether the invalidation was by tag, group or clear; an
// execution that began after it does.
TEST(ExecutorCacheTest, InvalidationDuringAnExecutionKeepsItsResultOut) {
  OptimizationConfig c;
  c.enable_cache_optimization = true;
  int live = 0;
  {
    Executor ex(c);
    auto entry = MakeEntry(ex, "s");
    entry->spec.tags = {"t1"};
    entry->spec.cache_group = 77;
    std::vector<CachedValue> dropped;
    const std::function<void()> invalidations[] = {
        [&] { ex.InvalidateTag("t1", &dropped); },
        [&] { ex.InvalidateGroup(77, &dropped); },
        [&] { ex.ClearCache(&dropped); }};
    uint64_t i = 0;
    for (const auto& invalidate : invalidations) {
      const Key128 k{++i, 9};
      ExecutionRecord* r = ex.Begin(entry, 0);
      r->cache_lead = true;
      r->cache_key = k;
      const uint64_t begun = ex.CacheEpoch();
      invalidate();  // while the step runs
      EXPECT_FALSE(ex.CacheStorable(*entry, begun));
      ex.CacheStore(*r, Value(1, &live), 8, 0, &dropped);
      ex.Succeed(r, 1);
      EXPECT_FALSE(ex.CacheLookup(*entry, k, 2, &dropped).has_value()) << i;
      // The next execution began after it: stored.
      r = ex.Begin(entry, 3);
      r->cache_lead = true;
      r->cache_key = k;
      EXPECT_TRUE(ex.CacheStorable(*entry, ex.CacheEpoch()));
      ex.CacheStore(*r, Value(2, &live), 8, 3, &dropped);
      ex.Succeed(r, 4);
      EXPECT_TRUE(ex.CacheLookup(*entry, k, 5, &dropped).has_value()) << i;
    }
    EXPECT_EQ(ex.CacheStats().stale, 3u);
    // A promoted value fetched before an invalidation stays out too.
    const uint64_t fetched = ex.CacheEpoch();
    ex.InvalidateTag("t1", &dropped);
    ex.CachePut(*entry, c, Key128{50, 50}, Value(3, &live), 8, 0, &dropped,
                fetched);
    EXPECT_FALSE(
        ex.CacheLookup(*entry, Key128{50, 50}, 1, &dropped).has_value());
    dropped.clear();
  }
  EXPECT_EQ(live, 0);
}

TEST(ExecutorCacheTest, SingleFlightLeaderAndFollowers) {
  Executor ex(OptimizationConfig{});
  const Key128 k{5, 6};
  int made = 0;
  auto make = [&made] {
    ++made;
    return Waiter(new int(made), [](void* p) { delete static_cast<int*>(p); });
  };
  EXPECT_TRUE(ex.JoinFlight(k, make));  // leader: no waiter made
  EXPECT_EQ(made, 0);
  EXPECT_FALSE(ex.JoinFlight(k, make));
  EXPECT_FALSE(ex.JoinFlight(k, make));
  EXPECT_EQ(made, 2);
  const auto followers = ex.EndFlight(k);
  ASSERT_EQ(followers.size(), 2u);
  EXPECT_EQ(*static_cast<int*>(followers[0].get()), 1);
  EXPECT_TRUE(ex.JoinFlight(k, make));  // a new flight
  Waiter w = make();
  EXPECT_FALSE(ex.JoinFlight(k, [&w] { return w; }));
  EXPECT_TRUE(ex.LeaveFlight(k, w));
  EXPECT_TRUE(ex.EndFlight(k).empty());
}

// ---- per-key concurrency limits ----

TEST(ExecutorLimitTest, StepsOfOneKeyShareAFixedLimit) {
  Executor ex(OptimizationConfig{});
  auto a = MakeEntry(ex, "a");
  a->spec.limit_key = "backend";
  a->spec.max_concurrency = 2;
  auto b = MakeEntry(ex, "b");
  b->spec.limit_key = "backend";
  ASSERT_TRUE(ex.RegisterLimitKey(a->spec, nullptr).ok());
  ASSERT_TRUE(ex.RegisterLimitKey(b->spec, nullptr).ok());
  KeyLimiter* la = ex.LimiterFor(*a, *ex.current_config());
  ASSERT_NE(la, nullptr);
  EXPECT_EQ(ex.LimiterFor(*b, *ex.current_config()), la);
  EXPECT_EQ(la->mode(), KeyLimiter::Mode::kFixed);
  EXPECT_EQ(la->limit(), 2);
  // Another step fixing the same key differently is refused.
  auto c = MakeEntry(ex, "c");
  c->spec.limit_key = "backend";
  c->spec.max_concurrency = 3;
  const absl::Status st = ex.RegisterLimitKey(c->spec, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("max_concurrency=2"), std::string::npos);
}

TEST(ExecutorLimitTest, AdaptiveByDefaultNoneWithAFixedGlobalLimit) {
  Executor ex(OptimizationConfig{});
  auto a = MakeEntry(ex, "a");
  ASSERT_TRUE(ex.RegisterLimitKey(a->spec, nullptr).ok());
  KeyLimiter* l = ex.LimiterFor(*a, *ex.current_config());
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->mode(), KeyLimiter::Mode::kAdaptive);
  EXPECT_EQ(l->limit(), 4);
  OptimizationConfig fixed;
  fixed.max_concurrent_executions = 5;
  ASSERT_TRUE(ex.ApplyConfig(fixed).ok());
  EXPECT_EQ(ex.LimiterFor(*a, *ex.current_config()), nullptr);
  EXPECT_EQ(l->mode(), KeyLimiter::Mode::kUnlimited);
  OptimizationConfig off;
  off.enable_concurrency_optimization = false;
  ASSERT_TRUE(ex.ApplyConfig(off).ok());
  EXPECT_EQ(ex.LimiterFor(*a, *ex.current_config()), nullptr);
  OptimizationConfig back;
  back.concurrency_initial_limit = 7;
  ASSERT_TRUE(ex.ApplyConfig(back).ok());
  EXPECT_EQ(ex.LimiterFor(*a, *ex.current_config()), l);
  EXPECT_EQ(l->limit(), 7);
}

TEST(ExecutorLimitTest, EachAttemptIsASampleAndOverloadIsADrop) {
  OptimizationConfig cfg;
  cfg.concurrency_initial_limit = 4;
  Executor ex(cfg);
  auto a = MakeEntry(ex, "a", /*max_retries=*/5);
  ASSERT_TRUE(ex.RegisterLimitKey(a->spec, nullptr).ok());
  KeyLimiter* l = ex.LimiterFor(*a, *ex.current_config());
  ASSERT_NE(l, nullptr);
  int64_t t = 0;
  for (int i = 0; i < 9; ++i) {
    ASSERT_TRUE(l->TryAcquire());
    ExecutionRecord* r = ex.Begin(a, t);
    r->limiter = l;
    r->limit_inflight = 4;
    ex.Succeed(r, t + 20'000'000);
  }
  EXPECT_EQ(l->snapshot().samples, 9);
  // An overload error is a drop sample; a plain error is no sample at all.
  ASSERT_TRUE(l->TryAcquire());
  ExecutionRecord* r = ex.Begin(a, t);
  r->limiter = l;
  AttemptError overload = Err();
  overload.overload = true;
  FailureDecision d = ex.AttemptFailed(r, t + 1'000'000, overload);
  ASSERT_EQ(d.verdict, FailureVerdict::kRetry);
  EXPECT_EQ(l->snapshot().drops, 1);
  ASSERT_TRUE(ex.StartAttempt(r, t + 2'000'000));
  d = ex.AttemptFailed(r, t + 3'000'000, Err());
  EXPECT_EQ(l->snapshot().samples, 10);
  ExecutionOutcome o = ex.Fail(r, t + 4'000'000, false);
  EXPECT_EQ(o.wake_key, nullptr);
  EXPECT_EQ(l->in_flight(), 0);  // released with the record
}

TEST(ExecutorLimitTest, ReleasePermitsGivesBothBackOnce) {
  OptimizationConfig cfg;
  cfg.max_concurrent_executions = 1;
  Executor ex(cfg);
  auto a = MakeEntry(ex, "a");
  a->spec.max_concurrency = 1;
  ASSERT_TRUE(ex.RegisterLimitKey(a->spec, nullptr).ok());
  KeyLimiter* l = ex.LimiterFor(*a, *ex.current_config());
  ASSERT_NE(l, nullptr);
  ASSERT_TRUE(l->TryAcquire());
  ASSERT_TRUE(ex.AcquireSlot(cfg, [] { return Waiter(); }));
  ExecutionRecord* r = ex.Begin(a, 0);
  r->limiter = l;
  r->permit = true;
  ex.ReleasePermits(r);
  EXPECT_EQ(l->in_flight(), 0);
  EXPECT_EQ(ex.slots_in_flight(), 0);
  ex.Fail(r, 1, /*fell_back=*/true);  // releases nothing more
  EXPECT_EQ(l->in_flight(), 0);
  EXPECT_EQ(ex.slots_in_flight(), 0);
}

}  // namespace
}  // namespace caudal

// ---- overload is not failure (docs/resilience.md) ----
namespace caudal {
namespace {

using testing_util::Err;
using testing_util::MakeEntry;

OptimizationConfig TripAfter(int threshold) {
  OptimizationConfig c;
  c.circuit_breaker_failure_threshold = threshold;
  c.circuit_breaker_recovery_timeout_seconds = 60.0;
  return c;
}

// Fails `n` executions of `entry` (one attempt each) with `e`; false as soon
// as one is refused by the breaker.
bool AllAdmitted(Executor& ex, const std::shared_ptr<StepEntry>& entry,
                 const AttemptError& e, int n) {
  for (int i = 0; i < n; ++i) {
    ExecutionRecord* r = ex.Begin(entry, i);
    if (r->attempt == 0) {
      ex.Reject(r, i);
      return false;
    }
    ex.AttemptFailed(r, i, e);
    ex.Fail(r, i, false);
  }
  return true;
}

TEST(ExecutorOverloadTest, OverloadSignalsNeverOpenTheBreaker) {
  AttemptError overloaded = Err(false, "caudal.errors.OverloadedError", "429");
  overloaded.overload = true;
  AttemptError hinted = Err(false, "app.RateLimited", "slow down");
  hinted.retry_after_s = 0.5;
  std::vector<AttemptError> signals = {overloaded, hinted};
  for (int status : {429, 502, 503, 504}) {
    AttemptError http = Err(false, "httpx.HTTPStatusError", "too many");
    http.http_status = status;
    signals.push_back(http);
  }
  for (const AttemptError& e : signals) {
    Executor ex(TripAfter(2));
    auto entry = MakeEntry(ex, "api");
    EXPECT_TRUE(AllAdmitted(ex, entry, e, 20));
    const auto snaps = ex.BreakerSnapshots();
    ASSERT_EQ(snaps.size(), 1u);
    EXPECT_EQ(snaps[0].snapshot.state, CircuitBreaker::State::kClosed);
    EXPECT_EQ(snaps[0].snapshot.failure_count, 0u);
    EXPECT_EQ(snaps[0].snapshot.open_count, 0u);
    // Ordinary errors still open it, per its threshold.
    EXPECT_FALSE(AllAdmitted(ex, entry, Err(), 3));
    EXPECT_EQ(ex.BreakerSnapshots()[0].snapshot.state,
              CircuitBreaker::State::kOpen);
  }
}

TEST(ExecutorOverloadTest, TimeoutsNetworkErrorsAnd5xxStillOpenTheBreaker) {
  AttemptError refused = Err(false, "builtins.ConnectionRefusedError", "no");
  refused.network_error = true;
  AttemptError internal = Err(false, "httpx.HTTPStatusError", "500");
  internal.http_status = 500;
  for (const AttemptError& e : {Err(/*timed_out=*/true), refused, internal}) {
    Executor ex(TripAfter(2));
    auto entry = MakeEntry(ex, "dead");
    EXPECT_FALSE(AllAdmitted(ex, entry, e, 3)) << e.exc_type;
    EXPECT_EQ(ex.BreakerSnapshots()[0].snapshot.state,
              CircuitBreaker::State::kOpen);
  }
}

// Runs one execution with up to 6 attempts that all fail with `e`; returns
// its final verdict.
FailureVerdict FailEveryAttempt(Executor& ex,
                                const std::shared_ptr<StepEntry>& entry,
                                const AttemptError& e) {
  ExecutionRecord* r = ex.Begin(entry, 0);
  FailureDecision d = ex.AttemptFailed(r, 0, e);
  while (d.verdict == FailureVerdict::kRetry) {
    EXPECT_TRUE(ex.StartAttempt(r, 0));
    d = ex.AttemptFailed(r, 0, e);
  }
  ex.Fail(r, 0, false);
  return d.verdict;
}

TEST(ExecutorOverloadTest, FailFastNeverJudgesOverloadOrTimeouts) {
  OptimizationConfig c;
  c.enable_circuit_breaker = false;
  c.error_pattern_min_observations = 2;
  AttemptError overloaded = Err(false, "caudal.errors.OverloadedError", "429");
  overloaded.overload = true;
  AttemptError hinted = Err(false, "app.RateLimited", "slow down");
  hinted.retry_after_s = 0.0;
  const AttemptError timed_out = Err(true, "caudal.errors.StepTimeoutError",
                                     "attempt timed out after 1 s");
  AttemptError reset = Err(false, "builtins.ConnectionResetError", "reset");
  reset.network_error = true;
  AttemptError internal = Err(false, "httpx.HTTPStatusError", "500");
  internal.http_status = 500;
  AttemptError busy = Err(false, "httpx.HTTPStatusError", "503");
  busy.http_status = 503;
  for (const AttemptError& e :
       {overloaded, hinted, timed_out, reset, internal, busy}) {
    Executor ex(c);
    auto entry = MakeEntry(ex, "p", /*max_retries=*/5);
    for (int n = 0; n < 4; ++n) {
      EXPECT_EQ(FailEveryAttempt(ex, entry, e), FailureVerdict::kNoAttemptsLeft)
          << e.exc_type << " execution " << n;
    }
    EXPECT_EQ(ex.fail_fast_count(), 0u) << e.exc_type;
    EXPECT_EQ(entry->stats->Take().attempts, 24u) << e.exc_type;
    // A deterministic error still fails fast once judged hopeless.
    FailEveryAttempt(ex, entry, Err(false, "builtins.KeyError", "'x'"));
    EXPECT_EQ(
        FailEveryAttempt(ex, entry, Err(false, "builtins.KeyError", "'x'")),
        FailureVerdict::kFailFast);
  }
}

// An overload between a deterministic error's retry and its recovery is not
// that retry's failure: the error recovered.
TEST(ExecutorOverloadTest, OverloadDoesNotCountAgainstTheRetryBeforeIt) {
  OptimizationConfig c;
  c.enable_circuit_breaker = false;
  c.error_pattern_min_observations = 1;
  Executor ex(c);
  auto entry = MakeEntry(ex, "q", /*max_retries=*/5);
  AttemptError busy = Err(false, "httpx.HTTPStatusError", "429");
  busy.http_status = 429;
  for (int n = 0; n < 3; ++n) {
    ExecutionRecord* r = ex.Begin(entry, 0);
    ASSERT_EQ(ex.AttemptFailed(r, 0, Err()).verdict, FailureVerdict::kRetry);
    ASSERT_TRUE(ex.StartAttempt(r, 0));
    ASSERT_EQ(ex.AttemptFailed(r, 0, busy).verdict, FailureVerdict::kRetry);
    ASSERT_TRUE(ex.StartAttempt(r, 0));
    ex.Succeed(r, 1);
  }
  EXPECT_EQ(ex.fail_fast_count(), 0u);
  for (const PatternSnapshot& p : ex.ErrorPatterns(10)) {
    if (p.exc_type != "builtins.ValueError") continue;
    EXPECT_EQ(p.recovered, 3u);
    EXPECT_EQ(p.failed_after_retry, 0u);
  }
}

// Within one execution, a retry failing as the attempt before it reuses
// that attempt's pattern; a different message (or type) is another one, and
// messages that normalise alike are one pattern still.
TEST(ExecutorErrorPatternTest, RepeatedErrorsOfOneExecutionKeepTheirPattern) {
  OptimizationConfig c;
  c.enable_circuit_breaker = false;
  Executor ex(c);
  auto entry = MakeEntry(ex, "e", /*max_retries=*/6);
  ExecutionRecord* r = ex.Begin(entry, 0);
  const AttemptError errors[] = {
      Err(false, "builtins.ValueError", "bad id 12"),
      Err(false, "builtins.ValueError", "bad id 12"),
      Err(false, "builtins.ValueError", "bad id 31"),  // normalises alike
      Err(false, "builtins.KeyError", "bad id 31"),
      Err(false, "builtins.ValueError", "other"),
      Err(false, "builtins.ValueError", "other")};
  for (const AttemptError& e : errors) {
    ASSERT_EQ(ex.AttemptFailed(r, 0, e).verdict, FailureVerdict::kRetry);
    ASSERT_TRUE(ex.StartAttempt(r, 0));
  }
  ex.Succeed(r, 1);
  absl::flat_hash_map<std::string, uint64_t> seen;
  for (const PatternSnapshot& p : ex.ErrorPatterns(10))
    seen[p.exc_type + "|" + p.sample] = p.occurrences;
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen["builtins.ValueError|bad id 31"], 3u);
  EXPECT_EQ(seen["builtins.KeyError|bad id 31"], 1u);
  EXPECT_EQ(seen["builtins.ValueError|other"], 2u);
}

// ---- a real API's answers: Retry-After, waits, an open breaker ----

RetryPolicy BackoffPolicy(int max_attempts) {
  RetryPolicy p;
  p.max_attempts = max_attempts;
  p.base_delay_s = 0.01;
  p.max_backoff_s = 60.0;
  return p;
}

AttemptError Http(int status, absl::string_view retry_after = "",
                  absl::string_view retry_after_ms = "") {
  AttemptError e = Err(false, "httpx.HTTPStatusError", "HTTP error");
  e.http_status = status;
  e.retry_after_header = retry_after;
  e.retry_after_ms_header = retry_after_ms;
  return e;
}

TEST(ExecutorRetryAfterTest, HeadersSetTheDelaySpreadUpwards) {
  OptimizationConfig c;
  c.enable_circuit_breaker = false;
  Executor ex(c);
  auto entry = MakeEntry(ex, "api");
  entry->spec.retry = BackoffPolicy(10);
  ExecutionRecord* r = ex.Begin(entry, 0);
  const std::string date =
      absl::FormatTime("%a, %d %b %Y %H:%M:%S GMT",
                       absl::Now() + absl::Seconds(30), absl::UTCTimeZone());
  struct Case {
    AttemptError e;
    double lo, hi;
  } cases[] = {
      {Http(429, "2"), 2.0, 2.4},
      {Http(503, "", "250"), 0.25, 0.3},
      {Http(429, "7", "1500"), 1.5, 1.8},  // the ms header is more precise
      {Http(429, date), 28.0, 36.5},
  };
  for (const Case& k : cases) {
    const FailureDecision d = ex.AttemptFailed(r, 0, k.e);
    ASSERT_EQ(d.verdict, FailureVerdict::kRetry);
    EXPECT_GE(d.delay_s, k.lo);
    EXPECT_LE(d.delay_s, k.hi);
    ASSERT_TRUE(ex.StartAttempt(r, 0));
  }
  ex.Fail(r, 0, false);
}

TEST(ExecutorRetryAfterTest, AWaitLongerThanAllowedEndsAtOnce) {
  OptimizationConfig c;
  c.retry_after_max_seconds = 60;
  Executor ex(c);
  auto entry = MakeEntry(ex, "api");
  entry->spec.retry = BackoffPolicy(10);
  ExecutionRecord* r = ex.Begin(entry, 0);
  EXPECT_EQ(ex.AttemptFailed(r, 0, Http(429, "3600")).verdict,
            FailureVerdict::kWaitTooLong);
  ex.Fail(r, 0, false);
  // The breaker did not count it (overload), fail-fast neither.
  EXPECT_EQ(ex.BreakerSnapshots()[0].snapshot.failure_count, 0u);
  EXPECT_EQ(ex.fail_fast_count(), 0u);
}

TEST(ExecutorRetryAfterTest, OverloadWithoutAStatedWaitBacksOffHalfASecond) {
  OptimizationConfig c;
  Executor ex(c);
  auto entry = MakeEntry(ex, "api");
  entry->spec.retry = BackoffPolicy(10);  // 10 ms, doubling
  ExecutionRecord* r = ex.Begin(entry, 0);
  double floor = Executor::kOverloadBaseS;
  for (int i = 0; i < 4; ++i) {
    const FailureDecision d = ex.AttemptFailed(r, 0, Http(503));
    ASSERT_EQ(d.verdict, FailureVerdict::kRetry);
    EXPECT_GE(d.delay_s, floor);
    EXPECT_LE(d.delay_s, floor * 1.2 + 1e-9);
    floor *= 2;
    ASSERT_TRUE(ex.StartAttempt(r, 0));
  }
  ex.Fail(r, 0, false);
  // Immediate retries (max_backoff 0) stay immediate.
  auto flujo_like = MakeEntry(ex, "flujo", /*max_retries=*/3);
  r = ex.Begin(flujo_like, 0);
  EXPECT_EQ(ex.AttemptFailed(r, 0, Http(503)).delay_s, 0.0);
  ex.Fail(r, 0, false);
}

TEST(ExecutorLimitTest, ATimeoutIsALatencySampleNotADrop) {
  OptimizationConfig cfg;
  cfg.concurrency_initial_limit = 4;
  Executor ex(cfg);
  auto a = MakeEntry(ex, "a", /*max_retries=*/5);
  ASSERT_TRUE(ex.RegisterLimitKey(a->spec, nullptr).ok());
  KeyLimiter* l = ex.LimiterFor(*a, *ex.current_config());
  ASSERT_NE(l, nullptr);
  ASSERT_TRUE(l->TryAcquire());
  ExecutionRecord* r = ex.Begin(a, 0);
  r->limiter = l;
  ASSERT_EQ(ex.AttemptFailed(r, 3'000'000'000, Err(/*timed_out=*/true)).verdict,
            FailureVerdict::kRetry);
  EXPECT_EQ(l->snapshot().samples, 1);
  EXPECT_EQ(l->snapshot().drops, 0);
  ex.Fail(r, 3'000'000'001, false);
}

TEST(ExecutorBreakerWaitTest, ARefusedExecutionWaitsForTheProbe) {
  Executor ex(BreakerConfig(1, 1.0));
  auto entry = MakeEntry(ex, "api");
  entry->spec.retry = BackoffPolicy(3);
  ExecutionRecord* trip = ex.Begin(entry, 0);
  ex.AttemptFailed(trip, 0, Err(false, "builtins.ConnectionRefusedError"));
  ex.Fail(trip, 0, false);
  // 0.4 s later: refused, told to wait the 0.6 s left (up to +20 %).
  ExecutionRecord* r = ex.Begin(entry, 400'000'000);
  ASSERT_EQ(r->attempt, 0);
  ASSERT_TRUE(r->rejected);
  const AttemptError refused;  // the record says it was refused
  FailureDecision d = ex.AttemptFailed(r, 400'000'000, refused);
  ASSERT_EQ(d.verdict, FailureVerdict::kRetry);
  EXPECT_GE(d.delay_s, 0.6 - 1e-9);
  EXPECT_LE(d.delay_s, 0.72 + 1e-9);
  // After the wait it is the probe; its success closes the breaker.
  ASSERT_TRUE(ex.StartAttempt(r, 1'100'000'000));
  EXPECT_TRUE(r->probe);
  EXPECT_EQ(r->attempt, 1);
  ex.Succeed(r, 1'200'000'000);
  EXPECT_EQ(ex.BreakerSnapshots()[0].snapshot.state,
            CircuitBreaker::State::kClosed);
}

TEST(ExecutorBreakerWaitTest, WaitsSpendTheRetryBudget) {
  Executor ex(BreakerConfig(1, 1.0));
  auto entry = MakeEntry(ex, "api");
  entry->spec.retry = BackoffPolicy(2);  // one retry: one wait
  ExecutionRecord* trip = ex.Begin(entry, 0);
  ex.AttemptFailed(trip, 0, Err(false, "builtins.ConnectionRefusedError"));
  ex.Fail(trip, 0, false);
  ExecutionRecord* r = ex.Begin(entry, 1);
  const AttemptError refused;  // the record says it was refused
  ASSERT_EQ(ex.AttemptFailed(r, 1, refused).verdict, FailureVerdict::kRetry);
  // Another execution took the half-open probe slot: a short poll for its
  // verdict, which spends no budget.
  ExecutionRecord* probe = ex.Begin(entry, 1'000'000'001);
  ASSERT_TRUE(probe->probe);
  ASSERT_FALSE(ex.StartAttempt(r, 1'000'000'002));
  FailureDecision poll = ex.AttemptFailed(r, 1'000'000'002, refused);
  ASSERT_EQ(poll.verdict, FailureVerdict::kRetry);
  EXPECT_GE(poll.delay_s, 0.1 - 1e-9);  // a tenth of the recovery timeout
  EXPECT_LE(poll.delay_s, 0.12 + 1e-9);
  // The probe fails: open again. The next refusal has no budget left.
  ex.AttemptFailed(probe, 1'000'000'003,
                   Err(false, "builtins.ConnectionRefusedError"));
  ex.Fail(probe, 1'000'000'003, false);
  ASSERT_FALSE(ex.StartAttempt(r, 1'100'000'000));
  EXPECT_EQ(ex.AttemptFailed(r, 1'100'000'000, refused).verdict,
            FailureVerdict::kBreakerOpen);
  ex.Reject(r, 1'100'000'001);
}

TEST(ExecutorBreakerWaitTest, FailingFastAndTooLongWaitsEndAtOnce) {
  OptimizationConfig c = BreakerConfig(1, 1.0);
  c.circuit_breaker_wait_for_probe = false;
  Executor fast(c);
  auto entry = MakeEntry(fast, "api");
  entry->spec.retry = BackoffPolicy(5);
  ExecutionRecord* trip = fast.Begin(entry, 0);
  fast.AttemptFailed(trip, 0, Err(false, "builtins.ConnectionRefusedError"));
  fast.Fail(trip, 0, false);
  const AttemptError refused;  // the record says it was refused
  ExecutionRecord* r = fast.Begin(entry, 1);
  EXPECT_EQ(fast.AttemptFailed(r, 1, refused).verdict,
            FailureVerdict::kBreakerOpen);
  fast.Reject(r, 1);
  // A recovery longer than the policy's max backoff: no wait is made.
  Executor slow(BreakerConfig(1, 120.0));
  auto e2 = MakeEntry(slow, "api");
  e2->spec.retry = BackoffPolicy(5);
  trip = slow.Begin(e2, 0);
  slow.AttemptFailed(trip, 0, Err(false, "builtins.ConnectionRefusedError"));
  slow.Fail(trip, 0, false);
  r = slow.Begin(e2, 1);
  EXPECT_EQ(slow.AttemptFailed(r, 1, refused).verdict,
            FailureVerdict::kBreakerOpen);
  slow.Reject(r, 1);
}

TEST(ExecutorLimitTest, RetriesOverACutLimitSpreadOut) {
  // Twelve executions hold permits when overload cuts the limit below
  // them: their retries spread over the stated wait stretched by the
  // oversubscription, instead of all returning after the stated wait.
  OptimizationConfig cfg;
  cfg.concurrency_initial_limit = 12;
  cfg.enable_circuit_breaker = false;
  Executor ex(cfg);
  auto a = MakeEntry(ex, "a");
  a->spec.retry = BackoffPolicy(5);
  ASSERT_TRUE(ex.RegisterLimitKey(a->spec, nullptr).ok());
  KeyLimiter* l = ex.LimiterFor(*a, *ex.current_config());
  ASSERT_NE(l, nullptr);
  std::vector<ExecutionRecord*> held;
  for (int i = 0; i < 12; ++i) {
    ASSERT_TRUE(l->TryAcquire());
    ExecutionRecord* r = ex.Begin(a, 0);
    r->limiter = l;
    r->limit_inflight = i + 1;
    held.push_back(r);
  }
  double longest = 0;
  for (ExecutionRecord* r : held) {
    const FailureDecision d = ex.AttemptFailed(r, 50'000'000, Http(429, "1"));
    ASSERT_EQ(d.verdict, FailureVerdict::kRetry);
    EXPECT_GE(d.delay_s, 1.0);
    const double over = static_cast<double>(l->in_flight()) / l->limit();
    EXPECT_LE(d.delay_s, 1.2 * std::max(1.0, over) + 1e-9);
    longest = std::max(longest, d.delay_s);
  }
  EXPECT_LT(l->limit(), 12);  // the drops cut it
  EXPECT_GT(longest, 1.2);    // some retries were spread beyond the wait
  for (ExecutionRecord* r : held) ex.Fail(r, 60'000'000, false);
}

}  // namespace
}  // namespace caudal
