#include "memory_bindings.h"

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "caudal/base/alloc_counter.h"
#include "caudal/memory/memory_monitor.h"
#include "monitor_bindings.h"

namespace caudal::bindings {

py::dict MemoryStatsDict(Executor& core) {
  py::dict d;
  MemoryStatsInto(d, MemorySectionNow(core));
  return d;
}

void SetRssSource(Executor& core, py::object source) {
  if (source.is_none()) {
    core.memory_monitor().SetSource({});
    return;
  }
  // Owned by the monitor, which may drop it from any thread.
  std::shared_ptr<PyObject> fn(source.release().ptr(), DecRefWithGil);
  core.memory_monitor().SetSource([fn]() -> absl::StatusOr<uint64_t> {
    PyGILState_STATE g = PyGILState_Ensure();
    absl::StatusOr<uint64_t> out = absl::UnavailableError("rss source failed");
    PyObject* r = PyObject_CallNoArgs(fn.get());
    if (r != nullptr) {
      const unsigned long long v = PyLong_AsUnsignedLongLong(r);
      Py_DECREF(r);
      if (!PyErr_Occurred()) out = static_cast<uint64_t>(v);
    }
    // A failing source counts as a read error (stats: rss_read_errors).
    PyErr_Clear();
    PyGILState_Release(g);
    return out;
  });
}

void RegisterMemory(py::module_& m) {
  m.def(
      "rss_bytes",
      []() -> py::object {
        absl::StatusOr<uint64_t> rss = ReadProcessRss();
        if (!rss.ok()) return py::none();
        return py::int_(*rss);
      },
      "This process's resident set size in bytes, read natively from "
      "/proc/self/statm (None where there is none: not Linux).");
  m.def(
      "_native_allocations",
      []() -> py::object {
        if (!alloc_counter::Enabled()) return py::none();
        return py::int_(alloc_counter::ThreadAllocations());
      },
      "operator new calls made by this thread's native code, or None when "
      "the build does not count them (-DCAUDAL_COUNT_ALLOCATIONS=ON).");
}

}  // namespace caudal::bindings
