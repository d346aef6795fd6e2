// Executor: after a failed attempt (AttemptFailed): the breaker's verdict,
// error patterns, the retry decision and its delay, waits for an open
// breaker's probe, routing to the fallback.
#include <algorithm>
#include <cstring>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "caudal/executor/executor.h"

namespace caudal {

absl::optional<double> AttemptError::RetryHintSeconds(double now_unix_s) const {
  if (retry_after_s.has_value()) return retry_after_s;
  if (!retry_after_ms_header.empty()) {
    if (auto s = ParseRetryAfterMs(retry_after_ms_header)) return s;
  }
  if (!retry_after_header.empty())
    return ParseRetryAfter(retry_after_header, now_unix_s);
  return absl::nullopt;
}

FailureDecision Executor::AttemptFailed(ExecutionRecord* r, int64_t now_ns,
                                        const AttemptError& e) {
  if (r->rejected) {
    FailureDecision d = BreakerWait(r);
    if (d.verdict != FailureVerdict::kRetry && r->step->spec.has_fallback)
      RouteToFallback(r, &d);
    return d;
  }
  FailureDecision d = Decide(r, now_ns, e);
  // Overload signals and network errors are the adaptive limit's drop
  // signal. A timed-out attempt is a latency sample (it ran that long): one
  // slow answer says nothing about load, many are seen by the limit's
  // window median. Other errors say nothing about the backend's load.
  const bool drop = e.Overloaded() || e.network_error;
  if (r->limiter != nullptr && (drop || e.timed_out)) {
    d.wake = SampleLimit(r, now_ns, drop);
    if (drop && d.verdict == FailureVerdict::kRetry) SpreadOverLimit(r, &d);
  } else if (r->bypassed != nullptr && drop) {
    r->bypassed->Wake();  // overload on a dormant key: permits again
  }
  if (d.verdict != FailureVerdict::kRetry && r->step->spec.has_fallback)
    RouteToFallback(r, &d);
  return d;
}

// The fallback is another execution: it must not wait for the permits this
// one still holds (with every slot held by a primary waiting for its
// fallback, nothing could run).
void Executor::RouteToFallback(ExecutionRecord* r, FailureDecision* d) {
  d->verdict = FailureVerdict::kFallback;
  d->delay_s = 0.0;
  ReleasedPermits p = ReleasePermits(r);
  if (p.wake) d->wake.push_back(std::move(p.wake));
  if (p.wake_key) d->wake.push_back(std::move(p.wake_key));
}

// The limit was cut below the executions holding its permits: those
// holders' retries would all come back at once, over the new limit, and
// meet overload again. Spread them over the back-off stretched by the
// oversubscription (in flight / limit), as if they queued for the permits.
void Executor::SpreadOverLimit(ExecutionRecord* r, FailureDecision* d) {
  const int limit = r->limiter->limit();
  const int in_flight = r->limiter->in_flight();
  if (limit <= 0 || in_flight <= limit || d->delay_s <= 0) return;
  const double over = static_cast<double>(in_flight) / limit - 1.0;
  d->delay_s =
      std::min(d->delay_s * (1.0 + over * UnitIntervalFromBits(random_.Next())),
               r->step->spec.retry.max_backoff_s);
}

FailureDecision Executor::BreakerWait(ExecutionRecord* r) {
  const OptimizationConfig& cfg = *r->config;
  const RetryPolicy& policy = r->step->spec.retry;
  if (!cfg.circuit_breaker_wait_for_probe || policy.max_attempts <= 1)
    return {FailureVerdict::kBreakerOpen};
  double wait = static_cast<double>(r->retry_after_ns) / 1e9;
  if (wait > 0) {
    // Open: wait until it admits a probe. A refusal is a try that did not
    // call the step: it spends one unit of the retry budget.
    ++r->refusals;
    if (!policy.HasAttemptLeft(r->attempt + r->refusals - r->lost_retries) ||
        wait > policy.max_backoff_s) {
      return {FailureVerdict::kBreakerOpen};
    }
  } else {
    // Half-open, a probe out: wait for its verdict, polling at a tenth of
    // the recovery timeout (50 ms .. 1 s). Not a try; the polls of one
    // execution add up to at most the policy's max backoff.
    wait = std::clamp(cfg.circuit_breaker_recovery_timeout_seconds / 10, 0.05,
                      1.0);
    r->probe_wait_ns += static_cast<int64_t>(wait * 1e9);
    if (static_cast<double>(r->probe_wait_ns) / 1e9 > policy.max_backoff_s)
      return {FailureVerdict::kBreakerOpen};
  }
  // Spread the waiters (up to +20 %), so they do not all ask at one instant.
  wait = RetryPolicy::SpreadUp(wait, random_.Next());
  return {FailureVerdict::kRetry, wait};
}

FailureDecision Executor::Decide(ExecutionRecord* r, int64_t now_ns,
                                 const AttemptError& e) {
  StepStats* s = r->step->stats;
  s->errors.fetch_add(1, std::memory_order_relaxed);
  if (e.timed_out) s->timeouts.fetch_add(1, std::memory_order_relaxed);
  r->had_error = true;
  r->last_timed_out = e.timed_out;
  {
    const size_t n = std::min(e.exc_type.size(), sizeof(r->last_error) - 1);
    std::memcpy(r->last_error, e.exc_type.data(), n);
    r->last_error[n] = '\0';
  }
  if (r->breaker_pending) {
    r->breaker_pending = false;
    // Overload is not failure: the backend is alive and asks us to slow
    // down (the adaptive limit and the retry's back-off do that).
    // Nor is a permanent error (bad data, an impossible request: the
    // backend never saw it, or answered correctly),
    // nor a lost worker (the process running the step died, not the step).
    if (e.counts_for_breaker && !e.Overloaded() && !e.permanent &&
        !e.worker_lost) {
      Note(r->step->spec, r->breaker->OnFailure(now_ns, r->probe));
    } else {
      r->breaker->OnIgnored(r->probe);
    }
  }
  const OptimizationConfig& cfg = *r->config;
  // Fail-fast judges deterministic errors only: a transient failure (see
  // AttemptError::Transient) is never asked ShouldRetry, and it is not taken
  // as the failed outcome of a deterministic error's retry (that retry's
  // outcome is the next deterministic error, or the success). Retries of
  // transient errors are still counted, for the read-outs.
  const bool judged = !e.Transient();
  const bool keep_pending =
      !judged && r->retried_pattern != 0 && !r->retried_transient;
  uint64_t pattern = 0;
  bool pattern_retry = true;  // the table's ShouldRetry for `pattern`
  if (cfg.enable_optimized_error_handling) {
    pattern = ErrorPatternOf(
        r->step->spec.name, e.exc_type,
        cfg.error_pattern_match_message ? e.message : absl::string_view());
    // One lock: the retry after the previous error did not recover, this
    // error, and whether its pattern is still worth retrying.
    pattern_retry = errors_.RecordFailure(
        keep_pending ? 0 : r->retried_pattern, pattern, r->step->spec.name,
        e.exc_type, e.message, now_ns,
        static_cast<int>(cfg.error_pattern_min_observations));
  }
  if (!keep_pending) r->retried_pattern = 0;
  // The retried error's pattern, judged when the retry's outcome is known.
  auto retrying = [&](bool transient) {
    if (!keep_pending) {
      r->retried_pattern = pattern;
      r->retried_transient = transient;
    }
  };
  const RetryPolicy& policy = r->step->spec.retry;
  if (e.worker_lost && r->lost_retries < kWorkerLostRetries) {
    // At once, whatever the policy, and not one of its attempts: as Ray
    // retries a task whose worker died.
    ++r->lost_retries;
    retrying(true);
    return {FailureVerdict::kRetry, 0.0};
  }
  if (!e.retryable || e.permanent) return {FailureVerdict::kNotRetryable};
  // The policy's own attempts: those made for lost workers are not its.
  const int policy_attempt = r->attempt - r->lost_retries;
  if (!policy.HasAttemptLeft(policy_attempt + r->refusals))
    return {FailureVerdict::kNoAttemptsLeft};
  // A stated wait longer than the execution may make ends it now, rather
  // than after sleeping for nothing.
  absl::optional<double> hint;
  if (e.HasRetryHint()) {
    hint = e.RetryHintSeconds(absl::ToUnixMicros(absl::Now()) / 1e6);
    if (hint.has_value() && *hint > cfg.retry_after_max_seconds)
      return {FailureVerdict::kWaitTooLong};
  }
  if (judged && pattern != 0 && !pattern_retry) {
    fail_fast_.fetch_add(1, std::memory_order_relaxed);
    return {FailureVerdict::kFailFast};
  }
  retrying(!judged);
  double delay =
      policy.DelayBeforeAttempt(policy_attempt + 1, hint, random_.Next());
  if (e.Overloaded() && !hint.has_value() && policy.max_backoff_s > 0) {
    // Overloaded, without saying for how long: give the backend at least
    // kOverloadBaseS, doubling per retry (an outage of a few seconds must
    // not use up the budget), spread upwards by up to 20 %.
    const int k = std::min(policy_attempt - 1, 30);
    const double floor = RetryPolicy::SpreadUp(
        kOverloadBaseS * static_cast<double>(1 << k), random_.Next());
    delay = std::min(std::max(delay, floor), policy.max_backoff_s);
  }
  return {FailureVerdict::kRetry, delay};
}

}  // namespace caudal
