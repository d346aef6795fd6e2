// Helpers shared by the ResultCache tests (result_cache_test.cc,
// result_cache_concurrency_test.cc).
#ifndef CAUDAL_TESTS_CPP_CACHE_RESULT_CACHE_TEST_UTIL_H_
#define CAUDAL_TESTS_CPP_CACHE_RESULT_CACHE_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "caudal/cache/result_cache.h"

namespace caudal {
namespace result_cache_test {

// A well-spread key for a small integer (the shard comes from key.hi).
inline Key128 K(uint64_t i) {
  auto mix = [](uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  return Key128{mix(i * 2 + 1), mix(i * 2 + 2)};
}

inline const std::vector<std::string> kNoTags;

inline ResultCacheOptions Options(size_t max_entries, size_t max_bytes = 0,
                                  size_t num_shards = 16) {
  ResultCacheOptions o;
  o.max_entries = max_entries;
  o.max_bytes = max_bytes;
  o.num_shards = num_shards;
  return o;
}

// Puts "v<i>" under K(i), 1 byte, never expiring, group 0, no tags.
inline void PutSimple(ResultCache<std::string>& c, uint64_t i,
                      std::vector<std::string>* dropped = nullptr) {
  c.Put(K(i), "v" + std::to_string(i), 1, kNeverExpires, 0, kNoTags, dropped);
}

inline bool Has(ResultCache<std::string>& c, uint64_t i, int64_t now = 0) {
  return c.Get(K(i), now).has_value();
}

}  // namespace result_cache_test
}  // namespace caudal

#endif  // CAUDAL_TESTS_CPP_CACHE_RESULT_CACHE_TEST_UTIL_H_
