#include "caudal/monitor/latency_histogram.h"

#include <algorithm>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace caudal {
namespace {

TEST(LatencyHistogramTest, EmptyIsZero) {
  LatencyHistogram h;
  const auto s = h.Take();
  EXPECT_EQ(s.count, 0u);
  EXPECT_EQ(s.QuantileNs(0.5), 0.0);
  EXPECT_EQ(s.MeanNs(), 0.0);
}

TEST(LatencyHistogramTest, BucketsPartitionTheRange) {
  // Every value lands in a bucket whose bounds contain it, and buckets are
  // contiguous and increasing.
  for (int b = 0; b + 1 < LatencyHistogram::kNumBuckets; ++b) {
    EXPECT_EQ(LatencyHistogram::BucketUpper(b),
              LatencyHistogram::BucketLower(b + 1))
        << b;
  }
  std::mt19937_64 rng(1);
  for (int i = 0; i < 100000; ++i) {
    const uint64_t v = rng() >> (rng() % 64);
    const int b = LatencyHistogram::BucketOf(v);
    if (b == LatencyHistogram::kNumBuckets - 1) continue;  // overflow bucket
    EXPECT_LE(LatencyHistogram::BucketLower(b), v);
    EXPECT_LT(v, LatencyHistogram::BucketUpper(b));
  }
}

TEST(LatencyHistogramTest, SmallValuesAreExact) {
  LatencyHistogram h;
  for (int v = 1; v <= 10; ++v) h.Record(v);
  const auto s = h.Take();
  EXPECT_EQ(s.count, 10u);
  EXPECT_EQ(s.min_ns, 1u);
  EXPECT_EQ(s.max_ns, 10u);
  EXPECT_EQ(s.QuantileNs(0.5), 5.0);
  EXPECT_EQ(s.QuantileNs(1.0), 10.0);
  EXPECT_DOUBLE_EQ(s.MeanNs(), 5.5);
}

TEST(LatencyHistogramTest, QuantileErrorBound) {
  // Against exact quantiles of random log-uniform samples, the relative
  // error stays within half a sub-bucket (1/32) plus rounding.
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> exp10(2.0, 9.0);
  std::vector<uint64_t> values;
  LatencyHistogram h;
  for (int i = 0; i < 50000; ++i) {
    const auto v = static_cast<uint64_t>(std::pow(10.0, exp10(rng)));
    values.push_back(v);
    h.Record(static_cast<int64_t>(v));
  }
  std::sort(values.begin(), values.end());
  const auto s = h.Take();
  for (double q : {0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999}) {
    const size_t rank = static_cast<size_t>(std::ceil(q * values.size()));
    const double exact = static_cast<double>(values[rank - 1]);
    EXPECT_NEAR(s.QuantileNs(q) / exact, 1.0, 1.0 / 30) << "q=" << q;
  }
}

TEST(LatencyHistogramTest, NegativeValuesCountAsZero) {
  LatencyHistogram h;
  h.Record(-5);
  EXPECT_EQ(h.Take().max_ns, 0u);
  EXPECT_EQ(h.count(), 1u);
}

TEST(LatencyHistogramTest, MergeAndReset) {
  LatencyHistogram a, b;
  a.Record(100);
  b.Record(1000);
  auto s = a.Take();
  s.Merge(b.Take());
  EXPECT_EQ(s.count, 2u);
  EXPECT_EQ(s.min_ns, 100u);
  EXPECT_EQ(s.max_ns, 1000u);
  a.Reset();
  EXPECT_EQ(a.Take().count, 0u);
}

TEST(LatencyHistogramTest, ConcurrentRecordersLoseNothing) {
  LatencyHistogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < 20000; ++i) h.Record(1000 + t * 10 + i % 7);
    });
  }
  for (auto& th : threads) th.join();
  const auto s = h.Take();
  EXPECT_EQ(s.count, 80000u);
  EXPECT_EQ(s.min_ns, 1000u);
  EXPECT_EQ(s.max_ns, 1036u);
}

}  // namespace
}  // namespace caudal
