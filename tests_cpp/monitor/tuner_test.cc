// The tuner's hysteresis driven analysis by analysis: cool-downs,
// reversals that must persist, bounds, memory pressure and the "a cache
// raise must pay" rule, with time passed explicitly.
#include "caudal/monitor/tuner.h"

#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr int64_t kSec = 1'000'000'000;

// An executor whose counters grow by what each phase does, and whose
// config takes the planned changes.
class TunerTest : public ::testing::Test {
 protected:
  TunerTest() { cfg_.cache_max_size = 100; }

  // 1000 lookups with `hits` hits and 300 evictions, memory normal: the
  // eviction rule asks for a larger cache.
  RecommendationInput Evicting(uint64_t hits = 667) {
    hits_ += hits;
    misses_ += 1000 - hits;
    evictions_ += 300;
    return Input("normal");
  }
  // Memory pressure and no cache traffic: the cut.
  RecommendationInput Pressure(const std::string& level = "critical") {
    return Input(level);
  }
  RecommendationInput Input(const std::string& level) {
    RecommendationInput in;
    in.config = cfg_;
    in.cache.enabled = true;
    in.cache.hits = hits_;
    in.cache.misses = misses_;
    in.cache.evictions = evictions_;
    in.memory.level = level;
    return in;
  }

  // One analysis: plan, apply to the config, commit at t seconds.
  std::vector<ConfigChange> Analyse(Tuner& t, RecommendationInput in) {
    std::vector<ConfigChange> planned = t.Plan(std::move(in), false);
    for (const ConfigChange& c : planned) {
      if (c.field == "cache_max_size") cfg_.cache_max_size = c.new_value.i;
    }
    return t.Commit(std::nullopt, ++now_s_ * kSec);
  }
  std::string Held(const Tuner& t) {
    const auto last = t.last();
    if (!last || last->held.empty()) return "";
    return last->held[0].reason;
  }

  OptimizationConfig cfg_;
  uint64_t hits_ = 0, misses_ = 0, evictions_ = 0;
  int64_t now_s_ = 0;
};

// The hysteresis alone: every raise counts as paid.
TunerRules Paid() {
  TunerRules r;
  r.cache_min_gain = -1.0;
  return r;
}

TEST_F(TunerTest, AChangeStartsACooldown) {
  Tuner t(Paid());
  auto applied = Analyse(t, Evicting());
  ASSERT_THAT(applied, SizeIs(1));
  EXPECT_EQ(applied[0].analysis, 1);
  EXPECT_EQ(applied[0].field, "cache_max_size");
  EXPECT_EQ(applied[0].old_value, ConfigValue::Int(100));
  EXPECT_EQ(applied[0].new_value, ConfigValue::Int(200));
  EXPECT_FALSE(applied[0].reversal);
  EXPECT_EQ(applied[0].time_ns, 1 * kSec);
  EXPECT_THAT(applied[0].reason,
              HasSubstr("Raise cache_max_size."));  // the recommendation's
  for (int analysis = 2; analysis <= 3; ++analysis) {
    EXPECT_THAT(Analyse(t, Evicting()), IsEmpty()) << analysis;
    EXPECT_EQ(Held(t), "cooldown: changed at analysis 1, 3 analyses");
  }
  applied = Analyse(t, Evicting());  // 4 - 1 = the cool-down
  ASSERT_THAT(applied, SizeIs(1));
  EXPECT_EQ(applied[0].new_value, ConfigValue::Int(400));
  EXPECT_EQ(t.analyses(), 4);
  EXPECT_THAT(t.changes(), SizeIs(2));
  const auto last = t.last();
  EXPECT_EQ(last->analysis, 4);
  EXPECT_EQ(last->time_ns, 4 * kSec);
  EXPECT_EQ(last->proposed, 1u);
}

TEST_F(TunerTest, AReversalMustPersist) {
  Tuner t(Paid());
  ASSERT_THAT(Analyse(t, Evicting()), SizeIs(1));  // 100 -> 200 at 1
  EXPECT_THAT(Analyse(t, Evicting()), IsEmpty());  // 2: cool-down
  EXPECT_THAT(Analyse(t, Evicting()), IsEmpty());  // 3: cool-down
  EXPECT_THAT(Analyse(t, Pressure()), IsEmpty());  // 4: seen once
  EXPECT_EQ(Held(t),
            "reversal: needs the condition in 3 consecutive analyses (seen "
            "in 1)");
  EXPECT_THAT(Analyse(t, Pressure()), IsEmpty());  // 5: seen twice
  EXPECT_EQ(Held(t),
            "reversal: needs the condition in 3 consecutive analyses (seen "
            "in 2)");
  auto applied = Analyse(t, Pressure());  // 6: three in a row
  ASSERT_THAT(applied, SizeIs(1));
  EXPECT_TRUE(applied[0].reversal);
  EXPECT_EQ(applied[0].new_value, ConfigValue::Int(100));
  // A reversal's cool-down is the longer one.
  for (int analysis = 7; analysis < 12; ++analysis) {
    EXPECT_THAT(Analyse(t, Evicting()), IsEmpty()) << analysis;
    EXPECT_EQ(Held(t), "cooldown: changed at analysis 6, 6 analyses");
  }
  applied = Analyse(t, Evicting());  // 12: persisted since 7
  ASSERT_THAT(applied, SizeIs(1));
  EXPECT_TRUE(applied[0].reversal);
  EXPECT_EQ(applied[0].new_value, ConfigValue::Int(200));
}

TEST_F(TunerTest, AnInterruptedStreakStartsOver) {
  Tuner t(Paid());
  ASSERT_THAT(Analyse(t, Evicting()), SizeIs(1));  // up at 1
  for (int i = 0; i < 3; ++i) Analyse(t, Evicting());
  // Analysis 4 raised again (up); now pressure, a calm analysis, pressure.
  EXPECT_THAT(Analyse(t, Pressure()), IsEmpty());  // 5: cool-down
  EXPECT_THAT(Analyse(t, Input("normal")), IsEmpty());
  EXPECT_THAT(Analyse(t, Pressure()), IsEmpty());  // 7: seen in 1 again
  EXPECT_EQ(Held(t),
            "reversal: needs the condition in 3 consecutive analyses (seen "
            "in 1)");
}

TEST_F(TunerTest, ValuesStayInTheirBounds) {
  Tuner t;
  auto applied = Analyse(t, Pressure());  // 100 / 2 = 50: the bound is 64
  ASSERT_THAT(applied, SizeIs(1));
  EXPECT_EQ(applied[0].new_value, ConfigValue::Int(64));
  for (int i = 0; i < 3; ++i) Analyse(t, Pressure());  // the cool-down
  EXPECT_THAT(Analyse(t, Pressure()), IsEmpty());
  EXPECT_EQ(Held(t), "at its bound (64 .. 1000000)");
  EXPECT_EQ(t.last()->held[0].value, ConfigValue::Int(64));
}

TEST_F(TunerTest, NoCacheRaiseUnderMemoryPressure) {
  Tuner t;
  cfg_.cache_max_size = 0;  // the cut (at least 1) would be a raise
  EXPECT_THAT(Analyse(t, Pressure("elevated")), IsEmpty());
  EXPECT_EQ(Held(t), "memory pressure: caches are not raised");
}

TEST_F(TunerTest, ACacheRaiseMustPay) {
  Tuner t;  // the default rules: a raise must add 2 points of hit rate
  ASSERT_THAT(Analyse(t, Evicting(667)), SizeIs(1));  // 100 -> 200
  Analyse(t, Evicting(667));
  Analyse(t, Evicting(667));
  // 66.7% before the raise and since: it did not pay.
  EXPECT_THAT(Analyse(t, Evicting(667)), IsEmpty());
  EXPECT_EQ(Held(t),
            "the last raise (100 -> 200) did not raise the hit rate (67% "
            "before, 67% since): the inputs evicted do not come back");
  // The recommendations agree (and say so instead of asking again).
  RecommendationInput in = Evicting(667);
  const auto unpaid = t.Unpaid(200, 0.667);
  ASSERT_TRUE(unpaid);
  EXPECT_EQ(unpaid->from, 100);
  EXPECT_EQ(unpaid->size, 200);
  EXPECT_EQ(unpaid->rate, 0.667);
  EXPECT_EQ(unpaid->now, 0.667);
  const auto recs = t.Recommend(in);
  ASSERT_THAT(recs, SizeIs(1));
  EXPECT_FALSE(recs[0].action);
  EXPECT_THAT(recs[0].description,
              HasSubstr("cache_max_size=100 did about as well."));
  // Not at another size, and not at a hit rate 2 points better.
  EXPECT_FALSE(t.Unpaid(400, 0.667));
  EXPECT_FALSE(t.Unpaid(200, 0.69));
  // The workload changed (the hit rate moved more than 10 points from the
  // plateau): the verdict is lifted and the raise goes ahead.
  EXPECT_THAT(Analyse(t, Evicting(667)), IsEmpty());  // still held
  const auto applied = Analyse(t, Evicting(500));
  ASSERT_THAT(applied, SizeIs(1));
  EXPECT_EQ(applied[0].new_value, ConfigValue::Int(400));
}

TEST_F(TunerTest, ARaiseThatPaidAllowsTheNext) {
  Tuner t;
  ASSERT_THAT(Analyse(t, Evicting(600)), SizeIs(1));
  Analyse(t, Evicting(600));
  Analyse(t, Evicting(600));
  EXPECT_THAT(Analyse(t, Evicting(650)), SizeIs(1));  // +5 points: paid
}

TEST_F(TunerTest, ADryRunCountsAndRemembersNothing) {
  Tuner t;
  RecommendationInput in = Evicting();
  auto planned = t.Plan(in, true);
  ASSERT_THAT(planned, SizeIs(1));
  EXPECT_EQ(planned[0].analysis, 1);
  EXPECT_EQ(planned[0].time_ns, 0);
  EXPECT_EQ(t.analyses(), 0);
  EXPECT_FALSE(t.last());
  EXPECT_FALSE(t.marks());
  EXPECT_THAT(t.Commit(std::nullopt, kSec), IsEmpty());  // nothing pending
  planned = t.Plan(in, false);
  ASSERT_THAT(planned, SizeIs(1));
  EXPECT_EQ(planned[0].analysis, 1);
}

TEST_F(TunerTest, ARefusedSwapIsCountedAndNotRemembered) {
  Tuner t;
  ASSERT_THAT(t.Plan(Evicting(), false), SizeIs(1));
  EXPECT_THAT(t.Commit("cache_max_size must be positive", kSec), IsEmpty());
  EXPECT_EQ(t.failed(), 1);
  EXPECT_THAT(t.changes(), IsEmpty());
  EXPECT_EQ(t.last()->error, "cache_max_size must be positive");
  // No cool-down: the next analysis may change the field.
  EXPECT_THAT(Analyse(t, Evicting()), SizeIs(1));
}

TEST_F(TunerTest, AnAnalysisMarksTheCounters) {
  Tuner t;
  Analyse(t, Evicting());
  const auto marks = t.marks();
  ASSERT_TRUE(marks);
  EXPECT_EQ(marks->cache_hits, 667u);
  EXPECT_EQ(marks->cache_misses, 333u);
  EXPECT_EQ(marks->cache_evictions, 300u);
  // Nothing happened since: no eviction rule.
  EXPECT_THAT(t.Recommend(Input("normal")), IsEmpty());
}

TEST_F(TunerTest, HighestPriorityWinsAField) {
  Tuner t;
  RecommendationInput in = Pressure();
  in.config.enable_circuit_breaker = false;
  StepInput s;
  s.name = "down";
  s.executions = s.attempts = 10;
  s.errors = 5;
  in.steps.push_back(s);
  const auto planned = t.Plan(in, true);
  ASSERT_THAT(planned, SizeIs(2));  // in proposal (priority) order
  EXPECT_EQ(planned[0].field, "cache_max_size");  // high
  EXPECT_EQ(planned[1].field, "enable_circuit_breaker");
  EXPECT_EQ(planned[1].new_value, ConfigValue::Bool(true));
}

TEST(TunedFieldsTest, Bounds) {
  ASSERT_THAT(TunedFields(), SizeIs(5));
  EXPECT_STREQ(TunedFields()[3].name, "telemetry_sampling_rate");
  EXPECT_EQ(TunedFields()[3].lo, ConfigValue::Float(0.01));
  EXPECT_EQ(TunedFields()[4].hi, ConfigValue::Bool(true));
}

}  // namespace
}  // namespace caudal
