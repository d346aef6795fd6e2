#include "event_bindings.h"

#include <memory>
#include <string>
#include <vector>

namespace caudal::bindings {
namespace {

// The Python object behind caudal._core._EventSubscription.
class PySubscription {
 public:
  PySubscription(EventBus* bus, std::shared_ptr<EventSubscription> sub,
                 py::object owner)
      : bus_(bus), sub_(std::move(sub)), owner_(std::move(owner)) {}
  ~PySubscription() { close(); }

  // Up to `max` events as (type, time_ns, key, value, value2, detail).
  py::list poll(size_t max) {
    std::vector<Event> got;
    sub_->Drain(&got, max);
    py::list out;
    for (const Event& e : got) {
      out.append(py::make_tuple(static_cast<int>(e.type), e.time_ns,
                                py::str(e.key), e.value, e.value2,
                                py::str(e.detail)));
    }
    return out;
  }
  // Unsubscribes (idempotent); buffered events stay readable with poll().
  void close() {
    if (bus_ != nullptr) {
      bus_->Unsubscribe(sub_);
      bus_ = nullptr;
    }
  }
  bool closed() const { return bus_ == nullptr; }
  uint64_t delivered() const { return sub_->delivered(); }
  uint64_t dropped() const { return sub_->dropped(); }
  size_t pending() const { return sub_->Stats().pending; }
  size_t capacity() const { return sub_->capacity(); }

 private:
  EventBus* bus_;  // null once closed; owner_ keeps it alive until then
  std::shared_ptr<EventSubscription> sub_;
  py::object owner_;
};

}  // namespace

py::object SubscribeEvents(EventBus& bus, uint32_t mask, size_t capacity,
                           py::object waker, py::object owner) {
  EventSubscription::Waker w;
  if (!waker.is_none()) {
    // The last owner may be a publisher thread without the GIL.
    std::shared_ptr<PyObject> fn(waker.release().ptr(), DecRefWithGil);
    w = [fn] {
      PyGILState_STATE g = PyGILState_Ensure();
      PyObject* r = PyObject_CallNoArgs(fn.get());
      if (r == nullptr) {
        PyErr_Clear();  // a closed loop, say: the reader is gone
      } else {
        Py_DECREF(r);
      }
      PyGILState_Release(g);
    };
  }
  auto sub = bus.Subscribe(mask, capacity, std::move(w));
  return py::cast(new PySubscription(&bus, std::move(sub), std::move(owner)),
                  py::return_value_policy::take_ownership);
}

py::dict EventBusStatsDict(const EventBus& bus) {
  const EventBusStats s = bus.Stats();
  py::dict d;
  d["published"] = s.published;
  d["delivered"] = s.delivered;
  d["dropped"] = s.dropped;
  d["subscribers"] = s.subscribers;
  return d;
}

void RegisterEvents(py::module_& m) {
  py::list names;
  for (int i = 0; i < kEventTypeCount; ++i)
    names.append(
        py::str(std::string(EventTypeName(static_cast<EventType>(i)))));
  m.attr("EVENT_TYPES") = py::tuple(names);
  py::class_<PySubscription>(
      m, "_EventSubscription",
      "A subscription to an executor's event bus (internal; use "
      "ExecutorCore.events()).")
      .def("poll", &PySubscription::poll, py::arg("max") = 256)
      .def("close", &PySubscription::close)
      .def_property_readonly("closed", &PySubscription::closed)
      .def_property_readonly("delivered", &PySubscription::delivered)
      .def_property_readonly("dropped", &PySubscription::dropped)
      .def_property_readonly("pending", &PySubscription::pending)
      .def_property_readonly("capacity", &PySubscription::capacity);
}

}  // namespace caudal::bindings
