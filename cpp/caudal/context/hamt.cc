#include "caudal/context/hamt.h"

#include <atomic>
#include <cstdint>
#include <new>

namespace caudal {

void* AtomicNodes::AllocNode(size_t bytes) {
  void* mem = ::operator new(bytes, std::nothrow);
  if (mem != nullptr) new (mem) NodeHeader{1};
  return mem;
}

void AtomicNodes::FreeNode(NodeHeader* node) {
  node->~NodeHeader();
  ::operator delete(node);
}

namespace hamt_internal {

uint64_t NewMutationId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace hamt_internal
}  // namespace caudal
