// WorkerPool: a fixed set of worker threads that run submitted tasks, with
// a bound on queued tasks, a queueing timeout, per-worker work-stealing
// deques and graceful shutdown. It runs the executor's synchronous steps
// (the bindings take the GIL inside each task and hand results back to the
// event loop with loop.call_soon_threadsafe from the done-callback).
//
// Idea. Each worker owns a WorkStealingDeque. A task submitted from a
// worker thread (a task spawning a task) goes onto that worker's own deque:
// LIFO, cache-warm, no lock. A task submitted from any other thread goes
// onto a shared FIFO injection queue. A worker looks in its own deque, then
// the injection queue, then steals from the top of a random other worker's
// deque. A worker that finds nothing spins briefly, then sleeps on a
// CondVar; Submit wakes one sleeper, and only takes the sleep mutex when
// someone sleeps.
//
// Invariants.
//   - queued (tasks accepted and not yet started) <= queue_size, exactly:
//     Submit reserves a place with a CAS before enqueueing and fails with
//     kResourceExhausted "task queue is full" when there is none.
//   - on_done is called exactly once for every task Submit accepted (OK),
//     and never for one it refused: with the status run() returned, or
//     kDeadlineExceeded (waited in the queue for task_timeout_ns or more; it
//     was not run), or kCancelled (Shutdown(drain=false) before it started).
//     A task that runs is never interrupted: the timeout only applies while
//     it waits, and is checked when a worker takes it from the queue.
//   - Withdrawal: a task submitted with a Ticket can be withdrawn while it
//     is queued (Withdraw): its place in the queue is free at once, it never
//     runs, and on_done gets kCancelled "withdrawn" on a worker thread (when
//     a worker comes across it, at the latest as the worker exits). Taking a
//     task and withdrawing it race on the ticket's state with a CAS, so a
//     task is either run or withdrawn, never both. Separately, a task's
//     run() may find as it starts that its work was withdrawn (the
//     bindings: its asyncio future is cancelled) and return kCancelled
//     without doing it. Both count as withdrawn, not completed.
//   - No lock is held while a task or a done-callback runs.
//   - No lost wake-up: a worker announces it is going to sleep (under the
//     sleep mutex) and then re-checks the queued count; Submit counts the
//     task and then checks for sleepers. Both are seq_cst, so one of them
//     sees the other.
//
// Thread-safety: Submit, stats and Shutdown may be called from any thread,
// including from inside a task (Shutdown from a task only starts the
// shutdown; the threads are joined by a later Shutdown or the destructor,
// which must then run on a thread that is not one of this pool's workers).
// run and on_done must not throw.
//
// Cost: Submit from a worker is a CAS, a clock read, an allocation and a
// deque push; from another thread the push takes the injection mutex
// instead. Counters are per-worker (one writer each) and summed by stats().
#ifndef CAUDAL_CONCURRENCY_WORKER_POOL_H_
#define CAUDAL_CONCURRENCY_WORKER_POOL_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "caudal/concurrency/work_stealing_deque.h"

namespace caudal {

class WorkerPool {
 public:
  struct Options {
    int workers = 0;              // 0 = std::thread::hardware_concurrency()
    int64_t queue_size = 1024;    // accepted-but-not-started tasks, pool-wide
    int64_t task_timeout_ns = 0;  // 0 = tasks may wait in the queue forever
    // Monotonic time in ns; empty = std::chrono::steady_clock. Tests inject
    // a fake. Called from Submit and from the workers, so it must be
    // thread-safe.
    std::function<int64_t()> clock;
    // Called on each worker thread as it starts and just before it ends
    // (the bindings keep a Python thread state per worker between tasks).
    // May be empty.
    std::function<void()> on_thread_start;
    std::function<void()> on_thread_exit;
  };

  // The message of the kCancelled status on_done gets for a task withdrawn
  // from the queue (Withdraw, or a sweep at shutdown of withdrawn tasks).
  static constexpr absl::string_view kWithdrawn = "withdrawn";

  struct Task {
    // The work. Its status is passed to on_done; a non-OK status counts as
    // failed, except kCancelled: the work was withdrawn before it began
    // (counts as withdrawn; see the header comment).
    absl::AnyInvocable<absl::Status()> run;
    // Called exactly once if Submit accepted the task (see the header
    // comment for the statuses), on a worker thread. May be empty.
    absl::AnyInvocable<void(absl::Status)> on_done;
    // Both callables (and what they captured) are destroyed on the worker
    // thread right after on_done returns, or inside Submit if it refused
    // the task -- relevant when they hold Python objects.
  };

  // A queued task's withdrawal switch (Submit with a ticket, Withdraw).
  class Ticket {
   public:
    // Withdrawn (by Withdraw) before a worker took it.
    bool withdrawn() const {
      return state_.load(std::memory_order_acquire) == kWithdrawn;
    }

   private:
    friend class WorkerPool;
    static constexpr int kQueued = 0, kTaken = 1, kWithdrawn = 2;
    std::atomic<int> state_{kQueued};
    const WorkerPool* pool_ = nullptr;  // another pool's ticket is refused
  };

  struct Stats {
    int64_t active = 0;            // tasks running now
    int64_t queued = 0;            // accepted, not yet started
    int64_t sleeping = 0;          // workers asleep on the CondVar
    int64_t completed = 0;         // tasks that ran (whatever they returned)
    int64_t withdrawn = 0;         // withdrawn while queued: not run
    int64_t failed = 0;            // of those, the ones whose run() was not OK
    int64_t rejected = 0;          // Submit refused: queue full or shut down
    int64_t timed_out = 0;         // completed with kDeadlineExceeded, not run
    int64_t cancelled = 0;         // completed with kCancelled, not run
    int64_t steals = 0;            // tasks a worker took from another's deque
    int64_t total_latency_ns = 0;  // over completed: queue wait + run time
    double average_latency_ns() const {
      return completed ? static_cast<double>(total_latency_ns) / completed
                       : 0.0;
    }
  };

  // kInvalidArgument for negative workers, queue_size < 1 or a negative
  // timeout. Starts the threads.
  static absl::StatusOr<std::unique_ptr<WorkerPool>> Create(Options options);

  // Shutdown(/*drain=*/true), like Python's ThreadPoolExecutor: queued tasks
  // still run. Must not run on one of this pool's worker threads.
  ~WorkerPool();

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Accepts the task (OK) or refuses it at once: kResourceExhausted "task
  // queue is full", kFailedPrecondition once Shutdown has begun (also for
  // tasks submitted by running tasks while a drain is in progress, as in
  // Python's ThreadPoolExecutor), kInvalidArgument if task.run is empty. A
  // refused task is destroyed without calling on_done.
  absl::Status Submit(Task task);
  // The same, handing back in `*ticket` (when accepted) the switch with
  // which the caller may withdraw the task while it is queued.
  absl::Status Submit(Task task, std::shared_ptr<Ticket>* ticket);

  // Withdraws a queued task: true if it was still queued (it will not run,
  // its queue place is free now; on_done gets kCancelled "withdrawn" later,
  // on a worker thread). False if a worker had taken it (it runs or ran),
  // it was withdrawn already, or the ticket is another pool's. Any thread.
  bool Withdraw(Ticket& ticket);

  // Stops accepting tasks and waits for the workers to finish. With drain,
  // queued tasks run first; without, they complete with kCancelled (tasks
  // already running finish either way). Idempotent; a later call without
  // drain turns a draining shutdown into a cancelling one.
  void Shutdown(bool drain);

  Stats stats() const;
  int workers() const { return static_cast<int>(workers_.size()); }
  int64_t queue_size() const { return options_.queue_size; }
  bool accepting() const { return accepting_.load(std::memory_order_acquire); }
  // True on one of this pool's worker threads.
  bool InWorkerThread() const;

 private:
  struct TaskNode;
  struct Worker;
  enum class Mode : int { kRunning, kDrain, kCancel };

  explicit WorkerPool(Options options);
  void WorkerLoop(int index);
  TaskNode* FindTask(Worker& self);
  TaskNode* TakeAny(Worker& self);
  // A node withdrawn by its ticket, found in a queue: on_done, delete.
  void DropWithdrawn(TaskNode* node);
  // On a worker's exit: the withdrawn nodes left in its deque and the
  // injection queue.
  void DropLeftovers(Worker& self);
  void Execute(Worker& self, TaskNode* node);
  void WakeOne();
  int64_t Now() const;

  const Options options_;
  std::vector<std::unique_ptr<Worker>> workers_;

  // Accepted-but-not-started tasks (reserved by Submit, released when a
  // worker takes the task).
  alignas(64) std::atomic<int64_t> queued_{0};
  alignas(64) std::atomic<int> sleepers_{0};
  std::atomic<int64_t> rejected_{0};
  std::atomic<int64_t> withdrawn_{0};  // by Withdraw
  std::atomic<bool> accepting_{true};
  std::atomic<Mode> mode_{Mode::kRunning};

  absl::Mutex inject_mu_;
  std::deque<TaskNode*> inject_ ABSL_GUARDED_BY(inject_mu_);
  std::atomic<int64_t> inject_size_{0};

  absl::Mutex sleep_mu_;
  absl::CondVar sleep_cv_;

  absl::Mutex shutdown_mu_;  // serializes joining
  bool joined_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace caudal

#endif  // CAUDAL_CONCURRENCY_WORKER_POOL_H_
