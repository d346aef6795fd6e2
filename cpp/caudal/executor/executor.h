// Executor: the native half of caudal.ExecutorCore.
//
// The Python layer makes exactly one call into this class before each
// attempt of a step and one after it (DESIGN.md, "the one rule of the hot
// path"); everything that happens per attempt is decided here:
//   before: circuit-breaker admission (Begin / StartAttempt);
//   after:  breaker verdict, error-pattern learning, the retry decision and
//           its back-off delay (AttemptFailed), or latency into the step's
//           histogram and the final outcome (Succeed / Fail).
// Aggregation (stats dicts, recommendations) happens only when asked.
//
// An execution is tracked by an ExecutionRecord, created by Begin() and
// released by exactly one of Succeed(), Fail(), Reject() or Cancel(). The
// record pins the config that was current at Begin(): an execution in flight
// finishes under the config it started with, even if ApplyConfig() swaps it.
//
// Handles. Outside the core (in Python) an execution is its record's
// `handle`: an opaque 64-bit value from the executor's HandleTable
// (handle_table.h), never the record's address. Record(handle) gives the
// live record or null -- stale (the execution ended; the record may be
// serving another execution by now), another executor's, or garbage -- at
// the cost of a tag and a generation compare. Release retires the handle
// before the record goes back to the pool or the allocator.
//
// The types it trades in have headers of their own: ExecutionRecord and
// ExecutionOutcome (execution_record.h), AttemptError and FailureDecision
// (attempt.h), AdmitState and Admitted (admission.h), the clock (clock.h),
// and what the Python layer does next (next.h). Its definitions are split by
// concern: executor.cc (config, breakers, begin and end of an execution),
// admission.cc, executor_failure.cc, executor_cache.cc, executor_limits.cc,
// executor_memory.cc, executor_monitor.cc.
//
// Thread-safety: all methods are thread-safe. Per-attempt work touches only
// the record (owned by one caller), relaxed atomics and the breaker's
// lock-free closed path; locks are taken on errors and state changes.
#ifndef CAUDAL_EXECUTOR_EXECUTOR_H_
#define CAUDAL_EXECUTOR_EXECUTOR_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "caudal/base/mutex.h"
#include "caudal/cache/result_cache.h"
#include "caudal/cache/single_flight.h"
#include "caudal/concurrency/concurrency_gate.h"
#include "caudal/concurrency/key_limiter.h"
#include "caudal/config/optimization_config.h"
#include "caudal/executor/admission.h"
#include "caudal/executor/attempt.h"
#include "caudal/executor/clock.h"
#include "caudal/executor/execution_record.h"
#include "caudal/executor/handle_table.h"
#include "caudal/executor/step_spec.h"
#include "caudal/hash/key128.h"
#include "caudal/memory/memory_monitor.h"
#include "caudal/memory/object_pool.h"
#include "caudal/monitor/cpu_monitor.h"
#include "caudal/monitor/execution_stats.h"
#include "caudal/monitor/regression_detector.h"
#include "caudal/resilience/circuit_breaker.h"
#include "caudal/resilience/error_patterns.h"
#include "caudal/resilience/retry_policy.h"
#include "caudal/telemetry/event_bus.h"
#include "caudal/telemetry/span_recorder.h"

namespace caudal {

// What the memory read-out reports (executor_memory.cc).
struct MemorySnapshot {
  double usage_mb = 0.0;  // the last RSS reading
  PressureLevel level = PressureLevel::kNormal;
  double threshold_mb = 0.0;
  uint64_t readings = 0;
  uint64_t read_errors = 0;
  uint64_t pressure_changes = 0;  // level changes acted on
  ObjectPoolStats pool;
  // What is shrunk now, in the order it was shrunk ("object_pool: ...",
  // "result_cache: ..."); empty at the normal level.
  std::vector<std::string> shrunk;
};

struct BreakerTransitionRecord {
  std::string breaker;
  CircuitBreaker::Transition transition;
};

class Executor {
 public:
  // `config` must be valid (see OptimizationConfig::Validate).
  // `clock`: where the executor's time comes from (null: the monotonic
  // clock; clock.h).
  explicit Executor(OptimizationConfig config, uint64_t random_seed = 0x5eed,
                    std::shared_ptr<const ManualClock> clock = nullptr);
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  std::shared_ptr<const OptimizationConfig> config() const;
  // Validates and swaps the config atomically. On error nothing changes and
  // the status lists every problem (kInvalidArgument). Breakers whose
  // options changed start afresh; the error-pattern table is resized.
  // Waiters handed a slot by a raised limit are appended to `woken`.
  absl::Status ApplyConfig(const OptimizationConfig& config,
                           std::vector<Waiter>* woken = nullptr);
  static constexpr int kUnlimitedSlots = 1 << 30;
  uint64_t config_generation() const {
    return generation_.load(std::memory_order_acquire);
  }

  StepTable& steps() { return steps_; }
  const StepTable& steps() const { return steps_; }
  StatsRegistry& stats() { return stats_; }
  const StatsRegistry& stats() const { return stats_; }
  // The stats of a step name, for a new step-table entry to hold
  // (StatsRegistry::ForStep). With max_tracked_steps set, idle names over
  // the bound are reclaimed first (executor_monitor.cc).
  std::shared_ptr<StepStats> StatsFor(absl::string_view name);
  // The executor's event bus (telemetry/event_bus.h). The core publishes
  // config_changed, breaker_transition and, when subscribed, the step and
  // cache events; other components publish theirs (limit_changed, ...).
  EventBus& events() { return events_; }
  const EventBus& events() const { return events_; }
  // Spans of finished executions (telemetry/span_recorder.h): recorded when
  // an exporter is attached (SetTracing) and enable_optimized_telemetry is
  // on, sampled by telemetry_sampling_rate, failures and slow ones always.
  SpanRecorder& spans() { return spans_; }
  const SpanRecorder& spans() const { return spans_; }
  // Exporters attached (true) or none left (false).
  void SetTracing(bool on);
  // Spans are being recorded: exporters attached and telemetry enabled.
  bool tracing() const { return tracing_.load(std::memory_order_relaxed); }
  // Where a kept span's trace parent comes from (the bindings read the
  // caller's OpenTelemetry context); called on the thread that ends the
  // execution, only for spans that are kept. Null: no parent. Set it before
  // SetTracing(true); `ctx` must outlive the executor's use of it.
  using TraceParentSource = TraceParent (*)(void* ctx);
  void SetTraceParentSource(TraceParentSource source, void* ctx) {
    parent_ctx_.store(ctx, std::memory_order_relaxed);
    parent_source_.store(source, std::memory_order_release);
  }

  // Starts an execution and its first attempt. When the step's breaker is
  // open the record comes back with attempt == 0 and retry_after_ns set:
  // the step must not be called; end it with Reject(). `config` is the
  // config the execution runs under (default: the current one). Null only
  // when HandleTable::kMaxSlots executions are in flight already.
  ExecutionRecord* Begin(std::shared_ptr<StepEntry> step, int64_t now_ns,
                         const OptimizationConfig* config = nullptr);
  // The record of a live execution's handle; null for a handle whose
  // execution ended, another executor's, or any other value. Hot path:
  // inline, a few loads and compares.
  ExecutionRecord* Record(uint64_t handle) const {
    return handles_.Find(handle);
  }
  // The config in force: one atomic load (hot path). Valid for the
  // executor's lifetime.
  const OptimizationConfig* current_config() const {
    return current_.load(std::memory_order_acquire);
  }

  // ---- admission (admission.cc; see "Admission" above) ----
  // Runs the admission from where `state` stopped, up to the first stage that
  // must wait or to the execution's start. `make_waiter` makes the waiter
  // queued when one must wait (it is called at most once). What a verdict
  // hands back besides the record goes to `*handover`, emplaced only when
  // there is something. Not for a state at kDone (started or withdrawn).
  // With `take_hit`, a hit's value is handed to it under the cache's lock
  // instead of being copied into handover `hit` (the bindings take their
  // own reference to the Python object: no shared_ptr copy to count).
  Admitted Admit(AdmitState& state, int64_t now_ns,
                 absl::FunctionRef<Waiter()> make_waiter,
                 absl::optional<AdmitHandover>* handover,
                 const HitTaker* take_hit = nullptr);
  // Gives up an admission that did not start a record (cancelled while it
  // waited, or answered by the shared tier): leaves the queue `waiter` is in,
  // or passes on a permit already handed to it, and gives back what it held.
  Withdrawn Withdraw(AdmitState& state, const Waiter& waiter);
  // Whether admissions with a cache key ask a shared tier (set by the owner
  // of the tier, before executions start).
  void SetSharedTier(bool on) {
    shared_tier_.store(on, std::memory_order_relaxed);
  }
  // A single-flight follower was handed its leader's outcome: counts a shared
  // flight and, when the leader succeeded, a hit (latency 0).
  void RecordFollowed(StepEntry& step, bool leader_succeeded);
  // The one caching rule, for both tiers: a result may be stored when the
  // step itself succeeded (a fallback's result is never cached) and no
  // invalidation covering the step came since `since_epoch`. The shared
  // tier's writer asks (the bindings' _cache_storable); the in-process tier
  // follows the same rule: only a cache-leading execution's own success is
  // offered to CacheStore, whose Put refuses, under the cache's lock, a
  // result an invalidation covered since the record's cache_epoch.
  bool MayStore(const StepEntry& step, bool success, bool fell_back,
                uint64_t since_epoch) {
    return success && !fell_back && CacheStorable(step, since_epoch);
  }

  // ---- result cache (L1) ----
  // Whether results of this step are cached under `config`.
  static bool CacheEnabled(const StepEntry& step,
                           const OptimizationConfig& config);
  // Whether this execution goes through the cache (hot path). Like
  // CacheEnabled, except that a step cached by the config switch (not forced
  // with Step(cache=True)) whose caching does not pay skips it: one where
  // hit rate x the step's own latency is below kCacheLookupCostNs and the
  // step is cheaper than kAlwaysCacheNs. Such a step still takes one
  // execution in kCacheProbeEvery through the cache, so that the hit rate
  // keeps being measured; the decision is revisited every 256 lookups.
  static constexpr double kCacheLookupCostNs = 500;
  static constexpr double kAlwaysCacheNs = 50'000;
  static constexpr uint32_t kCacheProbeEvery = 256;
  static bool UseCache(StepEntry& step, const OptimizationConfig& config);
  // Looks `key` up, counting the step's hit or miss: on a hit, the cached
  // output is handed to `take` (under the cache's lock) and true returned.
  // Removed (expired) values go to `dropped`, to be destroyed by the caller.
  bool CacheLookup(StepEntry& step, const Key128& key, int64_t now_ns,
                   std::vector<CachedValue>* dropped, const HitTaker& take);
  // As above, with the output copied out (nullopt: a miss).
  absl::optional<CachedValue> CacheLookup(StepEntry& step, const Key128& key,
                                          int64_t now_ns,
                                          std::vector<CachedValue>* dropped);
  // A hit ends an execution without a record: counts it, records latency.
  void RecordCacheHit(StepEntry& step, int64_t latency_ns);
  // The step's input had no stable key: counted with its reason.
  void RecordUncacheable(StepEntry& step, absl::string_view reason);
  // Stores a successful execution's output under the record's key (call
  // before Succeed()). TTL: the step's cache_ttl_s, else cache_ttl_seconds.
  // Not stored if an invalidation covering the step (a tag of it, its
  // group, a clear) came after the execution began.
  void CacheStore(const ExecutionRecord& r, CachedValue value, size_t bytes,
                  int64_t now_ns, std::vector<CachedValue>* dropped);
  // The same without a record (a value promoted from the shared tier):
  // `since_epoch` is CacheEpoch() read before that value was fetched.
  void CachePut(const StepEntry& step, const OptimizationConfig& config,
                const Key128& key, CachedValue value, size_t bytes,
                int64_t now_ns, std::vector<CachedValue>* dropped,
                uint64_t since_epoch = kAnyEpoch);
  // The invalidation epoch now (one relaxed load; Begin() records it).
  uint64_t CacheEpoch() const { return cache_.Epoch(); }
  // Whether a result of `step` from an execution that began at
  // `since_epoch` may still be stored (no covering invalidation since).
  bool CacheStorable(const StepEntry& step, uint64_t since_epoch) {
    NoteCacheName(step);
    return cache_.Storable(since_epoch, step.spec.cache_group, step.spec.tags);
  }
  // The TTL in seconds a step's results are cached for under `config`.
  static double CacheTtlSeconds(const StepEntry& step,
                                const OptimizationConfig& config);
  size_t InvalidateTag(absl::string_view tag,
                       std::vector<CachedValue>* dropped);
  size_t InvalidateGroup(uint64_t group, std::vector<CachedValue>* dropped);
  // Every cached result of the steps whose name starts with `prefix`; their
  // executions in flight store nothing afterwards, also a step's that has
  // not stored a result yet. Returns how many entries went; InvalidArgument
  // for an empty prefix (ClearCache drops everything).
  absl::StatusOr<size_t> InvalidatePrefix(absl::string_view prefix,
                                          std::vector<CachedValue>* dropped);
  void ClearCache(std::vector<CachedValue>* dropped);
  ResultCacheStats CacheStats() const { return cache_.GetStats(); }
  std::vector<std::pair<std::string, uint64_t>> UncacheableReasons() const;

  // ---- single flight: one execution per key among concurrent misses ----
  // True: the caller leads the flight for `key` (it executes; no waiter is
  // kept). False: `make_waiter()`'s waiter was queued behind the leader.
  template <typename MakeWaiter>
  bool JoinFlight(const Key128& key, MakeWaiter make_waiter);
  // Ends the flight; returns the followers to wake, in arrival order.
  std::vector<Waiter> EndFlight(const Key128& key) {
    return flights_.Finish(key);
  }
  // A cancelled follower leaves; false if it was not queued (already woken).
  bool LeaveFlight(const Key128& key, const Waiter& w) {
    return flights_.Leave(key, w);
  }

  // ---- max_concurrent_executions: a FIFO limit on executions in flight ----
  // True: a slot is held (fast path: one CAS). False: `make_waiter()`'s waiter
  // was queued; a later release hands the slot to it (the waiter comes back
  // in ExecutionOutcome::wake, from Cancel(), ReleaseSlot() or ApplyConfig).
  // Unlimited (always true) when max_concurrent_executions is None.
  template <typename MakeWaiter>
  bool AcquireSlot(const OptimizationConfig& config, MakeWaiter make_waiter);
  // Gives back a slot held outside a record (a waiter that was handed one
  // and then cancelled); returns the next waiter to wake, or null.
  Waiter ReleaseSlot();
  // A waiting caller gave up: true if it left the queue; false if it had
  // already been handed a slot, which it must give back with ReleaseSlot().
  bool CancelWait(const Waiter& w) { return gate_.Cancel(w); }
  int slots_in_flight() const { return gate_.in_flight(); }
  int slots_waiting() const { return gate_.waiting(); }
  GateCounters slot_counters() const { return gate_.counters(); }

  // ---- per-key limits (a fixed max_concurrency, or adaptive) ----
  // The limiter that applies to the step under `config` (null: none).
  KeyLimiter* LimiterFor(StepEntry& step, const OptimizationConfig& config);
  // Registers a step's limit key: a max_concurrency fixes the key's limit.
  // kInvalidArgument if another step fixed the same key to another value.
  // Callers handed permits by a raised limit go to `woken`.
  absl::Status RegisterLimitKey(const StepSpec& spec,
                                std::vector<Waiter>* woken);
  // True: `limiter`'s permit is held (fast path: one CAS). False:
  // `make_waiter()`'s waiter was queued; a release hands it the permit.
  template <typename MakeWaiter>
  static bool AcquireKey(KeyLimiter* limiter, MakeWaiter make_waiter);
  // Gives back a key permit held outside a record; the next waiter, or null.
  static Waiter ReleaseKey(KeyLimiter* limiter) {
    std::optional<LimiterWaiter> next = limiter->Release();
    return next ? *next : Waiter();
  }
  // Gives back the record's permits early (before a fallback runs).
  ReleasedPermits ReleasePermits(ExecutionRecord* record);
  std::vector<KeyLimiter*> Limiters() const { return limiters_.All(); }
  static KeyLimiter::Mode LimitModeFor(int fixed_limit,
                                       const OptimizationConfig& config);
  static BaselineGradientLimit::Options AdaptiveOptions(
      const OptimizationConfig& config);

  // Shortest back-off after an overload signal that states no wait (doubled
  // per retry, capped by the policy's max backoff; a policy without delays,
  // max_backoff 0, keeps retrying at once).
  static constexpr double kOverloadBaseS = 0.5;

  // The attempt failed, or (record->rejected: the error is then ignored)
  // the open breaker refused it. On kRetry, wait delay_s and call
  // StartAttempt(); on kFallback run the step's fallback and end with
  // Fail(fell_back); otherwise end the execution with Fail() (Reject() when
  // no attempt was ever made).
  //
  // Waiting for an open breaker (circuit_breaker_wait_for_probe): an
  // execution the breaker refuses waits until the breaker admits a probe
  // (record->retry_after_ns, plus jitter) and asks again. Each refusal by
  // an open breaker spends one unit of the step's retry budget (attempts
  // made + refusals <= max_attempts), and a wait longer than the policy's
  // max backoff is not made; refusals while a half-open probe is out are
  // short polls for its verdict, which spend no budget but add up to at
  // most the max backoff. So a hard outage longer than the budget ends the
  // execution (kBreakerOpen), never a hang. A single-attempt step never
  // waits.
  FailureDecision AttemptFailed(ExecutionRecord* record, int64_t now_ns,
                                const AttemptError& error);

  // Starts the next attempt after a retry's back-off. Returns false when the
  // breaker refuses it (record->rejected is set): report that through
  // AttemptFailed, which decides whether to wait.
  bool StartAttempt(ExecutionRecord* record, int64_t now_ns);

  // Ends the execution; each releases the record.
  ExecutionOutcome Succeed(ExecutionRecord* record, int64_t now_ns);
  ExecutionOutcome Fail(ExecutionRecord* record, int64_t now_ns,
                        bool fell_back);
  ExecutionOutcome Reject(ExecutionRecord* record, int64_t now_ns);
  // Cancelled (asyncio.CancelledError): not a failure, not retried; a
  // breaker slot (half-open probe) is given back.
  // latency_ns and attempts are not filled in; wake, flight and step are.
  ExecutionOutcome Cancel(ExecutionRecord* record, int64_t now_ns);

  // The executor's time (clock.h): the manual clock it was made with, else
  // the monotonic clock. Callers pass it to the calls that take `now_ns`.
  int64_t NowNs() const {
    const ManualClock* c = manual_clock_;
    return ABSL_PREDICT_FALSE(c != nullptr) ? c->now_ns() : MonotonicNowNs();
  }
  const std::shared_ptr<const ManualClock>& clock() const { return clock_; }

  int64_t in_flight() const {
    return in_flight_.load(std::memory_order_relaxed);
  }

  // ---- memory: record pool, memory pressure (executor_memory.cc) ----
  // Housekeeping, off the hot path: trims the record pool and, with
  // enable_memory_optimization, reads RSS and acts on pressure-level
  // changes. Begin() and CacheLookup() call it when MaintenanceDue (one
  // relaxed load); at most one caller per interval does the work.
  bool MaintenanceDue(int64_t now_ns) const {
    return now_ns >= next_maintain_ns_.load(std::memory_order_relaxed);
  }
  void Maintain(int64_t now_ns);
  // Reads RSS now (acting on a level change, as Maintain would) and
  // reports the pool, the level and what is shrunk.
  MemorySnapshot MemoryStats(int64_t now_ns);
  // The RSS source and reading interval (tests inject a source).
  MemoryMonitor& memory_monitor() { return memory_; }

  // ---- performance monitor (executor_monitor.cc; docs/monitoring.md) ----
  // With enable_performance_monitoring, Maintain samples the process's CPU
  // time and takes the regression detector's histogram checkpoints; with
  // enable_automatic_optimization it also raises "analysis due" every
  // optimization_analysis_interval_seconds, for the bindings to run the
  // (Python) analysis on the caller's event loop.
  CpuMonitor& cpu_monitor() { return cpu_; }
  // Samples CPU time now and reports the figures over the recent window.
  CpuSnapshot CpuStats(int64_t now_ns);
  std::vector<StepTrend> Trends() const { return regressions_.Trends(); }
  uint64_t trend_checkpoints() const { return regressions_.checkpoints(); }
  static RegressionOptions RegressionOptionsFor(const OptimizationConfig& c);
  // True once per due analysis: the caller that gets true runs it. One
  // relaxed load when none is due.
  bool TakeAnalysisDue() {
    return analysis_due_.load(std::memory_order_relaxed) &&
           analysis_due_.exchange(false, std::memory_order_relaxed);
  }

  // Read-outs.
  std::vector<BreakerRegistry::NamedSnapshot> BreakerSnapshots() const;
  std::vector<BreakerTransitionRecord> RecentTransitions() const;
  ErrorTableStats ErrorStats() const { return errors_.Stats(); }
  std::vector<PatternSnapshot> ErrorPatterns(size_t max) const {
    return errors_.Snapshot(max);
  }
  uint64_t fail_fast_count() const {
    return fail_fast_.load(std::memory_order_relaxed);
  }

  static constexpr size_t kTransitionLog = 64;

 private:
  ExecutionOutcome Finish(ExecutionRecord* record, int64_t now_ns,
                          SpanOutcome outcome);
  // After an overload drop cut the limit below its holders: stretch the
  // retry's delay by up to the oversubscription.
  void SpreadOverLimit(ExecutionRecord* record, FailureDecision* decision);
  // The open breaker refused the record's admission: wait or end.
  FailureDecision BreakerWait(ExecutionRecord* record);
  FailureDecision Decide(ExecutionRecord* record, int64_t now_ns,
                         const AttemptError& error);
  void Release(ExecutionRecord* record, ExecutionOutcome& out);
  // A final verdict for a step with a fallback: kFallback, permits given back.
  void RouteToFallback(ExecutionRecord* record, FailureDecision* decision);
  // The execution's span, when tracing is on and the sampler keeps it.
  // (Inline: an execution the sampler skips costs a load and a compare,
  // plus a per-thread count below a rate of 1.)
  void Trace(const StepEntry& step, const ExecutionRecord* record,
             int64_t start_ns, int64_t end_ns, int attempts,
             SpanOutcome outcome, bool slow) {
    bool sampled = false;
    if (spans_.Sample(IsFailure(outcome) || slow, &sampled))
      RecordSpan(step, record, start_ns, end_ns, attempts, outcome, slow,
                 sampled);
  }
  void RecordSpan(const StepEntry& step, const ExecutionRecord* record,
                  int64_t start_ns, int64_t end_ns, int attempts,
                  SpanOutcome outcome, bool slow, bool sampled);
  void ConfigureSpans(const OptimizationConfig& config);
  // One attempt's sample for the record's adaptive limiter.
  std::vector<Waiter> SampleLimit(ExecutionRecord* record, int64_t now_ns,
                                  bool drop);
  CircuitBreaker* BreakerFor(StepEntry& entry, const OptimizationConfig& cfg);
  // Breaker admission for the attempt about to start; false = rejected.
  bool Admit(ExecutionRecord* r, int64_t now_ns);
  // Records a breaker transition (most verdicts make none: checked inline).
  void Note(const StepSpec& spec,
            const absl::optional<CircuitBreaker::Transition>& t) {
    if (ABSL_PREDICT_FALSE(t.has_value())) NoteTransition(spec, *t);
  }
  void NoteTransition(const StepSpec& spec,
                      const CircuitBreaker::Transition& t);
  static CircuitBreaker::Options BreakerOptions(const OptimizationConfig& c);
  ExecutionRecord* NewRecord(const OptimizationConfig& cfg);
  void FreeRecord(ExecutionRecord* r);
  // Pool bounds, monitor threshold and cache capacity for `cfg` at the
  // current pressure level (constructor, ApplyConfig, level changes).
  void ApplyMemoryConfig(const OptimizationConfig& cfg, int64_t now_ns,
                         std::vector<CachedValue>* dropped);
  // Brings the applied shrink level in line with the monitor's level.
  void SyncPressure(int64_t now_ns);
  void PublishLimitChange(const LimitChange& change);
  // Maintain's monitor part: CPU sample, trend checkpoint, analysis due.
  void MaintainMonitor(const OptimizationConfig& cfg, int64_t now_ns);
  // A step event, if subscribed (one relaxed load otherwise).
  void PublishStep(EventType type, const StepEntry& step, int64_t now_ns,
                   double value, double value2, absl::string_view detail);

  // The manual clock, if any (fixed at construction; NowNs).
  const std::shared_ptr<const ManualClock> clock_;
  const ManualClock* const manual_clock_;
  mutable Mutex config_mu_;
  // Every config ever applied (the last one is in force) (a few hundred bytes
  // each), so that records and hot-path readers can use raw pointers without
  // reference counting.
  std::vector<std::shared_ptr<const OptimizationConfig>> retained_
      ABSL_GUARDED_BY(config_mu_);
  std::atomic<const OptimizationConfig*> current_{nullptr};
  std::atomic<uint64_t> generation_{1};
  std::atomic<int64_t> in_flight_{0};
  StatsRegistry stats_;
  StepTable steps_;
  EventBus events_;
  SpanRecorder spans_;
  // Exporters attached and enable_optimized_telemetry: one relaxed load per
  // execution when off.
  std::atomic<bool> tracing_{false};
  std::atomic<bool> exporters_{false};
  std::atomic<TraceParentSource> parent_source_{nullptr};
  std::atomic<void*> parent_ctx_{nullptr};

  // Breakers live as long as the executor (entries cache raw pointers); a
  // config change that alters breaker options retires the registry and
  // starts a new one.
  mutable Mutex breakers_mu_;
  std::vector<std::unique_ptr<BreakerRegistry>> registries_
      ABSL_GUARDED_BY(breakers_mu_);
  std::atomic<BreakerRegistry*> registry_{nullptr};
  std::atomic<uint64_t> breaker_gen_{1};
  mutable Mutex transitions_mu_;
  std::deque<BreakerTransitionRecord> transitions_
      ABSL_GUARDED_BY(transitions_mu_);

  ErrorPatternTable errors_;
  RetryRandom random_;
  std::atomic<uint64_t> fail_fast_{0};

  // Memory (executor_memory.cc).
  // The handles of records: each record holds a slot for its life, and is
  // published under a new handle by Begin, retired by Release. Declared
  // before the pool: records the pool frees give their slots back.
  HandleTable<ExecutionRecord> handles_;
  ObjectPool<ExecutionRecord> records_;
  MemoryMonitor memory_;
  std::atomic<int64_t> next_maintain_ns_{0};
  mutable Mutex memory_mu_;  // serialises pressure actions and resizes
  PressureLevel applied_level_ ABSL_GUARDED_BY(memory_mu_) =
      PressureLevel::kNormal;
  std::vector<std::string> shrunk_ ABSL_GUARDED_BY(memory_mu_);
  uint64_t pressure_changes_ ABSL_GUARDED_BY(memory_mu_) = 0;

  // Performance monitor (executor_monitor.cc).
  CpuMonitor cpu_;
  RegressionDetector regressions_;
  std::atomic<int64_t> next_analysis_ns_{0};  // 0: not scheduled yet
  std::atomic<bool> analysis_due_{false};

  ConcurrencyGate<Waiter> gate_{0};
  // Its limit changes are published as limit_changed events (events_ is
  // declared above, so it outlives the registry).
  LimiterRegistry limiters_{
      [this](const LimitChange& c) { PublishLimitChange(c); }};
  mutable Mutex limit_keys_mu_;
  // Fixed limits asked for by steps, by key (0 = none asked).
  absl::flat_hash_map<std::string, int> fixed_limits_
      ABSL_GUARDED_BY(limit_keys_mu_);
  ResultCache<CachedValue> cache_;
  // The names behind cache groups, for InvalidatePrefix: a step's is
  // recorded when it first stores a result (or asks whether it may), one
  // entry per distinct name. With them, the epoch each invalidated prefix
  // took: a step recorded later gets its group covered by it (emptied by
  // ClearCache, whose epoch is above them all).
  void NoteCacheName(const StepEntry& step) {
    if (!step.cache_named.load(std::memory_order_acquire)) {
      RecordCacheName(step);
    }
  }
  void RecordCacheName(const StepEntry& step);
  Mutex cache_names_mu_;
  std::map<std::string, uint64_t, std::less<>> cache_names_
      ABSL_GUARDED_BY(cache_names_mu_);
  absl::flat_hash_map<std::string, uint64_t> prefix_epochs_
      ABSL_GUARDED_BY(cache_names_mu_);
  SingleFlight<Waiter> flights_;
  std::atomic<bool> shared_tier_{false};
  mutable Mutex uncacheable_mu_;
  absl::flat_hash_map<std::string, uint64_t> uncacheable_
      ABSL_GUARDED_BY(uncacheable_mu_);
};

template <typename MakeWaiter>
bool Executor::AcquireSlot(const OptimizationConfig& config,
                           MakeWaiter make_waiter) {
  if (!config.max_concurrent_executions.has_value()) return true;
  if (gate_.TryAcquire()) return true;
  return gate_.AcquireOrEnqueue(make_waiter());
}

template <typename MakeWaiter>
bool Executor::AcquireKey(KeyLimiter* limiter, MakeWaiter make_waiter) {
  if (limiter->TryAcquire()) return true;
  return limiter->AcquireOrEnqueue(make_waiter());
}

template <typename MakeWaiter>
bool Executor::JoinFlight(const Key128& key, MakeWaiter make_waiter) {
  // The common case, no flight yet, costs one lock: lead with no waiter.
  if (flights_.JoinOrLead(key, nullptr)) return true;
  // Queued as a follower with an empty waiter: swap in a real one. If the
  // leader finished in between, the second call makes us the leader.
  flights_.Leave(key, nullptr);
  return flights_.JoinOrLead(key, make_waiter());
}

}  // namespace caudal

#endif  // CAUDAL_EXECUTOR_EXECUTOR_H_
