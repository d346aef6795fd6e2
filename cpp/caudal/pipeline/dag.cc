#include "caudal/pipeline/dag.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace caudal::pipeline {

namespace {

absl::Status Refuse(DagError* error, DagError&& reason, std::string message) {
  if (error != nullptr) *error = std::move(reason);
  return absl::InvalidArgumentError(std::move(message));
}

// Iterative three-colour DFS along dependency edges. Returns the first cycle
// found (as ids, first repeated at the end, rotated to start at the lowest
// id on the loop), or an empty vector.
std::vector<Dag::Id> FindCycle(const std::vector<std::vector<Dag::Id>>& deps) {
  enum : uint8_t { kWhite, kGrey, kBlack };
  const auto n = static_cast<Dag::Id>(deps.size());
  std::vector<uint8_t> colour(n, kWhite);
  // The DFS stack: (node, index of the next dependency to follow).
  std::vector<std::pair<Dag::Id, size_t>> stack;
  for (Dag::Id start = 0; start < n; ++start) {
    if (colour[start] != kWhite) continue;
    stack.emplace_back(start, 0);
    colour[start] = kGrey;
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next == deps[node].size()) {
        colour[node] = kBlack;
        stack.pop_back();
        continue;
      }
      const Dag::Id dep = deps[node][next++];
      if (colour[dep] == kWhite) {
        colour[dep] = kGrey;
        stack.emplace_back(dep, 0);
      } else if (colour[dep] == kGrey) {
        // Back edge node -> dep: the loop is dep ... node on the stack.
        size_t from = stack.size();
        while (stack[from - 1].first != dep) --from;
        std::vector<Dag::Id> loop;
        for (size_t i = from - 1; i < stack.size(); ++i)
          loop.push_back(stack[i].first);
        std::rotate(loop.begin(), std::min_element(loop.begin(), loop.end()),
                    loop.end());
        loop.push_back(loop.front());
        return loop;
      }
    }
  }
  return {};
}

}  // namespace

std::string FormatCycle(const std::vector<std::string>& cycle) {
  return absl::StrJoin(cycle, " -> ");
}

absl::StatusOr<Dag> Dag::Build(const std::vector<StepDef>& steps,
                               DagError* error) {
  Dag dag;
  const auto n = static_cast<Id>(steps.size());
  dag.names_.reserve(n);
  dag.index_.reserve(n);
  for (Id i = 0; i < n; ++i) {
    const std::string& name = steps[i].name;
    if (name.empty()) {
      return Refuse(error, DagError{DagError::Kind::kEmptyName},
                    absl::StrCat("step #", i, " has an empty name"));
    }
    if (!dag.index_.emplace(name, i).second) {
      DagError e{DagError::Kind::kDuplicateStep};
      e.step = name;
      return Refuse(error, std::move(e),
                    absl::StrCat("duplicate step name '", name, "'"));
    }
    dag.names_.push_back(name);
  }
  dag.deps_.resize(n);
  dag.dependents_.resize(n);
  std::vector<uint8_t> seen(n, 0);
  for (Id i = 0; i < n; ++i) {
    auto& deps = dag.deps_[i];
    for (const std::string& dep_name : steps[i].deps) {
      auto it = dag.index_.find(dep_name);
      if (it == dag.index_.end()) {
        DagError e{DagError::Kind::kMissingDependency};
        e.step = steps[i].name;
        e.missing = dep_name;
        return Refuse(error, std::move(e),
                      absl::StrCat("step '", steps[i].name, "' depends on '",
                                   dep_name, "', which is not a step"));
      }
      const Id dep = it->second;
      if (seen[dep]) continue;
      seen[dep] = 1;
      deps.push_back(dep);
    }
    for (Id dep : deps) seen[dep] = 0;
  }
  if (std::vector<Id> loop = FindCycle(dag.deps_); !loop.empty()) {
    DagError e{DagError::Kind::kCycle};
    for (Id id : loop) e.cycle.push_back(dag.names_[id]);
    std::string message =
        absl::StrCat("circular dependency: ", FormatCycle(e.cycle));
    return Refuse(error, std::move(e), std::move(message));
  }
  for (Id i = 0; i < n; ++i) {
    for (Id dep : dag.deps_[i]) dag.dependents_[dep].push_back(i);
  }
  // Levels by Kahn's algorithm: a step's level is final once its last
  // dependency has been visited.
  dag.level_.assign(n, 0);
  std::vector<int32_t> missing(n);
  std::vector<Id> frontier;
  for (Id i = 0; i < n; ++i) {
    missing[i] = static_cast<int32_t>(dag.deps_[i].size());
    if (missing[i] == 0) frontier.push_back(i);
  }
  while (!frontier.empty()) {
    const Id id = frontier.back();
    frontier.pop_back();
    for (Id next : dag.dependents_[id]) {
      dag.level_[next] = std::max(dag.level_[next], dag.level_[id] + 1);
      if (--missing[next] == 0) frontier.push_back(next);
    }
  }
  int top = -1;
  for (Id i = 0; i < n; ++i) top = std::max(top, dag.level_[i]);
  dag.levels_.resize(top + 1);
  for (Id i = 0; i < n; ++i) dag.levels_[dag.level_[i]].push_back(i);
  dag.order_.reserve(n);
  for (const auto& level : dag.levels_) {
    dag.order_.insert(dag.order_.end(), level.begin(), level.end());
  }
  return dag;
}

absl::optional<Dag::Id> Dag::Find(absl::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) return absl::nullopt;
  return it->second;
}

std::vector<Dag::Id> Dag::Roots() const {
  std::vector<Id> out;
  for (Id i = 0; i < static_cast<Id>(size()); ++i) {
    if (deps_[i].empty()) out.push_back(i);
  }
  return out;
}

std::vector<Dag::Id> Dag::Sinks() const {
  std::vector<Id> out;
  for (Id i = 0; i < static_cast<Id>(size()); ++i) {
    if (dependents_[i].empty()) out.push_back(i);
  }
  return out;
}

// ---------------------------------------------------------------- DagRun

DagRun::DagRun(std::shared_ptr<const Dag> dag) : dag_(std::move(dag)) {}

absl::StatusOr<std::unique_ptr<DagRun>> DagRun::Create(
    std::shared_ptr<const Dag> dag, const std::vector<Dag::Id>& done) {
  if (dag == nullptr) return absl::InvalidArgumentError("DagRun needs a Dag");
  const auto n = static_cast<Dag::Id>(dag->size());
  std::vector<uint8_t> is_done(n, 0);
  for (Dag::Id id : done) {
    if (id < 0 || id >= n) {
      return absl::InvalidArgumentError(
          absl::StrCat("step id ", id, " out of range [0, ", n, ")"));
    }
    is_done[id] = 1;
  }
  for (Dag::Id id = 0; id < n; ++id) {
    if (!is_done[id]) continue;
    for (Dag::Id dep : dag->deps(id)) {
      if (!is_done[dep]) {
        return absl::InvalidArgumentError(absl::StrCat(
            "step '", dag->name(id), "' is marked done but its dependency '",
            dag->name(dep),
            "' is not: the pipeline changed since the checkpoint"));
      }
    }
  }
  std::unique_ptr<DagRun> run(new DagRun(std::move(dag)));
  MutexLock lock(&run->mu_);
  run->state_.assign(n, State::kPending);
  run->missing_.assign(n, 0);
  for (Dag::Id id = 0; id < n; ++id) {
    if (is_done[id]) {
      run->state_[id] = State::kDone;
      ++run->done_;
      continue;
    }
    int32_t missing = 0;
    for (Dag::Id dep : run->dag_->deps(id)) missing += is_done[dep] ? 0 : 1;
    run->missing_[id] = missing;
    if (missing == 0) {
      run->state_[id] = State::kReady;
      ++run->ready_;
    } else {
      ++run->pending_;
    }
  }
  return run;
}

std::vector<Dag::Id> DagRun::Ready() const {
  MutexLock lock(&mu_);
  std::vector<Dag::Id> out;
  out.reserve(ready_);
  for (Dag::Id id = 0; id < static_cast<Dag::Id>(state_.size()); ++id) {
    if (state_[id] == State::kReady) out.push_back(id);
  }
  return out;
}

absl::Status DagRun::CheckReady(Dag::Id id) const {
  if (id < 0 || id >= static_cast<Dag::Id>(state_.size())) {
    return absl::OutOfRangeError(absl::StrCat("step id ", id, " out of range"));
  }
  if (state_[id] != State::kReady) {
    static constexpr const char* kNames[] = {"pending", "ready", "done",
                                             "failed", "skipped"};
    return absl::FailedPreconditionError(
        absl::StrCat("step '", dag_->name(id), "' is ",
                     kNames[static_cast<int>(state_[id])], ", not ready"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Dag::Id>> DagRun::MarkDone(Dag::Id id) {
  MutexLock lock(&mu_);
  if (absl::Status s = CheckReady(id); !s.ok()) return s;
  state_[id] = State::kDone;
  --ready_;
  ++done_;
  std::vector<Dag::Id> newly;
  for (Dag::Id next : dag_->dependents(id)) {
    if (state_[next] == State::kPending && --missing_[next] == 0) {
      state_[next] = State::kReady;
      --pending_;
      ++ready_;
      newly.push_back(next);
    }
  }
  return newly;
}

absl::StatusOr<std::vector<Dag::Id>> DagRun::MarkFailed(
    Dag::Id id, std::vector<Dag::Id>* skipped) {
  MutexLock lock(&mu_);
  if (absl::Status s = CheckReady(id); !s.ok()) return s;
  state_[id] = State::kFailed;
  --ready_;
  ++failed_;
  std::vector<Dag::Id> newly_skipped;
  std::vector<Dag::Id> frontier{id};
  while (!frontier.empty()) {
    const Dag::Id at = frontier.back();
    frontier.pop_back();
    for (Dag::Id next : dag_->dependents(at)) {
      if (state_[next] != State::kPending) continue;
      state_[next] = State::kSkipped;
      --pending_;
      ++skipped_;
      newly_skipped.push_back(next);
      frontier.push_back(next);
    }
  }
  if (skipped != nullptr) {
    const Dag& dag = *dag_;
    std::sort(newly_skipped.begin(), newly_skipped.end(),
              [&dag](Dag::Id a, Dag::Id b) {
                return dag.level(a) != dag.level(b)
                           ? dag.level(a) < dag.level(b)
                           : a < b;
              });
    skipped->insert(skipped->end(), newly_skipped.begin(), newly_skipped.end());
  }
  return std::vector<Dag::Id>{};
}

DagRun::State DagRun::state(Dag::Id id) const {
  MutexLock lock(&mu_);
  return state_[id];
}

bool DagRun::Completed() const {
  MutexLock lock(&mu_);
  return pending_ == 0 && ready_ == 0;
}

size_t DagRun::done_count() const {
  MutexLock lock(&mu_);
  return done_;
}

size_t DagRun::failed_count() const {
  MutexLock lock(&mu_);
  return failed_;
}

size_t DagRun::skipped_count() const {
  MutexLock lock(&mu_);
  return skipped_;
}

}  // namespace caudal::pipeline
