#include "caudal/resilience/circuit_breaker.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/base/optimization.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace caudal {
namespace {

using State = CircuitBreaker::State;

constexpr uint8_t Raw(State s) { return static_cast<uint8_t>(s); }

int64_t SaturatingAdd(int64_t a, int64_t b) {
  if (b > 0 && a > std::numeric_limits<int64_t>::max() - b) {
    return std::numeric_limits<int64_t>::max();
  }
  return a + b;
}

}  // namespace

absl::string_view StateName(CircuitBreaker::State state) {
  switch (state) {
    case State::kClosed:
      return "closed";
    case State::kOpen:
      return "open";
    case State::kHalfOpen:
      return "half_open";
  }
  return "unknown";
}

absl::Status CircuitBreaker::Options::Validate() const {
  std::vector<std::string> problems;
  if (failure_threshold <= 0) {
    problems.push_back("failure_threshold must be positive");
  }
  if (recovery_timeout_ns < 0) {
    problems.push_back("recovery_timeout_ns must not be negative");
  }
  if (half_open_max_calls <= 0) {
    problems.push_back("half_open_max_calls must be positive");
  }
  if (success_threshold <= 0) {
    problems.push_back("success_threshold must be positive");
  }
  if (window_size < 0) {
    problems.push_back("window_size must not be negative");
  }
  if (window_size > 0) {
    if (minimum_calls < 1 || minimum_calls > window_size) {
      problems.push_back("minimum_calls must be between 1 and window_size");
    }
    if (!(failure_rate_threshold > 0.0 && failure_rate_threshold <= 1.0)) {
      problems.push_back(
          "failure_rate_threshold must be greater than 0.0 and at most 1.0");
    }
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));
}

CircuitBreaker::CircuitBreaker(const Options& options)
    : CircuitBreaker(std::make_shared<const Options>(options)) {}

CircuitBreaker::CircuitBreaker(std::shared_ptr<const Options> options)
    : options_(std::move(options)),
      window_(options_->window_size > 0
                  ? std::make_unique<resilience_internal::OutcomeRing>(
                        static_cast<uint32_t>(options_->window_size))
                  : nullptr) {}

absl::StatusOr<std::unique_ptr<CircuitBreaker>> CircuitBreaker::Create(
    const Options& options) {
  absl::Status status = options.Validate();
  if (!status.ok()) return status;
  return std::make_unique<CircuitBreaker>(options);
}

CircuitBreaker::Admission CircuitBreaker::AcquireNotClosed(int64_t now_ns) {
  const uint8_t state = state_.load(std::memory_order_acquire);
  if (state == Raw(State::kOpen)) {
    // The acquire load above makes this the deadline of the open period we
    // saw (it is stored before the state).
    const int64_t until = open_until_ns_.load(std::memory_order_relaxed);
    if (now_ns < until) {
      rejections_.Add();
      return Admission{Decision::kRejected, until - now_ns, absl::nullopt};
    }
  }
  return AcquireSlow(now_ns);
}

CircuitBreaker::Admission CircuitBreaker::AcquireSlow(int64_t now_ns) {
  MutexLock lock(&mu_);
  Admission admission;
  switch (StateLocked()) {
    case State::kClosed:
      admission.decision = Decision::kAllowed;
      return admission;
    case State::kOpen: {
      const int64_t until = open_until_ns_.load(std::memory_order_relaxed);
      if (now_ns < until) {
        rejections_.Add();
        admission.retry_after_ns = until - now_ns;
        return admission;
      }
      admission.transition = TransitionLocked(State::kHalfOpen, now_ns);
      break;
    }
    case State::kHalfOpen:
      break;
  }
  if (probes_in_flight_ < options_->half_open_max_calls) {
    ++probes_in_flight_;
    admission.decision = Decision::kProbe;
  } else {
    rejections_.Add();
  }
  return admission;
}

CircuitBreaker::Permit CircuitBreaker::Acquire(int64_t now_ns) {
  Admission admission = TryAcquire(now_ns);
  CircuitBreaker* owner = admission.admitted() ? this : nullptr;
  return Permit(owner, std::move(admission));
}

absl::optional<CircuitBreaker::Transition> CircuitBreaker::OnSuccessSlow(
    int64_t now_ns, bool probe) {
  if (ABSL_PREDICT_FALSE(probe)) return OnProbeSuccess(now_ns);
  successes_.Add();
  // A success reported while open or half-open was admitted before the
  // breaker opened: counted above, nothing more.
  if (ABSL_PREDICT_TRUE(state_.load(std::memory_order_relaxed) ==
                        Raw(State::kClosed))) {
    if (consecutive_failures_.load(std::memory_order_relaxed) != 0) {
      consecutive_failures_.store(0, std::memory_order_relaxed);
    }
    if (window_ != nullptr) window_->RecordSuccess();
  }
  return absl::nullopt;
}

absl::optional<CircuitBreaker::Transition> CircuitBreaker::OnProbeSuccess(
    int64_t now_ns) {
  successes_.Add();
  MutexLock lock(&mu_);
  if (probes_in_flight_ > 0) --probes_in_flight_;
  if (StateLocked() != State::kHalfOpen) return absl::nullopt;
  if (++probe_successes_ >= options_->success_threshold) {
    return TransitionLocked(State::kClosed, now_ns);
  }
  return absl::nullopt;
}

absl::optional<CircuitBreaker::Transition> CircuitBreaker::OnFailure(
    int64_t now_ns, bool probe) {
  MutexLock lock(&mu_);
  ++failures_;
  if (probe) {
    if (probes_in_flight_ > 0) --probes_in_flight_;
    if (StateLocked() == State::kHalfOpen) {
      return TransitionLocked(State::kOpen, now_ns);
    }
    return absl::nullopt;  // another probe already decided
  }
  // Admitted before the breaker opened: counted, but the recovery timer and
  // the half-open probes are left alone.
  if (StateLocked() != State::kClosed) return absl::nullopt;

  const int64_t consecutive =
      consecutive_failures_.fetch_add(1, std::memory_order_relaxed) + 1;
  bool trip = consecutive >= options_->failure_threshold;
  if (window_ != nullptr) {
    window_->RecordFailure();
    const uint32_t calls = window_->Calls();
    // Failures can exceed calls for a moment when a stale writer races with
    // Clear(); clamp so the rate stays within [0, 1].
    const uint32_t failures = std::min(window_->Failures(), calls);
    if (calls >= static_cast<uint32_t>(options_->minimum_calls) &&
        static_cast<double>(failures) / calls >=
            options_->failure_rate_threshold) {
      trip = true;
    }
  }
  if (trip) return TransitionLocked(State::kOpen, now_ns);
  return absl::nullopt;
}

void CircuitBreaker::OnIgnored(bool probe) {
  if (!probe) return;
  MutexLock lock(&mu_);
  if (probes_in_flight_ > 0) --probes_in_flight_;
}

absl::optional<CircuitBreaker::Transition> CircuitBreaker::Reset(
    int64_t now_ns) {
  MutexLock lock(&mu_);
  absl::optional<Transition> transition;
  if (StateLocked() != State::kClosed) {
    transition = TransitionLocked(State::kClosed, now_ns);
  } else {
    consecutive_failures_.store(0, std::memory_order_relaxed);
    if (window_ != nullptr) window_->Clear();
    probe_successes_ = 0;
  }
  successes_.Reset();
  rejections_.Reset();
  failures_ = 0;
  open_count_ = 0;
  return transition;
}

CircuitBreaker::Transition CircuitBreaker::TransitionLocked(State to,
                                                            int64_t now_ns) {
  const State from = StateLocked();
  probe_successes_ = 0;
  switch (to) {
    case State::kOpen:
      // Stored before the state, so a TryAcquire that sees kOpen (acquire)
      // sees this deadline.
      open_until_ns_.store(SaturatingAdd(now_ns, options_->recovery_timeout_ns),
                           std::memory_order_relaxed);
      ++open_count_;
      break;
    case State::kClosed:
      consecutive_failures_.store(0, std::memory_order_relaxed);
      if (window_ != nullptr) window_->Clear();
      break;
    case State::kHalfOpen:
      break;
  }
  state_.store(Raw(to), std::memory_order_release);
  ++transition_seq_;
  last_transition_ns_ = now_ns;
  return Transition{from, to, now_ns, transition_seq_};
}

CircuitBreaker::Snapshot CircuitBreaker::GetSnapshot() const {
  MutexLock lock(&mu_);
  Snapshot s;
  s.state = StateLocked();
  s.consecutive_failures =
      consecutive_failures_.load(std::memory_order_relaxed);
  s.failure_count = failures_;
  s.success_count = successes_.Value();
  s.rejected_count = rejections_.Value();
  s.open_count = open_count_;
  s.last_transition_ns = last_transition_ns_;
  s.transition_seq = transition_seq_;
  s.probes_in_flight = probes_in_flight_;
  s.open_until_ns = open_until_ns_.load(std::memory_order_relaxed);
  s.window_calls = window_ != nullptr ? window_->Calls() : 0;
  s.window_failures =
      window_ != nullptr ? std::min(window_->Failures(), s.window_calls) : 0;
  return s;
}

// --- Permit -----------------------------------------------------------------

CircuitBreaker::Permit::Permit(Permit&& other) noexcept
    : breaker_(std::exchange(other.breaker_, nullptr)),
      admission_(std::move(other.admission_)) {}

CircuitBreaker::Permit& CircuitBreaker::Permit::operator=(
    Permit&& other) noexcept {
  if (this != &other) {
    Ignore();
    breaker_ = std::exchange(other.breaker_, nullptr);
    admission_ = std::move(other.admission_);
  }
  return *this;
}

CircuitBreaker::Permit::~Permit() { Ignore(); }

absl::optional<CircuitBreaker::Transition> CircuitBreaker::Permit::Succeed(
    int64_t now_ns) {
  if (breaker_ == nullptr) return absl::nullopt;
  return std::exchange(breaker_, nullptr)->OnSuccess(now_ns, probe());
}

absl::optional<CircuitBreaker::Transition> CircuitBreaker::Permit::Fail(
    int64_t now_ns) {
  if (breaker_ == nullptr) return absl::nullopt;
  return std::exchange(breaker_, nullptr)->OnFailure(now_ns, probe());
}

void CircuitBreaker::Permit::Ignore() {
  if (breaker_ == nullptr) return;
  std::exchange(breaker_, nullptr)->OnIgnored(probe());
}

// --- BreakerRegistry --------------------------------------------------------

namespace {
bool SameOptions(const CircuitBreaker::Options& a,
                 const CircuitBreaker::Options& b) {
  return a.failure_threshold == b.failure_threshold &&
         a.recovery_timeout_ns == b.recovery_timeout_ns &&
         a.half_open_max_calls == b.half_open_max_calls &&
         a.success_threshold == b.success_threshold &&
         a.window_size == b.window_size && a.minimum_calls == b.minimum_calls &&
         a.failure_rate_threshold == b.failure_rate_threshold;
}
}  // namespace

absl::StatusOr<CircuitBreaker*> BreakerRegistry::GetOrCreate(
    absl::string_view name, const CircuitBreaker::Options& options) {
  {
    MutexLock lock(&mu_);
    auto it = breakers_.find(name);
    if (it != breakers_.end()) return it->second.get();
  }
  const absl::Status status = options.Validate();
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("circuit breaker '", name, "': ", status.message()));
  }
  MutexLock lock(&mu_);
  auto inserted = breakers_.try_emplace(std::string(name));
  if (inserted.second) {
    if (options_ == nullptr || !SameOptions(*options_, options))
      options_ = std::make_shared<const CircuitBreaker::Options>(options);
    inserted.first->second = std::make_unique<CircuitBreaker>(options_);
  }
  return inserted.first->second.get();
}

CircuitBreaker* BreakerRegistry::Find(absl::string_view name) const {
  MutexLock lock(&mu_);
  auto it = breakers_.find(name);
  return it == breakers_.end() ? nullptr : it->second.get();
}

void BreakerRegistry::ForEach(
    absl::FunctionRef<void(absl::string_view, CircuitBreaker&)> fn) const {
  // Entries are never removed and node_hash_map keys never move, so the views
  // and pointers stay valid after the lock is released.
  std::vector<std::pair<absl::string_view, CircuitBreaker*>> entries;
  {
    MutexLock lock(&mu_);
    entries.reserve(breakers_.size());
    for (const auto& entry : breakers_) {
      entries.emplace_back(entry.first, entry.second.get());
    }
  }
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& entry : entries) fn(entry.first, *entry.second);
}

std::vector<BreakerRegistry::NamedSnapshot> BreakerRegistry::SnapshotAll()
    const {
  std::vector<NamedSnapshot> out;
  ForEach([&out](absl::string_view name, CircuitBreaker& breaker) {
    out.push_back(NamedSnapshot{std::string(name), breaker.GetSnapshot()});
  });
  return out;
}

void BreakerRegistry::Reset(int64_t now_ns) {
  ForEach([now_ns](absl::string_view, CircuitBreaker& breaker) {
    breaker.Reset(now_ns);
  });
}

size_t BreakerRegistry::size() const {
  MutexLock lock(&mu_);
  return breakers_.size();
}

}  // namespace caudal
