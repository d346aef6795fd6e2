// Pipeline DAG for Python: caudal._core.Dag (a checked, compiled definition)
// and caudal._core.DagRun (the ready-set scheduler of one run). A refused
// definition becomes caudal.DuplicateStepError, caudal.DependencyError or
// caudal.CircularDependencyError; a resume set that does not fit the Dag
// becomes caudal.CheckpointError. Steps are ints (definition order) on the
// hot calls; names are accepted too.
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "caudal/pipeline/dag.h"
#include "common.h"

namespace caudal::bindings {
namespace {

using pipeline::Dag;
using pipeline::DagError;
using pipeline::DagRun;
using pipeline::StepDef;

[[noreturn]] void Raise(const char* type, py::object exc) {
  PyErr_SetObject(CaudalAttr("caudal.errors", type).ptr(), exc.ptr());
  throw py::error_already_set();
}

[[noreturn]] void ThrowDagError(const absl::Status& status, const DagError& e) {
  switch (e.kind) {
    case DagError::Kind::kDuplicateStep:
      Raise("DuplicateStepError",
            CaudalAttr("caudal.errors", "DuplicateStepError")(e.step));
    case DagError::Kind::kMissingDependency:
      Raise("DependencyError",
            CaudalAttr("caudal.errors", "DependencyError")(e.step, e.missing));
    case DagError::Kind::kCycle:
      Raise("CircularDependencyError",
            CaudalAttr("caudal.errors",
                       "CircularDependencyError")(py::cast(e.cycle)));
    default:
      Raise("PipelineDefinitionError",
            CaudalAttr("caudal.errors", "PipelineDefinitionError")(
                std::string(status.message())));
  }
}

Dag::Id IdOf(const Dag& dag, const std::string& name) {
  absl::optional<Dag::Id> id = dag.Find(name);
  if (!id) throw py::key_error(name);
  return *id;
}

Dag::Id Checked(const Dag& dag, Dag::Id id) {
  if (id < 0 || static_cast<size_t>(id) >= dag.size()) {
    ThrowStatus(absl::OutOfRangeError("step id " + std::to_string(id) +
                                      " out of range"));
  }
  return id;
}

const char* StateName(DagRun::State s) {
  switch (s) {
    case DagRun::State::kPending:
      return "pending";
    case DagRun::State::kReady:
      return "ready";
    case DagRun::State::kDone:
      return "done";
    case DagRun::State::kFailed:
      return "failed";
    case DagRun::State::kSkipped:
      return "skipped";
  }
  return "?";
}

std::vector<Dag::Id> MarkDone(DagRun& run, Dag::Id id) {
  absl::StatusOr<std::vector<Dag::Id>> newly = run.MarkDone(id);
  if (!newly.ok()) ThrowStatus(newly.status());
  return *std::move(newly);
}

std::vector<Dag::Id> MarkFailed(DagRun& run, Dag::Id id) {
  std::vector<Dag::Id> skipped;
  absl::StatusOr<std::vector<Dag::Id>> newly = run.MarkFailed(id, &skipped);
  if (!newly.ok()) ThrowStatus(newly.status());
  return skipped;
}

}  // namespace

void RegisterPipeline(py::module_& m) {
  py::class_<Dag, std::shared_ptr<Dag>>(
      m, "Dag",
      "A checked pipeline graph. Dag([(name, [deps...]), ...]); "
      "steps are numbered in definition order.")
      .def(py::init(
               [](const std::vector<
                   std::pair<std::string, std::vector<std::string>>>& steps) {
                 std::vector<StepDef> defs;
                 defs.reserve(steps.size());
                 for (const auto& [name, deps] : steps)
                   defs.push_back(StepDef{name, deps});
                 DagError error;
                 absl::StatusOr<Dag> dag = Dag::Build(defs, &error);
                 if (!dag.ok()) ThrowDagError(dag.status(), error);
                 return std::make_shared<Dag>(*std::move(dag));
               }),
           py::arg("steps"))
      .def("__len__", &Dag::size)
      .def_property_readonly("names", &Dag::names)
      .def(
          "index",
          [](const Dag& d, const std::string& name) { return IdOf(d, name); },
          py::arg("name"), "The id of a step (KeyError if there is none).")
      .def(
          "deps",
          [](const Dag& d, Dag::Id id) { return d.deps(Checked(d, id)); },
          py::arg("id"))
      .def(
          "dependents",
          [](const Dag& d, Dag::Id id) { return d.dependents(Checked(d, id)); },
          py::arg("id"))
      .def(
          "level",
          [](const Dag& d, Dag::Id id) { return d.level(Checked(d, id)); },
          py::arg("id"))
      .def("levels", &Dag::Levels,
           "Steps by topological level (0: no dependencies).")
      .def("order", &Dag::Order,
           "A topological order: the levels concatenated.")
      .def("roots", &Dag::Roots)
      .def("sinks", &Dag::Sinks);

  py::class_<DagRun>(m, "DagRun",
                     "One run's progress over a Dag: DagRun(dag, done=[ids "
                     "already completed]).")
      .def(py::init(
               [](std::shared_ptr<Dag> dag, const std::vector<Dag::Id>& done) {
                 absl::StatusOr<std::unique_ptr<DagRun>> run =
                     DagRun::Create(std::move(dag), done);
                 if (!run.ok()) {
                   Raise("CheckpointError",
                         CaudalAttr("caudal.errors", "CheckpointError")(
                             std::string(run.status().message())));
                 }
                 return *std::move(run);
               }),
           py::arg("dag"), py::arg("done") = std::vector<Dag::Id>{})
      .def("ready", &DagRun::Ready,
           "Steps whose dependencies are all done, not yet marked.")
      .def("mark_done", &MarkDone, py::arg("id"),
           "Marks a ready step done; returns the steps that became ready.")
      .def(
          "mark_done",
          [](DagRun& r, const std::string& name) {
            return MarkDone(r, IdOf(r.dag(), name));
          },
          py::arg("name"))
      .def("mark_failed", &MarkFailed, py::arg("id"),
           "Marks a ready step failed; returns the steps skipped because of it "
           "(its pending dependents, transitively), in topological order.")
      .def(
          "mark_failed",
          [](DagRun& r, const std::string& name) {
            return MarkFailed(r, IdOf(r.dag(), name));
          },
          py::arg("name"))
      .def(
          "state",
          [](const DagRun& r, Dag::Id id) {
            return StateName(r.state(Checked(r.dag(), id)));
          },
          py::arg("id"))
      .def("completed", &DagRun::Completed,
           "True when no step is pending or ready (each is done, failed or "
           "skipped).")
      .def_property_readonly("done_count", &DagRun::done_count)
      .def_property_readonly("failed_count", &DagRun::failed_count)
      .def_property_readonly("skipped_count", &DagRun::skipped_count);
}

}  // namespace caudal::bindings
