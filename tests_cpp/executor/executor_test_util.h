// Helpers shared by the executor's gtests: a step entry as the bindings
// would register it, and a failed attempt's description.
#ifndef CAUDAL_TESTS_CPP_EXECUTOR_EXECUTOR_TEST_UTIL_H_
#define CAUDAL_TESTS_CPP_EXECUTOR_EXECUTOR_TEST_UTIL_H_

#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "caudal/executor/executor.h"

namespace caudal {
namespace testing_util {

inline std::shared_ptr<StepEntry> MakeEntry(Executor& ex,
                                            const std::string& name,
                                            int max_retries = 0) {
  auto e = std::make_shared<StepEntry>();
  e->spec.name = name;
  e->spec.retry = StepSpec::ImmediateRetries(max_retries);
  e->stats_owner = ex.StatsFor(name);
  e->stats = e->stats_owner.get();
  return e;
}

inline AttemptError Err(bool timed_out = false,
                        absl::string_view type = "builtins.ValueError",
                        absl::string_view msg = "boom") {
  AttemptError e;
  e.timed_out = timed_out;
  e.exc_type = type;
  e.message = msg;
  return e;
}

}  // namespace testing_util
}  // namespace caudal

#endif  // CAUDAL_TESTS_CPP_EXECUTOR_EXECUTOR_TEST_UTIL_H_
