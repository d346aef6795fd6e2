#include "caudal/concurrency/key_limiter.h"

#include <algorithm>
#include <utility>

namespace caudal {
namespace {

int InitialLimit(KeyLimiter::Mode mode, int fixed,
                 const BaselineGradientLimit::Options& o) {
  switch (mode) {
    case KeyLimiter::Mode::kFixed:
      return fixed;
    case KeyLimiter::Mode::kAdaptive:
      return o.initial_limit;
    case KeyLimiter::Mode::kUnlimited:
      break;
  }
  return KeyLimiter::kUnlimited;
}

}  // namespace

const char* LimiterModeName(KeyLimiter::Mode mode) {
  switch (mode) {
    case KeyLimiter::Mode::kFixed:
      return "fixed";
    case KeyLimiter::Mode::kAdaptive:
      return "adaptive";
    case KeyLimiter::Mode::kUnlimited:
      break;
  }
  return "unlimited";
}

KeyLimiter::KeyLimiter(std::string key, Mode mode, int fixed_limit,
                       const BaselineGradientLimit::Options& adaptive,
                       Observer observer)
    : KeyLimiter(
          std::move(key), mode, fixed_limit,
          std::make_shared<const BaselineGradientLimit::Options>(adaptive),
          observer ? std::make_shared<const Observer>(std::move(observer))
                   : nullptr) {}

KeyLimiter::KeyLimiter(std::string key, Mode mode, int fixed_limit,
                       SharedOptions adaptive, SharedObserver observer)
    : key_(std::move(key)),
      observer_(std::move(observer)),
      mode_(mode),
      gate_(InitialLimit(mode, fixed_limit, *adaptive)),
      fixed_limit_(fixed_limit),
      options_(std::move(adaptive)),
      min_rtt_threshold_ns_(options_->min_rtt_threshold_ns) {}

const BaselineGradientLimit& KeyLimiter::AlgorithmLocked() {
  if (algorithm_ == nullptr) {
    algorithm_ = std::make_unique<BaselineGradientLimit>(
        *BaselineGradientLimit::Create(*options_));
  }
  return *algorithm_;
}

bool KeyLimiter::SameOptions(const BaselineGradientLimit::Options& a,
                             const BaselineGradientLimit::Options& b) {
  return a.initial_limit == b.initial_limit && a.min_limit == b.min_limit &&
         a.max_limit == b.max_limit && a.tolerance == b.tolerance &&
         a.backoff_ratio == b.backoff_ratio && a.growth == b.growth &&
         a.min_window_ns == b.min_window_ns &&
         a.max_window_ns == b.max_window_ns && a.min_samples == b.min_samples &&
         a.min_rtt_threshold_ns == b.min_rtt_threshold_ns &&
         a.baseline_period == b.baseline_period &&
         a.slow_start_growth == b.slow_start_growth &&
         a.probe_interval == b.probe_interval;
}

std::vector<LimiterWaiter> KeyLimiter::SetLimitLocked(
    int next, int64_t now_ns, std::optional<LimitChange>* change) {
  const int current = gate_.limit();
  if (next == current) return {};
  ++changes_;
  LimitChange c{key_,           now_ns, current, next, gate_.in_flight(),
                gate_.waiting()};
  if (history_ == nullptr)
    history_ = std::make_unique<std::deque<LimitChange>>();
  history_->push_back(c);
  while (history_->size() > kHistory) history_->pop_front();
  *change = std::move(c);
  return gate_.SetLimit(next);
}

std::vector<LimiterWaiter> KeyLimiter::Sample(int64_t start_ns, int64_t rtt_ns,
                                              int inflight, bool drop,
                                              int64_t now_ns) {
  if (mode_.load(std::memory_order_acquire) != Mode::kAdaptive) return {};
  if (!drop && rtt_ns < min_rtt_threshold_ns_.load(std::memory_order_relaxed)) {
    NoteFast(inflight);
    return {};
  }
  Wake();
  std::vector<LimiterWaiter> woken;
  std::optional<LimitChange> change;
  {
    MutexLock lock(&mu_);
    if (mode_.load(std::memory_order_relaxed) != Mode::kAdaptive) return {};
    AlgorithmLocked();  // made by the first sample that can move the limit
    ++samples_;
    if (drop) ++drops_;
    const int next = algorithm_->OnSample(start_ns, rtt_ns, inflight, drop);
    // Under mu_, so limit changes reach the gate in sample order.
    woken = SetLimitLocked(next, now_ns, &change);
  }
  if (change && observer_) (*observer_)(*change);
  return woken;
}

void KeyLimiter::NoteFast(int inflight) {
  if (inflight > kDormantMaxInFlight) {
    fast_streak_.store(0, std::memory_order_relaxed);
    return;
  }
  const int n = fast_streak_.load(std::memory_order_relaxed) + 1;
  fast_streak_.store(n, std::memory_order_relaxed);
  if (n >= kDormantAfter && !dormant_.load(std::memory_order_relaxed)) {
    wake_in_flight_.store(std::max(1, std::min(kWakeInFlight, gate_.limit())),
                          std::memory_order_relaxed);
    dormant_.store(true, std::memory_order_relaxed);
  }
}

std::vector<LimiterWaiter> KeyLimiter::Configure(
    Mode mode, int fixed_limit, const BaselineGradientLimit::Options& adaptive,
    int64_t now_ns) {
  std::vector<LimiterWaiter> woken;
  std::optional<LimitChange> change;
  {
    MutexLock lock(&mu_);
    Wake();  // a new mode or new settings: permits until fast again
    const Mode old = mode_.load(std::memory_order_relaxed);
    int next = gate_.limit();
    if (mode == Mode::kAdaptive) {
      // Restarts lazily: the next sample that can move the limit makes it.
      if (old != Mode::kAdaptive || !SameOptions(*options_, adaptive))
        algorithm_.reset();
      next = algorithm_ != nullptr
                 ? algorithm_->limit()
                 : BaselineGradientLimit::Create(adaptive)->limit();
    } else {
      algorithm_.reset();
      next = mode == Mode::kFixed ? fixed_limit : kUnlimited;
    }
    if (!SameOptions(*options_, adaptive))
      options_ =
          std::make_shared<const BaselineGradientLimit::Options>(adaptive);
    fixed_limit_ = fixed_limit;
    min_rtt_threshold_ns_.store(adaptive.min_rtt_threshold_ns,
                                std::memory_order_relaxed);
    mode_.store(mode, std::memory_order_release);
    woken = SetLimitLocked(next, now_ns, &change);
  }
  if (change && observer_) (*observer_)(*change);
  return woken;
}

KeyLimiter::Snapshot KeyLimiter::snapshot() const {
  Snapshot s;
  s.key = key_;
  s.mode = mode();
  s.limit = gate_.limit();
  s.in_flight = gate_.in_flight();
  s.waiting = gate_.waiting();
  s.counters = gate_.counters();
  s.dormant = dormant();
  MutexLock lock(&mu_);
  s.changes = changes_;
  s.samples = samples_;
  s.drops = drops_;
  if (s.mode == Mode::kAdaptive) {
    // Not made yet: what a fresh one reports.
    absl::optional<BaselineGradientLimit> fresh;
    if (algorithm_ == nullptr)
      fresh.emplace(*BaselineGradientLimit::Create(*options_));
    const BaselineGradientLimit& a = algorithm_ ? *algorithm_ : *fresh;
    s.estimated_limit = a.estimated_limit();
    s.baseline_rtt_ns = a.baseline_rtt_ns();
    s.last_window_rtt_ns = a.last_window_rtt_ns();
    s.windows = a.windows();
    s.slow_start = a.slow_start();
  }
  return s;
}

std::vector<LimitChange> KeyLimiter::history() const {
  MutexLock lock(&mu_);
  if (history_ == nullptr) return {};
  return {history_->begin(), history_->end()};
}

KeyLimiter* LimiterRegistry::GetOrCreate(
    const std::string& key, KeyLimiter::Mode mode, int fixed_limit,
    const BaselineGradientLimit::Options& adaptive) {
  MutexLock lock(&mu_);
  auto it = limiters_.find(key);
  if (it != limiters_.end()) return it->second.get();
  if (options_ == nullptr || !KeyLimiter::SameOptions(*options_, adaptive))
    options_ = std::make_shared<const BaselineGradientLimit::Options>(adaptive);
  auto l =
      std::make_unique<KeyLimiter>(key, mode, fixed_limit, options_, observer_);
  KeyLimiter* out = l.get();
  limiters_.emplace(out->key(), std::move(l));
  return out;
}

KeyLimiter* LimiterRegistry::Find(const std::string& key) const {
  MutexLock lock(&mu_);
  auto it = limiters_.find(key);
  return it == limiters_.end() ? nullptr : it->second.get();
}

std::vector<KeyLimiter*> LimiterRegistry::All() const {
  MutexLock lock(&mu_);
  std::vector<KeyLimiter*> out;
  out.reserve(limiters_.size());
  for (const auto& [k, l] : limiters_) out.push_back(l.get());
  return out;
}

}  // namespace caudal
