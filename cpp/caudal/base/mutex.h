// caudal::Mutex, caudal::MutexLock, caudal::Wait: absl::Mutex made visible to
// ThreadSanitizer.
//
// Why: Debian's prebuilt Abseil (libabsl20220623) is not compiled with
// -fsanitize=thread, so TSan cannot see absl::Mutex lock and unlock (they
// happen in uninstrumented code) and reports every access under the mutex as
// a race. MutexLock and Wait add the happens-before edges by hand
// (__tsan_release before unlocking, __tsan_acquire after locking). Outside
// TSan builds they compile to plain absl::MutexLock / CondVar::Wait; with an
// instrumented Abseil the extra edges are redundant, never wrong.
//
// Every lock in the core goes through MutexLock (never absl::MutexLock).
// Thread-safety: as absl::Mutex. Cost outside TSan builds: none.
#ifndef CAUDAL_BASE_MUTEX_H_
#define CAUDAL_BASE_MUTEX_H_

#include "absl/base/config.h"
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#ifdef ABSL_HAVE_THREAD_SANITIZER
#include <sanitizer/tsan_interface.h>
#endif

namespace caudal {

using Mutex = absl::Mutex;
using CondVar = absl::CondVar;

namespace base_internal {
inline void TsanAcquire(Mutex* mu) {
#ifdef ABSL_HAVE_THREAD_SANITIZER
  __tsan_acquire(mu);
#else
  (void)mu;
#endif
}
inline void TsanRelease(Mutex* mu) {
#ifdef ABSL_HAVE_THREAD_SANITIZER
  __tsan_release(mu);
#else
  (void)mu;
#endif
}
}  // namespace base_internal

// Drop-in for absl::MutexLock.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
    base_internal::TsanAcquire(mu_);
  }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() {
    base_internal::TsanRelease(mu_);
    mu_->Unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// cv->Wait(mu), which unlocks and relocks mu inside.
inline void Wait(CondVar* cv, Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
  base_internal::TsanRelease(mu);
  cv->Wait(mu);
  base_internal::TsanAcquire(mu);
}

// cv->WaitWithTimeout(mu, timeout); true if it timed out.
inline bool WaitWithTimeout(CondVar* cv, Mutex* mu, absl::Duration timeout)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
  base_internal::TsanRelease(mu);
  const bool timed_out = cv->WaitWithTimeout(mu, timeout);
  base_internal::TsanAcquire(mu);
  return timed_out;
}

}  // namespace caudal

#endif  // CAUDAL_BASE_MUTEX_H_
