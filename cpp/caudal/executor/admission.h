// Admission: the order in which an execution is let in (Executor::Admit,
// admission.cc), and the state a waiting admission resumes from.
//
// Thread-safety: an AdmitState is owned by the one caller admitting.
#ifndef CAUDAL_EXECUTOR_ADMISSION_H_
#define CAUDAL_EXECUTOR_ADMISSION_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/types/optional.h"
#include "caudal/concurrency/key_limiter.h"
#include "caudal/executor/execution_record.h"
#include "caudal/executor/step_spec.h"
#include "caudal/hash/key128.h"

namespace caudal {

// ---- Admission ----
// The order in which an execution is let in, decided by Executor::Admit:
//   1. the result cache: a hit ends the execution before it starts;
//   2. single flight: among concurrent misses of one key, one leads and the
//      others follow (they are handed the leader's result);
//   3. the shared cache tier, when one is configured (SetSharedTier): the
//      caller asks it between two calls; a hit ends the admission
//      (Withdraw), a miss resumes it;
//   4. the step key's concurrency permit (or a dormant key's bypass);
//   5. a global slot (max_concurrent_executions);
//   6. the circuit breaker, as the record begins: the first attempt, or a
//      refusal, which the step's fallback takes when it has one.
// Key before slot: callers queued behind a saturated backend hold no global
// slot. A stage that must wait returns; the caller keeps the AdmitState and
// resumes with it (Admit again) when its waiter is woken, or gives it up
// (Withdraw).
struct AdmitState {
  enum class Stage : uint8_t {
    kCache,       // not admitted yet (the first call)
    kSharedTier,  // the shared tier is being asked (kAskSharedTier)
    kKeyPermit,   // queued for `waited`'s permit (kWaitForPermit)
    kSlot,        // queued for a global slot (kWaitForPermit)
    kDone,        // handed to a record, or withdrawn
  };
  Stage stage = Stage::kCache;
  std::shared_ptr<StepEntry> step;
  bool keyed = false;  // goes through the result cache under `key`
  Key128 key{};
  bool flight = false;  // leads the single flight for `key`
  // Limiters live as long as their executor (LimiterRegistry).
  KeyLimiter* waited = nullptr;    // kKeyPermit: the limiter queued for
  KeyLimiter* held = nullptr;      // its permit is held
  KeyLimiter* bypassed = nullptr;  // a dormant key admitted without a permit
  bool have_slot = false;          // a global slot is held
};

enum class AdmitVerdict : uint8_t {
  kHit,            // handover `hit` is the cached output: the execution is over
  kFollow,         // queued behind the key's flight leader (the new waiter)
  kAskSharedTier,  // ask the shared tier for state.key; then Admit/Withdraw
  kWaitForPermit,  // queued for a permit (the new waiter); then Admit again
  kStarted,        // `record` began: its first attempt runs
  kRefused,        // `record` began, refused by the open breaker (attempt 0)
  kFallback,       // refused, and the step has a fallback: run it;
                   // handover `wake`
  kFull,           // no record (HandleTable::kMaxSlots in flight); handover
                   // `wake` and `followers` (who run themselves)
};

// The verdict; trivially copyable (the hot path returns it in registers).
struct Admitted {
  AdmitVerdict verdict;
  ExecutionRecord* record = nullptr;
};

// What an admission hands back besides the verdict, made only when there is
// something (a cache lookup, a fallback, a full table): the plain path
// constructs none.
struct AdmitHandover {
  CachedValue hit;                // kHit: the cached output
  ReleasedPermits wake;           // kFallback, kFull: permits given back
  std::vector<Waiter> followers;  // kFull: the flight's followers
  // Values the cache dropped (expired) during the lookup, to be destroyed by
  // the caller outside the core's locks.
  std::vector<CachedValue> dropped;
};

// What an admission given up gives back.
struct Withdrawn {
  ReleasedPermits permits;
  std::vector<Waiter> followers;  // of the flight it led
};

}  // namespace caudal

#endif  // CAUDAL_EXECUTOR_ADMISSION_H_
