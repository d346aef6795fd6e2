#include "caudal/executor/step_spec.h"

#include <memory>

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

}  // namespace
}  // namespace caudal
