// CpuMonitor: this process's CPU usage over a recent window, from its CPU
// time (CLOCK_PROCESS_CPUTIME_ID: every thread, user and system) sampled
// off the hot path (Executor::Maintain, next to the RSS reading).
//
// Two figures, over the samples of the last `window_ns` (default 10 s):
//   per_core_percent  CPU seconds per wall second x 100: 100 = one core
//                     busy; up to 100 x the number of CPUs;
//   percent           per_core_percent / allowed CPUs: 0..100, the share of
//                     the CPUs this process may run on (sched_getaffinity).
// `percent` is what OptimizationConfig::cpu_usage_threshold_percent (rule
// 0..100) is compared with: a single-threaded process that keeps one of 8
// CPUs busy is at 12.5%, a process saturating every CPU it may use at 100%.
//
// Samples are kept in a small ring (kMaxSamples); one taken less than
// window / kMaxSamples after the newest replaces it, so frequent reads
// (stats in a tight loop) do not shrink the window. With fewer than two
// samples, or none older than kMinSpanNs, the figures are 0 (not known yet).
//
// Inputs. The CPU-time source, the allowed-CPU count and the time are
// inputs: tests inject them and drive time by hand.
//
// Thread-safety: all methods are thread-safe (one mutex; Sample is called
// by at most one Maintain caller per interval, reads come from stats).
#ifndef CAUDAL_MONITOR_CPU_MONITOR_H_
#define CAUDAL_MONITOR_CPU_MONITOR_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "caudal/base/mutex.h"

namespace caudal {

// CPU time used by this process so far, ns (clock_gettime).
absl::StatusOr<int64_t> ReadProcessCpuNs();
// CPUs this process may run on (sched_getaffinity), at least 1.
int AllowedCpuCount();

struct CpuSnapshot {
  double percent = 0.0;           // of the allowed CPUs, 0..100
  double per_core_percent = 0.0;  // 100 = one core busy
  int allowed_cpus = 1;
  double window_s = 0.0;     // span the figures cover (<= the window)
  double cpu_seconds = 0.0;  // CPU time used so far (the last sample)
  uint64_t readings = 0;
  uint64_t read_errors = 0;
};

class CpuMonitor {
 public:
  using CpuSource = std::function<absl::StatusOr<int64_t>()>;

  static constexpr int64_t kDefaultWindowNs = 10'000'000'000;
  static constexpr int64_t kMinSpanNs = 100'000'000;  // 0.1 s
  static constexpr size_t kMaxSamples = 32;

  // `source` empty: ReadProcessCpuNs. allowed_cpus <= 0: AllowedCpuCount().
  explicit CpuMonitor(CpuSource source = {}, int allowed_cpus = 0,
                      int64_t window_ns = kDefaultWindowNs);
  CpuMonitor(const CpuMonitor&) = delete;
  CpuMonitor& operator=(const CpuMonitor&) = delete;

  // Reads the source at now_ns and keeps the sample. False on a read error.
  bool Sample(int64_t now_ns);
  CpuSnapshot Snapshot() const;

  void SetSource(CpuSource source);  // empty: the process clock again
  void SetAllowedCpus(int n);        // <= 0: sched_getaffinity again
  void SetWindow(int64_t window_ns);

 private:
  struct Point {
    int64_t at_ns;
    int64_t cpu_ns;
  };

  mutable Mutex mu_;
  // Called with no lock held (a Python source takes the GIL).
  std::shared_ptr<const CpuSource> source_ ABSL_GUARDED_BY(mu_);
  int allowed_ ABSL_GUARDED_BY(mu_);
  int64_t window_ns_ ABSL_GUARDED_BY(mu_);
  std::deque<Point> points_ ABSL_GUARDED_BY(mu_);  // oldest first
  uint64_t readings_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t read_errors_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace caudal

#endif  // CAUDAL_MONITOR_CPU_MONITOR_H_
