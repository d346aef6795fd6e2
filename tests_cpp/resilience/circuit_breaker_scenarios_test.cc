// State-transition scenarios of pybreaker's public test suite
// (https://github.com/danielfm/pybreaker, tests/pybreaker_test.py), restated
// for caudal's CircuitBreaker and written anew: the same situations and the
// same expected outcomes, driven by a hand-moved clock instead of sleep().
//
// Vocabulary mapping: pybreaker's `fail_max` is failure_threshold, its
// `reset_timeout` is recovery_timeout_ns, `fail_counter` is our
// consecutive_failures, `success_threshold` is the same. pybreaker raises
// CircuitBreakerError from the call that trips the breaker; caudal lets the
// step's own error through and reports the trip as the Transition returned by
// OnFailure, which is what these tests check instead.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "caudal/resilience/circuit_breaker.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using State = CircuitBreaker::State;
constexpr int64_t kSecond = 1'000'000'000;

enum class Outcome { kSucceeds, kFails, kExcludedError };
enum class Result { kReturned, kRaised, kRejected };

// Plays pybreaker's `breaker.call(func)` against the C++ API: ask, run the
// function only when admitted, report its outcome.
class Scenario : public ::testing::Test {
 protected:
  void Make(int fail_max, int64_t reset_timeout_ns, int success_threshold = 1) {
    CircuitBreaker::Options o;
    o.failure_threshold = fail_max;
    o.recovery_timeout_ns = reset_timeout_ns;
    o.success_threshold = success_threshold;
    breaker_ = std::make_unique<CircuitBreaker>(o);
  }

  Result Call(Outcome outcome) {
    const auto admission = breaker_->TryAcquire(now_);
    Note(admission.transition);
    if (!admission.admitted()) return Result::kRejected;
    ++invocations_;
    switch (outcome) {
      case Outcome::kSucceeds:
        Note(breaker_->OnSuccess(now_, admission.probe()));
        return Result::kReturned;
      case Outcome::kFails:
        Note(breaker_->OnFailure(now_, admission.probe()));
        return Result::kRaised;
      case Outcome::kExcludedError:
        breaker_->OnIgnored(admission.probe());
        return Result::kRaised;
    }
    return Result::kRaised;
  }

  void Sleep(int64_t ns) { now_ += ns; }

  void Note(const absl::optional<CircuitBreaker::Transition>& t) {
    if (!t.has_value()) return;
    transitions_.push_back(
        absl::StrCat(StateName(t->from), "->", StateName(t->to)));
  }

  int64_t fail_counter() const {
    return breaker_->GetSnapshot().consecutive_failures;
  }
  State state() const { return breaker_->state(); }

  std::unique_ptr<CircuitBreaker> breaker_ =
      std::make_unique<CircuitBreaker>(CircuitBreaker::Options{});
  int64_t now_ = 1000 * kSecond;
  int invocations_ = 0;
  std::vector<std::string> transitions_;
};

// "it should define smart defaults" / "initial state"
TEST_F(Scenario, StartsClosedWithNoFailures) {
  EXPECT_EQ(state(), State::kClosed);
  EXPECT_EQ(fail_counter(), 0);
  EXPECT_EQ(breaker_->GetSnapshot().transition_seq, 0u);
}

// "it should keep the circuit closed after a successful call"
TEST_F(Scenario, SuccessfulCallKeepsItClosed) {
  EXPECT_EQ(Call(Outcome::kSucceeds), Result::kReturned);
  EXPECT_EQ(fail_counter(), 0);
  EXPECT_EQ(state(), State::kClosed);
}

// "it should keep the circuit closed after a few failures"
TEST_F(Scenario, OneFailureKeepsItClosed) {
  EXPECT_EQ(Call(Outcome::kFails), Result::kRaised);
  EXPECT_EQ(fail_counter(), 1);
  EXPECT_EQ(state(), State::kClosed);
}

// "it should keep the circuit closed after few mixed outcomes"
TEST_F(Scenario, SuccessResetsTheFailureCounter) {
  Call(Outcome::kFails);
  EXPECT_EQ(fail_counter(), 1);
  EXPECT_EQ(Call(Outcome::kSucceeds), Result::kReturned);
  EXPECT_EQ(fail_counter(), 0);
  EXPECT_EQ(state(), State::kClosed);
}

// "it should open the circuit after many failures"
TEST_F(Scenario, OpensAfterFailMaxConsecutiveFailures) {
  Make(3, 60 * kSecond);
  Call(Outcome::kFails);
  Call(Outcome::kFails);
  EXPECT_EQ(state(), State::kClosed);
  EXPECT_TRUE(transitions_.empty());
  Call(Outcome::kFails);
  EXPECT_EQ(fail_counter(), 3);
  EXPECT_EQ(state(), State::kOpen);
  EXPECT_EQ(transitions_, std::vector<std::string>{"closed->open"});
}

// "it should throw the original exception ... circuit should still be open
// and break": once open, calls are refused without running the function and
// the failure counter does not move.
TEST_F(Scenario, CallsAreRejectedWhileOpen) {
  Make(3, 60 * kSecond);
  for (int i = 0; i < 3; ++i) Call(Outcome::kFails);
  ASSERT_EQ(invocations_, 3);
  EXPECT_EQ(Call(Outcome::kSucceeds), Result::kRejected);
  EXPECT_EQ(Call(Outcome::kFails), Result::kRejected);
  EXPECT_EQ(invocations_, 3);
  EXPECT_EQ(fail_counter(), 3);
  EXPECT_EQ(state(), State::kOpen);
  EXPECT_EQ(breaker_->GetSnapshot().rejected_count, 2u);
}

// "it should half-open the circuit after timeout" (and a failing call then
// opens it again)
TEST_F(Scenario, FailedCallAfterTimeoutReopens) {
  Make(3, kSecond / 2);
  for (int i = 0; i < 3; ++i) Call(Outcome::kFails);
  ASSERT_EQ(state(), State::kOpen);
  Sleep(kSecond / 2 + kSecond / 10);
  EXPECT_EQ(Call(Outcome::kFails), Result::kRaised);
  EXPECT_EQ(breaker_->GetSnapshot().failure_count, 4u);
  EXPECT_EQ(state(), State::kOpen);
  EXPECT_EQ(transitions_,
            (std::vector<std::string>{"closed->open", "open->half_open",
                                      "half_open->open"}));
}

// "it should close the circuit when a call succeeds after timeout. The
// successful function should only be called once."
TEST_F(Scenario, SuccessfulCallAfterTimeoutCloses) {
  Make(3, kSecond);
  for (int i = 0; i < 3; ++i) Call(Outcome::kFails);
  EXPECT_EQ(Call(Outcome::kSucceeds), Result::kRejected);
  EXPECT_EQ(fail_counter(), 3);
  const int before = invocations_;
  Sleep(2 * kSecond);
  EXPECT_EQ(Call(Outcome::kSucceeds), Result::kReturned);
  EXPECT_EQ(invocations_, before + 1);
  EXPECT_EQ(fail_counter(), 0);
  EXPECT_EQ(state(), State::kClosed);
}

// Not yet half-open one tick before the timeout.
TEST_F(Scenario, StillOpenJustBeforeTimeout) {
  Make(1, kSecond);
  Call(Outcome::kFails);
  Sleep(kSecond - 1);
  EXPECT_EQ(Call(Outcome::kSucceeds), Result::kRejected);
  Sleep(1);
  EXPECT_EQ(Call(Outcome::kSucceeds), Result::kReturned);
  EXPECT_EQ(state(), State::kClosed);
}

// "it should open the circuit when a call fails in half-open state"
TEST_F(Scenario, FailureWhenHalfOpenOpens) {
  Make(1, kSecond);
  Call(Outcome::kFails);
  Sleep(kSecond);
  EXPECT_EQ(Call(Outcome::kFails), Result::kRaised);
  EXPECT_EQ(state(), State::kOpen);
  EXPECT_EQ(breaker_->GetSnapshot().open_count, 2u);
}

// "it should close the circuit when a call succeeds in half-open state"
TEST_F(Scenario, SuccessWhenHalfOpenCloses) {
  Make(1, kSecond);
  Call(Outcome::kFails);
  Sleep(kSecond);
  EXPECT_EQ(Call(Outcome::kSucceeds), Result::kReturned);
  EXPECT_EQ(fail_counter(), 0);
  EXPECT_EQ(state(), State::kClosed);
}

// "it should allow the circuit to be closed manually"
TEST_F(Scenario, ManualCloseResetsCounter) {
  Make(3, 60 * kSecond);
  for (int i = 0; i < 3; ++i) Call(Outcome::kFails);
  EXPECT_EQ(Call(Outcome::kFails), Result::kRejected);
  ASSERT_EQ(state(), State::kOpen);
  Note(breaker_->Reset(now_));
  EXPECT_EQ(fail_counter(), 0);
  EXPECT_EQ(state(), State::kClosed);
  EXPECT_EQ(Call(Outcome::kSucceeds), Result::kReturned);
}

// "it should call the appropriate functions on every state transition"
TEST_F(Scenario, TransitionsAreReportedInOrder) {
  Make(1, kSecond);
  Call(Outcome::kFails);
  Sleep(kSecond);
  Call(Outcome::kSucceeds);
  EXPECT_EQ(transitions_,
            (std::vector<std::string>{"closed->open", "open->half_open",
                                      "half_open->closed"}));
  EXPECT_EQ(breaker_->GetSnapshot().transition_seq, 3u);
}

// "it should ignore specific exceptions". Deliberate difference: pybreaker
// treats an excluded exception as a success (its fail_counter drops to 0);
// caudal reports it with OnIgnored, which counts as neither, so the counter
// keeps its value. A caller that wants pybreaker's behaviour reports
// OnSuccess instead (second half of the test).
TEST_F(Scenario, ExcludedExceptionsDoNotCount) {
  Make(3, kSecond);
  Call(Outcome::kFails);
  EXPECT_EQ(fail_counter(), 1);
  EXPECT_EQ(Call(Outcome::kExcludedError), Result::kRaised);
  EXPECT_EQ(fail_counter(), 1);
  Call(Outcome::kFails);
  EXPECT_EQ(fail_counter(), 2);
  // Any number of excluded errors never trips the breaker.
  for (int i = 0; i < 10; ++i) Call(Outcome::kExcludedError);
  EXPECT_EQ(state(), State::kClosed);
  EXPECT_EQ(breaker_->GetSnapshot().failure_count, 2u);
  // pybreaker's semantics, reported as a success:
  Call(Outcome::kSucceeds);
  EXPECT_EQ(fail_counter(), 0);
}

// An excluded error from a half-open probe hands the probe slot back and
// leaves the breaker half-open.
TEST_F(Scenario, ExcludedErrorFromProbeFreesTheSlot) {
  Make(1, kSecond);
  Call(Outcome::kFails);
  Sleep(kSecond);
  EXPECT_EQ(Call(Outcome::kExcludedError), Result::kRaised);
  EXPECT_EQ(state(), State::kHalfOpen);
  EXPECT_EQ(breaker_->GetSnapshot().probes_in_flight, 0);
  EXPECT_EQ(Call(Outcome::kSucceeds), Result::kReturned);
  EXPECT_EQ(state(), State::kClosed);
}

// "it should maintain backward compatibility with default
// success_threshold=1"
TEST_F(Scenario, DefaultSuccessThresholdClosesOnFirstProbe) {
  Make(3, kSecond / 10);
  for (int i = 0; i < 3; ++i) Call(Outcome::kFails);
  Sleep(kSecond / 5);
  EXPECT_EQ(Call(Outcome::kSucceeds), Result::kReturned);
  EXPECT_EQ(state(), State::kClosed);
}

// "it should require multiple successful calls before closing when
// success_threshold > 1"
TEST_F(Scenario, SuccessThresholdNeedsSeveralProbes) {
  Make(3, kSecond / 10, /*success_threshold=*/3);
  for (int i = 0; i < 3; ++i) Call(Outcome::kFails);
  Sleep(kSecond / 5);
  EXPECT_EQ(Call(Outcome::kSucceeds), Result::kReturned);
  EXPECT_EQ(state(), State::kHalfOpen);
  EXPECT_EQ(Call(Outcome::kSucceeds), Result::kReturned);
  EXPECT_EQ(state(), State::kHalfOpen);
  EXPECT_EQ(Call(Outcome::kSucceeds), Result::kReturned);
  EXPECT_EQ(state(), State::kClosed);
}

// "it should reset success counter when a failure occurs in half-open state"
TEST_F(Scenario, HalfOpenFailureForgetsProbeSuccesses) {
  Make(3, kSecond / 10, /*success_threshold=*/3);
  for (int i = 0; i < 3; ++i) Call(Outcome::kFails);
  Sleep(kSecond / 5);
  Call(Outcome::kSucceeds);
  Call(Outcome::kSucceeds);
  EXPECT_EQ(Call(Outcome::kFails), Result::kRaised);
  EXPECT_EQ(state(), State::kOpen);
  // The next half-open period starts from zero: three successes again.
  Sleep(kSecond / 5);
  Call(Outcome::kSucceeds);
  Call(Outcome::kSucceeds);
  EXPECT_EQ(state(), State::kHalfOpen);
  Call(Outcome::kSucceeds);
  EXPECT_EQ(state(), State::kClosed);
}

}  // namespace
}  // namespace caudal
