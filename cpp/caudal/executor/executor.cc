#include "caudal/executor/executor.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace caudal {

int64_t MonotonicNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Executor::Executor(OptimizationConfig config, uint64_t random_seed)
    : errors_(static_cast<size_t>(config.error_cache_size)),
      random_(random_seed),
      cache_(ResultCacheOptions{static_cast<size_t>(config.cache_max_size),
                                static_cast<size_t>(config.cache_max_bytes),
                                16}) {
  gate_.SetLimit(static_cast<int>(
      config.max_concurrent_executions.value_or(kUnlimitedSlots)));
  {
    MutexLock lock(&config_mu_);
    retained_.push_back(
        std::make_shared<const OptimizationConfig>(std::move(config)));
    current_.store(retained_.back().get(), std::memory_order_release);
  }
  {
    MutexLock lock(&breakers_mu_);
    registries_.push_back(std::make_unique<BreakerRegistry>());
    registry_.store(registries_.back().get(), std::memory_order_release);
  }
  std::vector<CachedValue> dropped;  // none: the cache is empty
  ApplyMemoryConfig(*current_config(), MonotonicNowNs(), &dropped);
}

std::shared_ptr<const OptimizationConfig> Executor::config() const {
  MutexLock lock(&config_mu_);
  return retained_.back();
}

namespace {
// "a,b,c": the fields whose values differ (at most ~200 characters).
std::string ChangedFields(const OptimizationConfig& a,
                          const OptimizationConfig& b) {
  std::string out;
#define CAUDAL_DIFF_FIELD(kind, name, def, doc) \
  if (a.name != b.name && out.size() < 200) {   \
    if (!out.empty()) out += ',';               \
    out += #name;                               \
  }
  CAUDAL_CONFIG_FIELDS(CAUDAL_DIFF_FIELD)
#undef CAUDAL_DIFF_FIELD
  return out;
}
}  // namespace

CircuitBreaker::Options Executor::BreakerOptions(const OptimizationConfig& c) {
  CircuitBreaker::Options o;
  o.failure_threshold = static_cast<int>(c.circuit_breaker_failure_threshold);
  o.recovery_timeout_ns =
      static_cast<int64_t>(c.circuit_breaker_recovery_timeout_seconds * 1e9);
  o.half_open_max_calls =
      static_cast<int>(c.circuit_breaker_half_open_max_calls);
  o.success_threshold = static_cast<int>(c.circuit_breaker_success_threshold);
  o.window_size = static_cast<int>(c.circuit_breaker_window_size);
  o.minimum_calls = static_cast<int>(c.circuit_breaker_minimum_calls);
  o.failure_rate_threshold = c.circuit_breaker_failure_rate_threshold;
  return o;
}

absl::Status Executor::ApplyConfig(const OptimizationConfig& config,
                                   std::vector<FlightWaiter>* woken) {
  const auto problems = config.Validate();
  if (!problems.empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(problems, "\n"));
  }
  const CircuitBreaker::Options next_opts = BreakerOptions(config);
  const absl::Status opts_ok = next_opts.Validate();
  if (!opts_ok.ok()) return opts_ok;
  std::string changed;  // names of the fields that changed, for the event
  {
    MutexLock lock(&config_mu_);
    const OptimizationConfig& current = *retained_.back();
    changed = ChangedFields(current, config);
    const CircuitBreaker::Options cur = BreakerOptions(current);
    const bool breakers_changed =
        cur.failure_threshold != next_opts.failure_threshold ||
        cur.recovery_timeout_ns != next_opts.recovery_timeout_ns ||
        cur.half_open_max_calls != next_opts.half_open_max_calls ||
        cur.success_threshold != next_opts.success_threshold ||
        cur.window_size != next_opts.window_size ||
        cur.minimum_calls != next_opts.minimum_calls ||
        cur.failure_rate_threshold != next_opts.failure_rate_threshold;
    if (breakers_changed) {
      MutexLock block(&breakers_mu_);
      registries_.push_back(std::make_unique<BreakerRegistry>());
      registry_.store(registries_.back().get(), std::memory_order_release);
      breaker_gen_.fetch_add(1, std::memory_order_acq_rel);
    }
    if (config.error_cache_size != current.error_cache_size) {
      errors_.Resize(static_cast<size_t>(config.error_cache_size));
    }
    retained_.push_back(std::make_shared<const OptimizationConfig>(config));
    current_.store(retained_.back().get(), std::memory_order_release);
  }
  // A raised (or removed) limit hands slots to waiters, for the caller to wake.
  std::vector<FlightWaiter> handed = gate_.SetLimit(static_cast<int>(
      config.max_concurrent_executions.value_or(kUnlimitedSlots)));
  if (woken != nullptr) {
    for (auto& w : handed) woken->push_back(std::move(w));
  }
  std::vector<CachedValue> dropped;  // destroyed after the locks are gone
  // Cache capacity, record pool and pressure threshold (executor_memory.cc).
  ApplyMemoryConfig(*current_config(), MonotonicNowNs(), &dropped);
  const uint64_t gen = generation_.fetch_add(1, std::memory_order_acq_rel) + 1;
  if (events_.Wants(EventType::kConfigChanged)) {
    Event e;
    e.type = EventType::kConfigChanged;
    e.time_ns = MonotonicNowNs();
    e.value = static_cast<double>(gen);
    e.detail = changed;
    events_.Publish(e);
  }
  return absl::OkStatus();
}

CircuitBreaker* Executor::BreakerFor(StepEntry& e,
                                     const OptimizationConfig& cfg) {
  const uint64_t gen = breaker_gen_.load(std::memory_order_acquire);
  if (e.breaker_gen.load(std::memory_order_acquire) == gen) {
    return e.breaker.load(std::memory_order_relaxed);
  }
  BreakerRegistry* reg = registry_.load(std::memory_order_acquire);
  const std::string& key =
      e.spec.breaker_key.empty() ? e.spec.name : e.spec.breaker_key;
  auto b = reg->GetOrCreate(key, BreakerOptions(cfg));
  CircuitBreaker* breaker = b.ok() ? *b : nullptr;
  e.breaker.store(breaker, std::memory_order_relaxed);
  e.breaker_gen.store(gen, std::memory_order_release);
  return breaker;
}

void Executor::Note(const StepSpec& spec,
                    const absl::optional<CircuitBreaker::Transition>& t) {
  if (!t.has_value()) return;
  const std::string& name =
      spec.breaker_key.empty() ? spec.name : spec.breaker_key;
  {
    MutexLock lock(&transitions_mu_);
    transitions_.push_back({name, *t});
    while (transitions_.size() > kTransitionLog) transitions_.pop_front();
  }
  if (events_.Wants(EventType::kBreakerTransition)) {
    Event e;
    e.type = EventType::kBreakerTransition;
    e.time_ns = t->at_ns;
    e.key = name;
    e.value = static_cast<double>(t->from);
    e.value2 = static_cast<double>(t->to);
    e.detail = absl::StrCat(StateName(t->from), "->", StateName(t->to));
    events_.Publish(e);
  }
}

void Executor::PublishStep(EventType type, const StepEntry& step,
                           int64_t now_ns, double value, double value2,
                           absl::string_view detail) {
  Event e;
  e.type = type;
  e.time_ns = now_ns;
  e.key = step.spec.name;
  e.value = value;
  e.value2 = value2;
  e.detail = std::string(detail);
  events_.Publish(e);
}

bool Executor::Admit(ExecutionRecord* r, int64_t now_ns) {
  r->breaker_pending = false;
  r->probe = false;
  if (!r->config->enable_circuit_breaker || !r->step->spec.use_breaker)
    return true;
  CircuitBreaker* b = BreakerFor(*r->step, *r->config);
  r->breaker = b;
  if (b == nullptr) return true;
  const CircuitBreaker::Admission a = b->TryAcquire(now_ns);
  Note(r->step->spec, a.transition);
  if (!a.admitted()) {
    r->retry_after_ns = a.retry_after_ns;
    return false;
  }
  r->breaker_pending = true;
  r->probe = a.probe();
  return true;
}

ExecutionRecord* Executor::Begin(std::shared_ptr<StepEntry> step,
                                 int64_t now_ns,
                                 const OptimizationConfig* cfg) {
  if (MaintenanceDue(now_ns)) Maintain(now_ns);
  const OptimizationConfig* config = cfg ? cfg : current_config();
  ExecutionRecord* r = NewRecord(*config);
  r->step = std::move(step);
  r->config = config;
  r->start_ns = now_ns;
  StepStats* s = r->step->stats;
  s->in_flight.fetch_add(1, std::memory_order_relaxed);
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  if (!Admit(r, now_ns)) return r;  // attempt stays 0: rejected
  r->attempt = 1;
  s->attempts.fetch_add(1, std::memory_order_relaxed);
  if (events_.Wants(EventType::kStepStarted))
    PublishStep(EventType::kStepStarted, *r->step, now_ns, 1, 0, "");
  return r;
}

FailureDecision Executor::AttemptFailed(ExecutionRecord* r, int64_t now_ns,
                                        const AttemptError& e) {
  StepStats* s = r->step->stats;
  s->errors.fetch_add(1, std::memory_order_relaxed);
  if (e.timed_out) s->timeouts.fetch_add(1, std::memory_order_relaxed);
  r->had_error = true;
  if (r->breaker_pending) {
    r->breaker_pending = false;
    if (e.counts_for_breaker) {
      Note(r->step->spec, r->breaker->OnFailure(now_ns, r->probe));
    } else {
      r->breaker->OnIgnored(r->probe);
    }
  }
  const OptimizationConfig& cfg = *r->config;
  uint64_t pattern = 0;
  if (cfg.enable_optimized_error_handling) {
    // The retry after the previous error did not recover.
    if (r->retried_pattern != 0)
      errors_.RecordRetryOutcome(r->retried_pattern, false);
    const std::string normalized = cfg.error_pattern_match_message
                                       ? NormalizeMessage(e.message)
                                       : std::string();
    pattern = ErrorPatternId(r->step->spec.name, e.exc_type, normalized);
    errors_.RecordError(pattern, r->step->spec.name, e.exc_type, e.message,
                        now_ns);
  }
  r->retried_pattern = 0;
  const RetryPolicy& policy = r->step->spec.retry;
  if (!e.retryable) return {FailureVerdict::kNotRetryable};
  if (!policy.HasAttemptLeft(r->attempt))
    return {FailureVerdict::kNoAttemptsLeft};
  if (pattern != 0 &&
      !errors_.ShouldRetry(
          pattern, static_cast<int>(cfg.error_pattern_min_observations))) {
    fail_fast_.fetch_add(1, std::memory_order_relaxed);
    return {FailureVerdict::kFailFast};
  }
  r->retried_pattern = pattern;
  const double delay = policy.DelayBeforeAttempt(
      r->attempt + 1, e.retry_after_s, random_.Next());
  return {FailureVerdict::kRetry, delay};
}

bool Executor::StartAttempt(ExecutionRecord* r, int64_t now_ns) {
  if (!Admit(r, now_ns)) return false;
  ++r->attempt;
  StepStats* s = r->step->stats;
  s->attempts.fetch_add(1, std::memory_order_relaxed);
  s->retries.fetch_add(1, std::memory_order_relaxed);
  if (events_.Wants(EventType::kStepStarted))
    PublishStep(EventType::kStepStarted, *r->step, now_ns, r->attempt, 0, "");
  return true;
}

FlightWaiter Executor::ReleaseSlot() {
  std::optional<FlightWaiter> next = gate_.Release();
  return next ? *next : FlightWaiter();
}

// Gives back the record's slot and hands over what the caller must wake;
// moves the step out of the record and deletes it.
void Executor::Release(ExecutionRecord* r, ExecutionOutcome& out) {
  if (r->permit) out.wake = ReleaseSlot();
  out.flight = r->cache_flight;
  out.flight_key = r->cache_key;
  out.step = std::move(r->step);
  FreeRecord(r);
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
  Release(r, out);
  return out;
}

ExecutionOutcome Executor::Succeed(ExecutionRecord* r, int64_t now_ns) {
  StepStats* s = r->step->stats;
  s->successes.fetch_add(1, std::memory_order_relaxed);
  if (r->had_error) s->recovered.fetch_add(1, std::memory_order_relaxed);
  if (r->breaker_pending) {
    r->breaker_pending = false;
    Note(r->step->spec, r->breaker->OnSuccess(now_ns, r->probe));
  }
  if (r->retried_pattern != 0)
    errors_.RecordRetryOutcome(r->retried_pattern, true);
  if (events_.Wants(EventType::kStepFinished))
    PublishStep(EventType::kStepFinished, *r->step, now_ns,
                static_cast<double>(now_ns - r->start_ns) / 1e9, r->attempt,
                "");
  return Finish(r, now_ns);
}

ExecutionOutcome Executor::Fail(ExecutionRecord* r, int64_t now_ns,
                                bool fell_back) {
  StepStats* s = r->step->stats;
  s->failures.fetch_add(1, std::memory_order_relaxed);
  if (fell_back) s->fallbacks.fetch_add(1, std::memory_order_relaxed);
  if (r->breaker_pending) {  // not reached through AttemptFailed: give back
    r->breaker_pending = false;
    r->breaker->OnIgnored(r->probe);
  }
  if (events_.Wants(EventType::kStepFailed))
    PublishStep(EventType::kStepFailed, *r->step, now_ns,
                static_cast<double>(now_ns - r->start_ns) / 1e9, r->attempt,
                r->attempt == 0 ? "rejected" : (fell_back ? "fallback" : ""));
  return Finish(r, now_ns);
}

ExecutionOutcome Executor::Reject(ExecutionRecord* r, int64_t now_ns) {
  r->step->stats->rejected.fetch_add(1, std::memory_order_relaxed);
  return Fail(r, now_ns, /*fell_back=*/false);
}

ExecutionOutcome Executor::Cancel(ExecutionRecord* r, int64_t now_ns) {
  StepStats* s = r->step->stats;
  s->cancelled.fetch_add(1, std::memory_order_relaxed);
  s->in_flight.fetch_sub(1, std::memory_order_relaxed);
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
  if (r->breaker_pending) r->breaker->OnIgnored(r->probe);
  if (events_.Wants(EventType::kStepCancelled))
    PublishStep(EventType::kStepCancelled, *r->step, now_ns,
                static_cast<double>(now_ns - r->start_ns) / 1e9, r->attempt,
                "");
  ExecutionOutcome out;
  Release(r, out);
  return out;
}

std::vector<BreakerRegistry::NamedSnapshot> Executor::BreakerSnapshots() const {
  return registry_.load(std::memory_order_acquire)->SnapshotAll();
}

std::vector<BreakerTransitionRecord> Executor::RecentTransitions() const {
  MutexLock lock(&transitions_mu_);
  return {transitions_.begin(), transitions_.end()};
}

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

absl::optional<CachedValue> Executor::CacheLookup(
    StepEntry& step, const Key128& key, int64_t now_ns,
    std::vector<CachedValue>* dropped) {
  if (MaintenanceDue(now_ns)) Maintain(now_ns);
  absl::optional<CachedValue> v = cache_.Get(key, now_ns, dropped);
  (v ? step.stats->cache_hits : step.stats->cache_misses)
      .fetch_add(1, std::memory_order_relaxed);
  const EventType t = v ? EventType::kCacheHit : EventType::kCacheMiss;
  if (events_.Wants(t)) PublishStep(t, step, now_ns, 0, 0, "");
  return v;
}

void Executor::RecordCacheHit(StepEntry& step, int64_t latency_ns) {
  StepStats* s = step.stats;
  s->executions.fetch_add(1, std::memory_order_relaxed);
  s->successes.fetch_add(1, std::memory_order_relaxed);
  s->latency.Record(latency_ns);
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
                        int64_t now_ns, std::vector<CachedValue>* dropped) {
  const double ttl_ns = CacheTtlSeconds(step, config) * 1e9;
  const int64_t expires = ttl_ns >= static_cast<double>(kNeverExpires - now_ns)
                              ? kNeverExpires
                              : now_ns + static_cast<int64_t>(ttl_ns);
  cache_.Put(key, std::move(value), bytes, expires, step.spec.cache_group,
             step.spec.tags, dropped);
}

void Executor::CacheStore(const ExecutionRecord& r, CachedValue value,
                          size_t bytes, int64_t now_ns,
                          std::vector<CachedValue>* dropped) {
  CachePut(*r.step, *r.config, r.cache_key, std::move(value), bytes, now_ns,
           dropped);
}

size_t Executor::InvalidateTag(absl::string_view tag,
                               std::vector<CachedValue>* dropped) {
  return cache_.InvalidateTag(tag, dropped);
}

size_t Executor::InvalidateGroup(uint64_t group,
                                 std::vector<CachedValue>* dropped) {
  return cache_.InvalidateGroup(group, dropped);
}

void Executor::ClearCache(std::vector<CachedValue>* dropped) {
  cache_.Clear(dropped);
}

}  // namespace caudal
