// Executor: the native half of caudal.ExecutorCore.
//
// The Python layer makes exactly one call into this class before each
// attempt of a step and one after it (DESIGN.md, "the one rule of the hot
// path"); everything that happens per execution is decided here: attempt
// accounting, the retry decision, latency into the step's histogram, slow
// execution detection, the final outcome. Aggregation (stats dicts,
// recommendations) happens only when asked.
//
// An execution is tracked by an ExecutionRecord, created by Begin() and
// released by exactly one of Succeed(), Fail() or Cancel(). The record pins
// the config that was current at Begin(): an execution in flight finishes
// under the config it started with, even if ApplyConfig() swaps it.
//
// Thread-safety: all methods are thread-safe. Per-execution work touches only
// the record (owned by one caller) and relaxed atomics.
#ifndef CAUDAL_EXECUTOR_EXECUTOR_H_
#define CAUDAL_EXECUTOR_EXECUTOR_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "caudal/base/mutex.h"
#include "caudal/config/optimization_config.h"
#include "caudal/executor/step_spec.h"
#include "caudal/monitor/execution_stats.h"

namespace caudal {

// Monotonic clock in nanoseconds (the bindings' default time source).
int64_t MonotonicNowNs();

struct ExecutionRecord {
  std::shared_ptr<StepEntry> step;
  std::shared_ptr<const OptimizationConfig> config;
  int64_t start_ns = 0;
  int64_t attempt_start_ns = 0;
  int attempt = 0;  // attempts started so far
  bool had_error = false;
};

struct ExecutionOutcome {
  int64_t latency_ns = 0;
  int attempts = 0;
  bool slow = false;
};

class Executor {
 public:
  // `config` must be valid (see OptimizationConfig::Validate).
  explicit Executor(OptimizationConfig config);
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  std::shared_ptr<const OptimizationConfig> config() const;
  // Validates and swaps the config atomically. On error nothing changes and
  // the status lists every problem (kInvalidArgument).
  absl::Status ApplyConfig(const OptimizationConfig& config);
  uint64_t config_generation() const {
    return generation_.load(std::memory_order_acquire);
  }

  StepTable& steps() { return steps_; }
  const StepTable& steps() const { return steps_; }
  StatsRegistry& stats() { return stats_; }
  const StatsRegistry& stats() const { return stats_; }

  // Starts an execution and its first attempt.
  ExecutionRecord* Begin(std::shared_ptr<StepEntry> step, int64_t now_ns);

  // The attempt failed (the step raised or timed out). Returns the delay in
  // seconds before the next attempt (>= 0), or a negative value when no
  // attempt is left; in that case call Fail(). On a retry the next attempt
  // is started here.
  double AttemptFailed(ExecutionRecord* record, int64_t now_ns, bool timed_out);

  // Ends the execution; each releases the record.
  ExecutionOutcome Succeed(ExecutionRecord* record, int64_t now_ns);
  ExecutionOutcome Fail(ExecutionRecord* record, int64_t now_ns,
                        bool fell_back);
  // Cancelled (asyncio.CancelledError): not a failure, not retried.
  void Cancel(ExecutionRecord* record, int64_t now_ns);

  // Executions begun and not yet ended, across all steps.
  int64_t in_flight() const {
    return in_flight_.load(std::memory_order_relaxed);
  }

 private:
  ExecutionOutcome Finish(ExecutionRecord* record, int64_t now_ns);

  mutable Mutex config_mu_;
  std::shared_ptr<const OptimizationConfig> config_ ABSL_GUARDED_BY(config_mu_);
  std::atomic<uint64_t> generation_{1};
  std::atomic<int64_t> in_flight_{0};
  StatsRegistry stats_;
  StepTable steps_;
};

}  // namespace caudal

#endif  // CAUDAL_EXECUTOR_EXECUTOR_H_
