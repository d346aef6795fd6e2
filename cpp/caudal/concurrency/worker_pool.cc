#include "caudal/concurrency/worker_pool.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "caudal/base/mutex.h"

namespace caudal {
namespace {

// The pool (and worker index) the current thread works for, if any.
thread_local const WorkerPool* tls_pool = nullptr;
thread_local int tls_worker = -1;

// Rounds of looking for work before going to sleep: the first half with a
// CPU pause, the second yielding the core. Short, so an idle pool sleeps.
constexpr int kSpinRounds = 32;

void CpuRelax(int round) {
  if (round >= kSpinRounds / 2) {
    std::this_thread::yield();
    return;
  }
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#else
  std::this_thread::yield();
#endif
}

// For counters with one writer: a plain load + store, no locked instruction.
void Bump(std::atomic<int64_t>& counter, int64_t by = 1) {
  counter.store(counter.load(std::memory_order_relaxed) + by,
                std::memory_order_relaxed);
}

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct WorkerPool::TaskNode {
  Task task;
  int64_t enqueue_ns;
  std::shared_ptr<Ticket> ticket;  // null: cannot be withdrawn
};

struct WorkerPool::Worker {
  explicit Worker(int i) : index(i), rng(0x9E3779B9u * (i + 1)) {}

  const int index;
  WorkStealingDeque<TaskNode*> deque;
  std::thread thread;
  uint32_t rng;  // victim choice; this worker only

  // Written only by this worker, read by stats().
  alignas(64) std::atomic<int64_t> active{0};
  std::atomic<int64_t> completed{0};
  std::atomic<int64_t> failed{0};
  std::atomic<int64_t> timed_out{0};
  std::atomic<int64_t> cancelled{0};
  std::atomic<int64_t> withdrawn{0};
  std::atomic<int64_t> steals{0};
  std::atomic<int64_t> latency_ns{0};
};

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::Create(
    Options options) {
  if (options.workers < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("workers must be >= 0, got ", options.workers));
  }
  if (options.queue_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("queue_size must be >= 1, got ", options.queue_size));
  }
  if (options.task_timeout_ns < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "task_timeout_ns must be >= 0, got ", options.task_timeout_ns));
  }
  if (options.workers == 0) {
    options.workers =
        std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  }
  if (!options.clock) options.clock = SteadyNowNs;
  std::unique_ptr<WorkerPool> pool(new WorkerPool(std::move(options)));
  for (auto& w : pool->workers_) {
    const int index = w->index;
    WorkerPool* p = pool.get();
    w->thread = std::thread([p, index] { p->WorkerLoop(index); });
  }
  return pool;
}

WorkerPool::WorkerPool(Options options) : options_(std::move(options)) {
  workers_.reserve(options_.workers);
  for (int i = 0; i < options_.workers; ++i) {
    workers_.push_back(std::make_unique<Worker>(i));
  }
}

WorkerPool::~WorkerPool() { Shutdown(/*drain=*/true); }

int64_t WorkerPool::Now() const { return options_.clock(); }

bool WorkerPool::InWorkerThread() const { return tls_pool == this; }

absl::Status WorkerPool::Submit(Task task) {
  return Submit(std::move(task), nullptr);
}

absl::Status WorkerPool::Submit(Task task, std::shared_ptr<Ticket>* ticket) {
  if (!task.run) return absl::InvalidArgumentError("task.run is empty");
  // Allocate and stamp first, so the window between reserving a place and
  // publishing the task (where a worker may see queued > 0 but find
  // nothing) is as short as possible.
  auto node =
      std::make_unique<TaskNode>(TaskNode{std::move(task), Now(), nullptr});
  if (ticket != nullptr) {
    node->ticket = std::make_shared<Ticket>();
    node->ticket->pool_ = this;
  }

  int64_t q = queued_.load(std::memory_order_relaxed);
  do {
    if (q >= options_.queue_size) {
      rejected_.fetch_add(1, std::memory_order_relaxed);
      return absl::ResourceExhaustedError("task queue is full");
    }
  } while (!queued_.compare_exchange_weak(q, q + 1, std::memory_order_seq_cst,
                                          std::memory_order_relaxed));
  // Checked after reserving: Shutdown clears accepting_ and workers exit
  // only once queued_ is 0, so a task counted here is never stranded.
  if (!accepting_.load(std::memory_order_seq_cst)) {
    queued_.fetch_sub(1, std::memory_order_seq_cst);
    rejected_.fetch_add(1, std::memory_order_relaxed);
    return absl::FailedPreconditionError("worker pool is shut down");
  }

  if (ticket != nullptr) *ticket = node->ticket;
  if (tls_pool == this) {
    workers_[tls_worker]->deque.Push(node.release());
  } else {
    MutexLock lock(&inject_mu_);
    inject_.push_back(node.release());
    inject_size_.fetch_add(1, std::memory_order_release);
  }
  WakeOne();
  return absl::OkStatus();
}

bool WorkerPool::Withdraw(Ticket& ticket) {
  if (ticket.pool_ != this) return false;
  int expected = Ticket::kQueued;
  if (!ticket.state_.compare_exchange_strong(expected, Ticket::kWithdrawn,
                                             std::memory_order_acq_rel)) {
    return false;  // taken by a worker, or withdrawn already
  }
  // Its place is free; the node stays in its queue until a worker drops it.
  queued_.fetch_sub(1, std::memory_order_seq_cst);
  withdrawn_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void WorkerPool::DropWithdrawn(TaskNode* node) {
  if (node->task.on_done) node->task.on_done(absl::CancelledError(kWithdrawn));
  delete node;
}

void WorkerPool::DropLeftovers(Worker& self) {
  // queued_ is 0 and no task is accepted any more: what is left is
  // withdrawn.
  while (std::optional<TaskNode*> mine = self.deque.Pop()) DropWithdrawn(*mine);
  std::vector<TaskNode*> left;
  {
    MutexLock lock(&inject_mu_);
    left.assign(inject_.begin(), inject_.end());
    inject_.clear();
    inject_size_.store(0, std::memory_order_release);
  }
  for (TaskNode* node : left) DropWithdrawn(node);
}

void WorkerPool::WakeOne() {
  // Pairs with the sleeper's increment of sleepers_ followed by its load of
  // queued_ (see WorkerLoop): seq_cst on both sides.
  if (sleepers_.load(std::memory_order_seq_cst) == 0) return;
  MutexLock lock(&sleep_mu_);
  sleep_cv_.Signal();
}

void WorkerPool::WorkerLoop(int index) {
  tls_pool = this;
  tls_worker = index;
  if (options_.on_thread_start) options_.on_thread_start();
  Worker& self = *workers_[index];
  for (;;) {
    TaskNode* node = FindTask(self);
    for (int round = 0; node == nullptr && round < kSpinRounds; ++round) {
      CpuRelax(round);
      node = FindTask(self);
    }
    if (node != nullptr) {
      Execute(self, node);
      continue;
    }
    bool exit = false;
    {
      MutexLock lock(&sleep_mu_);
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      for (;;) {
        // accepting_ is read before queued_: a Submit that still saw
        // accepting_ == true had already counted its task in queued_.
        const bool stopping =
            !accepting_.load(std::memory_order_seq_cst) &&
            mode_.load(std::memory_order_seq_cst) != Mode::kRunning;
        if (queued_.load(std::memory_order_seq_cst) > 0) break;
        if (stopping) {
          exit = true;  // shut down and nothing left to take
          break;
        }
        Wait(&sleep_cv_, &sleep_mu_);
      }
      sleepers_.fetch_sub(1, std::memory_order_seq_cst);
    }
    if (exit) break;
  }
  DropLeftovers(self);
  if (options_.on_thread_exit) options_.on_thread_exit();
  tls_pool = nullptr;
  tls_worker = -1;
}

WorkerPool::TaskNode* WorkerPool::FindTask(Worker& self) {
  for (;;) {
    TaskNode* node = TakeAny(self);
    if (node == nullptr) return nullptr;
    if (node->ticket != nullptr) {
      int expected = Ticket::kQueued;
      if (!node->ticket->state_.compare_exchange_strong(
              expected, Ticket::kTaken, std::memory_order_acq_rel)) {
        DropWithdrawn(node);  // Withdraw freed its place already
        continue;
      }
    }
    queued_.fetch_sub(1, std::memory_order_seq_cst);
    return node;
  }
}

// A node from this worker's deque, the injection queue or another worker's
// deque (not yet counted out of queued_).
WorkerPool::TaskNode* WorkerPool::TakeAny(Worker& self) {
  TaskNode* node = nullptr;
  if (std::optional<TaskNode*> mine = self.deque.Pop()) {
    node = *mine;
  } else if (inject_size_.load(std::memory_order_acquire) > 0) {
    MutexLock lock(&inject_mu_);
    if (!inject_.empty()) {
      node = inject_.front();
      inject_.pop_front();
      inject_size_.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  const int n = static_cast<int>(workers_.size());
  if (node == nullptr && n > 1) {
    self.rng ^= self.rng << 13;  // xorshift32
    self.rng ^= self.rng >> 17;
    self.rng ^= self.rng << 5;
    const int start = static_cast<int>(self.rng % static_cast<uint32_t>(n));
    for (int k = 0; k < n && node == nullptr; ++k) {
      Worker& victim = *workers_[(start + k) % n];
      if (&victim == &self) continue;
      if (std::optional<TaskNode*> stolen = victim.deque.Steal()) {
        node = *stolen;
        Bump(self.steals);
      }
    }
  }
  return node;
}

void WorkerPool::Execute(Worker& self, TaskNode* node) {
  absl::Status status;
  if (mode_.load(std::memory_order_acquire) == Mode::kCancel) {
    status = absl::CancelledError("worker pool shut down before the task ran");
    Bump(self.cancelled);
  } else if (options_.task_timeout_ns > 0 &&
             Now() - node->enqueue_ns >= options_.task_timeout_ns) {
    status = absl::DeadlineExceededError(
        "task waited in the queue for task_timeout_ns or longer");
    Bump(self.timed_out);
  } else {
    Bump(self.active);
    status = node->task.run();
    const int64_t end_ns = Now();
    Bump(self.active, -1);
    if (absl::IsCancelled(status)) {
      Bump(self.withdrawn);  // run() found its work withdrawn: not done
    } else {
      Bump(self.latency_ns, end_ns - node->enqueue_ns);
      if (!status.ok()) Bump(self.failed);
      Bump(self.completed);
    }
  }
  if (node->task.on_done) node->task.on_done(std::move(status));
  delete node;  // the task's captured state is destroyed on this thread
}

void WorkerPool::Shutdown(bool drain) {
  // Mode first, then accepting_: once accepting() is false the mode is
  // final (tests rely on it), and workers exit only after seeing both.
  const Mode want = drain ? Mode::kDrain : Mode::kCancel;
  Mode cur = mode_.load(std::memory_order_seq_cst);
  while (cur == Mode::kRunning ||
         (cur == Mode::kDrain && want == Mode::kCancel)) {
    if (mode_.compare_exchange_weak(cur, want, std::memory_order_seq_cst)) {
      break;
    }
  }
  accepting_.store(false, std::memory_order_seq_cst);
  {
    MutexLock lock(&sleep_mu_);
    sleep_cv_.SignalAll();
  }
  if (InWorkerThread()) return;  // cannot join ourselves
  MutexLock lock(&shutdown_mu_);
  if (joined_) return;
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
  joined_ = true;
}

WorkerPool::Stats WorkerPool::stats() const {
  Stats s;
  s.queued = std::max<int64_t>(0, queued_.load(std::memory_order_relaxed));
  s.sleeping = sleepers_.load(std::memory_order_relaxed);
  s.rejected = rejected_.load(std::memory_order_relaxed);
  s.withdrawn = withdrawn_.load(std::memory_order_relaxed);
  for (const auto& w : workers_) {
    s.active += w->active.load(std::memory_order_relaxed);
    s.completed += w->completed.load(std::memory_order_relaxed);
    s.failed += w->failed.load(std::memory_order_relaxed);
    s.timed_out += w->timed_out.load(std::memory_order_relaxed);
    s.cancelled += w->cancelled.load(std::memory_order_relaxed);
    s.withdrawn += w->withdrawn.load(std::memory_order_relaxed);
    s.steals += w->steals.load(std::memory_order_relaxed);
    s.total_latency_ns += w->latency_ns.load(std::memory_order_relaxed);
  }
  return s;
}

}  // namespace caudal
