// ExecutionRecord: one execution in flight, as the core tracks it (created
// by Executor::Begin, released by Succeed/Fail/Reject/Cancel), and what an
// ended execution hands back (ExecutionOutcome, ReleasedPermits).
//
// Thread-safety: a record is owned by the one caller driving its execution.
#ifndef CAUDAL_EXECUTOR_EXECUTION_RECORD_H_
#define CAUDAL_EXECUTOR_EXECUTION_RECORD_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/functional/function_ref.h"
#include "caudal/concurrency/key_limiter.h"
#include "caudal/config/optimization_config.h"
#include "caudal/executor/handle_table.h"
#include "caudal/executor/step_spec.h"
#include "caudal/hash/key128.h"
#include "caudal/resilience/circuit_breaker.h"
#include "caudal/telemetry/span_recorder.h"

namespace caudal {

// A cached output, opaque to the core: the bindings store a Python object
// with a deleter that takes the GIL. Copying is a refcount increment.
using CachedValue = std::shared_ptr<const void>;
// Given a cache hit's value while the cache holds it (Executor::Admit).
using HitTaker = absl::FunctionRef<void(const CachedValue&)>;
// A caller waiting to be woken, opaque to the core (the bindings: an asyncio
// future): a single-flight follower waiting for its leader's result, or a
// caller queued for a concurrency permit (the step key's, or a global slot).
// The core queues waiters and hands them back to be woken; it never wakes
// anyone itself.
using Waiter = std::shared_ptr<void>;

struct ExecutionRecord {
  // This execution's handle (Executor::Record), retired when it ends.
  uint64_t handle = 0;
  // The record's slot in its executor's handle table, held for the
  // record's life (a pooled record keeps it while the pool recycles it);
  // given back by the destructor.
  HandleTable<ExecutionRecord>* table = nullptr;
  uint32_t slot = HandleTable<ExecutionRecord>::kNoSlot;
  ~ExecutionRecord();
  ExecutionRecord() = default;
  // Not copyable: a copy would give the record's slot back twice.
  ExecutionRecord(const ExecutionRecord&) = delete;
  ExecutionRecord& operator=(const ExecutionRecord&) = delete;
  ExecutionRecord(ExecutionRecord&&) = default;
  ExecutionRecord& operator=(ExecutionRecord&&) = default;  // the pool's reset
  std::shared_ptr<StepEntry> step;
  // The config in force at Begin(); every config an executor has had stays
  // alive as long as the executor, so a plain pointer is enough.
  const OptimizationConfig* config = nullptr;
  int64_t start_ns = 0;
  int attempt = 0;  // attempts started so far
  bool had_error = false;
  // Breaker of this attempt: admitted and awaiting a verdict?
  CircuitBreaker* breaker = nullptr;
  bool breaker_pending = false;
  bool probe = false;
  int64_t retry_after_ns = 0;  // when rejected: time until half-open
  // The last admission was refused by the open breaker (the step was not
  // called); refusals: how many times that happened to this execution.
  // Attempts and refusals together spend the retry budget.
  bool rejected = false;
  int refusals = 0;
  // Retries granted for lost workers (kWorkerLostRetries): attempts that
  // do not spend the retry policy's.
  int lost_retries = 0;
  int64_t probe_wait_ns = 0;  // waited for half-open probes' verdicts
  // Error pattern of the previous failed attempt that was retried (0: none),
  // and whether that error was transient (never judged by fail-fast).
  uint64_t retried_pattern = 0;
  bool retried_transient = false;
  // Result cache: this execution leads the flight for cache_key and stores
  // its output under it on success.
  bool cache_lead = false;
  bool cache_flight = false;  // leads a single flight (followers to wake)
  bool permit = false;        // holds a slot of max_concurrent_executions
  bool pooled = false;        // came from the executor's record pool
  Key128 cache_key{};
  // The cache's invalidation epoch when the execution began: its output is
  // not stored if an invalidation covering it came since (result_cache.h).
  uint64_t cache_epoch = 0;
  // The step's concurrency limiter, when this execution holds its permit;
  // each attempt is one sample (start, in-flight count when admitted).
  KeyLimiter* limiter = nullptr;
  // Admitted by a dormant key without its permit (KeyLimiter::TryBypass).
  KeyLimiter* bypassed = nullptr;
  int limit_inflight = 0;
  int64_t attempt_start_ns = 0;
  // The last failed attempt, for its span: timed out? its exception type.
  bool last_timed_out = false;
  char last_error[SpanRecord::kErrorTypeLen] = {};
};

inline ExecutionRecord::~ExecutionRecord() {
  if (table != nullptr) table->Detach(slot);
}

struct ExecutionOutcome {
  int64_t latency_ns = 0;
  int attempts = 0;
  bool slow = false;
  // What the caller must wake now that the execution is over (the bindings
  // own the waiters): a caller waiting for a concurrency slot this execution
  // gave back, and the followers of the single flight it led.
  std::shared_ptr<void> wake;
  std::shared_ptr<void> wake_key;  // a caller waiting for the key's permit
  // Callers handed permits by a limit this execution's last sample raised.
  std::vector<std::shared_ptr<void>> wake_more;
  bool flight = false;
  Key128 flight_key{};
  // The step, moved out of the released record (no extra refcount).
  std::shared_ptr<StepEntry> step;
};

// Permits an execution gave back before its end (a fallback about to run).
struct ReleasedPermits {
  std::shared_ptr<void> wake;      // next waiter for the global slot
  std::shared_ptr<void> wake_key;  // next waiter for the key's permit
};

}  // namespace caudal

#endif  // CAUDAL_EXECUTOR_EXECUTION_RECORD_H_
