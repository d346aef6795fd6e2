// KeyLimiter: the executor's concurrency limit for one key (a backend, by
// default a step's name), fixed or adaptive, and LimiterRegistry, the
// executor's table of them.
//
// A KeyLimiter is a FIFO ConcurrencyGate plus, in adaptive mode, a
// BaselineGradientLimit fed one sample per attempt (its rtt, the in-flight
// count when its permit was granted, and whether it failed from overload).
// Limit changes are recorded in a bounded history (for plots and stats) and
// reported to an observer (the executor publishes them as events).
//
//   if (lim.TryAcquire() || lim.AcquireOrEnqueue(w)) run();  else await w;
//   ... woken = lim.Sample(start, rtt, inflight, drop, now);  // wake them
//   if (auto next = lim.Release()) wake(*next);
//
// Memory: about 450 bytes per key until its limit first moves. In adaptive
// mode the algorithm's state (800 bytes) is made by the first sample that can
// move the limit (a slow or dropped one; fast ones never reach it), and the
// change history by the first change.
//
// Thread-safety: all methods from any thread. The observer is called with no
// lock held, on the thread whose sample changed the limit.
// Cost: acquire and release are the gate's lock-free fast path. A sample
// that cannot matter (fast and successful, or a fixed limit) returns before
// taking the lock; others take it for a few additions (a window closing
// costs a few more floating-point operations).
//
// Dormancy (adaptive mode only). A key whose attempts all finish fast
// (under the algorithm's min_rtt_threshold_ns, 100 us by default, which the
// algorithm ignores anyway) at low concurrency has no backend to protect,
// yet its permit costs two locked instructions per execution, several
// percent of a trivial step. After kDormantAfter such samples in a row the
// key goes dormant: TryBypass() admits executions without a permit,
// counting them with plain (unlocked) loads and stores. One execution in
// kProbeEvery still takes the permit and samples. The key wakes (permits
// again) on a slow or dropped sample, when the loose in-flight count
// reaches kWakeInFlight (or the limit, if lower), or on a config change.
// The loose count may lose updates when several threads run one dormant
// key at once; it only decides when to wake, and errs either way briefly.
#ifndef CAUDAL_CONCURRENCY_KEY_LIMITER_H_
#define CAUDAL_CONCURRENCY_KEY_LIMITER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "caudal/base/mutex.h"
#include "caudal/concurrency/concurrency_gate.h"
#include "caudal/concurrency/limit_algorithms.h"

namespace caudal {

// An opaque waiter owned by the caller (the bindings: an asyncio future).
using LimiterWaiter = std::shared_ptr<void>;

struct LimitChange {
  std::string key;
  int64_t at_ns = 0;
  int from = 0;
  int to = 0;
  int in_flight = 0;  // when the limit changed
  int waiting = 0;
};

class KeyLimiter {
 public:
  enum class Mode : uint8_t { kFixed, kAdaptive, kUnlimited };

  struct Snapshot {
    std::string key;
    Mode mode = Mode::kUnlimited;
    int limit = 0;
    int in_flight = 0;
    int waiting = 0;
    GateCounters counters;
    int64_t changes = 0;
    // Adaptive mode only.
    double estimated_limit = 0;
    double baseline_rtt_ns = 0;
    double last_window_rtt_ns = 0;
    int64_t windows = 0;
    int64_t samples = 0;
    int64_t drops = 0;
    bool slow_start = false;
    bool dormant = false;
  };

  static constexpr int kUnlimited = 1 << 30;
  static constexpr size_t kHistory = 512;

  using Observer = std::function<void(const LimitChange&)>;
  // Shared by the limiters of a registry (a limiter per step name: these
  // would be 120 bytes each).
  using SharedOptions = std::shared_ptr<const BaselineGradientLimit::Options>;
  using SharedObserver = std::shared_ptr<const Observer>;

  // `adaptive` is used in Mode::kAdaptive (it must be valid); `fixed_limit`
  // in Mode::kFixed.
  KeyLimiter(std::string key, Mode mode, int fixed_limit,
             const BaselineGradientLimit::Options& adaptive,
             Observer observer = nullptr);
  // The same with options and observer shared (non-null options).
  KeyLimiter(std::string key, Mode mode, int fixed_limit,
             SharedOptions adaptive, SharedObserver observer);
  KeyLimiter(const KeyLimiter&) = delete;
  KeyLimiter& operator=(const KeyLimiter&) = delete;

  const std::string& key() const { return key_; }
  Mode mode() const { return mode_.load(std::memory_order_acquire); }

  static constexpr int kDormantAfter = 64;
  static constexpr uint32_t kProbeEvery = 64;
  static constexpr int kWakeInFlight = 16;
  static constexpr int kDormantMaxInFlight = 4;  // at admission, to count

  // Dormant keys: true = admitted without a permit; end with EndBypass().
  bool TryBypass() {
    if (!dormant_.load(std::memory_order_relaxed)) return false;
    const uint32_t p = probe_.load(std::memory_order_relaxed);
    probe_.store(p + 1, std::memory_order_relaxed);
    if (p % kProbeEvery == 0) return false;  // this one takes the permit
    const int n = loose_in_flight_.load(std::memory_order_relaxed);
    if (n >= wake_in_flight_.load(std::memory_order_relaxed)) {
      Wake();
      return false;
    }
    loose_in_flight_.store(n + 1, std::memory_order_relaxed);
    return true;
  }
  void EndBypass() {
    const int n = loose_in_flight_.load(std::memory_order_relaxed);
    loose_in_flight_.store(n > 0 ? n - 1 : 0, std::memory_order_relaxed);
  }
  // Permits again (an overload signal from a bypassed execution, ...).
  void Wake() {
    fast_streak_.store(0, std::memory_order_relaxed);
    if (dormant_.load(std::memory_order_relaxed))
      dormant_.store(false, std::memory_order_relaxed);
  }
  bool dormant() const { return dormant_.load(std::memory_order_relaxed); }

  bool TryAcquire() { return gate_.TryAcquire(); }
  bool AcquireOrEnqueue(LimiterWaiter w) {
    return gate_.AcquireOrEnqueue(std::move(w));
  }
  std::optional<LimiterWaiter> Release() { return gate_.Release(); }
  bool Cancel(const LimiterWaiter& w) { return gate_.Cancel(w); }

  // One finished attempt. Returns the waiters handed permits by a limit the
  // sample raised, for the caller to wake.
  std::vector<LimiterWaiter> Sample(int64_t start_ns, int64_t rtt_ns,
                                    int inflight, bool drop, int64_t now_ns);

  // Changes mode and settings (a config change). Adaptive state restarts
  // only if the adaptive options or the mode changed. Returns waiters
  // handed permits by a raised limit.
  std::vector<LimiterWaiter> Configure(
      Mode mode, int fixed_limit,
      const BaselineGradientLimit::Options& adaptive, int64_t now_ns);

  static bool SameOptions(const BaselineGradientLimit::Options& a,
                          const BaselineGradientLimit::Options& b);

  int limit() const { return gate_.limit(); }
  int in_flight() const { return gate_.in_flight(); }
  int waiting() const { return gate_.waiting(); }
  Snapshot snapshot() const;
  std::vector<LimitChange> history() const;

 private:
  // Applies a new limit under mu_; fills `change` when it moved.
  std::vector<LimiterWaiter> SetLimitLocked(int next, int64_t now_ns,
                                            std::optional<LimitChange>* change)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string key_;
  const SharedObserver observer_;  // null: none
  std::atomic<Mode> mode_;
  ConcurrencyGate<LimiterWaiter> gate_;
  mutable Mutex mu_;
  int fixed_limit_ ABSL_GUARDED_BY(mu_);
  SharedOptions options_ ABSL_GUARDED_BY(mu_);  // never null
  // Adaptive mode: null until a sample can move the limit (a fresh one's
  // state: see AlgorithmLocked).
  std::unique_ptr<BaselineGradientLimit> algorithm_ ABSL_GUARDED_BY(mu_);
  const BaselineGradientLimit& AlgorithmLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Cheap pre-check outside the lock: fast successful samples are ignored.
  std::atomic<int64_t> min_rtt_threshold_ns_;
  // Dormancy (see the file comment): plain loads and stores only.
  void NoteFast(int inflight);
  std::atomic<bool> dormant_{false};
  std::atomic<int> fast_streak_{0};
  std::atomic<uint32_t> probe_{0};
  std::atomic<int> loose_in_flight_{0};
  std::atomic<int> wake_in_flight_{kWakeInFlight};
  int64_t samples_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t drops_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t changes_ ABSL_GUARDED_BY(mu_) = 0;
  // Null until the first change.
  std::unique_ptr<std::deque<LimitChange>> history_ ABSL_GUARDED_BY(mu_);
};

// The executor's limiters by key. Limiters live as long as the registry
// (records and step entries keep raw pointers to them).
class LimiterRegistry {
 public:
  explicit LimiterRegistry(KeyLimiter::Observer observer = nullptr)
      : observer_(observer ? std::make_shared<const KeyLimiter::Observer>(
                                 std::move(observer))
                           : nullptr) {}

  // The key's limiter, created in `mode` if new; an existing one is
  // returned as it is (change it with KeyLimiter::Configure).
  KeyLimiter* GetOrCreate(const std::string& key, KeyLimiter::Mode mode,
                          int fixed_limit,
                          const BaselineGradientLimit::Options& adaptive);
  std::vector<KeyLimiter*> All() const;
  KeyLimiter* Find(const std::string& key) const;

 private:
  const KeyLimiter::SharedObserver observer_;
  mutable Mutex mu_;
  // Keys view their limiter's key.
  absl::flat_hash_map<absl::string_view, std::unique_ptr<KeyLimiter>> limiters_
      ABSL_GUARDED_BY(mu_);
  // The options the last limiter was made with, shared by the next ones.
  KeyLimiter::SharedOptions options_ ABSL_GUARDED_BY(mu_);
};

const char* LimiterModeName(KeyLimiter::Mode mode);

}  // namespace caudal

#endif  // CAUDAL_CONCURRENCY_KEY_LIMITER_H_
