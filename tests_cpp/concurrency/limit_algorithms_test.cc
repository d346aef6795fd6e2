#include "caudal/concurrency/limit_algorithms.h"

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMs = 1'000'000;

// ---------------------------------------------------------------- AIMD

TEST(AimdLimitTest, GrowsByOneWhileHalfFullAndNoDrops) {
  AimdLimit aimd;  // initial 20, max 200
  // inflight 15: 15*2 = 30 >= limit for every limit from 20 to 30, so each of
  // the 10 samples adds one: 20 -> 30.
  for (int i = 0; i < 10; ++i) aimd.OnSample(0, 10 * kMs, 15, false);
  EXPECT_EQ(aimd.limit(), 30);
  // 30 >= 30 once more -> 31; then 30 < 31 is app-limited: no further growth.
  EXPECT_EQ(aimd.OnSample(0, 10 * kMs, 15, false), 31);
  EXPECT_EQ(aimd.OnSample(0, 10 * kMs, 15, false), 31);
  EXPECT_EQ(aimd.OnSample(0, 10 * kMs, 15, false), 31);
}

TEST(AimdLimitTest, BacksOffOnDropAndOnTimeout) {
  AimdLimit aimd;
  for (int i = 0; i < 11; ++i) aimd.OnSample(0, kMs, 100, false);
  ASSERT_EQ(aimd.limit(), 31);
  // floor(31 * 0.9) = floor(27.9) = 27.
  EXPECT_EQ(aimd.OnSample(0, kMs, 100, /*did_drop=*/true), 27);
  // floor(27 * 0.9) = floor(24.3) = 24.
  EXPECT_EQ(aimd.OnSample(0, kMs, 100, true), 24);
  // rtt above the 5 s timeout is a drop: floor(24 * 0.9) = floor(21.6) = 21.
  EXPECT_EQ(aimd.OnSample(0, 5'000 * kMs + 1, 100, false), 21);
  // Exactly the timeout is not above it: grows.
  EXPECT_EQ(aimd.OnSample(0, 5'000 * kMs, 100, false), 22);
}

TEST(AimdLimitTest, ClampsToMinAndMax) {
  AimdLimit::Options o;
  o.initial_limit = 3;
  o.min_limit = 2;
  o.max_limit = 5;
  auto aimd = AimdLimit::Create(o);
  ASSERT_TRUE(aimd.ok()) << aimd.status();
  // 3 -> 4 -> 5 -> 5 (max).
  for (int i = 0; i < 3; ++i) aimd->OnSample(0, kMs, 10, false);
  EXPECT_EQ(aimd->limit(), 5);
  // floor(5 * 0.9) = 4; floor(4 * 0.9) = 3; floor(3 * 0.9) = 2; then min 2.
  EXPECT_EQ(aimd->OnSample(0, kMs, 10, true), 4);
  EXPECT_EQ(aimd->OnSample(0, kMs, 10, true), 3);
  EXPECT_EQ(aimd->OnSample(0, kMs, 10, true), 2);
  EXPECT_EQ(aimd->OnSample(0, kMs, 10, true), 2);
}

TEST(AimdLimitTest, RejectsBadOptions) {
  AimdLimit::Options o;
  o.backoff_ratio = 1.0;
  EXPECT_THAT(AimdLimit::Create(o).status().message(),
              HasSubstr("backoff_ratio"));
  o = {};
  o.min_limit = 0;
  EXPECT_EQ(AimdLimit::Create(o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = {};
  o.initial_limit = 500;
  EXPECT_THAT(AimdLimit::Create(o).status().message(),
              HasSubstr("initial_limit"));
}

// ---------------------------------------------------------------- Gradient

TEST(GradientLimitTest, SteadyRttGrowsByQueueTimesSmoothing) {
  GradientLimit g;  // initial 20, queue 4, smoothing 0.2, tolerance 1.5
  // Steady rtt: long == short, gradient = clamp(1.5 * 1) = 1, so each sample
  // moves the limit to 0.8 * L + 0.2 * (L + 4) = L + 0.8.
  // After 12 samples: 20 + 12 * 0.8 = 29.6 -> limit 29.
  for (int i = 0; i < 12; ++i) g.OnSample(0, 10 * kMs, 100, false);
  EXPECT_NEAR(g.estimated_limit(), 29.6, 1e-9);
  EXPECT_EQ(g.limit(), 29);
  EXPECT_DOUBLE_EQ(g.long_rtt_ns(), 10.0 * kMs);
}

TEST(GradientLimitTest, LatencySpikeShrinksTheLimit) {
  GradientLimit g;
  for (int i = 0; i < 10; ++i) g.OnSample(0, 10 * kMs, 100, false);
  ASSERT_NEAR(g.estimated_limit(), 28.0, 1e-9);  // 20 + 10 * 0.8
  // The 10 warm-up samples averaged to long = 10 ms. The 11th sample (30 ms)
  // enters the EMA with factor 2/601: long = 10 + 20 * 2/601 = 10.06656 ms.
  // gradient = 1.5 * 10.06656 / 30 = 0.503328;
  // L = 0.8 * 28 + 0.2 * (28 * 0.503328 + 4) = 22.4 + 3.618636 = 26.0186.
  EXPECT_EQ(g.OnSample(0, 30 * kMs, 100, false), 26);
  EXPECT_NEAR(g.estimated_limit(), 26.018636, 1e-5);
  // Two more at 30 ms: 24.25, then 22.67.
  EXPECT_EQ(g.OnSample(0, 30 * kMs, 100, false), 24);
  EXPECT_EQ(g.OnSample(0, 30 * kMs, 100, false), 22);
}

// Small numbers so every step is exact in binary floating point:
// EMA factor 2/(3+1) = 0.5, warm-up 1, tolerance 1, smoothing 0.5, queue 2.
GradientLimit SmallGradient() {
  GradientLimit::Options o;
  o.initial_limit = 10;
  o.min_limit = 1;
  o.max_limit = 100;
  o.smoothing = 0.5;
  o.rtt_tolerance = 1.0;
  o.long_window = 3;
  o.warmup_window = 1;
  o.queue_size = [](int) { return 2; };
  auto g = GradientLimit::Create(std::move(o));
  EXPECT_TRUE(g.ok()) << g.status();
  return *std::move(g);
}

TEST(GradientLimitTest, HandComputedSequence) {
  GradientLimit g = SmallGradient();
  // 1: rtt 100, long = 100 (warm-up). gradient 1, target 12,
  //    L = 0.5 * 10 + 0.5 * 12 = 11.
  EXPECT_EQ(g.OnSample(0, 100, 100, false), 11);
  // 2: rtt 100, long = 100. target 13, L = 12.
  EXPECT_EQ(g.OnSample(0, 100, 100, false), 12);
  // 3: rtt 200, long = 0.5 * 100 + 0.5 * 200 = 150, gradient 0.75,
  //    target = 12 * 0.75 + 2 = 11, L = 6 + 5.5 = 11.5.
  EXPECT_EQ(g.OnSample(0, 200, 100, false), 11);
  EXPECT_DOUBLE_EQ(g.estimated_limit(), 11.5);
  // 4: rtt 200, long = 175, gradient 0.875,
  //    target = 11.5 * 0.875 + 2 = 12.0625, L = 5.75 + 6.03125 = 11.78125.
  EXPECT_EQ(g.OnSample(0, 200, 100, false), 11);
  EXPECT_DOUBLE_EQ(g.estimated_limit(), 11.78125);
  // 5: rtt 50, long = 87.5 + 25 = 112.5; long/short = 2.25 > 2, so long is
  //    pulled down to 101.25. gradient = clamp(2.025) = 1,
  //    target = 13.78125, L = 12.78125.
  EXPECT_EQ(g.OnSample(0, 50, 100, false), 12);
  EXPECT_DOUBLE_EQ(g.estimated_limit(), 12.78125);
  EXPECT_NEAR(g.long_rtt_ns(), 101.25, 1e-9);
}

TEST(GradientLimitTest, AppLimitedDoesNotMoveTheLimit) {
  GradientLimit g = SmallGradient();
  // inflight 4 < 10 / 2: neither growth (fast rtt) nor shrink (slow rtt).
  EXPECT_EQ(g.OnSample(0, 100, 4, false), 10);
  EXPECT_EQ(g.OnSample(0, 1000, 4, false), 10);
  EXPECT_DOUBLE_EQ(g.estimated_limit(), 10.0);
  // inflight 5 == L / 2 is not app-limited.
  EXPECT_NE(g.OnSample(0, 100, 5, false), 10);
}

TEST(GradientLimitTest, NeverBelowMinLimit) {
  GradientLimit g;  // min 20
  for (int i = 0; i < 10; ++i) g.OnSample(0, 10 * kMs, 100, false);
  for (int i = 0; i < 50; ++i) g.OnSample(0, 1000 * kMs, 100, false);
  EXPECT_EQ(g.limit(), 20);
}

TEST(GradientLimitTest, RejectsBadOptions) {
  GradientLimit::Options o;
  o.smoothing = 0;
  EXPECT_THAT(GradientLimit::Create(o).status().message(),
              HasSubstr("smoothing"));
  o = {};
  o.rtt_tolerance = 0.5;
  EXPECT_THAT(GradientLimit::Create(o).status().message(),
              HasSubstr("rtt_tolerance"));
  o = {};
  o.queue_size = nullptr;
  EXPECT_THAT(GradientLimit::Create(o).status().message(),
              HasSubstr("queue_size"));
}

// ---------------------------------------------------------------- Vegas

VegasLimit NoProbeVegas(int initial, double smoothing = 1.0) {
  VegasLimit::Options o;
  o.initial_limit = initial;
  o.smoothing = smoothing;
  o.probe_multiplier = 0;
  auto v = VegasLimit::Create(o);
  EXPECT_TRUE(v.ok()) << v.status();
  return *v;
}

TEST(VegasLimitTest, HandComputedSequence) {
  VegasLimit v = NoProbeVegas(20);
  // At limit 20: L = log10 root = 1, alpha = 3, beta = 6.
  // 1: first rtt becomes rtt_noload (10 ms); limit unchanged.
  EXPECT_EQ(v.OnSample(0, 10 * kMs, 20, false), 20);
  EXPECT_EQ(v.rtt_noload_ns(), 10 * kMs);
  // 2, 3: rtt == noload, queue = ceil(L * 0) = 0 <= 1: grow by beta (6).
  EXPECT_EQ(v.OnSample(0, 10 * kMs, 20, false), 26);
  EXPECT_EQ(v.OnSample(0, 10 * kMs, 20, false), 32);
  // 4: rtt 12.5 ms, queue = ceil(32 * (1 - 10/12.5)) = ceil(6.4) = 7 > 6:
  //    shrink by 1.
  EXPECT_EQ(v.OnSample(0, 12'500'000, 20, false), 31);
  // 5: rtt 11 ms, queue = ceil(31 * 1/11) = ceil(2.82) = 3: not <= 1, not
  //    < 3, not > 6: the sweet spot, unchanged.
  EXPECT_EQ(v.OnSample(0, 11 * kMs, 20, false), 31);
  // 6: rtt 10.5 ms, queue = ceil(31 * 0.5/10.5) = ceil(1.48) = 2 < 3: +1.
  EXPECT_EQ(v.OnSample(0, 10'500'000, 20, false), 32);
  // 7: a drop always shrinks by L.
  EXPECT_EQ(v.OnSample(0, 10 * kMs, 20, true), 31);
}

TEST(VegasLimitTest, StepsScaleWithLog10OfTheLimit) {
  VegasLimit v = NoProbeVegas(95);
  EXPECT_EQ(v.OnSample(0, 10 * kMs, 100, false), 95);   // noload = 10 ms
  EXPECT_EQ(v.OnSample(0, 10 * kMs, 100, false), 101);  // L=1: +beta 6
  // From 101 on L = 2, beta = 12.
  EXPECT_EQ(v.OnSample(0, 10 * kMs, 100, false), 113);
  EXPECT_EQ(v.OnSample(0, 10 * kMs, 100, false), 125);
  // rtt doubles: queue = ceil(125 * 0.5) = 63 > 12: shrink by L = 2.
  EXPECT_EQ(v.OnSample(0, 20 * kMs, 100, false), 123);
  EXPECT_EQ(VegasLimit::Log10Root(1), 1);
  EXPECT_EQ(VegasLimit::Log10Root(99), 1);
  EXPECT_EQ(VegasLimit::Log10Root(100), 2);
  EXPECT_EQ(VegasLimit::Log10Root(12345), 4);
}

TEST(VegasLimitTest, SmoothingAndAppLimit) {
  VegasLimit v = NoProbeVegas(20, /*smoothing=*/0.5);
  v.OnSample(0, 10 * kMs, 20, false);
  // next = 26, limit = 0.5 * 20 + 0.5 * 26 = 23.
  EXPECT_EQ(v.OnSample(0, 10 * kMs, 20, false), 23);
  // inflight 11: 22 < 23 is app-limited, even with a fast rtt.
  EXPECT_EQ(v.OnSample(0, 10 * kMs, 11, false), 23);
}

TEST(VegasLimitTest, ProbeResetsNoLoadRtt) {
  VegasLimit::Options o;
  o.initial_limit = 5;
  o.probe_multiplier = 1;  // probe every 1 * 5 samples
  auto v = VegasLimit::Create(o);
  ASSERT_TRUE(v.ok());
  // inflight 0 keeps the limit at 5 (app-limited), so the interval stays 5.
  v->OnSample(0, 10, 0, false);
  for (int i = 0; i < 3; ++i) v->OnSample(0, 20, 0, false);
  EXPECT_EQ(v->rtt_noload_ns(), 10);
  v->OnSample(0, 20, 0, false);  // 5th sample probes
  EXPECT_EQ(v->rtt_noload_ns(), 20);
  EXPECT_EQ(v->limit(), 5);
}

// ---------------------------------------------------------------- windows

struct Call {
  int64_t start_ns, rtt_ns;
  int inflight;
  bool did_drop;
};

class RecordingLimit : public LimitAlgorithm {
 public:
  explicit RecordingLimit(std::vector<Call>* calls) : calls_(calls) {}
  int OnSample(int64_t start_ns, int64_t rtt_ns, int inflight,
               bool did_drop) override {
    calls_->push_back({start_ns, rtt_ns, inflight, did_drop});
    return ++limit_;
  }
  int limit() const override { return limit_; }

 private:
  std::vector<Call>* calls_;
  int limit_ = 7;
};

TEST(WindowedLimitTest, AggregatesOneWindowPerDelegateCall) {
  std::vector<Call> calls;
  WindowedLimit::Options o;
  o.min_window_ns = 100;
  o.max_window_ns = 100;
  o.min_samples = 3;
  o.min_rtt_threshold_ns = 5;
  auto w = WindowedLimit::Create(o, std::make_unique<RecordingLimit>(&calls));
  ASSERT_TRUE(w.ok()) << w.status();
  WindowedLimit& limit = **w;

  // Window [0, 100).
  EXPECT_EQ(limit.OnSample(0, 10, 1, false), 7);
  EXPECT_EQ(limit.OnSample(5, 10, 3, false), 7);
  EXPECT_EQ(limit.OnSample(6, 4, 9, true), 7);  // below threshold: ignored
  EXPECT_EQ(limit.OnSample(20, 10, 2, false), 7);
  EXPECT_TRUE(calls.empty());
  // Ends at 115 >= 100 with 4 samples: closes. Average (10+10+10+20)/4 = 12
  // (integer division of 50 by 4), max inflight 4, no drop.
  EXPECT_EQ(limit.OnSample(95, 20, 4, false), 8);
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].rtt_ns, 12);
  EXPECT_EQ(calls[0].inflight, 4);
  EXPECT_FALSE(calls[0].did_drop);

  // Next window ends at 115 + clamp(2 * 10, 100, 100) = 215. Samples ending
  // at 150, 160, 170 do not close it; one ending at 215 does (4 >= 3
  // samples). A drop anywhere in the window is passed on.
  limit.OnSample(120, 30, 1, false);
  limit.OnSample(130, 30, 1, true);
  limit.OnSample(140, 30, 1, false);
  EXPECT_EQ(calls.size(), 1u);
  EXPECT_EQ(limit.OnSample(185, 30, 2, false), 9);
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[1].rtt_ns, 30);
  EXPECT_TRUE(calls[1].did_drop);
}

TEST(WindowedLimitTest, WaitsForMinSamples) {
  std::vector<Call> calls;
  WindowedLimit::Options o;
  o.min_window_ns = 10;
  o.max_window_ns = 10;
  o.min_samples = 3;
  o.min_rtt_threshold_ns = 0;
  auto w = WindowedLimit::Create(o, std::make_unique<RecordingLimit>(&calls));
  ASSERT_TRUE(w.ok());
  (*w)->OnSample(0, 50, 1, false);    // past the window end, but 1 sample
  (*w)->OnSample(100, 50, 1, false);  // 2 samples
  EXPECT_TRUE(calls.empty());
  (*w)->OnSample(200, 50, 1, false);
  EXPECT_EQ(calls.size(), 1u);
}

TEST(WindowedLimitTest, DrivesGradientAtWindowGranularity) {
  WindowedLimit::Options o;
  o.min_window_ns = 1000;
  o.max_window_ns = 1000;
  o.min_samples = 10;
  o.min_rtt_threshold_ns = 0;
  auto w = WindowedLimit::Create(o, std::make_unique<GradientLimit>());
  ASSERT_TRUE(w.ok());
  // Samples start every 10 ns and take 100 ns. The first window ends at
  // 0 + 1000; the first sample to end there is i = 90 (ends at 1000), so 91
  // samples make one delegate update. The next window ends at 1000 + 1000,
  // after the last sample (i = 99 ends at 1090): exactly one update, which
  // moves Gradient's limit from 20 to 20.8 (see SteadyRtt... above).
  for (int i = 0; i < 100; ++i) (*w)->OnSample(i * 10, 100, 100, false);
  EXPECT_NEAR(
      static_cast<const GradientLimit&>((*w)->delegate()).estimated_limit(),
      20.8, 1e-9);
}

TEST(WindowedLimitTest, RejectsBadOptions) {
  WindowedLimit::Options o;
  o.max_window_ns = 1;
  EXPECT_THAT(WindowedLimit::Create(o, std::make_unique<FixedLimit>(3))
                  .status()
                  .message(),
              HasSubstr("max_window_ns"));
  EXPECT_FALSE(WindowedLimit::Create({}, nullptr).ok());
}

TEST(FixedLimitTest, IgnoresSamples) {
  FixedLimit f(0);
  EXPECT_EQ(f.limit(), 1);
  FixedLimit g(8);
  EXPECT_EQ(g.OnSample(0, 1, 100, true), 8);
}

// ------------------------------------------------------- BaselineGradient

namespace baseline_gradient {

// Feeds `n` identical samples: admitted at `start`, taking `rtt`.
int Feed(BaselineGradientLimit& l, int n, int64_t start, int64_t rtt,
         int inflight, bool drop = false) {
  int out = l.limit();
  for (int i = 0; i < n; ++i) out = l.OnSample(start, rtt, inflight, drop);
  return out;
}

BaselineGradientLimit Make(BaselineGradientLimit::Options o) {
  auto l = BaselineGradientLimit::Create(o);
  EXPECT_TRUE(l.ok()) << l.status();
  return *l;
}

BaselineGradientLimit StartingAt(int initial) {
  BaselineGradientLimit::Options o;
  o.initial_limit = initial;
  return Make(o);
}

// Feeds whole windows of 10 samples, a second apart (longer than any
// window), from `t`.
struct Windows {
  BaselineGradientLimit& l;
  int64_t t = 0;
  // `drops` rejections then 10 - drops answers, all taking `rtt`.
  int Next(int64_t rtt, int inflight, int drops = 0) {
    Feed(l, drops, t, rtt, inflight, /*drop=*/true);
    Feed(l, 10 - drops, t, rtt, inflight);
    t += rtt + 1000 * kMs;
    return l.limit();
  }
  // The warm-up windows plus one at `rtt` with 1 in flight (app-limited,
  // so only the baseline moves): the baseline is then `rtt`.
  void Baseline(int64_t rtt) {
    for (int i = 0; i <= BaselineGradientLimit::kBaselineWarmup; ++i) {
      Next(rtt, 1);
    }
  }
};

TEST(BaselineGradientLimitTest, IgnoresFastSuccessfulSamples) {
  BaselineGradientLimit l;
  EXPECT_EQ(l.limit(), 4);                    // the default initial limit
  EXPECT_EQ(Feed(l, 1000, 0, 50'000, 4), 4);  // 50 us < 100 us threshold
  EXPECT_EQ(l.windows(), 0);
  EXPECT_FALSE(l.Relevant(50'000, false));
  EXPECT_TRUE(l.Relevant(50'000, true));  // a fast failure is still a drop
}

TEST(BaselineGradientLimitTest,
     SlowStartGrowsAQuarterPerWindowUntilTheFirstCut) {
  BaselineGradientLimit l = StartingAt(20);  // windows >= 10 samples, 10 ms
  // Window 1 ends at 0 + 10 ms; the 10th sample (ending at 20 ms) closes it:
  // baseline 20 ms, latency at baseline, 20 in flight: 20 + 5 = 25.
  EXPECT_EQ(Feed(l, 9, 0, 20 * kMs, 20), 20);
  EXPECT_EQ(Feed(l, 1, 0, 20 * kMs, 20), 25);
  EXPECT_EQ(l.windows(), 1);
  EXPECT_DOUBLE_EQ(l.baseline_rtt_ns(), 0.0);  // none during the warm-up
  // In slow start window 2 lasts one rtt from 20 ms: samples ending before
  // 40 ms keep it open however many there are.
  EXPECT_EQ(Feed(l, 50, 10 * kMs, 20 * kMs, 25), 25);
  EXPECT_EQ(Feed(l, 1, 20 * kMs, 20 * kMs, 25), 31);  // 25 + 6.25
  EXPECT_DOUBLE_EQ(l.estimated_limit(), 31.25);
  EXPECT_TRUE(l.slow_start());
  // Small limits grow by at least one: 4 -> 5 -> 6.25 -> 7.8125.
  BaselineGradientLimit s = StartingAt(4);
  int64_t t = 0;
  for (int expected : {5, 6, 7, 9}) {
    EXPECT_EQ(Feed(s, 10, t, 20 * kMs, s.limit()), expected);
    t += 100 * kMs;
  }
}

TEST(BaselineGradientLimitTest, BaselineIsTheLowestSmoothedMedianAfterAWarmUp) {
  BaselineGradientLimit l = StartingAt(20);
  Windows w{l};
  for (int i = 0; i < BaselineGradientLimit::kBaselineWarmup; ++i) {
    w.Next(20 * kMs, 1);
    EXPECT_DOUBLE_EQ(l.baseline_rtt_ns(), 0.0);
  }
  w.Next(20 * kMs, 1);
  EXPECT_DOUBLE_EQ(l.baseline_rtt_ns(), 20.0 * kMs);
  // One fast window moves the smoothed median a quarter of the way:
  // 0.75 * 20 + 0.25 * 10.
  w.Next(10 * kMs, 1);
  EXPECT_DOUBLE_EQ(l.baseline_rtt_ns(), 17.5 * kMs);
  EXPECT_DOUBLE_EQ(l.last_window_rtt_ns(), 10.0 * kMs);
}

TEST(BaselineGradientLimitTest, CutsInProportionToTheExcessDelay) {
  BaselineGradientLimit l = StartingAt(20);
  Windows w{l};
  w.Baseline(20 * kMs);
  ASSERT_EQ(l.limit(), 20);
  // 30 ms against a ceiling of 20 * 1.2 = 24 ms (identical samples: no
  // noise allowance). The first window above it only holds the limit; the
  // second cuts 20 * 24 / 30 = 16, and slow start ends.
  EXPECT_EQ(w.Next(30 * kMs, 20), 20);
  EXPECT_TRUE(l.slow_start());
  EXPECT_EQ(w.Next(30 * kMs, 20), 16);
  EXPECT_DOUBLE_EQ(l.noise(), 0.0);
  EXPECT_FALSE(l.slow_start());
  // Back at the baseline: additive growth max(1, 5% of 16) -> 17.
  EXPECT_EQ(w.Next(20 * kMs, 20), 17);
  // A huge excess cuts by at most half: 17 * 0.5 = 8.5.
  EXPECT_EQ(w.Next(500 * kMs, 20), 17);
  EXPECT_EQ(w.Next(500 * kMs, 20), 8);
  EXPECT_DOUBLE_EQ(l.estimated_limit(), 8.5);
}

TEST(BaselineGradientLimitTest,
     OneSlowWindowIsNotEnoughAndTheLowerOfTwoCounts) {
  BaselineGradientLimit l = StartingAt(20);
  Windows w{l};
  w.Baseline(20 * kMs);
  // A slow window between normal ones: no cut (nor growth: it holds).
  EXPECT_EQ(w.Next(2000 * kMs, 20), 20);
  EXPECT_EQ(w.Next(20 * kMs, 20), 25);
  EXPECT_EQ(w.Next(2000 * kMs, 20), 25);
  // A slow window then one at the ceiling (24 ms, not above it): growth.
  EXPECT_EQ(w.Next(24 * kMs, 20), 31);
  // ... two above it, 40 ms then 30 ms: the cut uses 30 ms, 31.25 * 24 / 30.
  EXPECT_EQ(w.Next(40 * kMs, 20), 31);
  EXPECT_EQ(w.Next(30 * kMs, 20), 25);
  EXPECT_DOUBLE_EQ(l.estimated_limit(), 25.0);
}

TEST(BaselineGradientLimitTest, LatencyNeverCutsBelowFourOnlyDropsDo) {
  BaselineGradientLimit l = StartingAt(20);
  Windows w{l};
  w.Baseline(20 * kMs);
  // Latency 25x the baseline, window after window: 20 (held) -> 10 -> 5 ->
  // 4, and there it stays.
  for (int expected : {20, 10, 5, 4, 4, 4}) {
    EXPECT_EQ(w.Next(500 * kMs, 20), expected);
  }
  EXPECT_DOUBLE_EQ(l.estimated_limit(), 4.0);
  // Drops do: 4 -> 2 -> 1 (all rejected: the largest cut, half).
  EXPECT_EQ(w.Next(20 * kMs, 4, /*drops=*/10), 2);
  EXPECT_EQ(w.Next(20 * kMs, 2, /*drops=*/10), 1);
  // A limit already below 4 is not cut on latency at all.
  BaselineGradientLimit three = StartingAt(3);
  Windows w3{three};
  w3.Baseline(20 * kMs);
  ASSERT_EQ(three.limit(), 3);
  EXPECT_EQ(w3.Next(500 * kMs, 3), 3);
  EXPECT_EQ(w3.Next(500 * kMs, 3), 3);
}

TEST(BaselineGradientLimitTest, SlowOutliersDoNotMoveTheWindowMedian) {
  BaselineGradientLimit l = StartingAt(8);
  Windows w{l};
  w.Baseline(40 * kMs);
  // Each window: 7 answers in 40 ms, 3 in 4 s (100x), the limit in flight.
  // The median is 40 ms every time, so the limit grows as in slow start.
  for (int expected : {10, 12, 15, 19}) {
    Feed(l, 7, w.t, 40 * kMs, l.limit());
    Feed(l, 3, w.t, 4000 * kMs, l.limit());
    w.t += 10'000 * kMs;
    EXPECT_EQ(l.limit(), expected);
    EXPECT_DOUBLE_EQ(l.last_window_rtt_ns(), 40.0 * kMs);
    // The outliers (above 4x the median) are left out of the noise.
    EXPECT_DOUBLE_EQ(l.noise(), 0.0);
  }
  EXPECT_TRUE(l.slow_start());
}

TEST(BaselineGradientLimitTest, NoiseIsTheRelativeErrorOfTheMedian) {
  BaselineGradientLimit l = StartingAt(10);
  // Ten rtts 10, 20, ..., 100 ms: median 55 ms; j = 10 inliers (all <=
  // 220 ms), h = sqrt(10) / 2 = 1.58: ranks floor(3.42) = 3 and
  // ceil(6.58) - 1 = 6, so e = (70 - 40) / 2 / 55.
  for (int i = 1; i <= 10; ++i) l.OnSample(0, i * 10 * kMs, 10, false);
  EXPECT_EQ(l.windows(), 1);
  EXPECT_DOUBLE_EQ(l.last_window_rtt_ns(), 55.0 * kMs);
  EXPECT_DOUBLE_EQ(l.noise(), 15.0 / 55.0);
}

TEST(BaselineGradientLimitTest, AWindowKeepsAnEvenSpreadOf64Rtts) {
  BaselineGradientLimit::Options o;
  o.initial_limit = 10;
  o.min_samples = 200;
  BaselineGradientLimit l = Make(o);
  // 100 answers in 10 ms, then 100 in 30 ms: the window keeps every 4th
  // (25 of each), so its median is between them. Keeping the first or the
  // last 64 would say 10 or 30.
  Feed(l, 100, 0, 10 * kMs, 10);
  Feed(l, 100, 0, 30 * kMs, 10);
  EXPECT_EQ(l.windows(), 1);
  EXPECT_DOUBLE_EQ(l.last_window_rtt_ns(), 20.0 * kMs);
}

TEST(BaselineGradientLimitTest, DropsCutInProportionToTheShareRejected) {
  for (auto [drops, expected] : {std::pair{1, 18.0}, std::pair{2, 16.0}}) {
    BaselineGradientLimit l = StartingAt(20);
    Feed(l, 10 - drops, 0, 20 * kMs, 20);
    Feed(l, drops, 0, 20 * kMs, 20, /*drop=*/true);
    EXPECT_EQ(l.windows(), 1);
    // clamp(1 - d / 10, 0.5, 0.9): 0.9, 0.8.
    EXPECT_DOUBLE_EQ(l.estimated_limit(), expected) << drops;
    EXPECT_FALSE(l.slow_start());
    // One window with a drop or two makes its level, min(limit, in
    // flight), suspect; it sets no cap yet.
    EXPECT_EQ(l.suspect_level(), 20) << drops;
    EXPECT_EQ(l.drop_cap(), 0) << drops;
  }
  // Drops with 12 in flight, then again with 10: the cap goes just below
  // the higher level, 11.
  BaselineGradientLimit l = StartingAt(20);
  Windows w{l};
  EXPECT_EQ(w.Next(20 * kMs, 12, /*drops=*/2), 16);
  EXPECT_EQ(l.suspect_level(), 12);
  EXPECT_EQ(w.Next(20 * kMs, 10, /*drops=*/2), 11);  // min(11, 16 * 0.8)
  EXPECT_EQ(l.drop_cap(), 11);
  EXPECT_EQ(l.suspect_level(), 0);
}

TEST(BaselineGradientLimitTest, ABurstOfDropsClosesTheWindowAndSetsTheCap) {
  // Seven answers, then the third drop closes the window at once: 3 of 10
  // rejected, 20 * 0.7; three drops in a window are load: cap 19 at once.
  BaselineGradientLimit l = StartingAt(20);
  Feed(l, 7, 0, 20 * kMs, 20);
  EXPECT_EQ(Feed(l, 2, 0, 1 * kMs, 20, /*drop=*/true), 20);
  EXPECT_EQ(l.OnSample(0, 1 * kMs, 20, /*did_drop=*/true), 14);
  EXPECT_EQ(l.windows(), 1);
  EXPECT_EQ(l.drop_cap(), 19);
  EXPECT_EQ(l.suspect_level(), 0);
  // However young the window: three drops first, 20 * 0.5.
  BaselineGradientLimit b = StartingAt(20);
  EXPECT_EQ(Feed(b, 3, 0, 1 * kMs, 12, /*drop=*/true), 10);
  EXPECT_EQ(b.drop_cap(), 11);
}

TEST(BaselineGradientLimitTest, AStrayDropIsOnlySuspectUntilItsLevelHolds) {
  BaselineGradientLimit l = StartingAt(8);
  Windows w{l};
  // A connection reset at 8: the limit is cut (8 * 0.9), 8 is suspect.
  EXPECT_EQ(w.Next(20 * kMs, 8, /*drops=*/1), 7);
  EXPECT_EQ(l.suspect_level(), 8);
  // Growth stops at the suspect level until it is tested again ...
  EXPECT_EQ(w.Next(20 * kMs, 7), 8);
  EXPECT_EQ(w.Next(20 * kMs, 8), 9);  // ... and held: no cap, growth resumes
  EXPECT_EQ(l.suspect_level(), 0);
  EXPECT_EQ(l.drop_cap(), 0);
}

TEST(BaselineGradientLimitTest, StaleDropsAreNotSamples) {
  BaselineGradientLimit l = StartingAt(20);
  Feed(l, 10, 0, 10 * kMs, 20, /*drop=*/true);  // -> 10
  ASSERT_EQ(l.limit(), 10);
  // Admitted with 20 in flight, under the old limit: already acted on.
  EXPECT_EQ(Feed(l, 100, 50 * kMs, 10 * kMs, 20, /*drop=*/true), 10);
  EXPECT_EQ(l.windows(), 1);
  // A drop admitted at the new limit is one.
  Feed(l, 10, 100 * kMs, 10 * kMs, 10, /*drop=*/true);
  EXPECT_EQ(l.windows(), 2);
  EXPECT_EQ(l.limit(), 5);
}

TEST(BaselineGradientLimitTest, DropsInAWindowStillAtAHigherLevelHold) {
  BaselineGradientLimit l = StartingAt(20);
  Feed(l, 3, 0, 1 * kMs, 20, /*drop=*/true);  // a burst: -> 10, cap 19
  ASSERT_EQ(l.limit(), 10);
  // Answers to work admitted with 20 in flight, and two drops admitted
  // with 5: the backend is still full of the old level's work. The limit
  // holds (no cut, no growth) and the cap does not move.
  Feed(l, 8, 100 * kMs, 20 * kMs, 20);
  EXPECT_EQ(Feed(l, 2, 100 * kMs, 20 * kMs, 5, /*drop=*/true), 10);
  EXPECT_EQ(l.windows(), 2);
  EXPECT_EQ(l.drop_cap(), 19);
  EXPECT_EQ(l.suspect_level(), 0);
  // Once the window is all at the new level, drops count: 10 * 0.8.
  Feed(l, 8, 200 * kMs, 20 * kMs, 10);
  EXPECT_EQ(Feed(l, 2, 200 * kMs, 20 * kMs, 10, /*drop=*/true), 8);
  EXPECT_EQ(l.suspect_level(), 10);
}

TEST(BaselineGradientLimitTest, DropsWithNothingAnsweredLeaveTheMemory) {
  BaselineGradientLimit l = StartingAt(8);
  Windows w{l};
  EXPECT_EQ(w.Next(20 * kMs, 8, /*drops=*/10), 4);  // a burst: cap 7
  ASSERT_EQ(l.drop_cap(), 7);
  // An outage: every request rejected, window after window. Neither these
  // windows nor the one before them had an answer: the limit is cut, the
  // memory stays.
  EXPECT_EQ(w.Next(20 * kMs, 4, /*drops=*/10), 2);
  EXPECT_EQ(w.Next(20 * kMs, 2, /*drops=*/10), 1);
  EXPECT_EQ(l.drop_cap(), 7);
  EXPECT_EQ(l.suspect_level(), 0);
  // Answers again: growth resumes up to the remembered cap.
  for (int i = 0; i < 10; ++i) w.Next(20 * kMs, l.limit());
  EXPECT_EQ(l.limit(), 7);
}

TEST(BaselineGradientLimitTest, RemembersWhereDropsHappenedAndProbes) {
  BaselineGradientLimit::Options o;
  o.initial_limit = 8;
  o.probe_interval = 3;
  BaselineGradientLimit l = Make(o);
  int64_t t = 0;
  // Feeds one window: 10 answers with the limit in flight, the first
  // `drops` of them rejected (in 1 ms), the others in 20 ms.
  auto window = [&](int drops = 0) {
    const int in_flight = l.limit();
    Feed(l, drops, t, 1 * kMs, in_flight, /*drop=*/true);
    Feed(l, 10 - drops, t, 20 * kMs, in_flight);
    t += 100 * kMs;
    return l.limit();
  };
  // Rejections at 8: 8 * 0.9, and 8 is suspect; back at 8, rejections
  // again: the cap is 7.
  EXPECT_EQ(window(1), 7);
  EXPECT_EQ(l.drop_cap(), 0);
  EXPECT_EQ(window(), 8);
  EXPECT_EQ(window(1), 7);
  EXPECT_EQ(l.drop_cap(), 7);
  EXPECT_EQ(window(), 7);
  EXPECT_EQ(window(), 7);
  EXPECT_FALSE(l.probing());
  // The third window at the cap: the probe raises it to 8.
  EXPECT_EQ(window(), 8);
  EXPECT_TRUE(l.probing());
  EXPECT_EQ(l.drop_cap(), 8);
  // The probe is rejected: back to 7, and the next probe waits twice as
  // long.
  EXPECT_EQ(window(1), 7);
  EXPECT_EQ(l.drop_cap(), 7);
  EXPECT_FALSE(l.probing());
  EXPECT_EQ(l.probe_interval_windows(), 6);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(window(), 7);
  EXPECT_EQ(window(), 8);
  EXPECT_TRUE(l.probing());
  // Three drop-free windows at the raised cap: the capacity grew, the cap
  // goes and growth resumes (8 + 1); the interval is back to 3.
  EXPECT_EQ(window(), 8);
  EXPECT_EQ(window(), 8);
  EXPECT_EQ(window(), 9);
  EXPECT_EQ(l.drop_cap(), 0);
  EXPECT_FALSE(l.probing());
  EXPECT_EQ(l.probe_interval_windows(), 3);
  EXPECT_EQ(window(), 10);
  // Failed probes back off to 16x the interval at most.
  EXPECT_EQ(window(1), 9);  // 10 * 0.9, 10 suspect
  EXPECT_EQ(window(), 10);
  EXPECT_EQ(window(1), 9);  // cap 9
  for (int probe = 0; probe < 6; ++probe) {
    while (!l.probing()) window();
    window(1);
  }
  EXPECT_EQ(l.probe_interval_windows(), 48);
  EXPECT_EQ(l.drop_cap(), 9);
  EXPECT_EQ(l.limit(), 9);
}

TEST(BaselineGradientLimitTest, WindowsBelowTheCapDoNotCountTowardAProbe) {
  BaselineGradientLimit::Options o;
  o.initial_limit = 8;
  o.probe_interval = 2;
  BaselineGradientLimit l = Make(o);
  Windows w{l};
  w.Next(20 * kMs, 8, /*drops=*/10);  // a burst: -> 4, cap 7
  ASSERT_EQ(l.drop_cap(), 7);
  // Two in flight: too little load to test the cap.
  for (int i = 0; i < 10; ++i) w.Next(20 * kMs, 2);
  EXPECT_EQ(l.drop_cap(), 7);
  EXPECT_FALSE(l.probing());
}

TEST(BaselineGradientLimitTest, BacksOffOnDropsWhateverTheLatency) {
  BaselineGradientLimit l = StartingAt(20);
  Feed(l, 10, 0, 20 * kMs, 20);  // 25
  // A window holding one drop among 10: 25 * 0.9 = 22.5, even at baseline
  // latency.
  Feed(l, 8, 20 * kMs, 20 * kMs, 25);
  EXPECT_EQ(l.OnSample(40 * kMs, 1 * kMs, 25, /*did_drop=*/true), 25);
  EXPECT_EQ(Feed(l, 1, 60 * kMs, 20 * kMs, 25), 22);
  EXPECT_FALSE(l.slow_start());
  EXPECT_EQ(l.suspect_level(), 25);
}

TEST(BaselineGradientLimitTest, AppLimitedWindowsLeaveTheLimit) {
  BaselineGradientLimit l = StartingAt(20);
  Windows w{l};
  // 9 in flight against a limit of 20: too little load to learn from.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(w.Next(20 * kMs, 9), 20);
  EXPECT_EQ(l.windows(), 5);
  // But a latency excess still cuts.
  EXPECT_EQ(w.Next(40 * kMs, 9), 20);
  EXPECT_EQ(w.Next(40 * kMs, 9), 12);  // 20 * 24 / 40
}

TEST(BaselineGradientLimitTest, ClampsAndValidates) {
  BaselineGradientLimit::Options o;
  o.initial_limit = 4;
  o.min_limit = 2;
  o.max_limit = 6;
  BaselineGradientLimit l = Make(o);
  EXPECT_EQ(Feed(l, 10, 0, 20 * kMs, 4), 5);
  EXPECT_EQ(Feed(l, 10, 100 * kMs, 20 * kMs, 5), 6);  // 6.25 clamped to 6
  for (int w = 0; w < 10; ++w) {
    Feed(l, 10, (200 + 100 * w) * kMs, 20 * kMs, l.limit(), /*drop=*/true);
  }
  EXPECT_EQ(l.limit(), 2);
  // Only the first of those windows moved the cap (6 - 1): the others had
  // no answer and neither had the one before (below).
  EXPECT_EQ(l.drop_cap(), 5);

  o = {};
  o.tolerance = 0;
  EXPECT_THAT(BaselineGradientLimit::Validate(o).message(),
              HasSubstr("tolerance"));
  o = {};
  o.backoff_ratio = 1.0;
  EXPECT_THAT(BaselineGradientLimit::Validate(o).message(),
              HasSubstr("backoff_ratio"));
  o = {};
  o.growth = 0;
  EXPECT_THAT(BaselineGradientLimit::Validate(o).message(),
              HasSubstr("growth"));
  o = {};
  o.slow_start_growth = 1.5;
  EXPECT_THAT(BaselineGradientLimit::Validate(o).message(),
              HasSubstr("slow_start_growth"));
  o = {};
  o.probe_interval = 0;
  EXPECT_THAT(BaselineGradientLimit::Validate(o).message(),
              HasSubstr("probe_interval"));
  o = {};
  o.max_window_ns = o.min_window_ns - 1;
  EXPECT_THAT(BaselineGradientLimit::Validate(o).message(),
              HasSubstr("min_window_ns"));
  o = {};
  o.initial_limit = 2000;
  EXPECT_THAT(BaselineGradientLimit::Validate(o).message(),
              HasSubstr("initial_limit"));
}

TEST(BaselineGradientLimitTest, BaselineFollowsAGenuineRiseWithinTwoPeriods) {
  BaselineGradientLimit::Options o;
  o.baseline_period = 3;
  BaselineGradientLimit l = Make(o);
  Windows w{l};
  w.Baseline(20 * kMs);  // app-limited windows: only the baseline moves
  EXPECT_DOUBLE_EQ(l.baseline_rtt_ns(), 20.0 * kMs);
  // The backend got slower for good: the old minimum stays for a while,
  // then is gone, and the smoothed median converges to the new latency.
  w.Next(50 * kMs, 1);
  EXPECT_DOUBLE_EQ(l.baseline_rtt_ns(), 20.0 * kMs);
  for (int i = 0; i < 20; ++i) w.Next(50 * kMs, 1);
  EXPECT_NEAR(l.baseline_rtt_ns(), 50.0 * kMs, 0.5 * kMs);
}

}  // namespace baseline_gradient

}  // namespace
}  // namespace caudal
