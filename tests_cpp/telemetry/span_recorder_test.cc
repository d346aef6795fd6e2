#include "caudal/telemetry/span_recorder.h"

#include <atomic>
#include <cmath>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace caudal {
namespace {

const std::string kStep = "step";

SpanRecord Span(int64_t start, SpanOutcome o = SpanOutcome::kOk) {
  SpanRecord s;
  s.step = &kStep;
  s.start_ns = start;
  s.end_ns = start + 10;
  s.attempts = 1;
  s.outcome = o;
  return s;
}

TEST(SpanRecorderTest, RecordsAndDrainsInOrderPerThread) {
  SpanRecorder rec;
  for (int i = 0; i < 5; ++i) {
    SpanRecord s = Span(i);
    rec.Record(s);
  }
  std::vector<SpanRecord> out;
  EXPECT_EQ(rec.Drain(&out), 5u);
  ASSERT_EQ(out.size(), 5u);
  std::set<uint64_t> ids;
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(out[i].start_ns, i);
    EXPECT_EQ(*out[i].step, "step");
    EXPECT_NE(out[i].span_id, 0u);
    ids.insert(out[i].span_id);
  }
  EXPECT_EQ(ids.size(), 5u);  // distinct ids
  out.clear();
  EXPECT_EQ(rec.Drain(&out), 0u);
  const SpanRecorder::Stats st = rec.GetStats();
  EXPECT_EQ(st.recorded, 5u);
  EXPECT_EQ(st.drained, 5u);
  EXPECT_EQ(st.buffered, 0u);
  EXPECT_EQ(st.threads, 1u);
}

TEST(SpanRecorderTest, FullBufferDropsAndCounts) {
  SpanRecorder rec;
  SpanRecorder::Options o;
  o.buffer_size = 8;
  rec.Configure(o);
  for (int i = 0; i < 20; ++i) {
    SpanRecord s = Span(i);
    rec.Record(s);
  }
  SpanRecorder::Stats st = rec.GetStats();
  EXPECT_EQ(st.recorded, 8u);
  EXPECT_EQ(st.dropped, 12u);
  EXPECT_EQ(st.buffered, 8u);
  std::vector<SpanRecord> out;
  EXPECT_EQ(rec.Drain(&out), 8u);
  EXPECT_EQ(out.back().start_ns, 7);  // the oldest are kept, not the newest
  // Room again after the drain.
  SpanRecord s = Span(100);
  rec.Record(s);
  EXPECT_EQ(rec.GetStats().buffered, 1u);
}

TEST(SpanRecorderTest, HalfFullBufferWakesTheFlusher) {
  SpanRecorder rec;
  SpanRecorder::Options o;
  o.buffer_size = 8;
  rec.Configure(o);
  // Nothing signalled: the wait times out.
  EXPECT_FALSE(rec.WaitForWork(absl::Milliseconds(1)));
  for (int i = 0; i < 3; ++i) {
    SpanRecord s = Span(i);
    rec.Record(s);
  }
  EXPECT_FALSE(rec.WaitForWork(absl::Milliseconds(1)));
  SpanRecord s = Span(3);
  rec.Record(s);  // the 4th of 8: half full
  EXPECT_TRUE(rec.WaitForWork(absl::Milliseconds(1)));
  // Consumed: the next wait blocks again.
  EXPECT_FALSE(rec.WaitForWork(absl::Milliseconds(1)));
  rec.Notify();
  EXPECT_TRUE(rec.WaitForWork(absl::Seconds(10)));
}

TEST(SpanRecorderTest, RateOneKeepsAllRateZeroKeepsOnlyWhatMustBeKept) {
  SpanRecorder rec;
  bool sampled = false;
  for (int i = 0; i < 100; ++i) {
    EXPECT_TRUE(rec.Sample(false, &sampled));
    EXPECT_TRUE(sampled);
  }
  SpanRecorder::Options o;
  o.sampling_rate = 0.0;
  rec.Configure(o);
  for (int i = 0; i < 100; ++i) {
    EXPECT_FALSE(rec.Sample(false, &sampled));
    EXPECT_FALSE(sampled);
  }
  EXPECT_TRUE(rec.Sample(/*must_keep=*/true, &sampled));
  EXPECT_FALSE(sampled);
  EXPECT_EQ(rec.GetStats().sampled_out, 100u);
}

TEST(SpanRecorderTest, SampledFractionMatchesTheRate) {
  for (double rate : {0.01, 0.1, 0.5}) {
    SpanRecorder rec(/*seed=*/42);
    SpanRecorder::Options o;
    o.sampling_rate = rate;
    rec.Configure(o);
    const int n = 200000;
    int kept = 0;
    bool sampled;
    for (int i = 0; i < n; ++i) kept += rec.Sample(false, &sampled) ? 1 : 0;
    // Binomial: within 5 standard deviations (deterministic seed).
    const double sd = std::sqrt(n * rate * (1 - rate));
    EXPECT_NEAR(kept, n * rate, 5 * sd) << "rate " << rate;
    EXPECT_EQ(rec.GetStats().sampled_out, static_cast<uint64_t>(n - kept));
  }
}

TEST(SpanRecorderTest, FailuresAreAlwaysFailures) {
  EXPECT_TRUE(IsFailure(SpanOutcome::kError));
  EXPECT_TRUE(IsFailure(SpanOutcome::kTimeout));
  EXPECT_TRUE(IsFailure(SpanOutcome::kRejected));
  EXPECT_TRUE(IsFailure(SpanOutcome::kFallback));
  EXPECT_FALSE(IsFailure(SpanOutcome::kOk));
  EXPECT_FALSE(IsFailure(SpanOutcome::kCancelled));
  EXPECT_FALSE(IsFailure(SpanOutcome::kCacheHit));
  EXPECT_EQ(SpanOutcomeName(SpanOutcome::kCacheHit), "cache_hit");
}

TEST(SpanRecorderTest, ErrorTypeIsTruncatedAndTerminated) {
  SpanRecord s;
  s.SetErrorType("builtins.ValueError");
  EXPECT_EQ(s.error(), "builtins.ValueError");
  const std::string long_name(200, 'x');
  s.SetErrorType(long_name);
  EXPECT_EQ(s.error().size(), SpanRecord::kErrorTypeLen - 1);
}

TEST(SpanRecorderTest, TwoRecordersOnOneThreadKeepTheirOwnBuffers) {
  SpanRecorder a, b;
  SpanRecord s1 = Span(1), s2 = Span(2), s3 = Span(3);
  a.Record(s1);
  b.Record(s2);
  a.Record(s3);
  std::vector<SpanRecord> out;
  EXPECT_EQ(a.Drain(&out), 2u);
  EXPECT_EQ(out[0].start_ns, 1);
  EXPECT_EQ(out[1].start_ns, 3);
  out.clear();
  EXPECT_EQ(b.Drain(&out), 1u);
  EXPECT_EQ(out[0].start_ns, 2);
}

// Many producers and a concurrent drainer: every span is either drained or
// counted as dropped, none twice (run under TSan by `make test-tsan`).
TEST(SpanRecorderTest, ConcurrentProducersAndDrainerLoseNothingUncounted) {
  SpanRecorder rec;
  SpanRecorder::Options o;
  o.buffer_size = 64;
  o.sampling_rate = 0.5;
  rec.Configure(o);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20000;
  std::atomic<bool> done{false};
  std::atomic<uint64_t> kept{0};
  std::vector<SpanRecord> drained;
  std::thread drainer([&] {
    while (!done.load()) {
      rec.WaitForWork(absl::Milliseconds(1));
      rec.Drain(&drained);
    }
    rec.Drain(&drained);
  });
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&, t] {
      bool sampled;
      for (int i = 0; i < kPerThread; ++i) {
        if (!rec.Sample(i % 100 == 0, &sampled)) continue;
        SpanRecord s = Span(static_cast<int64_t>(t) * kPerThread + i);
        rec.Record(s);
        kept.fetch_add(1);
      }
    });
  }
  for (auto& p : producers) p.join();
  done.store(true);
  rec.Notify();
  drainer.join();
  const SpanRecorder::Stats st = rec.GetStats();
  EXPECT_EQ(st.recorded + st.dropped, kept.load());
  EXPECT_EQ(st.recorded, drained.size());
  EXPECT_EQ(st.sampled_out + kept.load(),
            static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(st.threads, static_cast<size_t>(kThreads));
  std::set<int64_t> starts;
  for (const SpanRecord& s : drained) starts.insert(s.start_ns);
  EXPECT_EQ(starts.size(), drained.size());  // no span drained twice
}

}  // namespace
}  // namespace caudal
