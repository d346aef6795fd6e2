#include "caudal/cache/result_cache.h"

#include "absl/strings/str_cat.h"

namespace caudal {

absl::Status ValidateResultCacheOptions(const ResultCacheOptions& options) {
  if (options.max_entries == 0) {
    return absl::InvalidArgumentError("max_entries must be positive");
  }
  const size_t n = options.num_shards;
  if (n == 0 || (n & (n - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_shards must be a power of two, got ", n));
  }
  if (n > (size_t{1} << 16)) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_shards must be at most 65536, got ", n));
  }
  return absl::OkStatus();
}

namespace cache_internal {

size_t ShardCountFor(const ResultCacheOptions& options) {
  size_t shards = 1;
  const size_t wanted = std::min(options.num_shards, size_t{1} << 16);
  while (shards * 2 <= wanted) shards *= 2;
  while (shards > 1 && options.max_entries / shards < kMinEntriesPerShard) {
    shards /= 2;
  }
  while (shards > 1 && options.max_bytes != 0 &&
         options.max_bytes / shards < kMinBytesPerShard) {
    shards /= 2;
  }
  return shards;
}

}  // namespace cache_internal
}  // namespace caudal
