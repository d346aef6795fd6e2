// Executor::Admit and Executor::Withdraw: the admission order (executor.h,
// "Admission"), and what single flight records.
#include "caudal/executor/executor.h"

namespace caudal {

Admitted Executor::Admit(AdmitState& s, int64_t now_ns,
                         absl::FunctionRef<Waiter()> make_waiter,
                         absl::optional<AdmitHandover>* handover,
                         const HitTaker* take_hit) {
  const OptimizationConfig* cfg = current_config();
  StepEntry& step = *s.step;
  switch (s.stage) {
    case AdmitState::Stage::kCache:
      if (s.keyed) {
        // 1. The result cache.
        AdmitHandover& out = handover->emplace();
        // Without a taker, the hit's value is copied into the handover.
        auto copy_out = [&](const CachedValue& v) { out.hit = v; };
        if (CacheLookup(step, s.key, now_ns, &out.dropped,
                        take_hit != nullptr ? *take_hit : HitTaker(copy_out)))
          return {AdmitVerdict::kHit};
        // 2. Single flight: lead, or follow the execution that leads.
        if (step.spec.single_flight) {
          if (!JoinFlight(s.key, make_waiter)) return {AdmitVerdict::kFollow};
          s.flight = true;
        }
        // 3. The shared tier, asked by the caller; a miss resumes below.
        if (shared_tier_.load(std::memory_order_relaxed)) {
          s.stage = AdmitState::Stage::kSharedTier;
          return {AdmitVerdict::kAskSharedTier};
        }
      }
      [[fallthrough]];
    case AdmitState::Stage::kSharedTier:
      // 4. The step key's permit (a dormant key admits without one).
      if (KeyLimiter* lim = LimiterFor(step, *cfg)) {
        if (lim->TryBypass()) {
          s.bypassed = lim;
        } else if (AcquireKey(lim, make_waiter)) {
          s.held = lim;
        } else {
          s.stage = AdmitState::Stage::kKeyPermit;
          s.waited = lim;
          return {AdmitVerdict::kWaitForPermit};
        }
      }
      [[fallthrough]];
    case AdmitState::Stage::kKeyPermit:
      if (s.stage == AdmitState::Stage::kKeyPermit) {
        // Resumed: the key's permit was handed over.
        s.held = s.waited;
        s.waited = nullptr;
      }
      // 5. A global slot.
      if (cfg->max_concurrent_executions.has_value()) {
        if (!AcquireSlot(*cfg, make_waiter)) {
          // A bypass is given back: the wait resumes without a key permit,
          // as the dormant key allows.
          if (s.bypassed != nullptr) {
            s.bypassed->EndBypass();
            s.bypassed = nullptr;
          }
          s.stage = AdmitState::Stage::kSlot;
          return {AdmitVerdict::kWaitForPermit};
        }
        s.have_slot = true;
      }
      break;
    case AdmitState::Stage::kSlot:
      // Resumed: a global slot was handed over.
      s.have_slot = true;
      break;
    case AdmitState::Stage::kDone:
      break;
  }
  s.stage = AdmitState::Stage::kDone;
  // 6. The breaker, as the record begins.
  ExecutionRecord* r = Begin(std::move(s.step), now_ns, cfg);
  if (ABSL_PREDICT_FALSE(r == nullptr)) {
    // The handle table is full: give back what was taken; the flight's
    // followers run themselves.
    AdmitHandover& out =
        handover->has_value() ? **handover : handover->emplace();
    if (s.have_slot) out.wake.wake = ReleaseSlot();
    if (s.held != nullptr) out.wake.wake_key = ReleaseKey(s.held);
    if (s.bypassed != nullptr) s.bypassed->EndBypass();
    if (s.flight) out.followers = EndFlight(s.key);
    s = AdmitState();
    s.stage = AdmitState::Stage::kDone;
    return {AdmitVerdict::kFull};
  }
  r->permit = s.have_slot;
  r->limiter = s.held;
  r->bypassed = s.bypassed;
  if (s.held != nullptr) r->limit_inflight = s.held->in_flight();
  r->cache_lead = s.keyed;
  r->cache_flight = s.flight;
  r->cache_key = s.key;
  // The record owns what the admission took.
  s.held = s.bypassed = nullptr;
  s.have_slot = s.flight = false;
  if (r->attempt != 0) return {AdmitVerdict::kStarted, r};
  if (!r->step->spec.has_fallback) return {AdmitVerdict::kRefused, r};
  // Refused, and the step has a fallback: it runs instead, as another
  // execution, which must not wait for the permits this one holds.
  r->step->stats->rejected.fetch_add(1, std::memory_order_relaxed);
  AdmitHandover& out = handover->has_value() ? **handover : handover->emplace();
  out.wake = ReleasePermits(r);
  return {AdmitVerdict::kFallback, r};
}

Withdrawn Executor::Withdraw(AdmitState& s, const Waiter& waiter) {
  Withdrawn out;
  switch (s.stage) {
    case AdmitState::Stage::kKeyPermit:
      // Leave the key's queue, or pass on a permit already handed over.
      if (!s.waited->Cancel(waiter))
        out.permits.wake_key = ReleaseKey(s.waited);
      break;
    case AdmitState::Stage::kSlot:
      if (!CancelWait(waiter)) out.permits.wake = ReleaseSlot();
      break;
    default:
      break;
  }
  if (s.have_slot) out.permits.wake = ReleaseSlot();
  if (s.held != nullptr) out.permits.wake_key = ReleaseKey(s.held);
  if (s.bypassed != nullptr) s.bypassed->EndBypass();
  if (s.flight) out.followers = EndFlight(s.key);
  s = AdmitState();
  s.stage = AdmitState::Stage::kDone;
  return out;
}

void Executor::RecordFollowed(StepEntry& step, bool leader_succeeded) {
  step.stats->shared_flights.fetch_add(1, std::memory_order_relaxed);
  if (leader_succeeded) RecordCacheHit(step, 0);
}

}  // namespace caudal
