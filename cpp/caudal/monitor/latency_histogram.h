// LatencyHistogram: a log-linear histogram of durations in nanoseconds, for
// p50/p95/p99/max of step latencies.
//
// Design: a value v >= 1 falls in octave e = floor(log2(v)) and, inside the
// octave, in one of kSubBuckets linear sub-buckets. The bucket width is at
// most v / kSubBuckets, so any quantile read from the bucket midpoint is
// within 1 / (2 * kSubBuckets) (about 3%) of a true sample value. Values
// below kSubBuckets ns get exact buckets. The range covers 1 ns .. 2^44 ns
// (about 4.9 hours); larger values land in the last bucket.
//
// Memory: a histogram starts small (about 80 bytes): its first kInline
// samples are kept as exact values, and the kNumBuckets counters (5 KiB) are
// allocated by the sample after them. A step run a few times (one of many
// distinct names) never pays for the buckets; a busy one pays once.
//
// Cost: Record() is a count-leading-zeros and three relaxed atomic adds (plus
// a CAS loop only when a new maximum or minimum appears); the first kInline
// samples store a value instead of adding to a bucket, and the one after them
// allocates the buckets.
//
// Thread-safety: Record() may be called from any number of threads. Reads
// (Quantile, Snapshot) are racy-but-safe: they see each counter atomically,
// not all counters at one instant, which is what a monitoring read needs.
#ifndef CAUDAL_MONITOR_LATENCY_HISTOGRAM_H_
#define CAUDAL_MONITOR_LATENCY_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

namespace caudal {

class LatencyHistogram {
 public:
  static constexpr int kSubBucketBits = 4;
  static constexpr int kSubBuckets = 1 << kSubBucketBits;  // 16
  static constexpr int kOctaves = 44;
  static constexpr int kNumBuckets =
      (kOctaves - kSubBucketBits + 1) * kSubBuckets;
  // Samples kept as exact values before the buckets are allocated.
  static constexpr int kInline = 4;

  LatencyHistogram() { Reset(); }
  ~LatencyHistogram();
  LatencyHistogram(const LatencyHistogram&) = delete;
  LatencyHistogram& operator=(const LatencyHistogram&) = delete;

  void Record(int64_t ns) {
    const uint64_t v = ns > 0 ? static_cast<uint64_t>(ns) : 0;
    const uint64_t n = count_.fetch_add(1, std::memory_order_relaxed);
    if (n < static_cast<uint64_t>(kInline)) {
      inline_[n].store(v, std::memory_order_relaxed);
    } else {
      std::atomic<uint64_t>* b = buckets_.load(std::memory_order_acquire);
      if (b == nullptr) b = AllocateBuckets();
      b[BucketOf(v)].fetch_add(1, std::memory_order_relaxed);
    }
    sum_.fetch_add(v, std::memory_order_relaxed);
    uint64_t cur = max_.load(std::memory_order_relaxed);
    while (v > cur &&
           !max_.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
    cur = min_.load(std::memory_order_relaxed);
    while (v < cur &&
           !min_.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
  }

  struct Snapshot {
    uint64_t count = 0;
    uint64_t sum_ns = 0;
    uint64_t min_ns = 0;
    uint64_t max_ns = 0;
    // Counts by bucket, up to the last non-empty one (at most kNumBuckets;
    // empty when count is 0).
    std::vector<uint64_t> buckets;

    double MeanNs() const {
      return count ? static_cast<double>(sum_ns) / count : 0.0;
    }
    // q in [0, 1]. Returns 0 when empty. Clamped to [min, max].
    double QuantileNs(double q) const;
    // Merges another snapshot into this one (for per-executor totals).
    void Merge(const Snapshot& other);
  };

  Snapshot Take() const;
  void Reset();
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  // Whether the bucket counters were allocated (more than kInline samples).
  bool has_buckets() const {
    return buckets_.load(std::memory_order_relaxed) != nullptr;
  }
  uint64_t sum_ns() const { return sum_.load(std::memory_order_relaxed); }

  static int BucketOf(uint64_t v);
  // Inclusive lower and exclusive upper bound of a bucket, in ns.
  static uint64_t BucketLower(int bucket);
  static uint64_t BucketUpper(int bucket);

 private:
  // A value no sample has (samples are below 2^63): an inline slot whose
  // sample is counted but not stored yet.
  static constexpr uint64_t kUnset = ~uint64_t{0};
  std::atomic<uint64_t>* AllocateBuckets();

  // Samples recorded; sample n < kInline is inline_[n], the others are in
  // buckets_ (null until the first of them).
  std::atomic<uint64_t> count_;
  std::array<std::atomic<uint64_t>, kInline> inline_;
  std::atomic<std::atomic<uint64_t>*> buckets_{nullptr};
  std::atomic<uint64_t> sum_;
  std::atomic<uint64_t> min_;
  std::atomic<uint64_t> max_;
};

}  // namespace caudal

#endif  // CAUDAL_MONITOR_LATENCY_HISTOGRAM_H_
