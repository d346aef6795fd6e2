// Engine: the executor engine for Python (caudal._core.Engine): the calls
// per attempt (`_begin` before, `_succeed`/`_failed` after), the waits in
// between, and the read-outs. Declared here; defined by concern in
// engine.cc (construction, the step table), engine_reuse.cc (table misses
// that reuse an entry), engine_admit.cc (admission and attempts),
// engine_complete.cc (the end of an execution), engine_stats.cc
// (read-outs), failure_facts.cc (what a failure's exception says),
// fast_calls.cc (the METH_FASTCALL hot path); registered in
// executor_bindings.cc.
//
// Hot-path contract with python/caudal/_executor/core.py:
//   engine._start(step, data, context, resources): _begin, and when that
//     gives a pending result whose awaitable is a coroutine, its first send
//     in the same call: a StepResult when it finished (or a hit), or
//     (rec, _go_on(coro, yielded), AWAIT) when it suspended, or
//     (rec, exc, RAISED) when it raised an Exception (fast_calls.cc).
//   rec, aw, next = engine._begin(step, data, context, resources)
//     (or a cache hit's StepResult itself, or, for a first attempt awaited
//     as it is, a pending StepResult: `rec` itself, `aw` its `_aw`, next
//     AWAIT; step_result.h); `next` is a caudal._core.Next
//     member, the core's verdict (caudal/executor/next.h says, for each
//     kind, what `rec` and `aw` are and what the Python layer does next).
//   engine._succeed(rec, out) -> StepResult
//   engine._failed(rec, exc, timed_out) -> float (retry after that many
//     seconds; then engine._restart(rec, ...) starts the next attempt),
//     StepResult (final failure), or a Step (the fallback to run; finish
//     with engine._fallback_done(rec, result)).
//   engine._cancel(rec) when the attempt was cancelled.
// `rec` is an opaque handle (an int: slot and generation in the core's
// HandleTable, executor/handle_table.h, or a pending StepResult carrying
// that value until _succeed fills it in), owned by that one execute() call
// until one of _succeed/_failed(final)/_fallback_done/_cancel. Every call
// that takes one validates it first: a stale handle (its execution ended),
// another executor's, or garbage raises caudal.errors.StaleHandleError;
// nothing is ever dereferenced on a handle's word. A sync step's worker
// thread gets the step's callable and arguments (_sync_call, on the loop
// thread), never the handle.
// An execution that follows a single flight, asks the shared tier or waits
// for a permit gets an _Admission object as `rec` (the core's AdmitState,
// kept natively): no address, cache key or flag rides through Python to be
// believed on its way back. It names its engine and is taken once per wait
// (_begin_permitted / _cancel_wait, _l2_fill / _begin_leader /
// _abandon_flight, _leave_flight).
#ifndef CAUDAL_BINDINGS_ENGINE_H_
#define CAUDAL_BINDINGS_ENGINE_H_

#include <pybind11/stl.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "caudal/executor/executor.h"
#include "caudal/executor/next.h"
#include "common.h"
#include "event_bindings.h"
#include "failure_facts.h"
#include "key_walk.h"
#include "memory_bindings.h"
#include "monitor_bindings.h"
#include "step_analysis.h"
#include "step_result.h"
#include "step_reuse.h"
#include "telemetry_bindings.h"

namespace caudal::bindings {

// A step table row with the Python objects it needs. Created and destroyed
// with the GIL held (table inserts happen in _begin; the table and records
// are released by the engine, which is a Python object).
struct PyStepEntry : StepEntry {
  py::object key_a;     // the step object (or a bound method's __func__)
  py::object key_b;     // a bound method's __self__, else None
  py::object fn;        // what to call
  py::object fallback;  // Step or None
  py::object name_str;  // spec.name as a Python str (shared by results)
  py::object
      retry_on;  // None (any Exception), a tuple of types, or a predicate
  py::object breaker_exclude;  // None, a tuple of types, or a predicate
  py::object cache_context;    // None or a tuple of context field names
  // The cache key's namespace: the step's name and the identity of what it
  // runs (caudal._identity). Empty `no_identity` means it has one; else it
  // says why the step is not cached. While `identity_pending`, neither is
  // known yet (`no_identity` holds a placeholder, so that the hot path tests
  // one string): `identity_of` is what to fingerprint, on the first
  // execution that uses the cache (Engine::ResolveIdentity).
  std::string cache_ns;
  std::string no_identity;
  py::object identity_of;
  bool identity_pending = false;
  // The analysis shared with other functions of its code (null: analysed
  // on its own): its identity is computed natively when it can be.
  std::shared_ptr<FunctionTemplate> tmpl;
  // The analysis of a caudal.Step, kept for the step's life (null: none).
  std::shared_ptr<StepMemo> memo;
  ~PyStepEntry() override {
    // Mostly dropped by the table with the GIL held (an eviction): then no
    // acquisition at all.
    const bool held = PyGILState_Check() != 0;
    PyGILState_STATE st{};
    if (!held) st = PyGILState_Ensure();
    Release();
    if (!held) PyGILState_Release(st);
  }
  void Release() {
    tmpl.reset();
    memo.reset();
    key_a = py::object();
    key_b = py::object();
    fn = py::object();
    fallback = py::object();
    name_str = py::object();
    retry_on = py::object();
    breaker_exclude = py::object();
    cache_context = py::object();
    identity_of = py::object();
  }
};

// Raises caudal.errors.StaleHandleError.
[[noreturn]] void ThrowStale(const std::string& message);

// The handle's integer value; false for anything that is not an int in
// [0, 2^64).
inline bool HandleValue(PyObject* h, uint64_t* out) {
  if (IsStepResult(h)) {  // a pending result carries its handle
    *out = reinterpret_cast<StepResultObject*>(h)->pending_handle;
    return true;  // 0 (not pending) is no execution's handle
  }
  if (!PyLong_CheckExact(h)) return false;
  // Handles use all 64 bits: PyLong_AsUnsignedLongLong would take its
  // generic byte-array path; the mask read is a few digit shifts.
  if (_PyLong_Sign(h) < 0 || _PyLong_NumBits(h) > 64) return false;
  *out = PyLong_AsUnsignedLongLongMask(h);
  return true;
}

// The message for a handle the engine refused.
std::string StaleMessage(PyObject* h);

// An admission the Python layer holds between two calls (Next::kFollow,
// kAskSharedTier, kWaitForPermit): the core's AdmitState, kept natively, so
// that no address, cache key or flag travels through Python and comes back
// on Python's word. It names its engine; a call that resumes or gives it up
// takes it (Engine::Take), once; it is armed again when handed back for
// another wait.
struct PyAdmission {
  uint64_t engine_id = 0;  // the Engine that made it
  AdmitState state;
  bool armed = false;  // may be resumed or given up now
  // Its cache key as bytes (the shared tier's key).
  py::bytes key() const { return KeyToBytes(state.key); }
};

// The members of caudal._core.Next by value, set when the module is
// registered (never released). Returning one costs what returning a small
// int costs: a table load and an incref.
extern PyObject* g_next[kNextKinds];
inline py::handle NextOf(Next n) { return g_next[static_cast<int>(n)]; }

// (a, b, c) as a new tuple, each borrowed and increfed: what
// py::make_tuple does for three handles, without its per-item casts (the
// hot path returns one per attempt).
inline py::tuple Triple(py::handle a, py::handle b, py::handle c) {
  PyObject* t = PyTuple_New(3);
  if (t == nullptr) throw py::error_already_set();
  PyTuple_SET_ITEM(t, 0, a.inc_ref().ptr());
  PyTuple_SET_ITEM(t, 1, b.inc_ref().ptr());
  PyTuple_SET_ITEM(t, 2, c.inc_ref().ptr());
  return py::reinterpret_steal<py::tuple>(t);
}

uint64_t NextEngineId();

inline PyStepEntry* Entry(ExecutionRecord* r) {
  return static_cast<PyStepEntry*>(r->step.get());
}

// Long-lived Python helpers, looked up once (never destroyed: they must not
// be released after the interpreter is gone).
struct PyHelpers {
  py::object get_running_loop;
  py::object deepcopy;
  py::object getsizeof;
  py::object resolve;
  static PyHelpers& Get() {
    static PyHelpers* h = [] {
      auto* x = new PyHelpers();
      x->get_running_loop =
          py::module_::import("asyncio").attr("get_running_loop");
      x->deepcopy = py::module_::import("copy").attr("deepcopy");
      x->getsizeof = py::module_::import("sys").attr("getsizeof");
      x->resolve =
          py::module_::import("caudal._executor.flight").attr("resolve");
      return x;
    }();
    return *h;
  }
};

// A Python object owned by the core's cache or flight table: the deleter
// takes the GIL, since the last reference may be dropped anywhere.
inline void ReleasePyObject(const void* p) {
  DecRefWithGil(static_cast<PyObject*>(const_cast<void*>(p)));
}
inline CachedValue HoldValue(PyObject* o) {
  Py_INCREF(o);
  return CachedValue(o, ReleasePyObject);
}
inline Waiter HoldWaiter(PyObject* o) {
  Py_INCREF(o);
  return Waiter(o, [](void* p) { ReleasePyObject(p); });
}
// A non-owning handle comparing equal to the waiter holding `o`.
inline Waiter PeekWaiter(PyObject* o) { return Waiter(Waiter(), o); }

// Estimated bytes of a cached output (only when cache_max_bytes is set):
// exact for str/bytes, the object plus its direct items for containers.
size_t EstimateSize(py::handle v);

Key128 GroupOf(const std::string& step_name);

class Engine {
 public:
  // `clock`: the engine's time (null: the monotonic clock). The executor's
  // defaults for the step analysis: `retry`, the caudal.RetryStrategy of
  // steps that set neither retry nor max_retries (None: one attempt), and
  // `backend`, where the attempts of steps that do not choose run ("local"
  // or "ray"); both handed to caudal._steps.analyse with each step.
  Engine(const OptimizationConfig& config, std::shared_ptr<ManualClock> clock,
         py::object retry, const std::string& backend);

  ~Engine();

  void apply_config(const OptimizationConfig& config);
  OptimizationConfig config() const { return *core_.config(); }

  // ---- hot path: before the first attempt ----
  // (rec, aw, Next), or a cache hit's StepResult itself. The bindings
  // compute the cache key (a walk of the Python value); the core decides
  // the rest (Executor::Admit).
  py::object begin(py::handle step, py::handle data, py::handle context,
                   py::handle resources);

  // The cache key of `data` (and the step's context fields) under the
  // step's namespace; false, counted with its reason, when there is none.
  bool CacheKey(PyStepEntry* e, py::handle data, py::handle context,
                Key128* key);

  // Runs the core's admission from where `s` stopped and converts its
  // verdict: (rec, aw, Next) or a hit's StepResult. `held` is the
  // _Admission object holding `s` when resumed (else `s` is the caller's,
  // moved into a new one if the execution must wait).
  py::object Admit(AdmitState& s, py::handle held, int64_t now, py::handle data,
                   py::handle context, py::handle resources);

  // A hit's StepResult (the stored value, or a deep copy of it).
  // `stored`: a new reference to the cached output.
  py::object HitResult(PyStepEntry* e, py::object stored, int64_t now);

  // The _Admission that holds `s` for the Python layer: `held` itself when
  // the admission was resumed from it, else a new one.
  py::object Pending(AdmitState& s, py::handle held, bool armed);

  // The admission of this engine that `obj` is, at one of `stages`, taken
  // (disarmed); a StaleHandleError for anything else.
  PyAdmission& Take(py::handle obj,
                    std::initializer_list<AdmitState::Stage> stages);

  // A queued caller was handed a permit (the key's, or a global slot): the
  // admission goes on (it may have to wait for the slot next).
  py::object begin_permitted(py::handle adm, py::handle data,
                             py::handle context, py::handle resources);

  // A queued caller was cancelled: the core withdraws its admission (it
  // leaves the queue, or passes on a permit already handed to it, and gives
  // back what it held); followers of its flight run themselves.
  void cancel_wait(py::handle adm, py::handle fut);

  // Wakes a waiter the core handed back (a caller handed a permit); null:
  // nothing to wake.
  static void Wake(Waiter w);

  // Starts an attempt of an existing record (retries): the awaitable or,
  // for sync steps, nothing. Same (rec, aw, Next) triple as begin().
  py::object restart(py::handle h, py::handle data, py::handle context,
                     py::handle resources, py::handle last_exc) {
    return RestartAt(h, data, context, resources, last_exc, core_.NowNs());
  }
  // At `now_ns` (_fail: the failure's time, for a retry without a wait).
  py::object RestartAt(py::handle h, py::handle data, py::handle context,
                       py::handle resources, py::handle last_exc,
                       int64_t now_ns);

  // A sync step's attempt, for the worker pool: (fn, args, kwargs or None,
  // timeout_s), taken on the loop thread while the handle is live. The
  // pool thread calls fn(*args, **kwargs) and nothing else: it never
  // touches the record, which is another execution's once this one ends.
  py::tuple sync_call(py::handle h, py::handle data, py::handle context,
                      py::handle resources);

  double timeout_s(py::handle h) const { return TimeoutSeconds(Live(h)); }
  static double TimeoutSeconds(const ExecutionRecord* r) {
    return static_cast<double>(r->step->spec.timeout_ns) / 1e9;
  }

  // The live record of handle `h`; StaleHandleError otherwise (hot path:
  // an int check, the table's tag and generation compares).
  ExecutionRecord* Live(py::handle h) const {
    uint64_t v;
    if (ABSL_PREDICT_TRUE(HandleValue(h.ptr(), &v))) {
      if (ExecutionRecord* r = core_.Record(v)) return r;
    }
    ThrowStale(StaleMessage(h.ptr()));
  }

  // ---- hot path: after a successful attempt ----
  // New reference, or nullptr with a Python error set.
  // `h` is what the Python layer handed back: a pending StepResult is
  // filled in and returned; for a handle a new StepResult is made.
  PyObject* succeed(ExecutionRecord* r, PyObject* out, PyObject* h = nullptr);

  PyObject* SucceedCached(ExecutionRecord* r, PyObject* out, PyObject* h);

  // The StepResult of a success: `h` filled in when it is a pending result,
  // a new one otherwise. New reference.
  static PyObject* SuccessResult(PyObject* h, const ExecutionOutcome& o,
                                 PyObject* out);

  // Wakes what an ended execution hands over: the next caller waiting for a
  // concurrency slot, and the followers of the flight it led, who share
  // `result` (None: they run the step themselves).
  void Ended(const ExecutionOutcome& o, py::handle result, bool copy);
  static PyStepEntry* EntryOf(const ExecutionOutcome& o) {
    return static_cast<PyStepEntry*>(o.step.get());
  }

  // Gives each follower of a flight its own StepResult sharing the leader's
  // outcome (None: the leader was cancelled; followers run); the core
  // records each follower's outcome.
  void ResolveFollowers(PyStepEntry& e, const std::vector<Waiter>& followers,
                        py::handle leader, bool copy);

  // ---- the shared (L2) tier, driven by the Python layer ----
  void set_l2(bool on) { core_.SetSharedTier(on); }

  // The shared tier had the value: the admission ends without an
  // execution; fill L1, wake the flight's followers, and return the hit's
  // StepResult.
  // `epoch`: _cache_epoch() read before the value was fetched (an
  // invalidation since then keeps it out of L1).
  py::object l2_fill(py::handle adm, py::handle value, double waited_s,
                     uint64_t epoch);

  // The shared tier missed: the admission goes on (this execution leads
  // the key).
  py::object begin_leader(py::handle adm, py::handle data, py::handle context,
                          py::handle resources);

  // Cancelled while asking the shared tier: followers run themselves.
  void abandon_flight(py::handle adm);

  // (ttl_s, tags, group) for writing a step's result to the shared tier.
  py::tuple cache_policy(py::handle step);

  // Invalidation epochs (result_cache.h) for the shared tier's writes: read
  // one before asking the tier; before writing a result there, ask the core
  // whether it may be stored (Executor::MayStore, the rule L1 follows too:
  // the step's own success, not a fallback's, and no invalidation covering
  // the step since).
  uint64_t cache_epoch() const { return core_.CacheEpoch(); }
  bool cache_storable(py::handle step, py::handle result, uint64_t epoch);

  // Whether a StepResult is a fallback's (fallback_done marks it so).
  static bool FellBack(StepResultObject* r);

  // A cancelled follower leaves the flight it was waiting on.
  void leave_flight(py::handle adm, py::handle fut);

  py::dict concurrency_stats() const;

  // Limit changes of every key (oldest first, at most KeyLimiter::kHistory
  // per key): dicts with key, age_s, time_s (monotonic), from, to,
  // in_flight, waiting.
  py::list limit_history() const;

  // How many executions of `step` may be in flight now: the smaller of its
  // key's limit and the global one (None: no limit applies).
  py::object window(py::handle step);

  // Cache administration.
  size_t invalidate_tag(const std::string& tag);
  size_t invalidate_prefix(const std::string& prefix);
  size_t invalidate_step(const std::string& step_name);
  void clear_cache();
  py::dict cache_stats() const;

  // ---- after a failed attempt ----
  // After a failed attempt, or after the open breaker refused one (the
  // record says so; `exc` is then the CircuitOpenError handed out for it):
  // the core decides retry (a delay), fallback or the end.
  py::object failed(py::handle h, py::handle exc, bool timed_out) {
    return FailedAt(h, exc, timed_out, core_.NowNs());
  }
  // `retry_now` (when given): set instead of returning a delay of 0 (the
  // caller starts the next attempt at once; nullptr is returned).
  py::object FailedAt(py::handle h, py::handle exc, bool timed_out,
                      int64_t now_ns, bool* retry_now = nullptr);

  // The facts of a failed attempt (AttemptError), handed to the core.
  FailureDecision AttemptFailed(ExecutionRecord* r, PyStepEntry* e,
                                py::handle exc, bool timed_out, int64_t now_ns);

  // metadata["retry_stopped"] of a final verdict; null when the attempts
  // simply ran out.
  static const char* StoppedReason(FailureVerdict v);

  // The fallback step finished with `fb` (a StepResult).
  py::object fallback_done(py::handle h, py::handle primary_exc, py::handle fb);

  void cancel(py::handle h);

  // ---- read-outs (off the hot path) ----
  py::dict step_stats() const;
  py::dict total_stats() const;
  // The latency histogram of one step (None: all steps merged) as
  // (lower_ns, upper_ns, count) for each non-empty bucket, in order; for
  // plots and for percentiles over an interval (the difference of two
  // read-outs). An unknown step has no buckets.
  py::list latency_buckets(py::object step_name) const;
  void reset_stats() { core_.stats().ResetAll(); }
  int64_t in_flight() const { return core_.in_flight(); }
  // stats["execution"] and stats["cache"] (engine_stats.cc).
  ExecutionSection execution_section() const;
  CacheSection cache_section() const;

 private:
  static uint64_t StepKeyOf(py::handle step, PyObject** a, PyObject** b);

  // The step's entry through a one-entry per-thread cache (the hot path asks
  // for the same step over and over). Valid while the table's generation is
  // unchanged; relies on the GIL, which every caller holds, so the table
  // cannot drop the entry while the caller uses it.
  PyStepEntry* FastLookup(py::handle step);

  std::shared_ptr<StepEntry> Lookup(py::handle step);

  // A table miss: the entry of `step`, made from the analysis of its
  // function's template when it has one (step_analysis.h), else from
  // caudal._steps.analyse; inserted into the table.
  std::shared_ptr<StepEntry> Analyse(py::handle step, uint64_t key, PyObject* a,
                                     PyObject* b);
  // A plain function of `tmpl` met on a full table: the least recently
  // used entry becomes this function's when it was made from the same
  // template and no execution holds it (StepTable::Refit): its spec, stats
  // and caches are the template's already, and only what is per object
  // (the function, its identity) is replaced. Null otherwise.
  std::shared_ptr<StepEntry> RefitFromTemplate(
      const std::shared_ptr<FunctionTemplate>& tmpl, uint64_t key,
      py::handle step);
  // A caudal.Step's entry evicted from the table by the executor its memo
  // belongs to, held by nothing else: kept on the memo without the step's
  // Python objects (which may refer to the step: the memo must not keep it
  // alive) nor its name's stats (the bound on names may reclaim them), to
  // be taken back when the step is met again (Unpark). False: not kept.
  bool Park(const std::shared_ptr<StepEntry>& dropped);
  // The parked entry of `memo`, refitted with the objects read from the
  // step again; null when there is none.
  std::shared_ptr<PyStepEntry> Unpark(const std::shared_ptr<StepMemo>& memo,
                                      RecalledObjects& got);
  // An entry the table dropped (evicted or replaced): parked, or its state
  // handed back to its analysis's lookups, and destroyed.
  void Dropped(std::shared_ptr<StepEntry> dropped);
  // The entry for a StepAnalysis (its fn and identity_of per object).
  std::shared_ptr<PyStepEntry> EntryFrom(const StepAnalysis& t, py::handle fn,
                                         py::handle identity_of);
  // A plain function's identity from its template (FunctionKey); false when
  // it cannot be had that way (caudal._identity decides).
  bool NativeIdentity(PyStepEntry* e);

  // Whether the step has an identity, computing a pending one first.
  ABSL_ATTRIBUTE_NOINLINE bool HasIdentityNow(PyStepEntry* e);

  // The namespace of a step whose identity is pending: computed once, on
  // its first execution with caching on (caudal._identity.namespace, looked
  // up on each call, once per entry, so that it can be replaced in tests).
  // Like a failure inside the fingerprint, an Exception here leaves the step
  // without identity (run uncached, the reason in uncacheable_steps), never
  // an error for the caller; anything else (KeyboardInterrupt) propagates
  // and the identity stays pending.
  void ResolveIdentity(PyStepEntry* e);

  // "Type: message" of a caught Python exception, for a reason string.
  static std::string ErrorText(const py::error_already_set& err);

  static py::object Invoke(PyStepEntry* e, py::handle data, py::handle context,
                           py::handle resources);

  // The attempt's (rec, aw, Next), or a pending StepResult when `pending`
  // and the attempt is awaited as it is (a first attempt from _begin).
  py::object StartAttempt(ExecutionRecord* r, py::handle data,
                          py::handle context, py::handle resources,
                          py::handle handle_obj = py::handle(),
                          bool pending = false);

  py::object Final(ExecutionRecord* r, py::handle exc, bool fell_back,
                   const char* stopped);

  // A CircuitOpenError for the record's breaker refusal; `cause` (the last
  // attempt's error, or None) becomes its __cause__.
  py::object CircuitOpen(ExecutionRecord* r, py::handle cause);

  // Ends an execution that never made an attempt: the breaker refused it.
  py::object EndRejected(ExecutionRecord* r, py::handle exc);

  // The values of the context fields a step's cache key depends on: item
  // access for mappings, attributes otherwise; a missing field is None.
  static py::object ContextFields(const py::object& fields, py::handle context);

  static void WakePermits(const ReleasedPermits& p);

  // Maintain found an automatic-optimization analysis due: tell the Python
  // layer (on this loop's thread, GIL held), which schedules it on the loop.
  void CallAnalysisHook();

  Executor core_;
  const uint64_t id_ = NextEngineId();  // names this engine's wait states
  TelemetryState telemetry_;
  py::object analyse_;
  py::object identity_module_;  // caudal._identity, once imported
  py::object analysis_hook_;    // set by ExecutorCore; holds a weak reference
  // The executor's defaults for the analysis (set once, at construction).
  py::object default_retry_;    // caudal.RetryStrategy or None
  py::object default_backend_;  // "local" or "ray" (a str)
  // Analyses of plain functions by code object (step_analysis.h); only
  // with the local backend (ray wraps each step object). Bounded: when
  // full, one template goes per new one.
  static constexpr size_t kMaxTemplates = 4096;
  bool templates_on_ = false;
  std::string backend_;  // default_backend_ as a C++ string
  absl::flat_hash_map<PyObject*, std::shared_ptr<FunctionTemplate>> templates_;

 public:
  Executor& core() { return core_; }
  TelemetryState& telemetry() { return telemetry_; }
  void set_analysis_hook(py::object hook);
};

// (begin, succeed, fail, start): the hot-path calls of `engine_obj` (an
// Engine) as METH_FASTCALL functions (fast_calls.cc). `resume(coro,
// yielded)` makes the awaitable that goes on with a coroutine `start` ran
// until it suspended.
py::tuple FastCalls(py::object engine_obj, py::object resume);

}  // namespace caudal::bindings

#endif  // CAUDAL_BINDINGS_ENGINE_H_
