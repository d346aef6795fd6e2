#include "caudal/concurrency/adaptive_limiter.h"

#include <cstdint>

namespace caudal {

// The handles the bindings use: an integer id or a pointer.
template class AdaptiveLimiter<uint64_t>;
template class AdaptiveLimiter<void*>;

}  // namespace caudal
