#include "telemetry_bindings.h"

#include <time.h>

#include <string>
#include <vector>

#include "caudal/resilience/circuit_breaker.h"

namespace caudal::bindings {
namespace {

TraceParent ReadParent(void* ctx) {
  auto* r = static_cast<ParentReader*>(ctx);
  // Executions may end on threads that do not hold the GIL (none do today;
  // a native caller could): no parent then, rather than a crash.
  if (!PyGILState_Check() || !r->contextvar) return {};
  PyObject* context = nullptr;
  if (PyContextVar_Get(r->contextvar.ptr(), nullptr, &context) < 0) {
    PyErr_Clear();
    return {};
  }
  if (context == nullptr) return {};
  TraceParent out;
  PyObject* span = PyDict_Check(context)
                       ? PyDict_GetItemWithError(context, r->key.ptr())
                       : nullptr;  // borrowed
  if (span == nullptr) {
    PyErr_Clear();
  } else if (span == r->last_span.ptr()) {
    out = r->last;
  } else {
    try {
      py::handle s(span);
      py::object sc = s.attr("get_span_context")();
      if (sc.attr("is_valid").cast<bool>()) {
        py::int_ tid = sc.attr("trace_id");
        const py::int_ mask(~0ull);
        out.trace_hi = py::int_(tid.attr("__rshift__")(64)).cast<uint64_t>();
        out.trace_lo = py::int_(tid.attr("__and__")(mask)).cast<uint64_t>();
        out.span_id = sc.attr("span_id").cast<uint64_t>();
        out.flags = static_cast<uint8_t>(sc.attr("trace_flags").cast<int>());
        out.valid = true;
      }
      r->last_span = py::reinterpret_borrow<py::object>(span);
      r->last = out;
    } catch (py::error_already_set&) {
      PyErr_Clear();
      out = TraceParent();
    }
  }
  Py_DECREF(context);
  return out;
}

py::object BreakerStateName(uint8_t state) {
  if (state == SpanRecord::kNoBreaker) return py::none();
  return py::str(
      std::string(StateName(static_cast<CircuitBreaker::State>(state))));
}

py::object TraceId(const TraceParent& p) {
  if (!p.valid) return py::none();
  py::int_ hi(p.trace_hi);
  return hi.attr("__lshift__")(64).attr("__or__")(py::int_(p.trace_lo));
}

}  // namespace

void SetTracing(Executor& core, bool on) { core.SetTracing(on); }

void SetParentSource(Executor& core, TelemetryState& state, py::object cv,
                     py::object key) {
  ParentReader& r = state.parent;
  if (cv.is_none()) {
    core.SetTraceParentSource(nullptr, nullptr);
    r.contextvar = py::object();
    r.key = py::object();
    r.last_span = py::object();
    return;
  }
  if (!PyContextVar_CheckExact(cv.ptr()))
    throw py::type_error("the parent source must be a contextvars.ContextVar");
  r.contextvar = std::move(cv);
  r.key = std::move(key);
  r.last_span = py::object();
  r.last = TraceParent();
  core.SetTraceParentSource(&ReadParent, &r);
}

bool WaitForSpans(Executor& core, double timeout_s) {
  py::gil_scoped_release release;
  return core.spans().WaitForWork(absl::Seconds(timeout_s));
}

py::list DrainSpans(Executor& core) {
  std::vector<SpanRecord> spans;
  {
    py::gil_scoped_release release;
    core.spans().Drain(&spans);
  }
  py::list out(spans.size());
  size_t i = 0;
  for (const SpanRecord& s : spans) {
    py::object err = s.error_type[0] ? py::object(py::str(s.error_type))
                                     : py::object(py::none());
    out[i++] = py::make_tuple(
        py::str(*s.step), s.start_ns, s.end_ns, s.span_id, TraceId(s.parent),
        s.parent.valid ? py::object(py::int_(s.parent.span_id)) : py::none(),
        static_cast<int>(s.parent.flags), s.attempts,
        py::str(std::string(SpanOutcomeName(s.outcome))),
        BreakerStateName(s.breaker_state), s.slow, s.sampled, err);
  }
  return out;
}

int64_t ClockOffsetNs() {
  timespec rt{}, mono{};
  clock_gettime(CLOCK_REALTIME, &rt);
  clock_gettime(CLOCK_MONOTONIC, &mono);
  return (static_cast<int64_t>(rt.tv_sec) - mono.tv_sec) * 1000000000LL +
         (static_cast<int64_t>(rt.tv_nsec) - mono.tv_nsec);
}

}  // namespace caudal::bindings
