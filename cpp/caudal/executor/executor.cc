#include "caudal/executor/executor.h"

#include <chrono>

#include "absl/strings/str_join.h"

namespace caudal {

int64_t MonotonicNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Executor::Executor(OptimizationConfig config)
    : config_(std::make_shared<const OptimizationConfig>(std::move(config))) {}

std::shared_ptr<const OptimizationConfig> Executor::config() const {
  MutexLock lock(&config_mu_);
  return config_;
}

absl::Status Executor::ApplyConfig(const OptimizationConfig& config) {
  const auto problems = config.Validate();
  if (!problems.empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(problems, "\n"));
  }
  auto next = std::make_shared<const OptimizationConfig>(config);
  {
    MutexLock lock(&config_mu_);
    config_.swap(next);
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
  return absl::OkStatus();  // `next` (the old config) dies outside the lock
}

ExecutionRecord* Executor::Begin(std::shared_ptr<StepEntry> step,
                                 int64_t now_ns) {
  auto* r = new ExecutionRecord();
  r->step = std::move(step);
  r->config = config();
  r->start_ns = now_ns;
  r->attempt_start_ns = now_ns;
  r->attempt = 1;
  StepStats* s = r->step->stats;
  s->attempts.fetch_add(1, std::memory_order_relaxed);
  s->in_flight.fetch_add(1, std::memory_order_relaxed);
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  return r;
}

double Executor::AttemptFailed(ExecutionRecord* r, int64_t now_ns,
                               bool timed_out) {
  StepStats* s = r->step->stats;
  s->errors.fetch_add(1, std::memory_order_relaxed);
  if (timed_out) s->timeouts.fetch_add(1, std::memory_order_relaxed);
  r->had_error = true;
  if (r->attempt > r->step->spec.max_retries) return -1.0;
  ++r->attempt;
  r->attempt_start_ns = now_ns;
  s->attempts.fetch_add(1, std::memory_order_relaxed);
  s->retries.fetch_add(1, std::memory_order_relaxed);
  return 0.0;
}

ExecutionOutcome Executor::Finish(ExecutionRecord* r, int64_t now_ns) {
  ExecutionOutcome out;
  out.latency_ns = now_ns - r->start_ns;
  out.attempts = r->attempt;
  StepStats* s = r->step->stats;
  s->latency.Record(out.latency_ns);
  s->executions.fetch_add(1, std::memory_order_relaxed);
  s->in_flight.fetch_sub(1, std::memory_order_relaxed);
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
  const double threshold_ns = r->config->slow_execution_threshold_ms * 1e6;
  if (static_cast<double>(out.latency_ns) > threshold_ns) {
    out.slow = true;
    s->slow.fetch_add(1, std::memory_order_relaxed);
  }
  delete r;
  return out;
}

ExecutionOutcome Executor::Succeed(ExecutionRecord* r, int64_t now_ns) {
  StepStats* s = r->step->stats;
  s->successes.fetch_add(1, std::memory_order_relaxed);
  if (r->had_error) s->recovered.fetch_add(1, std::memory_order_relaxed);
  return Finish(r, now_ns);
}

ExecutionOutcome Executor::Fail(ExecutionRecord* r, int64_t now_ns,
                                bool fell_back) {
  StepStats* s = r->step->stats;
  s->failures.fetch_add(1, std::memory_order_relaxed);
  if (fell_back) s->fallbacks.fetch_add(1, std::memory_order_relaxed);
  return Finish(r, now_ns);
}

void Executor::Cancel(ExecutionRecord* r, int64_t now_ns) {
  StepStats* s = r->step->stats;
  s->cancelled.fetch_add(1, std::memory_order_relaxed);
  s->in_flight.fetch_sub(1, std::memory_order_relaxed);
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
  delete r;
}

}  // namespace caudal
