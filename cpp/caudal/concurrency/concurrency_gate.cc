#include "caudal/concurrency/concurrency_gate.h"

#include <cstdint>

namespace caudal {

// The handles the bindings use: an integer id or a pointer.
template class ConcurrencyGate<uint64_t>;
template class ConcurrencyGate<void*>;

}  // namespace caudal
