#include "caudal/resilience/error_patterns.h"

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "caudal/base/alloc_counter.h"
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

// --- ErrorPatternOf ---------------------------------------------------------

TEST(ErrorPatternOfTest, IsTheIdOfTheNormalisedMessage) {
  // More distinct errors than the memo holds, each asked twice: a memo hit
  // or a slot taken by another error gives the same answer.
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 3 * static_cast<int>(kPatternMemoSize); ++i) {
      const std::string step = "step" + std::to_string(i % 5);
      const std::string msg =
          "timeout " + std::to_string(i) + (i % 2 ? " at 'x'" : "");
      EXPECT_EQ(ErrorPatternOf(step, "E", msg),
                ErrorPatternId(step, "E", NormalizeMessage(msg)))
          << step << " " << msg;
    }
  }
  EXPECT_EQ(ErrorPatternOf("s", "E", ""), ErrorPatternId("s", "E", ""));
  // Messages that differ in numbers only are one pattern; the step and the
  // type still tell patterns apart.
  EXPECT_EQ(ErrorPatternOf("s", "E", "after 3 ms"),
            ErrorPatternOf("s", "E", "after 40 ms"));
  EXPECT_NE(ErrorPatternOf("s", "E", "m"), ErrorPatternOf("t", "E", "m"));
  EXPECT_NE(ErrorPatternOf("s", "E", "m"), ErrorPatternOf("s", "F", "m"));
}

TEST(ErrorPatternOfTest, AnErrorSeenBeforeAllocatesNothing) {
  if (!alloc_counter::Enabled()) GTEST_SKIP() << "allocations not counted";
  const std::string msg(200, 'x');  // normalising it would allocate
  const uint64_t id = ErrorPatternOf("step", "builtins.ValueError", msg);
  const uint64_t before = alloc_counter::ThreadAllocations();
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(ErrorPatternOf("step", "builtins.ValueError", msg), id);
  }
  EXPECT_EQ(alloc_counter::ThreadAllocations() - before, 0u);
}

TEST(ErrorPatternOfTest, ThreadsHaveTheirOwnMemo) {
  std::vector<std::thread> threads;
  std::vector<int> wrong(4, 0);
  for (int th = 0; th < 4; ++th) {
    threads.emplace_back([th, &wrong] {
      for (int i = 0; i < 2000; ++i) {
        const std::string msg = "e" + std::to_string((i * 7 + th) % 300);
        if (ErrorPatternOf("s", "E", msg) !=
            ErrorPatternId("s", "E", NormalizeMessage(msg)))
          ++wrong[th];
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_THAT(wrong, ElementsAre(0, 0, 0, 0));
}

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

TEST(ErrorPatternTableTest, SampleIsTheLatestMessageWhateverItsLength) {
  ErrorPatternTable t(10);
  for (const std::string& m :
       {std::string(100, 'a'), std::string("short"), std::string(300, 'b'),
        std::string("short"), std::string()}) {
    t.RecordError(1, "s", "E", m, 0);
    EXPECT_EQ(t.Snapshot(1)[0].sample,
              m.substr(0, ErrorPatternTable::kMaxSampleBytes));
  }
  EXPECT_EQ(t.Snapshot(1)[0].occurrences, 5u);
}

// RecordFailure(failed_retry, id, ...) is RecordRetryOutcome(failed_retry,
// false) (when failed_retry != 0), RecordError(id, ...) and ShouldRetry(id).
TEST(ErrorPatternTableTest, RecordFailureIsTheThreeCallsInOne) {
  ErrorPatternTable one(3), three(3);
  struct Step {
    uint64_t failed_retry, id;
    const char* msg;
    int min_obs;
  };
  const Step steps[] = {{0, 1, "a", 2}, {1, 1, "b", 2}, {1, 1, "c", 2},
                        {1, 2, "d", 1}, {2, 3, "e", 1}, {0, 4, "f", 1},
                        {3, 5, "g", 1}, {9, 1, "h", 1}, {5, 5, "i", 1},
                        {0, 5, "j", 3}, {2, 2, "k", 1}};
  int64_t now = 0;
  for (const Step& s : steps) {
    ++now;
    const bool got = one.RecordFailure(s.failed_retry, s.id, "step", "E", s.msg,
                                       now, s.min_obs);
    if (s.failed_retry != 0) three.RecordRetryOutcome(s.failed_retry, false);
    three.RecordError(s.id, "step", "E", s.msg, now);
    EXPECT_EQ(got, three.ShouldRetry(s.id, s.min_obs)) << "at " << now;
  }
  const ErrorTableStats a = one.Stats(), b = three.Stats();
  EXPECT_EQ(a.total_errors, b.total_errors);
  EXPECT_EQ(a.total_retries, b.total_retries);
  EXPECT_EQ(a.failures_after_retry, b.failures_after_retry);
  EXPECT_EQ(a.evictions, b.evictions);
  const auto pa = one.Snapshot(10), pb = three.Snapshot(10);
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].id, pb[i].id);
    EXPECT_EQ(pa[i].sample, pb[i].sample);
    EXPECT_EQ(pa[i].occurrences, pb[i].occurrences);
    EXPECT_EQ(pa[i].retried, pb[i].retried);
    EXPECT_EQ(pa[i].failed_after_retry, pb[i].failed_after_retry);
    EXPECT_EQ(pa[i].first_seen_ns, pb[i].first_seen_ns);
    EXPECT_EQ(pa[i].last_seen_ns, pb[i].last_seen_ns);
  }
}

TEST(ErrorPatternTableTest, RecordFailureJudgesAfterCounting) {
  ErrorPatternTable t(10);
  EXPECT_TRUE(t.RecordFailure(0, 7, "s", "E", "m", 0, 2));
  EXPECT_TRUE(t.RecordFailure(7, 7, "s", "E", "m", 1, 2));   // retried once
  EXPECT_FALSE(t.RecordFailure(7, 7, "s", "E", "m", 2, 2));  // twice: hopeless
  EXPECT_EQ(t.Snapshot(1)[0].failed_after_retry, 2u);
}

TEST(ErrorPatternTableTest, AFailureOfASeenPatternAllocatesNothing) {
  if (!alloc_counter::Enabled()) GTEST_SKIP() << "allocations not counted";
  ErrorPatternTable t(10);
  const std::string a(200, 'a'), b(180, 'b'), c(300, 'c');
  t.RecordFailure(0, 1, "step", "builtins.ValueError", c, 0, 3);
  const uint64_t before = alloc_counter::ThreadAllocations();
  for (int i = 0; i < 100; ++i) {
    // The same message, and others no longer than the sample's buffer.
    t.RecordFailure(1, 1, "step", "builtins.ValueError", i % 3 ? a : b, i, 3);
  }
  EXPECT_EQ(alloc_counter::ThreadAllocations() - before, 0u);
  EXPECT_EQ(t.Snapshot(1)[0].sample, b);  // i = 99: the latest
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
