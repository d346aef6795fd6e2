#include "caudal/memory/memory_monitor.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <utility>

#include "absl/status/status.h"

namespace caudal {

absl::string_view PressureLevelName(PressureLevel level) {
  switch (level) {
    case PressureLevel::kNormal:
      return "normal";
    case PressureLevel::kElevated:
      return "elevated";
    case PressureLevel::kCritical:
      return "critical";
  }
  return "?";
}

absl::StatusOr<uint64_t> ReadProcessRss() {
  const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::UnavailableError("cannot open /proc/self/statm");
  char buf[128];
  const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return absl::UnavailableError("cannot read /proc/self/statm");
  buf[n] = '\0';
  // "size resident shared text lib data dt", in pages.
  char* end = nullptr;
  std::strtoull(buf, &end, 10);
  if (end == buf) return absl::InternalError("malformed /proc/self/statm");
  char* start = end;
  const unsigned long long resident = std::strtoull(start, &end, 10);
  if (end == start) return absl::InternalError("malformed /proc/self/statm");
  static const long page = ::sysconf(_SC_PAGESIZE);
  return static_cast<uint64_t>(resident) * static_cast<uint64_t>(page);
}

MemoryMonitor::MemoryMonitor(RssSource source, double threshold_mb,
                             int64_t interval_ns)
    : interval_ns_(interval_ns) {
  MutexLock lock(&mu_);
  source_ = std::make_shared<RssSource>(source ? std::move(source)
                                               : RssSource(ReadProcessRss));
  threshold_mb_ = threshold_mb;
}

PressureLevel MemoryMonitor::Classify(PressureLevel current, double rss_mb,
                                      double threshold_mb) {
  if (threshold_mb <= 0) return PressureLevel::kNormal;
  const double critical = kCriticalRatio * threshold_mb;
  if (rss_mb >= critical) return PressureLevel::kCritical;
  // Hysteresis: a level is kept until RSS is below 90% of its boundary.
  if (current == PressureLevel::kCritical && rss_mb >= kRelease * critical)
    return PressureLevel::kCritical;
  if (rss_mb >= threshold_mb) return PressureLevel::kElevated;
  if (current != PressureLevel::kNormal && rss_mb >= kRelease * threshold_mb)
    return PressureLevel::kElevated;
  return PressureLevel::kNormal;
}

absl::optional<PressureChange> MemoryMonitor::Poll(int64_t now_ns) {
  int64_t due = next_read_ns_.load(std::memory_order_relaxed);
  if (now_ns < due) return absl::nullopt;
  // One caller claims this reading; the others go on.
  const int64_t next = now_ns + interval_ns_.load(std::memory_order_relaxed);
  if (!next_read_ns_.compare_exchange_strong(due, next,
                                             std::memory_order_relaxed)) {
    return absl::nullopt;
  }
  return Read(now_ns);
}

absl::optional<PressureChange> MemoryMonitor::ReadNow(int64_t now_ns) {
  next_read_ns_.store(now_ns + interval_ns_.load(std::memory_order_relaxed),
                      std::memory_order_relaxed);
  return Read(now_ns);
}

absl::optional<double> MemoryMonitor::ReadSourceMb() {
  std::shared_ptr<RssSource> source;
  {
    MutexLock lock(&mu_);
    source = source_;
  }
  // The source runs without the lock (it may be slow, or call back).
  const absl::StatusOr<uint64_t> rss = (*source)();
  if (!rss.ok()) {
    read_errors_.fetch_add(1, std::memory_order_relaxed);
    return absl::nullopt;
  }
  readings_.fetch_add(1, std::memory_order_relaxed);
  return static_cast<double>(*rss) / (1024.0 * 1024.0);
}

absl::optional<PressureChange> MemoryMonitor::Read(int64_t now_ns) {
  const absl::optional<double> read = ReadSourceMb();
  if (!read) return absl::nullopt;
  const double mb = *read;
  MutexLock lock(&mu_);
  last_rss_mb_ = mb;
  const PressureLevel from = level_.load(std::memory_order_relaxed);
  const PressureLevel to = Classify(from, mb, threshold_mb_);
  if (to == from) return absl::nullopt;
  level_.store(to, std::memory_order_relaxed);
  return PressureChange{from, to, mb, now_ns};
}

bool MemoryMonitor::Sample() {
  const absl::optional<double> mb = ReadSourceMb();
  if (!mb) return false;
  MutexLock lock(&mu_);
  last_rss_mb_ = *mb;
  return true;
}

void MemoryMonitor::SetSource(RssSource source) {
  auto s = std::make_shared<RssSource>(source ? std::move(source)
                                              : RssSource(ReadProcessRss));
  MutexLock lock(&mu_);
  source_ = std::move(s);
}

void MemoryMonitor::SetThreshold(double threshold_mb) {
  MutexLock lock(&mu_);
  threshold_mb_ = threshold_mb;
}

void MemoryMonitor::SetInterval(int64_t interval_ns) {
  interval_ns_.store(interval_ns, std::memory_order_relaxed);
}

double MemoryMonitor::last_rss_mb() const {
  MutexLock lock(&mu_);
  return last_rss_mb_;
}

double MemoryMonitor::threshold_mb() const {
  MutexLock lock(&mu_);
  return threshold_mb_;
}

}  // namespace caudal
