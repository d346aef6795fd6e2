#include "caudal/executor/executor.h"

#include <algorithm>
#include <chrono>
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
  ConfigureSpans(config);
  // A raised (or removed) limit hands slots to waiters, for the caller to wake.
  std::vector<FlightWaiter> handed = gate_.SetLimit(static_cast<int>(
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

absl::optional<double> AttemptError::RetryHintSeconds(double now_unix_s) const {
  if (retry_after_s.has_value()) return retry_after_s;
  if (!retry_after_ms_header.empty()) {
    if (auto s = ParseRetryAfterMs(retry_after_ms_header)) return s;
  }
  if (!retry_after_header.empty())
    return ParseRetryAfter(retry_after_header, now_unix_s);
  return absl::nullopt;
}

FailureDecision Executor::AttemptFailed(ExecutionRecord* r, int64_t now_ns,
                                        const AttemptError& e) {
  if (r->rejected) {
    FailureDecision d = BreakerWait(r);
    if (d.verdict != FailureVerdict::kRetry && r->step->spec.has_fallback)
      RouteToFallback(r, &d);
    return d;
  }
  FailureDecision d = Decide(r, now_ns, e);
  // Overload signals and network errors are the adaptive limit's drop
  // signal. A timed-out attempt is a latency sample (it ran that long): one
  // slow answer says nothing about load, many are seen by the limit's
  // window median. Other errors say nothing about the backend's load.
  const bool drop = e.Overloaded() || e.network_error;
  if (r->limiter != nullptr && (drop || e.timed_out)) {
    d.wake = SampleLimit(r, now_ns, drop);
    if (drop && d.verdict == FailureVerdict::kRetry) SpreadOverLimit(r, &d);
  } else if (r->bypassed != nullptr && drop) {
    r->bypassed->Wake();  // overload on a dormant key: permits again
  }
  if (d.verdict != FailureVerdict::kRetry && r->step->spec.has_fallback)
    RouteToFallback(r, &d);
  return d;
}

// The fallback is another execution: it must not wait for the permits this
// one still holds (with every slot held by a primary waiting for its
// fallback, nothing could run).
void Executor::RouteToFallback(ExecutionRecord* r, FailureDecision* d) {
  d->verdict = FailureVerdict::kFallback;
  d->delay_s = 0.0;
  ReleasedPermits p = ReleasePermits(r);
  if (p.wake) d->wake.push_back(std::move(p.wake));
  if (p.wake_key) d->wake.push_back(std::move(p.wake_key));
}

// The limit was cut below the executions holding its permits: those
// holders' retries would all come back at once, over the new limit, and
// meet overload again. Spread them over the back-off stretched by the
// oversubscription (in flight / limit), as if they queued for the permits.
void Executor::SpreadOverLimit(ExecutionRecord* r, FailureDecision* d) {
  const int limit = r->limiter->limit();
  const int in_flight = r->limiter->in_flight();
  if (limit <= 0 || in_flight <= limit || d->delay_s <= 0) return;
  const double over = static_cast<double>(in_flight) / limit - 1.0;
  d->delay_s =
      std::min(d->delay_s * (1.0 + over * UnitIntervalFromBits(random_.Next())),
               r->step->spec.retry.max_backoff_s);
}

FailureDecision Executor::BreakerWait(ExecutionRecord* r) {
  const OptimizationConfig& cfg = *r->config;
  const RetryPolicy& policy = r->step->spec.retry;
  if (!cfg.circuit_breaker_wait_for_probe || policy.max_attempts <= 1)
    return {FailureVerdict::kBreakerOpen};
  double wait = static_cast<double>(r->retry_after_ns) / 1e9;
  if (wait > 0) {
    // Open: wait until it admits a probe. A refusal is a try that did not
    // call the step: it spends one unit of the retry budget.
    ++r->refusals;
    if (!policy.HasAttemptLeft(r->attempt + r->refusals) ||
        wait > policy.max_backoff_s) {
      return {FailureVerdict::kBreakerOpen};
    }
  } else {
    // Half-open, a probe out: wait for its verdict, polling at a tenth of
    // the recovery timeout (50 ms .. 1 s). Not a try; the polls of one
    // execution add up to at most the policy's max backoff.
    wait = std::clamp(cfg.circuit_breaker_recovery_timeout_seconds / 10, 0.05,
                      1.0);
    r->probe_wait_ns += static_cast<int64_t>(wait * 1e9);
    if (static_cast<double>(r->probe_wait_ns) / 1e9 > policy.max_backoff_s)
      return {FailureVerdict::kBreakerOpen};
  }
  // Spread the waiters (up to +20 %), so they do not all ask at one instant.
  wait = RetryPolicy::SpreadUp(wait, random_.Next());
  return {FailureVerdict::kRetry, wait};
}

FailureDecision Executor::Decide(ExecutionRecord* r, int64_t now_ns,
                                 const AttemptError& e) {
  StepStats* s = r->step->stats;
  s->errors.fetch_add(1, std::memory_order_relaxed);
  if (e.timed_out) s->timeouts.fetch_add(1, std::memory_order_relaxed);
  r->had_error = true;
  r->last_timed_out = e.timed_out;
  {
    const size_t n = std::min(e.exc_type.size(), sizeof(r->last_error) - 1);
    std::memcpy(r->last_error, e.exc_type.data(), n);
    r->last_error[n] = '\0';
  }
  if (r->breaker_pending) {
    r->breaker_pending = false;
    // Overload is not failure: the backend is alive and asks us to slow
    // down (the adaptive limit and the retry's back-off do that).
    if (e.counts_for_breaker && !e.Overloaded()) {
      Note(r->step->spec, r->breaker->OnFailure(now_ns, r->probe));
    } else {
      r->breaker->OnIgnored(r->probe);
    }
  }
  const OptimizationConfig& cfg = *r->config;
  // Fail-fast judges deterministic errors only: a transient failure (see
  // AttemptError::Transient) is never asked ShouldRetry, and it is not taken
  // as the failed outcome of a deterministic error's retry (that retry's
  // outcome is the next deterministic error, or the success). Retries of
  // transient errors are still counted, for the read-outs.
  const bool judged = !e.Transient();
  const bool keep_pending =
      !judged && r->retried_pattern != 0 && !r->retried_transient;
  uint64_t pattern = 0;
  if (cfg.enable_optimized_error_handling) {
    // The retry after the previous error did not recover.
    if (r->retried_pattern != 0 && !keep_pending)
      errors_.RecordRetryOutcome(r->retried_pattern, false);
    const std::string normalized = cfg.error_pattern_match_message
                                       ? NormalizeMessage(e.message)
                                       : std::string();
    pattern = ErrorPatternId(r->step->spec.name, e.exc_type, normalized);
    errors_.RecordError(pattern, r->step->spec.name, e.exc_type, e.message,
                        now_ns);
  }
  if (!keep_pending) r->retried_pattern = 0;
  const RetryPolicy& policy = r->step->spec.retry;
  if (!e.retryable) return {FailureVerdict::kNotRetryable};
  if (!policy.HasAttemptLeft(r->attempt + r->refusals))
    return {FailureVerdict::kNoAttemptsLeft};
  // A stated wait longer than the execution may make ends it now, rather
  // than after sleeping for nothing.
  absl::optional<double> hint;
  if (e.HasRetryHint()) {
    hint = e.RetryHintSeconds(absl::ToUnixMicros(absl::Now()) / 1e6);
    if (hint.has_value() && *hint > cfg.retry_after_max_seconds)
      return {FailureVerdict::kWaitTooLong};
  }
  if (judged && pattern != 0 &&
      !errors_.ShouldRetry(
          pattern, static_cast<int>(cfg.error_pattern_min_observations))) {
    fail_fast_.fetch_add(1, std::memory_order_relaxed);
    return {FailureVerdict::kFailFast};
  }
  if (!keep_pending) {
    r->retried_pattern = pattern;
    r->retried_transient = !judged;
  }
  double delay =
      policy.DelayBeforeAttempt(r->attempt + 1, hint, random_.Next());
  if (e.Overloaded() && !hint.has_value() && policy.max_backoff_s > 0) {
    // Overloaded, without saying for how long: give the backend at least
    // kOverloadBaseS, doubling per retry (an outage of a few seconds must
    // not use up the budget), spread upwards by up to 20 %.
    const int k = std::min(r->attempt - 1, 30);
    const double floor = RetryPolicy::SpreadUp(
        kOverloadBaseS * static_cast<double>(1 << k), random_.Next());
    delay = std::min(std::max(delay, floor), policy.max_backoff_s);
  }
  return {FailureVerdict::kRetry, delay};
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

FlightWaiter Executor::ReleaseSlot() {
  std::optional<FlightWaiter> next = gate_.Release();
  return next ? *next : FlightWaiter();
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
  std::vector<FlightWaiter> woken;
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

absl::optional<CachedValue> Executor::CacheLookup(
    StepEntry& step, const Key128& key, int64_t now_ns,
    std::vector<CachedValue>* dropped) {
  if (MaintenanceDue(now_ns)) Maintain(now_ns);
  absl::optional<CachedValue> v = cache_.Get(key, now_ns, dropped);
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

void Executor::RecordCacheHit(StepEntry& step, int64_t latency_ns) {
  StepStats* s = step.stats;
  s->executions.fetch_add(1, std::memory_order_relaxed);
  s->successes.fetch_add(1, std::memory_order_relaxed);
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

void Executor::ClearCache(std::vector<CachedValue>* dropped) {
  cache_.Clear(dropped);
}

// ---- per-key limits ----

KeyLimiter::Mode Executor::LimitModeFor(int fixed_limit,
                                        const OptimizationConfig& c) {
  if (fixed_limit > 0) return KeyLimiter::Mode::kFixed;
  if (c.enable_concurrency_optimization &&
      !c.max_concurrent_executions.has_value()) {
    return KeyLimiter::Mode::kAdaptive;
  }
  return KeyLimiter::Mode::kUnlimited;
}

BaselineGradientLimit::Options Executor::AdaptiveOptions(
    const OptimizationConfig& c) {
  BaselineGradientLimit::Options o;
  o.initial_limit = static_cast<int>(c.concurrency_initial_limit);
  o.min_limit = static_cast<int>(c.concurrency_min_limit);
  o.max_limit = static_cast<int>(c.concurrency_max_limit);
  o.tolerance = c.concurrency_latency_tolerance;
  return o;
}

absl::Status Executor::RegisterLimitKey(const StepSpec& spec,
                                        std::vector<FlightWaiter>* woken) {
  const std::string& key = spec.limit_key.empty() ? spec.name : spec.limit_key;
  int fixed = 0;
  {
    MutexLock lock(&limit_keys_mu_);
    int& known = fixed_limits_[key];
    if (spec.max_concurrency > 0) {
      if (known > 0 && known != spec.max_concurrency) {
        return absl::InvalidArgumentError(
            absl::StrCat("step '", spec.name, "': concurrency key '", key,
                         "' already has max_concurrency=", known,
                         " (set by another step); got ", spec.max_concurrency));
      }
      known = spec.max_concurrency;
    }
    fixed = known;
  }
  const OptimizationConfig& cfg = *current_config();
  const KeyLimiter::Mode mode = LimitModeFor(fixed, cfg);
  const BaselineGradientLimit::Options adaptive = AdaptiveOptions(cfg);
  KeyLimiter* l = limiters_.GetOrCreate(key, mode, fixed, adaptive);
  if (l->mode() != mode ||
      (mode == KeyLimiter::Mode::kFixed && l->limit() != fixed)) {
    for (auto& w : l->Configure(mode, fixed, adaptive, NowNs())) {
      if (woken != nullptr) woken->push_back(std::move(w));
    }
  }
  return absl::OkStatus();
}

KeyLimiter* Executor::LimiterFor(StepEntry& e, const OptimizationConfig& cfg) {
  const uint64_t gen = generation_.load(std::memory_order_acquire);
  if (e.limiter_gen.load(std::memory_order_acquire) == gen) {
    return e.limiter.load(std::memory_order_relaxed);
  }
  KeyLimiter* l = limiters_.Find(e.limit_key());
  if (l != nullptr && l->mode() == KeyLimiter::Mode::kUnlimited) l = nullptr;
  e.limiter.store(l, std::memory_order_relaxed);
  e.limiter_gen.store(gen, std::memory_order_release);
  return l;
}

std::vector<FlightWaiter> Executor::SampleLimit(ExecutionRecord* r,
                                                int64_t now_ns, bool drop) {
  return r->limiter->Sample(r->attempt_start_ns, now_ns - r->attempt_start_ns,
                            r->limit_inflight, drop, now_ns);
}

ReleasedPermits Executor::ReleasePermits(ExecutionRecord* r) {
  ReleasedPermits out;
  if (r->permit) {
    out.wake = ReleaseSlot();
    r->permit = false;
  }
  if (r->limiter != nullptr) {
    out.wake_key = ReleaseKey(r->limiter);
    r->limiter = nullptr;
  }
  if (r->bypassed != nullptr) {
    r->bypassed->EndBypass();
    r->bypassed = nullptr;
  }
  return out;
}

}  // namespace caudal
