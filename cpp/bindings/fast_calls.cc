// Engine's hot path as METH_FASTCALL functions: _start (the first attempt,
// run until it suspends or ends), _begin, _succeed, and _fail (a failed
// attempt: the core's verdict, and a retry without a wait started in the same
// call).
#include "engine.h"
#include "py_compat.h"

namespace caudal::bindings {

namespace {

// ---- METH_FASTCALL entry points of the hot path ----
// pybind11's generic dispatch costs more than the work it dispatches here, so
// the per-attempt calls are plain CPython functions whose `self` is a
// HotPath: the Engine's pointer, a reference that keeps the engine object
// alive, and what `_start` hands a suspended attempt to. (A capsule would
// do, but reading its pointer compares its name with strcmp on every call.)
struct HotPathObject {
  PyObject_HEAD Engine* engine;
  PyObject* owner;   // the Engine object
  PyObject* resume;  // resume(coro, yielded): the rest of a suspended attempt
};

void HotPathDealloc(PyObject* self) {
  auto* h = reinterpret_cast<HotPathObject*>(self);
  PyObject_GC_UnTrack(self);
  Py_CLEAR(h->owner);
  Py_CLEAR(h->resume);
  PyObject_GC_Del(self);
}

int HotPathTraverse(PyObject* self, visitproc visit, void* arg) {
  auto* h = reinterpret_cast<HotPathObject*>(self);
  Py_VISIT(h->owner);
  Py_VISIT(h->resume);
  return 0;
}

int HotPathClear(PyObject* self) {
  auto* h = reinterpret_cast<HotPathObject*>(self);
  Py_CLEAR(h->resume);
  // `owner` stays: the engine pointer must outlive every call through us.
  return 0;
}

PyTypeObject HotPathType = [] {
  PyTypeObject t{PyVarObject_HEAD_INIT(nullptr, 0)};
  t.tp_name = "caudal._core._HotPath";
  t.tp_basicsize = sizeof(HotPathObject);
  t.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  t.tp_doc = "What the engine's hot-path functions are bound to.";
  t.tp_dealloc = HotPathDealloc;
  t.tp_traverse = HotPathTraverse;
  t.tp_clear = HotPathClear;
  return t;
}();

Engine* EngineOf(PyObject* self) {
  return reinterpret_cast<HotPathObject*>(self)->engine;
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

// Ends execution `res` as cancelled, then raises `err` again (stolen): the
// step's own exception is the one that matters, not one from the ending.
PyObject* CancelRaising(Engine* engine, PyObject* res, PyObject* err) {
  try {
    engine->cancel(res);
  } catch (py::error_already_set&) {
    PyErr_Clear();
  }
  compat::SetRaisedException(err);
  return nullptr;
}

// The first attempt of an execution, run as far as it goes without
// suspending: `_begin`, then the step's coroutine sent its first value here,
// in the caller's frame and task, exactly where `await` would have sent it.
// A step that finishes without suspending (the common fast step) then ends
// in `_succeed` within this one call, and execute() returns the result
// without awaiting anything. Otherwise the caller gets what `_begin` gives
// (rec, aw, Next), where for a suspended coroutine `aw` is resume(coro,
// yielded): awaiting it hands `yielded` to the task and goes on with the
// coroutine; and for an attempt that raised, `aw` is the exception and Next
// RAISED. A BaseException that is not an Exception (cancellation, exit)
// cancels the execution and propagates, as execute() does for it.
PyObject* StartFirst(Engine* engine, PyObject* resume, PyObject* const* args) {
  py::object t = engine->begin(args[0], args[1], args[2], args[3]);
  PyObject* res = t.ptr();
  if (!IsStepResult(res) || PendingHandle(res) == 0)
    return t.release().ptr();  // (rec, aw, Next), or a cache hit
  PyObject* aw = reinterpret_cast<StepResultObject*>(res)->pending_aw;
  if (!PyCoro_CheckExact(aw))  // another awaitable: the caller awaits it
    return Triple(res, aw, NextOf(Next::kAwait)).release().ptr();
  // The result keeps the coroutine alive; the send may run any code.
  py::object coro = py::reinterpret_borrow<py::object>(aw);
  PyObject* sent = nullptr;
  switch (PyIter_Send(coro.ptr(), Py_None, &sent)) {
    case PYGEN_RETURN: {
      auto out = py::reinterpret_steal<py::object>(sent);
      return engine->succeed(engine->Live(res), out.ptr(), res);
    }
    case PYGEN_NEXT: {
      auto yielded = py::reinterpret_steal<py::object>(sent);
      PyObject* rest =
          PyObject_CallFunctionObjArgs(resume, coro.ptr(), sent, nullptr);
      if (rest == nullptr) {
        // Nothing will drive the coroutine: close it and end the execution.
        PyObject* err = compat::TakeRaisedException();
        PyObject* closed = PyObject_CallMethod(coro.ptr(), "close", nullptr);
        Py_XDECREF(closed);
        PyErr_Clear();
        return CancelRaising(engine, res, err);
      }
      auto rest_obj = py::reinterpret_steal<py::object>(rest);
      return Triple(res, rest_obj, NextOf(Next::kAwait)).release().ptr();
    }
    case PYGEN_ERROR:
      break;
  }
  PyObject* err = compat::TakeRaisedException();
  if (PyObject_TypeCheck(err,
                         reinterpret_cast<PyTypeObject*>(PyExc_Exception))) {
    auto exc = py::reinterpret_steal<py::object>(err);
    return Triple(res, exc, NextOf(Next::kRaised)).release().ptr();
  }
  return CancelRaising(engine, res, err);
}

PyObject* FastStart(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError, "_start(step, data, context, resources)");
    return nullptr;
  }
  return Guarded([&] {
    auto* h = reinterpret_cast<HotPathObject*>(self);
    return StartFirst(h->engine, h->resume, args);
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

PyMethodDef kFastStart = {
    "_start",
    reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(FastStart)),
    METH_FASTCALL,
    "The first attempt, run until it suspends: a finished execution's "
    "StepResult (a success or a cache hit), or (rec, aw, Next) as _begin "
    "gives it, with aw the rest of a suspended coroutine or the exception "
    "of an attempt that raised (Next RAISED)."};

}  // namespace

py::tuple FastCalls(py::object engine_obj, py::object resume) {
  Engine* engine = engine_obj.cast<Engine*>();
  static const bool ready = PyType_Ready(&HotPathType) == 0;
  if (!ready) throw py::error_already_set();
  auto* h = PyObject_GC_New(HotPathObject, &HotPathType);
  if (h == nullptr) throw py::error_already_set();
  h->engine = engine;
  h->owner = Py_NewRef(engine_obj.ptr());
  h->resume = Py_NewRef(resume.ptr());
  PyObject_GC_Track(h);
  auto holder =
      py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(h));
  auto bind = [&](PyMethodDef* def) {
    PyObject* f = PyCFunction_New(def, holder.ptr());
    if (f == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(f);
  };
  return py::make_tuple(bind(&kFastBegin), bind(&kFastSucceed),
                        bind(&kFastFail), bind(&kFastStart));
}

}  // namespace caudal::bindings
