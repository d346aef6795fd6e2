#include "caudal/monitor/regression_detector.h"

#include <algorithm>
#include <limits>

#include "caudal/monitor/latency_histogram.h"

namespace caudal {

std::pair<uint64_t, double> RegressionDetector::Difference(const Sparse& to,
                                                           const Sparse& from) {
  LatencyHistogram::Snapshot d;
  d.buckets.assign(LatencyHistogram::kNumBuckets, 0);
  for (const auto& [b, n] : to.buckets) d.buckets[b] += n;
  for (const auto& [b, n] : from.buckets) {
    d.buckets[b] = d.buckets[b] >= n ? d.buckets[b] - n : 0;
  }
  uint64_t count = 0;
  for (uint64_t n : d.buckets) count += n;
  d.count = count;
  d.min_ns = 0;
  d.max_ns = std::numeric_limits<uint64_t>::max();  // no clamping
  return {count, d.QuantileNs(0.95)};
}

std::vector<TrendChange> RegressionDetector::Checkpoint(
    int64_t now_ns, const std::vector<StepStats::Snapshot>& steps,
    const RegressionOptions& o) {
  const int64_t spacing =
      std::max<int64_t>(1, o.window_ns / kCheckpointsPerWindow);
  next_ns_.store(now_ns + spacing, std::memory_order_relaxed);
  const int64_t keep_from = now_ns - (1 + kBaselineWindows) * o.window_ns;
  std::vector<TrendChange> changes;
  MutexLock lock(&mu_);
  ++checkpoints_;
  for (const StepStats::Snapshot& s : steps) {
    History& h = steps_[s.name];
    h.trend.step = s.name;
    Point p{now_ns, {}};
    for (int i = 0; i < static_cast<int>(s.latency.buckets.size()); ++i) {
      if (s.latency.buckets[i] == 0) continue;
      p.hist.buckets.emplace_back(static_cast<uint16_t>(i),
                                  s.latency.buckets[i]);
      p.hist.count += s.latency.buckets[i];
    }
    if (!h.points.empty() && (p.hist.count < h.points.back().hist.count ||
                              now_ns <= h.points.back().at_ns)) {
      // Stats were reset (or time went back): start afresh.
      h.points.clear();
      const uint64_t regressions = h.trend.regressions;
      h.trend = StepTrend();
      h.trend.step = s.name;
      h.trend.regressions = regressions;
    }
    h.points.push_back(std::move(p));
    // Keep one checkpoint at or before the oldest baseline start.
    size_t drop = 0;
    while (h.points.size() - drop > 2 && h.points[drop + 1].at_ns <= keep_from)
      ++drop;
    h.points.erase(h.points.begin(), h.points.begin() + drop);
    if (absl::optional<TrendChange> c = Evaluate(h, now_ns, o)) {
      changes.push_back(std::move(*c));
    }
  }
  return changes;
}

absl::optional<TrendChange> RegressionDetector::Evaluate(
    History& h, int64_t now_ns, const RegressionOptions& o) {
  StepTrend& t = h.trend;
  t.evaluated = false;
  const Point& cur = h.points.back();
  // The newest checkpoint at least one window old starts the recent window.
  const Point* start = nullptr;
  for (const Point& p : h.points) {
    if (p.at_ns <= now_ns - o.window_ns) start = &p;
  }
  if (start == nullptr) {
    // Less than a window of history: throughput over what there is.
    const Point& first = h.points.front();
    const int64_t span = now_ns - first.at_ns;
    t.recent_executions = cur.hist.count - first.hist.count;
    t.recent_span_s = static_cast<double>(span) / 1e9;
    t.throughput_per_s =
        span > 0 ? static_cast<double>(t.recent_executions) / t.recent_span_s
                 : 0.0;
    return absl::nullopt;
  }
  const auto [recent_n, recent_p95] = Difference(cur.hist, start->hist);
  const Point& first = h.points.front();
  const auto [base_n, base_p95] = Difference(start->hist, first.hist);
  t.recent_executions = recent_n;
  t.recent_span_s = static_cast<double>(now_ns - start->at_ns) / 1e9;
  t.throughput_per_s = static_cast<double>(recent_n) / t.recent_span_s;
  t.baseline_executions = base_n;
  t.baseline_span_s = static_cast<double>(start->at_ns - first.at_ns) / 1e9;
  if (recent_n < o.min_executions) return absl::nullopt;  // verdict stands
  t.recent_p95_ns = recent_p95;
  if (t.regressed) {
    t.evaluated = true;
    if (recent_p95 > t.baseline_p95_ns * (1.0 + o.threshold / 2)) {
      return absl::nullopt;
    }
    t.regressed = false;
    TrendChange c{t.step, false, recent_p95, t.baseline_p95_ns, now_ns};
    t.baseline_p95_ns = base_n >= o.min_executions ? base_p95 : 0.0;
    t.since_ns = 0;
    return c;
  }
  if (base_n < o.min_executions || start->at_ns - first.at_ns < o.window_ns) {
    t.baseline_p95_ns = base_n > 0 ? base_p95 : 0.0;
    return absl::nullopt;
  }
  t.evaluated = true;
  t.baseline_p95_ns = base_p95;
  if (recent_p95 <= base_p95 * (1.0 + o.threshold)) return absl::nullopt;
  t.regressed = true;
  t.since_ns = now_ns;
  ++t.regressions;
  return TrendChange{t.step, true, recent_p95, base_p95, now_ns};
}

std::vector<StepTrend> RegressionDetector::Trends() const {
  MutexLock lock(&mu_);
  std::vector<StepTrend> out;
  out.reserve(steps_.size());
  for (const auto& [name, h] : steps_) out.push_back(h.trend);
  std::sort(out.begin(), out.end(), [](const StepTrend& a, const StepTrend& b) {
    return a.step < b.step;
  });
  return out;
}

uint64_t RegressionDetector::checkpoints() const {
  MutexLock lock(&mu_);
  return checkpoints_;
}

void RegressionDetector::Clear() {
  MutexLock lock(&mu_);
  steps_.clear();
  checkpoints_ = 0;
  next_ns_.store(0, std::memory_order_relaxed);
}

void RegressionDetector::Forget(const std::vector<std::string>& steps) {
  if (steps.empty()) return;
  MutexLock lock(&mu_);
  for (const std::string& name : steps) steps_.erase(name);
}

}  // namespace caudal
