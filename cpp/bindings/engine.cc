// Engine: construction, config, the step table (analysis, identity) and
// the helpers the engine's files share.
#include "engine.h"

#include <atomic>

#include "absl/strings/str_cat.h"

namespace caudal::bindings {

// Raises caudal.errors.StaleHandleError.
[[noreturn]] void ThrowStale(const std::string& message) {
  static PyObject* type =
      CaudalAttr("caudal.errors", "StaleHandleError").release().ptr();
  PyErr_SetString(type, message.c_str());
  throw py::error_already_set();
}

// The message for a handle the engine refused.
std::string StaleMessage(PyObject* h) {
  if (IsStepResult(h))  // what _begin hands out stands for its execution
    return "stale execution handle: a StepResult that stands for no running "
           "execution (its execution has ended, or it was never one)";
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

PyObject* g_next[kNextKinds] = {};

uint64_t NextEngineId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

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

Engine::Engine(const OptimizationConfig& config,
               std::shared_ptr<ManualClock> clock, py::object retry,
               const std::string& backend)
    : core_(config, /*random_seed=*/0x5eed, std::move(clock)) {
  if (!retry.is_none() &&
      !py::isinstance(retry, CaudalAttr("caudal.resilience", "RetryStrategy")))
    throw py::type_error(
        "Engine: retry must be a caudal.RetryStrategy or None, got " +
        std::string(py::str(py::type::of(retry).attr("__name__"))));
  const py::tuple backends = CaudalAttr("caudal._backends", "BACKENDS");
  if (!backends.contains(py::str(backend)))
    throw py::value_error("Engine: backend must be one of " +
                          std::string(py::repr(backends)) + ", got " +
                          std::string(py::repr(py::str(backend))));
  default_retry_ = std::move(retry);
  default_backend_ = py::str(backend);
  backend_ = backend;
  templates_on_ = backend == "local";
}

Engine::~Engine() {
  clear_cache();
  // Entries hold Python objects; drop them while the GIL is held.
  auto dropped = core_.steps().Clear();
  dropped.clear();
  templates_.clear();
}

void Engine::apply_config(const OptimizationConfig& config) {
  std::vector<Waiter> woken;
  const absl::Status s = core_.ApplyConfig(config, &woken);
  if (!s.ok()) ThrowStatus(s);
  for (Waiter& w : woken) Wake(std::move(w));
}

uint64_t Engine::StepKeyOf(py::handle step, PyObject** a, PyObject** b) {
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

std::shared_ptr<StepEntry> Engine::Lookup(py::handle step) {
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

std::shared_ptr<StepEntry> Engine::Analyse(py::handle step, uint64_t key,
                                           PyObject* a, PyObject* b) {
  const FunctionFacts facts =
      templates_on_ ? FunctionFactsOf(step.ptr()) : FunctionFacts{};
  const bool is_step =
      templates_on_ && facts.code == nullptr && IsCaudalStep(step.ptr());
  std::shared_ptr<FunctionTemplate> tmpl;
  std::shared_ptr<StepMemo> memo;
  std::shared_ptr<PyStepEntry> e;
  // This executor's per-name lookups for the analysis (stats, breaker,
  // limiter...), kept with the template or memo (its `proto`); `fresher`:
  // the last entry made from it, while alive (what it learnt since).
  StepEntry* proto = nullptr;
  std::shared_ptr<StepEntry> fresher;
  if (facts.code != nullptr) {
    // A plain function: its code object's analysis, if one was made.
    auto it = templates_.find(facts.code);
    if (it != templates_.end() && it->second->Matches(facts)) {
      tmpl = it->second;
      if (std::shared_ptr<StepEntry> r = RefitFromTemplate(tmpl, key, step))
        return r;
      e = EntryFrom(tmpl->analysis, step, step);
      e->name_str = tmpl->name_str;
      proto = tmpl->proto.get();
      fresher = tmpl->last.lock();
    }
  } else if (is_step) {
    // A caudal.Step met before (evicted since): its analysis as it was.
    RecalledObjects got;
    memo = RecallStep(step.ptr(), default_retry_.ptr(), backend_, &got);
    if (memo && memo->parked && memo->proto_engine == id_) {
      e = Unpark(memo, got);
      e->key_a = py::reinterpret_borrow<py::object>(a);
      e->key_b = py::none();
      memo->last = e;
      core_.steps().Regained();  // evicted, and met again
      if (std::shared_ptr<StepEntry> dropped = core_.steps().Insert(key, e))
        Dropped(std::move(dropped));
      return e;
    }
    if (memo) {
      e = EntryFrom(memo->analysis, got.fn,
                    memo->identity_is_fn ? got.fn : py::none());
      e->fallback = std::move(got.fallback);
      e->breaker_exclude = std::move(got.breaker_exclude);
      e->retry_on = std::move(got.retry_on);
      e->name_str = memo->name_str;
      // The memo is process-wide; the lookups are this executor's own.
      if (memo->proto_engine == id_) {
        proto = memo->proto.get();
        fresher = memo->last.lock();
      }
    }
  }
  if (!e) {
    if (!analyse_) analyse_ = CaudalAttr("caudal._steps", "analyse");
    const py::object found = analyse_(step, default_retry_, default_backend_);
    if (!py::isinstance<StepAnalysis>(found)) {
      throw py::type_error(
          "caudal._steps.analyse must return a caudal._core.StepAnalysis, "
          "got " +
          std::string(py::str(py::type::of(found).attr("__name__"))));
    }
    // Checked and converted by its constructor: copied, never decoded.
    StepAnalysis t = found.cast<const StepAnalysis&>();
    t.spec.cache_group = GroupOf(t.spec.name).lo;
    e = EntryFrom(t, t.fn, t.identity_of);
    e->name_str = py::str(t.spec.name);
    if (facts.code != nullptr && t.fn.ptr() == step.ptr() &&
        t.identity_of.ptr() == step.ptr()) {
      // A plain function analysed as itself (what analyse does for one):
      // the analysis serves every function of its code.
      tmpl = std::make_shared<FunctionTemplate>();
      tmpl->code = py::reinterpret_borrow<py::object>(facts.code);
      tmpl->name = py::reinterpret_borrow<py::object>(facts.name);
      tmpl->qualname = py::reinterpret_borrow<py::object>(facts.qualname);
      tmpl->module = py::reinterpret_borrow<py::object>(facts.module);
      tmpl->defaults = facts.defaults;
      tmpl->analysis = t;
      tmpl->analysis.fn = py::none();
      tmpl->analysis.identity_of = py::none();
      tmpl->name_str = e->name_str;
      auto slot = templates_.find(facts.code);
      if (slot != templates_.end()) {
        slot->second = tmpl;
      } else {
        if (templates_.size() >= kMaxTemplates)
          templates_.erase(templates_.begin());  // one goes, any one
        templates_.emplace(facts.code, tmpl);
      }
    } else if (is_step) {
      memo = RememberStep(step.ptr(), default_retry_, backend_, t);
      if (memo) memo->name_str = e->name_str;
    }
  }
  e->tmpl = tmpl;
  e->memo = memo;
  StepSpec& s = e->spec;
  StepTable& table = core_.steps();
  if (proto != nullptr) {
    // Registered, looked up and cached for this spec already, by name:
    // stats, breakers and limiters are per name (or key), never per entry.
    // The prototype does not keep its name's stats alive (a name the bound
    // reclaimed while only prototypes pointed at it starts a fresh row).
    e->stats_owner = proto->stats_weak.lock();
    if (!e->stats_owner) {
      e->stats_owner = core_.StatsFor(s.name);
      proto->stats_weak = e->stats_owner;
    }
    e->stats = e->stats_owner.get();
    CopyEntryCaches(fresher ? *fresher : *proto, *e);
  } else {
    std::vector<Waiter> woken;
    const absl::Status st = core_.RegisterLimitKey(s, &woken);
    for (Waiter& w : woken) Wake(std::move(w));
    if (!st.ok()) ThrowStatus(st);
    e->stats_owner = core_.StatsFor(s.name);
    e->stats = e->stats_owner.get();
    if (tmpl || memo) {
      auto p = std::make_shared<StepEntry>();
      p->stats_weak = e->stats_owner;
      if (tmpl) {
        tmpl->proto = p;
      } else {
        memo->proto = p;
        memo->proto_engine = id_;
      }
    }
  }
  if (tmpl) tmpl->last = e;
  if (memo) memo->last = e;
  if (!e->no_identity.empty() && !e->identity_pending)
    table.MarkUncacheable(s.name, e->no_identity);
  e->key_a = py::reinterpret_borrow<py::object>(a);
  e->key_b = b ? py::reinterpret_borrow<py::object>(b) : py::none();
  // For the read-outs: the settings of the last analysis made under its
  // name (an analysis reused for another object is not made again).
  if (proto == nullptr) table.Describe(s);
  if (std::shared_ptr<StepEntry> dropped = table.Insert(key, e))
    Dropped(std::move(dropped));
  return e;
}

std::shared_ptr<PyStepEntry> Engine::EntryFrom(const StepAnalysis& t,
                                               py::handle fn,
                                               py::handle identity_of) {
  auto e = std::make_shared<PyStepEntry>();
  e->spec = t.spec;
  e->fn = py::reinterpret_borrow<py::object>(fn);
  e->fallback = t.fallback;
  e->retry_on = t.retry_on;
  e->breaker_exclude = t.breaker_exclude;
  e->cache_context = t.cache_context;
  // The group (invalidate_prefix) is by name; the key's namespace adds
  // the identity of what runs. None: no identity, the reason instead.
  if (!identity_of.is_none()) {
    // Computed by ResolveIdentity when first needed: never for a step
    // that only runs uncached.
    e->identity_of = py::reinterpret_borrow<py::object>(identity_of);
    e->identity_pending = true;
    e->no_identity = "(pending)";  // a placeholder, short enough for SSO
  } else if (!t.uncacheable.empty()) {
    e->no_identity = t.uncacheable;
  } else {
    e->cache_ns = t.cache_ns;
  }
  return e;
}

bool Engine::NativeIdentity(PyStepEntry* e) {
  FunctionTemplate& t = *e->tmpl;
  if (t.static_digest.empty()) {
    // Once per template: the digest of its module, qualname and code.
    std::string d = "-";
    try {
      if (!identity_module_)
        identity_module_ = py::module_::import("caudal._identity");
      const py::object got =
          identity_module_.attr("function_static")(e->identity_of);
      if (PyBytes_Check(got.ptr())) d = got.cast<std::string>();
    } catch (py::error_already_set& err) {
      if (!err.matches(PyExc_Exception)) throw;
    }
    t.static_digest = std::move(d);
    if (!e->identity_pending) return true;  // another thread was first
  }
  Key128 k;
  if (t.static_digest == "-" ||
      !FunctionKey(e->identity_of.ptr(), t.static_digest, &k))
    return false;
  // caudal._identity.namespace's form: "<name>\x1f<digest hex>".
  static constexpr char kHex[] = "0123456789abcdef";
  std::string ns = e->spec.name;
  ns += '\x1f';
  for (int i = 0; i < 16; ++i) {
    const uint64_t half = i < 8 ? k.lo : k.hi;
    const auto byte = static_cast<unsigned>((half >> (8 * (i % 8))) & 0xff);
    ns += kHex[byte >> 4];
    ns += kHex[byte & 15];
  }
  e->identity_pending = false;
  e->identity_of = py::object();
  e->cache_ns = std::move(ns);
  e->no_identity.clear();
  return true;
}

bool Engine::HasIdentityNow(PyStepEntry* e) {
  if (e->identity_pending) ResolveIdentity(e);
  return e->no_identity.empty();
}

void Engine::ResolveIdentity(PyStepEntry* e) {
  // The call runs Python, which may drop the table's entries: keep it.
  const std::shared_ptr<StepEntry> hold = e->shared_from_this();
  if (e->tmpl && NativeIdentity(e)) return;
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
    if (e->memo) {
      // The step's identity holds for its life: remembered with it.
      e->memo->identity_is_fn = false;
      e->memo->analysis.cache_ns = ns;
    }
    e->cache_ns = std::move(ns);
    e->no_identity.clear();
  } else {
    e->no_identity = why;
    core_.steps().MarkUncacheable(e->spec.name, std::move(why));
  }
}

std::string Engine::ErrorText(const py::error_already_set& err) {
  try {
    return py::str(err.type().attr("__qualname__")).cast<std::string>() + ": " +
           py::str(err.value()).cast<std::string>();
  } catch (py::error_already_set&) {
    return "an exception";
  }
}

void Engine::CallAnalysisHook() {
  if (!analysis_hook_) return;
  try {
    analysis_hook_();
  } catch (py::error_already_set& err) {
    err.discard_as_unraisable("caudal automatic optimization hook");
  }
}

void Engine::set_analysis_hook(py::object hook) {
  analysis_hook_ = hook.is_none() ? py::object() : std::move(hook);
}

}  // namespace caudal::bindings
