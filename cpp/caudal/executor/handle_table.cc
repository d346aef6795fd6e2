#include "caudal/executor/handle_table.h"

namespace caudal::executor_internal {

TableIdentity NextTableIdentity() {
  static std::atomic<uint64_t> next{0};
  const uint64_t n = next.fetch_add(1, std::memory_order_relaxed);
  // Tags 1..1023 in turn; salts spread (a multiplicative hash of n) so that
  // tables whose tags collide start their generations far apart.
  const auto tag = static_cast<uint32_t>(1 + n % 1023);
  const auto salt =
      static_cast<uint32_t>((n * 0x9E3779B97F4A7C15ull) >> 32) & ~1u;
  return {tag, salt};
}

}  // namespace caudal::executor_internal
