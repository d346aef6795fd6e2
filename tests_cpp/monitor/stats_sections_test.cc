// The stats sections: each one struct with its derived figures.
#include "caudal/monitor/stats_sections.h"

#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace caudal {
namespace {

using State = CircuitBreaker::State;

BreakerRegistry::NamedSnapshot Breaker(const char* name, State state,
                                       uint64_t failures, uint64_t opens) {
  BreakerRegistry::NamedSnapshot n;
  n.name = name;
  n.snapshot = {};
  n.snapshot.state = state;
  n.snapshot.failure_count = failures;
  n.snapshot.success_count = 10;
  n.snapshot.rejected_count = 1;
  n.snapshot.open_count = opens;
  return n;
}

TEST(BreakerSectionTest, NoBreakerIsClosed) {
  const BreakerSection s = BreakerSectionOf({});
  EXPECT_EQ(s.worst, State::kClosed);
  EXPECT_EQ(s.failure_count, 0u);
  EXPECT_TRUE(s.breakers.empty());
}

TEST(BreakerSectionTest, WorstStateAndSums) {
  BreakerSection s = BreakerSectionOf({Breaker("a", State::kClosed, 1, 0),
                                       Breaker("b", State::kHalfOpen, 2, 1)});
  EXPECT_EQ(s.worst, State::kHalfOpen);
  s = BreakerSectionOf({Breaker("a", State::kClosed, 1, 0),
                        Breaker("b", State::kOpen, 2, 3),
                        Breaker("c", State::kHalfOpen, 4, 1)});
  EXPECT_EQ(s.worst, State::kOpen);
  EXPECT_EQ(s.failure_count, 7u);
  EXPECT_EQ(s.success_count, 30u);
  EXPECT_EQ(s.rejected_count, 3u);
  EXPECT_EQ(s.open_count, 4u);
  ASSERT_EQ(s.breakers.size(), 3u);
  EXPECT_EQ(s.breakers[1].name, "b");  // in the order given
}

TEST(ErrorSectionTest, Rates) {
  StepStats::Snapshot total{};
  ErrorTableStats table{};
  table.recovery_success_rate = 0.25;
  ErrorSection s = ErrorSectionOf(total, table, 0, {});
  EXPECT_EQ(s.error_rate, 0.0);  // no attempt
  EXPECT_EQ(s.recovery_success_rate, 0.0);
  total.attempts = 40;
  total.errors = 10;
  total.retries = 8;
  total.recovered = 3;
  total.failures = 1;
  s = ErrorSectionOf(total, table, 2, {});
  EXPECT_EQ(s.error_rate, 0.25);
  EXPECT_EQ(s.recovery_success_rate, 0.75);  // 3 of the 4 that failed once
  EXPECT_EQ(s.errors, 10u);
  EXPECT_EQ(s.retries, 8u);
  EXPECT_EQ(s.recovered, 3u);
  EXPECT_EQ(s.fail_fast, 2u);
  EXPECT_EQ(s.table.recovery_success_rate, 0.25);
}

StepStats::Snapshot Row(const char* name, uint64_t executions) {
  StepStats::Snapshot s{};
  s.name = name;
  s.executions = executions;
  LatencyHistogram h;
  h.Record(2'000'000);  // 2 ms
  h.Record(4'000'000);  // 4 ms
  s.latency = h.Take();
  return s;
}

StepTrend Trend(const char* step, bool regressed) {
  StepTrend t;
  t.step = step;
  t.regressed = regressed;
  t.evaluated = true;
  return t;
}

TEST(StepRowTest, LatencyInMsAndNoSettingsWithoutSpec) {
  const StepRow r = StepRowOf(Row("a", 2));
  EXPECT_EQ(r.stats.name, "a");
  EXPECT_EQ(r.stats.executions, 2u);
  EXPECT_DOUBLE_EQ(r.avg_time_ms, 3.0);
  EXPECT_DOUBLE_EQ(r.min_ms, 2.0);
  EXPECT_DOUBLE_EQ(r.max_ms, 4.0);
  EXPECT_DOUBLE_EQ(r.total_time_ms, 6.0);
  EXPECT_GE(r.p95_ms, r.p50_ms);
  EXPECT_LE(r.p99_ms, 4.0);
  EXPECT_FALSE(r.settings.has_value());
  EXPECT_FALSE(r.trend.has_value());
}

TEST(StepRowTest, SettingsAsShown) {
  StepSpec spec;
  spec.name = "fetch";
  StepSpec::Settings st = spec.settings();
  EXPECT_FALSE(st.timeout_s.has_value());     // no timeout
  EXPECT_EQ(st.cache, StepSwitch::kDefault);  // the config decides
  EXPECT_EQ(st.max_retries, 0);
  EXPECT_EQ(st.breaker, absl::optional<std::string>("fetch"));  // its own
  spec.timeout_ns = 1'500'000'000;
  spec.cache = StepSwitch::kOff;
  spec.retry.max_attempts = 4;
  spec.breaker_key = "db";
  const StepSpec::Settings given = spec.settings();
  st = StepRowOf(Row("fetch", 1), &given).settings.value();
  EXPECT_EQ(st.timeout_s, absl::optional<double>(1.5));
  EXPECT_EQ(st.cache, StepSwitch::kOff);
  EXPECT_EQ(st.max_retries, 3);
  EXPECT_EQ(st.breaker, absl::optional<std::string>("db"));
  spec.use_breaker = false;
  EXPECT_FALSE(spec.settings().breaker.has_value());  // opted out
}

TEST(ExecutionSectionTest, TrendsJoinStepsAndRegressionsAreFiltered) {
  OptimizationConfig cfg;
  cfg.slow_execution_threshold_ms = 250.0;
  cfg.performance_window_seconds = 30.0;
  std::vector<StepRow> steps;
  steps.push_back(StepRowOf(Row("a", 1)));
  steps.push_back(StepRowOf(Row("b", 1)));
  const ExecutionSection s = ExecutionSectionOf(
      StepRowOf(Row("", 2)), std::move(steps),
      {Trend("b", true), Trend("gone", true), Trend("c", false)}, cfg,
      /*in_flight=*/3, /*step_table_size=*/2, /*step_analyses=*/5,
      /*checkpoints=*/7);
  ASSERT_EQ(s.steps.size(), 2u);
  EXPECT_FALSE(s.steps[0].trend.has_value());  // no verdict for a
  ASSERT_TRUE(s.steps[1].trend.has_value());
  EXPECT_TRUE(s.steps[1].trend->regressed);
  ASSERT_EQ(s.regressions.size(), 2u);  // in the detector's order
  EXPECT_EQ(s.regressions[0].step, "b");
  EXPECT_EQ(s.regressions[1].step, "gone");
  EXPECT_EQ(s.total.stats.executions, 2u);
  EXPECT_EQ(s.in_flight, 3);
  EXPECT_EQ(s.slow_execution_threshold_ms, 250.0);
  EXPECT_EQ(s.step_table_size, 2u);
  EXPECT_EQ(s.step_analyses, 5u);
  EXPECT_EQ(s.regression_window_seconds, 30.0);
  EXPECT_EQ(s.regression_min_executions, RegressionOptions{}.min_executions);
  EXPECT_EQ(s.regression_checkpoints, 7u);
}

TEST(CacheSectionTest, UncacheableIsTheSumOverReasons) {
  ResultCacheStats c{};
  c.hits = 4;
  const CacheSection s = CacheSectionOf(
      true, c, {{"lambda", 2}, {"unhashable", 3}}, {{"step", "why"}});
  EXPECT_TRUE(s.enabled);
  EXPECT_EQ(s.cache.hits, 4u);
  EXPECT_EQ(s.uncacheable, 5u);
  ASSERT_EQ(s.uncacheable_reasons.size(), 2u);
  EXPECT_EQ(s.uncacheable_reasons[0].first, "lambda");
  ASSERT_EQ(s.uncacheable_steps.size(), 1u);
}

TEST(ConcurrencySectionTest, Mode) {
  OptimizationConfig cfg;
  cfg.max_concurrent_executions = std::nullopt;
  cfg.enable_concurrency_optimization = false;
  EXPECT_EQ(ConcurrencySectionOf(cfg, 0, 0, {}, {}, 0).mode,
            ConcurrencyMode::kUnlimited);
  cfg.enable_concurrency_optimization = true;
  EXPECT_EQ(ConcurrencySectionOf(cfg, 0, 0, {}, {}, 0).mode,
            ConcurrencyMode::kAdaptive);
  cfg.max_concurrent_executions = 8;
  const ConcurrencySection s = ConcurrencySectionOf(cfg, 2, 1, {}, {}, 5);
  EXPECT_EQ(s.mode, ConcurrencyMode::kFixed);
  EXPECT_EQ(s.max_concurrent_executions, std::optional<int64_t>(8));
  EXPECT_EQ(s.slots_in_use, 2);
  EXPECT_EQ(s.waiting, 1);
  EXPECT_EQ(s.in_flight, 5);
  EXPECT_STREQ(ConcurrencyModeName(ConcurrencyMode::kFixed), "fixed");
  EXPECT_STREQ(ConcurrencyModeName(ConcurrencyMode::kAdaptive), "adaptive");
  EXPECT_STREQ(ConcurrencyModeName(ConcurrencyMode::kUnlimited), "unlimited");
}

}  // namespace
}  // namespace caudal
