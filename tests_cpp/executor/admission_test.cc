// The admission order (Executor::Admit): cache, single flight, shared tier,
// key permit, global slot, breaker; waits resume where they stopped, and a
// withdrawn admission gives back what it holds.
#include <functional>
#include <memory>
#include <vector>

#include "caudal/executor/executor.h"
#include "executor_test_util.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using testing_util::Err;
using testing_util::MakeEntry;

// Makes distinct waiters and counts them.
struct Waiters {
  int made = 0;
  Waiter last;
  absl::FunctionRef<Waiter()> Ref() { return fn; }
  std::function<Waiter()> fn = [this] {
    ++made;
    last = Waiter(new int(made), [](void* p) { delete static_cast<int*>(p); });
    return last;
  };
};

AdmitState Keyed(const std::shared_ptr<StepEntry>& e, Key128 key) {
  AdmitState s;
  s.step = e;
  s.keyed = true;
  s.key = key;
  return s;
}

TEST(AdmissionTest, AHitEndsItBeforeAnythingIsTaken) {
  OptimizationConfig c;
  c.enable_cache_optimization = true;
  c.max_concurrent_executions = 1;
  Executor ex(c);
  auto e = MakeEntry(ex, "s");
  absl::optional<AdmitHandover> handover;
  std::vector<CachedValue> dropped;
  Waiters w;
  // A miss leads the flight and starts with the slot.
  AdmitState s = Keyed(e, Key128{1, 1});
  Admitted a = ex.Admit(s, 0, w.Ref(), &handover);
  ASSERT_EQ(a.verdict, AdmitVerdict::kStarted);
  EXPECT_TRUE(a.record->cache_lead);
  EXPECT_TRUE(a.record->cache_flight);
  EXPECT_TRUE(a.record->permit);
  EXPECT_EQ(ex.slots_in_flight(), 1);
  // A concurrent miss of the same key follows: no slot is asked for.
  AdmitState f = Keyed(e, Key128{1, 1});
  EXPECT_EQ(ex.Admit(f, 0, w.Ref(), &handover).verdict, AdmitVerdict::kFollow);
  EXPECT_EQ(w.made, 1);
  EXPECT_EQ(ex.slots_waiting(), 0);
  ex.CacheStore(
      *a.record,
      CachedValue(new int(7),
                  [](const void* p) { delete static_cast<const int*>(p); }),
      8, 0, &dropped);
  const ExecutionOutcome o = ex.Succeed(a.record, 1);
  ASSERT_TRUE(o.flight);
  EXPECT_EQ(ex.EndFlight(o.flight_key).size(), 1u);
  // Held slot or not, a hit takes nothing.
  ASSERT_TRUE(ex.AcquireSlot(c, [] { return Waiter(); }));
  AdmitState h = Keyed(e, Key128{1, 1});
  a = ex.Admit(h, 2, w.Ref(), &handover);
  ASSERT_EQ(a.verdict, AdmitVerdict::kHit);
  EXPECT_EQ(*static_cast<const int*>(handover->hit.get()), 7);
  EXPECT_EQ(ex.slots_waiting(), 0);
  EXPECT_EQ(w.made, 1);
  // With a taker, the hit's value goes to it (the one stored, while the
  // cache holds it) and handover `hit` stays empty.
  const void* taken = nullptr;
  long uses = 0;
  auto take = [&](const CachedValue& v) {
    taken = v.get();
    uses = v.use_count();
  };
  const HitTaker taker(take);
  const void* stored = handover->hit.get();
  handover.reset();
  AdmitState h2 = Keyed(e, Key128{1, 1});
  a = ex.Admit(h2, 3, w.Ref(), &handover, &taker);
  ASSERT_EQ(a.verdict, AdmitVerdict::kHit);
  EXPECT_EQ(taken, stored);
  EXPECT_EQ(uses, 1);  // the cache's own reference: no copy was made
  EXPECT_EQ(handover->hit, nullptr);
}

TEST(AdmissionTest, TheSharedTierIsAskedAfterTheFlightAndBeforePermits) {
  OptimizationConfig c;
  c.max_concurrent_executions = 1;
  Executor ex(c);
  ex.SetSharedTier(true);
  auto e = MakeEntry(ex, "s");
  absl::optional<AdmitHandover> handover;
  Waiters w;
  AdmitState s = Keyed(e, Key128{2, 2});
  ASSERT_EQ(ex.Admit(s, 0, w.Ref(), &handover).verdict,
            AdmitVerdict::kAskSharedTier);
  EXPECT_TRUE(s.flight);
  EXPECT_EQ(ex.slots_in_flight(), 0);
  // The tier missed: resume; the slot and the breaker come next.
  Admitted a = ex.Admit(s, 1, w.Ref(), &handover);
  ASSERT_EQ(a.verdict, AdmitVerdict::kStarted);
  EXPECT_TRUE(a.record->permit);
  EXPECT_TRUE(a.record->cache_flight);
  ex.Cancel(a.record, 2);
  // The tier hit: the admission is withdrawn; its followers are handed back.
  AdmitState t = Keyed(e, Key128{3, 3});
  ASSERT_EQ(ex.Admit(t, 0, w.Ref(), &handover).verdict,
            AdmitVerdict::kAskSharedTier);
  AdmitState f = Keyed(e, Key128{3, 3});
  ASSERT_EQ(ex.Admit(f, 0, w.Ref(), &handover).verdict, AdmitVerdict::kFollow);
  const Withdrawn out = ex.Withdraw(t, Waiter());
  EXPECT_EQ(out.followers.size(), 1u);
  EXPECT_EQ(ex.slots_in_flight(), 0);
}

TEST(AdmissionTest, KeyPermitBeforeTheGlobalSlotAndWaitsResume) {
  OptimizationConfig c;
  c.max_concurrent_executions = 1;
  Executor ex(c);
  auto a = MakeEntry(ex, "a");
  a->spec.max_concurrency = 1;
  ASSERT_TRUE(ex.RegisterLimitKey(a->spec, nullptr).ok());
  auto b = MakeEntry(ex, "b");
  absl::optional<AdmitHandover> handover;
  Waiters w;
  AdmitState s1;
  s1.step = a;
  Admitted first = ex.Admit(s1, 0, w.Ref(), &handover);
  ASSERT_EQ(first.verdict, AdmitVerdict::kStarted);
  KeyLimiter* l = first.record->limiter;
  ASSERT_NE(l, nullptr);
  // The key is saturated: a second execution of it waits for the key's
  // permit, holding no global slot.
  AdmitState s2;
  s2.step = a;
  ASSERT_EQ(ex.Admit(s2, 0, w.Ref(), &handover).verdict,
            AdmitVerdict::kWaitForPermit);
  EXPECT_EQ(ex.slots_in_flight(), 1);
  EXPECT_EQ(ex.slots_waiting(), 0);
  // Another key's execution waits for the global slot.
  AdmitState s3;
  s3.step = b;
  ASSERT_EQ(ex.Admit(s3, 0, w.Ref(), &handover).verdict,
            AdmitVerdict::kWaitForPermit);
  const Waiter w3 = w.last;
  EXPECT_EQ(ex.slots_waiting(), 1);
  // The first ends: the key's permit goes to s2, the slot to s3.
  const ExecutionOutcome o = ex.Succeed(first.record, 1);
  ASSERT_TRUE(o.wake_key);
  ASSERT_TRUE(o.wake);
  EXPECT_EQ(o.wake, w3);
  // s2 resumes with the key's permit and now waits for the slot (s3 has it).
  Admitted r3 = ex.Admit(s3, 2, w.Ref(), &handover);
  ASSERT_EQ(r3.verdict, AdmitVerdict::kStarted);
  ASSERT_EQ(ex.Admit(s2, 2, w.Ref(), &handover).verdict,
            AdmitVerdict::kWaitForPermit);
  EXPECT_EQ(l->in_flight(), 1);  // held while it waits for the slot
  // Cancelled while waiting: the key's permit and its place in the queue
  // are given back.
  const Withdrawn gone = ex.Withdraw(s2, w.last);
  EXPECT_FALSE(gone.permits.wake);
  EXPECT_EQ(l->in_flight(), 0);
  EXPECT_EQ(ex.slots_waiting(), 0);
  ex.Succeed(r3.record, 3);
  EXPECT_EQ(ex.slots_in_flight(), 0);
}

TEST(AdmissionTest, TheOpenBreakerRoutesToTheFallbackWithPermitsBack) {
  OptimizationConfig c;
  c.circuit_breaker_failure_threshold = 1;
  c.circuit_breaker_recovery_timeout_seconds = 60;
  c.max_concurrent_executions = 4;
  Executor ex(c);
  auto e = MakeEntry(ex, "s");
  absl::optional<AdmitHandover> handover;
  Waiters w;
  AdmitState s;
  s.step = e;
  Admitted a = ex.Admit(s, 0, w.Ref(), &handover);
  ASSERT_EQ(a.verdict, AdmitVerdict::kStarted);
  ex.AttemptFailed(a.record, 1, Err());
  ex.Fail(a.record, 1, false);
  // Open now. Without a fallback: refused (attempt 0), permits still held.
  AdmitState r;
  r.step = e;
  a = ex.Admit(r, 2, w.Ref(), &handover);
  ASSERT_EQ(a.verdict, AdmitVerdict::kRefused);
  EXPECT_EQ(a.record->attempt, 0);
  EXPECT_EQ(ex.slots_in_flight(), 1);
  ex.Reject(a.record, 2);
  // With one: the fallback runs, without this execution's slot.
  e->spec.has_fallback = true;
  AdmitState fb;
  fb.step = e;
  a = ex.Admit(fb, 3, w.Ref(), &handover);
  ASSERT_EQ(a.verdict, AdmitVerdict::kFallback);
  EXPECT_EQ(ex.slots_in_flight(), 0);
  ex.Fail(a.record, 4, /*fell_back=*/true);
  EXPECT_EQ(e->stats->Take().rejected, 2u);
}

TEST(AdmissionTest, AFinalFailureOfAStepWithAFallbackIsRoutedToIt) {
  OptimizationConfig c;
  c.max_concurrent_executions = 1;
  c.enable_circuit_breaker = false;
  Executor ex(c);
  auto e = MakeEntry(ex, "s", /*max_retries=*/1);
  e->spec.has_fallback = true;
  absl::optional<AdmitHandover> handover;
  Waiters w;
  AdmitState s;
  s.step = e;
  Admitted a = ex.Admit(s, 0, w.Ref(), &handover);
  ASSERT_EQ(a.verdict, AdmitVerdict::kStarted);
  // A retry left: retried, as without a fallback.
  EXPECT_EQ(ex.AttemptFailed(a.record, 1, Err()).verdict,
            FailureVerdict::kRetry);
  ASSERT_TRUE(ex.StartAttempt(a.record, 2));
  EXPECT_EQ(ex.slots_in_flight(), 1);
  // The last attempt failed: the fallback's turn, the slot given back.
  EXPECT_EQ(ex.AttemptFailed(a.record, 3, Err()).verdict,
            FailureVerdict::kFallback);
  EXPECT_EQ(ex.slots_in_flight(), 0);
  ex.Fail(a.record, 4, /*fell_back=*/true);
  EXPECT_EQ(ex.slots_in_flight(), 0);
}

TEST(AdmissionTest, FollowersAreCountedByTheCore) {
  Executor ex(OptimizationConfig{});
  auto e = MakeEntry(ex, "s");
  ex.RecordFollowed(*e, /*leader_succeeded=*/true);
  ex.RecordFollowed(*e, /*leader_succeeded=*/false);
  const auto st = e->stats->Take();
  EXPECT_EQ(st.shared_flights, 2u);
  EXPECT_EQ(st.cache_hits, 0u);  // hits are counted by lookups
  EXPECT_EQ(st.successes, 1u);
  EXPECT_EQ(st.executions, 1u);
}

TEST(AdmissionTest, OneCachingRuleForBothTiers) {
  OptimizationConfig c;
  c.enable_cache_optimization = true;
  Executor ex(c);
  auto e = MakeEntry(ex, "s");
  e->spec.tags = {"t"};
  const uint64_t begun = ex.CacheEpoch();
  EXPECT_TRUE(ex.MayStore(*e, /*success=*/true, /*fell_back=*/false, begun));
  EXPECT_FALSE(ex.MayStore(*e, true, /*fell_back=*/true, begun));
  EXPECT_FALSE(ex.MayStore(*e, /*success=*/false, false, begun));
  std::vector<CachedValue> dropped;
  ex.InvalidateTag("t", &dropped);
  EXPECT_FALSE(ex.MayStore(*e, true, false, begun));
  EXPECT_TRUE(ex.MayStore(*e, true, false, ex.CacheEpoch()));
}

}  // namespace
}  // namespace caudal
