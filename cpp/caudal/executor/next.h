// Next: what the Python layer does next with an execution.
//
// Every call that starts or resumes an execution (the bindings' _begin,
// _restart, _begin_permitted, _begin_leader) answers `(rec, aw, next)`:
// `next` is one of these kinds, and says what `rec` and `aw` are. The core
// decides which one applies (Executor::Admit, Executor::StartAttempt, the
// breaker); the bindings turn it into the Python enum `caudal._core.Next`
// (an IntEnum with the names below in upper case, AWAIT ... WAIT_FOR_PERMIT),
// and python/caudal/_executor/core.py compares against those members.
// A cache hit is no kind: _begin returns the hit's StepResult itself.
//
// The values are stable (the bindings index a table by them).
#ifndef CAUDAL_EXECUTOR_NEXT_H_
#define CAUDAL_EXECUTOR_NEXT_H_

#include <cstdint>

namespace caudal {

enum class Next : uint8_t {
  // rec: the execution handle; aw: the awaitable the step returned. Await
  // it, then _succeed(rec, out), or _failed(rec, exc, False) if it raised.
  kAwait = 0,
  // As kAwait, within the step's per-attempt timeout (_timeout_s(rec));
  // when it expires: _failed(rec, StepTimeoutError(...), True).
  kAwaitWithTimeout = 1,
  // rec: the handle; aw: None. A plain `def` step: _sync_call(rec, ...)
  // gives (fn, args, kwargs, timeout_s) for the worker pool; then as kAwait.
  kRunSync = 2,
  // rec: the handle; aw: the attempt's exception, which is its outcome:
  // calling the step raised before it returned an awaitable, the awaited
  // attempt raised, or the open breaker refused the attempt (a
  // CircuitOpenError). Report it: _failed(rec, aw, False).
  kRaised = 3,
  // rec: the handle; aw: (fallback step, exception). The core routed the
  // execution to its step's fallback without an attempt (the breaker is
  // open): execute the fallback, then _fallback_done(rec, exc, result).
  kFallback = 4,
  // rec: an _Admission (the core's AdmitState, held natively: admission.h);
  // aw: an asyncio future. A concurrent execution with the same cache key
  // leads a single flight: await its StepResult (None: the leader was
  // cancelled; run again). A cancelled follower calls _leave_flight(rec, aw).
  kFollow = 5,
  // rec: an _Admission whose `key` (bytes) the in-process cache missed;
  // aw: None. Ask the shared tier for rec.key: a hit goes to
  // _l2_fill(rec, value, waited_s, epoch), a miss to _begin_leader(rec, ...)
  // (the admission goes on); cancelled meanwhile: _abandon_flight(rec).
  kAskSharedTier = 6,
  // rec: an _Admission; aw: an asyncio future resolved when a concurrency
  // permit (the step key's, or a global slot) is handed over. Then
  // _begin_permitted(rec, ...), which may answer kWaitForPermit again (the
  // slot after the key's permit); cancelled: _cancel_wait(rec, aw).
  kWaitForPermit = 7,
};

inline constexpr int kNextKinds = 8;

}  // namespace caudal

#endif  // CAUDAL_EXECUTOR_NEXT_H_
