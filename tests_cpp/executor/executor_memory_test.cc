// The executor's record pool and memory-pressure handling
// (executor_memory.cc), driven with an injected RSS source.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "caudal/base/alloc_counter.h"
#include "caudal/executor/executor.h"
#include "executor_test_util.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using testing_util::Err;
using testing_util::MakeEntry;

constexpr uint64_t kMb = 1024 * 1024;
constexpr int64_t kHour = int64_t{3600} * 1'000'000'000;

// Allocations made by `n` Begin/Succeed pairs on this thread.
// Keys spread over the cache's shards (chosen by `hi`).
Key128 KeyOf(int i) {
  const auto u = static_cast<uint64_t>(i);
  return Key128{u, (u + 1) * 0x9E3779B97F4A7C15ull};
}

uint64_t AllocationsPer(Executor& ex, const std::shared_ptr<StepEntry>& e,
                        int n) {
  const uint64_t before = alloc_counter::ThreadAllocations();
  for (int i = 0; i < n; ++i) ex.Succeed(ex.Begin(e, 10 + i), 20 + i);
  return alloc_counter::ThreadAllocations() - before;
}

TEST(ExecutorPoolTest, SteadyStateHotPathAllocatesNothingWithThePool) {
  OptimizationConfig cfg;
  cfg.enable_object_pool = true;
  Executor ex(cfg);
  ex.memory_monitor().SetInterval(kHour);  // no maintenance in the loop
  auto e = MakeEntry(ex, "s");
  // Warm: the pool holds a record now, and the step's lazily grown state
  // (histogram buckets, breaker stripes) exists.
  AllocationsPer(ex, e, 100);
  const ObjectPoolStats warm = ex.MemoryStats(0).pool;
  const uint64_t allocs = AllocationsPer(ex, e, 1000);
  const ObjectPoolStats after = ex.MemoryStats(0).pool;
  EXPECT_EQ(after.misses, warm.misses);  // every record came from the pool
  EXPECT_EQ(after.hits - warm.hits, 1000u);
  EXPECT_EQ(after.in_use, 0);
  if (alloc_counter::Enabled()) {
    EXPECT_EQ(allocs, 0u);
  }
}

TEST(ExecutorPoolTest, WithoutThePoolEachExecutionAllocatesItsRecord) {
  OptimizationConfig cfg;
  cfg.enable_object_pool = false;
  Executor ex(cfg);
  ex.memory_monitor().SetInterval(kHour);
  auto e = MakeEntry(ex, "s");
  AllocationsPer(ex, e, 100);  // past the lazily grown per-step state
  const uint64_t allocs = AllocationsPer(ex, e, 1000);
  const ObjectPoolStats st = ex.MemoryStats(0).pool;
  EXPECT_EQ(st.hits + st.misses, 0u);  // the pool is not used at all
  if (alloc_counter::Enabled()) {
    EXPECT_EQ(allocs, 1000u);  // one ExecutionRecord each
  }
}

// A record reused by the next execution (pool on) or freed (pool off):
// either way the ended execution's handle finds nothing, and the new one
// finds its own record.
TEST(ExecutorHandleTest, HandlesOfEndedExecutionsAreStale) {
  for (bool pooled : {true, false}) {
    OptimizationConfig cfg;
    cfg.enable_object_pool = pooled;
    Executor ex(cfg);
    Executor other(cfg);
    auto e = MakeEntry(ex, "s");
    ExecutionRecord* a = ex.Begin(e, 10);
    ASSERT_NE(a, nullptr);
    const uint64_t ha = a->handle;
    EXPECT_NE(ha, 0u);
    EXPECT_NE(ha, reinterpret_cast<uintptr_t>(a));  // not an address
    EXPECT_EQ(ex.Record(ha), a);
    EXPECT_EQ(other.Record(ha), nullptr);  // another executor's
    EXPECT_EQ(ex.Record(0), nullptr);
    EXPECT_EQ(ex.Record(16), nullptr);
    EXPECT_EQ(ex.Record(reinterpret_cast<uintptr_t>(a)), nullptr);
    ex.Cancel(a, 20);
    EXPECT_EQ(ex.Record(ha), nullptr);
    ExecutionRecord* b = ex.Begin(e, 30);
    if (pooled) EXPECT_EQ(b, a);  // the same record, serving another run
    EXPECT_NE(b->handle, ha);
    EXPECT_EQ(ex.Record(ha), nullptr);
    EXPECT_EQ(ex.Record(b->handle), b);
    const uint64_t hb = b->handle;
    ex.Succeed(b, 40);
    EXPECT_EQ(ex.Record(hb), nullptr);
  }
}

// Executions on several threads (records moving between the pool's
// shards), each validating its own handle, and a thread validating the
// others' (a worker thread checking a handle): no handle ever finds a
// record it does not own. Under TSan: no data race.
TEST(ExecutorHandleTest, ConcurrentExecutionsAndValidation) {
  OptimizationConfig cfg;
  cfg.enable_object_pool = true;
  Executor ex(cfg);
  ex.memory_monitor().SetInterval(kHour);
  constexpr int kThreads = 3;
  std::vector<std::atomic<uint64_t>> published(kThreads);
  for (auto& p : published) p.store(0);
  std::atomic<int> wrong{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int k = 0; k < kThreads; ++k) {
    threads.emplace_back([&, k] {
      auto e = MakeEntry(ex, "s" + std::to_string(k));
      for (int i = 0; i < 5000; ++i) {
        ExecutionRecord* r = ex.Begin(e, 10 + i);
        const uint64_t h = r->handle;
        published[k].store(h, std::memory_order_relaxed);
        if (ex.Record(h) != r) wrong++;
        if (i % 2) {
          ex.Succeed(r, 20 + i);
        } else {
          ex.Cancel(r, 20 + i);
        }
        if (ex.Record(h) != nullptr) wrong++;
      }
    });
  }
  std::thread checker([&] {
    uint64_t seen = 0;
    while (!done.load()) {
      for (auto& p : published) {
        // Found or not, never dereferenced here: the executing thread owns
        // the record.
        if (ex.Record(p.load(std::memory_order_relaxed)) != nullptr) ++seen;
      }
    }
    (void)seen;
  });
  for (auto& t : threads) t.join();
  done.store(true);
  checker.join();
  EXPECT_EQ(wrong.load(), 0);
  for (auto& p : published) EXPECT_EQ(ex.Record(p.load()), nullptr);
}

TEST(ExecutorPoolTest, ConfigChangeWithRecordsInFlight) {
  OptimizationConfig on;
  on.enable_object_pool = true;
  on.object_pool_max_size = 4;
  Executor ex(on);
  auto e = MakeEntry(ex, "s");
  std::vector<ExecutionRecord*> pooled;
  for (int i = 0; i < 3; ++i) pooled.push_back(ex.Begin(e, 0));
  OptimizationConfig off = on;
  off.enable_object_pool = false;
  ASSERT_TRUE(ex.ApplyConfig(off).ok());
  ExecutionRecord* plain = ex.Begin(e, 0);  // from the allocator now
  EXPECT_FALSE(plain->pooled);
  for (ExecutionRecord* r : pooled) {
    EXPECT_TRUE(r->pooled);
    ex.Succeed(r, 1);  // back to its pool, which deletes it (cap 0)
  }
  ex.Succeed(plain, 1);
  ObjectPoolStats st = ex.MemoryStats(0).pool;
  EXPECT_EQ(st.in_use, 0);
  EXPECT_EQ(st.idle, 0u);
  EXPECT_EQ(st.discards, 3u);
  ASSERT_TRUE(ex.ApplyConfig(on).ok());
  ex.Succeed(ex.Begin(e, 0), 1);
  st = ex.MemoryStats(0).pool;
  EXPECT_EQ(st.idle, 1u);
  EXPECT_EQ(st.max_idle, 4u);
}

TEST(ExecutorPoolTest, IdleRecordsAboveTheCleanupThresholdAreTrimmed) {
  OptimizationConfig cfg;
  cfg.object_pool_max_size = 10;
  cfg.object_pool_cleanup_threshold = 0.5;
  cfg.enable_memory_optimization = false;  // the trim needs no RSS reading
  Executor ex(cfg);
  ex.memory_monitor().SetInterval(kHour);
  auto e = MakeEntry(ex, "s");
  std::vector<ExecutionRecord*> out;
  for (int i = 0; i < 10; ++i) out.push_back(ex.Begin(e, 0));
  for (ExecutionRecord* r : out) ex.Succeed(r, 1);
  EXPECT_EQ(ex.MemoryStats(0).pool.idle, 10u);
  ex.Maintain(kHour);  // due: the round after the first Begin's
  const ObjectPoolStats st = ex.MemoryStats(0).pool;
  EXPECT_EQ(st.idle, 5u);
  EXPECT_EQ(st.trimmed, 5u);
  EXPECT_EQ(ex.memory_monitor().readings(), 2u);  // the two Stats reads only
}

class PressureTest : public ::testing::Test {
 protected:
  PressureTest() : ex_(Config()) {
    ex_.memory_monitor().SetSource(
        [this]() -> absl::StatusOr<uint64_t> { return rss_; });
    ex_.memory_monitor().SetInterval(1000);
    sub_ = ex_.events().Subscribe(MaskOf(EventType::kMemoryPressure), 10);
    entry_ = MakeEntry(ex_, "s");
  }
  static OptimizationConfig Config() {
    OptimizationConfig c;
    c.memory_pressure_threshold_mb = 100;
    c.cache_max_size = 100;
    c.object_pool_max_size = 8;
    c.object_pool_cleanup_threshold = 1.0;  // no periodic trim here
    c.enable_cache_optimization = true;
    return c;
  }
  void Fill(int n, int64_t now) {
    for (int i = 0; i < n; ++i) {
      ex_.CachePut(*entry_, Config(), KeyOf(i), std::make_shared<int>(i), 0,
                   now, nullptr);
    }
  }
  void WarmPool() {
    std::vector<ExecutionRecord*> out;
    for (int i = 0; i < 8; ++i) out.push_back(ex_.Begin(entry_, 0));
    for (ExecutionRecord* r : out) ex_.Succeed(r, 1);
  }
  std::vector<Event> Events() {
    std::vector<Event> out;
    sub_->Drain(&out);
    return out;
  }

  uint64_t rss_ = 50 * kMb;
  Executor ex_;
  std::shared_ptr<EventSubscription> sub_;
  std::shared_ptr<StepEntry> entry_;
};

TEST_F(PressureTest, ShrinksInOrderPublishesAndRestores) {
  Fill(100, 0);
  WarmPool();
  ex_.Maintain(0);
  EXPECT_EQ(ex_.MemoryStats(0).level, PressureLevel::kNormal);

  rss_ = 110 * kMb;
  ex_.Maintain(1000);
  MemorySnapshot m = ex_.MemoryStats(1000);
  EXPECT_EQ(m.level, PressureLevel::kElevated);
  EXPECT_DOUBLE_EQ(m.usage_mb, 110);
  EXPECT_EQ(m.pool.max_idle, 4u);
  EXPECT_EQ(m.pool.idle, 4u);
  EXPECT_EQ(ex_.CacheStats().max_entries, 50u);
  EXPECT_EQ(ex_.CacheStats().entries, 50u);
  ASSERT_EQ(m.shrunk.size(), 2u);
  EXPECT_EQ(m.shrunk[0],
            "object_pool: max idle records 8 -> 4 (4 idle records freed)");
  EXPECT_EQ(m.shrunk[1], "result_cache: max entries 100 -> 50 (50 evicted)");
  auto ev = Events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].detail, "normal->elevated");
  EXPECT_DOUBLE_EQ(ev[0].value, 110);
  EXPECT_EQ(ev[0].value2, 1);

  rss_ = 130 * kMb;
  ex_.Maintain(2000);
  m = ex_.MemoryStats(2000);
  EXPECT_EQ(m.level, PressureLevel::kCritical);
  EXPECT_EQ(m.pool.max_idle, 0u);
  EXPECT_EQ(m.pool.idle, 0u);
  EXPECT_EQ(ex_.CacheStats().max_entries, 10u);
  EXPECT_EQ(ex_.CacheStats().entries, 10u);
  ev = Events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].detail, "elevated->critical");

  rss_ = 95 * kMb;  // within the band: elevated again, not normal
  ex_.Maintain(3000);
  EXPECT_EQ(ex_.MemoryStats(3000).level, PressureLevel::kElevated);
  EXPECT_EQ(ex_.CacheStats().max_entries, 50u);

  rss_ = 40 * kMb;
  ex_.Maintain(4000);
  m = ex_.MemoryStats(4000);
  EXPECT_EQ(m.level, PressureLevel::kNormal);
  EXPECT_TRUE(m.shrunk.empty());
  EXPECT_EQ(m.pool.max_idle, 8u);
  EXPECT_EQ(ex_.CacheStats().max_entries, 100u);
  EXPECT_EQ(m.pressure_changes, 4u);
  ev = Events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].detail, "critical->elevated");
  EXPECT_EQ(ev[1].detail, "elevated->normal");
}

TEST_F(PressureTest, ExpiredEntriesGoFirst) {
  OptimizationConfig c = Config();
  c.cache_ttl_seconds = 1e-6;  // 1000 ns
  ASSERT_TRUE(ex_.ApplyConfig(c).ok());
  for (int i = 0; i < 30; ++i) {
    ex_.CachePut(*entry_, c, KeyOf(i + 1000), std::make_shared<int>(i), 0, 0,
                 nullptr);
  }
  rss_ = 110 * kMb;
  ex_.Maintain(5000);
  const MemorySnapshot m = ex_.MemoryStats(5000);
  ASSERT_GE(m.shrunk.size(), 2u);
  EXPECT_EQ(m.shrunk[1], "result_cache: 30 expired entries dropped");
}

TEST_F(PressureTest, MaintenanceRunsAtMostOncePerIntervalFromBegin) {
  ex_.Succeed(ex_.Begin(entry_, 0), 1);  // due at 0: reads
  const uint64_t r0 = ex_.memory_monitor().readings();
  EXPECT_EQ(r0, 1u);
  for (int i = 1; i < 1000; ++i) ex_.Succeed(ex_.Begin(entry_, i), i);
  EXPECT_EQ(ex_.memory_monitor().readings(), r0);  // not due before 1000
  rss_ = 200 * kMb;
  ex_.Succeed(ex_.Begin(entry_, 1000), 1001);
  EXPECT_EQ(ex_.memory_monitor().readings(), r0 + 1);
  EXPECT_EQ(ex_.MemoryStats(1001).level, PressureLevel::kCritical);
}

TEST_F(PressureTest, OnlyWithMemoryOptimization) {
  OptimizationConfig c = Config();
  c.enable_memory_optimization = false;
  ASSERT_TRUE(ex_.ApplyConfig(c).ok());
  rss_ = 500 * kMb;
  ex_.Maintain(0);
  MemorySnapshot m = ex_.MemoryStats(0);
  EXPECT_EQ(m.level, PressureLevel::kNormal);
  EXPECT_DOUBLE_EQ(m.usage_mb, 500);  // still read for the stats
  EXPECT_EQ(ex_.CacheStats().max_entries, 100u);
  // Turned off under pressure: capacities come back at once.
  ASSERT_TRUE(ex_.ApplyConfig(Config()).ok());
  ex_.Maintain(1000);
  EXPECT_EQ(ex_.MemoryStats(1000).level, PressureLevel::kCritical);
  EXPECT_EQ(ex_.CacheStats().max_entries, 10u);
  ASSERT_TRUE(ex_.ApplyConfig(c).ok());
  EXPECT_EQ(ex_.MemoryStats(1000).level, PressureLevel::kNormal);
  EXPECT_EQ(ex_.CacheStats().max_entries, 100u);
  EXPECT_TRUE(Events().size() >= 1u);
}

TEST_F(PressureTest, ConfigChangeUnderPressureKeepsTheShrink) {
  rss_ = 110 * kMb;
  ex_.Maintain(0);
  EXPECT_EQ(ex_.CacheStats().max_entries, 50u);
  OptimizationConfig c = Config();
  c.cache_max_size = 40;
  ASSERT_TRUE(ex_.ApplyConfig(c).ok());
  EXPECT_EQ(ex_.CacheStats().max_entries, 20u);  // 50% of the new size
  rss_ = 10 * kMb;
  ex_.Maintain(1000);
  EXPECT_EQ(ex_.CacheStats().max_entries, 40u);
}

}  // namespace
}  // namespace caudal
