// Python surface of the executor's memory management (record pool, memory
// pressure; cpp/caudal/executor/executor_memory.cc) and of the allocation
// counter of instrumented builds (cpp/caudal/base/alloc_counter.h).
#ifndef CAUDAL_BINDINGS_MEMORY_BINDINGS_H_
#define CAUDAL_BINDINGS_MEMORY_BINDINGS_H_

#include "caudal/executor/executor.h"
#include "common.h"

namespace caudal::bindings {

// stats["memory"]'s native part: usage_mb, memory_pressure_level, pool
// counters, what is shrunk (MemoryStatsInto, monitor_bindings.h). Reads RSS
// on the executor's clock (and acts on a level change).
py::dict MemoryStatsDict(Executor& core);

// Test hook: RSS from `source()` (an int of bytes), or the process's own
// when `source` is None. The callable is called with the GIL held.
void SetRssSource(Executor& core, py::object source);

// _core._native_allocations(): operator new calls made by this thread, or
// None when the build does not count them.
void RegisterMemory(py::module_& m);

}  // namespace caudal::bindings

#endif  // CAUDAL_BINDINGS_MEMORY_BINDINGS_H_
