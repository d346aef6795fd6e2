#include "caudal/resilience/internal/outcome_ring.h"

#include <algorithm>

namespace caudal {
namespace resilience_internal {

OutcomeRing::OutcomeRing(uint32_t size)
    : size_(size),
      num_words_((size + 63) / 64),
      words_(new std::atomic<uint64_t>[(size + 63) / 64]) {
  for (uint32_t i = 0; i < num_words_; ++i) {
    words_[i].store(0, std::memory_order_relaxed);
  }
}

uint32_t OutcomeRing::Calls() const {
  return static_cast<uint32_t>(
      std::min<uint64_t>(head_.load(std::memory_order_relaxed), size_));
}

uint32_t OutcomeRing::Failures() const {
  uint32_t failures = 0;
  for (uint32_t i = 0; i < num_words_; ++i) {
    failures += static_cast<uint32_t>(
        __builtin_popcountll(words_[i].load(std::memory_order_relaxed)));
  }
  return failures;
}

void OutcomeRing::Clear() {
  for (uint32_t i = 0; i < num_words_; ++i) {
    words_[i].store(0, std::memory_order_relaxed);
  }
  head_.store(0, std::memory_order_relaxed);
}

}  // namespace resilience_internal
}  // namespace caudal
