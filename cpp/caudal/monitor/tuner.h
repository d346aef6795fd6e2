// Tuner: automatic optimization's decisions. Each analysis runs the
// recommendation rules (recommendations.h) and passes their automatic
// actions through hysteresis, so that the config never oscillates
// (docs/monitoring.md, "Automatic optimization"). The Python layer only
// schedules analyses on the event loop and applies the config they plan.
//
// Design. Per config field the tuner remembers its last change (analysis,
// direction) and a streak (consecutive analyses proposing one direction):
//
// - a change starts a cool-down of `cooldown` analyses during which the
//   field does not change again;
// - a change in the opposite direction of the field's last change (a
//   reversal) needs its condition in `reversal_persistence` consecutive
//   analyses, and starts a cool-down of `reversal_cooldown`;
// - values stay in the field's bounds (TunedFields()); a change that the
//   bound would turn around (or cancel) is not made;
// - a cache is never raised while memory pressure is above normal;
// - a cache is raised again only if its last raise paid: the hit rate
//   measured since then must beat the one that led to the raise by
//   `cache_min_gain`. Inputs that never come back once evicted keep the
//   same hit rate at any size, so they get one raise, not a doubling every
//   analysis. The verdict lasts until the hit rate moves by more than
//   `cache_workload_change` from the one it was reached at (the workload
//   changed), or until cache_max_size changes for another reason.
//
// Counted in analyses, not seconds, so the rules hold for any interval.
// An analysis is Plan() (decide; the caller applies the config) then
// Commit() (what happened). Time is an input (now_ns).
//
// Thread-safety: every method takes the tuner's mutex; a Plan/Commit pair
// is one analysis, and analyses must not interleave (the Python layer runs
// them one at a time, on an event loop or from run_optimization_analysis).
#ifndef CAUDAL_MONITOR_TUNER_H_
#define CAUDAL_MONITOR_TUNER_H_

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "caudal/base/mutex.h"
#include "caudal/monitor/recommendations.h"

namespace caudal {

struct TunerRules {
  // Analyses after a change during which the field does not change again:
  // long enough for the change to show in the counters.
  int cooldown = 3;
  // Consecutive analyses a reversal's condition must hold: a condition
  // that alternates (load, then pressure, then load) never reverses.
  int reversal_persistence = 3;
  // The cool-down after a reversal: twice the plain one, so a field that
  // was turned around stays put for longer.
  int reversal_cooldown = 6;
  // Hit rate a cache raise must add before the next raise.
  double cache_min_gain = 0.02;
  // Hit-rate move that lifts a "raise did not pay" verdict.
  double cache_workload_change = 0.10;
};

// Changes kept for stats.
inline constexpr size_t kTunerHistory = 100;

// A field automatic optimization may change, and its bounds.
struct TunedField {
  const char* name;
  ConfigValue lo;
  ConfigValue hi;
  const char* bounds_text;  // "64 .. 1000000", as the held reason says it
};
const std::vector<TunedField>& TunedFields();

struct ConfigChange {
  int64_t analysis = 0;
  std::string field;
  ConfigValue old_value;
  ConfigValue new_value;
  bool reversal = false;
  std::string reason;   // the recommendation's description
  int64_t time_ns = 0;  // when applied (0 in a plan)
};

// A proposed change the hysteresis held back, and why.
struct HeldChange {
  std::string field;
  ConfigValue value;
  std::string reason;
};

struct AnalysisOutcome {
  int64_t analysis = 0;
  int64_t time_ns = 0;
  size_t proposed = 0;  // fields the automatic recommendations proposed
  std::vector<ConfigChange> applied;
  std::vector<HeldChange> held;
  std::optional<std::string> error;  // the config swap's refusal
};

class Tuner {
 public:
  explicit Tuner(TunerRules rules = {}) : rules_(rules) {}
  Tuner(const Tuner&) = delete;
  Tuner& operator=(const Tuner&) = delete;

  const TunerRules& rules() const { return rules_; }

  // The recommendations now, judged since the last analysis (its marks),
  // with the cache raise rule's verdict (`in.marks` and `in.unpaid` are
  // replaced by the tuner's own).
  std::vector<Recommendation> Recommend(RecommendationInput in) const;

  // One analysis over `in`: the automatic recommendations through the
  // hysteresis rules. Returns the changes to apply, in the order the
  // fields were proposed. With dry_run nothing is counted or remembered;
  // otherwise Commit() must follow.
  std::vector<ConfigChange> Plan(RecommendationInput in, bool dry_run);

  // The planned changes were applied at now_ns (error unset), or the swap
  // refused them (error: why). Returns the changes applied.
  std::vector<ConfigChange> Commit(const std::optional<std::string>& error,
                                   int64_t now_ns);

  // The last raise of cache_max_size when it did not pay, as the next
  // analysis would judge it at this size and hit rate (no state changes).
  std::optional<UnpaidRaise> Unpaid(int64_t size,
                                    std::optional<double> rate) const;

  int64_t analyses() const;
  int64_t failed() const;
  std::vector<ConfigChange> changes() const;  // oldest first
  std::optional<AnalysisOutcome> last() const;
  std::optional<CounterMarks> marks() const;  // counters at the last analysis

 private:
  struct FieldMemory {
    std::optional<int64_t> last_analysis;  // of the last change
    int last_direction = 0;
    int cooldown = 0;
    int streak = 0;  // consecutive analyses proposing streak_direction
    int streak_direction = 0;
  };
  struct CacheRaise {
    int64_t from = 0;
    int64_t size = 0;
    double rate = 0.0;              // the hit rate that led to it
    std::optional<double> plateau;  // the hit rate it did not beat
  };
  struct Pending {
    int64_t analysis = 0;
    size_t proposed = 0;
    std::vector<ConfigChange> planned;
    std::vector<HeldChange> held;
    CounterMarks marks;
    std::optional<double> rate;
  };

  // Why a raise of cache_max_size to above `size` is held; unset when it
  // may go ahead. Not dry: remembers the plateau, or forgets the verdict
  // when the workload changed.
  // `raise` is the tuner's own (or a copy, for a dry run).
  std::optional<std::string> UnpaidCacheRaise(std::optional<CacheRaise>& raise,
                                              int64_t size,
                                              std::optional<double> rate,
                                              bool dry_run) const;

  const TunerRules rules_;
  mutable Mutex mu_;
  int64_t analyses_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<ConfigChange> changes_ ABSL_GUARDED_BY(mu_);
  std::optional<AnalysisOutcome> last_ ABSL_GUARDED_BY(mu_);
  std::optional<CounterMarks> marks_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, FieldMemory> fields_ ABSL_GUARDED_BY(mu_);
  std::optional<CacheRaise> cache_raise_ ABSL_GUARDED_BY(mu_);
  std::optional<Pending> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace caudal

#endif  // CAUDAL_MONITOR_TUNER_H_
