#include "caudal/pipeline/dag.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal::pipeline {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

std::vector<std::string> Names(const Dag& dag,
                               const std::vector<Dag::Id>& ids) {
  std::vector<std::string> out;
  for (Dag::Id id : ids) out.push_back(dag.name(id));
  return out;
}

Dag MustBuild(const std::vector<StepDef>& steps) {
  absl::StatusOr<Dag> dag = Dag::Build(steps);
  EXPECT_TRUE(dag.ok()) << dag.status();
  return *std::move(dag);
}

// ------------------------------------------------------------ definitions

TEST(DagTest, EmptyDefinitionIsAnEmptyDag) {
  Dag dag = MustBuild({});
  EXPECT_EQ(dag.size(), 0u);
  EXPECT_THAT(dag.Levels(), IsEmpty());
  EXPECT_THAT(dag.Order(), IsEmpty());
}

TEST(DagTest, DiamondOrderLevelsRootsSinks) {
  Dag dag =
      MustBuild({{"d", {"b", "c"}}, {"b", {"a"}}, {"c", {"a"}}, {"a", {}}});
  EXPECT_THAT(Names(dag, dag.Order()), ElementsAre("a", "b", "c", "d"));
  ASSERT_EQ(dag.Levels().size(), 3u);
  EXPECT_THAT(Names(dag, dag.Levels()[0]), ElementsAre("a"));
  EXPECT_THAT(Names(dag, dag.Levels()[1]), ElementsAre("b", "c"));
  EXPECT_THAT(Names(dag, dag.Levels()[2]), ElementsAre("d"));
  EXPECT_THAT(Names(dag, dag.Roots()), ElementsAre("a"));
  EXPECT_THAT(Names(dag, dag.Sinks()), ElementsAre("d"));
  EXPECT_THAT(Names(dag, dag.deps(*dag.Find("d"))), ElementsAre("b", "c"));
  EXPECT_THAT(Names(dag, dag.dependents(*dag.Find("a"))),
              ElementsAre("b", "c"));
  EXPECT_FALSE(dag.Find("zzz").has_value());
}

TEST(DagTest, LevelIsLongestPathFromARoot) {
  // e depends on a directly and through the chain b -> c -> d.
  Dag dag = MustBuild(
      {{"a", {}}, {"b", {"a"}}, {"c", {"b"}}, {"d", {"c"}}, {"e", {"a", "d"}}});
  EXPECT_EQ(dag.level(*dag.Find("e")), 4);
  EXPECT_THAT(Names(dag, dag.Order()), ElementsAre("a", "b", "c", "d", "e"));
}

TEST(DagTest, IndependentStepsShareLevelZeroInDefinitionOrder) {
  Dag dag = MustBuild({{"z", {}}, {"y", {}}, {"x", {}}});
  ASSERT_EQ(dag.Levels().size(), 1u);
  EXPECT_THAT(Names(dag, dag.Levels()[0]), ElementsAre("z", "y", "x"));
}

TEST(DagTest, RepeatedDependencyIsCountedOnce) {
  Dag dag = MustBuild({{"a", {}}, {"b", {"a", "a"}}});
  EXPECT_EQ(dag.deps(*dag.Find("b")).size(), 1u);
  auto run = DagRun::Create(std::make_shared<Dag>(dag));
  ASSERT_TRUE(run.ok());
  auto newly = (*run)->MarkDone(*dag.Find("a"));
  ASSERT_TRUE(newly.ok());
  EXPECT_THAT(Names(dag, *newly), ElementsAre("b"));
}

TEST(DagTest, DuplicateNameIsReported) {
  DagError e;
  auto dag = Dag::Build({{"a", {}}, {"b", {}}, {"a", {"b"}}}, &e);
  ASSERT_FALSE(dag.ok());
  EXPECT_EQ(dag.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(dag.status().message(), "duplicate step name 'a'");
  EXPECT_EQ(e.kind, DagError::Kind::kDuplicateStep);
  EXPECT_EQ(e.step, "a");
}

TEST(DagTest, EmptyNameIsReported) {
  DagError e;
  auto dag = Dag::Build({{"a", {}}, {"", {}}}, &e);
  ASSERT_FALSE(dag.ok());
  EXPECT_EQ(e.kind, DagError::Kind::kEmptyName);
  EXPECT_EQ(dag.status().message(), "step #1 has an empty name");
}

TEST(DagTest, MissingDependencyNamesStepAndWantedName) {
  DagError e;
  auto dag = Dag::Build(
      {{"a", {}}, {"b", {"a"}}, {"c", {"b", "x"}}, {"d", {"y"}}}, &e);
  ASSERT_FALSE(dag.ok());
  EXPECT_EQ(dag.status().message(),
            "step 'c' depends on 'x', which is not a step");
  EXPECT_EQ(e.kind, DagError::Kind::kMissingDependency);
  EXPECT_EQ(e.step, "c");
  EXPECT_EQ(e.missing, "x");
}

TEST(DagTest, MissingDependencyReportedBeforeACycle) {
  DagError e;
  auto dag = Dag::Build({{"a", {"b"}}, {"b", {"a"}}, {"c", {"nope"}}}, &e);
  ASSERT_FALSE(dag.ok());
  EXPECT_EQ(e.kind, DagError::Kind::kMissingDependency);
}

// ------------------------------------------------------------------ cycles

TEST(DagTest, CyclePathIsExact) {
  DagError e;
  auto dag = Dag::Build({{"a", {"b"}}, {"b", {"c"}}, {"c", {"a"}}}, &e);
  ASSERT_FALSE(dag.ok());
  EXPECT_EQ(e.kind, DagError::Kind::kCycle);
  EXPECT_THAT(e.cycle, ElementsAre("a", "b", "c", "a"));
  EXPECT_EQ(dag.status().message(), "circular dependency: a -> b -> c -> a");
}

TEST(DagTest, CycleStartsAtTheStepDefinedFirst) {
  // The DFS enters the loop at c (defined before the loop's other steps are
  // reached from it), but the report starts at the first-defined step: b.
  DagError e;
  auto dag = Dag::Build(
      {{"start", {"c"}}, {"b", {"d"}}, {"c", {"b"}}, {"d", {"c"}}}, &e);
  ASSERT_FALSE(dag.ok());
  EXPECT_THAT(e.cycle, ElementsAre("b", "d", "c", "b"));
  EXPECT_EQ(dag.status().message(), "circular dependency: b -> d -> c -> b");
}

TEST(DagTest, CycleBehindAcyclicPrefixExcludesThePrefix) {
  DagError e;
  auto dag = Dag::Build({{"root", {}},
                         {"x", {"root", "y"}},
                         {"y", {"z"}},
                         {"z", {"x"}},
                         {"tail", {"x"}}},
                        &e);
  ASSERT_FALSE(dag.ok());
  EXPECT_THAT(e.cycle, ElementsAre("x", "y", "z", "x"));
}

TEST(DagTest, SelfDependencyIsACycleOfOne) {
  DagError e;
  auto dag = Dag::Build({{"a", {}}, {"b", {"a", "b"}}}, &e);
  ASSERT_FALSE(dag.ok());
  EXPECT_THAT(e.cycle, ElementsAre("b", "b"));
  EXPECT_EQ(dag.status().message(), "circular dependency: b -> b");
}

TEST(DagTest, TwoStepCycle) {
  DagError e;
  auto dag = Dag::Build({{"p", {"q"}}, {"q", {"p"}}}, &e);
  ASSERT_FALSE(dag.ok());
  EXPECT_THAT(e.cycle, ElementsAre("p", "q", "p"));
}

TEST(DagTest, LongChainNeedsNoRecursion) {
  // 200k steps in one chain, closed into a loop: an explicit stack copes.
  const int n = 200000;
  std::vector<StepDef> steps(n);
  for (int i = 0; i < n; ++i) {
    steps[i].name = absl::StrCat("s", i);
    steps[i].deps = {absl::StrCat("s", (i + 1) % n)};
  }
  DagError e;
  auto dag = Dag::Build(steps, &e);
  ASSERT_FALSE(dag.ok());
  ASSERT_EQ(e.cycle.size(), static_cast<size_t>(n + 1));
  EXPECT_EQ(e.cycle.front(), "s0");
  EXPECT_EQ(e.cycle[1], "s1");
  EXPECT_EQ(e.cycle.back(), "s0");
  // Open the loop: a chain of n levels.
  steps.back().deps.clear();
  auto chain = Dag::Build(steps);
  ASSERT_TRUE(chain.ok());
  EXPECT_EQ(chain->Levels().size(), static_cast<size_t>(n));
}

// ------------------------------------------------------------------ DagRun

TEST(DagRunTest, WalksADiamond) {
  auto dag = std::make_shared<Dag>(
      MustBuild({{"a", {}}, {"b", {"a"}}, {"c", {"a"}}, {"d", {"b", "c"}}}));
  auto run = *DagRun::Create(dag);
  EXPECT_THAT(Names(*dag, run->Ready()), ElementsAre("a"));
  EXPECT_FALSE(run->Completed());
  EXPECT_THAT(Names(*dag, *run->MarkDone(0)), ElementsAre("b", "c"));
  EXPECT_THAT(Names(*dag, run->Ready()), ElementsAre("b", "c"));
  EXPECT_THAT(*run->MarkDone(2), IsEmpty());
  EXPECT_THAT(Names(*dag, *run->MarkDone(1)), ElementsAre("d"));
  EXPECT_THAT(*run->MarkDone(3), IsEmpty());
  EXPECT_TRUE(run->Completed());
  EXPECT_EQ(run->done_count(), 4u);
}

TEST(DagRunTest, MarkingAStepThatIsNotReadyIsRefused) {
  auto dag = std::make_shared<Dag>(MustBuild({{"a", {}}, {"b", {"a"}}}));
  auto run = *DagRun::Create(dag);
  auto s = run->MarkDone(1);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.status().message(), "step 'b' is pending, not ready");
  ASSERT_TRUE(run->MarkDone(0).ok());
  EXPECT_EQ(run->MarkDone(0).status().message(), "step 'a' is done, not ready");
  EXPECT_EQ(run->MarkDone(7).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(DagRunTest, FailureSkipsEveryDependentTransitively) {
  auto dag = std::make_shared<Dag>(MustBuild({{"a", {}},
                                              {"b", {"a"}},
                                              {"c", {}},
                                              {"d", {"b", "c"}},
                                              {"e", {"d"}},
                                              {"f", {"c"}}}));
  auto run = *DagRun::Create(dag);
  std::vector<Dag::Id> skipped;
  ASSERT_TRUE(run->MarkFailed(*dag->Find("a"), &skipped).ok());
  EXPECT_THAT(Names(*dag, skipped), ElementsAre("b", "d", "e"));
  EXPECT_EQ(run->state(*dag->Find("e")), DagRun::State::kSkipped);
  EXPECT_FALSE(run->Completed());  // c and f can still run
  EXPECT_THAT(Names(*dag, *run->MarkDone(*dag->Find("c"))), ElementsAre("f"));
  ASSERT_TRUE(run->MarkDone(*dag->Find("f")).ok());
  EXPECT_TRUE(run->Completed());
  EXPECT_EQ(run->failed_count(), 1u);
  EXPECT_EQ(run->skipped_count(), 3u);
  EXPECT_EQ(run->done_count(), 2u);
}

TEST(DagRunTest, ResumeStartsWithCompletedSteps) {
  auto dag = std::make_shared<Dag>(
      MustBuild({{"a", {}}, {"b", {"a"}}, {"c", {"a"}}, {"d", {"b", "c"}}}));
  auto run = *DagRun::Create(dag, {0, 1});
  EXPECT_THAT(Names(*dag, run->Ready()), ElementsAre("c"));
  EXPECT_EQ(run->state(0), DagRun::State::kDone);
  EXPECT_THAT(Names(*dag, *run->MarkDone(2)), ElementsAre("d"));
}

TEST(DagRunTest, ResumeWithEverythingDoneIsCompleted) {
  auto dag = std::make_shared<Dag>(MustBuild({{"a", {}}, {"b", {"a"}}}));
  auto run = *DagRun::Create(dag, {1, 0, 1});
  EXPECT_TRUE(run->Completed());
  EXPECT_THAT(run->Ready(), IsEmpty());
}

TEST(DagRunTest, ResumeRefusesADoneStepWithAnUnfinishedDependency) {
  auto dag = std::make_shared<Dag>(MustBuild({{"a", {}}, {"b", {"a"}}}));
  auto run = DagRun::Create(dag, {1});
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.status().message(),
            "step 'b' is marked done but its dependency 'a' is not: the "
            "pipeline changed "
            "since the checkpoint");
  EXPECT_FALSE(DagRun::Create(dag, {5}).ok());
}

TEST(DagRunTest, ConcurrentMarkersSeeEachStepReadyExactlyOnce) {
  // A wide two-level DAG driven by 4 threads: each thread takes steps from a
  // shared queue of ready ids; every step must be handed out exactly once.
  const int width = 2000;
  std::vector<StepDef> steps;
  for (int i = 0; i < width; ++i) steps.push_back({absl::StrCat("l0_", i), {}});
  for (int i = 0; i < width; ++i) {
    steps.push_back(
        {absl::StrCat("l1_", i),
         {absl::StrCat("l0_", i), absl::StrCat("l0_", (i + 1) % width)}});
  }
  auto dag = std::make_shared<Dag>(MustBuild(steps));
  auto run = *DagRun::Create(dag);
  Mutex mu;
  std::vector<Dag::Id> queue = run->Ready();
  std::vector<int> handed(dag->size(), 0);
  std::atomic<int> finished{0};
  auto worker = [&] {
    while (finished.load() < static_cast<int>(dag->size())) {
      Dag::Id id = -1;
      {
        MutexLock lock(&mu);
        if (!queue.empty()) {
          id = queue.back();
          queue.pop_back();
          ++handed[id];
        }
      }
      if (id < 0) {
        std::this_thread::yield();
        continue;
      }
      auto newly = run->MarkDone(id);
      ASSERT_TRUE(newly.ok()) << newly.status();
      {
        MutexLock lock(&mu);
        queue.insert(queue.end(), newly->begin(), newly->end());
      }
      finished.fetch_add(1);
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  EXPECT_TRUE(run->Completed());
  for (int h : handed) EXPECT_EQ(h, 1);
}

// ------------------------------------------- random DAGs against a reference

// A random layered DAG in shuffled definition order: node i of layer k
// depends on up to `fanin` random nodes of earlier layers.
std::vector<StepDef> RandomDag(std::mt19937_64& rng, int n, int layers,
                               int fanin) {
  std::vector<int> layer(n);
  for (int i = 0; i < n; ++i) layer[i] = static_cast<int>(rng() % layers);
  std::vector<StepDef> steps(n);
  for (int i = 0; i < n; ++i) {
    steps[i].name = absl::StrCat("n", i);
    const int k = static_cast<int>(rng() % (fanin + 1));
    for (int j = 0; j < k; ++j) {
      const int dep = static_cast<int>(rng() % n);
      if (layer[dep] < layer[i])
        steps[i].deps.push_back(absl::StrCat("n", dep));
    }
  }
  std::shuffle(steps.begin(), steps.end(), rng);
  return steps;
}

// The obvious quadratic algorithm: repeatedly take every step whose
// dependencies all have a level; its level is one more than the highest.
std::vector<int> ReferenceLevels(const std::vector<StepDef>& steps) {
  std::map<std::string, int> index;
  for (size_t i = 0; i < steps.size(); ++i)
    index[steps[i].name] = static_cast<int>(i);
  std::vector<int> level(steps.size(), -1);
  bool progress = true;
  while (progress) {
    progress = false;
    for (size_t i = 0; i < steps.size(); ++i) {
      if (level[i] >= 0) continue;
      int lv = 0;
      bool ok = true;
      for (const auto& d : steps[i].deps) {
        const int l = level[index[d]];
        if (l < 0) {
          ok = false;
          break;
        }
        lv = std::max(lv, l + 1);
      }
      if (ok) {
        level[i] = lv;
        progress = true;
      }
    }
  }
  return level;
}

TEST(DagRandomTest, TenThousandNodesMatchTheReference) {
  std::mt19937_64 rng(20240611);
  for (int round = 0; round < 3; ++round) {
    const auto steps = RandomDag(rng, 10000, 40, 4);
    auto dag = Dag::Build(steps);
    ASSERT_TRUE(dag.ok()) << dag.status();
    const std::vector<int> ref = ReferenceLevels(steps);
    for (size_t i = 0; i < steps.size(); ++i) {
      ASSERT_EQ(dag->level(static_cast<Dag::Id>(i)), ref[i]) << steps[i].name;
    }
    // Order: a permutation in which every dependency comes first.
    std::vector<int> pos(dag->size(), -1);
    for (size_t p = 0; p < dag->Order().size(); ++p)
      pos[dag->Order()[p]] = static_cast<int>(p);
    for (int p : pos) ASSERT_GE(p, 0);
    for (Dag::Id id = 0; id < static_cast<Dag::Id>(dag->size()); ++id) {
      for (Dag::Id dep : dag->deps(id)) ASSERT_LT(pos[dep], pos[id]);
    }
  }
}

TEST(DagRandomTest, RandomRunsWithFailuresMatchTheReference) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 5; ++round) {
    const auto steps = RandomDag(rng, 10000, 30, 3);
    auto dag = std::make_shared<Dag>(*Dag::Build(steps));
    auto run = *DagRun::Create(dag);
    const auto n = static_cast<Dag::Id>(dag->size());
    // Run in a random order of completion; fail 1% of steps.
    std::vector<Dag::Id> ready = run->Ready();
    std::vector<uint8_t> failed(n, 0), done(n, 0), skipped(n, 0), handed(n, 0);
    for (Dag::Id id : ready) handed[id] = 1;
    while (!ready.empty()) {
      const size_t pick = rng() % ready.size();
      const Dag::Id id = ready[pick];
      ready[pick] = ready.back();
      ready.pop_back();
      // Every dependency of a ready step is done.
      for (Dag::Id dep : dag->deps(id)) ASSERT_TRUE(done[dep]);
      if (rng() % 100 == 0) {
        std::vector<Dag::Id> sk;
        ASSERT_TRUE(run->MarkFailed(id, &sk).ok());
        failed[id] = 1;
        for (Dag::Id s : sk) {
          ASSERT_FALSE(skipped[s]);
          skipped[s] = 1;
        }
      } else {
        auto newly = run->MarkDone(id);
        ASSERT_TRUE(newly.ok());
        done[id] = 1;
        for (Dag::Id r : *newly) {
          ASSERT_FALSE(handed[r]) << "ready twice";
          handed[r] = 1;
          ready.push_back(r);
        }
      }
    }
    EXPECT_TRUE(run->Completed());
    // Reference: a step is skipped iff some dependency failed or was skipped;
    // otherwise it ran. Walk in topological order.
    for (Dag::Id id : dag->Order()) {
      bool blocked = false;
      for (Dag::Id dep : dag->deps(id)) blocked |= failed[dep] || skipped[dep];
      ASSERT_EQ(static_cast<bool>(skipped[id]), blocked) << dag->name(id);
      ASSERT_EQ(static_cast<bool>(done[id] || failed[id]), !blocked)
          << dag->name(id);
    }
  }
}

TEST(DagRandomTest, ARandomBackEdgeIsFoundWithAValidPath) {
  std::mt19937_64 rng(99);
  for (int round = 0; round < 20; ++round) {
    auto steps = RandomDag(rng, 2000, 20, 3);
    auto dag = Dag::Build(steps);
    ASSERT_TRUE(dag.ok());
    // Pick a step with a dependency and make some ancestor depend on it.
    Dag::Id from = -1;
    for (Dag::Id id : dag->Order()) {
      if (dag->level(id) >= 2) from = id;
    }
    ASSERT_GE(from, 0);
    Dag::Id ancestor = from;
    while (!dag->deps(ancestor).empty()) ancestor = dag->deps(ancestor)[0];
    steps[ancestor].deps.push_back(steps[from].name);
    DagError e;
    ASSERT_FALSE(Dag::Build(steps, &e).ok());
    ASSERT_EQ(e.kind, DagError::Kind::kCycle);
    ASSERT_GE(e.cycle.size(), 3u);
    EXPECT_EQ(e.cycle.front(), e.cycle.back());
    std::map<std::string, std::pair<int, std::set<std::string>>> def;
    for (size_t i = 0; i < steps.size(); ++i) {
      def[steps[i].name] = {static_cast<int>(i),
                            {steps[i].deps.begin(), steps[i].deps.end()}};
    }
    std::set<std::string> distinct;
    for (size_t i = 0; i + 1 < e.cycle.size(); ++i) {
      EXPECT_TRUE(def[e.cycle[i]].second.count(e.cycle[i + 1]))
          << e.cycle[i] << " does not depend on " << e.cycle[i + 1];
      distinct.insert(e.cycle[i]);
      EXPECT_LE(def[e.cycle.front()].first, def[e.cycle[i]].first);
    }
    EXPECT_EQ(distinct.size(), e.cycle.size() - 1);
  }
}

}  // namespace
}  // namespace caudal::pipeline
