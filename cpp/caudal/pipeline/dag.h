// caudal::pipeline::Dag and DagRun: the dependency graph of a pipeline and the
// ready-set scheduler that walks it.
//
// Dag is what a pipeline definition compiles to: steps named by strings, each
// with the names of the steps it depends on. Dag::Build checks the definition
// (duplicate names, dependencies on steps that do not exist, cycles, reported
// with the full path around the loop) and computes everything a scheduler
// needs once: integer ids, both adjacency lists, topological levels and a
// deterministic topological order. A built Dag is immutable.
//
// DagRun is one execution's progress over a Dag: which steps are ready (every
// dependency done), which are done, failed or skipped. MarkDone/MarkFailed
// return the steps that became ready (or were skipped) because of that call,
// so a scheduler never rescans the graph: the whole run costs O(V + E).
// A run may start with some steps already done (resuming from checkpoints).
//
// Thread-safety: Dag is immutable after Build; any number of threads may read
// it. DagRun is thread-safe: every method takes its mutex (caudal::Mutex, so
// TSan sees the locking). The Python layer drives it from one event loop, so
// the lock is always uncontended there (~20 ns).
//
// Design note (cycle paths). Build first resolves names, then runs an
// iterative three-colour DFS (no recursion: a 1M-step chain must not overflow
// the stack) over steps in definition order, following dependency edges in
// declared order. The first back edge found closes a cycle; the path is read
// off the DFS stack and rotated to start at the step defined first, so the
// same definition always reports the same cycle, e.g. {"a", "b", "c", "a"}:
// a depends on b, b on c, c on a.
#ifndef CAUDAL_PIPELINE_DAG_H_
#define CAUDAL_PIPELINE_DAG_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "caudal/base/mutex.h"

namespace caudal::pipeline {

// A step as defined: its name and the names it depends on (duplicates in
// `deps` are ignored).
struct StepDef {
  std::string name;
  std::vector<std::string> deps;
};

// Why Build refused a definition; filled when Build returns an error.
struct DagError {
  enum class Kind : uint8_t {
    kNone,
    kEmptyName,
    kDuplicateStep,
    kMissingDependency,
    kCycle
  };
  Kind kind = Kind::kNone;
  // kEmptyName: empty; kDuplicateStep: the name defined twice;
  // kMissingDependency: the step that wanted `missing`; kCycle: empty.
  std::string step;
  std::string missing;  // kMissingDependency: the name that does not exist
  // kCycle: the steps around the loop, each depending on the next, with the
  // first repeated at the end: {"a", "b", "c", "a"}. A step depending on
  // itself is {"a", "a"}.
  std::vector<std::string> cycle;
};

class Dag {
 public:
  using Id = int32_t;

  // Checks and compiles a definition. On failure returns kInvalidArgument
  // ("circular dependency: a -> b -> c -> a", "step 'c' depends on 'x', which
  // is not a step", "duplicate step name 'a'") and, when `error` is not null,
  // fills it with the structured reason. Problems are reported in this order
  // of precedence: empty names, duplicates, missing dependencies (the first
  // in definition order), cycles.
  static absl::StatusOr<Dag> Build(const std::vector<StepDef>& steps,
                                   DagError* error = nullptr);

  Dag(Dag&&) = default;
  Dag& operator=(Dag&&) = default;
  Dag(const Dag&) = default;
  Dag& operator=(const Dag&) = default;

  size_t size() const { return names_.size(); }
  const std::string& name(Id id) const { return names_[id]; }
  const std::vector<std::string>& names() const { return names_; }
  absl::optional<Id> Find(absl::string_view name) const;

  // Dependencies of `id` in declared order (deduplicated) and the steps that
  // depend on `id` in definition order.
  const std::vector<Id>& deps(Id id) const { return deps_[id]; }
  const std::vector<Id>& dependents(Id id) const { return dependents_[id]; }

  // level(id) is 0 for a step without dependencies, else 1 + the highest
  // level of its dependencies. Levels()[k] holds the steps of level k in
  // definition order.
  int level(Id id) const { return level_[id]; }
  const std::vector<std::vector<Id>>& Levels() const { return levels_; }

  // A topological order: the levels concatenated (so every step comes after
  // all of its dependencies, and ties keep definition order).
  const std::vector<Id>& Order() const { return order_; }

  // Steps without dependencies / without dependents, in definition order.
  std::vector<Id> Roots() const;
  std::vector<Id> Sinks() const;

 private:
  Dag() = default;

  std::vector<std::string> names_;
  absl::flat_hash_map<std::string, Id> index_;
  std::vector<std::vector<Id>> deps_;
  std::vector<std::vector<Id>> dependents_;
  std::vector<int> level_;
  std::vector<std::vector<Id>> levels_;
  std::vector<Id> order_;
};

// One execution's progress over a Dag.
//
//   pending --(every dependency done)--> ready --MarkDone--> done
//                                          \---MarkFailed--> failed
//   pending --(a dependency failed or was skipped)--> skipped
//
// "Ready" means every dependency is done; ready steps stay ready until the
// caller marks them, so the caller is the one that knows which are running.
class DagRun {
 public:
  enum class State : uint8_t { kPending, kReady, kDone, kFailed, kSkipped };

  // `done`: steps already completed (a resumed run). Every dependency of a
  // step in `done` must be in `done` too, or Create returns kInvalidArgument
  // naming the step and the dependency: a checkpointed step was never
  // started before its dependencies finished, so anything else means the
  // definition changed since the checkpoint. Duplicates are ignored; an
  // out-of-range id is kInvalidArgument.
  static absl::StatusOr<std::unique_ptr<DagRun>> Create(
      std::shared_ptr<const Dag> dag, const std::vector<Dag::Id>& done = {});

  const Dag& dag() const { return *dag_; }

  // Steps that are ready now (dependencies done, not yet marked), ascending id.
  std::vector<Dag::Id> Ready() const;

  // Marks a ready step done; returns the steps that became ready because of
  // it (its dependents whose last missing dependency it was), in definition
  // order. kFailedPrecondition if the step is not ready; kOutOfRange for a
  // bad id.
  absl::StatusOr<std::vector<Dag::Id>> MarkDone(Dag::Id id);

  // Marks a ready step failed. Every step that (transitively) depends on it
  // and is still pending becomes skipped; those are appended to `skipped`
  // (when not null) in topological order. Returns the steps that became
  // ready: always none (a failure readies nothing), kept for symmetry.
  absl::StatusOr<std::vector<Dag::Id>> MarkFailed(
      Dag::Id id, std::vector<Dag::Id>* skipped = nullptr);

  State state(Dag::Id id) const;
  // True when no step is pending or ready: every step is done, failed or
  // skipped.
  bool Completed() const;
  size_t done_count() const;
  size_t failed_count() const;
  size_t skipped_count() const;

 private:
  explicit DagRun(std::shared_ptr<const Dag> dag);
  absl::Status CheckReady(Dag::Id id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::shared_ptr<const Dag> dag_;
  mutable Mutex mu_;
  std::vector<State> state_ ABSL_GUARDED_BY(mu_);
  // Dependencies of each step not yet done.
  std::vector<int32_t> missing_ ABSL_GUARDED_BY(mu_);
  size_t ready_ ABSL_GUARDED_BY(mu_) = 0;
  size_t pending_ ABSL_GUARDED_BY(mu_) = 0;
  size_t done_ ABSL_GUARDED_BY(mu_) = 0;
  size_t failed_ ABSL_GUARDED_BY(mu_) = 0;
  size_t skipped_ ABSL_GUARDED_BY(mu_) = 0;
};

// "a -> b -> c -> a".
std::string FormatCycle(const std::vector<std::string>& cycle);

}  // namespace caudal::pipeline

#endif  // CAUDAL_PIPELINE_DAG_H_
