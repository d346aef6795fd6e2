// The recommendation rules at their thresholds: each fires at its trigger
// and not one count below, with the exact text and action.
#include "caudal/monitor/recommendations.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// A quiet executor: nothing in it calls for advice.
RecommendationInput Quiet() {
  RecommendationInput in;
  in.config.memory_pressure_threshold_mb = 500;
  in.memory.level = "normal";
  in.memory.usage_mb = 100;
  in.memory.threshold_mb = 500;
  return in;
}

StepInput Step(const std::string& name, uint64_t executions) {
  StepInput s;
  s.name = name;
  s.executions = executions;
  s.attempts = executions;
  return s;
}

std::vector<Recommendation> Rules(const RecommendationInput& in) {
  return Recommend(in);
}

TEST(RecommendationsTest, QuietExecutorGetsNone) {
  RecommendationInput in = Quiet();
  in.steps.push_back(Step("fine", 1000));
  EXPECT_THAT(Rules(in), IsEmpty());
}

TEST(RecommendationsTest, NamesAreQuotedAsPythonReprDoes) {
  EXPECT_EQ(QuotedName("fetch"), "'fetch'");
  EXPECT_EQ(QuotedName("it's"), "\"it's\"");
  EXPECT_EQ(QuotedName("a'b\"c"), "'a\\'b\"c'");
  EXPECT_EQ(QuotedName("back\\slash\n"), "'back\\\\slash\\n'");
  EXPECT_EQ(QuotedName(std::string("\x01", 1)), "'\\x01'");
  EXPECT_EQ(QuotedName("café"), "'café'");
}

TEST(RecommendationsTest, NoHitCacheAtOneHundredLookups) {
  RecommendationInput in = Quiet();
  StepInput s = Step("fresh", 0);
  s.cache_misses = kCacheNoHitLookups - 1;
  in.steps.push_back(s);
  EXPECT_THAT(Rules(in), IsEmpty());
  in.steps[0].cache_misses = kCacheNoHitLookups;
  const auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_EQ(recs[0].description,
            "Step 'fresh': 100 cache lookups and not one hit: its inputs do "
            "not repeat. Step(cache=False) saves hashing the input and storing "
            "the output.");
  EXPECT_EQ(recs[0].priority, Level::kLow);
  EXPECT_EQ(recs[0].impact, Level::kLow);
  EXPECT_FALSE(recs[0].automatic);
  EXPECT_EQ(recs[0].step, "fresh");
  // A hit, or an execution that shared a flight, says inputs repeat.
  in.steps[0].shared_flights = 1;
  EXPECT_THAT(Rules(in), IsEmpty());
}

TEST(RecommendationsTest, NoHitCacheNamesWhatTheCacheDropped) {
  RecommendationInput in = Quiet();
  in.config.cache_max_size = 50;
  in.config.cache_max_bytes = 4096;
  in.cache.evictions = 300;
  in.cache.expirations = 4;
  in.cache.invalidations = 2;
  StepInput s = Step("cycle", 0);
  s.cache_misses = 100;
  in.steps.push_back(s);
  const auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_EQ(recs[0].description,
            "Step 'cycle': 100 cache lookups and not one hit, while the cache "
            "evicted 300 entries, let 4 expire, invalidated 2: either its "
            "inputs do not repeat, or they come back only after the cache "
            "dropped them. If they repeat, a larger cache_max_size (now 50) or "
            "cache_max_bytes (now 4096) or a longer cache_ttl_seconds (or "
            "Step(cache_ttl_s=...)) keeps them; if not, Step(cache=False) "
            "saves hashing the input and storing the output.");
  in.cache.evictions = in.cache.expirations = 0;
  EXPECT_THAT(Rules(in)[0].description,
              HasSubstr("while the cache invalidated 2: either its inputs do "
                        "not repeat, or they come back only after the cache "
                        "dropped them. If not, Step(cache=False)"));
}

TEST(RecommendationsTest, SlowStepAboveTheThresholdFromFiveExecutions) {
  RecommendationInput in = Quiet();
  in.config.slow_execution_threshold_ms = 100;
  StepInput s = Step("slow", kSlowMinExecutions - 1);
  s.p95_ms = 250;
  in.steps.push_back(s);
  EXPECT_THAT(Rules(in), IsEmpty());
  in.steps[0].executions = kSlowMinExecutions;
  in.steps[0].p95_ms = 100;  // at the threshold: not above it
  EXPECT_THAT(Rules(in), IsEmpty());
  in.steps[0].p95_ms = 250;
  const auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  // Unknown settings: both remedies.
  EXPECT_EQ(recs[0].description,
            "Step 'slow': p95 latency 250.0 ms is above "
            "slow_execution_threshold_ms (100 ms). Set a timeout_s on the "
            "step, or cache it if its inputs repeat.");
  EXPECT_EQ(recs[0].priority, Level::kHigh);
}

TEST(RecommendationsTest, SlowStepIsNotToldWhatItHas) {
  RecommendationInput in = Quiet();
  in.config.slow_execution_threshold_ms = 1;
  StepInput s = Step("s", 10);
  s.p95_ms = 5;
  s.settings = StepSettingsInput{};
  s.settings->timeout_s = 5.0;
  in.steps.push_back(s);
  EXPECT_THAT(Rules(in)[0].description,
              HasSubstr("It has timeout_s=5; cache it if its inputs repeat."));
  in.steps[0].settings->timeout_s.reset();
  in.steps[0].settings->cache = true;
  in.steps[0].cache_hits = 1;
  in.steps[0].cache_misses = 3;
  EXPECT_THAT(Rules(in)[0].description,
              HasSubstr("It is cached (25% hit rate); set a timeout_s on the "
                        "step."));
  in.steps[0].settings->timeout_s = 2.5;
  EXPECT_THAT(Rules(in)[0].description,
              HasSubstr("It already has timeout_s=2.5 and is cached (25% hit "
                        "rate): its executions (the cache misses) are slow "
                        "themselves."));
  in.cache.uncacheable_steps["s"] = "a closure over a socket";
  EXPECT_THAT(Rules(in)[0].description,
              HasSubstr("It has timeout_s=2.5; its results are not cached (a "
                        "closure over a socket): give it a cache_key if its "
                        "inputs repeat."));
}

TEST(RecommendationsTest, FailingStepWithRetriesThatNeverRecover) {
  RecommendationInput in = Quiet();
  StepInput s = Step("flaky", 9);
  s.errors = 9;
  s.retries = 4;
  in.steps.push_back(s);
  EXPECT_THAT(Rules(in), IsEmpty());  // 9 attempts: too few to judge
  in.steps[0].attempts = kErrorMinAttempts;
  in.steps[0].errors = 1;  // 10%: not above
  EXPECT_THAT(Rules(in), IsEmpty());
  in.steps[0].errors = 2;
  in.steps[0].settings = StepSettingsInput{};
  in.steps[0].settings->max_retries = 3;
  const auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_EQ(recs[0].description,
            "Step 'flaky': 20% of attempts fail and retries never recovered "
            "(4 retries). Retrying this error only adds load; lower "
            "max_retries (now 3) or fix the cause.");
  EXPECT_EQ(recs[0].impact, Level::kMedium);
  EXPECT_EQ(recs[0].priority, Level::kHigh);
}

TEST(RecommendationsTest, FailingStepWithoutBreakerGetsOneAutomatically) {
  RecommendationInput in = Quiet();
  in.config.enable_circuit_breaker = false;
  StepInput s = Step("down", 10);
  s.errors = 5;
  in.steps.push_back(s);
  const auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_EQ(recs[0].description,
            "Step 'down': 50% of attempts fail. Enable the circuit breaker so "
            "a failing backend is not hammered.");
  EXPECT_TRUE(recs[0].automatic);
  ASSERT_TRUE(recs[0].action);
  EXPECT_EQ(recs[0].action->field, "enable_circuit_breaker");
  EXPECT_EQ(recs[0].action->value, ConfigValue::Bool(true));
  EXPECT_EQ(recs[0].action->current, ConfigValue::Bool(false));
  // A step that opted out of breakers would not get one.
  in.steps[0].settings = StepSettingsInput{};
  in.steps[0].settings->breaker_opted_out = true;
  EXPECT_THAT(Rules(in), IsEmpty());
  // Breakers on: nothing to switch on.
  in.steps[0].settings.reset();
  in.config.enable_circuit_breaker = true;
  EXPECT_THAT(Rules(in), IsEmpty());
}

TEST(RecommendationsTest, TimeoutsAboveFivePercentOfAttempts) {
  RecommendationInput in = Quiet();
  StepInput s = Step("tight", 20);
  s.timeouts = 1;  // 5%: not above
  in.steps.push_back(s);
  EXPECT_THAT(Rules(in), IsEmpty());
  in.steps[0].timeouts = 2;
  in.steps[0].settings = StepSettingsInput{};
  in.steps[0].settings->timeout_s = 0.5;
  const auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_EQ(recs[0].description,
            "Step 'tight': 2 of 20 attempts timed out. Raise the step's "
            "timeout_s (now 0.5) or lower concurrency against its backend.");
}

TEST(RecommendationsTest, Regression) {
  RecommendationInput in = Quiet();
  in.regressions.push_back({"db", 3.0, 2.0, 60.0});
  const auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_EQ(recs[0].description,
            "Step 'db': latency regressed — p95 3.000 ms over the last 60 s "
            "against 2.000 ms before (+50%, threshold 20%). Look for what "
            "changed in the step or its backend.");
  EXPECT_EQ(recs[0].step, "db");
}

TEST(RecommendationsTest, BreakerOpensCountSinceTheMarks) {
  RecommendationInput in = Quiet();
  in.breakers.push_back({"api", kBreakerOpens - 1});
  EXPECT_THAT(Rules(in), IsEmpty());
  in.breakers[0].open_count = kBreakerOpens;
  auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_EQ(recs[0].description,
            "Circuit breaker 'api' opened 3 times: its backend keeps failing "
            "after recovery. Fix the backend, or raise "
            "circuit_breaker_recovery_timeout_seconds (60 s) so it gets longer "
            "to recover.");
  EXPECT_EQ(recs[0].key, "api");
  in.marks = CounterMarks{};
  in.marks->breaker_opens["api"] = 1;
  in.breakers[0].open_count = 3;  // 2 since the marks
  EXPECT_THAT(Rules(in), IsEmpty());
  in.breakers[0].open_count = 4;
  recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_THAT(recs[0].description,
              HasSubstr("opened 3 times since the last analysis:"));
  // A count below its mark was reset: all of it counts.
  in.marks->breaker_opens["api"] = 10;
  EXPECT_THAT(Rules(in), SizeIs(1));
}

TEST(RecommendationsTest, PinnedAdaptiveLimitOncePerAnalysis) {
  RecommendationInput in = Quiet();
  in.config.concurrency_max_limit = 2;
  ConcurrencyKeyInput k{"held", true, 2, 2, 0};
  in.concurrency_keys = {k, k};
  in.concurrency_keys[1].key = "other";
  in.concurrency_keys[0].in_flight = 1;  // room left, nobody waiting
  auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));  // the second key; one is enough
  EXPECT_EQ(recs[0].key, "other");
  in.concurrency_keys[0].waiting = 4;
  recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_EQ(recs[0].description,
            "Concurrency key 'held': the adaptive limit is pinned at "
            "concurrency_max_limit=2 with 1 in flight and 4 waiting: the "
            "backend has not pushed back yet. Raise concurrency_max_limit.");
  EXPECT_EQ(recs[0].action->value, ConfigValue::Int(4));
  EXPECT_EQ(recs[0].action->current, ConfigValue::Int(2));
  in.concurrency_keys[0].limit = 1;  // below the maximum
  in.concurrency_keys[1].adaptive = false;
  EXPECT_THAT(Rules(in), IsEmpty());
}

TEST(RecommendationsTest, WorkerPoolWaitsSinceTheMarks) {
  RecommendationInput in = Quiet();
  in.config.worker_pool_queue_size = 100;
  in.pool_waits = kPoolWaits - 1;
  EXPECT_THAT(Rules(in), IsEmpty());
  in.pool_waits = kPoolWaits;
  auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_EQ(recs[0].description,
            "Worker pool: 10 sync-step submissions found its queue "
            "(worker_pool_queue_size=100) full. Raise worker_pool_queue_size, "
            "or worker_pool_size if the steps are I/O bound.");
  EXPECT_EQ(recs[0].action->value, ConfigValue::Int(200));
  in.own_pool = false;  // another's pool: advice only
  recs = Rules(in);
  EXPECT_FALSE(recs[0].automatic);
  EXPECT_FALSE(recs[0].action);
  in.marks = CounterMarks{};
  in.marks->pool_waits = 1;
  EXPECT_THAT(Rules(in), IsEmpty());
}

// A cache that evicted `evictions` and hit `hits` of `lookups`.
RecommendationInput Evicting(uint64_t lookups, uint64_t hits,
                             uint64_t evictions) {
  RecommendationInput in = Quiet();
  in.config.cache_max_size = 100;
  in.cache.enabled = true;
  in.cache.hits = hits;
  in.cache.misses = lookups - hits;
  in.cache.evictions = evictions;
  return in;
}

TEST(RecommendationsTest, EvictionsWithAGoodHitRateRaiseTheCache) {
  EXPECT_THAT(Rules(Evicting(99, 60, 50)), IsEmpty());   // too few lookups
  EXPECT_THAT(Rules(Evicting(100, 39, 50)), IsEmpty());  // hit rate < 40%
  EXPECT_THAT(Rules(Evicting(100, 60, 9)), IsEmpty());   // evictions < 10%
  const auto recs = Rules(Evicting(100, 40, 10));
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_EQ(recs[0].description,
            "Result cache: 10 evictions for 100 lookups with a 40% hit rate: "
            "the working set does not fit in cache_max_size=100. Raise "
            "cache_max_size.");
  EXPECT_EQ(recs[0].action->field, "cache_max_size");
  EXPECT_EQ(recs[0].action->value, ConfigValue::Int(200));
  RecommendationInput off = Evicting(100, 40, 10);
  off.cache.enabled = false;
  EXPECT_THAT(Rules(off), IsEmpty());
}

TEST(RecommendationsTest, AnUnpaidRaiseIsNotAskedForAgain) {
  RecommendationInput in = Evicting(1000, 667, 333);
  in.marks = CounterMarks{};  // since the last analysis (nothing before)
  in.unpaid = UnpaidRaise{100, 200, 0.667, 0.66};
  const auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_EQ(recs[0].description,
            "Result cache: 333 evictions for 1000 lookups with a 67% hit rate "
            "since the last analysis, but the last raise of cache_max_size "
            "(100 -> 200) did not raise the hit rate (67% before, 66% since): "
            "the inputs it evicts do not come back while 200 entries would "
            "still hold them. A larger cache costs memory and buys nothing; "
            "cache_max_size=100 did about as well.");
  EXPECT_FALSE(recs[0].automatic);
  EXPECT_FALSE(recs[0].action);
}

TEST(RecommendationsTest, MemoryPressureHalvesTheCacheFirst) {
  RecommendationInput in = Evicting(1000, 667, 333);  // would ask for more
  in.memory.level = "critical";
  in.memory.usage_mb = 612.4;
  in.memory.shrunk = {"result cache to 50%", "record pool"};
  const auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));  // not the raise
  EXPECT_EQ(recs[0].description,
            "Memory pressure (critical): RSS 612 MB against "
            "memory_pressure_threshold_mb=500. caudal shrank: result cache to "
            "50%; record pool. Lower cache_max_size / cache_max_bytes, or "
            "raise the threshold if this much memory is expected.");
  EXPECT_EQ(recs[0].priority, Level::kHigh);
  EXPECT_EQ(recs[0].action->value, ConfigValue::Int(50));
  in.memory.level = "elevated";
  in.memory.shrunk.clear();
  in.config.cache_max_size = 1;
  const auto elevated = Rules(in);
  EXPECT_EQ(elevated[0].priority, Level::kMedium);
  EXPECT_THAT(elevated[0].description,
              HasSubstr("caudal shrank: nothing left to shrink."));
  EXPECT_EQ(elevated[0].action->value, ConfigValue::Int(1));  // at least 1
}

TEST(RecommendationsTest, CpuAboveItsThresholdOnceMeasured) {
  RecommendationInput in = Quiet();
  in.cpu = {95.0, 380.0, 0.0, 4};  // no window yet
  EXPECT_THAT(Rules(in), IsEmpty());
  in.cpu.window_s = 10;
  in.cpu.percent = 80;  // at the threshold
  EXPECT_THAT(Rules(in), IsEmpty());
  in.cpu.percent = 95;
  const auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_EQ(recs[0].description,
            "CPU: the process used 95% of its 4 CPUs (380% of one core) over "
            "the last 10 s, above cpu_usage_threshold_percent=80. CPU-bound "
            "steps compete for the GIL: run them in processes "
            "(backend='ray'), or lower their concurrency.");
}

TEST(RecommendationsTest, TelemetryExportAboveFivePercentOfUptime) {
  RecommendationInput in = Quiet();
  in.telemetry = {0.5, 10.0, 5000};  // 5%: not above
  EXPECT_THAT(Rules(in), IsEmpty());
  in.telemetry.export_seconds = 0.6;
  auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_EQ(recs[0].description,
            "Telemetry: exporters took 0.60 s of 10 s (6%, 5000 spans). "
            "Halve telemetry_sampling_rate (1).");
  EXPECT_EQ(recs[0].action->value, ConfigValue::Float(0.5));
  EXPECT_EQ(recs[0].action->current, ConfigValue::Float(1.0));
  // Since the marks: 0.35 s of the last 5 s.
  in.marks = CounterMarks{};
  in.marks->export_seconds = 0.35;
  in.marks->uptime_seconds = 5.0;
  in.telemetry.export_seconds = 0.7;
  recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_THAT(recs[0].description, HasSubstr("took 0.35 s of 5 s (7%,"));
  in.telemetry.export_seconds = 0.6;  // 0.25 of 5 s: 5%
  EXPECT_THAT(Rules(in), IsEmpty());
}

TEST(RecommendationsTest, HighestPriorityFirstInRuleOrder) {
  RecommendationInput in = Evicting(100, 40, 10);  // medium
  StepInput fresh = Step("fresh", 0);
  fresh.cache_misses = 200;  // low
  in.steps.push_back(fresh);
  in.breakers.push_back({"b1", 3});  // high
  in.breakers.push_back({"b2", 5});  // high
  const auto recs = Rules(in);
  ASSERT_THAT(recs, SizeIs(4));
  EXPECT_EQ(recs[0].key, "b1");
  EXPECT_EQ(recs[1].key, "b2");
  EXPECT_EQ(recs[2].priority, Level::kMedium);
  EXPECT_EQ(recs[3].step, "fresh");
}

TEST(RecommendationsTest, MarksAndHitRate) {
  RecommendationInput in = Evicting(1000, 600, 300);
  in.pool_waits = 7;
  in.telemetry = {1.5, 30.0, 0};
  in.breakers.push_back({"api", 2});
  const CounterMarks m = MarksOf(in);
  EXPECT_EQ(m.cache_hits, 600u);
  EXPECT_EQ(m.cache_misses, 400u);
  EXPECT_EQ(m.cache_evictions, 300u);
  EXPECT_EQ(m.pool_waits, 7u);
  EXPECT_EQ(m.export_seconds, 1.5);
  EXPECT_EQ(m.uptime_seconds, 30.0);
  EXPECT_EQ(m.breaker_opens.at("api"), 2u);
  EXPECT_EQ(CacheHitRate(in.cache, std::nullopt), 0.6);
  in.cache.hits = 700;
  in.cache.misses = 700;  // +100 hits, +300 misses since m
  EXPECT_EQ(CacheHitRate(in.cache, m), 0.25);
  EXPECT_EQ(CacheHitRate(CacheInput{}, std::nullopt), std::nullopt);
}

}  // namespace
}  // namespace caudal
