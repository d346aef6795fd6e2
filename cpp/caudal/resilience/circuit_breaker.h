// CircuitBreaker: stops calling a step that keeps failing, and lets a few
// probe calls through after a while to find out whether it recovered.
// BreakerRegistry: the named breakers of an executor (one per step).
//
// States. kClosed: every call is admitted; the breaker opens after
// `failure_threshold` consecutive failures or, when the sliding window is
// configured, when at least `minimum_calls` of the last `window_size` calls
// are in the window and their failure rate is >= `failure_rate_threshold`
// (resilience4j's count-based window). kOpen: every call is rejected with the
// time left until `recovery_timeout_ns` has passed. kHalfOpen: entered lazily
// by the first TryAcquire after that time (there are no timers); at most
// `half_open_max_calls` probe calls are out at once, the rest are rejected;
// `success_threshold` probe successes close the breaker (counters and window
// reset), any probe failure opens it again with a new recovery timer.
//
// Protocol. The caller asks TryAcquire(now) before each attempt and, when
// admitted, reports exactly one verdict: OnSuccess, OnFailure, or OnIgnored
// (cancelled, or an excluded exception: gives a probe slot back and counts as
// neither success nor failure), passing `probe = admission.probe()`. Permit
// wraps this protocol in a move-only object whose destructor reports
// OnIgnored when no verdict was given.
//
// Late verdicts. A verdict only moves the state machine in the phase its call
// was admitted for: non-probe verdicts act only while closed, probe verdicts
// only while half-open. A non-probe failure arriving while open or half-open
// (admitted before the breaker opened) is counted in failure_count and does
// nothing else: it does not restart the recovery timer nor reopen a half-open
// breaker. A non-probe success arriving while half-open does not count as a
// probe success. A probe verdict arriving after the breaker left half-open
// (another probe already closed or reopened it) returns its slot and is
// counted, nothing more. Probe slots are held until their verdict arrives,
// even across state changes, so probes out at once never exceed
// half_open_max_calls. Limits: the verdict API carries no admission epoch,
// so a non-probe verdict admitted in an earlier closed period that arrives
// after the breaker closed again counts toward the new period (resilience4j
// and pybreaker behave the same), and with half_open_max_calls > 1 a probe
// from an earlier half-open period still out when the next one starts
// counts toward that one.
//
// Transitions. Each transition happens inside exactly one call, and that
// call returns it (Admission::transition for open -> half-open, the return
// value of OnSuccess / OnFailure / Reset otherwise), so the executor can
// publish "breaker X went closed -> open" without polling. Transitions carry
// a sequence number (1, 2, 3, ... per breaker, never reset) that Snapshot
// also reports, so an observer can tell it missed one.
//
// Thread-safety: all methods may be called concurrently. Memory ordering: a
// TryAcquire that sees kOpen also sees the recovery deadline of that open
// period (release/acquire on the state).
//
// Cost. Closed state, no failures: TryAcquire is one acquire load;
// OnSuccess bumps a striped (per-thread cache line) counter, reads two
// atomics, and writes the consecutive-failure counter only when it is
// non-zero. Rejection while open is lock free too. The mutex is taken for
// failures, half-open bookkeeping and transitions only. With the sliding
// window, OnSuccess also takes a slot in a lock-free bit ring: one fetch_add
// on a head shared by all threads. Measured (RelWithDebInfo, 2-vCPU AMD
// EPYC VM; DISABLED_HotPathTiming in tests_cpp/resilience/
// circuit_breaker_test.cc), ns per TryAcquire + OnSuccess pair:
//   consecutive rule only   ~2.8 (1 thread)   ~3 (2 threads, one breaker)
//   with sliding window     ~4.5 (1 thread)  ~30 (2 threads, one breaker)
//   open, rejection         ~2.9 per TryAcquire
// An absl::Mutex-guarded window ring measured ~22 ns on one thread and 47-107
// ns with two, so the lock-free ring is kept.
#ifndef CAUDAL_RESILIENCE_CIRCUIT_BREAKER_H_
#define CAUDAL_RESILIENCE_CIRCUIT_BREAKER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/node_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "caudal/base/mutex.h"
#include "caudal/resilience/internal/outcome_ring.h"
#include "caudal/resilience/internal/striped_counter.h"

namespace caudal {

class CircuitBreaker {
 public:
  enum class State : uint8_t { kClosed = 0, kOpen = 1, kHalfOpen = 2 };

  struct Options {
    // Consecutive failures (in the closed state) that open the breaker; > 0.
    int failure_threshold = 10;
    // Time an open breaker waits before it admits a probe; >= 0.
    int64_t recovery_timeout_ns = 60'000'000'000;
    // Probe calls out at once while half-open; > 0.
    int half_open_max_calls = 1;
    // Probe successes that close a half-open breaker; > 0.
    int success_threshold = 1;
    // Sliding window (count based, the last `window_size` closed-state calls).
    // 0 disables it. When set: 1 <= minimum_calls <= window_size and
    // failure_rate_threshold in (0, 1].
    int window_size = 0;
    int minimum_calls = 1;
    double failure_rate_threshold = 0.5;

    // kInvalidArgument naming each bad field ("failure_threshold must be
    // positive"), joined by "; ".
    absl::Status Validate() const;
  };

  struct Transition {
    State from;
    State to;
    int64_t at_ns;
    uint64_t seq;  // 1 for the breaker's first transition, then 2, 3, ...
  };

  enum class Decision : uint8_t { kAllowed, kProbe, kRejected };

  struct Admission {
    Decision decision = Decision::kRejected;
    // kRejected only: time left until the breaker will admit a probe; 0 when
    // it is half-open and every probe slot is taken (the wait is then until
    // a probe reports).
    int64_t retry_after_ns = 0;
    // Set when this call moved the breaker from open to half-open.
    absl::optional<Transition> transition;

    bool admitted() const { return decision != Decision::kRejected; }
    bool probe() const { return decision == Decision::kProbe; }
  };

  struct Snapshot {
    State state;
    int64_t consecutive_failures;
    uint64_t failure_count;      // every failure verdict, late ones included
    uint64_t success_count;      // every success verdict, probes included
    uint64_t rejected_count;     // TryAcquire calls answered kRejected
    uint64_t open_count;         // times the breaker opened
    int64_t last_transition_ns;  // 0 before the first transition
    uint64_t transition_seq;     // seq of the last transition, 0 if none
    int probes_in_flight;
    int64_t open_until_ns;     // recovery deadline; meaningful when kOpen
    uint32_t window_calls;     // 0 without a window
    uint32_t window_failures;  // 0 without a window
  };

  class Permit;

  // `options` must be valid (Options::Validate); Create checks it.
  explicit CircuitBreaker(const Options& options);
  // The same with options shared by other breakers (a registry's: a breaker
  // per step name); `options` is non-null and valid.
  explicit CircuitBreaker(std::shared_ptr<const Options> options);
  static absl::StatusOr<std::unique_ptr<CircuitBreaker>> Create(
      const Options& options);

  CircuitBreaker(const CircuitBreaker&) = delete;
  CircuitBreaker& operator=(const CircuitBreaker&) = delete;

  // Asks to make one call at `now_ns`. The closed state, the common case, is
  // inline here: one acquire load.
  Admission TryAcquire(int64_t now_ns) {
    if (ABSL_PREDICT_TRUE(state_.load(std::memory_order_acquire) ==
                          static_cast<uint8_t>(State::kClosed))) {
      Admission admission;
      admission.decision = Decision::kAllowed;
      return admission;
    }
    return AcquireNotClosed(now_ns);
  }
  // TryAcquire wrapped in a move-only Permit (see below).
  Permit Acquire(int64_t now_ns);

  // Verdicts, one per admitted call; `probe` is Admission::probe(). Return
  // the transition this verdict caused, if any.
  // OnSuccess of a non-probe call while closed without a sliding window is
  // inline: the success count and, after failures, the consecutive-failure
  // reset.
  absl::optional<Transition> OnSuccess(int64_t now_ns, bool probe) {
    if (ABSL_PREDICT_TRUE(!probe && window_ == nullptr &&
                          state_.load(std::memory_order_relaxed) ==
                              static_cast<uint8_t>(State::kClosed))) {
      successes_.Add();
      if (consecutive_failures_.load(std::memory_order_relaxed) != 0)
        consecutive_failures_.store(0, std::memory_order_relaxed);
      return absl::nullopt;
    }
    return OnSuccessSlow(now_ns, probe);
  }
  absl::optional<Transition> OnFailure(int64_t now_ns, bool probe);
  void OnIgnored(bool probe);

  // Back to closed with every counter zeroed, except transition_seq (which
  // only grows) and the probe slots still out (their verdicts will return
  // them). Returns the transition when the breaker was not closed. Success
  // and rejection counts bumped concurrently with Reset may survive it.
  absl::optional<Transition> Reset(int64_t now_ns);

  Snapshot GetSnapshot() const;
  State state() const {
    return static_cast<State>(state_.load(std::memory_order_acquire));
  }
  const Options& options() const { return *options_; }

 private:
  Admission AcquireNotClosed(int64_t now_ns);
  Admission AcquireSlow(int64_t now_ns);
  absl::optional<Transition> OnSuccessSlow(int64_t now_ns, bool probe);
  absl::optional<Transition> OnProbeSuccess(int64_t now_ns);
  // Moves to `to`, records the transition and returns it.
  Transition TransitionLocked(State to, int64_t now_ns)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  State StateLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<State>(state_.load(std::memory_order_relaxed));
  }

  const std::shared_ptr<const Options> options_;  // never null

  // Read on every call. Written only under mu_, except that OnSuccess
  // zeroes consecutive_failures_ lock-free.
  std::atomic<uint8_t> state_{static_cast<uint8_t>(State::kClosed)};
  std::atomic<int64_t> consecutive_failures_{0};
  std::atomic<int64_t> open_until_ns_{0};
  const std::unique_ptr<resilience_internal::OutcomeRing> window_;

  resilience_internal::StripedCounter successes_;
  resilience_internal::StripedCounter rejections_;

  mutable Mutex mu_;
  uint64_t failures_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t open_count_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t transition_seq_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_transition_ns_ ABSL_GUARDED_BY(mu_) = 0;
  int probes_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int probe_successes_ ABSL_GUARDED_BY(mu_) = 0;
};

// A move-only admission: owns the verdict of one call. Destroying an admitted
// Permit without a verdict reports OnIgnored, never success or failure.
// Not thread-safe itself (one owner), the breaker it reports to is.
class CircuitBreaker::Permit {
 public:
  Permit() = default;
  Permit(Permit&& other) noexcept;
  Permit& operator=(Permit&& other) noexcept;
  ~Permit();

  const Admission& admission() const { return admission_; }
  bool admitted() const { return admission_.admitted(); }
  bool probe() const { return admission_.probe(); }
  // True while the permit holds an admitted call with no verdict yet.
  bool pending() const { return breaker_ != nullptr; }

  // Report the verdict; each does nothing on a permit that holds no call
  // (rejected, moved from, or already reported).
  absl::optional<Transition> Succeed(int64_t now_ns);
  absl::optional<Transition> Fail(int64_t now_ns);
  void Ignore();

 private:
  friend class CircuitBreaker;
  Permit(CircuitBreaker* breaker, Admission admission)
      : breaker_(breaker), admission_(admission) {}

  CircuitBreaker* breaker_ = nullptr;  // null once the verdict is reported
  Admission admission_;
};

// "closed", "open", "half_open".
absl::string_view StateName(CircuitBreaker::State state);

// Named breakers, created on first use and kept for the registry's lifetime:
// the pointers it hands out stay valid until the registry is destroyed, so a
// step may cache its breaker.
//
// Thread-safety: all methods may be called concurrently. Every call takes
// the registry mutex briefly (caudal::Mutex, exclusive), so a step that runs
// often should cache its pointer rather than look it up per execution.
class BreakerRegistry {
 public:
  struct NamedSnapshot {
    std::string name;
    CircuitBreaker::Snapshot snapshot;
  };

  BreakerRegistry() = default;
  BreakerRegistry(const BreakerRegistry&) = delete;
  BreakerRegistry& operator=(const BreakerRegistry&) = delete;

  // The breaker named `name`, created with `options` if it does not exist
  // yet. An existing breaker keeps the options it was created with.
  // kInvalidArgument when the breaker would be created with invalid options.
  absl::StatusOr<CircuitBreaker*> GetOrCreate(
      absl::string_view name, const CircuitBreaker::Options& options);
  // The breaker named `name`, or nullptr.
  CircuitBreaker* Find(absl::string_view name) const;

  // Calls `fn` for each breaker, in name order. The registry lock is not held
  // while `fn` runs, so `fn` may use the registry.
  void ForEach(
      absl::FunctionRef<void(absl::string_view name, CircuitBreaker& breaker)>
          fn) const;
  // Snapshots of every breaker, in name order.
  std::vector<NamedSnapshot> SnapshotAll() const;
  // Resets every breaker (CircuitBreaker::Reset); pointers stay valid.
  void Reset(int64_t now_ns);
  size_t size() const;

 private:
  mutable Mutex mu_;
  // node_hash_map: keys never move, so ForEach can hand out views of them.
  absl::node_hash_map<std::string, std::unique_ptr<CircuitBreaker>> breakers_
      ABSL_GUARDED_BY(mu_);
  // The options the last breaker was made with, shared by the next ones.
  std::shared_ptr<const CircuitBreaker::Options> options_ ABSL_GUARDED_BY(mu_);
};

}  // namespace caudal

#endif  // CAUDAL_RESILIENCE_CIRCUIT_BREAKER_H_
