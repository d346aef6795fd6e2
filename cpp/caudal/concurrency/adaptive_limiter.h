// AdaptiveLimiter: a ConcurrencyGate whose limit is driven by a
// LimitAlgorithm, handing out move-only Permits.
//
//   if (auto permit = limiter.TryAcquire(now)) { ...run...;
//                                                permit->OnSuccess(now2); }
//   else if (auto permit = limiter.AcquireOrEnqueue(w, now)) { ... }
//   else { await w; Permit p = limiter.AdoptHandoff(now); ... }
//
// Each Permit gets one verdict: OnSuccess (the request completed; its rtt is
// a sample), OnDropped (it failed from overload -- timeout, rejection -- and
// the sample says so) or Ignore (cancelled, or failed for reasons that say
// nothing about load). A Permit destroyed without a verdict is ignored,
// never counted as a success (concurrency-limits' Listener contract). Every
// verdict gives the slot back; the limiter wakes, through the Waker, each
// waiter that was handed a permit -- by the release, or by a limit the
// sample raised.
//
// Thread-safety: all methods from any thread; a Permit is used by one thread
// at a time. The Waker is invoked with no lock held, on the thread that gave
// the verdict (or called Cancel/SetLimit), so it may call back into the
// limiter.
// Cost: acquiring is the gate's fast path (one CAS); a verdict adds one
// algorithm sample under a mutex (a few ns with WindowedLimit in front) and
// the gate's release.
#ifndef CAUDAL_CONCURRENCY_ADAPTIVE_LIMITER_H_
#define CAUDAL_CONCURRENCY_ADAPTIVE_LIMITER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "caudal/base/mutex.h"
#include "caudal/concurrency/concurrency_gate.h"
#include "caudal/concurrency/limit_algorithms.h"

namespace caudal {

template <typename W>
class AdaptiveLimiter {
 public:
  // Called for each waiter that now holds a permit.
  using Waker = std::function<void(W waiter)>;

  class Permit {
   public:
    Permit(Permit&& other) noexcept { *this = std::move(other); }
    Permit& operator=(Permit&& other) noexcept {
      if (this != &other) {
        if (owner_ != nullptr) Ignore();
        owner_ = std::exchange(other.owner_, nullptr);
        start_ns_ = other.start_ns_;
        inflight_ = other.inflight_;
      }
      return *this;
    }
    Permit(const Permit&) = delete;
    Permit& operator=(const Permit&) = delete;
    ~Permit() {
      if (owner_ != nullptr) Ignore();
    }

    // Verdicts; each releases the permit. Calling one on a permit that has
    // had its verdict (or was moved from) does nothing.
    void OnSuccess(int64_t now_ns) { Finish(now_ns, /*drop=*/false); }
    void OnDropped(int64_t now_ns) { Finish(now_ns, /*drop=*/true); }
    void Ignore() {
      if (AdaptiveLimiter* owner = std::exchange(owner_, nullptr)) {
        owner->ReleaseAndWake();
      }
    }

    bool valid() const { return owner_ != nullptr; }
    int64_t start_ns() const { return start_ns_; }
    int inflight() const { return inflight_; }  // in flight when acquired

   private:
    friend class AdaptiveLimiter;
    Permit(AdaptiveLimiter* owner, int64_t start_ns, int inflight)
        : owner_(owner), start_ns_(start_ns), inflight_(inflight) {}
    void Finish(int64_t now_ns, bool drop) {
      if (AdaptiveLimiter* owner = std::exchange(owner_, nullptr)) {
        owner->Sample(start_ns_, now_ns - start_ns_, inflight_, drop);
        owner->ReleaseAndWake();
      }
    }

    AdaptiveLimiter* owner_ = nullptr;
    int64_t start_ns_ = 0;
    int inflight_ = 0;
  };

  AdaptiveLimiter(std::unique_ptr<LimitAlgorithm> algorithm, Waker wake)
      : algorithm_(std::move(algorithm)),
        wake_(std::move(wake)),
        gate_(algorithm_->limit()) {}

  AdaptiveLimiter(const AdaptiveLimiter&) = delete;
  AdaptiveLimiter& operator=(const AdaptiveLimiter&) = delete;

  // Fast path: a permit if one is free and nobody waits.
  std::optional<Permit> TryAcquire(int64_t now_ns) {
    if (!gate_.TryAcquire()) return std::nullopt;
    return Permit(this, now_ns, gate_.in_flight());
  }

  // Slow path: a permit, or nullopt after queueing `waiter` (FIFO). The
  // waiter is later passed to the Waker, and then calls AdoptHandoff.
  std::optional<Permit> AcquireOrEnqueue(W waiter, int64_t now_ns) {
    if (!gate_.AcquireOrEnqueue(std::move(waiter))) return std::nullopt;
    return Permit(this, now_ns, gate_.in_flight());
  }

  // The Permit for a permit handed to a woken waiter.
  Permit AdoptHandoff(int64_t now_ns) {
    return Permit(this, now_ns, gate_.in_flight());
  }

  // A waiter gives up. True: it left the queue. False: it was handed a
  // permit meanwhile; the caller adopts it (AdoptHandoff) and Ignores it.
  bool Cancel(const W& waiter) { return gate_.Cancel(waiter); }

  int limit() const { return gate_.limit(); }
  int in_flight() const { return gate_.in_flight(); }
  int waiting() const { return gate_.waiting(); }
  GateCounters counters() const { return gate_.counters(); }

 private:
  void Sample(int64_t start_ns, int64_t rtt_ns, int inflight, bool drop) {
    std::vector<W> woken;
    {
      MutexLock lock(&mu_);
      const int next = algorithm_->OnSample(start_ns, rtt_ns, inflight, drop);
      // Under mu_, so limit changes reach the gate in sample order.
      if (next != gate_.limit()) woken = gate_.SetLimit(next);
    }
    for (W& w : woken) wake_(std::move(w));
  }

  void ReleaseAndWake() {
    if (std::optional<W> next = gate_.Release()) wake_(std::move(*next));
  }

  absl::Mutex mu_;
  const std::unique_ptr<LimitAlgorithm> algorithm_ ABSL_PT_GUARDED_BY(mu_);
  const Waker wake_;
  ConcurrencyGate<W> gate_;
};

}  // namespace caudal

#endif  // CAUDAL_CONCURRENCY_ADAPTIVE_LIMITER_H_
