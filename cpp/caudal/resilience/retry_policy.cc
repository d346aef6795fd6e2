#include "caudal/resilience/retry_policy.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"

namespace caudal {
namespace {

bool FiniteNonNegative(double v) { return std::isfinite(v) && v >= 0.0; }

}  // namespace

absl::Status RetryPolicy::Validate() const {
  std::vector<std::string> problems;
  if (kind != kExponential && kind != kLinear && kind != kFixed) {
    problems.push_back("kind must be exponential, linear or fixed");
  }
  if (max_attempts < 1) problems.push_back("max_attempts must be at least 1");
  if (!FiniteNonNegative(base_delay_s)) {
    problems.push_back("base_delay_s must be a finite number >= 0");
  }
  if (kind == kExponential &&
      !(std::isfinite(backoff_factor) && backoff_factor >= 1.0)) {
    problems.push_back("backoff_factor must be a finite number >= 1.0");
  }
  if (!FiniteNonNegative(max_backoff_s)) {
    problems.push_back("max_backoff_s must be a finite number >= 0");
  }
  if (!(jitter >= 0.0 && jitter <= 1.0)) {
    problems.push_back("jitter must be between 0.0 and 1.0");
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));
}

double RetryPolicy::DelayBeforeAttempt(
    int next_attempt, absl::optional<double> retry_after_hint_s,
    uint64_t random_bits) const {
  if (next_attempt < 2) return 0.0;
  if (retry_after_hint_s.has_value() && std::isfinite(*retry_after_hint_s) &&
      *retry_after_hint_s >= 0.0) {
    return std::min(SpreadUp(*retry_after_hint_s, random_bits), max_backoff_s);
  }
  const int retry = next_attempt - 1;  // 1 for the first retry
  double delay = 0.0;
  switch (kind) {
    case kExponential:
      // base 0 would give 0 * inf = NaN once the power overflows.
      delay = base_delay_s == 0.0
                  ? 0.0
                  : base_delay_s * std::pow(backoff_factor, retry - 1);
      break;
    case kLinear:
      delay = base_delay_s * retry;
      break;
    case kFixed:
      delay = base_delay_s;
      break;
  }
  if (!(delay <= max_backoff_s)) delay = max_backoff_s;  // also catches inf
  if (jitter > 0.0) {
    delay = delay * (1.0 - jitter) +
            delay * jitter * UnitIntervalFromBits(random_bits);
  }
  return delay;
}

double RetryPolicy::SpreadUp(double wait, uint64_t random_bits) {
  return wait * (1.0 + kHintSpread * UnitIntervalFromBits(random_bits));
}

absl::optional<double> ParseRetryAfter(absl::string_view value,
                                       double now_unix_s) {
  value = absl::StripAsciiWhitespace(value);
  if (value.empty()) return absl::nullopt;
  double seconds = 0;
  if (absl::ascii_isdigit(static_cast<unsigned char>(value[0])) ||
      value[0] == '.') {
    if (!absl::SimpleAtod(value, &seconds) || !std::isfinite(seconds) ||
        seconds < 0) {
      return absl::nullopt;
    }
    return seconds;
  }
  // IMF-fixdate, then the two obsolete forms RFC 9110 asks recipients to
  // accept (RFC 850 and asctime).
  static constexpr const char* kFormats[] = {
      "%a, %d %b %Y %H:%M:%S GMT",
      "%A, %d-%b-%y %H:%M:%S GMT",
      "%a %b %e %H:%M:%S %Y",
  };
  for (const char* format : kFormats) {
    absl::Time at;
    std::string err;
    if (absl::ParseTime(format, value, absl::UTCTimeZone(), &at, &err)) {
      const double wait =
          absl::ToDoubleSeconds(at - absl::UnixEpoch()) - now_unix_s;
      return std::isfinite(wait) ? std::max(0.0, wait) : 0.0;
    }
  }
  return absl::nullopt;
}

absl::optional<double> ParseRetryAfterMs(absl::string_view value) {
  double ms = 0;
  if (!absl::SimpleAtod(absl::StripAsciiWhitespace(value), &ms) ||
      !std::isfinite(ms) || ms < 0) {
    return absl::nullopt;
  }
  return ms / 1000.0;
}

absl::string_view RetryKindName(RetryPolicy::Kind kind) {
  switch (kind) {
    case RetryPolicy::kExponential:
      return "exponential";
    case RetryPolicy::kLinear:
      return "linear";
    case RetryPolicy::kFixed:
      return "fixed";
  }
  return "unknown";
}

absl::StatusOr<RetryPolicy::Kind> ParseRetryKind(absl::string_view name) {
  for (RetryPolicy::Kind kind :
       {RetryPolicy::kExponential, RetryPolicy::kLinear, RetryPolicy::kFixed}) {
    if (name == RetryKindName(kind)) return kind;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown retry kind '", name,
                   "' (expected exponential, linear or fixed)"));
}

double UnitIntervalFromBits(uint64_t bits) {
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

uint64_t RetryRandom::Next() {
  constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ULL;
  uint64_t z = state_.fetch_add(kGamma, std::memory_order_relaxed) + kGamma;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace caudal
