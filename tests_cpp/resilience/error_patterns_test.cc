#include "caudal/resilience/error_patterns.h"

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using ::testing::ElementsAre;

// --- NormalizeMessage -------------------------------------------------------

TEST(NormalizeMessageTest, NumbersAndHexIdsCollapse) {
  const std::string a = NormalizeMessage("timeout after 31ms id=0xdeadbeef");
  const std::string b = NormalizeMessage("timeout after 7ms id=0x1");
  EXPECT_EQ(a, "timeout after <n>ms id=<hex>");
  EXPECT_EQ(a, b);
}

TEST(NormalizeMessageTest, Examples) {
  EXPECT_EQ(NormalizeMessage("KeyError: 'user_42'"), "KeyError: <str>");
  EXPECT_EQ(NormalizeMessage("can't connect to \"db-3\""),
            "can't connect to <str>");
  EXPECT_EQ(NormalizeMessage("error: 'a' and 'b'"), "error: <str> and <str>");
  EXPECT_EQ(
      NormalizeMessage("request 123e4567-e89b-12d3-a456-426614174000 failed"),
      "request <uuid> failed");
  EXPECT_EQ(NormalizeMessage("trace a3f9c2e17b00 lost"), "trace <hex> lost");
  EXPECT_EQ(NormalizeMessage("connect to 10.0.0.1:8080 took 3.5s"),
            "connect to <n>:<n> took <n>s");
  EXPECT_EQ(NormalizeMessage("step42 failed with code -3"),
            "step<n> failed with code -<n>");
  EXPECT_EQ(NormalizeMessage("[Errno 111] Connection refused"),
            "[Errno <n>] Connection refused");
  EXPECT_EQ(NormalizeMessage("0X1F at 0x"), "<hex> at <n>x");
}

TEST(NormalizeMessageTest, LeavesWordsAlone) {
  // Hex-looking words without digits, short hex words, apostrophes and an
  // unclosed quote stay as they are.
  EXPECT_EQ(NormalizeMessage("deadbeefcafe facade"), "deadbeefcafe facade");
  EXPECT_EQ(NormalizeMessage("it's 'broken"), "it's 'broken");
  EXPECT_EQ(NormalizeMessage("'can't stop'"), "<str>");
  EXPECT_EQ(NormalizeMessage(""), "");
  EXPECT_EQ(NormalizeMessage("no variables here"), "no variables here");
  // A quote does not span lines.
  EXPECT_EQ(NormalizeMessage("'a\nb'"), "'a\nb'");
  // Pure digits of hex length are a number, not a hex id.
  EXPECT_EQ(NormalizeMessage("12345678"), "<n>");
}

TEST(NormalizeMessageTest, Utf8PassesThrough) {
  EXPECT_EQ(NormalizeMessage("délai dépassé après 5 s"),
            "délai dépassé après <n> s");
}

// --- ErrorPatternId ---------------------------------------------------------

TEST(ErrorPatternIdTest, StableAndFieldSensitive) {
  const uint64_t id = ErrorPatternId("fetch", "TimeoutError", "after <n>ms");
  EXPECT_EQ(id, ErrorPatternId("fetch", "TimeoutError", "after <n>ms"));
  EXPECT_NE(id, ErrorPatternId("parse", "TimeoutError", "after <n>ms"));
  EXPECT_NE(id, ErrorPatternId("fetch", "ValueError", "after <n>ms"));
  EXPECT_NE(id, ErrorPatternId("fetch", "TimeoutError", "after <n>s"));
  EXPECT_NE(ErrorPatternId("ab", "c", ""), ErrorPatternId("a", "bc", ""));
  EXPECT_NE(ErrorPatternId("", "", ""), 0u);
}

TEST(ErrorPatternIdTest, SameIdInEveryBuild) {
  // Ids may be exported and compared across processes and builds: a change
  // of hash must be noticed. The value is XXH3-64 chained through the seeds
  // (step with seed 0, its hash seeds exc_type, that seeds the message), so
  // Python's xxhash package can reproduce it.
  EXPECT_EQ(ErrorPatternId("fetch", "TimeoutError", "after <n>ms"),
            0x315a2bb8c4577767ULL);
}

// --- ErrorPatternTable ------------------------------------------------------

void Error(ErrorPatternTable& t, uint64_t id, int64_t now = 0) {
  t.RecordError(id, "step", "Err", "message", now);
}

TEST(ErrorPatternTableTest, LruBound) {
  ErrorPatternTable t(3);
  Error(t, 1);
  Error(t, 2);
  Error(t, 3);
  Error(t, 1);  // 1 is now the most recent; 2 is the oldest
  Error(t, 4);
  EXPECT_EQ(t.size(), 3u);
  std::vector<uint64_t> ids;
  for (const auto& p : t.Snapshot(10)) ids.push_back(p.id);
  std::sort(ids.begin(), ids.end());
  EXPECT_THAT(ids, ElementsAre(1, 3, 4));
  EXPECT_EQ(t.Stats().evictions, 1u);
  // A retry outcome also counts as use.
  t.RecordRetryOutcome(3, false);
  Error(t, 5);  // evicts 1
  ids.clear();
  for (const auto& p : t.Snapshot(10)) ids.push_back(p.id);
  std::sort(ids.begin(), ids.end());
  EXPECT_THAT(ids, ElementsAre(3, 4, 5));
}

TEST(ErrorPatternTableTest, NeverRecoveringErrorFailsFast) {
  ErrorPatternTable t(10);
  const uint64_t id = 42;
  EXPECT_TRUE(t.ShouldRetry(id, 3));  // unknown: retry
  for (int i = 0; i < 3; ++i) {
    Error(t, id, i);
    EXPECT_TRUE(t.ShouldRetry(id, 3)) << "after " << i << " failed retries";
    t.RecordRetryOutcome(id, /*recovered=*/false);
  }
  Error(t, id, 3);
  EXPECT_FALSE(t.ShouldRetry(id, 3));
  EXPECT_TRUE(t.ShouldRetry(id, 4));  // a more patient caller
}

TEST(ErrorPatternTableTest, RecoveringErrorKeepsRetrying) {
  ErrorPatternTable t(10);
  const uint64_t id = 7;
  for (int i = 0; i < 5; ++i) {
    Error(t, id);
    t.RecordRetryOutcome(id, false);
  }
  EXPECT_FALSE(t.ShouldRetry(id, 5));
  // One recovery is enough to keep retrying this pattern, however many
  // failures follow.
  Error(t, id);
  t.RecordRetryOutcome(id, true);
  for (int i = 0; i < 20; ++i) {
    Error(t, id);
    t.RecordRetryOutcome(id, false);
  }
  EXPECT_TRUE(t.ShouldRetry(id, 5));
}

TEST(ErrorPatternTableTest, RecoveredAtFirstRetryNeverFailsFast) {
  ErrorPatternTable t(10);
  Error(t, 1);
  t.RecordRetryOutcome(1, true);
  EXPECT_TRUE(t.ShouldRetry(1, 1));
}

TEST(ErrorPatternTableTest, MinObservationsBelowOneCountsAsOne) {
  ErrorPatternTable t(10);
  Error(t, 1);
  EXPECT_TRUE(t.ShouldRetry(1, 0));  // never retried yet: no evidence
  t.RecordRetryOutcome(1, false);
  EXPECT_FALSE(t.ShouldRetry(1, 0));
  EXPECT_FALSE(t.ShouldRetry(1, -5));
}

TEST(ErrorPatternTableTest, EvictionForgetsButTotalsRemain) {
  ErrorPatternTable t(1);
  Error(t, 1);
  t.RecordRetryOutcome(1, false);
  EXPECT_FALSE(t.ShouldRetry(1, 1));
  Error(t, 2);  // evicts 1
  EXPECT_TRUE(t.ShouldRetry(1, 1));
  t.RecordRetryOutcome(1, true);  // unknown now: only the totals count it
  const auto s = t.Stats();
  EXPECT_EQ(s.total_errors, 2u);
  EXPECT_EQ(s.total_retries, 2u);
  EXPECT_EQ(s.recoveries, 1u);
  EXPECT_EQ(s.failures_after_retry, 1u);
  EXPECT_EQ(s.cached_patterns, 1u);
  EXPECT_EQ(t.Snapshot(5)[0].retried, 0u);
}

TEST(ErrorPatternTableTest, Rates) {
  ErrorPatternTable t(10);
  EXPECT_EQ(t.Stats().recovery_success_rate, 0.0);
  Error(t, 1);
  Error(t, 2);
  t.RecordRetryOutcome(1, true);
  t.RecordRetryOutcome(1, true);
  t.RecordRetryOutcome(2, false);
  t.RecordRetryOutcome(1, true);
  const auto s = t.Stats();
  EXPECT_EQ(s.total_errors, 2u);
  EXPECT_EQ(s.total_retries, 4u);
  EXPECT_EQ(s.recoveries, 3u);
  EXPECT_EQ(s.failures_after_retry, 1u);
  EXPECT_DOUBLE_EQ(s.recovery_success_rate, 0.75);
  EXPECT_EQ(s.cached_patterns, 2u);
  EXPECT_EQ(s.capacity, 10u);
}

TEST(ErrorPatternTableTest, SnapshotSortedWithFields) {
  ErrorPatternTable t(10);
  t.RecordError(1, "fetch", "TimeoutError", "after 31ms", 100);
  for (int i = 0; i < 3; ++i) {
    t.RecordError(2, "parse", "ValueError", "bad value " + std::to_string(i),
                  200 + i);
  }
  t.RecordError(3, "store", "IOError", "disk full", 300);
  t.RecordError(3, "store", "IOError", "disk full again", 400);
  t.RecordRetryOutcome(2, false);
  t.RecordRetryOutcome(2, true);

  const auto all = t.Snapshot(10);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].id, 2u);
  EXPECT_EQ(all[1].id, 3u);
  EXPECT_EQ(all[2].id, 1u);
  const PatternSnapshot& p = all[0];
  EXPECT_EQ(p.step, "parse");
  EXPECT_EQ(p.exc_type, "ValueError");
  EXPECT_EQ(p.sample, "bad value 2");  // the latest message
  EXPECT_EQ(p.occurrences, 3u);
  EXPECT_EQ(p.retried, 2u);
  EXPECT_EQ(p.recovered, 1u);
  EXPECT_EQ(p.failed_after_retry, 1u);
  EXPECT_EQ(p.first_seen_ns, 200);
  EXPECT_EQ(p.last_seen_ns, 202);
  EXPECT_EQ(all[1].sample, "disk full again");

  const auto top = t.Snapshot(1);
  ASSERT_EQ(top.size(), 1u);
  EXPECT_EQ(top[0].id, 2u);
  EXPECT_TRUE(t.Snapshot(0).empty());
}

TEST(ErrorPatternTableTest, SnapshotTiesByRecency) {
  ErrorPatternTable t(10);
  t.RecordError(5, "s", "E", "m", 10);
  t.RecordError(6, "s", "E", "m", 30);
  t.RecordError(4, "s", "E", "m", 20);
  const auto all = t.Snapshot(10);
  EXPECT_EQ(all[0].id, 6u);
  EXPECT_EQ(all[1].id, 4u);
  EXPECT_EQ(all[2].id, 5u);
}

TEST(ErrorPatternTableTest, SamplesAreCutAtCharacterBoundary) {
  ErrorPatternTable t(10);
  // 255 ASCII bytes, then a 2-byte character across the 256-byte limit.
  const std::string message = std::string(255, 'a') + "\xc3\xa9" + "tail";
  t.RecordError(1, "s", "E", message, 0);
  const std::string sample = t.Snapshot(1)[0].sample;
  EXPECT_EQ(sample, std::string(255, 'a'));
  t.RecordError(2, "s", "E", std::string(256, 'b') + "c", 0);
  EXPECT_EQ(t.Snapshot(2)[1].sample.size(), ErrorPatternTable::kMaxSampleBytes);
}

TEST(ErrorPatternTableTest, ResizeEvictsLeastRecentlyUsed) {
  ErrorPatternTable t(5);
  for (uint64_t id = 1; id <= 5; ++id) Error(t, id);
  Error(t, 1);
  t.Resize(2);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.capacity(), 2u);
  std::vector<uint64_t> ids;
  for (const auto& p : t.Snapshot(10)) ids.push_back(p.id);
  std::sort(ids.begin(), ids.end());
  EXPECT_THAT(ids, ElementsAre(1, 5));
  EXPECT_EQ(t.Stats().evictions, 3u);
  t.Resize(10);  // growing keeps everything
  EXPECT_EQ(t.size(), 2u);
}

TEST(ErrorPatternTableTest, ZeroCapacityKeepsNothing) {
  ErrorPatternTable t(0);
  Error(t, 1);
  t.RecordRetryOutcome(1, false);
  EXPECT_TRUE(t.ShouldRetry(1, 1));
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.Stats().total_errors, 1u);
  EXPECT_EQ(t.Stats().total_retries, 1u);
}

TEST(ErrorPatternTableTest, ClearForgetsEverything) {
  ErrorPatternTable t(4);
  Error(t, 1);
  t.RecordRetryOutcome(1, false);
  t.Clear();
  EXPECT_EQ(t.size(), 0u);
  EXPECT_TRUE(t.ShouldRetry(1, 1));
  const auto s = t.Stats();
  EXPECT_EQ(s.total_errors, 0u);
  EXPECT_EQ(s.total_retries, 0u);
  EXPECT_EQ(s.capacity, 4u);
}

TEST(ErrorPatternTableTest, ConcurrentUseAddsUp) {
  ErrorPatternTable t(8);
  constexpr int kThreads = 4, kPerThread = 3000;
  std::vector<std::thread> threads;
  for (int th = 0; th < kThreads; ++th) {
    threads.emplace_back([&t, th] {
      for (int i = 0; i < kPerThread; ++i) {
        const uint64_t id = static_cast<uint64_t>((i * 7 + th) % 12);
        t.RecordError(id, "step", "Err", "m " + std::to_string(i), i);
        if (t.ShouldRetry(id, 3)) t.RecordRetryOutcome(id, i % 5 == 0);
        if (i % 500 == 0) {
          t.Snapshot(4);
          t.Stats();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  const auto s = t.Stats();
  EXPECT_EQ(s.total_errors, static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(s.recoveries + s.failures_after_retry, s.total_retries);
  EXPECT_LE(s.cached_patterns, 8u);
  uint64_t occurrences = 0;
  for (const auto& p : t.Snapshot(100)) {
    occurrences += p.occurrences;
    EXPECT_EQ(p.retried, p.recovered + p.failed_after_retry);
  }
  EXPECT_LE(occurrences, s.total_errors);
}

}  // namespace
}  // namespace caudal
