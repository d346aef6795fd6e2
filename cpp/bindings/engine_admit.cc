// Engine: before an attempt: admission (the core's Executor::Admit,
// converted), the waits between calls, the shared tier, starting attempts.
#include "engine.h"

namespace caudal::bindings {

py::object Engine::begin(py::handle step, py::handle data, py::handle context,
                         py::handle resources) {
  // Automatic optimization: one relaxed load unless an analysis is due.
  if (core_.TakeAnalysisDue()) CallAnalysisHook();
  PyStepEntry* e = FastLookup(step);
  const int64_t now = core_.NowNs();
  AdmitState s;
  // Held before the key is computed: the walk may run Python code that
  // executes other steps, and the table must neither drop this entry nor
  // refit it for another function meanwhile (StepTable::Refit).
  s.step = e->shared_from_this();
  if (Executor::UseCache(*e, *core_.current_config()))
    s.keyed = CacheKey(e, data, context, &s.key);
  return Admit(s, py::handle(), now, data, context, resources);
}

bool Engine::CacheKey(PyStepEntry* e, py::handle data, py::handle context,
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

py::object Engine::Admit(AdmitState& s, py::handle held, int64_t now,
                         py::handle data, py::handle context,
                         py::handle resources) {
  py::object fut;
  absl::optional<AdmitHandover> handover;  // made only when there is some
  // The entry, for a hit or a full table (the record takes the state's).
  PyStepEntry* e = static_cast<PyStepEntry*>(s.step.get());
  // A hit: our own reference to the cached object, taken under the cache's
  // lock (the GIL is held: no Python code runs), instead of a copy of the
  // shared_ptr that holds it.
  PyObject* stored = nullptr;
  auto take = [&](const CachedValue& v) {
    stored = static_cast<PyObject*>(const_cast<void*>(v.get()));
    Py_INCREF(stored);
  };
  const HitTaker take_hit(take);
  Admitted a = core_.Admit(
      s, now,
      [&] {
        fut = PyHelpers::Get().get_running_loop().attr("create_future")();
        return HoldWaiter(fut.ptr());
      },
      &handover, &take_hit);
  switch (a.verdict) {
    case AdmitVerdict::kStarted:
      // From _begin (nothing held), an attempt awaited as it is comes back
      // as a pending StepResult; after a wait, as (rec, aw, Next).
      return StartAttempt(a.record, data, context, resources, py::handle(),
                          /*pending=*/!held);
    case AdmitVerdict::kHit:
      return HitResult(e, py::reinterpret_steal<py::object>(stored), now);
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
      WakePermits(handover->wake);
      ExecutionRecord* r = a.record;
      return py::make_tuple(
          py::int_(r->handle),
          py::make_tuple(Entry(r)->fallback, CircuitOpen(r, py::none())),
          NextOf(Next::kFallback));
    }
    case AdmitVerdict::kFull:
      WakePermits(handover->wake);
      ResolveFollowers(*e, handover->followers, py::none(), false);
      throw std::runtime_error("too many executions in flight (" +
                               std::to_string(HandleTable<int>::kMaxSlots) +
                               ")");
  }
  throw std::logic_error("unknown admission verdict");
}

py::object Engine::HitResult(PyStepEntry* e, py::object stored, int64_t now) {
  py::object out = core_.current_config()->cache_copy_outputs
                       ? PyHelpers::Get().deepcopy(stored)
                       : std::move(stored);
  const int64_t latency = core_.NowNs() - now;
  core_.RecordCacheHit(*e, latency);
  PyObject* res =
      NewStepResult(e->name_str.ptr(), out.ptr(), true, 0,
                    static_cast<double>(latency) / 1e9, Py_None, Py_None, true);
  if (!res) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(res);
}

py::object Engine::Pending(AdmitState& s, py::handle held, bool armed) {
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

PyAdmission& Engine::Take(py::handle obj,
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

py::object Engine::begin_permitted(py::handle adm, py::handle data,
                                   py::handle context, py::handle resources) {
  PyAdmission& a =
      Take(adm, {AdmitState::Stage::kKeyPermit, AdmitState::Stage::kSlot});
  // The state may be the entry's last owner (the table was cleared while it
  // waited): keep it for Admit's use of it after the record took it.
  const std::shared_ptr<StepEntry> keep = a.state.step;
  return Admit(a.state, adm, core_.NowNs(), data, context, resources);
}

void Engine::cancel_wait(py::handle adm, py::handle fut) {
  PyAdmission& a =
      Take(adm, {AdmitState::Stage::kKeyPermit, AdmitState::Stage::kSlot});
  std::shared_ptr<StepEntry> entry = a.state.step;
  Withdrawn w = core_.Withdraw(a.state, PeekWaiter(fut.ptr()));
  WakePermits(w.permits);
  ResolveFollowers(*static_cast<PyStepEntry*>(entry.get()), w.followers,
                   py::none(), false);
}

void Engine::Wake(Waiter w) {
  if (!w) return;
  PyHelpers::Get().resolve(py::handle(static_cast<PyObject*>(w.get())),
                           py::bool_(true));
}

py::object Engine::RestartAt(py::handle h, py::handle data, py::handle context,
                             py::handle resources, py::handle last_exc,
                             int64_t now_ns) {
  ExecutionRecord* r = Live(h);
  if (!core_.StartAttempt(r, now_ns)) {
    // The breaker opened meanwhile (often on this very step's failures):
    // the refusal is this attempt's outcome, and `failed` decides whether
    // to wait for the probe; the last error is the refusal's cause.
    return py::make_tuple(py::int_(r->handle), CircuitOpen(r, last_exc),
                          NextOf(Next::kRaised));
  }
  return StartAttempt(r, data, context, resources, h);  // the same handle
}

py::tuple Engine::sync_call(py::handle h, py::handle data, py::handle context,
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
      if (e->spec.pass_context_kw && !context.is_none()) d["context"] = context;
      if (e->spec.pass_resources_kw && !resources.is_none())
        d["resources"] = resources;
      if (!d.empty()) kw = std::move(d);
      break;
    }
  }
  return py::make_tuple(e->fn, std::move(args), std::move(kw),
                        TimeoutSeconds(r));
}

void Engine::ResolveFollowers(PyStepEntry& e,
                              const std::vector<Waiter>& followers,
                              py::handle leader, bool copy) {
  if (followers.empty()) return;
  PyHelpers& h = PyHelpers::Get();
  for (const Waiter& w : followers) {
    if (!w) continue;  // a placeholder between two JoinFlight calls (see there)
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

py::object Engine::l2_fill(py::handle adm, py::handle value, double waited_s,
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
  auto res = py::reinterpret_steal<py::object>(NewStepResult(
      e->name_str.ptr(), out.ptr(), true, 0, waited_s, Py_None, Py_None, true));
  if (!res) throw py::error_already_set();
  py::dict md;
  md["cache_tier"] = "l2";
  reinterpret_cast<StepResultObject*>(res.ptr())->metadata = md.release().ptr();
  Withdrawn w = core_.Withdraw(a.state, Waiter());
  ResolveFollowers(*e, w.followers, res, cfg->cache_copy_outputs);
  return res;
}

py::object Engine::begin_leader(py::handle adm, py::handle data,
                                py::handle context, py::handle resources) {
  PyAdmission& a = Take(adm, {AdmitState::Stage::kSharedTier});
  const std::shared_ptr<StepEntry> keep = a.state.step;  // as above
  return Admit(a.state, adm, core_.NowNs(), data, context, resources);
}

void Engine::abandon_flight(py::handle adm) {
  PyAdmission& a = Take(adm, {AdmitState::Stage::kSharedTier});
  std::shared_ptr<StepEntry> entry = a.state.step;
  Withdrawn w = core_.Withdraw(a.state, Waiter());
  ResolveFollowers(*static_cast<PyStepEntry*>(entry.get()), w.followers,
                   py::none(), false);
}

py::tuple Engine::cache_policy(py::handle step) {
  std::shared_ptr<StepEntry> entry = Lookup(step);
  auto* e = static_cast<PyStepEntry*>(entry.get());
  return py::make_tuple(Executor::CacheTtlSeconds(*e, *core_.current_config()),
                        e->spec.tags, e->name_str);
}

bool Engine::cache_storable(py::handle step, py::handle result,
                            uint64_t epoch) {
  if (!IsStepResult(result.ptr()))
    throw py::type_error("result must be a StepResult");
  std::shared_ptr<StepEntry> entry = Lookup(step);
  auto* r = reinterpret_cast<StepResultObject*>(result.ptr());
  return core_.MayStore(*entry, r->success, FellBack(r), epoch);
}

bool Engine::FellBack(StepResultObject* r) {
  if (r->metadata == nullptr || !PyDict_Check(r->metadata)) return false;
  PyObject* v = PyDict_GetItemString(r->metadata, "fallback_triggered");
  return v != nullptr && PyObject_IsTrue(v) == 1;
}

void Engine::leave_flight(py::handle adm, py::handle fut) {
  if (!py::isinstance<PyAdmission>(adm))
    ThrowStale("not an admission of this executor: " +
               std::string(Py_TYPE(adm.ptr())->tp_name));
  PyAdmission& a = adm.cast<PyAdmission&>();
  if (a.engine_id != id_) ThrowStale("admission belongs to another executor");
  core_.LeaveFlight(a.state.key, PeekWaiter(fut.ptr()));
}

PyStepEntry* Engine::FastLookup(py::handle step) {
  struct Last {
    const StepTable* table;
    uint64_t generation;
    PyObject* step;
    PyStepEntry* entry;
  };
  static thread_local Last last __attribute__((tls_model("initial-exec"))) = {};
  const StepTable& table = core_.steps();
  if (last.step == step.ptr() && last.table == &table &&
      last.generation == table.generation() && !PyMethod_Check(step.ptr())) {
    return last.entry;
  }
  std::shared_ptr<StepEntry> entry = Lookup(step);  // the table keeps it alive
  auto* e = static_cast<PyStepEntry*>(entry.get());
  last = {&table, table.generation(), step.ptr(), e};
  return e;
}

py::object Engine::Invoke(PyStepEntry* e, py::handle data, py::handle context,
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

py::object Engine::StartAttempt(ExecutionRecord* r, py::handle data,
                                py::handle context, py::handle resources,
                                py::handle handle_obj, bool pending) {
  PyStepEntry* e = Entry(r);
  // A retry hands back the handle object it was given (the same value).
  auto handle = [&]() -> py::object {
    return handle_obj ? py::reinterpret_borrow<py::object>(handle_obj)
                      : py::int_(r->handle);
  };
  if (e->spec.kind == StepKind::kSync)
    return Triple(handle(), py::none(), NextOf(Next::kRunSync));
  py::object aw;
  try {
    aw = Invoke(e, data, context, resources);
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
    return Triple(handle(), py::reinterpret_steal<py::object>(value),
                  NextOf(Next::kRaised));
  }
  if (e->spec.timeout_ns > 0)
    return Triple(handle(), aw, NextOf(Next::kAwaitWithTimeout));
  if (!pending) return Triple(handle(), aw, NextOf(Next::kAwait));
  // The common case: no tuple and no int for the handle; the result that
  // _succeed fills in carries both (step_result.h).
  PyObject* res = NewPendingStepResult(e->name_str.ptr(), r->handle, aw.ptr());
  if (!res) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(res);
}

py::object Engine::ContextFields(const py::object& fields, py::handle context) {
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

}  // namespace caudal::bindings
