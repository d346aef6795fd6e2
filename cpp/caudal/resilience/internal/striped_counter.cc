#include "caudal/resilience/internal/striped_counter.h"

#include <atomic>

namespace caudal {
namespace resilience_internal {

size_t AssignStripe() {
  static std::atomic<size_t> next{0};
  return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace resilience_internal
}  // namespace caudal
