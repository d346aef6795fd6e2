// Engine: after an attempt: success, failure (the core's verdict), fallback,
// cancellation, and what an ended execution wakes.
#include "engine.h"

namespace caudal::bindings {

PyObject* Engine::succeed(ExecutionRecord* r, PyObject* out, PyObject* h) {
  if (r->cache_lead) return SucceedCached(r, out, h);
  const ExecutionOutcome o = core_.Succeed(r, core_.NowNs());
  Wake(o.wake);  // no flight: the cache is off for this execution
  Wake(o.wake_key);
  for (const Waiter& w : o.wake_more) Wake(w);
  return SuccessResult(h, o, out);
}

PyObject* Engine::SuccessResult(PyObject* h, const ExecutionOutcome& o,
                                PyObject* out) {
  const double latency_s = static_cast<double>(o.latency_ns) / 1e9;
  if (h != nullptr && PendingHandle(h) != 0)
    return CompleteStepResult(h, out, o.attempts, latency_s);
  return NewStepResult(EntryOf(o)->name_str.ptr(), out, true, o.attempts,
                       latency_s, Py_None, Py_None, false);
}

PyObject* Engine::SucceedCached(ExecutionRecord* r, PyObject* out,
                                PyObject* h) {
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
    auto res = py::reinterpret_steal<py::object>(SuccessResult(h, o, out));
    if (!res) throw py::error_already_set();
    Ended(o, res, copy);
    return res.release().ptr();
  } catch (py::error_already_set& err) {
    err.restore();
    return nullptr;
  }
}

void Engine::Ended(const ExecutionOutcome& o, py::handle result, bool copy) {
  Wake(o.wake);
  Wake(o.wake_key);
  for (const Waiter& w : o.wake_more) Wake(w);
  if (o.flight)
    ResolveFollowers(*EntryOf(o), core_.EndFlight(o.flight_key), result, copy);
}

py::object Engine::FailedAt(py::handle h, py::handle exc, bool timed_out,
                            int64_t now_ns, bool* retry_now) {
  ExecutionRecord* r = Live(h);
  PyStepEntry* e = Entry(r);
  const FailureDecision d = r->rejected
                                ? core_.AttemptFailed(r, now_ns, AttemptError())
                                : AttemptFailed(r, e, exc, timed_out, now_ns);
  for (const Waiter& w : d.wake) Wake(w);
  if (d.verdict == FailureVerdict::kRetry) {
    if (retry_now != nullptr && d.delay_s <= 0) {
      *retry_now = true;
      return py::object();
    }
    return py::float_(d.delay_s);
  }
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

FailureDecision Engine::AttemptFailed(ExecutionRecord* r, PyStepEntry* e,
                                      py::handle exc, bool timed_out,
                                      int64_t now_ns) {
  AttemptError err;
  err.timed_out = timed_out;
  err.retryable = Matches(e->retry_on, exc, /*if_none=*/true);
  err.counts_for_breaker = !Matches(e->breaker_exclude, exc, /*if_none=*/false);
  // The message only keys error patterns: str(exc) runs user code, so it is
  // not asked for when they are off. Viewed in the str object, not copied.
  py::object message;
  if (r->config->enable_optimized_error_handling)
    err.message = StrView(exc, &message);
  std::string retry_after, retry_after_ms;
  ClassifyFailure(exc, &err, &retry_after, &retry_after_ms);
  err.retry_after_header = retry_after;
  err.retry_after_ms_header = retry_after_ms;
  // Last: the probes above may run user code (properties, __str__), and
  // the name is valid until the next call on this thread.
  err.exc_type = QualifiedTypeName(exc);
  return core_.AttemptFailed(r, now_ns, err);
}

const char* Engine::StoppedReason(FailureVerdict v) {
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

py::object Engine::fallback_done(py::handle h, py::handle primary_exc,
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
  reinterpret_cast<StepResultObject*>(res.ptr())->metadata = md.release().ptr();
  // Followers share the outcome; nothing is stored (a fallback's result is
  // never cached: Executor::MayStore).
  Ended(o, res, false);
  return res;
}

void Engine::cancel(py::handle h) {
  ExecutionRecord* r = Live(h);
  // Followers must not inherit a cancellation: they run the step themselves.
  Ended(core_.Cancel(r, core_.NowNs()), py::none(), false);
}

py::object Engine::Final(ExecutionRecord* r, py::handle exc, bool fell_back,
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

py::object Engine::CircuitOpen(ExecutionRecord* r, py::handle cause) {
  PyStepEntry* e = Entry(r);
  const std::string& bkey =
      e->spec.breaker_key.empty() ? e->spec.name : e->spec.breaker_key;
  static py::handle exc_type =
      CaudalAttr("caudal.errors", "CircuitOpenError").release();
  py::object exc = exc_type(bkey, static_cast<double>(r->retry_after_ns) / 1e9);
  // Refused again after waiting: the cause is still the last attempt's
  // error, not the previous refusal.
  py::object last = py::reinterpret_borrow<py::object>(cause);
  if (!last.is_none() && PyObject_IsInstance(last.ptr(), exc_type.ptr()) == 1) {
    PyObject* inner = PyException_GetCause(last.ptr());
    last = inner != nullptr ? py::reinterpret_steal<py::object>(inner)
                            : py::object(py::none());
  }
  if (!last.is_none()) PyException_SetCause(exc.ptr(), last.release().ptr());
  return exc;
}

py::object Engine::EndRejected(ExecutionRecord* r, py::handle exc) {
  const ExecutionOutcome o = core_.Reject(r, core_.NowNs());
  py::object feedback = FeedbackOf(exc);
  auto res = py::reinterpret_steal<py::object>(
      NewStepResult(EntryOf(o)->name_str.ptr(), Py_None, false, 0,
                    static_cast<double>(o.latency_ns) / 1e9, feedback.ptr(),
                    exc.ptr(), false));
  if (!res) throw py::error_already_set();
  py::dict md;
  md["retry_stopped"] = "breaker_open";
  reinterpret_cast<StepResultObject*>(res.ptr())->metadata = md.release().ptr();
  Ended(o, res, false);
  return res;
}

void Engine::WakePermits(const ReleasedPermits& p) {
  Wake(p.wake);
  Wake(p.wake_key);
}

}  // namespace caudal::bindings
