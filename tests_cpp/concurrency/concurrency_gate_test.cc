#include "caudal/concurrency/concurrency_gate.h"

#include <atomic>
#include <cstdint>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Optional;

TEST(ConcurrencyGateTest, FastPathUpToTheLimit) {
  ConcurrencyGate<int> gate(2);
  EXPECT_TRUE(gate.TryAcquire());
  EXPECT_TRUE(gate.TryAcquire());
  EXPECT_FALSE(gate.TryAcquire());
  EXPECT_EQ(gate.in_flight(), 2);
  EXPECT_EQ(gate.Release(), std::nullopt);
  EXPECT_EQ(gate.in_flight(), 1);
  EXPECT_TRUE(gate.TryAcquire());
  EXPECT_EQ(gate.counters().acquired, 3);
  EXPECT_EQ(gate.counters().waited, 0);
}

TEST(ConcurrencyGateTest, AcquireOrEnqueueTakesAFreePermit) {
  ConcurrencyGate<int> gate(1);
  EXPECT_TRUE(gate.AcquireOrEnqueue(7));
  EXPECT_EQ(gate.in_flight(), 1);
  EXPECT_EQ(gate.waiting(), 0);
}

TEST(ConcurrencyGateTest, WaitersAreServedInFifoOrderByHandoff) {
  ConcurrencyGate<int> gate(1);
  ASSERT_TRUE(gate.TryAcquire());
  EXPECT_FALSE(gate.AcquireOrEnqueue(1));
  EXPECT_FALSE(gate.AcquireOrEnqueue(2));
  EXPECT_FALSE(gate.AcquireOrEnqueue(3));
  EXPECT_EQ(gate.waiting(), 3);
  // Each release hands the permit to the next waiter: in_flight stays 1.
  EXPECT_THAT(gate.Release(), Optional(1));
  EXPECT_EQ(gate.in_flight(), 1);
  EXPECT_THAT(gate.Release(), Optional(2));
  EXPECT_THAT(gate.Release(), Optional(3));
  EXPECT_EQ(gate.waiting(), 0);
  EXPECT_EQ(gate.in_flight(), 1);
  EXPECT_EQ(gate.Release(), std::nullopt);
  EXPECT_EQ(gate.in_flight(), 0);
  const GateCounters c = gate.counters();
  EXPECT_EQ(c.acquired, 4);
  EXPECT_EQ(c.waited, 3);
  EXPECT_EQ(c.max_waiting, 3);
}

TEST(ConcurrencyGateTest, NoBargingPastQueuedWaiters) {
  ConcurrencyGate<int> gate(1);
  ASSERT_TRUE(gate.TryAcquire());
  ASSERT_FALSE(gate.AcquireOrEnqueue(1));
  ASSERT_THAT(gate.Release(), Optional(1));  // 1 now holds the permit
  EXPECT_FALSE(gate.TryAcquire());
  EXPECT_FALSE(gate.AcquireOrEnqueue(2));  // queues behind, no permit taken
  EXPECT_EQ(gate.in_flight(), 1);
}

TEST(ConcurrencyGateTest, CancelBeforeHandoffLeavesNothingHeld) {
  ConcurrencyGate<int> gate(1);
  ASSERT_TRUE(gate.TryAcquire());
  ASSERT_FALSE(gate.AcquireOrEnqueue(1));
  ASSERT_FALSE(gate.AcquireOrEnqueue(2));
  EXPECT_TRUE(gate.Cancel(1));
  EXPECT_FALSE(gate.Cancel(1));  // already gone
  EXPECT_EQ(gate.waiting(), 1);
  EXPECT_THAT(gate.Release(), Optional(2));  // 1 is skipped
  EXPECT_EQ(gate.Release(), std::nullopt);
  EXPECT_EQ(gate.in_flight(), 0);
  EXPECT_EQ(gate.counters().cancelled, 1);
}

TEST(ConcurrencyGateTest, CancelAfterHandoffMeansTheCallerReleases) {
  ConcurrencyGate<int> gate(1);
  ASSERT_TRUE(gate.TryAcquire());
  ASSERT_FALSE(gate.AcquireOrEnqueue(1));
  ASSERT_THAT(gate.Release(), Optional(1));
  // The waiter gives up just as it was handed the permit: Cancel says no,
  // so the waiter owns a permit and gives it back. Nothing leaks.
  EXPECT_FALSE(gate.Cancel(1));
  EXPECT_EQ(gate.in_flight(), 1);
  EXPECT_EQ(gate.Release(), std::nullopt);
  EXPECT_EQ(gate.in_flight(), 0);
  EXPECT_EQ(gate.counters().cancelled, 0);
}

TEST(ConcurrencyGateTest, CancelOfTheLastWaiterFreesTheFastPath) {
  ConcurrencyGate<int> gate(1);
  ASSERT_TRUE(gate.TryAcquire());
  ASSERT_FALSE(gate.AcquireOrEnqueue(1));
  ASSERT_TRUE(gate.Cancel(1));
  EXPECT_EQ(gate.Release(), std::nullopt);  // lock-free path again
  EXPECT_TRUE(gate.TryAcquire());
}

TEST(ConcurrencyGateTest, RaisingTheLimitWakesWaitersInOrder) {
  ConcurrencyGate<int> gate(1);
  ASSERT_TRUE(gate.TryAcquire());
  for (int w = 1; w <= 4; ++w) ASSERT_FALSE(gate.AcquireOrEnqueue(w));
  EXPECT_THAT(gate.SetLimit(3), ElementsAre(1, 2));
  EXPECT_EQ(gate.limit(), 3);
  EXPECT_EQ(gate.in_flight(), 3);
  EXPECT_EQ(gate.waiting(), 2);
  EXPECT_THAT(gate.SetLimit(3), IsEmpty());
}

TEST(ConcurrencyGateTest, LoweringTheLimitDrainsWithoutHandoff) {
  ConcurrencyGate<int> gate(3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(gate.TryAcquire());
  ASSERT_FALSE(gate.AcquireOrEnqueue(9));
  EXPECT_THAT(gate.SetLimit(1), IsEmpty());
  // in_flight 3 > limit 1: releases shrink in_flight first (3 -> 2 -> 1)...
  EXPECT_EQ(gate.Release(), std::nullopt);
  EXPECT_EQ(gate.Release(), std::nullopt);
  EXPECT_EQ(gate.in_flight(), 1);
  // ...and only the release that would free a slot under the new limit
  // hands it over.
  EXPECT_THAT(gate.Release(), Optional(9));
  EXPECT_EQ(gate.in_flight(), 1);
  EXPECT_EQ(gate.Release(), std::nullopt);
  EXPECT_EQ(gate.in_flight(), 0);
}

TEST(ConcurrencyGateTest, ZeroLimitQueuesEveryone) {
  ConcurrencyGate<int> gate(-5);
  EXPECT_EQ(gate.limit(), 0);
  EXPECT_FALSE(gate.TryAcquire());
  EXPECT_FALSE(gate.AcquireOrEnqueue(1));
  EXPECT_THAT(gate.SetLimit(1), ElementsAre(1));
}

TEST(ConcurrencyGateTest, PointerHandles) {
  ConcurrencyGate<void*> gate(0);
  int a = 0;
  EXPECT_FALSE(gate.AcquireOrEnqueue(&a));
  EXPECT_THAT(gate.SetLimit(1), ElementsAre(&a));
}

TEST(ConcurrencyGateTest, AcquisitionCountSurvivesTheFastPathCounterWrapping) {
  // The fast path counts in 16 bits of the state word; the wraps are carried.
  ConcurrencyGate<int> gate(2);
  constexpr int kRounds = 3 * 65536 + 17;
  for (int i = 0; i < kRounds; ++i) {
    ASSERT_TRUE(gate.TryAcquire());
    ASSERT_FALSE(gate.Release().has_value());
  }
  EXPECT_EQ(gate.counters().acquired, kRounds);
  EXPECT_EQ(gate.in_flight(), 0);
  EXPECT_EQ(gate.waiting(), 0);
  ASSERT_TRUE(gate.AcquireOrEnqueue(-1));  // slow path, a permit is free
  EXPECT_EQ(gate.counters().acquired, kRounds + 1);
  EXPECT_EQ(gate.in_flight(), 1);
  gate.Release();
}

// Threads hammer one gate: fast path, slow path, cancels and limit changes.
// Each waiter is served (handed a permit) or cancelled, never both, and at
// the end nothing is held and nothing waits. Permit holders never exceed the
// largest limit ever set.
TEST(ConcurrencyGateTest, StressEveryWaiterServedOrCancelledNeverBoth) {
  constexpr int kThreads = 4;
  constexpr int kOpsPerThread = 4000;
  constexpr int kMaxLimit = 3;
  ConcurrencyGate<int> gate(2);

  enum : int { kQueued = 0, kServed = 1 };
  std::vector<std::atomic<int>> served(kThreads * kOpsPerThread);
  std::vector<std::atomic<bool>> cancelled(kThreads * kOpsPerThread);
  std::atomic<int> holders{0};
  std::atomic<int> max_holders{0};
  std::atomic<int64_t> enqueued{0};

  // "Waking" a waiter: mark it served; the waiting thread now owns a permit.
  auto wake = [&](int id) {
    ASSERT_EQ(served[id].exchange(kServed), kQueued) << "woken twice: " << id;
  };
  auto hold_and_release = [&](std::mt19937& rng) {
    const int h = holders.fetch_add(1) + 1;
    int seen = max_holders.load();
    while (h > seen && !max_holders.compare_exchange_weak(seen, h)) {
    }
    if (rng() % 4 == 0) std::this_thread::yield();
    holders.fetch_sub(1);
    if (std::optional<int> next = gate.Release()) wake(*next);
  };

  // The main thread holds both permits until some thread has queued, so the
  // slow path is exercised however the threads happen to be scheduled (a
  // sanitizer build may run them one after another).
  ASSERT_TRUE(gate.TryAcquire());
  ASSERT_TRUE(gate.TryAcquire());
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t + 1);
      for (int i = 0; i < kOpsPerThread; ++i) {
        const int id = t * kOpsPerThread + i;
        if (t == 0 && i % 500 == 499) {
          for (int w : gate.SetLimit(1 + static_cast<int>(rng() % kMaxLimit))) {
            wake(w);
          }
        }
        if (gate.TryAcquire() || gate.AcquireOrEnqueue(id)) {
          hold_and_release(rng);
          continue;
        }
        enqueued.fetch_add(1);
        // Wait a little, then maybe give up.
        const int patience = static_cast<int>(rng() % 64);
        for (int spin = 0; spin < patience && served[id].load() == kQueued;
             ++spin) {
          std::this_thread::yield();
        }
        if (served[id].load() == kQueued && rng() % 2 == 0 && gate.Cancel(id)) {
          cancelled[id] = true;
          continue;
        }
        // Either served already, or Cancel lost the race / was not tried:
        // the permit is (or will shortly be) ours.
        while (served[id].load() == kQueued) std::this_thread::yield();
        hold_and_release(rng);
      }
    });
  }
  while (gate.counters().waited == 0) std::this_thread::yield();
  for (int k = 0; k < 2; ++k) {
    if (std::optional<int> next = gate.Release()) wake(*next);
  }
  for (auto& th : threads) th.join();
  // A final raise flushes anyone still queued (there should be no one).
  EXPECT_THAT(gate.SetLimit(kMaxLimit), IsEmpty());

  EXPECT_EQ(gate.in_flight(), 0);
  EXPECT_EQ(gate.waiting(), 0);
  EXPECT_LE(max_holders.load(), kMaxLimit);
  int64_t n_served = 0, n_cancelled = 0;
  for (int id = 0; id < kThreads * kOpsPerThread; ++id) {
    const bool s = served[id].load() == kServed;
    const bool c = cancelled[id].load();
    EXPECT_FALSE(s && c) << "waiter " << id << " served and cancelled";
    n_served += s;
    n_cancelled += c;
  }
  EXPECT_EQ(n_served + n_cancelled, enqueued.load());
  const GateCounters counters = gate.counters();
  EXPECT_EQ(counters.waited, enqueued.load());
  EXPECT_EQ(counters.cancelled, n_cancelled);
  // (+2: the main thread's two permits.)
  EXPECT_EQ(counters.acquired,
            int64_t{kThreads} * kOpsPerThread - n_cancelled + 2);
  EXPECT_GT(counters.waited, 0);  // the slow path was exercised
}

}  // namespace
}  // namespace caudal
