// The typed boundary between the Python step analysis and the engine.
//
// caudal._steps.analyse inspects a step object once (its signature, its
// settings, the executor's defaults) and answers with a
// caudal._core.StepAnalysis: the core's StepSpec (plain data) plus the
// Python objects the engine keeps for the step (what to call, its fallback,
// the exception filters, the cache identity). Its keyword constructor is
// the one place where those values are checked and converted: a value of
// the wrong type or out of range raises caudal.ConfigurationError naming
// the field ("StepAnalysis.timeout_s must be ..."). The engine then copies
// the result into its step table (Engine::Analyse) without decoding
// anything.
//
// caudal._core.RetryPolicy is the core's RetryPolicy with named fields,
// validated by RetryPolicy::Validate at construction; caudal.RetryStrategy
// hands one to the analysis (RetryStrategy._native()).
//
// Not on the hot path: built once per step object met for the first time.
#ifndef CAUDAL_BINDINGS_STEP_ANALYSIS_H_
#define CAUDAL_BINDINGS_STEP_ANALYSIS_H_

#include <memory>
#include <string>

#include "caudal/executor/step_spec.h"
#include "common.h"
#include "key_walk.h"

namespace caudal::bindings {

struct StepAnalysis {
  StepSpec spec;  // the plain data, as the core keeps it (cache_group unset)
  py::object fn;  // what to call per attempt
  py::object fallback;         // None, or the step to run instead
  py::object retry_on;         // None (any Exception), types, or a predicate
  py::object breaker_exclude;  // None, types, or a predicate
  py::object cache_context;    // None, or a tuple of context field names
  // The cache key's namespace: exactly one of identity_of (what to
  // fingerprint on first use; caudal._identity), cache_ns (known now) or
  // uncacheable (why the step has none) is set.
  py::object identity_of;
  std::string cache_ns;
  std::string uncacheable;
};

// Registers StepKind, CallShape, RetryPolicy and StepAnalysis, and
// function_key (FunctionKey for caudal._identity).
void RegisterStepAnalysis(py::module_& m);

}  // namespace caudal::bindings

#endif  // CAUDAL_BINDINGS_STEP_ANALYSIS_H_
