#include "caudal/monitor/latency_histogram.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace caudal {

int LatencyHistogram::BucketOf(uint64_t v) {
  if (v < static_cast<uint64_t>(kSubBuckets)) return static_cast<int>(v);
  const int octave = 63 - __builtin_clzll(v);  // >= kSubBucketBits
  if (octave >= kOctaves) return kNumBuckets - 1;
  const int shift = octave - kSubBucketBits;
  const int sub = static_cast<int>((v >> shift) & (kSubBuckets - 1));
  return (octave - kSubBucketBits + 1) * kSubBuckets + sub;
}

uint64_t LatencyHistogram::BucketLower(int bucket) {
  if (bucket < kSubBuckets) return static_cast<uint64_t>(bucket);
  const int octave = bucket / kSubBuckets + kSubBucketBits - 1;
  const int sub = bucket % kSubBuckets;
  const int shift = octave - kSubBucketBits;
  return (static_cast<uint64_t>(kSubBuckets + sub)) << shift;
}

uint64_t LatencyHistogram::BucketUpper(int bucket) {
  if (bucket < kSubBuckets) return static_cast<uint64_t>(bucket) + 1;
  const int octave = bucket / kSubBuckets + kSubBucketBits - 1;
  const int shift = octave - kSubBucketBits;
  return BucketLower(bucket) + (uint64_t{1} << shift);
}

LatencyHistogram::~LatencyHistogram() {
  delete[] buckets_.load(std::memory_order_acquire);
}

std::atomic<uint64_t>* LatencyHistogram::AllocateBuckets() {
  auto* fresh = new std::atomic<uint64_t>[kNumBuckets];
  for (int i = 0; i < kNumBuckets; ++i)
    fresh[i].store(0, std::memory_order_relaxed);
  std::atomic<uint64_t>* expected = nullptr;
  if (buckets_.compare_exchange_strong(expected, fresh,
                                       std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
    return fresh;
  }
  delete[] fresh;  // another thread allocated them first
  return expected;
}

void LatencyHistogram::Reset() {
  // The buckets, once allocated, stay (a racing Record may hold them).
  if (std::atomic<uint64_t>* b = buckets_.load(std::memory_order_acquire)) {
    for (int i = 0; i < kNumBuckets; ++i)
      b[i].store(0, std::memory_order_relaxed);
  }
  for (auto& v : inline_) v.store(kUnset, std::memory_order_relaxed);
  count_.store(0, std::memory_order_relaxed);
  sum_.store(0, std::memory_order_relaxed);
  min_.store(std::numeric_limits<uint64_t>::max(), std::memory_order_relaxed);
  max_.store(0, std::memory_order_relaxed);
}

LatencyHistogram::Snapshot LatencyHistogram::Take() const {
  Snapshot s;
  uint64_t total = 0;
  const uint64_t n = count_.load(std::memory_order_relaxed);
  const std::atomic<uint64_t>* b = buckets_.load(std::memory_order_acquire);
  if (b != nullptr) {
    s.buckets.resize(kNumBuckets);
    for (int i = 0; i < kNumBuckets; ++i) {
      s.buckets[i] = b[i].load(std::memory_order_relaxed);
      total += s.buckets[i];
    }
  }
  // Inline samples counted but not stored yet (a racing Record) are left
  // out, like a bucket add not done yet.
  for (uint64_t i = 0; i < n && i < static_cast<uint64_t>(kInline); ++i) {
    const uint64_t v = inline_[i].load(std::memory_order_relaxed);
    if (v == kUnset) continue;
    const size_t at = static_cast<size_t>(BucketOf(v));
    if (s.buckets.size() <= at) s.buckets.resize(at + 1, 0);
    ++s.buckets[at];
    ++total;
  }
  while (!s.buckets.empty() && s.buckets.back() == 0) s.buckets.pop_back();
  // Use the bucket total as the count so quantiles are self-consistent even
  // when a Record() races with this read.
  s.count = total;
  s.sum_ns = sum_.load(std::memory_order_relaxed);
  s.max_ns = max_.load(std::memory_order_relaxed);
  const uint64_t mn = min_.load(std::memory_order_relaxed);
  s.min_ns = total == 0 || mn == std::numeric_limits<uint64_t>::max() ? 0 : mn;
  return s;
}

double LatencyHistogram::Snapshot::QuantileNs(double q) const {
  if (count == 0 || buckets.empty()) return 0.0;
  q = std::clamp(q, 0.0, 1.0);
  // Rank of the sample we want, 1-based: ceil(q * count), at least 1.
  const uint64_t rank = std::max<uint64_t>(
      1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(count))));
  uint64_t seen = 0;
  for (int i = 0; i < static_cast<int>(buckets.size()); ++i) {
    seen += buckets[i];
    if (seen >= rank) {
      const double lo = static_cast<double>(BucketLower(i));
      const double hi = static_cast<double>(BucketUpper(i));
      const double mid = i < kSubBuckets ? lo : (lo + hi) / 2.0;
      return std::clamp(mid, static_cast<double>(min_ns),
                        static_cast<double>(max_ns));
    }
  }
  return static_cast<double>(max_ns);
}

void LatencyHistogram::Snapshot::Merge(const Snapshot& o) {
  if (o.count == 0) return;
  if (buckets.size() < o.buckets.size()) buckets.resize(o.buckets.size(), 0);
  for (size_t i = 0; i < o.buckets.size(); ++i) buckets[i] += o.buckets[i];
  min_ns = count == 0 ? o.min_ns : std::min(min_ns, o.min_ns);
  max_ns = std::max(max_ns, o.max_ns);
  count += o.count;
  sum_ns += o.sum_ns;
}

}  // namespace caudal
