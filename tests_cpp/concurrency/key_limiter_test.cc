#include "caudal/concurrency/key_limiter.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace caudal {
namespace {

constexpr int64_t kMs = 1'000'000;

LimiterWaiter W(int id) { return std::make_shared<int>(id); }
int Id(const LimiterWaiter& w) { return *static_cast<int*>(w.get()); }

BaselineGradientLimit::Options Adaptive(int initial = 2) {
  BaselineGradientLimit::Options o;
  o.initial_limit = initial;
  o.min_samples = 2;
  return o;
}

TEST(KeyLimiterTest, FixedLimitIsFifoAndIgnoresSamples) {
  KeyLimiter l("db", KeyLimiter::Mode::kFixed, 1, Adaptive());
  ASSERT_TRUE(l.TryAcquire());
  LimiterWaiter a = W(1), b = W(2);
  EXPECT_FALSE(l.AcquireOrEnqueue(a));
  EXPECT_FALSE(l.AcquireOrEnqueue(b));
  EXPECT_TRUE(l.Sample(0, 50 * kMs, 1, true, 50 * kMs).empty());
  EXPECT_EQ(l.limit(), 1);
  auto next = l.Release();
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(Id(*next), 1);
  EXPECT_TRUE(l.Cancel(b));  // b leaves the queue holding nothing
  EXPECT_FALSE(l.Release().has_value());
  EXPECT_EQ(l.in_flight(), 0);
  EXPECT_EQ(l.snapshot().counters.cancelled, 1);
}

TEST(KeyLimiterTest, AdaptiveSamplesRaiseTheLimitAndWakeWaiters) {
  std::vector<LimitChange> seen;
  KeyLimiter l("api", KeyLimiter::Mode::kAdaptive, 0, Adaptive(2),
               [&](const LimitChange& c) { seen.push_back(c); });
  ASSERT_TRUE(l.TryAcquire());
  ASSERT_TRUE(l.TryAcquire());
  LimiterWaiter a = W(1), b = W(2), c = W(3);
  EXPECT_FALSE(l.AcquireOrEnqueue(a));
  EXPECT_FALSE(l.AcquireOrEnqueue(b));
  EXPECT_FALSE(l.AcquireOrEnqueue(c));
  // Two samples at 20 ms with 2 in flight close a window in slow start:
  // 2 -> 3, handing the new permit to the first waiter.
  EXPECT_TRUE(l.Sample(0, 20 * kMs, 2, false, 20 * kMs).empty());
  std::vector<LimiterWaiter> woken = l.Sample(0, 20 * kMs, 2, false, 20 * kMs);
  ASSERT_EQ(woken.size(), 1u);
  EXPECT_EQ(Id(woken[0]), 1);
  EXPECT_EQ(l.limit(), 3);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].key, "api");
  EXPECT_EQ(seen[0].from, 2);
  EXPECT_EQ(seen[0].to, 3);
  EXPECT_EQ(seen[0].at_ns, 20 * kMs);
  EXPECT_EQ(seen[0].in_flight, 2);
  EXPECT_EQ(seen[0].waiting, 3);
  const auto history = l.history();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].to, 3);
  const KeyLimiter::Snapshot s = l.snapshot();
  EXPECT_EQ(s.samples, 2);
  EXPECT_EQ(s.changes, 1);
  EXPECT_EQ(s.windows, 1);
  EXPECT_DOUBLE_EQ(s.baseline_rtt_ns, 0.0);  // none in the warm-up windows
  EXPECT_EQ(l.waiting(), 2);
}

TEST(KeyLimiterTest, FastSuccessesAreNotSamples) {
  KeyLimiter l("fast", KeyLimiter::Mode::kAdaptive, 0, Adaptive(2));
  for (int i = 0; i < 100; ++i) l.Sample(0, 10'000, 2, false, 10'000);
  EXPECT_EQ(l.snapshot().samples, 0);
  EXPECT_EQ(l.limit(), 2);
}

// A key that only ever sees fast attempts at low concurrency goes dormant:
// executions skip the permit, one in kProbeEvery still samples.
TEST(KeyLimiterTest, FastKeysGoDormantAndProbe) {
  KeyLimiter l("fast", KeyLimiter::Mode::kAdaptive, 0, Adaptive(20));
  for (int i = 0; i < KeyLimiter::kDormantAfter - 1; ++i) {
    EXPECT_FALSE(l.TryBypass());
    l.Sample(0, 10'000, 1, false, 10'000);
  }
  EXPECT_FALSE(l.dormant());
  l.Sample(0, 10'000, 1, false, 10'000);
  EXPECT_TRUE(l.dormant());
  EXPECT_TRUE(l.snapshot().dormant);
  int bypassed = 0, probes = 0;
  for (uint32_t i = 0; i < 2 * KeyLimiter::kProbeEvery; ++i) {
    if (l.TryBypass()) {
      ++bypassed;
      l.EndBypass();
    } else {
      ++probes;  // takes the permit and samples as usual
      ASSERT_TRUE(l.TryAcquire());
      l.Sample(0, 10'000, 1, false, 10'000);
      l.Release();
    }
  }
  EXPECT_EQ(probes, 2);
  EXPECT_EQ(bypassed, 2 * static_cast<int>(KeyLimiter::kProbeEvery) - 2);
  EXPECT_EQ(l.in_flight(), 0);
}

TEST(KeyLimiterTest, SlowSamplesDropsAndBurstsWakeADormantKey) {
  auto dormant = [] {
    auto l = std::make_unique<KeyLimiter>("k", KeyLimiter::Mode::kAdaptive, 0,
                                          Adaptive(20));
    for (int i = 0; i < KeyLimiter::kDormantAfter; ++i)
      l->Sample(0, 10'000, 1, false, 10'000);
    return l;
  };
  auto slow = dormant();
  ASSERT_TRUE(slow->dormant());
  slow->Sample(0, 5 * kMs, 1, false, 5 * kMs);  // a slow probe
  EXPECT_FALSE(slow->dormant());
  auto dropped = dormant();
  dropped->Sample(0, 10'000, 1, /*drop=*/true, 10'000);
  EXPECT_FALSE(dropped->dormant());
  // A burst: executions pile up without finishing; at kWakeInFlight the
  // key permits again.
  auto burst = dormant();
  int admitted = 0;
  for (int i = 0; i < 100 && burst->dormant(); ++i) {
    if (burst->TryBypass()) ++admitted;  // (the first call is a probe)
  }
  EXPECT_EQ(admitted, KeyLimiter::kWakeInFlight);
  EXPECT_FALSE(burst->dormant());
  // Concurrency at admission above kDormantMaxInFlight never counts.
  KeyLimiter busy("busy", KeyLimiter::Mode::kAdaptive, 0, Adaptive(20));
  for (int i = 0; i < 10 * KeyLimiter::kDormantAfter; ++i)
    busy.Sample(0, 10'000, KeyLimiter::kDormantMaxInFlight + 1, false, 10'000);
  EXPECT_FALSE(busy.dormant());
  // Fixed limits never go dormant.
  KeyLimiter fixed("fixed", KeyLimiter::Mode::kFixed, 3, Adaptive());
  for (int i = 0; i < 10 * KeyLimiter::kDormantAfter; ++i)
    fixed.Sample(0, 10'000, 1, false, 10'000);
  EXPECT_FALSE(fixed.dormant());
  EXPECT_FALSE(fixed.TryBypass());
}

TEST(KeyLimiterTest, ConfigureWakesADormantKey) {
  KeyLimiter l("k", KeyLimiter::Mode::kAdaptive, 0, Adaptive(20));
  for (int i = 0; i < KeyLimiter::kDormantAfter; ++i)
    l.Sample(0, 10'000, 1, false, 10'000);
  ASSERT_TRUE(l.dormant());
  l.Configure(KeyLimiter::Mode::kFixed, 5, Adaptive(20), 0);
  EXPECT_FALSE(l.dormant());
}

TEST(KeyLimiterTest, ConfigureSwitchesModesAndWakesWaiters) {
  KeyLimiter l("k", KeyLimiter::Mode::kFixed, 1, Adaptive(3));
  ASSERT_TRUE(l.TryAcquire());
  LimiterWaiter a = W(1), b = W(2);
  EXPECT_FALSE(l.AcquireOrEnqueue(a));
  EXPECT_FALSE(l.AcquireOrEnqueue(b));
  // Adaptive starting at 3: two more permits, handed out in order.
  auto woken = l.Configure(KeyLimiter::Mode::kAdaptive, 0, Adaptive(3), 5);
  ASSERT_EQ(woken.size(), 2u);
  EXPECT_EQ(Id(woken[0]), 1);
  EXPECT_EQ(l.mode(), KeyLimiter::Mode::kAdaptive);
  EXPECT_EQ(l.limit(), 3);
  // Unlimited: nobody waits any more; permits in flight drain normally.
  l.Configure(KeyLimiter::Mode::kUnlimited, 0, Adaptive(3), 6);
  EXPECT_EQ(l.limit(), KeyLimiter::kUnlimited);
  EXPECT_TRUE(l.TryAcquire());
  // Lowering never revokes permits.
  l.Configure(KeyLimiter::Mode::kFixed, 1, Adaptive(3), 7);
  EXPECT_EQ(l.in_flight(), 4);
  LimiterWaiter c = W(3);
  EXPECT_FALSE(l.AcquireOrEnqueue(c));
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(l.Release().has_value());
  auto next = l.Release();  // the last one frees a slot under the limit of 1
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(Id(*next), 3);
  EXPECT_EQ(l.history().size(), 3u);
}

TEST(KeyLimiterTest, HistoryIsBounded) {
  KeyLimiter l("h", KeyLimiter::Mode::kFixed, 1, Adaptive());
  for (int i = 0; i < 2 * static_cast<int>(KeyLimiter::kHistory); ++i) {
    l.Configure(KeyLimiter::Mode::kFixed, 1 + (i % 2), Adaptive(), i);
  }
  EXPECT_EQ(l.history().size(), KeyLimiter::kHistory);
  // The first call asks for the limit it already has: no change.
  EXPECT_EQ(l.snapshot().changes,
            2 * static_cast<int64_t>(KeyLimiter::kHistory) - 1);
}

TEST(KeyLimiterTest, ConcurrentSamplersAndAcquirersNeverExceedTheLimit) {
  KeyLimiter l("stress", KeyLimiter::Mode::kAdaptive, 0, Adaptive(4));
  std::atomic<int> inside{0};
  std::atomic<int> worst{0};
  std::atomic<int64_t> clock{0};
  std::atomic<bool> over_limit{false};
  auto worker = [&] {
    for (int i = 0; i < 20000; ++i) {
      if (!l.TryAcquire()) continue;
      const int now_inside = inside.fetch_add(1) + 1;
      int w = worst.load();
      while (now_inside > w && !worst.compare_exchange_weak(w, now_inside)) {
      }
      // Permits beyond the current limit only exist after a cut.
      if (now_inside > KeyLimiter::kUnlimited) over_limit = true;
      const int64_t t = clock.fetch_add(kMs);
      inside.fetch_sub(1);
      for (auto& w2 : l.Sample(t, 20 * kMs, now_inside, i % 97 == 0, t)) {
        (void)w2;
      }
      l.Release();
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  EXPECT_FALSE(over_limit.load());
  EXPECT_EQ(l.in_flight(), 0);
  EXPECT_LE(worst.load(), 4);  // 4 threads
  EXPECT_GT(l.snapshot().samples, 0);
}

TEST(LimiterRegistryTest, OneLimiterPerKey) {
  LimiterRegistry r;
  KeyLimiter* a = r.GetOrCreate("a", KeyLimiter::Mode::kFixed, 2, Adaptive());
  EXPECT_EQ(r.GetOrCreate("a", KeyLimiter::Mode::kAdaptive, 0, Adaptive()), a);
  EXPECT_EQ(a->mode(), KeyLimiter::Mode::kFixed);
  EXPECT_EQ(r.Find("a"), a);
  EXPECT_EQ(r.Find("b"), nullptr);
  r.GetOrCreate("b", KeyLimiter::Mode::kUnlimited, 0, Adaptive());
  EXPECT_EQ(r.All().size(), 2u);
}

}  // namespace
}  // namespace caudal
