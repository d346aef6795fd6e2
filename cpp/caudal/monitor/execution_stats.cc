#include "caudal/monitor/execution_stats.h"

namespace caudal {
namespace {
uint64_t Load(const std::atomic<uint64_t>& a) {
  return a.load(std::memory_order_relaxed);
}
}  // namespace

StepStats::Snapshot StepStats::Take() const {
  Snapshot s;
  s.name = name;
  s.executions = Load(executions);
  s.successes = Load(successes);
  s.failures = Load(failures);
  s.attempts = Load(attempts);
  s.retries = Load(retries);
  s.errors = Load(errors);
  s.recovered = Load(recovered);
  s.timeouts = Load(timeouts);
  s.fallbacks = Load(fallbacks);
  s.cancelled = Load(cancelled);
  s.slow = Load(slow);
  s.cache_hits = Load(cache_hits);
  s.rejected = Load(rejected);
  s.cache_misses = Load(cache_misses);
  s.uncacheable = Load(uncacheable);
  s.shared_flights = Load(shared_flights);
  s.cache_bypassed = Load(cache_bypassed);
  s.in_flight = in_flight.load(std::memory_order_relaxed);
  s.latency = latency.Take();
  return s;
}

void StepStats::Reset() {
  for (auto* a :
       {&executions, &successes, &failures, &attempts, &retries, &errors,
        &recovered, &timeouts, &fallbacks, &cancelled, &slow, &cache_hits,
        &rejected, &cache_misses, &uncacheable, &shared_flights,
        &cache_bypassed, &hit_executions, &hit_latency_ns}) {
    a->store(0, std::memory_order_relaxed);
  }
  latency.Reset();
}

void StepStats::Snapshot::Merge(const Snapshot& o) {
  executions += o.executions;
  successes += o.successes;
  failures += o.failures;
  attempts += o.attempts;
  retries += o.retries;
  errors += o.errors;
  recovered += o.recovered;
  timeouts += o.timeouts;
  fallbacks += o.fallbacks;
  cancelled += o.cancelled;
  slow += o.slow;
  cache_hits += o.cache_hits;
  rejected += o.rejected;
  cache_misses += o.cache_misses;
  uncacheable += o.uncacheable;
  shared_flights += o.shared_flights;
  cache_bypassed += o.cache_bypassed;
  in_flight += o.in_flight;
  latency.Merge(o.latency);
}

StepStats* StatsRegistry::ForStep(absl::string_view step_name) {
  MutexLock lock(&mu_);
  auto it = by_name_.find(step_name);
  if (it != by_name_.end()) return it->second;
  order_.push_back(std::make_unique<StepStats>(std::string(step_name)));
  StepStats* s = order_.back().get();
  by_name_.emplace(s->name, s);
  return s;
}

std::vector<StepStats::Snapshot> StatsRegistry::TakeAll() const {
  MutexLock lock(&mu_);
  std::vector<StepStats::Snapshot> out;
  out.reserve(order_.size());
  for (const auto& s : order_) out.push_back(s->Take());
  return out;
}

StepStats::Snapshot StatsRegistry::TakeTotal() const {
  StepStats::Snapshot total{};
  total.name = "*";
  for (const auto& s : TakeAll()) total.Merge(s);
  return total;
}

void StatsRegistry::ResetAll() {
  MutexLock lock(&mu_);
  for (const auto& s : order_) s->Reset();
}

}  // namespace caudal
