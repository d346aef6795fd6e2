// StepSpec: what the executor knows about one step, decided once per step
// object (flujo's "step optimization": the analysis is cached, never
// repeated per execution), and StepTable, the per-executor cache of it.
//
// The bindings analyse a Python callable (coroutine function or not, which
// parameters it takes, whether it is a flujo-style agent with `run`) and
// describe the result with the enums below; the core never sees Python.
//
// Thread-safety: a StepSpec is immutable once published. StepTable is
// thread-safe; entries are shared_ptr so an execution in flight keeps its
// entry alive even if the table evicts it or is cleared meanwhile.
//
// StepTable design: a bounded map from a caller-chosen key to an entry,
// with least-recently-used eviction of single entries. Recency is kept by
// Find and Insert, under the table's mutex they already take: a caller that
// caches an entry outside the table (the bindings' per-thread last entry)
// skips the table, and so the bookkeeping, on its repeats. Such a caller
// keys its cache by generation(), which changes whenever an entry may have
// been dropped (an eviction, a replacement, Clear); inserting into a table
// with room drops nothing and leaves it as it is.
#ifndef CAUDAL_EXECUTOR_STEP_SPEC_H_
#define CAUDAL_EXECUTOR_STEP_SPEC_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/types/optional.h"
#include "caudal/base/mutex.h"
#include "caudal/concurrency/key_limiter.h"
#include "caudal/monitor/execution_stats.h"
#include "caudal/resilience/circuit_breaker.h"
#include "caudal/resilience/retry_policy.h"

namespace caudal {

// How the step's callable produces its result.
enum class StepKind : uint8_t {
  kAsync,  // calling it returns an awaitable
  kSync,   // plain function: runs off the event loop, in a worker thread
};

// Which arguments the callable takes.
enum class CallShape : uint8_t {
  kNoArgs,       // fn()
  kData,         // fn(data)
  kDataContext,  // fn(data, context)
  kRunKwargs,    // agent.run(data, context=..., resources=...) as accepted
};

// Tri-state per-step switch: follow the executor's config, or force.
enum class StepSwitch : int8_t { kDefault = -1, kOff = 0, kOn = 1 };

struct StepSpec {
  std::string name;
  StepKind kind = StepKind::kAsync;
  CallShape shape = CallShape::kData;
  bool pass_context_kw = false;    // kRunKwargs: run() accepts context=
  bool pass_resources_kw = false;  // kRunKwargs: run() accepts resources=
  // Attempts and back-off. A plain `max_retries=N` is a fixed policy with no
  // delay and N + 1 attempts (flujo's meaning).
  RetryPolicy retry = ImmediateRetries(0);
  int64_t timeout_ns = 0;  // per attempt; 0 = no timeout
  StepSwitch cache = StepSwitch::kDefault;
  double cache_ttl_s = -1.0;  // < 0: the config's cache_ttl_seconds
  std::vector<std::string> tags;
  // Result cache: the group (for invalidate_prefix) is a stable hash of the
  // step's name; concurrent identical misses share one execution unless
  // single_flight is off.
  uint64_t cache_group = 0;
  bool single_flight = true;
  // Circuit breaker: shared by every step naming the same key; empty = the
  // step's name. use_breaker = false opts the step out.
  std::string breaker_key;
  bool use_breaker = true;
  // Concurrency limit key (a backend): shared by every step naming the same
  // key; empty = the step's name. max_concurrency > 0 fixes the key's
  // limit; 0 leaves it to the config (adaptive or none).
  std::string limit_key;
  int max_concurrency = 0;
  // The step has a fallback step: a final failure, or a refusal by the open
  // breaker, runs it instead (the core routes there: FailureVerdict::kFallback,
  // AdmitVerdict::kFallback).
  bool has_fallback = false;

  // Its settings as the recommendation rules read them.
  struct Settings;
  Settings settings() const;

  static RetryPolicy ImmediateRetries(int max_retries) {
    RetryPolicy p;
    p.kind = RetryPolicy::kFixed;
    p.max_attempts = max_retries + 1;
    p.base_delay_s = 0.0;
    p.max_backoff_s = 0.0;
    return p;
  }
};

// A step's settings as the recommendation rules read them (the "settings"
// of a step's stats): unset where the step follows the executor's config.
struct StepSpec::Settings {
  absl::optional<double> timeout_s;  // nullopt: no timeout
  StepSwitch cache = StepSwitch::kDefault;
  int max_retries = 0;
  // The breaker it reports to (its own name, or a shared key); nullopt:
  // none (the step opted out).
  absl::optional<std::string> breaker;
};

// One row of an executor's step table: the spec plus this executor's
// per-step state. The bindings derive from it to hold the Python objects.
struct StepEntry : std::enable_shared_from_this<StepEntry> {
  virtual ~StepEntry() = default;
  StepSpec spec;
  // The name's stats (Executor::StatsFor): `stats` is what the hot path
  // reads, `stats_owner` keeps it from being reclaimed while the entry lives.
  StepStats* stats = nullptr;
  std::shared_ptr<StepStats> stats_owner;
  // A prototype entry (the bindings' analysis templates) points at the
  // name's stats without keeping them from being reclaimed.
  std::weak_ptr<StepStats> stats_weak;
  // The step's breaker, cached; valid while breaker_gen matches the
  // executor's breaker generation (a config change re-creates breakers).
  std::atomic<CircuitBreaker*> breaker{nullptr};
  std::atomic<uint64_t> breaker_gen{0};
  // The step's concurrency limiter (null: none applies), cached; valid while
  // limiter_gen matches the executor's config generation.
  std::atomic<KeyLimiter*> limiter{nullptr};
  std::atomic<uint64_t> limiter_gen{0};
  // Cache admission (Executor::UseCache): whether caching this step pays,
  // reassessed every 256 lookups from the lookups since the last time.
  std::atomic<bool> cache_bypass{false};
  std::atomic<uint32_t> cache_probe{0};
  std::atomic<uint64_t> admission_hits{0};
  std::atomic<uint64_t> admission_lookups{0};
  // The executor recorded the step's name for InvalidatePrefix.
  mutable std::atomic<bool> cache_named{false};
  const std::string& limit_key() const {
    return spec.limit_key.empty() ? spec.name : spec.limit_key;
  }
};

// Identity-keyed cache of StepEntry, least recently used evicted first.
// The key is chosen by the caller (the bindings use the step object's
// address and keep the object alive in the entry, so an address is never
// reused while its entry exists).
class StepTable {
 public:
  static constexpr size_t kDefaultCapacity = 4096;
  static constexpr size_t kMaxCapacity = 65536;
  // `capacity` >= 1 (0 is taken as 1); it grows up to `max_capacity` (not
  // below `capacity`) as Regained() says evicted steps keep coming back.
  explicit StepTable(size_t capacity = kDefaultCapacity,
                     size_t max_capacity = kMaxCapacity)
      : capacity_(capacity == 0 ? 1 : capacity),
        max_capacity_(std::max(capacity == 0 ? 1 : capacity, max_capacity)) {}

  // The entry under `key` (null: none), made the most recently used.
  std::shared_ptr<StepEntry> Find(uint64_t key) ABSL_LOCKS_EXCLUDED(mu_);
  // Inserts (or replaces) an entry, as the most recently used. When the
  // table is full, the least recently used entry is evicted (one entry per
  // insert). Returns the entry dropped (the one replaced or evicted; null:
  // none), for the caller to destroy outside the lock.
  std::shared_ptr<StepEntry> Insert(uint64_t key,
                                    std::shared_ptr<StepEntry> entry)
      ABSL_LOCKS_EXCLUDED(mu_);
  // A miss on a full table that would evict an entry the caller can turn
  // into the one it needs (same analysis, held by nobody else): when `key`
  // is absent, the table is full and `reusable` accepts the least recently
  // used entry, `refit` is called on it (under the table's lock: it must
  // not call back into the table or run code that might) and the entry
  // moves to `key` as the most recently used: the insert and the eviction
  // in one, without destroying one entry and making another. Counts as an
  // analysis and an eviction, and changes the generation. Returns the
  // entry (null: nothing done; insert as usual). Whether anybody else
  // holds the entry is the caller's to know: a shared_ptr's use count is
  // no synchronisation, so every holder must drop its reference under a
  // lock the caller also holds here (the bindings' GIL).
  std::shared_ptr<StepEntry> Refit(
      uint64_t key,
      absl::FunctionRef<bool(const std::shared_ptr<StepEntry>&)> reusable,
      absl::FunctionRef<void(StepEntry&)> refit) ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<std::shared_ptr<StepEntry>> Clear() ABSL_LOCKS_EXCLUDED(mu_);
  // A step whose entry this table evicted was met again (the caller knows:
  // the bindings keep a caudal.Step's evicted entry to take it back). When
  // that happened for an eighth of the capacity since it last changed, the
  // working set is larger than the table and every pass through it would
  // evict what the next pass needs (a pipeline larger than the table, run
  // again): the capacity doubles, up to the maximum. It never shrinks: the
  // steps it holds are the ones the caller met last.
  void Regained() ABSL_LOCKS_EXCLUDED(mu_);
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t capacity() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t max_capacity() const { return max_capacity_; }
  // Changes whenever an entry may have been dropped (an eviction, a
  // replacement, Clear), and is unique across all tables of the process: a
  // caller may cache a raw entry pointer for as long as (table, generation)
  // stays the same.
  uint64_t generation() const {
    return generation_.load(std::memory_order_acquire);
  }
  uint64_t analyses() const ABSL_LOCKS_EXCLUDED(mu_);   // inserts ever made
  uint64_t evictions() const ABSL_LOCKS_EXCLUDED(mu_);  // entries evicted

  // What the read-outs say about each step name, kept across Clear (they
  // describe every step the executor met): the settings it was last
  // analysed with, and why it has no cache identity, if so.
  void Describe(const StepSpec& spec) ABSL_LOCKS_EXCLUDED(mu_);
  absl::optional<StepSpec::Settings> SettingsOf(const std::string& name) const
      ABSL_LOCKS_EXCLUDED(mu_);
  void MarkUncacheable(const std::string& name, std::string why)
      ABSL_LOCKS_EXCLUDED(mu_);
  // (name, why) of each step without a cache identity, by name.
  std::vector<std::pair<std::string, std::string>> UncacheableSteps() const
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Slot {
    uint64_t key;
    std::shared_ptr<StepEntry> entry;
  };
  using Recency = std::list<Slot>;  // most recently used first

  mutable Mutex mu_;
  size_t capacity_ ABSL_GUARDED_BY(mu_);
  const size_t max_capacity_;
  size_t regained_ ABSL_GUARDED_BY(mu_) = 0;  // since capacity_ last changed
  Recency recency_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Recency::iterator> index_ ABSL_GUARDED_BY(mu_);
  uint64_t analyses_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t evictions_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, StepSpec::Settings> settings_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> uncacheable_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> generation_{NextGeneration()};
  static uint64_t NextGeneration();
};

}  // namespace caudal

#endif  // CAUDAL_EXECUTOR_STEP_SPEC_H_
