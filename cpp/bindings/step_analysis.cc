// caudal._core.StepKind, CallShape, RetryPolicy and StepAnalysis: the typed
// objects the Python step analysis hands the engine (step_analysis.h).
#include "step_analysis.h"

#include <pybind11/native_enum.h>
#include <pybind11/stl.h>

#include <climits>
#include <cmath>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "step_reuse.h"

namespace caudal::bindings {
namespace {

// Seconds past this overflow the core's int64 nanoseconds once added to a
// clock reading (caudal._bounds.MAX_SECONDS).
constexpr double kMaxSeconds = 1e9;

// The registered enum types, for the constructors' checks.
py::handle g_step_kind_type;
py::handle g_call_shape_type;

// Checks and converts the keyword arguments of one constructor: a value
// of the wrong type or out of range is a ConfigurationError naming
// "<owner>.<field>".
class Fields {
 public:
  explicit Fields(const char* owner) : owner_(owner) {}

  [[noreturn]] void Fail(const char* field, const std::string& rule,
                         py::handle got) const {
    std::string shown = py::repr(got);
    if (shown.size() > 80) shown = shown.substr(0, 77) + "...";
    for (char& c : shown) {
      if (c == '\n' || c == '\r') c = ' ';  // one problem, one line
    }
    ThrowStatus(absl::InvalidArgumentError(
        std::string(owner_) + "." + field + " must be " + rule + ", got " +
        std::string(py::str(py::type::of(got).attr("__name__"))) + " " +
        shown));
  }

  bool Bool(const char* f, py::handle v) const {
    if (!PyBool_Check(v.ptr())) Fail(f, "a bool", v);
    return v.ptr() == Py_True;
  }

  std::string Str(const char* f, py::handle v, const char* rule = "a str") {
    if (!PyUnicode_Check(v.ptr())) Fail(f, rule, v);
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(v.ptr(), &n);
    if (s == nullptr) throw py::error_already_set();  // lone surrogates
    return std::string(s, static_cast<size_t>(n));
  }

  // An int in [lo, hi].
  int Int(const char* f, py::handle v, int lo, int hi, const char* rule) {
    if (!PyLong_Check(v.ptr()) || PyBool_Check(v.ptr())) Fail(f, rule, v);
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
    if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (overflow || x < lo || x > hi) Fail(f, rule, v);
    return static_cast<int>(x);
  }

  // A number (not a bool) that a double holds.
  double Number(const char* f, py::handle v, const char* rule) {
    if (PyBool_Check(v.ptr()) ||
        !(PyFloat_Check(v.ptr()) || PyLong_Check(v.ptr())))
      Fail(f, rule, v);
    const double x = PyFloat_AsDouble(v.ptr());
    if (x == -1.0 && PyErr_Occurred()) {
      if (!PyErr_ExceptionMatches(PyExc_OverflowError))
        throw py::error_already_set();
      PyErr_Clear();  // an int too large for a double
      Fail(f, rule, v);
    }
    return x;
  }

  // Seconds in (0, kMaxSeconds] (or [0, ...] when zero is allowed).
  double Seconds(const char* f, py::handle v, bool zero_ok) {
    const char* rule = zero_ok ? "a number of seconds in [0, 1e9] or None"
                               : "a number of seconds in (0, 1e9] or None";
    const double x = Number(f, v, rule);
    if (!std::isfinite(x) || x > kMaxSeconds || x < 0 || (x == 0 && !zero_ok))
      Fail(f, rule, v);
    return x;
  }

  // None, a tuple of exception types, or a predicate (a callable that is
  // not a type: a single type comes as a one-tuple).
  py::object ExceptionFilter(const char* f, py::handle v) {
    const char* rule =
        "None, a tuple of exception types, or a predicate exc -> bool";
    if (v.is_none()) return py::none();
    if (PyTuple_Check(v.ptr())) {
      for (py::handle t : py::reinterpret_borrow<py::tuple>(v)) {
        if (!PyType_Check(t.ptr()) ||
            !PyType_IsSubtype(
                reinterpret_cast<PyTypeObject*>(t.ptr()),
                reinterpret_cast<PyTypeObject*>(PyExc_BaseException)))
          Fail(f, rule, v);
      }
      return py::reinterpret_borrow<py::object>(v);
    }
    if (PyType_Check(v.ptr()) || !PyCallable_Check(v.ptr())) Fail(f, rule, v);
    return py::reinterpret_borrow<py::object>(v);
  }

  // A list or tuple of str.
  std::vector<std::string> Strings(const char* f, py::handle v,
                                   const char* rule) {
    if (!PyList_Check(v.ptr()) && !PyTuple_Check(v.ptr())) Fail(f, rule, v);
    std::vector<std::string> out;
    for (py::handle s : v) {
      if (!PyUnicode_Check(s.ptr())) Fail(f, rule, v);
      out.push_back(Str(f, s, rule));
    }
    return out;
  }

  template <typename Enum>
  Enum Member(const char* f, py::handle v, py::handle type, const char* rule) {
    if (!py::isinstance(v, type)) Fail(f, rule, v);
    return v.cast<Enum>();
  }

 private:
  const char* owner_;
};

py::object OptionalFloat(bool set, double v) {
  return set ? py::object(py::float_(v)) : py::object(py::none());
}

RetryPolicy MakeRetryPolicy(const py::object& kind, const py::object& attempts,
                            const py::object& base, const py::object& factor,
                            const py::object& max_backoff,
                            const py::object& jitter) {
  Fields f("RetryPolicy");
  const char* kinds = "'exponential', 'linear' or 'fixed'";
  const absl::StatusOr<RetryPolicy::Kind> k =
      ParseRetryKind(f.Str("kind", kind, kinds));
  if (!k.ok()) f.Fail("kind", kinds, kind);
  RetryPolicy p;
  p.kind = *k;
  p.max_attempts = f.Int("max_attempts", attempts, 1, INT_MAX, "an int >= 1");
  p.base_delay_s = f.Number("base_delay_s", base, "a number");
  p.backoff_factor = f.Number("backoff_factor", factor, "a number");
  p.max_backoff_s = f.Number("max_backoff_s", max_backoff, "a number");
  p.jitter = f.Number("jitter", jitter, "a number");
  const absl::Status st = p.Validate();
  if (!st.ok()) {
    // One problem per line, each naming its field.
    std::vector<std::string> problems;
    for (absl::string_view problem : absl::StrSplit(st.message(), "; "))
      problems.push_back(absl::StrCat("RetryPolicy.", problem));
    ThrowStatus(absl::InvalidArgumentError(absl::StrJoin(problems, "\n")));
  }
  return p;
}

StepAnalysis MakeStepAnalysis(
    const py::object& name, const py::object& fn, const py::object& kind,
    const py::object& shape, const py::object& retry,
    const py::object& context_kw, const py::object& resources_kw,
    const py::object& retry_on, const py::object& timeout_s,
    const py::object& cache, const py::object& cache_ttl_s,
    const py::object& tags, const py::object& fallback,
    const py::object& breaker, const py::object& breaker_exclude,
    const py::object& cache_context, const py::object& single_flight,
    const py::object& concurrency_key, const py::object& max_concurrency,
    const py::object& cache_ns, const py::object& uncacheable,
    const py::object& identity_of) {
  Fields f("StepAnalysis");
  StepAnalysis a;
  StepSpec& s = a.spec;
  s.name = f.Str("name", name);
  if (!PyCallable_Check(fn.ptr())) f.Fail("fn", "a callable", fn);
  a.fn = fn;
  s.kind = f.Member<StepKind>("kind", kind, g_step_kind_type,
                              "a caudal._core.StepKind");
  s.shape = f.Member<CallShape>("shape", shape, g_call_shape_type,
                                "a caudal._core.CallShape");
  if (!py::isinstance<RetryPolicy>(retry))
    f.Fail("retry", "a caudal._core.RetryPolicy", retry);
  s.retry = retry.cast<const RetryPolicy&>();
  s.pass_context_kw = f.Bool("context_kw", context_kw);
  s.pass_resources_kw = f.Bool("resources_kw", resources_kw);
  a.retry_on = f.ExceptionFilter("retry_on", retry_on);
  if (!timeout_s.is_none()) {
    s.timeout_ns = static_cast<int64_t>(
        f.Seconds("timeout_s", timeout_s, /*zero_ok=*/false) * 1e9);
  }
  if (!cache.is_none()) {
    s.cache = f.Bool("cache", cache) ? StepSwitch::kOn : StepSwitch::kOff;
  }
  if (!cache_ttl_s.is_none()) {
    s.cache_ttl_s = f.Seconds("cache_ttl_s", cache_ttl_s, /*zero_ok=*/true);
  }
  s.tags = f.Strings("tags", tags, "a list or tuple of str");
  a.fallback = fallback;
  s.has_fallback = !fallback.is_none();
  // None: the step's own breaker; a str: a shared one; False: none.
  if (PyBool_Check(breaker.ptr())) {
    s.use_breaker = breaker.ptr() == Py_True;
  } else if (!breaker.is_none()) {
    s.breaker_key =
        f.Str("breaker", breaker, "None, a non-empty str or a bool");
    if (s.breaker_key.empty())
      f.Fail("breaker", "None, a non-empty str or a bool", breaker);
  }
  a.breaker_exclude = f.ExceptionFilter("breaker_exclude", breaker_exclude);
  if (!cache_context.is_none()) {
    const char* rule = "None or a tuple of context field names (str)";
    if (!PyTuple_Check(cache_context.ptr()))
      f.Fail("cache_context", rule, cache_context);
    f.Strings("cache_context", cache_context, rule);
  }
  a.cache_context = cache_context;
  s.single_flight = f.Bool("single_flight", single_flight);
  if (!concurrency_key.is_none()) {
    const char* rule = "None or a non-empty str";
    s.limit_key = f.Str("concurrency_key", concurrency_key, rule);
    if (s.limit_key.empty()) f.Fail("concurrency_key", rule, concurrency_key);
  }
  if (!max_concurrency.is_none()) {
    s.max_concurrency = f.Int("max_concurrency", max_concurrency, 1, INT_MAX,
                              "None or an int >= 1");
  }
  // The namespace: exactly one of identity_of, cache_ns, uncacheable.
  const int set =
      !identity_of.is_none() + !cache_ns.is_none() + !uncacheable.is_none();
  if (set != 1) {
    ThrowStatus(absl::InvalidArgumentError(
        "StepAnalysis: exactly one of identity_of, cache_ns and uncacheable "
        "must be set, got " +
        std::to_string(set)));
  }
  a.identity_of = identity_of;
  if (!cache_ns.is_none())
    a.cache_ns = f.Str("cache_ns", cache_ns, "a str or None");
  if (!uncacheable.is_none()) {
    const char* rule = "None or a non-empty str (why)";
    a.uncacheable = f.Str("uncacheable", uncacheable, rule);
    if (a.uncacheable.empty()) f.Fail("uncacheable", rule, uncacheable);
  }
  return a;
}

}  // namespace

void RegisterStepAnalysis(py::module_& m) {
  m.def(
      "function_key",
      [](py::handle fn, py::bytes static_digest) -> py::object {
        if (Py_TYPE(fn.ptr()) != &PyFunction_Type)
          throw py::type_error("function_key: fn must be a plain function");
        Key128 k;
        if (!FunctionKey(fn.ptr(), std::string(static_digest), &k))
          return py::none();
        return KeyToBytes(k);
      },
      py::arg("fn"), py::arg("static_digest"),
      "The 16-byte identity of the plain function `fn` whose module, "
      "qualname and code have the digest `static_digest`: the key of its "
      "defaults, keyword defaults and captured values; None when one of "
      "those is not plain data (internal: caudal._identity).");

  {
    py::native_enum<StepKind> e(m, "StepKind", "enum.IntEnum",
                                "How a step's callable produces its result.");
    e.value("ASYNC", StepKind::kAsync, "calling it returns an awaitable");
    e.value("SYNC", StepKind::kSync,
            "a plain function: runs in a worker thread");
    e.finalize();
    g_step_kind_type = py::object(m.attr("StepKind")).release();
  }
  {
    py::native_enum<CallShape> e(m, "CallShape", "enum.IntEnum",
                                 "Which arguments a step's callable takes.");
    e.value("NO_ARGS", CallShape::kNoArgs, "fn()");
    e.value("DATA", CallShape::kData, "fn(data)");
    e.value("DATA_CONTEXT", CallShape::kDataContext, "fn(data, context)");
    e.value("RUN_KWARGS", CallShape::kRunKwargs,
            "run(data, context=..., resources=...) as accepted");
    e.finalize();
    g_call_shape_type = py::object(m.attr("CallShape")).release();
  }

  py::class_<RetryPolicy>(
      m, "RetryPolicy",
      "The core's retry policy (attempts and back-off), checked when made: "
      "a bad field raises caudal.ConfigurationError naming it. Made by "
      "caudal.RetryStrategy; immutable.")
      .def(py::init(&MakeRetryPolicy), py::kw_only(),
           py::arg("kind") = "exponential", py::arg("max_attempts") = 3,
           py::arg("base_delay_s") = 0.1, py::arg("backoff_factor") = 2.0,
           py::arg("max_backoff_s") = 60.0, py::arg("jitter") = 0.0)
      .def_property_readonly(
          "kind",
          [](const RetryPolicy& p) {
            return std::string(RetryKindName(p.kind));
          },
          "'exponential', 'linear' or 'fixed'.")
      .def_readonly("max_attempts", &RetryPolicy::max_attempts,
                    "Attempts in all, the first included (>= 1).")
      .def_readonly("base_delay_s", &RetryPolicy::base_delay_s,
                    "The delay unit, seconds.")
      .def_readonly("backoff_factor", &RetryPolicy::backoff_factor,
                    "Growth per retry (exponential).")
      .def_readonly("max_backoff_s", &RetryPolicy::max_backoff_s,
                    "The longest delay, hints included, seconds.")
      .def_readonly("jitter", &RetryPolicy::jitter,
                    "Fraction of each delay randomised downwards, [0, 1].")
      .def(
          "delay_before_attempt",
          [](const RetryPolicy& p, int next_attempt, std::optional<double> hint,
             uint64_t bits) {
            absl::optional<double> h;
            if (hint) h = *hint;
            return p.DelayBeforeAttempt(next_attempt, h, bits);
          },
          py::arg("next_attempt"), py::arg("retry_after_s") = py::none(),
          py::arg("random_bits") = uint64_t{1} << 63,
          "Seconds to wait before attempt `next_attempt` (2 = the first "
          "retry), `random_bits` driving the jitter.")
      .def("__repr__", [](const RetryPolicy& p) {
        return absl::StrCat("RetryPolicy(kind='", RetryKindName(p.kind),
                            "', max_attempts=", p.max_attempts,
                            ", base_delay_s=", p.base_delay_s,
                            ", backoff_factor=", p.backoff_factor,
                            ", max_backoff_s=", p.max_backoff_s,
                            ", jitter=", p.jitter, ")");
      });

  py::class_<StepAnalysis>(
      m, "StepAnalysis",
      "What caudal._steps.analyse found out about one step object, handed "
      "to the engine once (internal). The constructor checks every field: a "
      "wrong type or value raises caudal.ConfigurationError naming it.")
      .def(py::init(&MakeStepAnalysis), py::kw_only(), py::arg("name"),
           py::arg("fn"), py::arg("kind"), py::arg("shape"), py::arg("retry"),
           py::arg("context_kw") = false, py::arg("resources_kw") = false,
           py::arg("retry_on") = py::none(), py::arg("timeout_s") = py::none(),
           py::arg("cache") = py::none(), py::arg("cache_ttl_s") = py::none(),
           py::arg("tags") = py::tuple(), py::arg("fallback") = py::none(),
           py::arg("breaker") = py::none(),
           py::arg("breaker_exclude") = py::none(),
           py::arg("cache_context") = py::none(),
           py::arg("single_flight") = true,
           py::arg("concurrency_key") = py::none(),
           py::arg("max_concurrency") = py::none(),
           py::arg("cache_ns") = py::none(),
           py::arg("uncacheable") = py::none(),
           py::arg("identity_of") = py::none())
      .def_property_readonly(
          "name", [](const StepAnalysis& a) { return a.spec.name; },
          "The step's name.")
      .def_readonly("fn", &StepAnalysis::fn, "What to call per attempt.")
      .def_property_readonly("kind",
                             [](const StepAnalysis& a) { return a.spec.kind; })
      .def_property_readonly("shape",
                             [](const StepAnalysis& a) { return a.spec.shape; })
      .def_property_readonly("retry",
                             [](const StepAnalysis& a) { return a.spec.retry; })
      .def_property_readonly(
          "context_kw",
          [](const StepAnalysis& a) { return a.spec.pass_context_kw; },
          "run() accepts context=.")
      .def_property_readonly(
          "resources_kw",
          [](const StepAnalysis& a) { return a.spec.pass_resources_kw; },
          "run() accepts resources=.")
      .def_readonly("retry_on", &StepAnalysis::retry_on,
                    "None (any Exception), exception types, or a predicate.")
      .def_property_readonly(
          "timeout_s",
          [](const StepAnalysis& a) {
            return OptionalFloat(a.spec.timeout_ns > 0,
                                 static_cast<double>(a.spec.timeout_ns) / 1e9);
          },
          "Per attempt; None: no timeout.")
      .def_property_readonly(
          "cache",
          [](const StepAnalysis& a) -> py::object {
            if (a.spec.cache == StepSwitch::kDefault) return py::none();
            return py::bool_(a.spec.cache == StepSwitch::kOn);
          },
          "None: the executor's config decides.")
      .def_property_readonly(
          "cache_ttl_s",
          [](const StepAnalysis& a) {
            return OptionalFloat(a.spec.cache_ttl_s >= 0, a.spec.cache_ttl_s);
          },
          "None: the config's cache_ttl_seconds.")
      .def_property_readonly("tags",
                             [](const StepAnalysis& a) { return a.spec.tags; })
      .def_readonly("fallback", &StepAnalysis::fallback)
      .def_property_readonly(
          "breaker",
          [](const StepAnalysis& a) -> py::object {
            if (!a.spec.use_breaker) return py::bool_(false);
            if (a.spec.breaker_key.empty()) return py::none();
            return py::str(a.spec.breaker_key);
          },
          "None: the step's own breaker; a str: a shared one; False: none.")
      .def_readonly("breaker_exclude", &StepAnalysis::breaker_exclude)
      .def_readonly("cache_context", &StepAnalysis::cache_context)
      .def_property_readonly(
          "single_flight",
          [](const StepAnalysis& a) { return a.spec.single_flight; })
      .def_property_readonly("concurrency_key",
                             [](const StepAnalysis& a) -> py::object {
                               if (a.spec.limit_key.empty()) return py::none();
                               return py::str(a.spec.limit_key);
                             })
      .def_property_readonly("max_concurrency",
                             [](const StepAnalysis& a) -> py::object {
                               if (a.spec.max_concurrency <= 0)
                                 return py::none();
                               return py::int_(a.spec.max_concurrency);
                             })
      .def_property_readonly(
          "cache_ns",
          [](const StepAnalysis& a) -> py::object {
            if (!a.identity_of.is_none() || !a.uncacheable.empty())
              return py::none();
            return py::str(a.cache_ns);
          },
          "The cache key's namespace, when known now.")
      .def_property_readonly(
          "uncacheable",
          [](const StepAnalysis& a) -> py::object {
            if (a.uncacheable.empty()) return py::none();
            return py::str(a.uncacheable);
          },
          "Why the step has no cache identity, when known now.")
      .def_readonly("identity_of", &StepAnalysis::identity_of,
                    "What to fingerprint for the namespace on first use.")
      .def("__repr__", [](const StepAnalysis& a) {
        return "<StepAnalysis " + std::string(py::repr(py::str(a.spec.name))) +
               ">";
      });
}

}  // namespace caudal::bindings
