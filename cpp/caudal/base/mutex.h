// caudal::Mutex / caudal::MutexLock: absl::Mutex, except in the TSan build.
//
// Debian's Abseil is a prebuilt library compiled without ThreadSanitizer, so
// TSan cannot see the happens-before edges absl::Mutex creates and reports
// false races on every field it guards. In the TSan build (CAUDAL_TSAN,
// set by CMake) this is a std::mutex, whose pthread calls TSan intercepts, so
// the sanitizer checks our locking for real. Thread-safety annotations
// (ABSL_GUARDED_BY, ...) work with both.
#ifndef CAUDAL_BASE_MUTEX_H_
#define CAUDAL_BASE_MUTEX_H_

#include "absl/base/thread_annotations.h"

#if defined(CAUDAL_TSAN)
#include <mutex>
#else
#include "absl/synchronization/mutex.h"
#endif

namespace caudal {

#if defined(CAUDAL_TSAN)
class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
  }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};
#else
using Mutex = absl::Mutex;
using MutexLock = absl::MutexLock;
#endif

}  // namespace caudal

#endif  // CAUDAL_BASE_MUTEX_H_
