#include "caudal/base/alloc_counter.h"

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace caudal::alloc_counter {
namespace {
thread_local uint64_t thread_count = 0;
std::atomic<uint64_t> total_count{0};
}  // namespace

#ifdef CAUDAL_COUNT_ALLOCATIONS
bool Enabled() { return true; }
#else
bool Enabled() { return false; }
#endif
uint64_t ThreadAllocations() { return thread_count; }
uint64_t TotalAllocations() {
  return total_count.load(std::memory_order_relaxed);
}

#ifdef CAUDAL_COUNT_ALLOCATIONS
namespace internal {
void* Allocate(std::size_t n, std::size_t align, bool nothrow) {
  ++thread_count;
  total_count.fetch_add(1, std::memory_order_relaxed);
  if (n == 0) n = 1;
  void* p = nullptr;
  if (align <= alignof(std::max_align_t)) {
    p = std::malloc(n);
  } else if (posix_memalign(&p, align, n) != 0) {
    p = nullptr;
  }
  if (p == nullptr && !nothrow) throw std::bad_alloc();
  return p;
}
}  // namespace internal
#endif

}  // namespace caudal::alloc_counter

#ifdef CAUDAL_COUNT_ALLOCATIONS
using caudal::alloc_counter::internal::Allocate;
constexpr std::size_t kPlain = alignof(std::max_align_t);

void* operator new(std::size_t n) { return Allocate(n, kPlain, false); }
void* operator new[](std::size_t n) { return Allocate(n, kPlain, false); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return Allocate(n, kPlain, true);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return Allocate(n, kPlain, true);
}
void* operator new(std::size_t n, std::align_val_t a) {
  return Allocate(n, static_cast<std::size_t>(a), false);
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return Allocate(n, static_cast<std::size_t>(a), false);
}
void* operator new(std::size_t n, std::align_val_t a,
                   const std::nothrow_t&) noexcept {
  return Allocate(n, static_cast<std::size_t>(a), true);
}
void* operator new[](std::size_t n, std::align_val_t a,
                     const std::nothrow_t&) noexcept {
  return Allocate(n, static_cast<std::size_t>(a), true);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
#endif
