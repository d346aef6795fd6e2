#include "caudal/monitor/tuner.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace caudal {

const std::vector<TunedField>& TunedFields() {
  static const auto* fields = new std::vector<TunedField>{
      {"cache_max_size", ConfigValue::Int(64), ConfigValue::Int(1'000'000),
       "64 .. 1000000"},
      {"concurrency_max_limit", ConfigValue::Int(1), ConfigValue::Int(65'536),
       "1 .. 65536"},
      {"worker_pool_queue_size", ConfigValue::Int(16),
       ConfigValue::Int(1'000'000), "16 .. 1000000"},
      {"telemetry_sampling_rate", ConfigValue::Float(0.01),
       ConfigValue::Float(1.0), "0.01 .. 1.0"},
      {"enable_circuit_breaker", ConfigValue::Bool(false),
       ConfigValue::Bool(true), "False .. True"},
  };
  return *fields;
}

namespace {

const TunedField* FindTuned(const std::string& field) {
  for (const TunedField& f : TunedFields()) {
    if (field == f.name) return &f;
  }
  return nullptr;
}

int Direction(double from, double to) { return (to > from) - (to < from); }

// `value` kept within the field's bounds, of the kind `old` has.
ConfigValue Bounded(const TunedField& f, const ConfigValue& old,
                    const ConfigValue& value) {
  if (old.kind == FieldKind::kBool) return ConfigValue::Bool(value.AsDouble());
  if (old.kind == FieldKind::kInt && value.kind == FieldKind::kInt) {
    return ConfigValue::Int(std::min(std::max(value.i, f.lo.i), f.hi.i));
  }
  const double v =
      std::min(std::max(value.AsDouble(), f.lo.AsDouble()), f.hi.AsDouble());
  if (old.kind == FieldKind::kInt) {
    return ConfigValue::Int(static_cast<int64_t>(v));
  }
  return ConfigValue::Float(v);
}

std::string Percent(double x) { return absl::StrFormat("%.0f%%", x * 100.0); }

}  // namespace

std::vector<Recommendation> Tuner::Recommend(RecommendationInput in) const {
  MutexLock lock(&mu_);
  in.marks = marks_;
  in.unpaid.reset();
  const std::optional<double> rate = CacheHitRate(in.cache, marks_);
  std::optional<CacheRaise> raise = cache_raise_;
  if (UnpaidCacheRaise(raise, in.config.cache_max_size, rate, true)) {
    in.unpaid = UnpaidRaise{raise->from, raise->size, raise->rate, *rate};
  }
  return caudal::Recommend(in);
}

std::optional<UnpaidRaise> Tuner::Unpaid(int64_t size,
                                         std::optional<double> rate) const {
  MutexLock lock(&mu_);
  std::optional<CacheRaise> raise = cache_raise_;
  if (!UnpaidCacheRaise(raise, size, rate, true)) return std::nullopt;
  return UnpaidRaise{raise->from, raise->size, raise->rate, *rate};
}

std::optional<std::string> Tuner::UnpaidCacheRaise(
    std::optional<CacheRaise>& raise, int64_t size, std::optional<double> rate,
    bool dry_run) const {
  if (!raise || !rate || raise->size != size) return std::nullopt;
  if (*rate >= raise->rate + rules_.cache_min_gain) return std::nullopt;
  if (raise->plateau &&
      std::abs(*rate - *raise->plateau) > rules_.cache_workload_change) {
    if (!dry_run) raise.reset();  // the workload changed: try again
    return std::nullopt;
  }
  if (!raise->plateau && !dry_run) raise->plateau = *rate;
  return absl::StrCat("the last raise (", raise->from, " -> ", raise->size,
                      ") did not raise the hit rate (", Percent(raise->rate),
                      " before, ", Percent(*rate),
                      " since): the inputs evicted do not come back");
}

std::vector<ConfigChange> Tuner::Plan(RecommendationInput in, bool dry_run) {
  MutexLock lock(&mu_);
  in.marks = marks_;
  in.unpaid.reset();  // the rule proposes the raise; the hysteresis holds it
  const std::vector<Recommendation> recs = caudal::Recommend(in);
  const std::optional<double> rate = CacheHitRate(in.cache, marks_);
  const int64_t number = analyses_ + 1;
  const bool pressure = in.memory.level != "normal";

  // Highest priority first: it wins a field.
  struct Proposal {
    std::string field;
    ConfigValue value;
    std::string reason;
  };
  std::vector<Proposal> proposals;
  for (const Recommendation& r : recs) {
    if (!r.automatic || !r.action || !FindTuned(r.action->field)) continue;
    const bool seen = std::any_of(
        proposals.begin(), proposals.end(),
        [&](const Proposal& p) { return p.field == r.action->field; });
    if (!seen)
      proposals.push_back({r.action->field, r.action->value, r.description});
  }
  // A streak is of consecutive analyses: a field not proposed now starts
  // over (also in a dry run, as the analysis always did).
  for (auto& [field, f] : fields_) {
    const bool proposed = std::any_of(
        proposals.begin(), proposals.end(),
        [&, &name = field](const Proposal& p) { return p.field == name; });
    if (!proposed) f.streak = f.streak_direction = 0;
  }

  std::vector<ConfigChange> planned;
  std::vector<HeldChange> held;
  for (const Proposal& p : proposals) {
    const TunedField& bounds = *FindTuned(p.field);
    auto it = fields_.find(p.field);
    FieldMemory f = it == fields_.end() ? FieldMemory{} : it->second;
    const ConfigValue old = *ReadConfigField(in.config, p.field);
    const ConfigValue next = Bounded(bounds, old, p.value);
    const int want = Direction(old.AsDouble(), p.value.AsDouble());
    int streak;
    if (dry_run) {
      streak = want == f.streak_direction ? f.streak + 1 : 1;
    } else {
      FieldMemory& kept = fields_[p.field];
      if (want == kept.streak_direction) {
        ++kept.streak;
      } else {
        kept.streak = 1;
        kept.streak_direction = want;
      }
      f = kept;
      streak = kept.streak;
    }
    const bool reversal = f.last_direction != 0 && want == -f.last_direction;
    std::optional<std::string> why;
    if (want == 0 || Direction(old.AsDouble(), next.AsDouble()) != want) {
      why = absl::StrCat("at its bound (", bounds.bounds_text, ")");
    } else if (f.last_analysis && number - *f.last_analysis < f.cooldown) {
      why = absl::StrCat("cooldown: changed at analysis ", *f.last_analysis,
                         ", ", f.cooldown, " analyses");
    } else if (reversal && streak < rules_.reversal_persistence) {
      why = absl::StrCat("reversal: needs the condition in ",
                         rules_.reversal_persistence,
                         " consecutive analyses (seen in ", streak, ")");
    } else if (p.field == "cache_max_size" && want > 0 && pressure) {
      why = "memory pressure: caches are not raised";
    } else if (p.field == "cache_max_size" && want > 0) {
      if (dry_run) {
        std::optional<CacheRaise> copy = cache_raise_;
        why = UnpaidCacheRaise(copy, old.i, rate, true);
      } else {
        why = UnpaidCacheRaise(cache_raise_, old.i, rate, false);
      }
    }
    if (why) {
      held.push_back({p.field, next, *why});
      continue;
    }
    ConfigChange c;
    c.analysis = number;
    c.field = p.field;
    c.old_value = old;
    c.new_value = next;
    c.reversal = reversal;
    c.reason = p.reason;
    planned.push_back(std::move(c));
  }
  if (dry_run) return planned;
  analyses_ = number;
  Pending pending;
  pending.analysis = number;
  pending.proposed = proposals.size();
  pending.planned = planned;
  pending.held = std::move(held);
  pending.marks = MarksOf(in);
  pending.rate = rate;
  pending_ = std::move(pending);
  return planned;
}

std::vector<ConfigChange> Tuner::Commit(const std::optional<std::string>& error,
                                        int64_t now_ns) {
  MutexLock lock(&mu_);
  if (!pending_) return {};
  Pending p = std::move(*pending_);
  pending_.reset();
  std::vector<ConfigChange> applied;
  if (!p.planned.empty()) {
    if (error) {
      ++failed_;
    } else {
      for (ConfigChange& c : p.planned) {
        FieldMemory& f = fields_[c.field];
        f.last_analysis = p.analysis;
        f.last_direction =
            Direction(c.old_value.AsDouble(), c.new_value.AsDouble());
        f.cooldown = c.reversal ? rules_.reversal_cooldown : rules_.cooldown;
        c.time_ns = now_ns;
        if (c.field == "cache_max_size") {
          if (c.new_value.i > c.old_value.i && p.rate) {
            cache_raise_ =
                CacheRaise{c.old_value.i, c.new_value.i, *p.rate, std::nullopt};
          } else {
            cache_raise_.reset();
          }
        }
        changes_.push_back(c);
        if (changes_.size() > kTunerHistory) changes_.pop_front();
        applied.push_back(std::move(c));
      }
    }
  }
  marks_ = std::move(p.marks);
  AnalysisOutcome out;
  out.analysis = p.analysis;
  out.time_ns = now_ns;
  out.proposed = p.proposed;
  out.applied = applied;
  out.held = std::move(p.held);
  out.error = error;
  last_ = std::move(out);
  return applied;
}

int64_t Tuner::analyses() const {
  MutexLock lock(&mu_);
  return analyses_;
}
int64_t Tuner::failed() const {
  MutexLock lock(&mu_);
  return failed_;
}
std::vector<ConfigChange> Tuner::changes() const {
  MutexLock lock(&mu_);
  return {changes_.begin(), changes_.end()};
}
std::optional<AnalysisOutcome> Tuner::last() const {
  MutexLock lock(&mu_);
  return last_;
}
std::optional<CounterMarks> Tuner::marks() const {
  MutexLock lock(&mu_);
  return marks_;
}

}  // namespace caudal
