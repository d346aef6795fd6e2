// Python surface of the executor's span recorder
// (cpp/caudal/telemetry/span_recorder.h): switching tracing on when an
// exporter is attached, the trace-parent source that reads the caller's
// OpenTelemetry context, and the flusher's wait and drain.
#ifndef CAUDAL_BINDINGS_TELEMETRY_BINDINGS_H_
#define CAUDAL_BINDINGS_TELEMETRY_BINDINGS_H_

#include "caudal/executor/executor.h"
#include "common.h"

namespace caudal::bindings {

// Reads the span that is current in OpenTelemetry's context: the context
// variable that holds the current Context (a dict) and the key of the span
// in it. The last span seen and its ids are cached, so executions under one
// parent cost a context-variable read, a dict lookup and a compare. Used
// with the GIL held only.
struct ParentReader {
  py::object contextvar;  // opentelemetry's ContextVar("current_context")
  py::object key;         // the span's key in the Context
  py::object last_span;
  TraceParent last;
};

// The engine's telemetry state (owned by the Engine, destroyed with it).
struct TelemetryState {
  ParentReader parent;
};

// Attaches (True) or detaches the exporters' recording.
void SetTracing(Executor& core, bool on);
// Parent capture from (contextvar, key); None turns it off.
void SetParentSource(Executor& core, TelemetryState& state, py::object cv,
                     py::object key);
// Blocks (GIL released) until spans are due or `timeout_s` passes.
bool WaitForSpans(Executor& core, double timeout_s);
// Every buffered span as a tuple (see telemetry.py, Span._from_native).
py::list DrainSpans(Executor& core);
// realtime - monotonic, in ns: converts span times to the Unix epoch.
int64_t ClockOffsetNs();

}  // namespace caudal::bindings

#endif  // CAUDAL_BINDINGS_TELEMETRY_BINDINGS_H_
