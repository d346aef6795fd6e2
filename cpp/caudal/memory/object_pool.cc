#include "caudal/memory/object_pool.h"

namespace caudal::memory_internal {

size_t NextShard() {
  static std::atomic<size_t> next{0};
  return next.fetch_add(1, std::memory_order_relaxed) % kPoolShards;
}

}  // namespace caudal::memory_internal
