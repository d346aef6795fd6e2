// Execution statistics: per-step counters and latency histograms, kept
// natively so that the hot path records a finished execution with a handful
// of relaxed atomic adds and no Python objects.
//
// StatsRegistry maps a step name to a StepStats whose address is stable for
// the registry's lifetime, so callers may cache the pointer (the executor
// keeps it in its step table and never looks a name up per execution).
//
// Thread-safety: StepStats counters are atomics; StatsRegistry lookups take a
// mutex (first use of a name only, in practice).
#ifndef CAUDAL_MONITOR_EXECUTION_STATS_H_
#define CAUDAL_MONITOR_EXECUTION_STATS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "caudal/base/mutex.h"
#include "caudal/monitor/latency_histogram.h"

namespace caudal {

struct StepStats {
  explicit StepStats(std::string step_name) : name(std::move(step_name)) {}

  const std::string name;
  // End-to-end latency of each execution (all attempts and back-off), ns.
  LatencyHistogram latency;
  std::atomic<uint64_t> executions{0};  // finished executions
  std::atomic<uint64_t> successes{0};
  std::atomic<uint64_t> failures{0};  // final failures (after retries)
  std::atomic<uint64_t> attempts{0};
  std::atomic<uint64_t> retries{0};
  std::atomic<uint64_t> errors{0};     // failed attempts, retried or not
  std::atomic<uint64_t> recovered{0};  // executions that failed then succeeded
  std::atomic<uint64_t> timeouts{0};
  std::atomic<uint64_t> fallbacks{0};
  std::atomic<uint64_t> cancelled{0};
  std::atomic<uint64_t> slow{0};  // over slow_execution_threshold_ms
  std::atomic<uint64_t> cache_hits{0};
  std::atomic<uint64_t> cache_misses{0};
  std::atomic<uint64_t> uncacheable{0};     // input had no stable key
  std::atomic<uint64_t> shared_flights{0};  // got a concurrent leader's result
  // Ran without the cache because caching did not pay for this step (see
  // Executor::UseCache).
  std::atomic<uint64_t> cache_bypassed{0};
  // Executions answered from the cache (L1, L2 or a shared flight) and the
  // latency they recorded, to tell a hit's latency from a miss's.
  std::atomic<uint64_t> hit_executions{0};
  std::atomic<uint64_t> hit_latency_ns{0};
  std::atomic<uint64_t> rejected{0};  // refused by an open circuit breaker
  std::atomic<int64_t> in_flight{0};

  struct Snapshot {
    std::string name;
    uint64_t executions, successes, failures, attempts, retries, errors,
        recovered, timeouts, fallbacks, cancelled, slow, cache_hits, rejected,
        cache_misses, uncacheable, shared_flights, cache_bypassed;
    int64_t in_flight;
    LatencyHistogram::Snapshot latency;
    void Merge(const Snapshot& other);
  };
  Snapshot Take() const;
  void Reset();
};

class StatsRegistry {
 public:
  StatsRegistry() = default;
  StatsRegistry(const StatsRegistry&) = delete;
  StatsRegistry& operator=(const StatsRegistry&) = delete;

  // Returns the stats of `step_name`, creating them on first use.
  StepStats* ForStep(absl::string_view step_name) ABSL_LOCKS_EXCLUDED(mu_);

  // Per-step snapshots in first-use order, and their sum.
  std::vector<StepStats::Snapshot> TakeAll() const ABSL_LOCKS_EXCLUDED(mu_);
  StepStats::Snapshot TakeTotal() const ABSL_LOCKS_EXCLUDED(mu_);
  void ResetAll() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, StepStats*> by_name_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<StepStats>> order_ ABSL_GUARDED_BY(mu_);
};

}  // namespace caudal

#endif  // CAUDAL_MONITOR_EXECUTION_STATS_H_
