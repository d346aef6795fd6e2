#include "caudal/executor/executor.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace caudal {

Executor::Executor(OptimizationConfig config, uint64_t random_seed,
                   std::shared_ptr<const ManualClock> clock)
    : clock_(std::move(clock)),
      manual_clock_(clock_.get()),
      errors_(static_cast<size_t>(config.error_cache_size)),
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
  ApplyMemoryConfig(*current_config(), NowNs(), &dropped);
  ConfigureSpans(*current_config());
}

void Executor::ConfigureSpans(const OptimizationConfig& c) {
  SpanRecorder::Options o;
  o.sampling_rate = c.telemetry_sampling_rate;
  o.buffer_size = static_cast<size_t>(c.telemetry_buffer_size);
  spans_.Configure(o);
  const bool on = c.enable_optimized_telemetry &&
                  exporters_.load(std::memory_order_relaxed);
  tracing_.store(on, std::memory_order_relaxed);
}

void Executor::SetTracing(bool on) {
  exporters_.store(on, std::memory_order_relaxed);
  ConfigureSpans(*current_config());
}

void Executor::RecordSpan(const StepEntry& step, const ExecutionRecord* r,
                          int64_t start_ns, int64_t end_ns, int attempts,
                          SpanOutcome outcome, bool slow, bool sampled) {
  SpanRecord span;
  span.step = &step.stats->name;
  span.start_ns = start_ns;
  span.end_ns = end_ns;
  span.attempts = static_cast<uint32_t>(attempts > 0 ? attempts : 0);
  span.outcome = outcome;
  span.slow = slow;
  span.sampled = sampled;
  if (r != nullptr) {
    if (r->breaker != nullptr)
      span.breaker_state = static_cast<uint8_t>(r->breaker->state());
    if (r->had_error) span.SetErrorType(r->last_error);
  }
  if (TraceParentSource src = parent_source_.load(std::memory_order_acquire))
    span.parent = src(parent_ctx_.load(std::memory_order_relaxed));
  spans_.Record(span);
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
                                   std::vector<Waiter>* woken) {
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
  ConfigureSpans(config);
  // A raised (or removed) limit hands slots to waiters, for the caller to wake.
  std::vector<Waiter> handed = gate_.SetLimit(static_cast<int>(
      config.max_concurrent_executions.value_or(kUnlimitedSlots)));
  // Per-key limiters follow the new mode (adaptive, fixed, none).
  const BaselineGradientLimit::Options adaptive = AdaptiveOptions(config);
  const int64_t now = NowNs();
  for (KeyLimiter* l : limiters_.All()) {
    int fixed = 0;
    {
      MutexLock lock(&limit_keys_mu_);
      auto it = fixed_limits_.find(l->key());
      if (it != fixed_limits_.end()) fixed = it->second;
    }
    for (auto& w :
         l->Configure(LimitModeFor(fixed, config), fixed, adaptive, now)) {
      handed.push_back(std::move(w));
    }
  }
  if (woken != nullptr) {
    for (auto& w : handed) woken->push_back(std::move(w));
  }
  std::vector<CachedValue> dropped;  // destroyed after the locks are gone
  // Cache capacity, record pool and pressure threshold (executor_memory.cc).
  ApplyMemoryConfig(*current_config(), NowNs(), &dropped);
  const uint64_t gen = generation_.fetch_add(1, std::memory_order_acq_rel) + 1;
  if (events_.Wants(EventType::kConfigChanged)) {
    Event e;
    e.type = EventType::kConfigChanged;
    e.time_ns = NowNs();
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

void Executor::NoteTransition(const StepSpec& spec,
                              const CircuitBreaker::Transition& t) {
  const std::string& name =
      spec.breaker_key.empty() ? spec.name : spec.breaker_key;
  {
    MutexLock lock(&transitions_mu_);
    transitions_.push_back({name, t});
    while (transitions_.size() > kTransitionLog) transitions_.pop_front();
  }
  if (events_.Wants(EventType::kBreakerTransition)) {
    Event e;
    e.type = EventType::kBreakerTransition;
    e.time_ns = t.at_ns;
    e.key = name;
    e.value = static_cast<double>(t.from);
    e.value2 = static_cast<double>(t.to);
    e.detail = absl::StrCat(StateName(t.from), "->", StateName(t.to));
    events_.Publish(e);
  }
}

void Executor::PublishLimitChange(const LimitChange& c) {
  if (!events_.Wants(EventType::kLimitChanged)) return;
  auto limit = [](int v) {
    return v == KeyLimiter::kUnlimited ? std::numeric_limits<double>::infinity()
                                       : static_cast<double>(v);
  };
  Event e;
  e.type = EventType::kLimitChanged;
  e.time_ns = c.at_ns;
  e.key = c.key;
  e.value = limit(c.to);
  e.value2 = limit(c.from);
  if (KeyLimiter* l = limiters_.Find(c.key))
    e.detail = LimiterModeName(l->mode());
  events_.Publish(e);
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
  r->rejected = false;
  if (!r->config->enable_circuit_breaker || !r->step->spec.use_breaker)
    return true;
  CircuitBreaker* b = BreakerFor(*r->step, *r->config);
  r->breaker = b;
  if (b == nullptr) return true;
  const CircuitBreaker::Admission a = b->TryAcquire(now_ns);
  Note(r->step->spec, a.transition);
  if (!a.admitted()) {
    r->retry_after_ns = a.retry_after_ns;
    r->rejected = true;
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
  if (ABSL_PREDICT_FALSE(r == nullptr)) return nullptr;  // no slot left
  r->handle = handles_.Publish(r->slot);
  r->step = std::move(step);
  r->config = config;
  r->start_ns = now_ns;
  r->attempt_start_ns = now_ns;
  r->cache_epoch = cache_.Epoch();
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

bool Executor::StartAttempt(ExecutionRecord* r, int64_t now_ns) {
  if (!Admit(r, now_ns)) return false;
  ++r->attempt;
  r->attempt_start_ns = now_ns;
  StepStats* s = r->step->stats;
  s->attempts.fetch_add(1, std::memory_order_relaxed);
  s->retries.fetch_add(1, std::memory_order_relaxed);
  if (events_.Wants(EventType::kStepStarted))
    PublishStep(EventType::kStepStarted, *r->step, now_ns, r->attempt, 0, "");
  return true;
}

// Retires the record's handle, gives back its slot and hands over what the
// caller must wake; moves the step out of the record and deletes it.
void Executor::Release(ExecutionRecord* r, ExecutionOutcome& out) {
  // First: from here on the handle finds nothing, whatever the record
  // serves next.
  handles_.RetireSlot(r->slot);
  if (r->permit) out.wake = ReleaseSlot();
  if (r->limiter != nullptr) out.wake_key = ReleaseKey(r->limiter);
  if (r->bypassed != nullptr) r->bypassed->EndBypass();
  out.flight = r->cache_flight;
  out.flight_key = r->cache_key;
  out.step = std::move(r->step);
  FreeRecord(r);
}

ExecutionOutcome Executor::Finish(ExecutionRecord* r, int64_t now_ns,
                                  SpanOutcome outcome) {
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
  if (tracing())
    Trace(*r->step, r, r->start_ns, now_ns, r->attempt, outcome, out.slow);
  Release(r, out);
  return out;
}

ExecutionOutcome Executor::Succeed(ExecutionRecord* r, int64_t now_ns) {
  std::vector<Waiter> woken;
  if (r->limiter != nullptr) woken = SampleLimit(r, now_ns, /*drop=*/false);
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
  ExecutionOutcome out = Finish(r, now_ns, SpanOutcome::kOk);
  out.wake_more = std::move(woken);
  return out;
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
  const SpanOutcome outcome = r->attempt == 0     ? SpanOutcome::kRejected
                              : fell_back         ? SpanOutcome::kFallback
                              : r->last_timed_out ? SpanOutcome::kTimeout
                                                  : SpanOutcome::kError;
  return Finish(r, now_ns, outcome);
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
  if (tracing())
    Trace(*r->step, r, r->start_ns, now_ns, r->attempt, SpanOutcome::kCancelled,
          false);
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

}  // namespace caudal
