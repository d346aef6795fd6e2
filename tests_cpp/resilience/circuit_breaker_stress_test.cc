// Many threads share one breaker while a shared clock moves forward. Meant to
// be run under TSan (-DCAUDAL_SANITIZE=thread) as well as normally.
//
// Invariants checked:
//  - probe calls out at once never exceed half_open_max_calls;
//  - every verdict is counted exactly once (success / failure / rejected
//    totals equal what the threads reported), and no probe slot leaks;
//  - the transitions returned to the callers, ordered by seq, are exactly
//    1..N with no gap, form a legal chain starting at closed and ending at
//    the current state, and half-open never starts before the recovery
//    timeout of the open period it ends.
#include <algorithm>
#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "caudal/base/mutex.h"
#include "caudal/resilience/circuit_breaker.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using State = CircuitBreaker::State;
using Transition = CircuitBreaker::Transition;

constexpr int kThreads = 4;
constexpr int kIterations = 20000;
constexpr int64_t kRecoveryNs = 300;

struct Totals {
  std::atomic<uint64_t> successes{0};
  std::atomic<uint64_t> failures{0};
  std::atomic<uint64_t> rejected{0};
  std::atomic<uint64_t> probes{0};
  std::atomic<int> probes_out{0};
  std::atomic<int> max_probes_out{0};
};

class TransitionLog {
 public:
  void Add(const absl::optional<Transition>& t) {
    if (!t.has_value()) return;
    MutexLock lock(&mu_);
    log_.push_back(*t);
  }
  std::vector<Transition> Sorted() {
    MutexLock lock(&mu_);
    std::vector<Transition> out = log_;
    std::sort(
        out.begin(), out.end(),
        [](const Transition& a, const Transition& b) { return a.seq < b.seq; });
    return out;
  }

 private:
  Mutex mu_;
  std::vector<Transition> log_ ABSL_GUARDED_BY(mu_);
};

bool Legal(State from, State to) {
  return (from == State::kClosed && to == State::kOpen) ||
         (from == State::kOpen && to == State::kHalfOpen) ||
         (from == State::kHalfOpen && to == State::kOpen) ||
         (from == State::kHalfOpen && to == State::kClosed);
}

// One worker: alternating bad and good phases of the clock make the breaker
// cycle through all its states many times.
void Work(CircuitBreaker& breaker, std::atomic<int64_t>& clock, Totals& totals,
          TransitionLog& log, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int max_probes = breaker.options().half_open_max_calls;
  for (int i = 0; i < kIterations; ++i) {
    const int64_t now = clock.fetch_add(rng() % 3) + 1;
    const auto admission = breaker.TryAcquire(now);
    log.Add(admission.transition);
    if (!admission.admitted()) {
      totals.rejected.fetch_add(1);
      continue;
    }
    const bool probe = admission.probe();
    if (probe) {
      totals.probes.fetch_add(1);
      const int out = totals.probes_out.fetch_add(1) + 1;
      int seen = totals.max_probes_out.load();
      while (out > seen &&
             !totals.max_probes_out.compare_exchange_weak(seen, out)) {
      }
    }
    // Let other threads run in between, so verdicts arrive late.
    if (rng() % 4 == 0) std::this_thread::yield();
    const bool bad_phase = (now / 2000) % 2 == 0;
    const uint64_t roll = rng() % 100;
    const int64_t later = clock.load();
    if (probe) totals.probes_out.fetch_sub(1);  // before the breaker frees it
    if (roll < 5) {
      breaker.OnIgnored(probe);
    } else if (roll < (bad_phase ? 85u : 10u)) {
      totals.failures.fetch_add(1);
      log.Add(breaker.OnFailure(later, probe));
    } else {
      totals.successes.fetch_add(1);
      log.Add(breaker.OnSuccess(later, probe));
    }
  }
}

void RunAndCheck(const CircuitBreaker::Options& options) {
  CircuitBreaker breaker(options);
  std::atomic<int64_t> clock{0};
  Totals totals;
  TransitionLog log;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] { Work(breaker, clock, totals, log, 17 + t); });
  }
  for (auto& th : threads) th.join();

  EXPECT_LE(totals.max_probes_out.load(), options.half_open_max_calls);
  const auto s = breaker.GetSnapshot();
  EXPECT_EQ(s.success_count, totals.successes.load());
  EXPECT_EQ(s.failure_count, totals.failures.load());
  EXPECT_EQ(s.rejected_count, totals.rejected.load());
  EXPECT_EQ(s.probes_in_flight, 0);

  const std::vector<Transition> transitions = log.Sorted();
  ASSERT_EQ(transitions.size(), s.transition_seq);
  uint64_t opens = 0, closes = 0;
  State state = State::kClosed;
  int64_t opened_at = 0;
  for (size_t i = 0; i < transitions.size(); ++i) {
    const Transition& t = transitions[i];
    ASSERT_EQ(t.seq, i + 1);
    ASSERT_EQ(t.from, state) << "seq " << t.seq;
    ASSERT_TRUE(Legal(t.from, t.to)) << "seq " << t.seq;
    if (t.to == State::kOpen) {
      ++opens;
      opened_at = t.at_ns;
    }
    if (t.to == State::kHalfOpen) {
      EXPECT_GE(t.at_ns, opened_at + options.recovery_timeout_ns);
    }
    if (t.to == State::kClosed) ++closes;
    state = t.to;
  }
  EXPECT_EQ(state, s.state);
  EXPECT_EQ(opens, s.open_count);
  // The workload is built to cycle; make sure it did, or the test proves
  // nothing.
  ::testing::Test::RecordProperty("opens", static_cast<int>(opens));
  ::testing::Test::RecordProperty("closes", static_cast<int>(closes));
  ::testing::Test::RecordProperty("probes",
                                  static_cast<int>(totals.probes.load()));
  EXPECT_GT(opens, 2u);
  EXPECT_GT(closes, 2u);
  EXPECT_GT(totals.probes.load(), 2u);
}

TEST(CircuitBreakerStressTest, ConsecutiveRuleManyThreads) {
  CircuitBreaker::Options o;
  o.failure_threshold = 3;
  o.recovery_timeout_ns = kRecoveryNs;
  o.half_open_max_calls = 2;
  o.success_threshold = 2;
  RunAndCheck(o);
}

TEST(CircuitBreakerStressTest, SlidingWindowManyThreads) {
  CircuitBreaker::Options o;
  o.failure_threshold = 50;
  o.recovery_timeout_ns = kRecoveryNs;
  o.half_open_max_calls = 3;
  o.success_threshold = 3;
  o.window_size = 20;
  o.minimum_calls = 10;
  o.failure_rate_threshold = 0.5;
  RunAndCheck(o);
}

TEST(CircuitBreakerStressTest, SingleProbeManyThreads) {
  CircuitBreaker::Options o;
  o.failure_threshold = 2;
  o.recovery_timeout_ns = kRecoveryNs;
  RunAndCheck(o);
}

// Registry lookups, snapshots and resets racing with traffic: the probe
// bound holds even across Reset, and nothing races (TSan).
TEST(CircuitBreakerStressTest, RegistryUnderLoad) {
  BreakerRegistry registry;
  CircuitBreaker::Options o;
  o.failure_threshold = 2;
  o.recovery_timeout_ns = 50;
  o.half_open_max_calls = 2;
  std::atomic<int64_t> clock{0};
  std::atomic<bool> stop{false};
  std::atomic<int> probes_out[4] = {};
  std::atomic<int> max_out{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(99 + t);
      for (int i = 0; i < kIterations / 2; ++i) {
        const int k = static_cast<int>(rng() % 4);
        CircuitBreaker* b =
            *registry.GetOrCreate("step" + std::to_string(k), o);
        const int64_t now = clock.fetch_add(1);
        auto permit = b->Acquire(now);
        if (!permit.admitted()) continue;
        if (permit.probe()) {
          const int out = probes_out[k].fetch_add(1) + 1;
          int seen = max_out.load();
          while (out > seen && !max_out.compare_exchange_weak(seen, out)) {
          }
          probes_out[k].fetch_sub(1);
        }
        if (rng() % 2 == 0) {
          permit.Fail(clock.load());
        } else if (rng() % 3 == 0) {
          permit.Succeed(clock.load());
        }  // else: dropped, reported as ignored
      }
    });
  }
  threads.emplace_back([&] {
    int rounds = 0;
    while (!stop.load()) {
      for (const auto& entry : registry.SnapshotAll()) {
        EXPECT_LE(entry.snapshot.probes_in_flight, o.half_open_max_calls);
      }
      if (++rounds % 16 == 0) registry.Reset(clock.load());
      std::this_thread::yield();
    }
  });
  for (int t = 0; t < 3; ++t) threads[t].join();
  stop.store(true);
  threads.back().join();
  EXPECT_LE(max_out.load(), o.half_open_max_calls);
  for (const auto& entry : registry.SnapshotAll()) {
    EXPECT_EQ(entry.snapshot.probes_in_flight, 0) << entry.name;
  }
}

}  // namespace
}  // namespace caudal
