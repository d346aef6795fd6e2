#include "caudal/config/optimization_config.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(OptimizationConfigTest, DefaultsMatchSeed001) {
  const OptimizationConfig c;
  EXPECT_TRUE(c.enable_object_pool);
  EXPECT_EQ(c.object_pool_max_size, 50);
  EXPECT_DOUBLE_EQ(c.object_pool_cleanup_threshold, 0.9);
  EXPECT_FALSE(c.max_concurrent_executions.has_value());
  EXPECT_EQ(c.telemetry_batch_size, 10);
  EXPECT_DOUBLE_EQ(c.telemetry_flush_interval_seconds, 30.0);
  EXPECT_EQ(c.error_cache_size, 50);
  EXPECT_EQ(c.circuit_breaker_failure_threshold, 10);
  EXPECT_DOUBLE_EQ(c.circuit_breaker_recovery_timeout_seconds, 60.0);
  EXPECT_FALSE(c.enable_cache_optimization);
  EXPECT_FALSE(c.cache_compression);
  EXPECT_DOUBLE_EQ(c.cache_ttl_seconds, 7200.0);
  EXPECT_EQ(c.cache_max_size, 500);
  EXPECT_DOUBLE_EQ(c.slow_execution_threshold_ms, 1000.0);
  EXPECT_DOUBLE_EQ(c.memory_pressure_threshold_mb, 500.0);
  EXPECT_DOUBLE_EQ(c.cpu_usage_threshold_percent, 80.0);
  EXPECT_FALSE(c.enable_automatic_optimization);
  EXPECT_THAT(c.Validate(), IsEmpty());
}

TEST(OptimizationConfigTest, ValidateNamesEachProblem) {
  OptimizationConfig c;
  c.object_pool_max_size = 0;
  c.telemetry_batch_size = -1;
  c.object_pool_cleanup_threshold = 1.5;
  c.max_concurrent_executions = 0;
  EXPECT_THAT(c.Validate(),
              ElementsAre("object_pool_max_size must be positive",
                          "object_pool_cleanup_threshold must be between 0.0 "
                          "and 1.0",
                          "max_concurrent_executions must be positive",
                          "telemetry_batch_size must be positive"));
}

TEST(OptimizationConfigTest, NonFiniteAndContradictions) {
  OptimizationConfig c;
  c.cache_ttl_seconds = std::nan("");
  c.enable_automatic_optimization = true;
  c.enable_performance_monitoring = false;
  const auto problems = c.Validate();
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0], "cache_ttl_seconds must be a finite number");
  EXPECT_THAT(problems[1], HasSubstr("enable_automatic_optimization requires"));
}

TEST(OptimizationConfigTest, JsonRoundTrip) {
  OptimizationConfig c;
  c.max_concurrent_executions = 7;
  c.cache_max_size = 1234;
  c.enable_cache_optimization = true;
  c.slow_execution_threshold_ms = 12.5;
  const auto parsed = OptimizationConfig::FromJson(c.ToJson());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, c);
  EXPECT_NE(*parsed, OptimizationConfig());
  // Compact form round-trips too, and null clears an optional field.
  const auto compact = OptimizationConfig::FromJson(
      R"({"max_concurrent_executions": null, "cache_max_size": 9})");
  ASSERT_TRUE(compact.ok()) << compact.status();
  EXPECT_FALSE(compact->max_concurrent_executions.has_value());
  EXPECT_EQ(compact->cache_max_size, 9);
}

TEST(OptimizationConfigTest, JsonKeepsDeclarationOrder) {
  const std::string json = OptimizationConfig().ToJson();
  EXPECT_LT(json.find("enable_object_pool"), json.find("cache_max_size"));
  EXPECT_THAT(json, HasSubstr("\"max_concurrent_executions\": null"));
}

TEST(OptimizationConfigTest, JsonErrorsCarryPaths) {
  const auto r = OptimizationConfig::FromJson(
      R"({"cache_max_size": "big", "no_such_field": 1,
          "enable_circuit_breaker": 1, "max_concurrent_executions": 2.5})");
  ASSERT_FALSE(r.ok());
  const std::string msg(r.status().message());
  EXPECT_THAT(msg,
              HasSubstr("$.cache_max_size: expected an integer, got string"));
  EXPECT_THAT(msg, HasSubstr("$.no_such_field: unknown field"));
  EXPECT_THAT(
      msg,
      HasSubstr("$.enable_circuit_breaker: expected a boolean, got integer"));
  EXPECT_THAT(msg, HasSubstr("$.max_concurrent_executions: expected an integer "
                             "or null, got number"));
}

TEST(OptimizationConfigTest, MalformedJsonAndWrongRoot) {
  auto r = OptimizationConfig::FromJson("{\"cache_max_size\": ");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("$: malformed JSON at line 1, column 20"));
  r = OptimizationConfig::FromJson("[1, 2]");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "$: expected a JSON object, got array");
}

TEST(OptimizationConfigTest, FromJsonRejectsInvalidValues) {
  const auto r = OptimizationConfig::FromJson(R"({"telemetry_batch_size": 0})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "telemetry_batch_size must be positive");
}

TEST(OptimizationConfigTest, AdaptiveLimitBoundsMustBeOrdered) {
  OptimizationConfig c;
  c.concurrency_min_limit = 50;
  c.concurrency_initial_limit = 20;
  EXPECT_THAT(c.Validate(), ::testing::Contains(::testing::HasSubstr(
                                "concurrency_initial_limit must be between")));
  c.concurrency_max_limit = 10;
  EXPECT_THAT(c.Validate(), ::testing::Contains(::testing::HasSubstr(
                                "concurrency_min_limit must not exceed")));
  c = OptimizationConfig();
  c.worker_pool_size = -1;
  EXPECT_THAT(c.Validate(), ::testing::Contains(::testing::HasSubstr(
                                "worker_pool_size must not be negative")));
  EXPECT_TRUE(OptimizationConfig().Validate().empty());
}

TEST(OptimizationConfigTest, FieldTableDescribesEveryField) {
  const auto& fields = ConfigFields();
  ASSERT_EQ(fields.size(), 50u);
  EXPECT_STREQ(fields[0].name, "enable_object_pool");
  EXPECT_STREQ(fields[0].default_repr, "True");
  EXPECT_EQ(fields[0].kind, FieldKind::kBool);
  for (const auto& f : fields) {
    if (std::string(f.name) == "max_concurrent_executions") {
      EXPECT_STREQ(f.default_repr, "None");
      EXPECT_EQ(f.kind, FieldKind::kOptInt);
      EXPECT_STREQ(f.rule, "must be positive, at most 16777215");
    }
    if (std::string(f.name) == "object_pool_cleanup_threshold") {
      EXPECT_STREQ(f.default_repr, "0.9");
    }
  }
}

TEST(OptimizationConfigTest, EveryNumericFieldHasAMaximum) {
  for (const auto& f : ConfigFields()) {
    if (f.kind == FieldKind::kBool) continue;
    const std::string rule = f.rule;
    EXPECT_TRUE(rule.find("at most") != std::string::npos ||
                rule.find("between") != std::string::npos)
        << f.name << ": " << rule;
  }
}

TEST(OptimizationConfigTest, ValuesAboveTheMaximumAreNamed) {
  OptimizationConfig c;
  c.object_pool_max_size = 1'000'000'000;
  c.worker_pool_task_timeout_seconds = 9.3e9;
  c.cache_max_size = INT64_MAX;
  c.circuit_breaker_failure_threshold = int64_t{1} << 32;
  c.circuit_breaker_window_size = 200'000;
  c.circuit_breaker_minimum_calls = 10;
  c.cache_ttl_seconds = 1e300;
  EXPECT_THAT(
      c.Validate(),
      ElementsAre("object_pool_max_size must be at most 65536",
                  "worker_pool_task_timeout_seconds must be at most 1000000000",
                  "circuit_breaker_failure_threshold must be at most 1000000",
                  "circuit_breaker_window_size must be at most 100000",
                  "cache_ttl_seconds must be at most 1000000000",
                  "cache_max_size must be at most 100000000"));
  // The maxima themselves are valid.
  c = OptimizationConfig();
  c.object_pool_max_size = 65'536;
  c.worker_pool_task_timeout_seconds = 1e9;
  c.cache_max_size = 100'000'000;
  c.cache_max_bytes = int64_t{1} << 50;
  EXPECT_THAT(c.Validate(), IsEmpty());
  c.cache_max_bytes = (int64_t{1} << 50) + 1;
  EXPECT_THAT(c.Validate(),
              ElementsAre("cache_max_bytes must be at most 1125899906842624"));
}

TEST(OptimizationConfigTest, FromJsonRefusesValuesAboveTheMaximum) {
  const auto r = OptimizationConfig::FromJson(
      R"({"object_pool_max_size": 9223372036854775807})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "object_pool_max_size must be at most 65536");
}

TEST(OptimizationConfigTest, DuplicateKeysAreReported) {
  const auto r = OptimizationConfig::FromJson(
      R"({"cache_max_size": 5, "cache_max_size": 6, "x": {"a": 1, "a": 2}})");
  ASSERT_FALSE(r.ok());
  const std::string msg(r.status().message());
  EXPECT_THAT(
      msg, HasSubstr("$.cache_max_size: duplicate key (given more than once)"));
  EXPECT_THAT(msg, HasSubstr("$.x.a: duplicate key"));
  EXPECT_THAT(msg, HasSubstr("$.x: unknown field"));
}

TEST(OptimizationConfigTest, BadBytesNumbersAndNestingAreStatuses) {
  auto r = OptimizationConfig::FromJson("{\n\"cache_max_size\": \"\xff\"}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "$: the text is not valid UTF-8 (byte 0xff at line 2, column 20)");
  r = OptimizationConfig::FromJson("\xed\xa0\x80");  // an encoded surrogate
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("not valid UTF-8"));
  r = OptimizationConfig::FromJson(R"({"cache_ttl_seconds": 1e400})");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("$.cache_ttl_seconds: number overflow"));
  r = OptimizationConfig::FromJson(std::string(100000, '['));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "$: JSON nested deeper than 32 levels at line 1, column 33");
  r = OptimizationConfig::FromJson(
      R"({"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["})");
  ASSERT_FALSE(r.ok());  // brackets inside strings do not count
  EXPECT_EQ(r.status().message(), "$.a: unknown field");
  r = OptimizationConfig::FromJson(std::string("{}\0", 3));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("malformed JSON"));
}

}  // namespace
}  // namespace caudal
