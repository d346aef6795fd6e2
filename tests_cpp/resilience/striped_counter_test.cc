// StripedCounter: exact counts across the switch from the shared early word
// to the per-thread stripes, from several threads at once.
#include "caudal/resilience/internal/striped_counter.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace caudal {
namespace resilience_internal {
namespace {

TEST(StripedCounterTest, CountsBeforeAndAfterTheStripesExist) {
  StripedCounter c;
  for (uint64_t i = 0; i < StripedCounter::kEarly - 1; ++i) c.Add();
  EXPECT_EQ(c.Value(), StripedCounter::kEarly - 1);
  c.Add(5);
  c.Add();
  EXPECT_EQ(c.Value(), StripedCounter::kEarly + 5);
  c.Reset();
  EXPECT_EQ(c.Value(), 0u);
  c.Add(3);
  EXPECT_EQ(c.Value(), 3u);
}

TEST(StripedCounterTest, ExactFromManyThreadsAcrossTheSwitch) {
  StripedCounter c;
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&c] {
      for (int i = 0; i < 1000; ++i) c.Add();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.Value(), 16'000u);
}

}  // namespace
}  // namespace resilience_internal
}  // namespace caudal
