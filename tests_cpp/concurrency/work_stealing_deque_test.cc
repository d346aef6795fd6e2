#include "caudal/concurrency/work_stealing_deque.h"

#include <atomic>
#include <cstdint>
#include <optional>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using ::testing::Optional;

TEST(WorkStealingDequeTest, OwnerPopsLifo) {
  WorkStealingDeque<int64_t> dq(4);
  for (int64_t i = 1; i <= 100; ++i) dq.Push(i);  // grows 4 -> 128
  EXPECT_EQ(dq.size(), 100);
  EXPECT_GE(dq.capacity(), 100);
  for (int64_t i = 100; i >= 1; --i) EXPECT_THAT(dq.Pop(), Optional(i));
  EXPECT_EQ(dq.Pop(), std::nullopt);
  EXPECT_TRUE(dq.empty());
}

TEST(WorkStealingDequeTest, ThievesStealFifo) {
  WorkStealingDeque<int64_t> dq(4);
  for (int64_t i = 1; i <= 100; ++i) dq.Push(i);
  for (int64_t i = 1; i <= 100; ++i) EXPECT_THAT(dq.Steal(), Optional(i));
  EXPECT_EQ(dq.Steal(), std::nullopt);
  EXPECT_EQ(dq.Pop(), std::nullopt);
}

TEST(WorkStealingDequeTest, BothEndsMeetInTheMiddle) {
  WorkStealingDeque<int64_t> dq(2);
  for (int64_t i = 1; i <= 5; ++i) dq.Push(i);
  EXPECT_THAT(dq.Steal(), Optional(1));
  EXPECT_THAT(dq.Pop(), Optional(5));
  EXPECT_THAT(dq.Steal(), Optional(2));
  EXPECT_THAT(dq.Pop(), Optional(4));
  EXPECT_THAT(dq.Pop(), Optional(3));  // the last one, via the CAS
  EXPECT_EQ(dq.Steal(), std::nullopt);
  EXPECT_EQ(dq.Pop(), std::nullopt);
  // Indices keep moving; the ring wraps around without growing.
  const int64_t capacity = dq.capacity();  // 8: five pushes grew 2 -> 8
  EXPECT_EQ(capacity, 8);
  for (int round = 0; round < 100; ++round) {
    dq.Push(round);
    dq.Push(round + 1000);
    EXPECT_THAT(dq.Steal(), Optional(round));
    EXPECT_THAT(dq.Pop(), Optional(round + 1000));
  }
  EXPECT_EQ(dq.capacity(), capacity);
}

TEST(WorkStealingDequeTest, HoldsPointers) {
  WorkStealingDeque<int*> dq;
  int a = 1, b = 2;
  dq.Push(&a);
  dq.Push(&b);
  EXPECT_THAT(dq.Steal(), Optional(&a));
  EXPECT_THAT(dq.Pop(), Optional(&b));
}

// One owner pushes (growing the ring from 2 slots) and pops; three thieves
// steal. Every item is taken exactly once; none is lost. Items are pointers
// to objects the owner fills in before pushing, so TSan also checks that the
// object's contents are published to whoever takes it.
TEST(WorkStealingDequeTest, ConcurrentStealsTakeEachItemExactlyOnce) {
  constexpr int kItems = 200000;
  constexpr int kThieves = 3;
  struct Item {
    int id;
    int64_t payload;
  };
  std::vector<Item> items(kItems);
  std::vector<std::atomic<int>> taken(kItems);
  WorkStealingDeque<Item*> dq(2);
  std::atomic<bool> owner_done{false};
  std::atomic<int64_t> stolen{0};

  auto take = [&](Item* item) {
    ASSERT_EQ(item->payload, int64_t{item->id} * 7 + 1) << "torn item";
    taken[item->id].fetch_add(1, std::memory_order_relaxed);
  };

  std::vector<std::thread> thieves;
  for (int i = 0; i < kThieves; ++i) {
    thieves.emplace_back([&] {
      for (;;) {
        const bool done = owner_done.load(std::memory_order_acquire);
        if (std::optional<Item*> item = dq.Steal()) {
          take(*item);
          stolen.fetch_add(1, std::memory_order_relaxed);
        } else if (done && dq.empty()) {
          return;
        }
      }
    });
  }

  int64_t popped = 0;
  for (int i = 0; i < kItems; ++i) {
    items[i].id = i;
    items[i].payload = int64_t{i} * 7 + 1;
    dq.Push(&items[i]);
    // On a busy machine the owner could finish before any thief runs; wait
    // once, early, until the thieves are at work.
    if (i == 1000) {
      while (stolen.load(std::memory_order_relaxed) == 0) {
        std::this_thread::yield();
      }
    }
    // Pop now and then, so owner and thieves contend for the last items.
    if (i % 3 == 0) {
      if (std::optional<Item*> item = dq.Pop()) {
        take(*item);
        ++popped;
      }
    }
  }
  while (std::optional<Item*> item = dq.Pop()) {
    take(*item);
    ++popped;
  }
  owner_done.store(true, std::memory_order_release);
  for (auto& t : thieves) t.join();

  EXPECT_TRUE(dq.empty());
  EXPECT_EQ(popped + stolen.load(), kItems);
  int wrong = 0;
  for (int i = 0; i < kItems; ++i) wrong += taken[i].load() != 1;
  EXPECT_EQ(wrong, 0) << "items taken zero or several times";
  EXPECT_GT(stolen.load(), 0);
}

}  // namespace
}  // namespace caudal
