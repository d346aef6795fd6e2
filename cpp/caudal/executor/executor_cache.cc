// Executor: the result cache (L1): which executions go through it, lookups,
// stores, invalidation, and the read-outs.
#include <algorithm>
#include <atomic>

#include "absl/strings/match.h"
#include "caudal/executor/executor.h"

namespace caudal {

bool Executor::CacheEnabled(const StepEntry& step,
                            const OptimizationConfig& config) {
  switch (step.spec.cache) {
    case StepSwitch::kOn:
      return true;
    case StepSwitch::kOff:
      return false;
    case StepSwitch::kDefault:
      break;
  }
  return config.enable_cache_optimization;
}

bool Executor::UseCache(StepEntry& step, const OptimizationConfig& config) {
  if (!CacheEnabled(step, config)) return false;
  if (step.spec.cache == StepSwitch::kOn) return true;  // forced: always
  if (!step.cache_bypass.load(std::memory_order_relaxed)) return true;
  // Plain loads and stores, no locked instruction (this path exists to be
  // cheaper than a lookup): with several threads executing the step at once
  // a count may be lost, which only moves the next probe a little.
  const uint32_t c = step.cache_probe.load(std::memory_order_relaxed);
  step.cache_probe.store(c + 1, std::memory_order_relaxed);
  if (c % kCacheProbeEvery == 0) return true;
  std::atomic<uint64_t>& skipped = step.stats->cache_bypassed;
  skipped.store(skipped.load(std::memory_order_relaxed) + 1,
                std::memory_order_relaxed);
  return false;
}

// Decides from the lookups since the last decision whether caching the step
// pays: the time hits save (hit rate x (latency of an execution that misses
// - latency of a hit)) against what a lookup and a store cost.
static void ReassessCache(StepEntry& step) {
  const StepStats& s = *step.stats;
  const uint64_t hits = s.cache_hits.load(std::memory_order_relaxed) +
                        s.shared_flights.load(std::memory_order_relaxed);
  const uint64_t lookups = s.cache_hits.load(std::memory_order_relaxed) +
                           s.cache_misses.load(std::memory_order_relaxed);
  const uint64_t dh = hits - step.admission_hits.exchange(hits);
  const uint64_t dl = lookups - step.admission_lookups.exchange(lookups);
  if (dl == 0) return;
  const double hit_rate = std::min(1.0, static_cast<double>(dh) / dl);
  const uint64_t n = s.latency.count();
  const uint64_t n_hit = s.hit_executions.load(std::memory_order_relaxed);
  if (n <= n_hit) return;  // no execution that ran the step has finished yet
  const double hit_sum =
      static_cast<double>(s.hit_latency_ns.load(std::memory_order_relaxed));
  const double miss_latency =
      (static_cast<double>(s.latency.sum_ns()) - hit_sum) /
      static_cast<double>(n - n_hit);
  const double hit_latency = n_hit ? hit_sum / static_cast<double>(n_hit) : 0;
  const bool pays =
      hit_rate * (miss_latency - hit_latency) >= Executor::kCacheLookupCostNs ||
      miss_latency >= Executor::kAlwaysCacheNs;
  step.cache_bypass.store(!pays, std::memory_order_relaxed);
}

bool Executor::CacheLookup(StepEntry& step, const Key128& key, int64_t now_ns,
                           std::vector<CachedValue>* dropped,
                           const HitTaker& take) {
  if (MaintenanceDue(now_ns)) Maintain(now_ns);
  const bool v = cache_.Visit(key, now_ns, dropped, take);
  StepStats& s = *step.stats;
  const uint64_t n =
      (v ? s.cache_hits : s.cache_misses)
          .fetch_add(1, std::memory_order_relaxed) +
      1 + (v ? s.cache_misses : s.cache_hits).load(std::memory_order_relaxed);
  if (n % 256 == 0) ReassessCache(step);
  const EventType t = v ? EventType::kCacheHit : EventType::kCacheMiss;
  if (events_.Wants(t)) PublishStep(t, step, now_ns, 0, 0, "");
  return v;
}

absl::optional<CachedValue> Executor::CacheLookup(
    StepEntry& step, const Key128& key, int64_t now_ns,
    std::vector<CachedValue>* dropped) {
  absl::optional<CachedValue> out;
  CacheLookup(step, key, now_ns, dropped,
              [&](const CachedValue& v) { out = v; });
  return out;
}

void Executor::RecordCacheHit(StepEntry& step, int64_t latency_ns) {
  StepStats* s = step.stats;
  // Counted as an execution and a success by StepStats::Take.
  s->latency.Record(latency_ns);
  s->hit_executions.fetch_add(1, std::memory_order_relaxed);
  s->hit_latency_ns.fetch_add(latency_ns > 0 ? latency_ns : 0,
                              std::memory_order_relaxed);
  if (tracing()) {
    const int64_t now = NowNs();
    Trace(step, nullptr, now - latency_ns, now, 0, SpanOutcome::kCacheHit,
          false);
  }
}

void Executor::RecordUncacheable(StepEntry& step, absl::string_view reason) {
  step.stats->uncacheable.fetch_add(1, std::memory_order_relaxed);
  MutexLock lock(&uncacheable_mu_);
  ++uncacheable_[reason];
}

std::vector<std::pair<std::string, uint64_t>> Executor::UncacheableReasons()
    const {
  MutexLock lock(&uncacheable_mu_);
  return {uncacheable_.begin(), uncacheable_.end()};
}

double Executor::CacheTtlSeconds(const StepEntry& step,
                                 const OptimizationConfig& config) {
  return step.spec.cache_ttl_s > 0 ? step.spec.cache_ttl_s
                                   : config.cache_ttl_seconds;
}

void Executor::CachePut(const StepEntry& step, const OptimizationConfig& config,
                        const Key128& key, CachedValue value, size_t bytes,
                        int64_t now_ns, std::vector<CachedValue>* dropped,
                        uint64_t since_epoch) {
  NoteCacheName(step);
  const double ttl_ns = CacheTtlSeconds(step, config) * 1e9;
  const int64_t expires = ttl_ns >= static_cast<double>(kNeverExpires - now_ns)
                              ? kNeverExpires
                              : now_ns + static_cast<int64_t>(ttl_ns);
  cache_.Put(key, std::move(value), bytes, expires, step.spec.cache_group,
             step.spec.tags, dropped, since_epoch);
}

void Executor::CacheStore(const ExecutionRecord& r, CachedValue value,
                          size_t bytes, int64_t now_ns,
                          std::vector<CachedValue>* dropped) {
  CachePut(*r.step, *r.config, r.cache_key, std::move(value), bytes, now_ns,
           dropped, r.cache_epoch);
}

size_t Executor::InvalidateTag(absl::string_view tag,
                               std::vector<CachedValue>* dropped) {
  return cache_.InvalidateTag(tag, dropped);
}

size_t Executor::InvalidateGroup(uint64_t group,
                                 std::vector<CachedValue>* dropped) {
  return cache_.InvalidateGroup(group, dropped);
}

absl::StatusOr<size_t> Executor::InvalidatePrefix(
    absl::string_view prefix, std::vector<CachedValue>* dropped) {
  if (prefix.empty()) {
    return absl::InvalidArgumentError(
        "invalidate_prefix: the prefix is empty; clear_cache() drops every "
        "cached result");
  }
  std::vector<uint64_t> groups;
  {
    MutexLock lock(&cache_names_mu_);
    // The epoch first: a step recorded from now on is covered by it.
    prefix_epochs_[std::string(prefix)] = cache_.TakeEpoch();
    for (auto it = cache_names_.lower_bound(prefix);
         it != cache_names_.end() && absl::StartsWith(it->first, prefix);
         ++it) {
      groups.push_back(it->second);
    }
  }
  size_t removed = 0;
  for (const uint64_t group : groups) {
    removed += cache_.InvalidateGroup(group, dropped);
  }
  return removed;
}

void Executor::RecordCacheName(const StepEntry& step) {
  const StepSpec& spec = step.spec;
  MutexLock lock(&cache_names_mu_);
  cache_names_.try_emplace(spec.name, spec.cache_group);
  // An invalidation of a prefix of the name that came before the name was
  // known: executions of the step that began before it store nothing.
  uint64_t covered = 0;
  for (size_t n = 1; n <= spec.name.size(); ++n) {
    const auto it =
        prefix_epochs_.find(absl::string_view(spec.name).substr(0, n));
    if (it != prefix_epochs_.end()) covered = std::max(covered, it->second);
  }
  if (covered != 0) cache_.CoverGroup(spec.cache_group, covered);
  step.cache_named.store(true, std::memory_order_release);
}

void Executor::ClearCache(std::vector<CachedValue>* dropped) {
  const uint64_t before = cache_.Epoch();
  cache_.Clear(dropped);
  // The clear's epoch is above those taken before it: they cover nothing
  // more (one a prefix invalidation takes meanwhile stays).
  MutexLock lock(&cache_names_mu_);
  for (auto it = prefix_epochs_.begin(); it != prefix_epochs_.end();) {
    if (it->second <= before) {
      prefix_epochs_.erase(it++);
    } else {
      ++it;
    }
  }
}

}  // namespace caudal
