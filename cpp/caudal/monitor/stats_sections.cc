#include "caudal/monitor/stats_sections.h"

#include <utility>

namespace caudal {

namespace {
// Lower is worse.
int Severity(CircuitBreaker::State s) {
  switch (s) {
    case CircuitBreaker::State::kOpen:
      return 0;
    case CircuitBreaker::State::kHalfOpen:
      return 1;
    default:
      return 2;
  }
}
}  // namespace

BreakerSection BreakerSectionOf(
    std::vector<BreakerRegistry::NamedSnapshot> breakers) {
  BreakerSection s;
  for (const auto& b : breakers) {
    if (Severity(b.snapshot.state) < Severity(s.worst))
      s.worst = b.snapshot.state;
    s.failure_count += b.snapshot.failure_count;
    s.success_count += b.snapshot.success_count;
    s.rejected_count += b.snapshot.rejected_count;
    s.open_count += b.snapshot.open_count;
  }
  s.breakers = std::move(breakers);
  return s;
}

ErrorSection ErrorSectionOf(const StepStats::Snapshot& total,
                            const ErrorTableStats& table, uint64_t fail_fast,
                            std::vector<PatternSnapshot> patterns) {
  ErrorSection s;
  s.errors = total.errors;
  s.retries = total.retries;
  s.recovered = total.recovered;
  s.error_rate = total.attempts ? static_cast<double>(total.errors) /
                                      static_cast<double>(total.attempts)
                                : 0.0;
  const uint64_t failed_once = total.recovered + total.failures;
  s.recovery_success_rate = failed_once ? static_cast<double>(total.recovered) /
                                              static_cast<double>(failed_once)
                                        : 0.0;
  s.table = table;
  s.fail_fast = fail_fast;
  s.patterns = std::move(patterns);
  return s;
}

}  // namespace caudal
