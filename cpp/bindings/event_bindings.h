// Python surface of the core's EventBus (cpp/caudal/telemetry/event_bus.h):
// a subscription object for caudal.events.EventStream, and the stats dict.
// The async iteration itself lives in python/caudal/events.py.
#ifndef CAUDAL_BINDINGS_EVENT_BINDINGS_H_
#define CAUDAL_BINDINGS_EVENT_BINDINGS_H_

#include <cstdint>

#include "caudal/telemetry/event_bus.h"
#include "common.h"

namespace caudal::bindings {

// A new subscription to `bus` for the types in `mask`, buffering `capacity`
// events. `waker` (a callable or None) is called, with the GIL, when the
// buffer goes from empty to non-empty; its exceptions are swallowed. `owner`
// (the engine holding the bus) is kept alive by the subscription.
py::object SubscribeEvents(EventBus& bus, uint32_t mask, size_t capacity,
                           py::object waker, py::object owner);

// {"published", "delivered", "dropped", "subscribers"}.
py::dict EventBusStatsDict(const EventBus& bus);

void RegisterEvents(py::module_& m);

}  // namespace caudal::bindings

#endif  // CAUDAL_BINDINGS_EVENT_BINDINGS_H_
