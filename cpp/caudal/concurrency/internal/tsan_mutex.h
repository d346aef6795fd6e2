// absl::Mutex made visible to ThreadSanitizer. Internal to concurrency/.
//
// Why: Debian's prebuilt Abseil (libabsl20220623) is not compiled with
// -fsanitize=thread, so TSan cannot see absl::Mutex lock and unlock (they
// happen in uninstrumented code) and reports every access under the mutex
// as a race. This scoped lock and CondVar wait add the happens-before edges
// by hand (__tsan_release before unlocking, __tsan_acquire after locking).
// In builds without TSan they compile to plain absl::MutexLock / Wait. With
// an instrumented Abseil the extra edges are redundant, never wrong.
//
// Thread-safety: as absl::Mutex. Cost outside TSan builds: none.
#ifndef CAUDAL_CONCURRENCY_INTERNAL_TSAN_MUTEX_H_
#define CAUDAL_CONCURRENCY_INTERNAL_TSAN_MUTEX_H_

#include "absl/base/config.h"
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

#ifdef ABSL_HAVE_THREAD_SANITIZER
#include <sanitizer/tsan_interface.h>
#endif

namespace caudal {
namespace concurrency_internal {

inline void TsanAcquire(absl::Mutex* mu) {
#ifdef ABSL_HAVE_THREAD_SANITIZER
  __tsan_acquire(mu);
#else
  (void)mu;
#endif
}

inline void TsanRelease(absl::Mutex* mu) {
#ifdef ABSL_HAVE_THREAD_SANITIZER
  __tsan_release(mu);
#else
  (void)mu;
#endif
}

// Drop-in for absl::MutexLock.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(absl::Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu)
      : mu_(mu) {
    mu_->Lock();
    TsanAcquire(mu_);
  }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() {
    TsanRelease(mu_);
    mu_->Unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  absl::Mutex* const mu_;
};

// cv->Wait(mu), which unlocks and relocks mu inside.
inline void Wait(absl::CondVar* cv, absl::Mutex* mu)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
  TsanRelease(mu);
  cv->Wait(mu);
  TsanAcquire(mu);
}

}  // namespace concurrency_internal
}  // namespace caudal

#endif  // CAUDAL_CONCURRENCY_INTERNAL_TSAN_MUTEX_H_
