// Engine's hot path as METH_FASTCALL functions: _begin, _succeed, and _fail
// (a failed attempt: the core's verdict, and a retry without a wait started
// in the same call).
#include "engine.h"

namespace caudal::bindings {

namespace {

// ---- METH_FASTCALL entry points of the hot path ----
// pybind11's generic dispatch costs more than the work it dispatches here, so
// the two per-attempt calls are plain CPython functions whose `self` is a
// capsule holding the Engine (the capsule keeps the engine object alive).
constexpr const char* kEngineCapsule = "caudal._core.Engine";

Engine* EngineOf(PyObject* capsule) {
  return static_cast<Engine*>(PyCapsule_GetPointer(capsule, kEngineCapsule));
}

// Runs `f` (which returns a new reference or nullptr with an error set),
// turning a C++ exception into the Python error it stands for.
template <class F>
PyObject* Guarded(F&& f) {
  try {
    return f();
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const py::builtin_exception& e) {
    e.set_error();  // ValueError, TypeError, ... as raised
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

PyObject* FastBegin(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError, "_begin(step, data, context, resources)");
    return nullptr;
  }
  return Guarded([&] {
    return EngineOf(self)
        ->begin(args[0], args[1], args[2], args[3])
        .release()
        .ptr();
  });
}

PyObject* FastSucceed(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "_succeed(rec, output)");
    return nullptr;
  }
  return Guarded([&] {
    Engine* engine = EngineOf(self);
    return engine->succeed(engine->Live(args[0]), args[1], args[0]);
  });
}

PyObject* FastFail(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 6) {
    PyErr_SetString(PyExc_TypeError,
                    "_fail(rec, exc, timed_out, data, context, resources)");
    return nullptr;
  }
  return Guarded([&]() -> PyObject* {
    Engine* engine = EngineOf(self);
    const int timed_out = PyObject_IsTrue(args[2]);
    if (timed_out < 0) return nullptr;
    // One clock read: a retry without a wait starts when the failure was
    // reported (a few hundred nanoseconds apart).
    const int64_t now = engine->core().NowNs();
    bool retry_now = false;
    py::object v =
        engine->FailedAt(args[0], args[1], timed_out != 0, now, &retry_now);
    // A retry without a wait starts here: one call between two attempts.
    if (retry_now)
      return engine->RestartAt(args[0], args[3], args[4], args[5], args[1], now)
          .release()
          .ptr();
    return v.release().ptr();
  });
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
PyMethodDef kFastFail = {
    "_fail",
    reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(FastFail)),
    METH_FASTCALL,
    "After a failed attempt: the next attempt's (rec, aw, Next) when it "
    "starts at once, the delay (float, seconds) before it, a fallback step "
    "to run, or the final StepResult."};

void ReleaseEngineRef(PyObject* capsule) {
  auto* owner = static_cast<PyObject*>(PyCapsule_GetContext(capsule));
  Py_XDECREF(owner);
}

}  // namespace

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
  auto fail =
      py::reinterpret_steal<py::object>(PyCFunction_New(&kFastFail, cap));
  if (!begin || !succeed || !fail) throw py::error_already_set();
  return py::make_tuple(begin, succeed, fail);
}

}  // namespace caudal::bindings
