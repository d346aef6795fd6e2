// Execution statistics: per-step counters and latency histograms, kept
// natively so that the hot path records a finished execution with a handful
// of relaxed atomic adds and no Python objects.
//
// StatsRegistry maps a step name to a StepStats, shared: the registry holds
// one reference and each user (a step-table entry, which an execution in
// flight holds in turn) another, so callers keep a raw pointer next to their
// reference and never look a name up per execution.
//
// Memory. A name's StepStats is about 300 bytes until its histogram grows
// (latency_histogram.h: more than kInline executions). Names are reclaimed
// only when asked (Reclaim, under the executor's max_tracked_steps), and
// only idle ones: a name the registry alone holds, so nothing can record
// into it any more. A reclaimed name's counters and latencies are added to
// one aggregate row, kReclaimedName, so that the totals stay exact: the sum
// of TakeAll() and TakeReclaimed() is TakeTotal(). A reclaimed name that is
// used again starts a fresh row (its earlier figures stay in the aggregate).
//
// Thread-safety: StepStats counters are atomics; StatsRegistry lookups take a
// mutex (first use of a name per step-table entry, in practice).
#ifndef CAUDAL_MONITOR_EXECUTION_STATS_H_
#define CAUDAL_MONITOR_EXECUTION_STATS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "caudal/base/mutex.h"
#include "caudal/monitor/latency_histogram.h"

namespace caudal {

struct StepStats {
  explicit StepStats(std::string step_name) : name(std::move(step_name)) {}

  const std::string name;
  // End-to-end latency of each execution (all attempts and back-off), ns.
  LatencyHistogram latency;
  // Finished executions, and successful ones, that were not answered from
  // the cache: Take() adds hit_executions to both (a hit is an execution
  // and a success), so a hit costs two atomic increments fewer.
  std::atomic<uint64_t> executions{0};
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
  // latency they recorded, to tell a hit's latency from a miss's. Counted
  // in neither `executions` nor `successes` above.
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
  // The name of the row that sums every reclaimed name.
  static constexpr absl::string_view kReclaimedName = "(reclaimed)";

  StatsRegistry() = default;
  StatsRegistry(const StatsRegistry&) = delete;
  StatsRegistry& operator=(const StatsRegistry&) = delete;

  // Returns the stats of `step_name`, creating them on first use. The name
  // is not reclaimed while the returned reference (or a copy) lives.
  std::shared_ptr<StepStats> ForStep(absl::string_view step_name)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Per-step snapshots of the names tracked, in first-use order.
  std::vector<StepStats::Snapshot> TakeAll() const ABSL_LOCKS_EXCLUDED(mu_);
  // The snapshot of one tracked name (nullopt: not tracked). O(1): a read-out
  // of every name one by one stays linear in names.
  absl::optional<StepStats::Snapshot> Take(absl::string_view step_name) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // The sum of the names reclaimed so far, named kReclaimedName; nullopt
  // when none was.
  absl::optional<StepStats::Snapshot> TakeReclaimed() const
      ABSL_LOCKS_EXCLUDED(mu_);
  // Every name's figures, tracked and reclaimed, summed (named "*").
  StepStats::Snapshot TakeTotal() const ABSL_LOCKS_EXCLUDED(mu_);
  // Zeroes every tracked name and the reclaimed aggregate.
  void ResetAll() ABSL_LOCKS_EXCLUDED(mu_);

  // When more than `max_tracked` names are tracked, folds idle ones (held by
  // the registry alone), oldest first, into the reclaimed aggregate until
  // max_tracked - max_tracked / 8 are left or none is idle, and returns
  // their names. A pass that could not get down to max_tracked is not
  // repeated before max_tracked / 8 more names came (so a registry full of
  // busy names costs O(1) amortised per new name). Off the hot path: one
  // pass is O(names tracked).
  std::vector<std::string> Reclaim(size_t max_tracked) ABSL_LOCKS_EXCLUDED(mu_);
  size_t tracked() const ABSL_LOCKS_EXCLUDED(mu_);
  // Names reclaimed since the registry was made.
  uint64_t reclaimed_names() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable Mutex mu_;
  // The registry's references, hashed by their name (a set of 16-byte
  // slots, looked up by name), and the names in first-use order.
  struct ByName {
    using is_transparent = void;
    static absl::string_view Name(absl::string_view n) { return n; }
    static absl::string_view Name(const std::shared_ptr<StepStats>& s) {
      return s->name;
    }
    template <typename T>
    size_t operator()(const T& x) const {
      return absl::Hash<absl::string_view>()(Name(x));
    }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return Name(a) == Name(b);
    }
  };
  absl::flat_hash_set<std::shared_ptr<StepStats>, ByName, ByName> by_name_
      ABSL_GUARDED_BY(mu_);
  std::vector<StepStats*> order_ ABSL_GUARDED_BY(mu_);
  StepStats::Snapshot reclaimed_ ABSL_GUARDED_BY(mu_) = {};
  uint64_t reclaimed_names_ ABSL_GUARDED_BY(mu_) = 0;
  // A pass that left more than the bound: the size the next one waits for.
  size_t next_pass_at_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace caudal

#endif  // CAUDAL_MONITOR_EXECUTION_STATS_H_
