#include "caudal/concurrency/adaptive_limiter.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

struct Sample {
  int64_t start_ns, rtt_ns;
  int inflight;
  bool did_drop;
};

// Records samples; the limit is whatever the test sets.
class ScriptedLimit : public LimitAlgorithm {
 public:
  ScriptedLimit(int limit, std::vector<Sample>* samples)
      : limit_(limit), samples_(samples) {}
  int OnSample(int64_t start_ns, int64_t rtt_ns, int inflight,
               bool did_drop) override {
    samples_->push_back({start_ns, rtt_ns, inflight, did_drop});
    return limit_;
  }
  int limit() const override { return limit_; }
  int limit_;

 private:
  std::vector<Sample>* samples_;
};

class AdaptiveLimiterTest : public ::testing::Test {
 protected:
  AdaptiveLimiter<int> Make(std::unique_ptr<LimitAlgorithm> algorithm) {
    return AdaptiveLimiter<int>(std::move(algorithm),
                                [this](int w) { woken_.push_back(w); });
  }
  std::vector<int> woken_;
};

TEST_F(AdaptiveLimiterTest, VerdictsFeedSamplesAndReleaseThePermit) {
  std::vector<Sample> samples;
  AdaptiveLimiter<int> limiter(std::make_unique<ScriptedLimit>(2, &samples),
                               [this](int w) { woken_.push_back(w); });
  auto a = limiter.TryAcquire(100);
  auto b = limiter.TryAcquire(110);
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(limiter.TryAcquire(120), std::nullopt);
  EXPECT_EQ(a->inflight(), 1);
  EXPECT_EQ(b->inflight(), 2);

  a->OnSuccess(150);
  EXPECT_FALSE(a->valid());
  EXPECT_EQ(limiter.in_flight(), 1);
  b->OnDropped(400);
  EXPECT_EQ(limiter.in_flight(), 0);
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].start_ns, 100);
  EXPECT_EQ(samples[0].rtt_ns, 50);
  EXPECT_EQ(samples[0].inflight, 1);
  EXPECT_FALSE(samples[0].did_drop);
  EXPECT_EQ(samples[1].rtt_ns, 290);
  EXPECT_TRUE(samples[1].did_drop);

  a->OnSuccess(999);  // a second verdict does nothing
  EXPECT_EQ(samples.size(), 2u);
  EXPECT_EQ(limiter.in_flight(), 0);
}

TEST_F(AdaptiveLimiterTest, DroppedPermitIsIgnoredNotCountedAsSuccess) {
  std::vector<Sample> samples;
  auto limiter = Make(std::make_unique<ScriptedLimit>(1, &samples));
  {
    auto p = limiter.TryAcquire(0);
    ASSERT_TRUE(p.has_value());
    AdaptiveLimiter<int>::Permit moved =
        std::move(*p);  // moving transfers, never double-releases
    EXPECT_FALSE(p->valid());
    EXPECT_TRUE(moved.valid());
    EXPECT_EQ(limiter.in_flight(), 1);
  }
  EXPECT_EQ(limiter.in_flight(), 0);
  EXPECT_THAT(samples, IsEmpty());
}

TEST_F(AdaptiveLimiterTest, ReleaseHandsThePermitToTheNextWaiter) {
  std::vector<Sample> samples;
  auto limiter = Make(std::make_unique<ScriptedLimit>(1, &samples));
  auto p = limiter.TryAcquire(0);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(limiter.AcquireOrEnqueue(7, 0), std::nullopt);
  EXPECT_EQ(limiter.AcquireOrEnqueue(8, 0), std::nullopt);
  p->Ignore();
  EXPECT_THAT(woken_, ElementsAre(7));
  EXPECT_EQ(limiter.in_flight(), 1);
  // 7 wakes up with the permit, runs, succeeds: 8 is next.
  auto handed = limiter.AdoptHandoff(50);
  handed.OnSuccess(80);
  EXPECT_THAT(woken_, ElementsAre(7, 8));
  EXPECT_EQ(samples.back().rtt_ns, 30);
  // 8 gives up, but it already holds the permit: Cancel says so, and the
  // adopted permit is ignored.
  EXPECT_FALSE(limiter.Cancel(8));
  limiter.AdoptHandoff(90).Ignore();
  EXPECT_EQ(limiter.in_flight(), 0);
}

TEST_F(AdaptiveLimiterTest, AimdGrowthWakesWaitersAndDropsShrinkTheLimit) {
  AimdLimit::Options o;
  o.initial_limit = 1;
  o.max_limit = 10;
  auto aimd = AimdLimit::Create(o);
  ASSERT_TRUE(aimd.ok());
  auto limiter = Make(std::make_unique<AimdLimit>(*aimd));
  auto p = limiter.TryAcquire(0);
  ASSERT_TRUE(p.has_value());
  ASSERT_EQ(limiter.AcquireOrEnqueue(1, 0), std::nullopt);
  ASSERT_EQ(limiter.AcquireOrEnqueue(2, 0), std::nullopt);
  // Success with inflight 1: 1 * 2 >= 1, so AIMD raises the limit to 2.
  // The raise hands a permit to waiter 1, the release one to waiter 2.
  p->OnSuccess(10);
  EXPECT_EQ(limiter.limit(), 2);
  EXPECT_THAT(woken_, ElementsAre(1, 2));
  EXPECT_EQ(limiter.in_flight(), 2);
  EXPECT_EQ(limiter.waiting(), 0);
  // A drop: floor(2 * 0.9) = 1.
  limiter.AdoptHandoff(10).OnDropped(20);
  EXPECT_EQ(limiter.limit(), 1);
  limiter.AdoptHandoff(10).Ignore();
  EXPECT_EQ(limiter.in_flight(), 0);
}

// Threads acquire, queue, cancel and give verdicts while Gradient moves the
// limit. The waker runs on the releasing thread, so it just flags the
// waiter; nothing is held at the end.
TEST_F(AdaptiveLimiterTest, StressLeavesNothingHeld) {
  constexpr int kThreads = 4;
  constexpr int kOps = 3000;
  std::vector<std::atomic<bool>> handed(kThreads * kOps);
  GradientLimit::Options go;
  go.initial_limit = 2;
  go.min_limit = 1;
  go.max_limit = 6;
  auto gradient = GradientLimit::Create(go);
  ASSERT_TRUE(gradient.ok());
  AdaptiveLimiter<int> limiter(
      std::make_unique<GradientLimit>(*std::move(gradient)),
      [&](int w) { handed[w].store(true); });
  std::atomic<int64_t> clock{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kOps; ++i) {
        const int id = t * kOps + i;
        const int64_t now = clock.fetch_add(1);
        std::optional<AdaptiveLimiter<int>::Permit> p = limiter.TryAcquire(now);
        if (!p) p = limiter.AcquireOrEnqueue(id, now);
        if (!p) {
          if (i % 3 == 0 && limiter.Cancel(id)) continue;
          while (!handed[id].load()) std::this_thread::yield();
          p = limiter.AdoptHandoff(clock.load());
        }
        const int64_t end = clock.fetch_add(1 + (i % 7) * 10);
        switch (i % 4) {
          case 0:
            p->OnDropped(end);
            break;
          case 1:
            break;  // dropped without a verdict: ignored
          default:
            p->OnSuccess(end);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(limiter.in_flight(), 0);
  EXPECT_EQ(limiter.waiting(), 0);
  EXPECT_GE(limiter.limit(), 1);
  EXPECT_LE(limiter.limit(), 6);
}

}  // namespace
}  // namespace caudal
