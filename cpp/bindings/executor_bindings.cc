// The executor engine for Python: the two calls per attempt (`_begin` before,
// `_succeed`/`_failed` after), StepResult, and the stats read-out.
//
// Hot-path contract with python/caudal/executor_core.py:
//   rec, aw, next = engine._begin(step, data, context, resources)
//     (or a cache hit's StepResult itself); `next` is a caudal._core.Next
//     member, the core's verdict (caudal/executor/next.h says, for each
//     kind, what `rec` and `aw` are and what the Python layer does next).
//   engine._succeed(rec, out) -> StepResult
//   engine._failed(rec, exc, timed_out) -> float (retry after that many
//     seconds; then engine._restart(rec, ...) starts the next attempt),
//     StepResult (final failure), or a Step (the fallback to run; finish
//     with engine._fallback_done(rec, result)).
//   engine._cancel(rec) when the attempt was cancelled.
// `rec` is an opaque handle (an int: slot and generation in the core's
// HandleTable, executor/handle_table.h), owned by that one execute() call
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
#include <pybind11/native_enum.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <string_view>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "caudal/executor/executor.h"
#include "caudal/executor/next.h"
#include "common.h"
#include "event_bindings.h"
#include "key_walk.h"
#include "memory_bindings.h"
#include "monitor_bindings.h"
#include "step_result.h"
#include "telemetry_bindings.h"

namespace caudal::bindings {
namespace {

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
  ~PyStepEntry() override {
    py::gil_scoped_acquire gil;
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
[[noreturn]] void ThrowStale(const std::string& message) {
  static PyObject* type =
      CaudalAttr("caudal.errors", "StaleHandleError").release().ptr();
  PyErr_SetString(type, message.c_str());
  throw py::error_already_set();
}

// The handle's integer value; false for anything that is not an int in
// [0, 2^64).
bool HandleValue(PyObject* h, uint64_t* out) {
  if (!PyLong_CheckExact(h)) return false;
  const unsigned long long v = PyLong_AsUnsignedLongLong(h);
  if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
    PyErr_Clear();  // negative or too large
    return false;
  }
  *out = v;
  return true;
}

// The message for a handle the engine refused.
std::string StaleMessage(PyObject* h) {
  PyObject* r = PyObject_Repr(h);
  std::string shown = "?";
  if (r != nullptr) {
    const char* c = PyUnicode_AsUTF8(r);
    if (c != nullptr) shown = c;
    Py_DECREF(r);
  }
  PyErr_Clear();
  if (!PyLong_CheckExact(h))
    return "not an execution handle: " + shown + " (" + Py_TYPE(h)->tp_name +
           ")";
  return "stale or unknown execution handle " + shown +
         ": its execution has ended, or it belongs to another executor";
}

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
PyObject* g_next[kNextKinds] = {};
py::handle NextOf(Next n) { return g_next[static_cast<int>(n)]; }

uint64_t NextEngineId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

PyStepEntry* Entry(ExecutionRecord* r) {
  return static_cast<PyStepEntry*>(r->step.get());
}

py::object FeedbackOf(py::handle exc) {
  py::str type_name = py::type::of(exc).attr("__name__");
  py::str msg = py::str(exc);
  if (PyUnicode_GetLength(msg.ptr()) == 0) return std::move(type_name);
  return py::str("{}: {}").format(type_name, msg);
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
      x->resolve = py::module_::import("caudal._flight").attr("resolve");
      return x;
    }();
    return *h;
  }
};

// A Python object owned by the core's cache or flight table: the deleter
// takes the GIL, since the last reference may be dropped anywhere.
void ReleasePyObject(const void* p) {
  DecRefWithGil(static_cast<PyObject*>(const_cast<void*>(p)));
}
CachedValue HoldValue(PyObject* o) {
  Py_INCREF(o);
  return CachedValue(o, ReleasePyObject);
}
FlightWaiter HoldWaiter(PyObject* o) {
  Py_INCREF(o);
  return FlightWaiter(o, [](void* p) { ReleasePyObject(p); });
}
// A non-owning handle comparing equal to the waiter holding `o`.
FlightWaiter PeekWaiter(PyObject* o) { return FlightWaiter(FlightWaiter(), o); }

// Estimated bytes of a cached output (only when cache_max_bytes is set):
// exact for str/bytes, the object plus its direct items for containers.
size_t EstimateSize(py::handle v) {
  PyHelpers& h = PyHelpers::Get();
  size_t n = h.getsizeof(v).cast<size_t>();
  if (PyList_Check(v.ptr()) || PyTuple_Check(v.ptr())) {
    for (py::handle item : v) n += h.getsizeof(item).cast<size_t>();
  } else if (PyDict_Check(v.ptr())) {
    for (auto kv : py::reinterpret_borrow<py::dict>(v)) {
      n += h.getsizeof(kv.first).cast<size_t>() +
           h.getsizeof(kv.second).cast<size_t>();
    }
  }
  return n;
}

Key128 GroupOf(const std::string& step_name) {
  Key128 k;
  py::str s(step_name);
  KeyOf("caudal.group", 12, s.ptr(), nullptr, &k);
  return k;
}

class Engine {
 public:
  friend PyObject* FastBegin(PyObject*, PyObject* const*, Py_ssize_t);
  friend PyObject* FastSucceed(PyObject*, PyObject* const*, Py_ssize_t);
  // `clock`: the engine's time (null: the monotonic clock).
  Engine(const OptimizationConfig& config, std::shared_ptr<ManualClock> clock)
      : core_(config, /*random_seed=*/0x5eed, std::move(clock)) {}

  ~Engine() {
    clear_cache();
    // Entries hold Python objects; drop them while the GIL is held.
    auto dropped = core_.steps().Clear();
    dropped.clear();
  }

  void apply_config(const OptimizationConfig& config) {
    std::vector<FlightWaiter> woken;
    const absl::Status s = core_.ApplyConfig(config, &woken);
    if (!s.ok()) ThrowStatus(s);
    for (FlightWaiter& w : woken) WakeSlot(std::move(w));
  }
  OptimizationConfig config() const { return *core_.config(); }

  // ---- hot path: before the first attempt ----
  // (rec, aw, Next), or a cache hit's StepResult itself. The bindings
  // compute the cache key (a walk of the Python value); the core decides
  // the rest (Executor::Admit).
  py::object begin(py::handle step, py::handle data, py::handle context,
                   py::handle resources) {
    // Automatic optimization: one relaxed load unless an analysis is due.
    if (core_.TakeAnalysisDue()) CallAnalysisHook();
    PyStepEntry* e = FastLookup(step);
    const int64_t now = core_.NowNs();
    AdmitState s;
    if (Executor::UseCache(*e, *core_.current_config()))
      s.keyed = CacheKey(e, data, context, &s.key);
    s.step = e->shared_from_this();
    return Admit(s, py::handle(), now, data, context, resources);
  }

  // The cache key of `data` (and the step's context fields) under the
  // step's namespace; false, counted with its reason, when there is none.
  bool CacheKey(PyStepEntry* e, py::handle data, py::handle context,
                Key128* key) {
    py::object extra;
    if (!e->cache_context.is_none())
      extra = ContextFields(e->cache_context, context);
    // One branch for a step with an identity; a pending one is computed
    // here, once (its no_identity is a placeholder until then).
    UnkeyableReason why;
    if (ABSL_PREDICT_TRUE(e->no_identity.empty()) || HasIdentityNow(e)) {
      const std::string& ns = e->cache_ns;
      why = KeyOf(ns.data(), static_cast<Py_ssize_t>(ns.size()), data.ptr(),
                  extra ? extra.ptr() : nullptr, key);
    } else {
      why = "the step has no stable identity (see uncacheable_steps)";
    }
    if (!why) return true;
    core_.RecordUncacheable(*e, why);
    return false;
  }

  // Runs the core's admission from where `s` stopped and converts its
  // verdict: (rec, aw, Next) or a hit's StepResult. `held` is the
  // _Admission object holding `s` when resumed (else `s` is the caller's,
  // moved into a new one if the execution must wait).
  py::object Admit(AdmitState& s, py::handle held, int64_t now, py::handle data,
                   py::handle context, py::handle resources) {
    py::object fut;
    std::vector<CachedValue> dropped;
    // The entry, for a hit or a full table (the record takes the state's).
    PyStepEntry* e = static_cast<PyStepEntry*>(s.step.get());
    Admitted a = core_.Admit(
        s, now,
        [&] {
          fut = PyHelpers::Get().get_running_loop().attr("create_future")();
          return HoldWaiter(fut.ptr());
        },
        &dropped);
    switch (a.verdict) {
      case AdmitVerdict::kStarted:
        return StartAttempt(a.record, data, context, resources);
      case AdmitVerdict::kHit:
        return HitResult(e, a.hit, now);
      case AdmitVerdict::kFollow:
        return py::make_tuple(Pending(s, held, /*armed=*/false), fut,
                              NextOf(Next::kFollow));
      case AdmitVerdict::kAskSharedTier:
        return py::make_tuple(Pending(s, held, /*armed=*/true), py::none(),
                              NextOf(Next::kAskSharedTier));
      case AdmitVerdict::kWaitForPermit:
        return py::make_tuple(Pending(s, held, /*armed=*/true), fut,
                              NextOf(Next::kWaitForPermit));
      case AdmitVerdict::kRefused:
        // The refusal goes back as the attempt's exception: `failed` asks
        // the core whether to wait for the breaker's probe or end.
        return py::make_tuple(py::int_(a.record->handle),
                              CircuitOpen(a.record, py::none()),
                              NextOf(Next::kRaised));
      case AdmitVerdict::kFallback: {
        // Refused, and the core routed it to the step's fallback (the
        // record ends in _fallback_done).
        WakePermits(a.wake);
        ExecutionRecord* r = a.record;
        return py::make_tuple(
            py::int_(r->handle),
            py::make_tuple(Entry(r)->fallback, CircuitOpen(r, py::none())),
            NextOf(Next::kFallback));
      }
      case AdmitVerdict::kFull:
        WakePermits(a.wake);
        ResolveFollowers(*e, a.followers, py::none(), false);
        throw std::runtime_error("too many executions in flight (" +
                                 std::to_string(HandleTable<int>::kMaxSlots) +
                                 ")");
    }
    throw std::logic_error("unknown admission verdict");
  }

  // A hit's StepResult (the stored value, or a deep copy of it).
  py::object HitResult(PyStepEntry* e, const CachedValue& hit, int64_t now) {
    auto* stored = static_cast<PyObject*>(const_cast<void*>(hit.get()));
    py::object out = core_.current_config()->cache_copy_outputs
                         ? PyHelpers::Get().deepcopy(py::handle(stored))
                         : py::reinterpret_borrow<py::object>(stored);
    const int64_t latency = core_.NowNs() - now;
    core_.RecordCacheHit(*e, latency);
    PyObject* res = NewStepResult(e->name_str.ptr(), out.ptr(), true, 0,
                                  static_cast<double>(latency) / 1e9, Py_None,
                                  Py_None, true);
    if (!res) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(res);
  }

  // The _Admission that holds `s` for the Python layer: `held` itself when
  // the admission was resumed from it, else a new one.
  py::object Pending(AdmitState& s, py::handle held, bool armed) {
    if (held) {
      held.cast<PyAdmission&>().armed = armed;
      return py::reinterpret_borrow<py::object>(held);
    }
    PyAdmission a;
    a.engine_id = id_;
    a.state = std::move(s);
    a.armed = armed;
    return py::cast(std::move(a));
  }

  // The admission of this engine that `obj` is, at one of `stages`, taken
  // (disarmed); a StaleHandleError for anything else.
  PyAdmission& Take(py::handle obj,
                    std::initializer_list<AdmitState::Stage> stages) {
    if (!py::isinstance<PyAdmission>(obj))
      ThrowStale("not an admission of this executor: " +
                 std::string(Py_TYPE(obj.ptr())->tp_name));
    PyAdmission& a = obj.cast<PyAdmission&>();
    if (a.engine_id != id_) ThrowStale("admission belongs to another executor");
    if (!a.armed) ThrowStale("admission already used");
    bool at = false;
    for (AdmitState::Stage st : stages) at = at || a.state.stage == st;
    if (!at) ThrowStale("admission is not waiting for this call");
    a.armed = false;
    return a;
  }

  // A queued caller was handed a permit (the key's, or a global slot): the
  // admission goes on (it may have to wait for the slot next).
  py::object begin_permitted(py::handle adm, py::handle data,
                             py::handle context, py::handle resources) {
    PyAdmission& a =
        Take(adm, {AdmitState::Stage::kKeyPermit, AdmitState::Stage::kSlot});
    return Admit(a.state, adm, core_.NowNs(), data, context, resources);
  }

  // A queued caller was cancelled: the core withdraws its admission (it
  // leaves the queue, or passes on a permit already handed to it, and gives
  // back what it held); followers of its flight run themselves.
  void cancel_wait(py::handle adm, py::handle fut) {
    PyAdmission& a =
        Take(adm, {AdmitState::Stage::kKeyPermit, AdmitState::Stage::kSlot});
    std::shared_ptr<StepEntry> entry = a.state.step;
    Withdrawn w = core_.Withdraw(a.state, PeekWaiter(fut.ptr()));
    WakePermits(w.permits);
    ResolveFollowers(*static_cast<PyStepEntry*>(entry.get()), w.followers,
                     py::none(), false);
  }

  // Hands a freed slot to the caller waiting for it.
  static void WakeSlot(FlightWaiter w) {
    if (!w) return;
    PyHelpers::Get().resolve(py::handle(static_cast<PyObject*>(w.get())),
                             py::bool_(true));
  }

  // Starts an attempt of an existing record (retries): the awaitable or,
  // for sync steps, nothing. Same (rec, aw, Next) triple as begin().
  py::tuple restart(py::handle h, py::handle data, py::handle context,
                    py::handle resources, py::handle last_exc) {
    ExecutionRecord* r = Live(h);
    if (!core_.StartAttempt(r, core_.NowNs())) {
      // The breaker opened meanwhile (often on this very step's failures):
      // the refusal is this attempt's outcome, and `failed` decides whether
      // to wait for the probe; the last error is the refusal's cause.
      return py::make_tuple(py::int_(r->handle), CircuitOpen(r, last_exc),
                            NextOf(Next::kRaised));
    }
    return StartAttempt(r, data, context, resources);
  }

  // A sync step's attempt, for the worker pool: (fn, args, kwargs or None,
  // timeout_s), taken on the loop thread while the handle is live. The
  // pool thread calls fn(*args, **kwargs) and nothing else: it never
  // touches the record, which is another execution's once this one ends.
  py::tuple sync_call(py::handle h, py::handle data, py::handle context,
                      py::handle resources) {
    ExecutionRecord* r = Live(h);
    PyStepEntry* e = Entry(r);
    py::tuple args;
    py::object kw = py::none();
    switch (e->spec.shape) {
      case CallShape::kNoArgs:
        args = py::tuple(0);
        break;
      case CallShape::kData:
        args = py::make_tuple(data);
        break;
      case CallShape::kDataContext:
        args = py::make_tuple(data, context);
        break;
      case CallShape::kRunKwargs: {
        args = py::make_tuple(data);
        py::dict d;
        if (e->spec.pass_context_kw && !context.is_none())
          d["context"] = context;
        if (e->spec.pass_resources_kw && !resources.is_none())
          d["resources"] = resources;
        if (!d.empty()) kw = std::move(d);
        break;
      }
    }
    return py::make_tuple(e->fn, std::move(args), std::move(kw),
                          TimeoutSeconds(r));
  }

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
  PyObject* succeed(ExecutionRecord* r, PyObject* out) {
    if (r->cache_lead) return SucceedCached(r, out);
    const ExecutionOutcome o = core_.Succeed(r, core_.NowNs());
    WakeSlot(o.wake);  // no flight: the cache is off for this execution
    WakeSlot(o.wake_key);
    for (const FlightWaiter& w : o.wake_more) WakeSlot(w);
    return NewStepResult(EntryOf(o)->name_str.ptr(), out, true, o.attempts,
                         static_cast<double>(o.latency_ns) / 1e9, Py_None,
                         Py_None, false);
  }

  PyObject* SucceedCached(ExecutionRecord* r, PyObject* out) {
    try {
      const bool copy = r->config->cache_copy_outputs;
      const int64_t now = core_.NowNs();
      py::object stored = copy ? PyHelpers::Get().deepcopy(py::handle(out))
                               : py::reinterpret_borrow<py::object>(out);
      const size_t bytes =
          r->config->cache_max_bytes > 0 ? EstimateSize(stored) : 0;
      std::vector<CachedValue> dropped;
      core_.CacheStore(*r, HoldValue(stored.ptr()), bytes, now, &dropped);
      const ExecutionOutcome o = core_.Succeed(r, now);
      auto res = py::reinterpret_steal<py::object>(NewStepResult(
          EntryOf(o)->name_str.ptr(), out, true, o.attempts,
          static_cast<double>(o.latency_ns) / 1e9, Py_None, Py_None, false));
      if (!res) throw py::error_already_set();
      Ended(o, res, copy);
      return res.release().ptr();
    } catch (py::error_already_set& err) {
      err.restore();
      return nullptr;
    }
  }

  // Wakes what an ended execution hands over: the next caller waiting for a
  // concurrency slot, and the followers of the flight it led, who share
  // `result` (None: they run the step themselves).
  void Ended(const ExecutionOutcome& o, py::handle result, bool copy) {
    WakeSlot(o.wake);
    WakeSlot(o.wake_key);
    for (const FlightWaiter& w : o.wake_more) WakeSlot(w);
    if (o.flight)
      ResolveFollowers(*EntryOf(o), core_.EndFlight(o.flight_key), result,
                       copy);
  }
  static PyStepEntry* EntryOf(const ExecutionOutcome& o) {
    return static_cast<PyStepEntry*>(o.step.get());
  }

  // Gives each follower of a flight its own StepResult sharing the leader's
  // outcome (None: the leader was cancelled; followers run); the core
  // records each follower's outcome.
  void ResolveFollowers(PyStepEntry& e,
                        const std::vector<FlightWaiter>& followers,
                        py::handle leader, bool copy) {
    if (followers.empty()) return;
    PyHelpers& h = PyHelpers::Get();
    for (const FlightWaiter& w : followers) {
      if (!w)
        continue;  // a placeholder between two JoinFlight calls (see there)
      py::handle fut(static_cast<PyObject*>(w.get()));
      if (leader.is_none()) {
        h.resolve(fut, py::none());
        continue;
      }
      auto* l = reinterpret_cast<StepResultObject*>(leader.ptr());
      py::object out = l->success && copy
                           ? h.deepcopy(py::handle(l->output))
                           : py::reinterpret_borrow<py::object>(l->output);
      auto res = py::reinterpret_steal<py::object>(
          NewStepResult(l->name, out.ptr(), l->success, 0, l->latency_s,
                        l->feedback, l->error, l->success));
      if (!res) throw py::error_already_set();
      py::dict md;
      md["single_flight"] = true;
      reinterpret_cast<StepResultObject*>(res.ptr())->metadata =
          md.release().ptr();
      core_.RecordFollowed(e, l->success);
      h.resolve(fut, res);
    }
  }

  // ---- the shared (L2) tier, driven by the Python layer ----
  void set_l2(bool on) { core_.SetSharedTier(on); }

  // The shared tier had the value: the admission ends without an
  // execution; fill L1, wake the flight's followers, and return the hit's
  // StepResult.
  // `epoch`: _cache_epoch() read before the value was fetched (an
  // invalidation since then keeps it out of L1).
  py::object l2_fill(py::handle adm, py::handle value, double waited_s,
                     uint64_t epoch) {
    PyAdmission& a = Take(adm, {AdmitState::Stage::kSharedTier});
    std::shared_ptr<StepEntry> entry = a.state.step;
    auto* e = static_cast<PyStepEntry*>(entry.get());
    const Key128 key = a.state.key;
    const OptimizationConfig* cfg = core_.current_config();
    const int64_t now = core_.NowNs();
    const size_t bytes = cfg->cache_max_bytes > 0 ? EstimateSize(value) : 0;
    std::vector<CachedValue> dropped;
    core_.CachePut(*e, *cfg, key, HoldValue(value.ptr()), bytes, now, &dropped,
                   epoch);
    const auto latency = static_cast<int64_t>(waited_s * 1e9);
    core_.RecordCacheHit(*e, latency);
    py::object out = cfg->cache_copy_outputs
                         ? PyHelpers::Get().deepcopy(value)
                         : py::reinterpret_borrow<py::object>(value);
    auto res = py::reinterpret_steal<py::object>(
        NewStepResult(e->name_str.ptr(), out.ptr(), true, 0, waited_s, Py_None,
                      Py_None, true));
    if (!res) throw py::error_already_set();
    py::dict md;
    md["cache_tier"] = "l2";
    reinterpret_cast<StepResultObject*>(res.ptr())->metadata =
        md.release().ptr();
    Withdrawn w = core_.Withdraw(a.state, FlightWaiter());
    ResolveFollowers(*e, w.followers, res, cfg->cache_copy_outputs);
    return res;
  }

  // The shared tier missed: the admission goes on (this execution leads
  // the key).
  py::object begin_leader(py::handle adm, py::handle data, py::handle context,
                          py::handle resources) {
    PyAdmission& a = Take(adm, {AdmitState::Stage::kSharedTier});
    return Admit(a.state, adm, core_.NowNs(), data, context, resources);
  }

  // Cancelled while asking the shared tier: followers run themselves.
  void abandon_flight(py::handle adm) {
    PyAdmission& a = Take(adm, {AdmitState::Stage::kSharedTier});
    std::shared_ptr<StepEntry> entry = a.state.step;
    Withdrawn w = core_.Withdraw(a.state, FlightWaiter());
    ResolveFollowers(*static_cast<PyStepEntry*>(entry.get()), w.followers,
                     py::none(), false);
  }

  // (ttl_s, tags, group) for writing a step's result to the shared tier.
  py::tuple cache_policy(py::handle step) {
    std::shared_ptr<StepEntry> entry = Lookup(step);
    auto* e = static_cast<PyStepEntry*>(entry.get());
    return py::make_tuple(
        Executor::CacheTtlSeconds(*e, *core_.current_config()), e->spec.tags,
        e->name_str);
  }

  // Invalidation epochs (result_cache.h) for the shared tier's writes: read
  // one before asking the tier; before writing a result there, ask the core
  // whether it may be stored (Executor::MayStore, the rule L1 follows too:
  // the step's own success, not a fallback's, and no invalidation covering
  // the step since).
  uint64_t cache_epoch() const { return core_.CacheEpoch(); }
  bool cache_storable(py::handle step, py::handle result, uint64_t epoch) {
    if (!IsStepResult(result.ptr()))
      throw py::type_error("result must be a StepResult");
    std::shared_ptr<StepEntry> entry = Lookup(step);
    auto* r = reinterpret_cast<StepResultObject*>(result.ptr());
    return core_.MayStore(*entry, r->success, FellBack(r), epoch);
  }

  // Whether a StepResult is a fallback's (fallback_done marks it so).
  static bool FellBack(StepResultObject* r) {
    if (r->metadata == nullptr || !PyDict_Check(r->metadata)) return false;
    PyObject* v = PyDict_GetItemString(r->metadata, "fallback_triggered");
    return v != nullptr && PyObject_IsTrue(v) == 1;
  }

  // A cancelled follower leaves the flight it was waiting on.
  void leave_flight(py::handle adm, py::handle fut) {
    if (!py::isinstance<PyAdmission>(adm))
      ThrowStale("not an admission of this executor: " +
                 std::string(Py_TYPE(adm.ptr())->tp_name));
    PyAdmission& a = adm.cast<PyAdmission&>();
    if (a.engine_id != id_) ThrowStale("admission belongs to another executor");
    core_.LeaveFlight(a.state.key, PeekWaiter(fut.ptr()));
  }

  py::dict concurrency_stats() const {
    py::dict d;
    const OptimizationConfig* cfg = core_.current_config();
    d["max_concurrent_executions"] =
        cfg->max_concurrent_executions.has_value()
            ? py::object(py::int_(*cfg->max_concurrent_executions))
            : py::object(py::none());
    d["slots_in_use"] = core_.slots_in_flight();
    d["waiting"] = core_.slots_waiting();
    const GateCounters c = core_.slot_counters();
    d["acquired"] = c.acquired;
    d["waited"] = c.waited;
    d["cancelled_waits"] = c.cancelled;
    d["max_waiting"] = c.max_waiting;
    d["mode"] = cfg->max_concurrent_executions.has_value() ? "fixed"
                : cfg->enable_concurrency_optimization     ? "adaptive"
                                                           : "unlimited";
    py::dict keys;
    for (KeyLimiter* l : core_.Limiters()) {
      const KeyLimiter::Snapshot k = l->snapshot();
      py::dict kd;
      kd["mode"] = LimiterModeName(k.mode);
      kd["limit"] = k.mode == KeyLimiter::Mode::kUnlimited
                        ? py::object(py::none())
                        : py::object(py::int_(k.limit));
      kd["in_flight"] = k.in_flight;
      kd["waiting"] = k.waiting;
      kd["acquired"] = k.counters.acquired;
      kd["waited"] = k.counters.waited;
      kd["cancelled_waits"] = k.counters.cancelled;
      kd["max_waiting"] = k.counters.max_waiting;
      kd["limit_changes"] = k.changes;
      if (k.mode == KeyLimiter::Mode::kAdaptive) {
        kd["estimated_limit"] = k.estimated_limit;
        kd["baseline_rtt_ms"] = k.baseline_rtt_ns / 1e6;
        kd["last_window_rtt_ms"] = k.last_window_rtt_ns / 1e6;
        kd["windows"] = k.windows;
        kd["samples"] = k.samples;
        kd["drops"] = k.drops;
        kd["slow_start"] = k.slow_start;
        kd["dormant"] = k.dormant;
      }
      keys[py::str(k.key)] = kd;
    }
    d["keys"] = keys;
    return d;
  }

  // Limit changes of every key (oldest first, at most KeyLimiter::kHistory
  // per key): dicts with key, age_s, time_s (monotonic), from, to,
  // in_flight, waiting.
  py::list limit_history() const {
    std::vector<LimitChange> all;
    for (KeyLimiter* l : core_.Limiters()) {
      for (LimitChange& c : l->history()) all.push_back(std::move(c));
    }
    std::sort(all.begin(), all.end(),
              [](const LimitChange& a, const LimitChange& b) {
                return a.at_ns < b.at_ns;
              });
    const int64_t now = core_.NowNs();
    py::list out;
    for (const LimitChange& c : all) {
      py::dict d;
      d["key"] = c.key;
      d["time_s"] = static_cast<double>(c.at_ns) / 1e9;
      d["age_s"] = static_cast<double>(now - c.at_ns) / 1e9;
      d["from"] = c.from == KeyLimiter::kUnlimited
                      ? py::object(py::none())
                      : py::object(py::int_(c.from));
      d["to"] = c.to == KeyLimiter::kUnlimited ? py::object(py::none())
                                               : py::object(py::int_(c.to));
      d["in_flight"] = c.in_flight;
      d["waiting"] = c.waiting;
      out.append(d);
    }
    return out;
  }

  // How many executions of `step` may be in flight now: the smaller of its
  // key's limit and the global one (None: no limit applies).
  py::object window(py::handle step) {
    PyStepEntry* e = FastLookup(step);
    const OptimizationConfig* cfg = core_.current_config();
    int64_t w = -1;
    if (KeyLimiter* l = core_.LimiterFor(*e, *cfg)) w = l->limit();
    if (cfg->max_concurrent_executions.has_value()) {
      const int64_t g = *cfg->max_concurrent_executions;
      w = w < 0 ? g : std::min(w, g);
    }
    if (w < 0) return py::none();
    return py::int_(w);
  }

  // Cache administration.
  size_t invalidate_tag(const std::string& tag) {
    std::vector<CachedValue> dropped;
    return core_.InvalidateTag(tag, &dropped);
  }
  size_t invalidate_prefix(const std::string& step_name) {
    std::vector<CachedValue> dropped;
    return core_.InvalidateGroup(GroupOf(step_name).lo, &dropped);
  }
  void clear_cache() {
    std::vector<CachedValue> dropped;
    core_.ClearCache(&dropped);
  }
  py::dict cache_stats() const {
    const ResultCacheStats c = core_.CacheStats();
    py::dict d;
    d["hits"] = c.hits;
    d["misses"] = c.misses;
    d["hit_rate"] = c.hit_rate;
    d["inserts"] = c.inserts;
    d["evictions"] = c.evictions;
    d["expirations"] = c.expirations;
    d["invalidations"] = c.invalidations;
    d["rejections"] = c.rejections;
    d["stale"] = c.stale;
    d["size"] = c.entries;
    d["bytes"] = c.bytes;
    d["max_size"] = c.max_entries;
    d["max_bytes"] = c.max_bytes;
    d["shards"] = c.num_shards;
    py::dict reasons;
    uint64_t uncacheable = 0;
    for (const auto& [reason, n] : core_.UncacheableReasons()) {
      reasons[py::str(reason)] = n;
      uncacheable += n;
    }
    d["uncacheable"] = uncacheable;
    d["uncacheable_reasons"] = reasons;
    py::dict steps;  // step name -> why it has no cache identity
    for (const auto& [name, why] : uncacheable_steps_)
      steps[py::str(name)] = why;
    d["uncacheable_steps"] = steps;
    return d;
  }

  // ---- after a failed attempt ----
  // After a failed attempt, or after the open breaker refused one (the
  // record says so; `exc` is then the CircuitOpenError handed out for it):
  // the core decides retry (a delay), fallback or the end.
  py::object failed(py::handle h, py::handle exc, bool timed_out) {
    ExecutionRecord* r = Live(h);
    PyStepEntry* e = Entry(r);
    const FailureDecision d =
        r->rejected ? core_.AttemptFailed(r, core_.NowNs(), AttemptError())
                    : AttemptFailed(r, e, exc, timed_out);
    for (const FlightWaiter& w : d.wake) WakeSlot(w);
    if (d.verdict == FailureVerdict::kRetry) return py::float_(d.delay_s);
    // The core routed it to the step's fallback (permits given back: woken
    // above).
    if (d.verdict == FailureVerdict::kFallback) return e->fallback;
    if (r->rejected) {
      if (r->attempt == 0) return EndRejected(r, exc);
      // Attempts were made: the execution ends with the last one's own
      // error (the refusal's cause), which says more than "the breaker is
      // open".
      PyObject* cause = PyException_GetCause(exc.ptr());
      if (cause != nullptr) {
        return Final(r, py::reinterpret_steal<py::object>(cause),
                     /*fell_back=*/false, StoppedReason(d.verdict));
      }
    }
    return Final(r, exc, /*fell_back=*/false, StoppedReason(d.verdict));
  }

  // The facts of a failed attempt (AttemptError), handed to the core.
  FailureDecision AttemptFailed(ExecutionRecord* r, PyStepEntry* e,
                                py::handle exc, bool timed_out) {
    AttemptError err;
    err.timed_out = timed_out;
    err.retryable = Matches(e->retry_on, exc, /*if_none=*/true);
    err.counts_for_breaker =
        !Matches(e->breaker_exclude, exc, /*if_none=*/false);
    const std::string type_name = QualifiedTypeName(exc);
    const std::string message = SafeStr(exc);
    err.exc_type = type_name;
    err.message = message;
    err.retry_after_s = RetryAfterHint(exc);
    std::string retry_after, retry_after_ms;
    ClassifyFailure(exc, &err, &retry_after, &retry_after_ms);
    err.retry_after_header = retry_after;
    err.retry_after_ms_header = retry_after_ms;
    return core_.AttemptFailed(r, core_.NowNs(), err);
  }

  // metadata["retry_stopped"] of a final verdict; null when the attempts
  // simply ran out.
  static const char* StoppedReason(FailureVerdict v) {
    switch (v) {
      case FailureVerdict::kFailFast:
        return "fail_fast";
      case FailureVerdict::kNotRetryable:
        return "not_retryable";
      case FailureVerdict::kWaitTooLong:
        return "retry_after_too_long";
      case FailureVerdict::kBreakerOpen:
        return "breaker_open";
      case FailureVerdict::kRetry:
      case FailureVerdict::kFallback:
      case FailureVerdict::kNoAttemptsLeft:
        break;
    }
    return nullptr;
  }

  // The fallback step finished with `fb` (a StepResult).
  py::object fallback_done(py::handle h, py::handle primary_exc,
                           py::handle fb) {
    ExecutionRecord* r = Live(h);
    if (!IsStepResult(fb.ptr()))
      throw py::type_error("fallback result must be a StepResult");
    auto* f = reinterpret_cast<StepResultObject*>(fb.ptr());
    const ExecutionOutcome o = core_.Fail(r, core_.NowNs(), /*fell_back=*/true);
    py::object feedback = FeedbackOf(primary_exc);
    auto res = py::reinterpret_steal<py::object>(NewStepResult(
        EntryOf(o)->name_str.ptr(), f->output, f->success,
        o.attempts + f->attempts, static_cast<double>(o.latency_ns) / 1e9,
        feedback.ptr(), f->success ? Py_None : f->error, false));
    if (!res) throw py::error_already_set();
    py::dict md;
    md["fallback_triggered"] = true;
    md["original_error"] = py::reinterpret_borrow<py::object>(primary_exc);
    md["fallback_feedback"] = py::reinterpret_borrow<py::object>(f->feedback);
    reinterpret_cast<StepResultObject*>(res.ptr())->metadata =
        md.release().ptr();
    // Followers share the outcome; nothing is stored (a fallback's result is
    // never cached: Executor::MayStore).
    Ended(o, res, false);
    return res;
  }

  void cancel(py::handle h) {
    ExecutionRecord* r = Live(h);
    // Followers must not inherit a cancellation: they run the step themselves.
    Ended(core_.Cancel(r, core_.NowNs()), py::none(), false);
  }

  // ---- read-outs (off the hot path) ----
  py::dict step_stats() const {
    py::dict out;
    for (const auto& s : core_.stats().TakeAll()) {
      py::dict d = SnapshotDict(s);
      auto it = step_specs_.find(s.name);
      if (it != step_specs_.end()) d["settings"] = SettingsDict(it->second);
      out[py::str(s.name)] = std::move(d);
    }
    return out;
  }
  py::dict total_stats() const {
    return SnapshotDict(core_.stats().TakeTotal());
  }
  // The latency histogram of one step (None: all steps merged) as
  // (lower_ns, upper_ns, count) for each non-empty bucket, in order; for
  // plots and for percentiles over an interval (the difference of two
  // read-outs). An unknown step has no buckets.
  py::list latency_buckets(py::object step_name) const {
    LatencyHistogram::Snapshot h;
    if (step_name.is_none()) {
      h = core_.stats().TakeTotal().latency;
    } else {
      const std::string name = py::cast<std::string>(step_name);
      for (auto& s : core_.stats().TakeAll()) {
        if (s.name == name) {
          h = std::move(s.latency);
          break;
        }
      }
    }
    py::list out;
    for (int i = 0; i < static_cast<int>(h.buckets.size()); ++i) {
      if (h.buckets[i] == 0) continue;
      out.append(py::make_tuple(LatencyHistogram::BucketLower(i),
                                LatencyHistogram::BucketUpper(i),
                                h.buckets[i]));
    }
    return out;
  }
  void reset_stats() { core_.stats().ResetAll(); }
  int64_t in_flight() const { return core_.in_flight(); }
  py::dict step_table() const {
    py::dict d;
    d["size"] = core_.steps().size();
    d["analyses"] = core_.steps().analyses();
    return d;
  }

 private:
  static uint64_t StepKeyOf(py::handle step, PyObject** a, PyObject** b) {
    if (PyMethod_Check(step.ptr())) {
      *a = PyMethod_GET_FUNCTION(step.ptr());
      *b = PyMethod_GET_SELF(step.ptr());
      const uint64_t x = reinterpret_cast<uintptr_t>(*a);
      const uint64_t y = reinterpret_cast<uintptr_t>(*b);
      return x ^ (y * 0x9E3779B97F4A7C15ull) ^ 1;  // odd: never a plain address
    }
    *a = step.ptr();
    *b = nullptr;
    return reinterpret_cast<uintptr_t>(step.ptr());
  }

  // The step's entry through a one-entry per-thread cache (the hot path asks
  // for the same step over and over). Valid while the table's generation is
  // unchanged; relies on the GIL, which every caller holds, so the table
  // cannot drop the entry while the caller uses it.
  PyStepEntry* FastLookup(py::handle step) {
    struct Last {
      const StepTable* table;
      uint64_t generation;
      PyObject* step;
      PyStepEntry* entry;
    };
    static thread_local Last last
        __attribute__((tls_model("initial-exec"))) = {};
    const StepTable& table = core_.steps();
    if (last.step == step.ptr() && last.table == &table &&
        last.generation == table.generation() && !PyMethod_Check(step.ptr())) {
      return last.entry;
    }
    std::shared_ptr<StepEntry> entry =
        Lookup(step);  // the table keeps it alive
    auto* e = static_cast<PyStepEntry*>(entry.get());
    last = {&table, table.generation(), step.ptr(), e};
    return e;
  }

  std::shared_ptr<StepEntry> Lookup(py::handle step) {
    PyObject* a;
    PyObject* b;
    const uint64_t key = StepKeyOf(step, &a, &b);
    std::shared_ptr<StepEntry> found = core_.steps().Find(key);
    if (found) {
      auto* e = static_cast<PyStepEntry*>(found.get());
      if (e->key_a.ptr() == a &&
          (b == nullptr ? e->key_b.is_none() : e->key_b.ptr() == b)) {
        return found;
      }
    }
    return Analyse(step, key, a, b);
  }

  std::shared_ptr<StepEntry> Analyse(py::handle step, uint64_t key, PyObject* a,
                                     PyObject* b) {
    if (!analyse_) analyse_ = CaudalAttr("caudal._steps", "analyse");
    // A dict; see caudal._steps.analyse for the keys.
    py::dict t = analyse_(step, default_retry_);
    auto e = std::make_shared<PyStepEntry>();
    StepSpec& s = e->spec;
    s.name = t["name"].cast<std::string>();
    s.kind = static_cast<StepKind>(t["kind"].cast<int>());
    s.shape = static_cast<CallShape>(t["shape"].cast<int>());
    s.pass_context_kw = t["context_kw"].cast<bool>();
    s.pass_resources_kw = t["resources_kw"].cast<bool>();
    py::tuple rp =
        t["retry"];  // (kind, max_attempts, base, factor, max_backoff, jitter)
    s.retry.kind = static_cast<RetryPolicy::Kind>(rp[0].cast<int>());
    s.retry.max_attempts = rp[1].cast<int>();
    s.retry.base_delay_s = rp[2].cast<double>();
    s.retry.backoff_factor = rp[3].cast<double>();
    s.retry.max_backoff_s = rp[4].cast<double>();
    s.retry.jitter = rp[5].cast<double>();
    const absl::Status retry_ok = s.retry.Validate();
    if (!retry_ok.ok())
      throw py::value_error("step '" + s.name +
                            "': " + std::string(retry_ok.message()));
    py::object timeout = t["timeout_s"];
    s.timeout_ns = timeout.is_none()
                       ? 0
                       : static_cast<int64_t>(timeout.cast<double>() * 1e9);
    py::object cache = t["cache"];
    s.cache = cache.is_none()
                  ? StepSwitch::kDefault
                  : (cache.cast<bool>() ? StepSwitch::kOn : StepSwitch::kOff);
    py::object ttl = t["cache_ttl_s"];
    s.cache_ttl_s = ttl.is_none() ? -1.0 : ttl.cast<double>();
    s.tags = t["tags"].cast<std::vector<std::string>>();
    py::object breaker =
        t["breaker"];  // None (the step's name), a str, or False
    if (breaker.is_none()) {
      s.use_breaker = true;
    } else if (PyBool_Check(breaker.ptr())) {
      s.use_breaker = breaker.cast<bool>();
    } else {
      s.breaker_key = breaker.cast<std::string>();
    }
    e->fallback = t["fallback"];
    s.has_fallback = !e->fallback.is_none();
    e->fn = t["fn"];
    e->retry_on = t["retry_on"];
    e->breaker_exclude = t["breaker_exclude"];
    e->cache_context = t["cache_context"];
    s.single_flight = t["single_flight"].cast<bool>();
    py::object limit_key = t["concurrency_key"];
    if (!limit_key.is_none()) s.limit_key = limit_key.cast<std::string>();
    py::object max_conc = t["max_concurrency"];
    if (!max_conc.is_none()) s.max_concurrency = max_conc.cast<int>();
    {
      std::vector<FlightWaiter> woken;
      const absl::Status st = core_.RegisterLimitKey(s, &woken);
      for (FlightWaiter& w : woken) WakeSlot(std::move(w));
      if (!st.ok()) throw py::value_error(std::string(st.message()));
    }
    // The group (invalidate_prefix) is by name; the key's namespace adds
    // the identity of what runs. None: no identity, the reason instead.
    s.cache_group = GroupOf(s.name).lo;
    py::object identity_of = t["identity_of"];
    py::object cache_ns = t["cache_ns"];
    if (!identity_of.is_none()) {
      // Computed by ResolveIdentity when first needed: never for a step
      // that only runs uncached.
      e->identity_of = std::move(identity_of);
      e->identity_pending = true;
      e->no_identity = "its identity is not computed yet";
    } else if (cache_ns.is_none()) {
      e->no_identity = t["uncacheable"].cast<std::string>();
      uncacheable_steps_[s.name] = e->no_identity;
    } else {
      e->cache_ns = cache_ns.cast<std::string>();
    }
    e->name_str = py::str(s.name);
    e->key_a = py::reinterpret_borrow<py::object>(a);
    e->key_b = b ? py::reinterpret_borrow<py::object>(b) : py::none();
    e->stats = core_.stats().ForStep(s.name);
    step_specs_[s.name] = s;  // for the read-outs (the last one analysed)
    auto dropped = core_.steps().Insert(key, e);
    dropped.clear();
    return e;
  }

  // Whether the step has an identity, computing a pending one first.
  ABSL_ATTRIBUTE_NOINLINE bool HasIdentityNow(PyStepEntry* e) {
    if (e->identity_pending) ResolveIdentity(e);
    return e->no_identity.empty();
  }

  // The namespace of a step whose identity is pending: computed once, on
  // its first execution with caching on (caudal._identity.namespace, looked
  // up on each call, once per entry, so that it can be replaced in tests).
  // Like a failure inside the fingerprint, an Exception here leaves the step
  // without identity (run uncached, the reason in uncacheable_steps), never
  // an error for the caller; anything else (KeyboardInterrupt) propagates
  // and the identity stays pending.
  void ResolveIdentity(PyStepEntry* e) {
    // The call runs Python, which may drop the table's entries: keep it.
    const std::shared_ptr<StepEntry> hold = e->shared_from_this();
    const py::object target = e->identity_of;
    bool have = false;
    std::string ns, why;
    try {
      if (!identity_module_)
        identity_module_ = py::module_::import("caudal._identity");
      py::tuple r =
          identity_module_.attr("namespace")(e->name_str, target, py::none());
      have = !r[0].is_none();
      if (have) {
        ns = r[0].cast<std::string>();
      } else {
        why = r[1].cast<std::string>();
      }
    } catch (py::error_already_set& err) {
      if (!err.matches(PyExc_Exception)) throw;
      why = "computing its identity raised " + ErrorText(err) +
            ": its results cannot be told apart from another step's; name "
            "them with Step(cache_key=...) to cache it";
    } catch (const py::cast_error&) {
      why = "its identity is not a (namespace, reason) pair of str";
    }
    if (!e->identity_pending) return;  // another thread was first
    e->identity_pending = false;
    e->identity_of = py::object();
    if (have) {
      e->cache_ns = std::move(ns);
      e->no_identity.clear();
    } else {
      e->no_identity = why;
      uncacheable_steps_[e->spec.name] = std::move(why);
    }
  }

  // "Type: message" of a caught Python exception, for a reason string.
  static std::string ErrorText(const py::error_already_set& err) {
    try {
      return py::str(err.type().attr("__qualname__")).cast<std::string>() +
             ": " + py::str(err.value()).cast<std::string>();
    } catch (py::error_already_set&) {
      return "an exception";
    }
  }

  static py::object Invoke(PyStepEntry* e, py::handle data, py::handle context,
                           py::handle resources) {
    PyObject* fn = e->fn.ptr();
    PyObject* res = nullptr;
    switch (e->spec.shape) {
      case CallShape::kNoArgs:
        res = PyObject_CallNoArgs(fn);
        break;
      case CallShape::kData:
        res = PyObject_CallOneArg(fn, data.ptr());
        break;
      case CallShape::kDataContext: {
        PyObject* args[] = {data.ptr(), context.ptr()};
        res = PyObject_Vectorcall(fn, args, 2, nullptr);
        break;
      }
      case CallShape::kRunKwargs: {
        py::dict kw;
        if (e->spec.pass_context_kw && !context.is_none())
          kw["context"] = context;
        if (e->spec.pass_resources_kw && !resources.is_none())
          kw["resources"] = resources;
        if (kw.empty()) {
          res = PyObject_CallOneArg(fn, data.ptr());
        } else {
          py::tuple args = py::make_tuple(data);
          res = PyObject_Call(fn, args.ptr(), kw.ptr());
        }
        break;
      }
    }
    if (!res) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(res);
  }

  py::tuple StartAttempt(ExecutionRecord* r, py::handle data,
                         py::handle context, py::handle resources) {
    PyStepEntry* e = Entry(r);
    py::int_ h(r->handle);
    if (e->spec.kind == StepKind::kSync)
      return py::make_tuple(h, py::none(), NextOf(Next::kRunSync));
    try {
      py::object aw = Invoke(e, data, context, resources);
      return py::make_tuple(
          h, std::move(aw),
          NextOf(e->spec.timeout_ns > 0 ? Next::kAwaitWithTimeout
                                        : Next::kAwait));
    } catch (py::error_already_set& err) {
      // Calling the step raised before producing an awaitable: an attempt
      // failure like any other (the caller decides retry or not).
      err.restore();
      PyObject *type, *value, *tb;
      PyErr_Fetch(&type, &value, &tb);
      PyErr_NormalizeException(&type, &value, &tb);
      if (tb) PyException_SetTraceback(value, tb);
      Py_XDECREF(type);
      Py_XDECREF(tb);
      return py::make_tuple(h, py::reinterpret_steal<py::object>(value),
                            NextOf(Next::kRaised));
    }
  }

  py::object Final(ExecutionRecord* r, py::handle exc, bool fell_back,
                   const char* stopped) {
    const ExecutionOutcome o = core_.Fail(r, core_.NowNs(), fell_back);
    py::object feedback = FeedbackOf(exc);
    auto res = py::reinterpret_steal<py::object>(
        NewStepResult(EntryOf(o)->name_str.ptr(), Py_None, false, o.attempts,
                      static_cast<double>(o.latency_ns) / 1e9, feedback.ptr(),
                      exc.ptr(), false));
    if (!res) throw py::error_already_set();
    if (stopped) {
      py::dict md;
      md["retry_stopped"] = stopped;
      reinterpret_cast<StepResultObject*>(res.ptr())->metadata =
          md.release().ptr();
    }
    Ended(o, res, false);
    return res;
  }

  // A CircuitOpenError for the record's breaker refusal; `cause` (the last
  // attempt's error, or None) becomes its __cause__.
  py::object CircuitOpen(ExecutionRecord* r, py::handle cause) {
    PyStepEntry* e = Entry(r);
    const std::string& bkey =
        e->spec.breaker_key.empty() ? e->spec.name : e->spec.breaker_key;
    static py::handle exc_type =
        CaudalAttr("caudal.errors", "CircuitOpenError").release();
    py::object exc =
        exc_type(bkey, static_cast<double>(r->retry_after_ns) / 1e9);
    // Refused again after waiting: the cause is still the last attempt's
    // error, not the previous refusal.
    py::object last = py::reinterpret_borrow<py::object>(cause);
    if (!last.is_none() &&
        PyObject_IsInstance(last.ptr(), exc_type.ptr()) == 1) {
      PyObject* inner = PyException_GetCause(last.ptr());
      last = inner != nullptr ? py::reinterpret_steal<py::object>(inner)
                              : py::object(py::none());
    }
    if (!last.is_none()) PyException_SetCause(exc.ptr(), last.release().ptr());
    return exc;
  }

  // Ends an execution that never made an attempt: the breaker refused it.
  py::object EndRejected(ExecutionRecord* r, py::handle exc) {
    const ExecutionOutcome o = core_.Reject(r, core_.NowNs());
    py::object feedback = FeedbackOf(exc);
    auto res = py::reinterpret_steal<py::object>(
        NewStepResult(EntryOf(o)->name_str.ptr(), Py_None, false, 0,
                      static_cast<double>(o.latency_ns) / 1e9, feedback.ptr(),
                      exc.ptr(), false));
    if (!res) throw py::error_already_set();
    py::dict md;
    md["retry_stopped"] = "breaker_open";
    reinterpret_cast<StepResultObject*>(res.ptr())->metadata =
        md.release().ptr();
    Ended(o, res, false);
    return res;
  }

  // The values of the context fields a step's cache key depends on: item
  // access for mappings, attributes otherwise; a missing field is None.
  static py::object ContextFields(const py::object& fields,
                                  py::handle context) {
    py::tuple names = fields;
    py::tuple out(names.size());
    for (size_t i = 0; i < names.size(); ++i) {
      py::object v = py::none();
      if (!context.is_none()) {
        PyObject* got =
            PyMapping_Check(context.ptr()) && !PyType_Check(context.ptr())
                ? PyObject_GetItem(context.ptr(), names[i].ptr())
                : PyObject_GetAttr(context.ptr(), names[i].ptr());
        if (got) {
          v = py::reinterpret_steal<py::object>(got);
        } else {
          PyErr_Clear();
        }
      }
      out[i] = v;
    }
    return std::move(out);
  }

  static void WakePermits(const ReleasedPermits& p) {
    WakeSlot(p.wake);
    WakeSlot(p.wake_key);
  }

  // The facts the core classifies a failure by (AttemptError): raised
  // caudal.OverloadedError (overload), a ConnectionError or TimeoutError
  // (network_error), and the HTTP status carried as `status_code` / `status`
  // on the exception or on its `response` (httpx, aiohttp, openai and
  // requests errors all carry one).
  // The transport errors of the common HTTP and LLM clients, which do not
  // derive from Python's ConnectionError/TimeoutError: recognised by a class
  // in the exception's MRO (module family, class name), without importing
  // the clients. Only on the failure path.
  static bool IsClientTransportError(PyObject* exc) {
    struct Family {
      const char* module;  // the class's __module__, or a prefix + '.'
      const char* name;
    };
    static constexpr Family kFamilies[] = {
        {"httpx", "TransportError"},  // ConnectError, timeouts, NetworkError
        {"aiohttp", "ClientConnectionError"},
        {"requests", "ConnectionError"},
        {"requests", "Timeout"},
        {"openai", "APIConnectionError"},  // APITimeoutError too
        {"anthropic", "APIConnectionError"},
    };
    PyObject* mro = Py_TYPE(exc)->tp_mro;
    if (mro == nullptr || !PyTuple_Check(mro)) return false;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); ++i) {
      auto* t = reinterpret_cast<PyTypeObject*>(PyTuple_GET_ITEM(mro, i));
      if (t == reinterpret_cast<PyTypeObject*>(PyExc_Exception)) break;
      std::string_view module, name;
      if (t->tp_flags & Py_TPFLAGS_HEAPTYPE) {  // a class written in Python
        name = t->tp_name;                      // __name__ for heap types
        bool known = false;
        for (const Family& f : kFamilies) known = known || name == f.name;
        if (!known || t->tp_dict == nullptr) continue;  // most classes
        static PyObject* const module_key =
            PyUnicode_InternFromString("__module__");
        PyObject* m = PyDict_GetItemWithError(t->tp_dict, module_key);
        const char* mod =
            m != nullptr && PyUnicode_Check(m) ? PyUnicode_AsUTF8(m) : nullptr;
        if (mod == nullptr) {
          PyErr_Clear();
          continue;
        }
        module = mod;
      } else {  // a static type: tp_name is "module.Name"
        const char* dot = std::strrchr(t->tp_name, '.');
        if (dot == nullptr) continue;
        module =
            std::string_view(t->tp_name, static_cast<size_t>(dot - t->tp_name));
        name = dot + 1;
      }
      for (const Family& f : kFamilies) {
        const std::string_view fm(f.module);
        if (name == f.name &&
            (module == fm ||
             (module.size() > fm.size() && module.substr(0, fm.size()) == fm &&
              module[fm.size()] == '.')))
          return true;
      }
    }
    return false;
  }

  // The value of header `name` in `headers` (httpx and requests headers,
  // aiohttp's multidict: all have a case-insensitive .get), or "".
  static std::string HeaderValue(PyObject* headers, const char* name) {
    PyObject* v = PyObject_CallMethod(headers, "get", "s", name);
    if (v == nullptr) {
      PyErr_Clear();
      return std::string();
    }
    std::string out;
    if (PyUnicode_Check(v)) {
      Py_ssize_t n = 0;
      const char* c = PyUnicode_AsUTF8AndSize(v, &n);
      if (c != nullptr && n <= 256) out.assign(c, static_cast<size_t>(n));
      if (c == nullptr) PyErr_Clear();
    }
    Py_DECREF(v);
    return out;
  }

  // The Retry-After and retry-after-ms headers of an HTTP error: on its
  // `response` (httpx, requests, openai, anthropic) or on itself (aiohttp's
  // ClientResponseError has `headers`).
  static void RetryHeaders(PyObject* exc, PyObject* resp, std::string* ra,
                           std::string* ra_ms) {
    for (PyObject* holder : {resp, exc}) {
      if (holder == nullptr || holder == Py_None) continue;
      PyObject* headers = PyObject_GetAttrString(holder, "headers");
      if (headers == nullptr) {
        PyErr_Clear();
        continue;
      }
      if (headers != Py_None) {
        *ra = HeaderValue(headers, "retry-after");
        *ra_ms = HeaderValue(headers, "retry-after-ms");
      }
      Py_DECREF(headers);
      return;
    }
  }

  static void ClassifyFailure(py::handle exc, AttemptError* err,
                              std::string* retry_after,
                              std::string* retry_after_ms) {
    static PyObject* overloaded =
        CaudalAttr("caudal.errors", "OverloadedError").release().ptr();
    static PyObject* network = py::make_tuple(py::handle(PyExc_TimeoutError),
                                              py::handle(PyExc_ConnectionError))
                                   .release()
                                   .ptr();
    if (PyErr_GivenExceptionMatches(exc.ptr(), overloaded)) {
      err->overload = true;
      return;
    }
    err->network_error = PyErr_GivenExceptionMatches(exc.ptr(), network) != 0 ||
                         IsClientTransportError(exc.ptr());
    auto status_of = [](PyObject* o) -> long {
      for (const char* name : {"status_code", "status"}) {
        PyObject* v = PyObject_GetAttrString(o, name);
        if (v == nullptr) {
          PyErr_Clear();
          continue;
        }
        long code = -1;
        if (PyLong_Check(v) && !PyBool_Check(v)) code = PyLong_AsLong(v);
        Py_DECREF(v);
        if (code == -1) PyErr_Clear();
        if (code > 0) return code;
      }
      return -1;
    };
    long code = status_of(exc.ptr());
    PyObject* resp = PyObject_GetAttrString(exc.ptr(), "response");
    if (resp == nullptr) PyErr_Clear();
    if (code < 0 && resp != nullptr && resp != Py_None) code = status_of(resp);
    if (code >= 100 && code <= 999) {
      err->http_status = static_cast<int>(code);
      // Only an HTTP error carries the headers worth a look.
      RetryHeaders(exc.ptr(), resp, retry_after, retry_after_ms);
    }
    Py_XDECREF(resp);
  }

  static bool Matches(const py::object& spec, py::handle exc, bool if_none) {
    if (!spec || spec.is_none()) return if_none;
    if (PyTuple_Check(spec.ptr()) || PyType_Check(spec.ptr())) {
      return PyErr_GivenExceptionMatches(exc.ptr(), spec.ptr()) != 0;
    }
    py::object r = spec(exc);  // a predicate; its exception propagates
    return r.cast<bool>();
  }

  static std::string QualifiedTypeName(py::handle exc) {
    py::handle t = py::type::of(exc);
    std::string mod = py::str(t.attr("__module__"));
    std::string qn = py::str(t.attr("__qualname__"));
    return mod + "." + qn;
  }

  static std::string SafeStr(py::handle exc) {
    PyObject* s = PyObject_Str(exc.ptr());
    if (!s) {
      PyErr_Clear();
      return "<unprintable>";
    }
    Py_ssize_t n = 0;
    const char* c = PyUnicode_AsUTF8AndSize(s, &n);
    std::string out = c ? std::string(c, n) : std::string("<unprintable>");
    if (!c) PyErr_Clear();
    Py_DECREF(s);
    return out;
  }

  // A `retry_after` attribute (seconds) on the exception, e.g. set from an
  // HTTP 429's Retry-After header.
  static absl::optional<double> RetryAfterHint(py::handle exc) {
    PyObject* v = PyObject_GetAttrString(exc.ptr(), "retry_after");
    if (!v) {
      PyErr_Clear();
      return absl::nullopt;
    }
    absl::optional<double> out;
    if ((PyFloat_Check(v) || PyLong_Check(v)) && !PyBool_Check(v)) {
      const double d = PyFloat_AsDouble(v);
      if (!PyErr_Occurred() && d >= 0) out = d;
      PyErr_Clear();
    }
    Py_DECREF(v);
    return out;
  }

  // What the step was given, as the recommendation rules read it: None
  // where the step follows the executor's config.
  static py::dict SettingsDict(const StepSpec& s) {
    py::dict d;
    d["timeout_s"] =
        s.timeout_ns > 0
            ? py::object(py::float_(static_cast<double>(s.timeout_ns) / 1e9))
            : py::object(py::none());
    d["cache"] = s.cache == StepSwitch::kDefault
                     ? py::object(py::none())
                     : py::object(py::bool_(s.cache == StepSwitch::kOn));
    d["max_retries"] = s.retry.max_attempts - 1;
    d["breaker"] = !s.use_breaker          ? py::object(py::bool_(false))
                   : s.breaker_key.empty() ? py::object(py::str(s.name))
                                           : py::object(py::str(s.breaker_key));
    return d;
  }
  static py::dict SnapshotDict(const StepStats::Snapshot& s) {
    py::dict d;
    d["executions"] = s.executions;
    d["successes"] = s.successes;
    d["failures"] = s.failures;
    d["attempts"] = s.attempts;
    d["retries"] = s.retries;
    d["errors"] = s.errors;
    d["recovered"] = s.recovered;
    d["timeouts"] = s.timeouts;
    d["fallbacks"] = s.fallbacks;
    d["cancelled"] = s.cancelled;
    d["slow_executions"] = s.slow;
    d["cache_hits"] = s.cache_hits;
    d["rejected"] = s.rejected;
    d["cache_misses"] = s.cache_misses;
    d["uncacheable"] = s.uncacheable;
    d["shared_flights"] = s.shared_flights;
    d["cache_bypassed"] = s.cache_bypassed;
    d["in_flight"] = s.in_flight;
    const auto& h = s.latency;
    d["avg_time_ms"] = h.MeanNs() / 1e6;
    d["p50_ms"] = h.QuantileNs(0.50) / 1e6;
    d["p95_ms"] = h.QuantileNs(0.95) / 1e6;
    d["p99_ms"] = h.QuantileNs(0.99) / 1e6;
    d["max_ms"] = static_cast<double>(h.max_ns) / 1e6;
    d["min_ms"] = static_cast<double>(h.min_ns) / 1e6;
    d["total_time_ms"] = static_cast<double>(h.sum_ns) / 1e6;
    return d;
  }

  // Maintain found an automatic-optimization analysis due: tell the Python
  // layer (on this loop's thread, GIL held), which schedules it on the loop.
  void CallAnalysisHook() {
    if (!analysis_hook_) return;
    try {
      analysis_hook_();
    } catch (py::error_already_set& err) {
      err.discard_as_unraisable("caudal automatic optimization hook");
    }
  }

  Executor core_;
  const uint64_t id_ = NextEngineId();  // names this engine's wait states
  TelemetryState telemetry_;
  py::object analyse_;
  py::object identity_module_;  // caudal._identity, once imported
  py::object analysis_hook_;    // set by ExecutorCore; holds a weak reference
  py::object default_retry_ = py::none();  // caudal.RetryStrategy or None
  // Steps without a cache identity: name -> why (GIL-guarded).
  std::map<std::string, std::string> uncacheable_steps_;
  // The settings each step name was last analysed with (GIL-guarded).
  std::map<std::string, StepSpec> step_specs_;

 public:
  Executor& core() { return core_; }
  TelemetryState& telemetry() { return telemetry_; }
  void set_analysis_hook(py::object hook) {
    analysis_hook_ = hook.is_none() ? py::object() : std::move(hook);
  }

  void set_default_retry(py::object r) {
    default_retry_ = std::move(r);
    auto dropped = core_.steps().Clear();  // re-analyse with the new default
    dropped.clear();
  }

  py::list breaker_stats() const {
    py::list out;
    for (const auto& n : core_.BreakerSnapshots()) {
      const auto& b = n.snapshot;
      py::dict d;
      d["name"] = n.name;
      d["state"] = std::string(StateName(b.state));
      d["consecutive_failures"] = b.consecutive_failures;
      d["failure_count"] = b.failure_count;
      d["success_count"] = b.success_count;
      d["rejected_count"] = b.rejected_count;
      d["open_count"] = b.open_count;
      d["probes_in_flight"] = b.probes_in_flight;
      d["window_calls"] = b.window_calls;
      d["window_failures"] = b.window_failures;
      const int64_t now = core_.NowNs();
      d["last_transition_age_s"] =
          b.last_transition_ns
              ? py::cast(static_cast<double>(now - b.last_transition_ns) / 1e9)
              : py::none();
      d["open_for_s"] =
          b.state == CircuitBreaker::State::kOpen
              ? py::cast(std::max<double>(
                    0, static_cast<double>(b.open_until_ns - now) / 1e9))
              : py::none();
      out.append(d);
    }
    return out;
  }

  py::list transitions() const {
    py::list out;
    const int64_t now = core_.NowNs();
    for (const auto& t : core_.RecentTransitions()) {
      py::dict d;
      d["breaker"] = t.breaker;
      d["from"] = std::string(StateName(t.transition.from));
      d["to"] = std::string(StateName(t.transition.to));
      d["age_s"] = static_cast<double>(now - t.transition.at_ns) / 1e9;
      d["seq"] = t.transition.seq;
      out.append(d);
    }
    return out;
  }

  py::dict error_stats(size_t max_patterns) const {
    const ErrorTableStats st = core_.ErrorStats();
    py::dict d;
    d["total_errors"] = st.total_errors;
    d["retry_outcomes"] = st.total_retries;
    d["recoveries"] = st.recoveries;
    d["failures_after_retry"] = st.failures_after_retry;
    d["recovery_success_rate"] = st.recovery_success_rate;
    d["cached_patterns"] = st.cached_patterns;
    d["capacity"] = st.capacity;
    d["evictions"] = st.evictions;
    d["fail_fast"] = core_.fail_fast_count();
    py::list patterns;
    for (const auto& p : core_.ErrorPatterns(max_patterns)) {
      py::dict pd;
      pd["step"] = p.step;
      pd["exception"] = p.exc_type;
      pd["sample"] = p.sample;
      pd["occurrences"] = p.occurrences;
      pd["retried"] = p.retried;
      pd["recovered"] = p.recovered;
      pd["failed_after_retry"] = p.failed_after_retry;
      patterns.append(pd);
    }
    d["patterns"] = patterns;
    return d;
  }
};

// ---- METH_FASTCALL entry points of the hot path ----
// pybind11's generic dispatch costs more than the work it dispatches here, so
// the two per-attempt calls are plain CPython functions whose `self` is a
// capsule holding the Engine (the capsule keeps the engine object alive).
constexpr const char* kEngineCapsule = "caudal._core.Engine";

Engine* EngineOf(PyObject* capsule) {
  return static_cast<Engine*>(PyCapsule_GetPointer(capsule, kEngineCapsule));
}

PyObject* FastBegin(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError, "_begin(step, data, context, resources)");
    return nullptr;
  }
  try {
    return EngineOf(self)
        ->begin(args[0], args[1], args[2], args[3])
        .release()
        .ptr();
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const py::builtin_exception& e) {
    e.set_error();  // ValueError, TypeError, ... as raised
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

PyObject* FastSucceed(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "_succeed(rec, output)");
    return nullptr;
  }
  try {
    Engine* engine = EngineOf(self);
    return engine->succeed(engine->Live(args[0]), args[1]);
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const py::builtin_exception& e) {
    e.set_error();  // ValueError, TypeError, ... as raised
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

PyMethodDef kFastBegin = {
    "_begin",
    reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(FastBegin)),
    METH_FASTCALL,
    "Before the first attempt: (rec, aw, Next), or a cache hit's StepResult."};
PyMethodDef kFastSucceed = {
    "_succeed",
    reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(FastSucceed)),
    METH_FASTCALL, "After a successful attempt: StepResult."};

void ReleaseEngineRef(PyObject* capsule) {
  auto* owner = static_cast<PyObject*>(PyCapsule_GetContext(capsule));
  Py_XDECREF(owner);
}

py::tuple FastCalls(py::object engine_obj) {
  Engine* engine = engine_obj.cast<Engine*>();
  PyObject* cap = PyCapsule_New(engine, kEngineCapsule, ReleaseEngineRef);
  if (!cap) throw py::error_already_set();
  Py_INCREF(engine_obj.ptr());
  PyCapsule_SetContext(cap, engine_obj.ptr());
  auto capsule = py::reinterpret_steal<py::object>(cap);
  auto begin =
      py::reinterpret_steal<py::object>(PyCFunction_New(&kFastBegin, cap));
  auto succeed =
      py::reinterpret_steal<py::object>(PyCFunction_New(&kFastSucceed, cap));
  if (!begin || !succeed) throw py::error_already_set();
  return py::make_tuple(begin, succeed);
}

}  // namespace

void RegisterExecutor(py::module_& m) {
  m.def(
      "_retry_policy_check",
      [](int kind, int max_attempts, double base, double factor,
         double max_backoff, double jitter) -> py::object {
        if (kind < 0 || kind > 2)
          return py::str("strategy must be exponential, linear or fixed");
        RetryPolicy p;
        p.kind = static_cast<RetryPolicy::Kind>(kind);
        p.max_attempts = max_attempts;
        p.base_delay_s = base;
        p.backoff_factor = factor;
        p.max_backoff_s = max_backoff;
        p.jitter = jitter;
        const absl::Status st = p.Validate();
        if (st.ok()) return py::none();
        return py::str(std::string(st.message()));
      },
      "None when the retry policy is valid, else the problem (from the C++ "
      "RetryPolicy).");
  m.def(
      "_retry_delay",
      [](int kind, int max_attempts, double base, double factor,
         double max_backoff, double jitter, int next_attempt, py::object hint,
         uint64_t bits) {
        RetryPolicy p;
        p.kind = static_cast<RetryPolicy::Kind>(kind);
        p.max_attempts = max_attempts;
        p.base_delay_s = base;
        p.backoff_factor = factor;
        p.max_backoff_s = max_backoff;
        p.jitter = jitter;
        absl::optional<double> h;
        if (!hint.is_none()) h = hint.cast<double>();
        return p.DelayBeforeAttempt(next_attempt, h, bits);
      },
      "The native back-off computation (for previews and tests).");

  m.def("_clock_offset_ns", &ClockOffsetNs,
        "CLOCK_REALTIME - CLOCK_MONOTONIC in ns (span times to Unix time).");
  if (!InitStepResultType(m.ptr())) throw py::error_already_set();
  {
    struct Kind {
      const char* name;
      Next value;
      const char* doc;
    };
    static constexpr Kind kKinds[] = {
        {"AWAIT", Next::kAwait, "aw is the step's awaitable: await it"},
        {"AWAIT_WITH_TIMEOUT", Next::kAwaitWithTimeout,
         "await aw within the step's timeout (_timeout_s(rec))"},
        {"RUN_SYNC", Next::kRunSync,
         "a sync step: _sync_call(rec, ...) for the worker pool"},
        {"RAISED", Next::kRaised,
         "aw is the attempt's exception: report it with _failed"},
        {"FALLBACK", Next::kFallback,
         "aw is (fallback step, exception): run it, then _fallback_done"},
        {"FOLLOW", Next::kFollow,
         "await aw, the single flight leader's StepResult (None: run again)"},
        {"ASK_SHARED_TIER", Next::kAskSharedTier,
         "ask the shared cache tier for the key, then _l2_fill or "
         "_begin_leader"},
        {"WAIT_FOR_PERMIT", Next::kWaitForPermit,
         "await aw (a concurrency permit), then _begin_permitted"},
    };
    static_assert(sizeof(kKinds) / sizeof(kKinds[0]) == kNextKinds);
    py::native_enum<Next> kinds(
        m, "Next", "enum.IntEnum",
        "What the Python layer does next with an execution: the core's "
        "verdict, returned by _begin and the calls that resume an execution "
        "(caudal/executor/next.h).");
    for (const Kind& k : kKinds) kinds.value(k.name, k.value, k.doc);
    kinds.finalize();
    py::object type = m.attr("Next");
    for (const Kind& k : kKinds)
      g_next[static_cast<int>(k.value)] =
          py::object(type.attr(k.name)).release().ptr();
  }
  py::class_<PyAdmission>(
      m, "_Admission",
      "An execution's admission, held between two engine calls while it "
      "follows a single flight, asks the shared tier or waits for a permit "
      "(opaque; validated and used once per wait).")
      .def_property_readonly("key", &PyAdmission::key,
                             "The cache key (bytes), for the shared tier.");

  py::class_<ManualClock, std::shared_ptr<ManualClock>>(
      m, "ManualClock",
      "A clock that moves only when advanced (an atomic count of ns); an "
      "Engine made with one reads its time from it "
      "(caudal.testing.ManualClock wraps it).")
      .def(
          py::init([](double start_s) {
            if (!(start_s >= 0) || start_s > 9e9)
              throw py::value_error(
                  "ManualClock: start_s must be in [0, 9e9] seconds");
            return std::make_shared<ManualClock>(
                static_cast<int64_t>(start_s * 1e9));
          }),
          py::arg("start_s") = static_cast<double>(ManualClock::kStartNs) / 1e9)
      .def("now_ns", &ManualClock::now_ns, "The time in ns.")
      .def(
          "advance",
          [](ManualClock& c, double seconds) {
            if (!(seconds >= 0) || seconds > 9e9)
              throw py::value_error(
                  "ManualClock.advance: seconds must be in [0, 9e9]");
            return c.Advance(static_cast<int64_t>(seconds * 1e9));
          },
          py::arg("seconds"), "Moves the time forward; the new time in ns.");

  py::class_<Engine>(
      m, "Engine",
      "Native executor engine (internal; use caudal.ExecutorCore).")
      .def(py::init<const OptimizationConfig&, std::shared_ptr<ManualClock>>(),
           py::arg("config"), py::arg("clock") = nullptr)
      .def("apply_config", &Engine::apply_config)
      .def_property_readonly("config", &Engine::config)
      .def("_begin", &Engine::begin)
      .def("_restart", &Engine::restart)
      .def("set_default_retry", &Engine::set_default_retry)
      .def("breaker_stats", &Engine::breaker_stats)
      .def("transitions", &Engine::transitions)
      .def("error_stats", &Engine::error_stats, py::arg("max_patterns") = 20)
      .def("_leave_flight", &Engine::leave_flight)
      .def("_begin_permitted", &Engine::begin_permitted)
      .def("_cancel_wait", &Engine::cancel_wait)
      .def("concurrency_stats", &Engine::concurrency_stats)
      .def("limit_history", &Engine::limit_history)
      .def("window", &Engine::window)
      .def("set_l2", &Engine::set_l2)
      .def("_l2_fill", &Engine::l2_fill)
      .def("_begin_leader", &Engine::begin_leader)
      .def("_abandon_flight", &Engine::abandon_flight)
      .def("_cache_policy", &Engine::cache_policy)
      .def("_cache_epoch", &Engine::cache_epoch)
      .def("_cache_storable", &Engine::cache_storable)
      .def("invalidate_tag", &Engine::invalidate_tag)
      .def("invalidate_prefix", &Engine::invalidate_prefix)
      .def("clear_cache", &Engine::clear_cache)
      .def("cache_stats", &Engine::cache_stats)
      .def("_sync_call", &Engine::sync_call,
           "A sync step's attempt: (fn, args, kwargs, timeout_s) for the "
           "worker pool.")
      .def("_timeout_s", &Engine::timeout_s)
      .def("_succeed",
           [](Engine& e, py::handle h, py::handle out) {
             PyObject* r = e.succeed(e.Live(h), out.ptr());
             if (!r) throw py::error_already_set();
             return py::reinterpret_steal<py::object>(r);
           })
      .def("_fast_calls", &FastCalls,
           "(begin, succeed): the two hot-path calls as METH_FASTCALL "
           "functions bound to "
           "this engine")
      .def("_failed", &Engine::failed)
      .def("_fallback_done", &Engine::fallback_done)
      .def("_cancel", &Engine::cancel)
      .def("step_stats", &Engine::step_stats)
      .def("total_stats", &Engine::total_stats)
      .def("latency_buckets", &Engine::latency_buckets,
           py::arg("step_name") = py::none(),
           "Non-empty latency buckets (lower_ns, upper_ns, count) of a step "
           "(None: all steps).")
      .def("reset_stats", &Engine::reset_stats)
      .def("step_table", &Engine::step_table)
      .def_property_readonly("in_flight", &Engine::in_flight)
      .def(
          "_subscribe_events",
          [](py::object self, uint32_t mask, size_t capacity,
             py::object waker) {
            return SubscribeEvents(self.cast<Engine&>().core().events(), mask,
                                   capacity, std::move(waker), self);
          },
          "A native subscription to this engine's event bus.")
      .def("event_stats",
           [](Engine& e) { return EventBusStatsDict(e.core().events()); })
      .def("memory_stats", [](Engine& e) { return MemoryStatsDict(e.core()); })
      .def("_set_tracing", [](Engine& e, bool on) { SetTracing(e.core(), on); })
      .def("_set_parent_source",
           [](Engine& e, py::object cv, py::object key) {
             SetParentSource(e.core(), e.telemetry(), std::move(cv),
                             std::move(key));
           })
      .def("_wait_spans",
           [](Engine& e, double timeout_s) {
             return WaitForSpans(e.core(), timeout_s);
           })
      .def("_notify_spans", [](Engine& e) { e.core().spans().Notify(); })
      .def("_drain_spans", [](Engine& e) { return DrainSpans(e.core()); })
      .def("span_stats", [](Engine& e) { return SpanStatsDict(e.core()); })
      .def("_set_rss_source",
           [](Engine& e, py::object source) {
             SetRssSource(e.core(), std::move(source));
           })
      .def("_set_memory_interval",
           [](Engine& e, double seconds) {
             e.core().memory_monitor().SetInterval(
                 static_cast<int64_t>(seconds * 1e9));
           })
      .def("cpu_stats", [](Engine& e) { return CpuStatsDict(e.core()); })
      .def("breaker_section",
           [](Engine& e) { return BreakerSectionDict(e.core()); })
      .def("error_section", [](Engine& e) { return ErrorSectionDict(e.core()); })
      .def("trends", [](Engine& e) { return TrendsDict(e.core()); })
      .def("trend_checkpoints",
           [](Engine& e) { return e.core().trend_checkpoints(); })
      .def(
          "_set_cpu_source",
          [](Engine& e, py::object source, int allowed_cpus) {
            SetCpuSource(e.core(), std::move(source), allowed_cpus);
          },
          py::arg("source"), py::arg("allowed_cpus") = 0)
      .def("_publish_event",
           [](Engine& e, const std::string& type, const std::string& key,
              double value, double value2, const std::string& detail) {
             return PublishEvent(e.core(), type, key, value, value2, detail);
           })
      .def("_set_analysis_hook", &Engine::set_analysis_hook,
           "Called (GIL held, on the executing loop's thread) when an "
           "automatic-optimization analysis is due.");
}

}  // namespace caudal::bindings
