// RetryPolicy: how many attempts a step gets and how long to wait before each
// retry. RetryRandom: the random source the executor feeds into it.
//
// Idea: the delay is a pure function of (policy, attempt number, optional
// server hint, 64 random bits), so tests pass exact bits and check exact
// delays, and the executor owns the only state (the RetryRandom).
//
// Delay before attempt n (n = 2 is the first retry), before jitter:
//   kExponential  base_delay_s * backoff_factor^(n-2)
//   kLinear       base_delay_s * (n-1)
//   kFixed        base_delay_s
// then capped at max_backoff_s. Jitter ("equal jitter", generalised): with
// j = jitter and u uniform in [0, 1) from the random bits, the delay d becomes
//   d * (1 - j) + d * j * u,   uniform in [d * (1 - j), d]
// (d itself is reachable only by rounding when u is within 2^-53 of 1).
// j = 0 is no jitter, j = 0.5 is AWS's "equal jitter", j = 1 is "full
// jitter". Jitter only shortens a delay, so the cap still holds after it.
// A retry_after hint (HTTP 429/503 Retry-After, in seconds) replaces the
// computed delay (the server said how long): the delay is
// hint * (1 + kHintSpread * u), jittered upwards only, so that callers told
// the same wait do not all come back at the same instant (a released herd
// would trip the server's limit again), then capped at max_backoff_s. A
// negative or non-finite hint is ignored. Whether a hint longer than the caller
// can wait should end the call is the caller's decision (Executor ends it at
// once rather than sleep for nothing).
//
// Retry-After comes in two forms (RFC 9110 section 10.2.3): delay-seconds
// ("120") or an HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT"; the obsolete
// RFC 850 and asctime forms too); some APIs (OpenAI, Azure) also send
// "retry-after-ms". ParseRetryAfter reads them.
//
// Thread-safety: RetryPolicy is a value type (const methods are pure).
// RetryRandom::Next() may be called from any thread concurrently.
// Cost: a pow() and a few multiplications per delay; Next() is one relaxed
// fetch_add plus a 64-bit mix.
#ifndef CAUDAL_RESILIENCE_RETRY_POLICY_H_
#define CAUDAL_RESILIENCE_RETRY_POLICY_H_

#include <atomic>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"

namespace caudal {

struct RetryPolicy {
  // Fixed underlying type: any int converted from outside (bindings, JSON)
  // is a valid value that Validate() can reject, not undefined behaviour.
  enum Kind : int { kExponential, kLinear, kFixed };

  Kind kind = kExponential;
  // Total attempts, the first one included; >= 1 (1 = never retry).
  int max_attempts = 3;
  // Delay unit in seconds; finite, >= 0.
  double base_delay_s = 0.1;
  // Growth per retry for kExponential; finite, >= 1. Unused otherwise.
  double backoff_factor = 2.0;
  // Longest delay, hints included; finite, >= 0.
  double max_backoff_s = 60.0;
  // Fraction of the delay that is randomised; in [0, 1].
  double jitter = 0.0;

  // kInvalidArgument naming each bad field ("max_attempts must be at least
  // 1"), joined by "; ".
  absl::Status Validate() const;

  // True when a call that has made `attempts_made` attempts may make another.
  bool HasAttemptLeft(int attempts_made) const {
    return attempts_made < max_attempts;
  }

  // Fraction of a retry_after hint added, at most, as upward jitter.
  static constexpr double kHintSpread = 0.2;
  // `wait` spread upwards by up to kHintSpread, driven by `random_bits`:
  // callers told the same wait come back spread out, never earlier.
  static double SpreadUp(double wait, uint64_t random_bits);

  // Seconds to wait before attempt `next_attempt` (2 = first retry; 0 for
  // next_attempt < 2). `random_bits` drives the jitter (any 64 bits; the top
  // 53 are used).
  double DelayBeforeAttempt(int next_attempt,
                            absl::optional<double> retry_after_hint_s,
                            uint64_t random_bits) const;
};

// Seconds a Retry-After header value asks for, read at `now_unix_s` (for the
// HTTP-date form; a date in the past is 0). nullopt for anything else
// (empty, negative, garbage). Fractional delay-seconds ("1.5") are accepted,
// as many servers send them. Pure: no clock is read.
absl::optional<double> ParseRetryAfter(absl::string_view value,
                                       double now_unix_s);
// Seconds a retry-after-ms header value asks for ("250" -> 0.25); nullopt
// for anything but a finite number >= 0.
absl::optional<double> ParseRetryAfterMs(absl::string_view value);

// "exponential", "linear", "fixed".
absl::string_view RetryKindName(RetryPolicy::Kind kind);
// Inverse of RetryKindName; kInvalidArgument for anything else.
absl::StatusOr<RetryPolicy::Kind> ParseRetryKind(absl::string_view name);

// Maps 64 random bits to a double uniform in [0, 1) (top 53 bits).
double UnitIntervalFromBits(uint64_t bits);

// splitmix64: a small, fast, seedable generator (Steele, Lea and Flood,
// "Fast splittable pseudorandom number generators", 2014). Not for
// cryptography. The same seed gives the same sequence.
class RetryRandom {
 public:
  explicit RetryRandom(uint64_t seed) : state_(seed) {}
  RetryRandom(const RetryRandom&) = delete;
  RetryRandom& operator=(const RetryRandom&) = delete;

  uint64_t Next();

 private:
  std::atomic<uint64_t> state_;
};

}  // namespace caudal

#endif  // CAUDAL_RESILIENCE_RETRY_POLICY_H_
