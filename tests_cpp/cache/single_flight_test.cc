#include "caudal/cache/single_flight.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

Key128 K(uint64_t i) { return Key128{i * 0x9e3779b97f4a7c15ULL, i}; }

TEST(SingleFlightTest, FirstLeadsOthersFollowInOrder) {
  SingleFlight<int> f;
  EXPECT_FALSE(f.InFlight(K(1)));
  EXPECT_TRUE(f.JoinOrLead(K(1), 100));  // leader; 100 is not kept
  EXPECT_TRUE(f.InFlight(K(1)));
  EXPECT_FALSE(f.JoinOrLead(K(1), 2));
  EXPECT_FALSE(f.JoinOrLead(K(1), 3));
  EXPECT_FALSE(f.JoinOrLead(K(1), 1));
  EXPECT_EQ(f.size(), 1u);
  EXPECT_THAT(f.Finish(K(1)), ElementsAre(2, 3, 1));
  EXPECT_FALSE(f.InFlight(K(1)));
  EXPECT_EQ(f.size(), 0u);
  // A new flight starts afresh.
  EXPECT_TRUE(f.JoinOrLead(K(1), 4));
  EXPECT_THAT(f.Finish(K(1)), IsEmpty());
}

TEST(SingleFlightTest, KeysAreIndependent) {
  SingleFlight<int> f(4);
  EXPECT_TRUE(f.JoinOrLead(K(1), 0));
  EXPECT_TRUE(f.JoinOrLead(K(2), 0));
  EXPECT_TRUE(f.JoinOrLead(K(5), 0));  // same shard as K(1) with 4 shards
  EXPECT_FALSE(f.JoinOrLead(K(2), 7));
  EXPECT_EQ(f.size(), 3u);
  EXPECT_THAT(f.Finish(K(1)), IsEmpty());
  EXPECT_THAT(f.Finish(K(2)), ElementsAre(7));
  EXPECT_TRUE(f.InFlight(K(5)));
}

TEST(SingleFlightTest, FinishWithoutFlightIsEmpty) {
  SingleFlight<int> f;
  EXPECT_THAT(f.Finish(K(9)), IsEmpty());
  EXPECT_TRUE(f.JoinOrLead(K(9), 1));
  EXPECT_THAT(f.Finish(K(9)), IsEmpty());
  EXPECT_THAT(f.Finish(K(9)), IsEmpty());
}

TEST(SingleFlightTest, LeaveRemovesOneFollower) {
  SingleFlight<int> f;
  EXPECT_FALSE(f.Leave(K(1), 2));  // no flight
  EXPECT_TRUE(f.JoinOrLead(K(1), 1));
  EXPECT_FALSE(f.Leave(K(1), 1));  // the leader's waiter was never kept
  EXPECT_FALSE(f.JoinOrLead(K(1), 2));
  EXPECT_FALSE(f.JoinOrLead(K(1), 3));
  EXPECT_FALSE(f.JoinOrLead(K(1), 4));
  EXPECT_TRUE(f.Leave(K(1), 3));
  EXPECT_FALSE(f.Leave(K(1), 3));
  EXPECT_FALSE(f.Leave(K(2), 2));  // other key
  EXPECT_TRUE(f.InFlight(K(1)));   // the flight goes on
  EXPECT_THAT(f.Finish(K(1)), ElementsAre(2, 4));
  EXPECT_FALSE(f.Leave(K(1), 2));  // already handed back by Finish
}

TEST(SingleFlightTest, LastFollowerLeavingKeepsTheFlight) {
  SingleFlight<int> f;
  EXPECT_TRUE(f.JoinOrLead(K(1), 0));
  EXPECT_FALSE(f.JoinOrLead(K(1), 5));
  EXPECT_TRUE(f.Leave(K(1), 5));
  EXPECT_TRUE(f.InFlight(K(1)));
  EXPECT_FALSE(f.JoinOrLead(K(1), 6));  // still led
  EXPECT_THAT(f.Finish(K(1)), ElementsAre(6));
}

void RunOrDie(const std::function<void()>& fn) {
  absl::Notification done;
  std::thread t([&] {
    fn();
    done.Notify();
  });
  if (!done.WaitForNotificationWithTimeout(absl::Seconds(60))) {
    std::fprintf(stderr, "deadlock: a waiter was destroyed under a lock\n");
    std::abort();
  }
  t.join();
}

// A waiter whose destruction calls back into the SingleFlight.
struct Reentrant {
  Reentrant(SingleFlight<std::shared_ptr<Reentrant>>* f, int* calls)
      : f(f), calls(calls) {}
  ~Reentrant() {
    f->InFlight(K(1));  // the same (only) shard: would self-deadlock
    ++*calls;
  }
  SingleFlight<std::shared_ptr<Reentrant>>* f;
  int* calls;
};

TEST(SingleFlightTest, WaitersAreNeverDestroyedUnderTheLock) {
  using RPtr = std::shared_ptr<Reentrant>;
  SingleFlight<RPtr> f(1);
  int calls = 0;
  RunOrDie([&] {
    EXPECT_TRUE(f.JoinOrLead(K(1), std::make_shared<Reentrant>(&f, &calls)));
    EXPECT_EQ(calls, 1);  // the leader's waiter, after the unlock
    RPtr a = std::make_shared<Reentrant>(&f, &calls);
    RPtr b = std::make_shared<Reentrant>(&f, &calls);
    EXPECT_FALSE(f.JoinOrLead(K(1), a));
    EXPECT_FALSE(f.JoinOrLead(K(1), b));
    a.reset();  // the flight holds the last reference now
    RPtr b_copy = b;
    b.reset();
    // Leave by equality with a copy; the flight's own reference dies after
    // the unlock, then ours.
    EXPECT_TRUE(f.Leave(K(1), b_copy));
    b_copy.reset();
    EXPECT_EQ(calls, 2);
    std::vector<RPtr> followers = f.Finish(K(1));
    EXPECT_EQ(followers.size(), 1u);
    followers.clear();
    EXPECT_EQ(calls, 3);
  });
}

TEST(SingleFlightConcurrencyTest, EveryFollowerIsWokenExactlyOnce) {
  constexpr int kThreads = 4;
  constexpr int kIterations = 20000;
  constexpr int kKeys = 8;
  SingleFlight<int> f;
  std::vector<std::atomic<int>> woken(kThreads * kIterations);
  std::vector<std::atomic<int>> role(kThreads *
                                     kIterations);  // 1 L, 2 F, 3 left
  std::atomic<int> leaders{0};
  std::atomic<int> in_leader_section[kKeys] = {};
  std::atomic<bool> two_leaders{false};

  auto worker = [&](int t) {
    std::mt19937 rng(t);
    for (int i = 0; i < kIterations; ++i) {
      const int id = t * kIterations + i;
      const int k = static_cast<int>(rng() % kKeys);
      if (f.JoinOrLead(K(k), id)) {
        role[id] = 1;
        ++leaders;
        if (in_leader_section[k].fetch_add(1) != 0) two_leaders = true;
        std::this_thread::yield();  // let followers gather
        in_leader_section[k].fetch_sub(1);
        for (int w : f.Finish(K(k))) woken[w].fetch_add(1);
        continue;
      }
      if (rng() % 4 == 0 && f.Leave(K(k), id)) {
        role[id] = 3;
        continue;
      }
      role[id] = 2;
      while (woken[id].load() == 0) std::this_thread::yield();
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (std::thread& t : threads) t.join();

  EXPECT_FALSE(two_leaders) << "two leaders for one key at once";
  EXPECT_EQ(f.size(), 0u);
  EXPECT_GT(leaders.load(), 0);
  int followers = 0;
  for (int id = 0; id < kThreads * kIterations; ++id) {
    const int expected = role[id] == 2 ? 1 : 0;
    ASSERT_EQ(woken[id].load(), expected) << "waiter " << id;
    if (role[id] == 2) ++followers;
  }
  std::printf("leaders %d followers %d\n", leaders.load(), followers);
}

}  // namespace
}  // namespace caudal
