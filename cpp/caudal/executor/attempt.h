// A failed attempt: the facts the bindings extract from the exception
// (AttemptError), and the core's verdict on it (FailureDecision).
//
// Thread-safety: plain values.
#ifndef CAUDAL_EXECUTOR_ATTEMPT_H_
#define CAUDAL_EXECUTOR_ATTEMPT_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/optional.h"

namespace caudal {

// What the bindings know about a failed attempt: facts only; the core
// classifies them (Overloaded, Transient) and decides.
struct AttemptError {
  bool timed_out = false;  // the attempt's timeout expired
  // The step raised a ConnectionError (refused, reset) or a TimeoutError.
  bool network_error = false;
  bool overload = false;  // the step said so: caudal.OverloadedError
  int http_status = 0;    // carried by the exception or its response; 0: none
  bool retryable = true;  // the step's retry_on matched
  bool counts_for_breaker = true;  // not excluded from the breaker
  // No retry can fix it, and the backend is not at fault
  // (caudal.errors.PermanentError): the step's input or output is unusable
  // (it cannot be serialised, it fails validation), or it asks for what the
  // backend cannot provide (resources no node has). Final at once; never a
  // breaker failure.
  bool permanent = false;
  // The process or node running the attempt died before it answered
  // (caudal.errors.RemoteWorkerDiedError): the step did not fail, its worker
  // did. Retried at once by default (kWorkerLostRetries), beyond the retry
  // policy; never a breaker failure.
  bool worker_lost = false;
  absl::string_view exc_type;  // qualified type name
  absl::string_view message;   // str(exc)
  // A numeric `retry_after` attribute of the exception (seconds).
  absl::optional<double> retry_after_s;
  // The Retry-After and retry-after-ms headers of the exception's response,
  // as sent (empty: absent). The core parses them (ParseRetryAfter).
  absl::string_view retry_after_header;
  absl::string_view retry_after_ms_header;

  bool HasRetryHint() const {
    return retry_after_s.has_value() || !retry_after_header.empty() ||
           !retry_after_ms_header.empty();
  }
  // The wait the backend asked for, in seconds: the attribute, else
  // retry-after-ms, else Retry-After (an HTTP-date read against
  // `now_unix_s`); nullopt when none parses.
  absl::optional<double> RetryHintSeconds(double now_unix_s) const;

  // An overload signal: the backend asks the caller to slow down (HTTP 429,
  // 502, 503 or 504, a Retry-After hint, caudal.OverloadedError). Retried
  // within the retry budget, a drop for the adaptive limit, never a failure
  // for the circuit breaker nor for error-pattern fail-fast.
  bool Overloaded() const {
    return overload || HasRetryHint() || http_status == 429 ||
           http_status == 502 || http_status == 503 || http_status == 504;
  }
  // A failure that may go away by itself (overload, a timeout, a network
  // error, any HTTP 5xx) rather than a deterministic one; only deterministic
  // errors are judged by error-pattern fail-fast. Timeouts and network
  // errors still count for the breaker: a dead backend must open it.
  bool Transient() const {
    return Overloaded() || timed_out || network_error || worker_lost ||
           (http_status >= 500 && http_status <= 599);
  }
};

// Retries granted for lost workers (AttemptError::worker_lost) whatever the
// step's retry policy, and without spending its attempts: Ray's own default
// for system failures of a task (max_retries=3).
inline constexpr int kWorkerLostRetries = 3;

enum class FailureVerdict : uint8_t {
  kRetry,           // retry after `delay_s`
  kNoAttemptsLeft,  // final: the policy's attempts are used up
  kNotRetryable,    // final: retry_on did not match, or a permanent error
  kFailFast,        // final: this error pattern never recovers on retry
  // final: the backend asked for a longer wait than the execution may make
  // (Retry-After above retry_after_max_seconds or the policy's max backoff)
  kWaitTooLong,
  // final: the breaker is open and the execution may not wait for its probe
  // (waiting is off, the retry budget is spent, or the wait is too long)
  kBreakerOpen,
  // The execution failed for good (any of the final verdicts above) and its
  // step has a fallback: run the fallback, then end with Fail(fell_back).
  // The record's permits are given back already (the fallback is another
  // execution, which must not wait for them); `wake` holds who to wake.
  kFallback,
};

struct FailureDecision {
  FailureVerdict verdict;
  double delay_s = 0.0;
  // Callers handed permits by a limit the attempt's sample changed.
  std::vector<std::shared_ptr<void>> wake;
};

}  // namespace caudal

#endif  // CAUDAL_EXECUTOR_ATTEMPT_H_
