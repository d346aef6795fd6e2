#include "caudal/monitor/cpu_monitor.h"

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <utility>

#include "absl/status/status.h"

namespace caudal {

absl::StatusOr<int64_t> ReadProcessCpuNs() {
  struct timespec ts;
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) {
    return absl::UnavailableError("clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
  }
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

int AllowedCpuCount() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return 1;
}

namespace {
std::shared_ptr<const CpuMonitor::CpuSource> SourceOrDefault(
    CpuMonitor::CpuSource source) {
  return std::make_shared<const CpuMonitor::CpuSource>(
      source ? std::move(source) : CpuMonitor::CpuSource(ReadProcessCpuNs));
}
}  // namespace

CpuMonitor::CpuMonitor(CpuSource source, int allowed_cpus, int64_t window_ns)
    : source_(SourceOrDefault(std::move(source))),
      allowed_(allowed_cpus > 0 ? allowed_cpus : AllowedCpuCount()),
      window_ns_(window_ns > 0 ? window_ns : kDefaultWindowNs) {}

bool CpuMonitor::Sample(int64_t now_ns) {
  std::shared_ptr<const CpuSource> source;
  {
    MutexLock lock(&mu_);
    source = source_;
  }
  const absl::StatusOr<int64_t> cpu = (*source)();
  MutexLock lock(&mu_);
  ++readings_;
  if (!cpu.ok()) {
    ++read_errors_;
    return false;
  }
  const Point p{now_ns, *cpu};
  if (!points_.empty() &&
      (now_ns < points_.back().at_ns || *cpu < points_.back().cpu_ns)) {
    points_.clear();  // a clock or source that went back: start again
  }
  const int64_t spacing = window_ns_ / static_cast<int64_t>(kMaxSamples);
  if (points_.size() >= 2 &&
      now_ns - points_[points_.size() - 2].at_ns < spacing) {
    points_.back() = p;  // too close to the one before: replace the newest
  } else {
    points_.push_back(p);
  }
  // Keep one sample at or before the window's start, so the figures span
  // the whole window once there is that much history.
  while (points_.size() > 2 && points_[1].at_ns <= now_ns - window_ns_) {
    points_.pop_front();
  }
  while (points_.size() > kMaxSamples) points_.pop_front();
  return true;
}

CpuSnapshot CpuMonitor::Snapshot() const {
  MutexLock lock(&mu_);
  CpuSnapshot s;
  s.allowed_cpus = allowed_;
  s.readings = readings_;
  s.read_errors = read_errors_;
  if (points_.empty()) return s;
  const Point& last = points_.back();
  s.cpu_seconds = static_cast<double>(last.cpu_ns) / 1e9;
  // The oldest sample inside the window (or the one just before it).
  const Point* first = &points_.front();
  for (const Point& p : points_) {
    if (p.at_ns <= last.at_ns - window_ns_) first = &p;
  }
  const int64_t span = last.at_ns - first->at_ns;
  if (span < kMinSpanNs) return s;
  s.window_s = static_cast<double>(span) / 1e9;
  s.per_core_percent = 100.0 *
                       static_cast<double>(last.cpu_ns - first->cpu_ns) /
                       static_cast<double>(span);
  s.percent = std::min(100.0, s.per_core_percent / allowed_);
  return s;
}

void CpuMonitor::SetSource(CpuSource source) {
  auto next = SourceOrDefault(std::move(source));
  MutexLock lock(&mu_);
  source_ = std::move(next);
  points_.clear();
}

void CpuMonitor::SetAllowedCpus(int n) {
  const int allowed = n > 0 ? n : AllowedCpuCount();
  MutexLock lock(&mu_);
  allowed_ = allowed;
}

void CpuMonitor::SetWindow(int64_t window_ns) {
  MutexLock lock(&mu_);
  window_ns_ = window_ns > 0 ? window_ns : kDefaultWindowNs;
}

}  // namespace caudal
