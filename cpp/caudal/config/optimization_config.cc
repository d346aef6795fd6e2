#include "caudal/config/optimization_config.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace caudal {
namespace {

using Json = nlohmann::json;

// Validation rule of one field. Fields not listed here have no rule beyond
// their type (booleans, for instance).
enum class Rule { kNone, kPositive, kFraction, kRate, kPercent, kNonNegative };

Rule RuleFor(absl::string_view name) {
  static const struct {
    absl::string_view name;
    Rule rule;
  } kRules[] = {
      {"object_pool_max_size", Rule::kPositive},
      {"object_pool_cleanup_threshold", Rule::kFraction},
      {"max_concurrent_executions", Rule::kPositive},
      {"concurrency_initial_limit", Rule::kPositive},
      {"concurrency_min_limit", Rule::kPositive},
      {"concurrency_max_limit", Rule::kPositive},
      {"concurrency_latency_tolerance", Rule::kPositive},
      {"worker_pool_size", Rule::kNonNegative},
      {"worker_pool_queue_size", Rule::kPositive},
      {"worker_pool_task_timeout_seconds", Rule::kNonNegative},
      {"telemetry_batch_size", Rule::kPositive},
      {"telemetry_flush_interval_seconds", Rule::kPositive},
      {"telemetry_sampling_rate", Rule::kRate},
      {"telemetry_buffer_size", Rule::kPositive},
      {"error_cache_size", Rule::kPositive},
      {"circuit_breaker_failure_threshold", Rule::kPositive},
      {"circuit_breaker_recovery_timeout_seconds", Rule::kPositive},
      {"circuit_breaker_half_open_max_calls", Rule::kPositive},
      {"circuit_breaker_success_threshold", Rule::kPositive},
      {"circuit_breaker_window_size", Rule::kNonNegative},
      {"circuit_breaker_minimum_calls", Rule::kPositive},
      {"circuit_breaker_failure_rate_threshold", Rule::kFraction},
      {"error_pattern_min_observations", Rule::kPositive},
      {"cache_ttl_seconds", Rule::kPositive},
      {"cache_max_size", Rule::kPositive},
      {"cache_max_bytes", Rule::kNonNegative},
      {"slow_execution_threshold_ms", Rule::kPositive},
      {"memory_pressure_threshold_mb", Rule::kPositive},
      {"cpu_usage_threshold_percent", Rule::kPercent},
      {"optimization_analysis_interval_seconds", Rule::kPositive},
      {"performance_degradation_threshold", Rule::kPositive},
      {"performance_window_seconds", Rule::kPositive},
  };
  for (const auto& r : kRules) {
    if (r.name == name) return r.rule;
  }
  return Rule::kNone;
}

const char* RuleText(Rule rule) {
  switch (rule) {
    case Rule::kPositive:
      return "must be positive";
    case Rule::kFraction:
      return "must be between 0.0 and 1.0";
    case Rule::kRate:
      return "must be between 0.0 and 1.0 (inclusive)";
    case Rule::kPercent:
      return "must be between 0 and 100";
    case Rule::kNonNegative:
      return "must not be negative";
    case Rule::kNone:
      return "";
  }
  return "";
}

// Appends "<name> <rule>" to `out` when `value` breaks the rule.
void Check(absl::string_view name, double value,
           std::vector<std::string>& out) {
  const Rule rule = RuleFor(name);
  if (std::isnan(value) || std::isinf(value)) {
    out.push_back(absl::StrCat(name, " must be a finite number"));
    return;
  }
  bool ok = true;
  switch (rule) {
    case Rule::kPositive:
      ok = value > 0;
      break;
    case Rule::kFraction:
      ok = value > 0 && value <= 1.0;
      break;
    case Rule::kRate:
      ok = value >= 0 && value <= 1.0;
      break;
    case Rule::kPercent:
      ok = value > 0 && value <= 100.0;
      break;
    case Rule::kNonNegative:
      ok = value >= 0;
      break;
    case Rule::kNone:
      break;
  }
  if (!ok) out.push_back(absl::StrCat(name, " ", RuleText(rule)));
}

void CheckField(absl::string_view name, bool, std::vector<std::string>&) {}
void CheckField(absl::string_view name, int64_t v,
                std::vector<std::string>& out) {
  Check(name, static_cast<double>(v), out);
}
void CheckField(absl::string_view name, double v,
                std::vector<std::string>& out) {
  Check(name, v, out);
}
void CheckField(absl::string_view name, const std::optional<int64_t>& v,
                std::vector<std::string>& out) {
  if (v.has_value()) Check(name, static_cast<double>(*v), out);
}

Json ToJsonValue(bool v) { return Json(v); }
Json ToJsonValue(int64_t v) { return Json(v); }
Json ToJsonValue(double v) { return Json(v); }
Json ToJsonValue(const std::optional<int64_t>& v) {
  return v.has_value() ? Json(*v) : Json(nullptr);
}

std::string TypeName(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "integer";
    case Json::value_t::number_float:
      return "number";
    case Json::value_t::string:
      return "string";
    case Json::value_t::array:
      return "array";
    case Json::value_t::object:
      return "object";
    default:
      return "value";
  }
}

// Readers: on a type mismatch they append "$.<name>: expected X, got Y".
void FromJsonValue(const Json& j, const std::string& path, bool& out,
                   std::vector<std::string>& errors) {
  if (!j.is_boolean()) {
    errors.push_back(
        absl::StrCat(path, ": expected a boolean, got ", TypeName(j)));
    return;
  }
  out = j.get<bool>();
}
void FromJsonValue(const Json& j, const std::string& path, int64_t& out,
                   std::vector<std::string>& errors) {
  if (!j.is_number_integer()) {
    errors.push_back(
        absl::StrCat(path, ": expected an integer, got ", TypeName(j)));
    return;
  }
  if (j.is_number_unsigned() &&
      j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    errors.push_back(absl::StrCat(path, ": integer out of range"));
    return;
  }
  out = j.get<int64_t>();
}
void FromJsonValue(const Json& j, const std::string& path, double& out,
                   std::vector<std::string>& errors) {
  if (!j.is_number()) {
    errors.push_back(
        absl::StrCat(path, ": expected a number, got ", TypeName(j)));
    return;
  }
  out = j.get<double>();
}
void FromJsonValue(const Json& j, const std::string& path,
                   std::optional<int64_t>& out,
                   std::vector<std::string>& errors) {
  if (j.is_null()) {
    out.reset();
    return;
  }
  int64_t v = 0;
  const size_t before = errors.size();
  FromJsonValue(j, path, v, errors);
  if (errors.size() == before)
    out = v;
  else
    errors.back() =
        absl::StrCat(path, ": expected an integer or null, got ", TypeName(j));
}

FieldKind KindOf(bool) { return FieldKind::kBool; }
FieldKind KindOf(int64_t) { return FieldKind::kInt; }
FieldKind KindOf(double) { return FieldKind::kFloat; }
FieldKind KindOf(const std::optional<int64_t>&) { return FieldKind::kOptInt; }

std::string DefaultRepr(bool v) { return v ? "True" : "False"; }
std::string DefaultRepr(int64_t v) { return absl::StrCat(v); }
std::string DefaultRepr(double v) {
  std::string s = Json(v).dump();
  if (s.find('.') == std::string::npos && s.find('e') == std::string::npos) {
    s += ".0";
  }
  return s;
}
std::string DefaultRepr(const std::optional<int64_t>& v) {
  return v.has_value() ? absl::StrCat(*v) : "None";
}

}  // namespace

std::vector<std::string> OptimizationConfig::Validate() const {
  std::vector<std::string> problems;
#define CAUDAL_CHECK_FIELD(kind, name, def, doc) \
  CheckField(#name, name, problems);
  CAUDAL_CONFIG_FIELDS(CAUDAL_CHECK_FIELD)
#undef CAUDAL_CHECK_FIELD
  // Contradictory settings.
  if (enable_automatic_optimization && !enable_performance_monitoring) {
    problems.push_back(
        "enable_automatic_optimization requires "
        "enable_performance_monitoring (it tunes from the monitor's "
        "measurements)");
  }
  if (circuit_breaker_window_size > 0 &&
      circuit_breaker_minimum_calls > circuit_breaker_window_size) {
    problems.push_back(
        "circuit_breaker_minimum_calls must not exceed "
        "circuit_breaker_window_size (the window could never fill)");
  }
  if (concurrency_min_limit > concurrency_max_limit) {
    problems.push_back(
        "concurrency_min_limit must not exceed concurrency_max_limit");
  } else if (concurrency_initial_limit < concurrency_min_limit ||
             concurrency_initial_limit > concurrency_max_limit) {
    problems.push_back(
        "concurrency_initial_limit must be between concurrency_min_limit and "
        "concurrency_max_limit");
  }
  // The limit gates count permits in 24 bits (concurrency_gate.h).
  if (concurrency_max_limit > 16777215) {
    problems.push_back("concurrency_max_limit must be at most 16777215");
  }
  if (max_concurrent_executions.has_value() &&
      *max_concurrent_executions > 16777215) {
    problems.push_back("max_concurrent_executions must be at most 16777215");
  }
  if (concurrency_latency_tolerance > 10.0) {
    problems.push_back("concurrency_latency_tolerance must be at most 10");
  }
  if (worker_pool_size > 1024) {
    problems.push_back("worker_pool_size must be at most 1024");
  }
  return problems;
}

std::string OptimizationConfig::ToJson(int indent) const {
  Json j = Json::object();
#define CAUDAL_FIELD_TO_JSON(kind, name, def, doc) j[#name] = ToJsonValue(name);
  CAUDAL_CONFIG_FIELDS(CAUDAL_FIELD_TO_JSON)
#undef CAUDAL_FIELD_TO_JSON
  // Keep declaration order rather than nlohmann's sorted order.
  std::string out = indent >= 0 ? "{\n" : "{";
  bool first = true;
  const std::string pad(indent > 0 ? indent : 0, ' ');
  for (const FieldInfo& f : ConfigFields()) {
    if (!first) out += indent >= 0 ? ",\n" : ",";
    first = false;
    out += pad + Json(f.name).dump() + (indent >= 0 ? ": " : ":") +
           j[f.name].dump();
  }
  out += indent >= 0 ? "\n}" : "}";
  return out;
}

absl::StatusOr<OptimizationConfig> OptimizationConfig::FromJson(
    const std::string& text) {
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed JSON at byte ", e.byte, ": ", e.what()));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("$: expected a JSON object, got ", TypeName(j)));
  }
  OptimizationConfig cfg;
  std::vector<std::string> errors;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const std::string path = "$." + key;
    bool known = false;
#define CAUDAL_FIELD_FROM_JSON(kind, name, def, doc)   \
  if (!known && key == #name) {                        \
    known = true;                                      \
    FromJsonValue(it.value(), path, cfg.name, errors); \
  }
    CAUDAL_CONFIG_FIELDS(CAUDAL_FIELD_FROM_JSON)
#undef CAUDAL_FIELD_FROM_JSON
    if (!known) errors.push_back(absl::StrCat(path, ": unknown field"));
  }
  if (errors.empty()) {
    for (std::string& p : cfg.Validate()) errors.push_back(std::move(p));
  }
  if (!errors.empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  }
  return cfg;
}

bool OptimizationConfig::operator==(const OptimizationConfig& o) const {
#define CAUDAL_FIELD_EQ(kind, name, def, doc) \
  if (!(name == o.name)) return false;
  CAUDAL_CONFIG_FIELDS(CAUDAL_FIELD_EQ)
#undef CAUDAL_FIELD_EQ
  return true;
}

const std::vector<FieldInfo>& ConfigFields() {
  static const std::vector<FieldInfo>* const kFields = [] {
    auto* fields = new std::vector<FieldInfo>();
    static std::vector<std::string> reprs;  // owns default_repr strings
    const OptimizationConfig defaults;
#define CAUDAL_FIELD_INFO(kind, name, def, doc)                           \
  reprs.push_back(DefaultRepr(defaults.name));                            \
  fields->push_back(FieldInfo{#name, KindOf(defaults.name), doc, nullptr, \
                              RuleText(RuleFor(#name))});
    CAUDAL_CONFIG_FIELDS(CAUDAL_FIELD_INFO)
#undef CAUDAL_FIELD_INFO
    for (size_t i = 0; i < fields->size(); ++i) {
      (*fields)[i].default_repr = reprs[i].c_str();
    }
    return fields;
  }();
  return *kFields;
}

}  // namespace caudal
