#include "caudal/config/optimization_config.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace caudal {
namespace {

using Json = nlohmann::json;

// Validation rule of one field: a lower bound (the Rule) and a maximum.
// Fields not listed here have no rule beyond their type (booleans).
enum class Rule { kNone, kPositive, kFraction, kRate, kPercent, kNonNegative };

constexpr double kNoMax = std::numeric_limits<double>::infinity();
// Durations: at most ~31 years, so that seconds * 1e9 (the nanoseconds the
// core counts in int64) and a clock reading plus it stay far from overflow.
constexpr double kMaxSeconds = 1e9;
// Counts the core keeps in an int, and sizes of things it allocates.
constexpr double kMaxCount = 1'000'000;
// The concurrency gates count permits in 24 bits (concurrency_gate.h).
constexpr double kMaxPermits = 16'777'215;

struct Bound {
  absl::string_view name;
  Rule rule;
  double max;
};

// One entry per numeric field (ConfigTest checks that), with why its
// maximum is what it is where it is not one of the constants above.
constexpr Bound kBounds[] = {
    // The record pool reserves room for this many idle records in each of
    // its 8 shards when the executor is made: 8 * 8 B * 65,536 = 4 MiB.
    {"object_pool_max_size", Rule::kPositive, 65'536},
    {"object_pool_cleanup_threshold", Rule::kFraction, 1.0},
    {"max_concurrent_executions", Rule::kPositive, kMaxPermits},
    {"concurrency_initial_limit", Rule::kPositive, kMaxPermits},
    {"concurrency_min_limit", Rule::kPositive, kMaxPermits},
    {"concurrency_max_limit", Rule::kPositive, kMaxPermits},
    {"concurrency_latency_tolerance", Rule::kPositive, 10.0},
    {"worker_pool_size", Rule::kNonNegative, 1024},  // threads
    {"worker_pool_queue_size", Rule::kPositive, 100'000'000},
    {"worker_pool_task_timeout_seconds", Rule::kNonNegative, kMaxSeconds},
    {"max_tracked_steps", Rule::kPositive, 100'000'000},
    {"telemetry_batch_size", Rule::kPositive, kMaxCount},
    {"telemetry_flush_interval_seconds", Rule::kPositive, kMaxSeconds},
    {"telemetry_sampling_rate", Rule::kRate, 1.0},
    {"telemetry_buffer_size", Rule::kPositive, kMaxCount},
    {"error_cache_size", Rule::kPositive, kMaxCount},
    {"circuit_breaker_failure_threshold", Rule::kPositive, kMaxCount},
    {"circuit_breaker_recovery_timeout_seconds", Rule::kPositive, kMaxSeconds},
    {"circuit_breaker_half_open_max_calls", Rule::kPositive, kMaxCount},
    {"circuit_breaker_success_threshold", Rule::kPositive, kMaxCount},
    // Each breaker keeps a bit per call of its window: 12.5 KB at most.
    {"circuit_breaker_window_size", Rule::kNonNegative, 100'000},
    {"circuit_breaker_minimum_calls", Rule::kPositive, kMaxCount},
    {"circuit_breaker_failure_rate_threshold", Rule::kFraction, 1.0},
    {"retry_after_max_seconds", Rule::kPositive, kMaxSeconds},
    {"error_pattern_min_observations", Rule::kPositive, kMaxCount},
    {"cache_ttl_seconds", Rule::kPositive, kMaxSeconds},
    {"cache_max_size", Rule::kPositive, 100'000'000},
    {"cache_max_bytes", Rule::kNonNegative, 1125899906842624.0},  // 1 PiB
    {"slow_execution_threshold_ms", Rule::kPositive, kMaxSeconds * 1e3},
    {"memory_pressure_threshold_mb", Rule::kPositive, 1e9},  // 1 PB
    {"cpu_usage_threshold_percent", Rule::kPercent, 100.0},
    {"optimization_analysis_interval_seconds", Rule::kPositive, kMaxSeconds},
    {"performance_degradation_threshold", Rule::kPositive, 1000.0},
    {"performance_window_seconds", Rule::kPositive, kMaxSeconds},
};

const Bound* BoundFor(absl::string_view name) {
  for (const Bound& b : kBounds) {
    if (b.name == name) return &b;
  }
  return nullptr;
}

Rule RuleFor(absl::string_view name) {
  const Bound* b = BoundFor(name);
  return b != nullptr ? b->rule : Rule::kNone;
}

// "65536", "1000000000", "0.5".
std::string FormatMax(double max) {
  if (max == std::floor(max) && max < 1e16) {
    return absl::StrCat(static_cast<int64_t>(max));
  }
  return absl::StrCat(max);
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

// The rule in words, maximum included: "must be positive, at most 65536".
// Fractions and percents already name theirs.
std::string FullRuleText(absl::string_view name) {
  const Bound* b = BoundFor(name);
  if (b == nullptr) return "";
  std::string text = RuleText(b->rule);
  const bool named = b->rule == Rule::kFraction || b->rule == Rule::kRate ||
                     b->rule == Rule::kPercent;
  if (!named && b->max != kNoMax) {
    absl::StrAppend(&text, ", at most ", FormatMax(b->max));
  }
  return text;
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
  if (!ok) {
    out.push_back(absl::StrCat(name, " ", RuleText(rule)));
    return;
  }
  const Bound* b = BoundFor(name);
  if (b != nullptr && value > b->max) {
    out.push_back(absl::StrCat(name, " must be at most ", FormatMax(b->max)));
  }
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

// Brackets nest at most this deep in config JSON (the config is one flat
// object; deeper text is refused before it is parsed).
constexpr int kMaxJsonDepth = 32;

// "line L, column C" of byte `offset` of `text` (1-based; columns count
// bytes).
std::string Where(const std::string& text, size_t offset) {
  offset = std::min(offset, text.size());
  size_t line = 1;
  size_t line_start = 0;
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return absl::StrCat("line ", line, ", column ", offset - line_start + 1);
}

// Offset of the first byte of `s` that is not valid UTF-8 (overlong forms,
// surrogates and code points past U+10FFFF included), or npos.
size_t InvalidUtf8(const std::string& s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
        (len == 4 && cp < 0x10000) || (cp >= 0xD800 && cp <= 0xDFFF) ||
        cp > 0x10FFFF) {
      return i;
    }
    i += len;
  }
  return std::string::npos;
}

// Offset of the first bracket (outside strings) nested deeper than
// `max_depth`, or npos.
size_t TooDeep(const std::string& s, int max_depth) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return i;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return std::string::npos;
}

// `parent.key`, or `parent["key"]` (JSON-escaped) when the key is not a
// plain name: a problem is one line, whatever the key holds.
std::string KeyPath(const std::string& parent, const std::string& key) {
  bool plain = !key.empty() && !absl::ascii_isdigit(key[0]);
  for (char c : key) {
    plain = plain && (absl::ascii_isalnum(c) || c == '_');
  }
  if (plain) return absl::StrCat(parent, ".", key);
  return absl::StrCat(parent, "[", Json(key).dump(), "]");
}

// nlohmann's message without its "[json.exception.parse_error.101] parse
// error at line 1, column 2: " prefix (the caller says where).
std::string ParseErrorDetail(absl::string_view what) {
  if (absl::ConsumePrefix(&what, "[json.exception.")) {
    const size_t close = what.find("] ");
    if (close != absl::string_view::npos) what.remove_prefix(close + 2);
  }
  if (absl::ConsumePrefix(&what, "parse error")) {
    const size_t colon = what.find(": ");
    if (colon != absl::string_view::npos) what.remove_prefix(colon + 2);
  }
  return std::string(what);
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
  if (const size_t bad = InvalidUtf8(text); bad != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "$: the text is not valid UTF-8 (byte 0x",
        absl::Hex(static_cast<unsigned char>(text[bad]), absl::kZeroPad2),
        " at ", Where(text, bad), ")"));
  }
  // nlohmann stops at a NUL byte as at the end of the text: anything after
  // it would be ignored. JSON allows none anywhere.
  if (const size_t nul = text.find('\0'); nul != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "$: malformed JSON at ", Where(text, nul), ": a NUL byte"));
  }
  if (const size_t deep = TooDeep(text, kMaxJsonDepth);
      deep != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("$: JSON nested deeper than ", kMaxJsonDepth,
                     " levels at ", Where(text, deep)));
  }
  // The parser's callback sees every key: duplicates (which nlohmann would
  // resolve silently, the last one winning) are reported with their path.
  struct Frame {
    bool object;
    std::string path;      // of this object or array
    std::string key_path;  // of the last key read (objects)
    std::set<std::string> keys;
  };
  std::vector<Frame> open;
  std::vector<std::string> errors;
  auto child_path = [&open]() -> std::string {
    if (open.empty()) return "$";
    const Frame& f = open.back();
    return f.object ? f.key_path : f.path + "[]";
  };
  Json j;
  try {
    j = Json::parse(text, [&](int, Json::parse_event_t event, Json& parsed) {
      switch (event) {
        case Json::parse_event_t::object_start:
        case Json::parse_event_t::array_start:
          open.push_back(Frame{event == Json::parse_event_t::object_start,
                               child_path(),
                               "",
                               {}});
          break;
        case Json::parse_event_t::key: {
          Frame& f = open.back();
          const std::string key = parsed.get<std::string>();
          f.key_path = KeyPath(f.path, key);
          if (!f.keys.insert(key).second) {
            errors.push_back(absl::StrCat(
                f.key_path, ": duplicate key (given more than once)"));
          }
          break;
        }
        case Json::parse_event_t::object_end:
        case Json::parse_event_t::array_end:
          if (!open.empty()) open.pop_back();
          break;
        case Json::parse_event_t::value:
          break;
      }
      return true;
    });
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "$: malformed JSON at ", Where(text, e.byte > 0 ? e.byte - 1 : 0), ": ",
        ParseErrorDetail(e.what())));
  } catch (const Json::exception& e) {
    // A number too large for a double ("1e400"), and anything else the
    // parser refuses: at the value being read.
    return absl::InvalidArgumentError(
        absl::StrCat(child_path(), ": ", ParseErrorDetail(e.what())));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("$: expected a JSON object, got ", TypeName(j)));
  }
  OptimizationConfig cfg;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const std::string path = KeyPath("$", key);
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
    static std::vector<std::string> rules;  // owns rule strings
    const OptimizationConfig defaults;
#define CAUDAL_FIELD_INFO(kind, name, def, doc) \
  reprs.push_back(DefaultRepr(defaults.name));  \
  rules.push_back(FullRuleText(#name));         \
  fields->push_back(                            \
      FieldInfo{#name, KindOf(defaults.name), doc, nullptr, nullptr});
    CAUDAL_CONFIG_FIELDS(CAUDAL_FIELD_INFO)
#undef CAUDAL_FIELD_INFO
    for (size_t i = 0; i < fields->size(); ++i) {
      (*fields)[i].default_repr = reprs[i].c_str();
      (*fields)[i].rule = rules[i].c_str();
    }
    return fields;
  }();
  return *kFields;
}

}  // namespace caudal
