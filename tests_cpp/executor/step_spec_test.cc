#include "caudal/executor/step_spec.h"

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace caudal {
namespace {

TEST(StepSpecSettings, UnsetWhereTheStepFollowsTheConfig) {
  StepSpec spec;
  spec.name = "fetch";
  const StepSpec::Settings s = spec.settings();
  EXPECT_FALSE(s.timeout_s.has_value());
  EXPECT_EQ(s.cache, StepSwitch::kDefault);
  EXPECT_EQ(s.max_retries, 0);
  ASSERT_TRUE(s.breaker.has_value());
  EXPECT_EQ(*s.breaker, "fetch");  // its own breaker
}

TEST(StepSpecSettings, WhatTheStepSet) {
  StepSpec spec;
  spec.name = "fetch";
  spec.timeout_ns = 2'500'000'000;
  spec.cache = StepSwitch::kOff;
  spec.retry.max_attempts = 4;
  spec.breaker_key = "api";
  StepSpec::Settings s = spec.settings();
  EXPECT_EQ(s.timeout_s, 2.5);
  EXPECT_EQ(s.cache, StepSwitch::kOff);
  EXPECT_EQ(s.max_retries, 3);
  EXPECT_EQ(s.breaker, "api");
  spec.use_breaker = false;
  EXPECT_FALSE(spec.settings().breaker.has_value());
}

TEST(StepTableBook, KeepsTheLastSettingsAndReasonsAcrossClear) {
  StepTable table;
  StepSpec spec;
  spec.name = "a";
  spec.retry.max_attempts = 2;
  table.Describe(spec);
  spec.retry.max_attempts = 5;
  table.Describe(spec);  // analysed again: the last one counts
  table.MarkUncacheable("b", "no identity");
  table.MarkUncacheable("a", "lambda");
  auto entry = std::make_shared<StepEntry>();
  entry->spec = spec;
  table.Insert(1, entry);
  table.Clear();
  EXPECT_EQ(table.size(), 0u);
  ASSERT_TRUE(table.SettingsOf("a").has_value());
  EXPECT_EQ(table.SettingsOf("a")->max_retries, 4);
  EXPECT_FALSE(table.SettingsOf("b").has_value());
  const auto why = table.UncacheableSteps();
  ASSERT_EQ(why.size(), 2u);
  EXPECT_EQ(why[0].first, "a");
  EXPECT_EQ(why[0].second, "lambda");
  EXPECT_EQ(why[1].first, "b");
}

std::shared_ptr<StepEntry> Named(const std::string& name) {
  auto e = std::make_shared<StepEntry>();
  e->spec.name = name;
  return e;
}

std::string NameAt(StepTable& t, uint64_t key) {
  auto e = t.Find(key);
  return e ? e->spec.name : "-";
}

TEST(StepTableLru, EvictsTheLeastRecentlyUsedEntryOnly) {
  StepTable t(3);
  EXPECT_EQ(t.Insert(1, Named("a")), nullptr);
  EXPECT_EQ(t.Insert(2, Named("b")), nullptr);
  EXPECT_EQ(t.Insert(3, Named("c")), nullptr);
  ASSERT_NE(t.Find(1), nullptr);  // a is now the most recently used
  auto dropped = t.Insert(4, Named("d"));
  ASSERT_NE(dropped, nullptr);
  EXPECT_EQ(dropped->spec.name, "b");  // the least recently used
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(NameAt(t, 2), "-");
  // Order now (most recent first): d, a, c... Find(2) missed and moved
  // nothing; Find(3) makes c the most recent.
  EXPECT_EQ(NameAt(t, 3), "c");
  dropped = t.Insert(5, Named("e"));
  ASSERT_NE(dropped, nullptr);
  EXPECT_EQ(dropped->spec.name, "a");
  dropped = t.Insert(6, Named("f"));
  ASSERT_NE(dropped, nullptr);
  EXPECT_EQ(dropped->spec.name, "d");
  EXPECT_EQ(NameAt(t, 3), "c");
  EXPECT_EQ(NameAt(t, 5), "e");
  EXPECT_EQ(NameAt(t, 6), "f");
  EXPECT_EQ(t.evictions(), 3u);
  EXPECT_EQ(t.analyses(), 6u);
}

TEST(StepTableLru, CyclingThroughMoreStepsThanItHoldsEvictsOneAtATime) {
  StepTable t(100);
  for (uint64_t k = 0; k < 1000; ++k) {
    const bool evicted = t.Insert(k, Named(std::to_string(k))) != nullptr;
    EXPECT_EQ(evicted, k >= 100);
    EXPECT_EQ(t.size(), std::min<size_t>(k + 1, 100));
  }
  // The last 100 are there; the ones before are not.
  EXPECT_EQ(NameAt(t, 999), "999");
  EXPECT_EQ(NameAt(t, 900), "900");
  EXPECT_EQ(NameAt(t, 899), "-");
}

TEST(StepTableRefit,
     TakesOverTheLeastRecentlyUsedEntryOnlyWhenFullAndAccepted) {
  StepTable t(2);
  auto accept = [](const std::shared_ptr<StepEntry>&) { return true; };
  auto rename = [](const char* n) {
    return [n](StepEntry& e) { e.spec.name = n; };
  };
  // Not full: nothing done (the caller inserts).
  EXPECT_EQ(t.Refit(1, accept, rename("x")), nullptr);
  t.Insert(1, Named("a"));
  t.Insert(2, Named("b"));
  ASSERT_NE(t.Find(1), nullptr);  // b is now the least recently used
  // A key already there: nothing done (Insert replaces).
  EXPECT_EQ(t.Refit(2, accept, rename("x")), nullptr);
  // Refused by the caller: nothing done, nothing refitted.
  bool called = false;
  EXPECT_EQ(t.Refit(
                3, [](const std::shared_ptr<StepEntry>&) { return false; },
                [&](StepEntry&) { called = true; }),
            nullptr);
  EXPECT_FALSE(called);
  EXPECT_EQ(NameAt(t, 2), "b");  // b is the most recent now; a the least
  const uint64_t g = t.generation();
  const uint64_t analyses = t.analyses();
  std::shared_ptr<StepEntry> seen;
  auto got = t.Refit(
      3,
      [&](const std::shared_ptr<StepEntry>& v) {
        seen = v;
        return true;
      },
      rename("c"));
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(got, seen);            // the least recently used entry...
  EXPECT_EQ(got->spec.name, "c");  // ...refitted...
  EXPECT_EQ(NameAt(t, 1), "-");    // ...is gone from its old key...
  EXPECT_EQ(NameAt(t, 3), "c");    // ...and is under the new one
  EXPECT_EQ(NameAt(t, 2), "b");
  EXPECT_EQ(t.size(), 2u);
  EXPECT_NE(t.generation(), g);  // a cached pointer to it must be looked up
  EXPECT_EQ(t.analyses(), analyses + 1);
  EXPECT_EQ(t.evictions(), 1u);
}

TEST(StepTableConcurrency, FindsInsertsAndGrowthFromManyThreads) {
  // Four threads share one small table: each looks up, inserts and reports
  // steps met again, at once. Every entry a thread holds keeps the name it
  // was given, and the table stays within its bounds while it grows.
  StepTable t(64, 256);
  constexpr uint64_t kKeys = 1000;
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&t, w] {
      for (uint64_t i = 0; i < 20000; ++i) {
        const uint64_t key = (i * 7919 + static_cast<uint64_t>(w)) % kKeys;
        std::shared_ptr<StepEntry> held = t.Find(key);
        if (!held) {
          held = Named(std::to_string(key));
          t.Insert(key, held);
        }
        if (i % 5 == 0) t.Regained();
        ASSERT_EQ(held->spec.name, std::to_string(key));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_LE(t.size(), t.capacity());
  EXPECT_LE(t.capacity(), t.max_capacity());
  EXPECT_GT(t.capacity(), 64u);  // it grew
}

TEST(StepTableConcurrency, RefitsUnderTheCallersLockFromManyThreads) {
  // Refit's "nobody else holds it" is the caller's to establish: the
  // bindings make every table call, and hold and drop every entry, with
  // the GIL, which orders a holder's last use before the refit. `gil`
  // plays that part here. Entries a thread holds are never refitted.
  StepTable t(64);
  std::mutex gil;
  constexpr uint64_t kKeys = 1000;
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&t, &gil, w] {
      std::vector<std::shared_ptr<StepEntry>> kept;  // held across calls
      for (uint64_t i = 0; i < 20000; ++i) {
        const uint64_t key = (i * 7919 + static_cast<uint64_t>(w)) % kKeys;
        std::lock_guard<std::mutex> g(gil);
        std::shared_ptr<StepEntry> held = t.Find(key);
        if (!held) {
          held = t.Refit(
              key,
              [](const std::shared_ptr<StepEntry>& v) {
                return v.use_count() == 1;
              },
              [key](StepEntry& e) { e.spec.name = std::to_string(key); });
        }
        if (!held) {
          held = Named(std::to_string(key));
          t.Insert(key, held);
        }
        ASSERT_EQ(held->spec.name, std::to_string(key));
        if (i % 97 == 0) kept.push_back(held);
        if (kept.size() > 8) kept.erase(kept.begin());
        for (const auto& k : kept) ASSERT_FALSE(k->spec.name.empty());
      }
      std::lock_guard<std::mutex> g(gil);
      kept.clear();
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(t.size(), 64u);
}

TEST(StepTableGrowth, DoublesWhenAnEighthOfItCameBackUpToTheMaximum) {
  StepTable t(16, 40);
  EXPECT_EQ(t.capacity(), 16u);
  EXPECT_EQ(t.max_capacity(), 40u);
  t.Regained();
  EXPECT_EQ(t.capacity(), 16u);
  t.Regained();  // 2 = 16 / 8
  EXPECT_EQ(t.capacity(), 32u);
  for (int i = 0; i < 3; ++i) t.Regained();
  EXPECT_EQ(t.capacity(), 32u);
  t.Regained();                  // 4 = 32 / 8
  EXPECT_EQ(t.capacity(), 40u);  // capped
  for (int i = 0; i < 100; ++i) t.Regained();
  EXPECT_EQ(t.capacity(), 40u);
  // The new room is used before anything is evicted.
  for (uint64_t k = 0; k < 40; ++k) EXPECT_EQ(t.Insert(k, Named("s")), nullptr);
  EXPECT_NE(t.Insert(40, Named("s")), nullptr);
  // A maximum below the start is the start: no growth.
  StepTable fixed(8, 4);
  EXPECT_EQ(fixed.max_capacity(), 8u);
  for (int i = 0; i < 10; ++i) fixed.Regained();
  EXPECT_EQ(fixed.capacity(), 8u);
}

TEST(StepTableLru, GenerationChangesWhenAndOnlyWhenAnEntryMayBeDropped) {
  StepTable t(2);
  const uint64_t g0 = t.generation();
  t.Insert(1, Named("a"));
  t.Insert(2, Named("b"));
  EXPECT_EQ(t.generation(), g0);  // room: nothing dropped, cached pointers hold
  t.Find(1);
  EXPECT_EQ(t.generation(), g0);  // recency moves nothing
  t.Insert(3, Named("c"));        // evicts b
  const uint64_t g1 = t.generation();
  EXPECT_NE(g1, g0);
  t.Insert(3, Named("c2"));  // replaces c
  const uint64_t g2 = t.generation();
  EXPECT_NE(g2, g1);
  t.Clear();
  EXPECT_NE(t.generation(), g2);
  // Unique across tables: another table never shows a generation seen here.
  StepTable other;
  EXPECT_NE(other.generation(), g0);
  EXPECT_NE(other.generation(), g1);
  EXPECT_NE(other.generation(), g2);
}

TEST(StepTableLru, AnEvictedEntryInUseStaysAliveWithItsHolder) {
  StepTable t(1);
  t.Insert(1, Named("running"));
  std::shared_ptr<StepEntry> in_flight = t.Find(1);  // an execution holds it
  auto dropped = t.Insert(2, Named("next"));
  ASSERT_NE(dropped, nullptr);
  dropped.reset();  // the table's reference is gone
  ASSERT_NE(in_flight, nullptr);
  EXPECT_EQ(in_flight->spec.name, "running");  // still valid (ASan checks)
  EXPECT_EQ(in_flight.use_count(), 1);
  EXPECT_EQ(NameAt(t, 1), "-");
}

}  // namespace
}  // namespace caudal
