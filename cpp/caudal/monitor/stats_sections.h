// Stats sections: the circuit_breaker and error_handling sections of
// ExecutorCore.get_optimization_stats(), each one snapshot struct taken from
// the executor's read-outs, with its summary figures computed here (the
// worst breaker state, the sums over breakers, the error and recovery
// rates). The bindings convert each struct to its public dict in one place
// (cpp/bindings/monitor_bindings.h); nothing else assembles these sections.
//
// Thread-safety: free functions over values; nothing shared.
#ifndef CAUDAL_MONITOR_STATS_SECTIONS_H_
#define CAUDAL_MONITOR_STATS_SECTIONS_H_

#include <cstdint>
#include <vector>

#include "caudal/monitor/execution_stats.h"
#include "caudal/resilience/circuit_breaker.h"
#include "caudal/resilience/error_patterns.h"

namespace caudal {

// stats["circuit_breaker"]: every breaker and the summary over them.
struct BreakerSection {
  std::vector<BreakerRegistry::NamedSnapshot> breakers;
  // The worst state over all breakers (open, then half-open, then closed;
  // closed when there is none): what flujo's troubleshooting compares.
  CircuitBreaker::State worst = CircuitBreaker::State::kClosed;
  uint64_t failure_count = 0;  // sums over the breakers
  uint64_t success_count = 0;
  uint64_t rejected_count = 0;
  uint64_t open_count = 0;
};
BreakerSection BreakerSectionOf(
    std::vector<BreakerRegistry::NamedSnapshot> breakers);

// stats["error_handling"]: the executor's attempts and errors with the
// error-pattern table.
struct ErrorSection {
  uint64_t errors = 0;
  uint64_t retries = 0;
  uint64_t recovered = 0;
  double error_rate = 0.0;  // failed attempts per attempt (0: no attempt)
  // Executions that failed at least once and then succeeded, over those
  // that failed at least once (0: none failed).
  double recovery_success_rate = 0.0;
  ErrorTableStats table{};  // its recovery_success_rate: retries that recovered
  uint64_t fail_fast =
      0;  // attempts not retried because the pattern never recovers
  std::vector<PatternSnapshot> patterns;  // the most frequent first
};
ErrorSection ErrorSectionOf(const StepStats::Snapshot& total,
                            const ErrorTableStats& table, uint64_t fail_fast,
                            std::vector<PatternSnapshot> patterns);

}  // namespace caudal

#endif  // CAUDAL_MONITOR_STATS_SECTIONS_H_
