// caudal._core registration of the executor: Engine, Next, ManualClock,
// _Admission, StepResult, and (step_analysis.cc) what the step analysis
// hands the engine. The engine itself: engine.h.
#include <pybind11/native_enum.h>
#include <pybind11/stl.h>

#include "engine.h"

namespace caudal::bindings {

void RegisterExecutor(py::module_& m) {
  RegisterStepAnalysis(m);
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

  {
    // A plain METH_NOARGS function, as time.monotonic_ns is: a read costs
    // what that one costs but for the clock (benchmarks/bench_clock.py).
    static PyMethodDef monotonic = {
        "monotonic_ns",
        +[](PyObject*, PyObject*) -> PyObject* {
          return PyLong_FromLongLong(MonotonicNowNs());
        },
        METH_NOARGS,
        "monotonic_ns()\n--\n\nThe executor's clock in ns (an Engine made "
        "without a ManualClock reads it): CLOCK_MONOTONIC, read from the "
        "CPU's time-stamp counter where the kernel keeps time with it, "
        "within microseconds of time.monotonic_ns()."};
    py::object name = py::str("caudal._core");
    PyObject* f = PyCFunction_NewEx(&monotonic, nullptr, name.ptr());
    if (f == nullptr) throw py::error_already_set();
    m.attr("monotonic_ns") = py::reinterpret_steal<py::object>(f);
  }
  m.def(
      "clock_source",
      [] {
        py::dict d;
        d["source"] = MonotonicClockSource();
        d["ticks_per_second"] = MonotonicClockTicksPerSecond();
        return d;
      },
      "Which source monotonic_ns() reads: {'source': 'tsc' | 'tsc "
      "(calibrating)' | 'system', 'ticks_per_second': the calibrated rate, "
      "0.0 when not calibrated}. CAUDAL_CLOCK=system in the environment "
      "keeps the system clock.");

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
      .def(py::init<const OptimizationConfig&, std::shared_ptr<ManualClock>,
                    py::object, const std::string&>(),
           py::arg("config"), py::arg("clock") = nullptr, py::kw_only(),
           py::arg("retry") = py::none(), py::arg("backend") = "local",
           "`retry` (a caudal.RetryStrategy or None) and `backend` (\"local\" "
           "or \"ray\"): the executor's defaults for the steps that do not "
           "set their own.")
      .def("apply_config", &Engine::apply_config)
      .def_property_readonly("config", &Engine::config)
      .def("_begin", &Engine::begin)
      .def("_restart", &Engine::restart)
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
      .def("invalidate_step", &Engine::invalidate_step)
      .def("clear_cache", &Engine::clear_cache)
      .def("cache_stats", &Engine::cache_stats)
      .def("_sync_call", &Engine::sync_call,
           "A sync step's attempt: (fn, args, kwargs, timeout_s) for the "
           "worker pool.")
      .def("_timeout_s", &Engine::timeout_s)
      .def("_succeed",
           [](Engine& e, py::handle h, py::handle out) {
             PyObject* r = e.succeed(e.Live(h), out.ptr(), h.ptr());
             if (!r) throw py::error_already_set();
             return py::reinterpret_steal<py::object>(r);
           })
      .def("_fast_calls", &FastCalls, py::arg("resume"),
           "(begin, succeed, fail, start): the hot-path calls as "
           "METH_FASTCALL functions bound to this engine; resume(coro, "
           "yielded) makes what goes on with a coroutine start() ran until "
           "it suspended")
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
      .def("_set_rss_source",
           [](Engine& e, py::object source) {
             SetRssSource(e.core(), std::move(source));
           })
      .def("_set_memory_interval",
           [](Engine& e, double seconds) {
             e.core().memory_monitor().SetInterval(
                 static_cast<int64_t>(seconds * 1e9));
           })
      .def(
          "now_ns", [](Engine& e) { return e.core().NowNs(); },
          "The executor's time in ns (its manual clock, or monotonic).")
      .def_property_readonly(
          "_clock",
          [](Engine& e) {
            return std::const_pointer_cast<ManualClock>(e.core().clock());
          },
          "The manual clock the engine was made with, or None.")
      .def("cpu_stats", [](Engine& e) { return CpuStatsDict(e.core()); })
      .def(
          "execution_section",
          [](Engine& e) { return ExecutionSectionDict(e.execution_section()); })
      .def(
          "cache_section",
          [](Engine& e, py::object l2) {
            return CacheSectionDict(e.cache_section(), std::move(l2));
          },
          py::arg("l2"), "stats['cache']; `l2`: the shared tier's stats.")
      .def(
          "concurrency_section",
          [](Engine& e, py::object pool) {
            return ConcurrencySectionDict(ConcurrencySectionNow(e.core()),
                                          std::move(pool));
          },
          py::arg("worker_pool"),
          "stats['concurrency']; `worker_pool`: the pool's stats.")
      .def("memory_section",
           [](Engine& e) {
             return MemorySectionDict(MemorySectionNow(e.core()));
           })
      .def(
          "telemetry_section",
          [](Engine& e, py::dict flusher) {
            return TelemetrySectionDict(TelemetrySectionNow(e.core()),
                                        std::move(flusher));
          },
          py::arg("flusher"),
          "stats['telemetry']; `flusher`: the span flusher's figures.")
      .def("breaker_section",
           [](Engine& e) { return BreakerSectionDict(e.core()); })
      .def("error_section",
           [](Engine& e) { return ErrorSectionDict(e.core()); })
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
