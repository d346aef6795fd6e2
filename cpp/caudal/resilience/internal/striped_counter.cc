#include "caudal/resilience/internal/striped_counter.h"

#include <atomic>

namespace caudal {
namespace resilience_internal {

size_t AssignStripe() {
  static std::atomic<size_t> next{0};
  return next.fetch_add(1, std::memory_order_relaxed);
}

StripedCounter::~StripedCounter() {
  delete[] slots_.load(std::memory_order_acquire);
}

void StripedCounter::AddEarly(uint64_t n) {
  const uint64_t before = early_.fetch_add(n, std::memory_order_relaxed);
  if (before + n < kEarly || before >= kEarly) return;
  // The add that reached kEarly allocates the stripes (once).
  Slot* fresh = new Slot[kStripes + kShared];
  Slot* expected = nullptr;
  if (!slots_.compare_exchange_strong(expected, fresh,
                                      std::memory_order_acq_rel)) {
    delete[] fresh;
  }
}

uint64_t StripedCounter::Value() const {
  uint64_t sum = early_.load(std::memory_order_relaxed);
  if (const Slot* slots = slots_.load(std::memory_order_acquire)) {
    for (size_t i = 0; i < kStripes + kShared; ++i)
      sum += slots[i].value.load(std::memory_order_relaxed);
  }
  return sum;
}

void StripedCounter::Reset() {
  early_.store(0, std::memory_order_relaxed);
  if (Slot* slots = slots_.load(std::memory_order_acquire)) {
    for (size_t i = 0; i < kStripes + kShared; ++i)
      slots[i].value.store(0, std::memory_order_relaxed);
  }
}

}  // namespace resilience_internal
}  // namespace caudal
