// MemoryMonitor: the process's resident memory (RSS), read at a bounded
// rate, classified into pressure levels against a threshold.
//
// Levels, for a threshold T (OptimizationConfig::memory_pressure_threshold_mb):
//   normal    RSS below T
//   elevated  RSS >= T
//   critical  RSS >= kCriticalRatio * T (1.25 T)
// with hysteresis, so a reading hovering at a boundary does not flap: a
// level is left downwards only once RSS is below kRelease (90%) of the
// boundary that entered it (elevated -> normal under 0.9 T, critical ->
// elevated under 1.125 T). Upward moves take effect at once, and a single
// reading may jump several levels either way.
//
// Rate. Poll(now) reads the source only when `interval_ns` has passed since
// the previous read (default 250 ms); Due(now) is one relaxed load and a
// compare, so callers on the hot path can check it for free and call Poll
// rarely. Concurrent Polls are safe: one of them reads, the others return.
//
// Inputs. The RSS source and the time are inputs: by default RSS is
// /proc/self/statm's resident pages times the page size (one open/read/
// close per reading); tests and the Python test hook inject a source.
//
// Thread-safety: all methods are thread-safe. Cost: Due() is one relaxed
// load; Poll() is a CAS when not due, a read of the source when due.
#ifndef CAUDAL_MEMORY_MEMORY_MONITOR_H_
#define CAUDAL_MEMORY_MEMORY_MONITOR_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "caudal/base/mutex.h"

namespace caudal {

enum class PressureLevel : uint8_t {
  kNormal = 0,
  kElevated = 1,
  kCritical = 2
};

// "normal", "elevated", "critical".
absl::string_view PressureLevelName(PressureLevel level);

// Resident bytes of this process, from /proc/self/statm.
absl::StatusOr<uint64_t> ReadProcessRss();

struct PressureChange {
  PressureLevel from;
  PressureLevel to;
  double rss_mb;
  int64_t at_ns;
};

class MemoryMonitor {
 public:
  // Resident bytes, or an error (the reading is then skipped).
  using RssSource = std::function<absl::StatusOr<uint64_t>()>;

  static constexpr double kCriticalRatio = 1.25;
  static constexpr double kRelease = 0.9;
  static constexpr int64_t kDefaultIntervalNs = 250'000'000;

  // `source` empty: ReadProcessRss. threshold_mb <= 0 disables levels
  // (always normal; readings still happen).
  explicit MemoryMonitor(RssSource source = {}, double threshold_mb = 500.0,
                         int64_t interval_ns = kDefaultIntervalNs);
  MemoryMonitor(const MemoryMonitor&) = delete;
  MemoryMonitor& operator=(const MemoryMonitor&) = delete;

  // Whether a reading is due at now_ns (one relaxed load).
  bool Due(int64_t now_ns) const {
    return now_ns >= next_read_ns_.load(std::memory_order_relaxed);
  }
  // Reads the source if due (else nothing) and updates the level. Returns
  // the level change this reading caused, if any.
  absl::optional<PressureChange> Poll(int64_t now_ns);
  // Reads now regardless of the interval (stats read-outs, tests).
  absl::optional<PressureChange> ReadNow(int64_t now_ns);
  // Reads the source for last_rss_mb() only: the level is left as it is
  // (used while pressure handling is off). False if the read failed.
  bool Sample();

  // The level a reading of `rss_mb` leads to from `current` (pure).
  static PressureLevel Classify(PressureLevel current, double rss_mb,
                                double threshold_mb);

  void SetSource(RssSource source);
  void SetThreshold(double threshold_mb);
  void SetInterval(int64_t interval_ns);

  PressureLevel level() const { return level_.load(std::memory_order_relaxed); }
  double last_rss_mb() const;
  double threshold_mb() const;
  uint64_t readings() const {
    return readings_.load(std::memory_order_relaxed);
  }
  uint64_t read_errors() const {
    return read_errors_.load(std::memory_order_relaxed);
  }
  int64_t interval_ns() const {
    return interval_ns_.load(std::memory_order_relaxed);
  }

 private:
  absl::optional<PressureChange> Read(int64_t now_ns);
  absl::optional<double> ReadSourceMb();  // counts readings and errors

  mutable Mutex mu_;  // serialises readings and guards the fields below
  std::shared_ptr<RssSource> source_ ABSL_GUARDED_BY(mu_);
  double threshold_mb_ ABSL_GUARDED_BY(mu_);
  double last_rss_mb_ ABSL_GUARDED_BY(mu_) = 0.0;
  std::atomic<PressureLevel> level_{PressureLevel::kNormal};
  std::atomic<int64_t> next_read_ns_{0};
  std::atomic<int64_t> interval_ns_;
  std::atomic<uint64_t> readings_{0};
  std::atomic<uint64_t> read_errors_{0};
};

}  // namespace caudal

#endif  // CAUDAL_MEMORY_MEMORY_MONITOR_H_
