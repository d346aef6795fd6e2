// What a failed attempt's exception says, as facts for the core
// (AttemptError): its type and message, retry_on / breaker_exclude matches,
// overload and network errors, the HTTP status and the Retry-After headers
// of the common HTTP and LLM clients. Only on the failure path; nothing
// here decides (the core classifies: attempt.h).
#ifndef CAUDAL_BINDINGS_FAILURE_FACTS_H_
#define CAUDAL_BINDINGS_FAILURE_FACTS_H_

#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "caudal/executor/attempt.h"
#include "common.h"

namespace caudal::bindings {

// The facts the core classifies a failure by (AttemptError): raised
// caudal.OverloadedError (overload), a ConnectionError or TimeoutError
// (network_error), and the HTTP status carried as `status_code` / `status`
// on the exception or on its `response` (httpx, aiohttp, openai and
// requests errors all carry one).
// The transport errors of the common HTTP and LLM clients, which do not
// derive from Python's ConnectionError/TimeoutError: recognised by a class
// in the exception's MRO (module family, class name), without importing
// the clients. Only on the failure path.
bool IsClientTransportError(PyObject* exc);
bool IsClientTransportType(PyTypeObject* tp);

// What an exception's type alone says about a failure (cached per thread
// for the last type seen, keyed by its version tag).
struct TypeFacts {
  bool overload = false;     // a caudal.OverloadedError
  bool permanent = false;    // a caudal.errors.PermanentError
  bool worker_lost = false;  // a caudal.errors.RemoteWorkerDiedError
  // A ConnectionError, TimeoutError, or a client's transport error.
  bool network = false;
  // Plain attribute lookup, and none of the names ClassifyFailure probes
  // (retry_after, status_code, status, response, headers) on the type: an
  // instance without attributes of its own has none of them.
  bool plain = false;
};
TypeFacts FactsOfType(PyTypeObject* tp);

// Whether the exception instance has attributes of its own (its __dict__).
bool HasOwnAttributes(PyObject* exc);

// The value of header `name` in `headers` (httpx and requests headers,
// aiohttp's multidict: all have a case-insensitive .get), or "".
std::string HeaderValue(PyObject* headers, const char* name);

// The Retry-After and retry-after-ms headers of an HTTP error: on its
// `response` (httpx, requests, openai, anthropic) or on itself (aiohttp's
// ClientResponseError has `headers`).
void RetryHeaders(PyObject* exc, PyObject* resp, std::string* ra,
                  std::string* ra_ms);

// The facts above, and the exception's `retry_after` hint (RetryAfterHint);
// probes nothing the exception's type says it cannot have.
void ClassifyFailure(py::handle exc, AttemptError* err,
                     std::string* retry_after, std::string* retry_after_ms);

bool Matches(const py::object& spec, py::handle exc, bool if_none);

// "module.QualName" of the exception's type (cached per thread for the
// last type seen: valid until the next call on this thread).
absl::string_view QualifiedTypeName(py::handle exc);

// str(exc) as UTF-8, viewed in `*holder` (which keeps the str alive):
// nothing copied. "<unprintable>" when str() raises or the text cannot be
// encoded.
absl::string_view StrView(py::handle exc, py::object* holder);

// A `retry_after` attribute (seconds) on the exception, e.g. set from an
// HTTP 429's Retry-After header.
absl::optional<double> RetryAfterHint(py::handle exc);

// "Type: message" of an exception, for a failed result's feedback
// ("Type: <unprintable>" when its str() raises).
py::object FeedbackOf(py::handle exc);

}  // namespace caudal::bindings

#endif  // CAUDAL_BINDINGS_FAILURE_FACTS_H_
