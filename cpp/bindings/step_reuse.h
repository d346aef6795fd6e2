// Reusing step analyses, so that a step table miss costs far less than an
// analysis: plain functions share one analysis per code object, and a
// caudal.Step keeps its analysis for its life.
//
// Not on the hot path: used on a step-table miss (Engine::Analyse).
#ifndef CAUDAL_BINDINGS_STEP_REUSE_H_
#define CAUDAL_BINDINGS_STEP_REUSE_H_

#include <memory>
#include <string>

#include "caudal/executor/step_spec.h"
#include "common.h"
#include "step_analysis.h"

namespace caudal::bindings {

// ---- the analysis of plain functions, shared by code object ----
//
// A plain Python function (exactly types.FunctionType, no attributes of its
// own: no __wrapped__, __signature__ or markers in its __dict__) is
// analysed from facts its code object and a few of its fields fix: the
// code (coroutine or not, parameters), its __name__, __qualname__ and
// __module__, and how many positional defaults it has. Every function
// object made from one `def` or `lambda` (a fresh lambda per call, the
// closures of a factory) has them alike, so caudal._steps.analyse runs for
// the first one and its StepAnalysis is reused for the others
// (FunctionTemplate). What is per object (the function to call, its
// identity: defaults and captured values) is never shared.
//
// The identity of such a function (caudal._identity: docs/cache.md) is
// compositional: a static digest of its module, qualname and code,
// computed once per template, and the native key of its defaults, keyword
// defaults and captured values when those are plain data (None, bool,
// int, float, str, bytes and tuples, lists, dicts, sets of those):
// FunctionKey, which caudal._identity uses too, so both paths agree.

// The facts a plain function's analysis depends on, read from `fn`;
// `code` is null when `fn` is not a plain function (analysed in full).
struct FunctionFacts {
  PyObject* code = nullptr;
  PyObject* name = nullptr;
  PyObject* qualname = nullptr;
  PyObject* module = nullptr;
  Py_ssize_t defaults = 0;
};
FunctionFacts FunctionFactsOf(PyObject* fn);

struct FunctionTemplate {
  // Strong references: the code's address is the template's key, so it
  // must not be reused while the template lives.
  py::object code, name, qualname, module;
  Py_ssize_t defaults = 0;
  StepAnalysis analysis;  // fn and identity_of unset (per object)
  py::object name_str;    // spec.name as a Python str, shared by entries
  // The static part of the identity: "" until computed; "-" when the
  // function cannot be identified this way (the full walk decides).
  std::string static_digest;
  // The executor's per-name lookups for this analysis: an entry outside
  // the table (no Python objects) holding the stats pointer and the
  // caches an entry keeps (CopyEntryCaches), copied into each new entry
  // and refreshed from each evicted one. `last`: the last entry made from
  // it, copied from instead while alive (it learnt the most recently).
  std::shared_ptr<StepEntry> proto;
  std::weak_ptr<StepEntry> last;
  bool Matches(const FunctionFacts& f) const;
  ~FunctionTemplate();  // takes the GIL
};

// The identity key of a plain function under its template's static digest
// (16 bytes): false when a default or captured value is not plain data.
// Raises nothing; never calls Python code.
bool FunctionKey(PyObject* fn, const std::string& static_digest, Key128* out);

// ---- the analysis of a caudal.Step, kept for the step's life ----
//
// A caudal.Step is immutable, so its analysis (and its identity, once
// computed) holds for its whole life: the first executor that meets it
// remembers it here, and a step met again after its table entry was
// evicted is not analysed again. The memo is process-wide, keyed by the
// step's address and dropped by a weak reference's callback when the step
// dies (so an address is never reused under it). It keeps no object that
// could refer back to the step (which would keep it alive: the memo is
// invisible to the garbage collector): the callable, fallback and
// exception filters are read again from the step's own attributes; a step
// whose analysis is not made of those (an agent's run(), a class with
// actors=, the ray backend) is not remembered. One memo per step: the
// analysis made with the executor defaults (retry, backend) last asked.
// GIL held throughout.
struct StepMemo {
  py::object weakref;  // to the step; its callback drops this memo
  py::object retry;    // the executor default it was made with (or None)
  std::string backend;
  // The analysis without its objects (None here); cache_group and the
  // identity (cache_ns once computed) filled in.
  StepAnalysis analysis;
  bool identity_is_fn = false;  // identity_of is fn (else None)
  enum class RetryOn : uint8_t { kNone, kStepRetry, kDefaultRetry };
  RetryOn retry_on = RetryOn::kNone;
  bool breaker_exclude = false;  // step.breaker_exclude (else None)
  py::object name_str;           // spec.name as a Python str
  // As FunctionTemplate::proto, for the executor (Engine id) that made it:
  // its pointers are that executor's.
  std::shared_ptr<StepEntry> proto;
  std::weak_ptr<StepEntry> last;  // of proto_engine
  uint64_t proto_engine = 0;
  // The entry proto_engine evicted last, without the step's objects
  // (Engine::Park): re-linked as it is when the step is met again.
  std::shared_ptr<StepEntry> parked;
  ~StepMemo();  // takes the GIL
};

// Whether `obj` is exactly a caudal.Step (not a subclass).
bool IsCaudalStep(PyObject* obj);
// The objects of a remembered analysis, read again from the step.
struct RecalledObjects {
  py::object fn, fallback, breaker_exclude, retry_on;
};
// The memo of `step` made with these defaults, its objects read from the
// step into `out`; null when there is none.
std::shared_ptr<StepMemo> RecallStep(PyObject* step, PyObject* retry,
                                     const std::string& backend,
                                     RecalledObjects* out);
// Remembers `analysis` of `step` (replacing one made with other defaults);
// null when the step's analysis is not made of its own attributes, or the
// step cannot be referenced weakly.
std::shared_ptr<StepMemo> RememberStep(PyObject* step, py::object retry,
                                       const std::string& backend,
                                       const StepAnalysis& analysis);
// How many steps are remembered (tests).
size_t StepMemoSize();

// Copies the per-entry caches that depend only on the spec and the name
// (the breaker and the limiter, generation-checked; whether the cache name
// is recorded; the cache admission's state) from an entry of the same
// analysis in the same executor.
void CopyEntryCaches(const StepEntry& from, StepEntry& to);

}  // namespace caudal::bindings

#endif  // CAUDAL_BINDINGS_STEP_REUSE_H_
