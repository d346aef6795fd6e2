// caudal._core.WorkerPool: the native work-stealing pool
// (cpp/caudal/concurrency/worker_pool.h) running Python callables, with
// results handed back to asyncio.
//
// A task holds the callable, its arguments and the asyncio future it
// resolves. On a worker thread it takes the GIL (PyGILState_Ensure: also
// right on a free-threaded build), calls the callable, and appends the
// outcome to its event loop's inbox. The first outcome into an empty inbox
// schedules one drain on the loop; outcomes arriving before the drain runs
// ride along, so a burst of completions costs one wake-up of the loop. The
// drain, on the loop's thread, resolves the futures (skipping those
// cancelled meanwhile).
//
// Waking the loop without the GIL. loop.call_soon_threadsafe queues the
// drain and writes a byte to the loop's self-pipe, all with the GIL held: the
// loop thread, woken by the byte, then blocks on the GIL the worker still
// holds (one more thread hand-off per completion). For asyncio's selector
// loops the inbox instead queues the drain with loop.call_soon (what
// call_soon_threadsafe does before its write; only debug mode checks the
// thread) and writes the byte itself after the worker has given the GIL
// back, to a duplicate of the loop's self-pipe socket (so a loop closed
// meanwhile never has its descriptor number reused under the write). Other
// loops (uvloop, debug mode) get call_soon_threadsafe.
//
// Withdrawal. A task submitted with submit_withdrawable comes with a
// ticket; withdraw(ticket) after its future was cancelled (the caller
// stopped waiting: the executor's attempt timed out or was cancelled) takes
// it out of the queue at once, if no worker took it yet (the core's
// WorkerPool::Withdraw). Any task whose future is cancelled before a worker
// starts it is not called either: the worker sees the future done (the
// core counts it as withdrawn too). One cancelled while it runs finishes;
// the drain drops its result.
//
// Every Python reference a task holds is released with the GIL held: by
// the worker after the call, by the not-run path (queue timeout, shutdown)
// after taking the GIL, or by Submit's caller when the pool refuses the
// task.
#include <fcntl.h>
#include <pybind11/stl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "caudal/concurrency/worker_pool.h"
#include "caudal/executor/clock.h"
#include "common.h"

namespace caudal::bindings {
namespace {

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0  // macOS: Python ignores SIGPIPE anyway
#endif

// dup(fd) with close-on-exec.
int fcntl_dup(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 0); }

// Each worker thread keeps its Python thread state between tasks: made by
// the first task (PyGILState_Ensure), parked with PyEval_SaveThread, resumed
// with PyEval_RestoreThread, and deleted when the thread ends. Making and
// deleting one per task (PyGILState_Ensure/Release from a count of zero)
// would cost microseconds a task.
thread_local PyThreadState* tls_tstate = nullptr;

bool Finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

// Takes the GIL on a worker thread.
void EnterPython() {
  if (tls_tstate == nullptr) {
    PyGILState_Ensure();  // new thread state, count 1, GIL held
  } else {
    PyEval_RestoreThread(tls_tstate);
  }
}

// Gives the GIL back, keeping the thread state.
void LeavePython() { tls_tstate = PyEval_SaveThread(); }

void EndWorkerThread() {
  if (tls_tstate == nullptr || Finalizing()) return;
  PyEval_RestoreThread(tls_tstate);
  tls_tstate = nullptr;
  PyGILState_Release(PyGILState_UNLOCKED);  // count 0: deleted, GIL released
}

// A finished task's outcome: the future and its result or exception
// (owned references).
struct Outcome {
  PyObject* future;
  PyObject* value;
  bool ok;
};

// A duplicate of an asyncio selector loop's self-pipe write socket: a byte
// written to it wakes the loop (asyncio's _write_to_self). Closed when the
// last inbox or worker holding it lets go; written without the GIL.
class LoopWaker {
 public:
  explicit LoopWaker(int fd) : fd_(fd) {}
  ~LoopWaker() { close(fd_); }
  LoopWaker(const LoopWaker&) = delete;
  LoopWaker& operator=(const LoopWaker&) = delete;

  void Wake() const {
    static const char kZero = 0;  // a 0 byte: not a signal number
    ssize_t r;
    do {
      r = send(fd_, &kZero, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (r < 0 && errno == EINTR);
    // EAGAIN: the pipe is full of wake-ups already; anything else: the
    // loop is gone. Either way there is nothing to do.
  }

 private:
  const int fd_;
};

// The waker of `loop` if it is an asyncio selector loop not in debug mode
// (GIL held), else null.
std::shared_ptr<LoopWaker> MakeWaker(const py::object& loop) {
  try {
    py::object base = py::module_::import("asyncio.selector_events")
                          .attr("BaseSelectorEventLoop");
    if (!py::isinstance(loop, base)) return nullptr;
    if (!py::hasattr(loop, "_csock") || !py::hasattr(loop, "_debug"))
      return nullptr;
    py::object csock = loop.attr("_csock");
    if (csock.is_none()) return nullptr;
    const int fd = csock.attr("fileno")().cast<int>();
    if (fd < 0) return nullptr;
    const int dup_fd = fcntl_dup(fd);
    if (dup_fd < 0) return nullptr;
    return std::make_shared<LoopWaker>(dup_fd);
  } catch (py::error_already_set&) {
    PyErr_Clear();
    return nullptr;
  }
}

// The finished tasks of one event loop, waiting for its drain.
class Inbox {
 public:
  explicit Inbox(py::object loop)
      : loop_(std::move(loop)), waker_(MakeWaker(loop_)) {}

  // With the GIL held. Takes ownership of the outcome's references. Returns
  // the waker to call once the GIL is released, if the loop must be woken
  // that way (null: nothing to do, or woken already).
  std::shared_ptr<LoopWaker> Push(Outcome o) {
    bool schedule = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      items_.push_back(o);
      if (!scheduled_) schedule = scheduled_ = true;
    }
    if (!schedule) return nullptr;
    if (waker_ != nullptr && !Debug()) {
      static PyObject* call_soon = PyUnicode_InternFromString("call_soon");
      PyObject* r =
          PyObject_CallMethodOneArg(loop_.ptr(), call_soon, drain_.ptr());
      if (r != nullptr) {
        Py_DECREF(r);
        return waker_;
      }
      PyErr_Clear();  // closed (or refused): try the thread-safe call
    }
    static PyObject* name = PyUnicode_InternFromString("call_soon_threadsafe");
    PyObject* r = PyObject_CallMethodOneArg(loop_.ptr(), name, drain_.ptr());
    if (r != nullptr) {
      Py_DECREF(r);
      return nullptr;
    }
    // The loop is closed: nobody will ever await these futures.
    PyErr_Clear();
    DropAll();
    return nullptr;
  }

  // On the loop's thread (the scheduled callback).
  void Drain() {
    std::vector<Outcome> items;
    {
      std::lock_guard<std::mutex> lock(mu_);
      items.swap(items_);
      scheduled_ = false;
    }
    for (const Outcome& o : items) {
      static PyObject* done_name = PyUnicode_InternFromString("done");
      PyObject* done = PyObject_CallMethodNoArgs(o.future, done_name);
      const bool skip = done == nullptr || PyObject_IsTrue(done) == 1;
      Py_XDECREF(done);
      if (done == nullptr) PyErr_Clear();
      if (!skip) {
        static PyObject* set_result = PyUnicode_InternFromString("set_result");
        static PyObject* set_exception =
            PyUnicode_InternFromString("set_exception");
        // (OneArg: a tuple result must not be taken for an argument list.)
        PyObject* r = PyObject_CallMethodOneArg(
            o.future, o.ok ? set_result : set_exception, o.value);
        if (r == nullptr) PyErr_WriteUnraisable(o.future);
        Py_XDECREF(r);
      }
      Py_DECREF(o.future);
      Py_DECREF(o.value);
    }
    if (on_drained_ && !on_drained_.is_none() && !items.empty()) {
      PyObject* r = PyObject_CallFunction(
          on_drained_.ptr(), "n", static_cast<Py_ssize_t>(items.size()));
      if (r == nullptr) PyErr_WriteUnraisable(on_drained_.ptr());
      Py_XDECREF(r);
    }
  }

  void set_drain(py::object drain, py::object on_drained) {
    drain_ = std::move(drain);
    on_drained_ = std::move(on_drained);
  }
  const py::object& loop() const { return loop_; }
  // loop.create_future() (its bound method made once).
  py::object CreateFuture() {
    if (!create_future_) create_future_ = loop_.attr("create_future");
    return create_future_();
  }

 private:
  void DropAll() {
    std::vector<Outcome> items;
    {
      std::lock_guard<std::mutex> lock(mu_);
      items.swap(items_);
      scheduled_ = false;
    }
    for (const Outcome& o : items) {
      Py_DECREF(o.future);
      Py_DECREF(o.value);
    }
  }

  // loop.get_debug(): call_soon then checks the thread (and would raise).
  bool Debug() const {
    PyObject* d = PyObject_GetAttrString(loop_.ptr(), "_debug");
    if (d == nullptr) {
      PyErr_Clear();
      return true;
    }
    const bool debug = d != Py_False;
    Py_DECREF(d);
    return debug;
  }

  py::object loop_;
  py::object create_future_;
  std::shared_ptr<LoopWaker> waker_;
  py::object drain_;
  py::object on_drained_;
  std::mutex mu_;
  std::vector<Outcome> items_;
  bool scheduled_ = false;
};

// What one submitted task holds (raw owned references, released under the
// GIL as described at the top).
struct Job {
  PyObject* fn = nullptr;
  PyObject* args = nullptr;
  PyObject* kwargs = nullptr;  // may be null
  PyObject* future = nullptr;
  std::shared_ptr<Inbox> inbox;

  // The GIL must be held.
  void ReleaseCall() {
    Py_CLEAR(fn);
    Py_CLEAR(args);
    Py_CLEAR(kwargs);
  }
  // Withdrawn (its future cancelled while it was queued): drops the call
  // and the future; nothing is delivered. The GIL must be held.
  void Discard() {
    ReleaseCall();
    Py_CLEAR(future);
    inbox.reset();
  }
  // Only reached with references left when the pool refused the task, in
  // Submit, whose caller holds the GIL.
  ~Job() {
    ReleaseCall();
    Py_CLEAR(future);
  }
};

// Whether an asyncio future is done already (cancelled, with the GIL held,
// on any thread: reading its state is a plain call under the GIL).
bool FutureDone(PyObject* fut) {
  static PyObject* done = PyUnicode_InternFromString("done");
  PyObject* r = PyObject_CallMethodNoArgs(fut, done);
  if (r == nullptr) {
    PyErr_Clear();
    return false;
  }
  const bool out = r == Py_True;
  Py_DECREF(r);
  return out;
}

// The current exception as an object carrying its traceback (GIL held).
PyObject* FetchException() {
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (tb != nullptr && value != nullptr) PyException_SetTraceback(value, tb);
  Py_XDECREF(type);
  Py_XDECREF(tb);
  if (value == nullptr) {
    Py_INCREF(Py_None);
    return Py_None;
  }
  return value;
}

class PyWorkerPool {
 public:
  // `clock`: the executor's manual clock (the task timeout is measured on
  // it), or null for the monotonic clock.
  PyWorkerPool(int workers, int64_t queue_size, double task_timeout_s,
               py::object on_drained, std::shared_ptr<ManualClock> clock)
      : on_drained_(std::move(on_drained)) {
    WorkerPool::Options o;
    o.workers = workers;
    o.queue_size = queue_size;
    o.task_timeout_ns = static_cast<int64_t>(task_timeout_s * 1e9);
    if (clock != nullptr) {
      o.clock = [clock = std::move(clock)] { return clock->now_ns(); };
    }
    o.on_thread_exit = EndWorkerThread;
    auto pool = WorkerPool::Create(std::move(o));
    if (!pool.ok()) ThrowStatus(pool.status());
    pool_ = std::move(*pool);
    timed_out_ = CaudalAttr("caudal.errors", "PoolTimeoutError");
  }

  ~PyWorkerPool() { Close(/*cancel_pending=*/false); }

  // Queues fn(*args, **kwargs); returns the asyncio future of its result.
  // Raises QueueFullError at once when the queue is full.
  py::object submit(py::handle fn, py::tuple args, py::object kwargs) {
    return Submit(fn, std::move(args), std::move(kwargs), nullptr);
  }

  // The same, returning (future, ticket) for withdraw().
  py::tuple submit_withdrawable(py::handle fn, py::tuple args,
                                py::object kwargs) {
    std::shared_ptr<WorkerPool::Ticket> ticket;
    py::object fut = Submit(fn, std::move(args), std::move(kwargs), &ticket);
    return py::make_tuple(std::move(fut), py::cast(std::move(ticket)));
  }

  // Takes a queued task out of the queue (call it once its future is
  // cancelled): true if it was still queued; it will not run.
  bool withdraw(const std::shared_ptr<WorkerPool::Ticket>& ticket) {
    if (pool_ == nullptr || ticket == nullptr) return false;
    return pool_->Withdraw(*ticket);  // a CAS and a count: never blocks
  }

  py::object Submit(py::handle fn, py::tuple args, py::object kwargs,
                    std::shared_ptr<WorkerPool::Ticket>* ticket) {
    if (pool_ == nullptr) {
      ThrowStatus(
          absl::FailedPreconditionError("the worker pool is shut down"));
    }
    std::shared_ptr<Inbox> inbox = InboxFor();
    py::object fut = inbox->CreateFuture();
    auto job = std::make_shared<Job>();
    job->fn = py::reinterpret_borrow<py::object>(fn).release().ptr();
    job->args = args.release().ptr();
    job->kwargs = kwargs.is_none() ? nullptr : kwargs.release().ptr();
    job->future = py::object(fut).release().ptr();
    job->inbox = std::move(inbox);
    WorkerPool::Task task;
    task.run = [job]() {
      EnterPython();
      if (FutureDone(job->future)) {
        // Cancelled while queued: withdrawn, the callable is not called.
        job->Discard();
        LeavePython();
        return absl::CancelledError("withdrawn: its future was cancelled");
      }
      PyObject* res = PyObject_Call(job->fn, job->args, job->kwargs);
      Outcome o{job->future, res, res != nullptr};
      if (res == nullptr) o.value = FetchException();
      job->future = nullptr;  // owned by the outcome now
      job->ReleaseCall();
      std::shared_ptr<LoopWaker> wake = job->inbox->Push(o);
      job->inbox.reset();  // its last reference may be this one
      LeavePython();
      if (wake != nullptr) wake->Wake();  // the loop finds the GIL free
      return absl::OkStatus();  // a Python exception is a result, not a failure
    };
    task.on_done = [job, timed_out = timed_out_.ptr()](absl::Status s) {
      // OK: run() delivered the outcome; no future: run() withdrew it.
      if (s.ok() || job->future == nullptr) return;
      EnterPython();
      const bool withdrawn =
          absl::IsCancelled(s) && s.message() == WorkerPool::kWithdrawn;
      if (withdrawn && FutureDone(job->future)) {
        // Withdrawn from the queue (its caller cancelled the future).
        job->Discard();
        LeavePython();
        return;
      }
      PyObject* exc =
          s.code() == absl::StatusCode::kDeadlineExceeded
              ? PyObject_CallFunction(timed_out, "s",
                                      std::string(s.message()).c_str())
              : PyObject_CallFunction(
                    CancelledErrorType(), "s",
                    withdrawn
                        ? "withdrawn from the worker pool's queue"
                        : "the worker pool shut down before the task started");
      if (exc == nullptr) exc = FetchException();
      Outcome o{job->future, exc, false};
      job->future = nullptr;
      job->ReleaseCall();
      std::shared_ptr<LoopWaker> wake = job->inbox->Push(o);
      job->inbox.reset();
      LeavePython();
      if (wake != nullptr) wake->Wake();
    };
    const absl::Status st = pool_->Submit(std::move(task), ticket);
    if (st.ok()) return fut;
    // Refused (a full queue: QueueFullError; shut down: ValueError): the
    // task (and the job's references) were destroyed in Submit.
    ThrowStatus(st);
  }

  // Stops accepting tasks and joins the workers (the GIL is released while
  // waiting). Queued tasks run first unless cancel_pending; then their
  // futures get CancelledError.
  void Close(bool cancel_pending) {
    if (pool_ == nullptr) return;
    std::unique_ptr<WorkerPool> pool = std::move(pool_);
    if (pool->InWorkerThread()) {
      // Dropped from one of its own tasks: a worker cannot join itself.
      pool->Shutdown(/*drain=*/!cancel_pending);  // only starts it
      std::thread([p = pool.release()] { delete p; }).detach();
      return;
    }
    // Until the workers are joined, stats() reads the pool being closed:
    // its live counters, and `accepting` false only once Shutdown made the
    // mode final (queued tasks then run, or are cancelled, as asked).
    closing_ = pool.get();
    const bool have_gil = PyGILState_Check() == 1;
    if (have_gil) {
      py::gil_scoped_release release;
      pool->Shutdown(/*drain=*/!cancel_pending);
    } else {
      pool->Shutdown(/*drain=*/!cancel_pending);
    }
    // The workers are joined: these counters are final.
    final_ = pool->stats();
    final_workers_ = pool->workers();
    final_queue_size_ = pool->queue_size();
    closing_ = nullptr;
    pool.reset();
  }

  // Counters of a closed pool are its final ones.
  py::dict stats() const {
    py::dict d;
    const WorkerPool* p = pool_ ? pool_.get() : closing_;
    d["workers"] = p ? p->workers() : final_workers_;
    d["queue_size"] = p ? p->queue_size() : final_queue_size_;
    d["accepting"] = p != nullptr && p->accepting();
    const WorkerPool::Stats s = p ? p->stats() : final_;
    d["active"] = s.active;
    d["queued"] = s.queued;
    d["sleeping"] = s.sleeping;
    d["completed"] = s.completed;
    d["failed"] = s.failed;
    d["rejected"] = s.rejected;
    d["timed_out"] = s.timed_out;
    d["cancelled"] = s.cancelled;
    d["withdrawn"] = s.withdrawn;
    d["steals"] = s.steals;
    d["average_latency_ms"] = s.average_latency_ns() / 1e6;
    return d;
  }

  bool closed() const { return pool_ == nullptr; }

 private:
  static PyObject* CancelledErrorType() {
    static PyObject* t =
        py::object(py::module_::import("asyncio").attr("CancelledError"))
            .release()
            .ptr();
    return t;
  }

  // The inbox of the running loop (created on first use; inboxes of closed
  // loops are dropped then).
  std::shared_ptr<Inbox> InboxFor() {
    static PyObject* get_running_loop =
        py::object(py::module_::import("asyncio").attr("get_running_loop"))
            .release()
            .ptr();
    py::object loop = py::reinterpret_steal<py::object>(
        PyObject_CallNoArgs(get_running_loop));
    if (!loop) throw py::error_already_set();
    // The common case: the loop of the previous call.
    if (!inboxes_.empty() && inboxes_.back()->loop().is(loop))
      return inboxes_.back();
    for (auto it = inboxes_.begin(); it != inboxes_.end();) {
      if ((*it)->loop().is(loop)) return *it;
      if ((*it)->loop().attr("is_closed")().cast<bool>()) {
        it = inboxes_.erase(it);
      } else {
        ++it;
      }
    }
    auto inbox = std::make_shared<Inbox>(loop);
    std::weak_ptr<Inbox> weak = inbox;
    py::cpp_function drain([weak] {
      if (auto in = weak.lock()) in->Drain();
    });
    inbox->set_drain(drain, on_drained_);
    inboxes_.push_back(inbox);
    return inbox;
  }

  std::unique_ptr<WorkerPool> pool_;
  // The pool Close() is shutting down (its workers not joined yet), read
  // by stats() meanwhile; set and cleared with the GIL held.
  const WorkerPool* closing_ = nullptr;
  WorkerPool::Stats final_;
  int final_workers_ = 0;
  int64_t final_queue_size_ = 0;
  py::object on_drained_;
  py::object timed_out_;
  std::vector<std::shared_ptr<Inbox>> inboxes_;  // GIL-guarded
};

}  // namespace

void RegisterPool(py::module_& m) {
  py::class_<WorkerPool::Ticket, std::shared_ptr<WorkerPool::Ticket>>(
      m, "_PoolTicket", "A queued task's withdrawal switch (opaque).");
  py::class_<PyWorkerPool>(m, "WorkerPool",
                           "Native work-stealing thread pool (internal; use "
                           "caudal.WorkerPool).")
      .def(py::init<int, int64_t, double, py::object,
                    std::shared_ptr<ManualClock>>(),
           py::arg("workers"), py::arg("queue_size"), py::arg("task_timeout_s"),
           py::arg("on_drained") = py::none(), py::arg("clock") = nullptr)
      .def("submit", &PyWorkerPool::submit, py::arg("fn"), py::arg("args"),
           py::arg("kwargs") = py::none())
      .def("submit_withdrawable", &PyWorkerPool::submit_withdrawable,
           py::arg("fn"), py::arg("args"), py::arg("kwargs") = py::none(),
           "submit, returning (future, ticket) for withdraw(ticket).")
      .def("withdraw", &PyWorkerPool::withdraw, py::arg("ticket"),
           "Takes a queued task out of the queue; True if it was still "
           "queued (it will not run).")
      .def("close", &PyWorkerPool::Close, py::arg("cancel_pending") = false)
      .def("stats", &PyWorkerPool::stats)
      .def_property_readonly("closed", &PyWorkerPool::closed);
}

}  // namespace caudal::bindings
