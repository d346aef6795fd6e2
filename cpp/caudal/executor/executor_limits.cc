// Executor: concurrency limits: the global slots and the per-key limiters.
#include <limits>

#include "absl/strings/str_cat.h"
#include "caudal/executor/executor.h"

namespace caudal {

Waiter Executor::ReleaseSlot() {
  std::optional<Waiter> next = gate_.Release();
  return next ? *next : Waiter();
}

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
                                        std::vector<Waiter>* woken) {
  const std::string& key = spec.limit_key.empty() ? spec.name : spec.limit_key;
  int fixed = 0;
  {
    MutexLock lock(&limit_keys_mu_);
    // An entry only for a key with a fixed limit (a key per step name
    // otherwise: see docs/monitoring.md, "Step names").
    auto it = fixed_limits_.find(key);
    const int known = it == fixed_limits_.end() ? 0 : it->second;
    if (spec.max_concurrency > 0) {
      if (known > 0 && known != spec.max_concurrency) {
        return absl::InvalidArgumentError(
            absl::StrCat("step '", spec.name, "': concurrency key '", key,
                         "' already has max_concurrency=", known,
                         " (set by another step); got ", spec.max_concurrency));
      }
      fixed_limits_[key] = spec.max_concurrency;
      fixed = spec.max_concurrency;
    } else {
      fixed = known;
    }
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

std::vector<Waiter> Executor::SampleLimit(ExecutionRecord* r, int64_t now_ns,
                                          bool drop) {
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
