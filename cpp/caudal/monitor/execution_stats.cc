#include "caudal/monitor/execution_stats.h"

#include <algorithm>

namespace caudal {
namespace {
uint64_t Load(const std::atomic<uint64_t>& a) {
  return a.load(std::memory_order_relaxed);
}
}  // namespace

StepStats::Snapshot StepStats::Take() const {
  Snapshot s;
  s.name = name;
  // A hit is counted once, in hit_executions (see the fields).
  const uint64_t hits = Load(hit_executions);
  s.executions = Load(executions) + hits;
  s.successes = Load(successes) + hits;
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

std::shared_ptr<StepStats> StatsRegistry::ForStep(absl::string_view step_name) {
  MutexLock lock(&mu_);
  auto it = by_name_.find(step_name);
  if (it != by_name_.end()) return *it;
  auto s = std::make_shared<StepStats>(std::string(step_name));
  by_name_.insert(s);
  order_.push_back(s.get());
  return s;
}

std::vector<StepStats::Snapshot> StatsRegistry::TakeAll() const {
  MutexLock lock(&mu_);
  std::vector<StepStats::Snapshot> out;
  out.reserve(order_.size());
  for (const StepStats* s : order_) out.push_back(s->Take());
  return out;
}

absl::optional<StepStats::Snapshot> StatsRegistry::Take(
    absl::string_view step_name) const {
  MutexLock lock(&mu_);
  auto it = by_name_.find(step_name);
  if (it == by_name_.end()) return absl::nullopt;
  return (*it)->Take();
}

absl::optional<StepStats::Snapshot> StatsRegistry::TakeReclaimed() const {
  MutexLock lock(&mu_);
  if (reclaimed_names_ == 0) return absl::nullopt;
  return reclaimed_;
}

StepStats::Snapshot StatsRegistry::TakeTotal() const {
  StepStats::Snapshot total{};
  total.name = "*";
  for (const auto& s : TakeAll()) total.Merge(s);
  if (auto r = TakeReclaimed()) total.Merge(*r);
  return total;
}

void StatsRegistry::ResetAll() {
  MutexLock lock(&mu_);
  for (StepStats* s : order_) s->Reset();
  const std::string name = std::move(reclaimed_.name);
  reclaimed_ = StepStats::Snapshot{};
  reclaimed_.name = name;
}

std::vector<std::string> StatsRegistry::Reclaim(size_t max_tracked) {
  std::vector<std::string> names;
  std::vector<std::shared_ptr<StepStats>> freed;  // destroyed unlocked
  MutexLock lock(&mu_);
  if (max_tracked == 0 || order_.size() <= max_tracked ||
      order_.size() < next_pass_at_) {
    return names;
  }
  const size_t keep = max_tracked - max_tracked / 8;
  size_t excess = order_.size() - keep;
  if (reclaimed_names_ == 0) {
    reclaimed_ = StepStats::Snapshot{};
    reclaimed_.name = std::string(kReclaimedName);
  }
  size_t out = 0;
  for (size_t i = 0; i < order_.size(); ++i) {
    StepStats* s = order_[i];
    if (excess > 0) {
      auto it = by_name_.find(absl::string_view(s->name));
      // Held by the registry alone: no entry (and so no execution) can
      // reach it, nor get it back but through ForStep, which needs mu_.
      if (it->use_count() == 1) {
        // Pairs with the release of the last other owner's reference:
        // everything it recorded is visible to Take.
        std::atomic_thread_fence(std::memory_order_acquire);
        reclaimed_.Merge(s->Take());
        reclaimed_.in_flight = 0;
        ++reclaimed_names_;
        names.push_back(s->name);
        // The set's elements are const: take the reference out by copy.
        freed.push_back(*it);
        by_name_.erase(it);
        --excess;
        continue;
      }
    }
    order_[out++] = s;
  }
  order_.resize(out);
  next_pass_at_ = order_.size() > max_tracked
                      ? order_.size() + std::max<size_t>(1, max_tracked / 8)
                      : 0;
  return names;
}

size_t StatsRegistry::tracked() const {
  MutexLock lock(&mu_);
  return order_.size();
}

uint64_t StatsRegistry::reclaimed_names() const {
  MutexLock lock(&mu_);
  return reclaimed_names_;
}

}  // namespace caudal
