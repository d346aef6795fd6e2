// Key128: the 128-bit cache key produced by KeyHasher (key_hasher.h) and
// consumed by ResultCache and SingleFlight (cache/).
//
// It lives in its own small header so that the cache does not depend on the
// hasher. A key is two 64-bit halves of an XXH3-128 digest; `lo` and `hi` are
// the digest's low and high 64 bits. ToHex() spells the digest as 32
// lowercase hex digits, high half first (XXH3's canonical big-endian form),
// which is the spelling used for keys shared through Redis.
//
// Thread-safety: a value type.
#ifndef CAUDAL_HASH_KEY128_H_
#define CAUDAL_HASH_KEY128_H_

#include <cstdint>
#include <string>
#include <utility>

namespace caudal {

struct Key128 {
  uint64_t lo = 0;
  uint64_t hi = 0;

  // 32 lowercase hex digits: hi then lo, each zero-padded to 16 digits.
  std::string ToHex() const;

  friend bool operator==(const Key128& a, const Key128& b) {
    return a.lo == b.lo && a.hi == b.hi;
  }
  friend bool operator!=(const Key128& a, const Key128& b) { return !(a == b); }

  // Lets Key128 key absl::flat_hash_map / flat_hash_set directly.
  template <typename H>
  friend H AbslHashValue(H h, const Key128& k) {
    return H::combine(std::move(h), k.lo, k.hi);
  }
};

}  // namespace caudal

#endif  // CAUDAL_HASH_KEY128_H_
