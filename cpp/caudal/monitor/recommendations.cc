#include "caudal/monitor/recommendations.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace caudal {

ConfigValue ConfigValue::Bool(bool v) {
  ConfigValue c;
  c.kind = FieldKind::kBool;
  c.b = v;
  return c;
}
ConfigValue ConfigValue::Int(int64_t v) {
  ConfigValue c;
  c.kind = FieldKind::kInt;
  c.i = v;
  return c;
}
ConfigValue ConfigValue::Float(double v) {
  ConfigValue c;
  c.kind = FieldKind::kFloat;
  c.f = v;
  return c;
}
double ConfigValue::AsDouble() const {
  switch (kind) {
    case FieldKind::kBool:
      return b ? 1.0 : 0.0;
    case FieldKind::kFloat:
      return f;
    default:
      return static_cast<double>(i);
  }
}
bool ConfigValue::operator==(const ConfigValue& o) const {
  if (kind != o.kind) return false;
  switch (kind) {
    case FieldKind::kBool:
      return b == o.b;
    case FieldKind::kFloat:
      return f == o.f;
    default:
      return i == o.i;
  }
}

namespace {
ConfigValue Of(bool v) { return ConfigValue::Bool(v); }
ConfigValue Of(int64_t v) { return ConfigValue::Int(v); }
ConfigValue Of(double v) { return ConfigValue::Float(v); }
std::optional<ConfigValue> Of(const std::optional<int64_t>&) {
  return std::nullopt;  // OPT_INT fields are never tuned
}
}  // namespace

std::optional<ConfigValue> ReadConfigField(const OptimizationConfig& cfg,
                                           const std::string& field) {
#define CAUDAL_READ_FIELD(kind, name, def, doc) \
  if (field == #name) return Of(cfg.name);
  CAUDAL_CONFIG_FIELDS(CAUDAL_READ_FIELD)
#undef CAUDAL_READ_FIELD
  return std::nullopt;
}

const char* LevelName(Level level) {
  switch (level) {
    case Level::kHigh:
      return "high";
    case Level::kMedium:
      return "medium";
    default:
      return "low";
  }
}

std::string QuotedName(const std::string& name) {
  const bool has_single = name.find('\'') != std::string::npos;
  const bool has_double = name.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (const char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '\\' || ch == quote) {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\r') {
      out += "\\r";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += absl::StrFormat("\\x%02x", c);
    } else {
      out += ch;  // printable ASCII, or UTF-8 of a non-ASCII character
    }
  }
  out += quote;
  return out;
}

namespace {

// Python's f"{x:.0%}".
std::string Percent(double x) { return absl::StrFormat("%.0f%%", x * 100.0); }
// Python's f"{x:g}".
std::string G(double x) { return absl::StrFormat("%g", x); }

// A counter since its mark. A counter below its mark was reset (or is
// another pool's): count all of it.
uint64_t Since(uint64_t now, const std::optional<uint64_t>& mark) {
  return !mark || now < *mark ? now : now - *mark;
}

struct Dropped {
  std::string what;  // "evicted 300 entries, let 4 expire"
  std::string keep;  // "If they repeat, ... keeps them; if not, "
};

// What the result cache dropped since the start, and what would keep
// entries longer; unset when it never dropped one.
std::optional<Dropped> DroppedOf(const CacheInput& cache,
                                 const OptimizationConfig& cfg) {
  if (!(cache.evictions || cache.expirations || cache.invalidations)) {
    return std::nullopt;
  }
  std::vector<std::string> what, keep;
  if (cache.evictions) {
    what.push_back(absl::StrCat("evicted ", cache.evictions, " entries"));
    std::string bound =
        absl::StrCat("cache_max_size (now ", cfg.cache_max_size, ")");
    if (cfg.cache_max_bytes) {
      absl::StrAppend(&bound, " or cache_max_bytes (now ", cfg.cache_max_bytes,
                      ")");
    }
    keep.push_back(absl::StrCat("a larger ", bound));
  }
  if (cache.expirations) {
    what.push_back(absl::StrCat("let ", cache.expirations, " expire"));
    keep.push_back("a longer cache_ttl_seconds (or Step(cache_ttl_s=...))");
  }
  if (cache.invalidations) {
    what.push_back(absl::StrCat("invalidated ", cache.invalidations));
  }
  Dropped d;
  d.what = absl::StrJoin(what, ", ");
  d.keep = keep.empty()
               ? "If not, "
               : absl::StrCat("If they repeat, ", absl::StrJoin(keep, " or "),
                              " keeps them; if not, ");
  return d;
}

// " (now 5)": a step's current value of a setting, when known.
std::string NowOf(const std::optional<double>& value) {
  return value ? absl::StrCat(" (now ", G(*value), ")") : "";
}

constexpr const char* kSlowBoth =
    "Set a timeout_s on the step, or cache it if its inputs repeat.";

// What a slow step lacks, from its settings: a timeout_s, caching.
// Unknown settings: both.
std::string SlowAdvice(const StepInput& s, const OptimizationConfig& cfg,
                       const CacheInput& cache) {
  if (!s.settings) return kSlowBoth;
  const StepSettingsInput& st = *s.settings;
  const bool has_timeout = st.timeout_s.has_value();
  const bool cached =
      st.cache.value_or(false) || (!st.cache && cfg.enable_cache_optimization);
  if (!has_timeout && !cached) return kSlowBoth;
  std::optional<std::string> why;  // cache on, but no cache identity
  if (cached) {
    auto it = cache.uncacheable_steps.find(s.name);
    if (it != cache.uncacheable_steps.end()) why = it->second;
  }
  std::vector<std::string> has;
  if (has_timeout)
    has.push_back(absl::StrCat("has timeout_s=", G(*st.timeout_s)));
  if (cached && !why) {
    const uint64_t lookups = s.cache_hits + s.cache_misses;
    const std::string rate =
        lookups ? absl::StrCat(" (",
                               Percent(static_cast<double>(s.cache_hits) /
                                       static_cast<double>(lookups)),
                               " hit rate)")
                : "";
    has.push_back(absl::StrCat("is cached", rate));
  }
  const std::string it =
      has.empty() ? "" : absl::StrCat("It ", absl::StrJoin(has, " and "), "; ");
  const std::string cache_it =
      why ? absl::StrCat("its results are not cached (", *why,
                         "): give it a cache_key if its inputs repeat")
          : "cache it if its inputs repeat";
  std::string tail;
  if (!has_timeout) {
    tail = "set a timeout_s on the step";
    if (why) absl::StrAppend(&tail, "; ", cache_it);
  } else if (!cached || why) {
    tail = cache_it;
  } else {
    return absl::StrCat(
        "It already ", absl::StrJoin(has, " and "),
        ": its executions (the cache misses) are slow themselves. Look at the "
        "step or its backend, or raise slow_execution_threshold_ms if this "
        "latency is expected.");
  }
  return absl::StrCat(it, tail, ".");
}

class Rules {
 public:
  explicit Rules(const RecommendationInput& in)
      : in_(in),
        cfg_(in.config),
        since_(in.marks ? " since the last analysis" : "") {}

  std::vector<Recommendation> Run() {
    Steps();
    Regressions();
    Breakers();
    Concurrency();
    Pool();
    CacheAndMemory();
    Cpu();
    Telemetry();
    std::stable_sort(out_.begin(), out_.end(),
                     [](const Recommendation& a, const Recommendation& b) {
                       return a.priority < b.priority;
                     });
    return std::move(out_);
  }

 private:
  Recommendation& Add(std::string description, Level impact, Level priority,
                      bool automatic) {
    Recommendation r;
    r.description = std::move(description);
    r.impact = impact;
    r.priority = priority;
    r.automatic = automatic;
    out_.push_back(std::move(r));
    return out_.back();
  }
  RecommendationAction Action(const std::string& field, ConfigValue value) {
    return {field, value, *ReadConfigField(cfg_, field)};
  }
  const CounterMarks& Marks() const {
    static const CounterMarks kNone;
    return in_.marks ? *in_.marks : kNone;
  }

  void Steps() {
    const std::optional<Dropped> dropped = DroppedOf(in_.cache, cfg_);
    for (const StepInput& s : in_.steps) {
      const std::string name = QuotedName(s.name);
      const uint64_t lookups = s.cache_hits + s.cache_misses;
      if (lookups >= kCacheNoHitLookups && s.cache_hits == 0 &&
          s.shared_flights == 0) {
        std::string text;
        if (!dropped) {  // nothing was dropped: every miss was a new input
          text = absl::StrCat(
              "Step ", name, ": ", lookups,
              " cache lookups and not one hit: its inputs do not repeat. "
              "Step(cache=False) saves hashing the input and storing the "
              "output.");
        } else {  // or inputs that come back only once dropped (LRU: a cycle)
          text = absl::StrCat(
              "Step ", name, ": ", lookups,
              " cache lookups and not one hit, while the cache ", dropped->what,
              ": either its inputs do not repeat, or they come back only after "
              "the cache dropped them. ",
              dropped->keep,
              "Step(cache=False) saves hashing the input and storing the "
              "output.");
        }
        Add(std::move(text), Level::kLow, Level::kLow, false).step = s.name;
      }
      if (s.executions == 0) continue;
      if (s.p95_ms > cfg_.slow_execution_threshold_ms &&
          s.executions >= kSlowMinExecutions) {
        Add(absl::StrCat("Step ", name, ": p95 latency ",
                         absl::StrFormat("%.1f", s.p95_ms),
                         " ms is above slow_execution_threshold_ms (",
                         G(cfg_.slow_execution_threshold_ms), " ms). ",
                         SlowAdvice(s, cfg_, in_.cache)),
            Level::kHigh, Level::kHigh, false)
            .step = s.name;
      }
      const uint64_t attempts = s.attempts;
      const std::optional<double> max_retries =
          s.settings ? s.settings->max_retries : std::nullopt;
      if (attempts >= kErrorMinAttempts &&
          static_cast<double>(s.errors) / static_cast<double>(attempts) >
              kErrorRate) {
        const std::string rate = Percent(static_cast<double>(s.errors) /
                                         static_cast<double>(attempts));
        if (s.retries && s.recovered == 0) {
          Add(absl::StrCat("Step ", name, ": ", rate,
                           " of attempts fail and retries never recovered (",
                           s.retries,
                           " retries). Retrying this error only adds load; "
                           "lower max_retries",
                           NowOf(max_retries), " or fix the cause."),
              Level::kMedium, Level::kHigh, false)
              .step = s.name;
        } else if (!cfg_.enable_circuit_breaker &&
                   !(s.settings && s.settings->breaker_opted_out)) {
          // A step with breaker=False opted out: the config's switch would
          // not give it one.
          Recommendation& r =
              Add(absl::StrCat("Step ", name, ": ", rate,
                               " of attempts fail. Enable the circuit breaker "
                               "so a failing backend is not hammered."),
                  Level::kMedium, Level::kMedium, true);
          r.step = s.name;
          r.action = Action("enable_circuit_breaker", ConfigValue::Bool(true));
        }
      }
      if (s.timeouts &&
          static_cast<double>(s.timeouts) / static_cast<double>(attempts) >
              kTimeoutRate) {
        const std::optional<double> timeout =
            s.settings ? s.settings->timeout_s : std::nullopt;
        Add(absl::StrCat("Step ", name, ": ", s.timeouts, " of ", attempts,
                         " attempts timed out. Raise the step's timeout_s",
                         NowOf(timeout),
                         " or lower concurrency against its backend."),
            Level::kMedium, Level::kMedium, false)
            .step = s.name;
      }
    }
  }

  void Regressions() {
    for (const RegressionInput& t : in_.regressions) {
      const double growth =
          t.baseline_p95_ms ? t.recent_p95_ms / t.baseline_p95_ms - 1 : 0.0;
      Add(absl::StrCat(
              "Step ", QuotedName(t.step), ": latency regressed — p95 ",
              absl::StrFormat("%.3f", t.recent_p95_ms), " ms over the last ",
              absl::StrFormat("%.0f", t.recent_window_s), " s against ",
              absl::StrFormat("%.3f", t.baseline_p95_ms), " ms before (+",
              Percent(growth), ", threshold ",
              Percent(cfg_.performance_degradation_threshold),
              "). Look for what changed in the step or its backend."),
          Level::kHigh, Level::kHigh, false)
          .step = t.step;
    }
  }

  void Breakers() {
    for (const BreakerInput& b : in_.breakers) {
      auto mark = Marks().breaker_opens.find(b.name);
      const uint64_t opened =
          Since(b.open_count, mark == Marks().breaker_opens.end()
                                  ? std::nullopt
                                  : std::optional<uint64_t>(mark->second));
      if (opened < kBreakerOpens) continue;
      Add(absl::StrCat(
              "Circuit breaker ", QuotedName(b.name), " opened ", opened,
              " times", since_,
              ": its backend keeps failing after recovery. Fix the backend, "
              "or raise circuit_breaker_recovery_timeout_seconds (",
              G(cfg_.circuit_breaker_recovery_timeout_seconds),
              " s) so it gets longer to recover."),
          Level::kHigh, Level::kHigh, false)
          .key = b.name;
    }
  }

  void Concurrency() {
    const int64_t max_limit = cfg_.concurrency_max_limit;
    for (const ConcurrencyKeyInput& k : in_.concurrency_keys) {
      if (!(k.adaptive && k.limit && *k.limit >= max_limit &&
            (k.waiting > 0 || k.in_flight >= *k.limit))) {
        continue;
      }
      Recommendation& r = Add(
          absl::StrCat("Concurrency key ", QuotedName(k.key),
                       ": the adaptive limit is pinned at "
                       "concurrency_max_limit=",
                       max_limit, " with ", k.in_flight, " in flight and ",
                       k.waiting,
                       " waiting: the backend has not pushed back yet. Raise "
                       "concurrency_max_limit."),
          Level::kMedium, Level::kMedium, true);
      r.key = k.key;
      r.action =
          Action("concurrency_max_limit", ConfigValue::Int(max_limit * 2));
      break;  // one field: one recommendation is enough
    }
  }

  void Pool() {
    if (!in_.pool_waits) return;
    const uint64_t waits = Since(*in_.pool_waits, Marks().pool_waits);
    if (waits < kPoolWaits) return;
    Recommendation& r = Add(
        absl::StrCat("Worker pool: ", waits,
                     " sync-step submissions found its queue "
                     "(worker_pool_queue_size=",
                     cfg_.worker_pool_queue_size, ") full", since_,
                     ". Raise worker_pool_queue_size, or worker_pool_size if "
                     "the steps are I/O bound."),
        Level::kMedium, Level::kMedium, in_.own_pool);
    if (in_.own_pool) {  // another's pool is not ours to resize
      r.action = Action("worker_pool_queue_size",
                        ConfigValue::Int(cfg_.worker_pool_queue_size * 2));
    }
  }

  void CacheAndMemory() {
    const std::string& level = in_.memory.level;
    const CacheInput& cache = in_.cache;
    if (cache.enabled) {
      const uint64_t hits = Since(cache.hits, Marks().cache_hits);
      const uint64_t lookups = hits + Since(cache.misses, Marks().cache_misses);
      const uint64_t evictions =
          Since(cache.evictions, Marks().cache_evictions);
      const double n = static_cast<double>(lookups);
      const bool evicting =
          level == "normal" && lookups >= kEvictionMinLookups &&
          static_cast<double>(evictions) >= kEvictionRatio * n &&
          static_cast<double>(hits) >= kEvictionHitRate * n;
      const std::string seen = absl::StrCat(
          "Result cache: ", evictions, " evictions for ", lookups,
          " lookups with a ",
          Percent(static_cast<double>(hits) /
                  static_cast<double>(std::max<uint64_t>(lookups, 1))),
          " hit rate", since_);
      if (evicting && in_.unpaid) {
        // The raise the rule asked for was made and bought nothing: the
        // same evidence no longer says the working set does not fit.
        const UnpaidRaise& u = *in_.unpaid;
        Add(absl::StrCat(
                seen, ", but the last raise of cache_max_size (", u.from,
                " -> ", u.size, ") did not raise the hit rate (",
                Percent(u.rate), " before, ", Percent(u.now),
                " since): the inputs it evicts do not come back while ", u.size,
                " entries would still hold them. A larger cache costs memory "
                "and buys nothing; cache_max_size=",
                u.from, " did about as well."),
            Level::kLow, Level::kLow, false);
      } else if (evicting) {
        Add(absl::StrCat(seen,
                         ": the working set does not fit in cache_max_size=",
                         cfg_.cache_max_size, ". Raise cache_max_size."),
            Level::kMedium, Level::kMedium, true)
            .action =
            Action("cache_max_size", ConfigValue::Int(cfg_.cache_max_size * 2));
      }
    }
    if (level != "normal") {
      const std::string shrunk = in_.memory.shrunk.empty()
                                     ? "nothing left to shrink"
                                     : absl::StrJoin(in_.memory.shrunk, "; ");
      const Level l = level == "critical" ? Level::kHigh : Level::kMedium;
      Add(absl::StrCat("Memory pressure (", level, "): RSS ",
                       absl::StrFormat("%.0f", in_.memory.usage_mb),
                       " MB against memory_pressure_threshold_mb=",
                       G(in_.memory.threshold_mb), ". caudal shrank: ", shrunk,
                       ". Lower cache_max_size / cache_max_bytes, or raise the "
                       "threshold if this much memory is expected."),
          l, l, true)
          .action =
          Action("cache_max_size", ConfigValue::Int(std::max<int64_t>(
                                       1, FloorDiv2(cfg_.cache_max_size))));
    }
  }
  static int64_t FloorDiv2(int64_t v) {  // Python's v // 2
    return v >= 0 ? v / 2 : -((-v + 1) / 2);
  }

  void Cpu() {
    const CpuInput& c = in_.cpu;
    if (!(c.window_s > 0 && c.percent > cfg_.cpu_usage_threshold_percent)) {
      return;
    }
    Add(absl::StrCat(
            "CPU: the process used ", absl::StrFormat("%.0f", c.percent),
            "% of its ", c.allowed_cpus, " CPUs (",
            absl::StrFormat("%.0f", c.per_core_percent),
            "% of one core) over the last ",
            absl::StrFormat("%.0f", c.window_s),
            " s, above cpu_usage_threshold_percent=",
            G(cfg_.cpu_usage_threshold_percent),
            ". CPU-bound steps compete for the GIL: run them in processes "
            "(backend='ray'), or lower their concurrency."),
        Level::kMedium, Level::kMedium, false);
  }

  void Telemetry() {
    const TelemetryInput& t = in_.telemetry;
    if (!t.export_seconds || !t.uptime_seconds) return;
    double export_s = *t.export_seconds;
    double uptime = *t.uptime_seconds;
    if (uptime == 0.0) return;
    const CounterMarks& m = Marks();
    if (m.uptime_seconds) {
      // Since the last analysis: a halved rate shows at the next one.
      const double mark_export = m.export_seconds.value_or(0.0);
      if (uptime > *m.uptime_seconds && export_s >= mark_export) {
        export_s -= mark_export;
        uptime -= *m.uptime_seconds;
      }
    }
    const double rate = cfg_.telemetry_sampling_rate;
    if (!(uptime != 0.0 && export_s > kTelemetryOverhead * uptime)) return;
    Add(absl::StrCat("Telemetry: exporters took ",
                     absl::StrFormat("%.2f", export_s), " s of ",
                     absl::StrFormat("%.0f", uptime), " s (",
                     Percent(export_s / uptime), ", ", t.spans_exported,
                     " spans). Halve telemetry_sampling_rate (", G(rate), ")."),
        Level::kMedium, Level::kMedium, true)
        .action =
        Action("telemetry_sampling_rate", ConfigValue::Float(rate / 2));
  }

  const RecommendationInput& in_;
  const OptimizationConfig& cfg_;
  const std::string since_;
  std::vector<Recommendation> out_;
};

}  // namespace

std::vector<Recommendation> Recommend(const RecommendationInput& in) {
  return Rules(in).Run();
}

CounterMarks MarksOf(const RecommendationInput& in) {
  CounterMarks m;
  m.cache_hits = in.cache.hits;
  m.cache_misses = in.cache.misses;
  m.cache_evictions = in.cache.evictions;
  m.pool_waits = in.pool_waits.value_or(0);
  m.export_seconds = in.telemetry.export_seconds;
  m.uptime_seconds = in.telemetry.uptime_seconds;
  for (const BreakerInput& b : in.breakers) {
    m.breaker_opens[b.name] = b.open_count;
  }
  return m;
}

std::optional<double> CacheHitRate(const CacheInput& cache,
                                   const std::optional<CounterMarks>& marks) {
  const CounterMarks none;
  const CounterMarks& m = marks ? *marks : none;
  const uint64_t hits = Since(cache.hits, m.cache_hits);
  const uint64_t lookups = hits + Since(cache.misses, m.cache_misses);
  if (!lookups) return std::nullopt;
  return static_cast<double>(hits) / static_cast<double>(lookups);
}

}  // namespace caudal
