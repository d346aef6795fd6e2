// ResultCache: the in-process (L1) tier of step-result caching. A sharded
// LRU cache with per-entry expiry (TTL), an entry bound, an optional byte
// bound, tags with invalidation by tag, and invalidation by group (a step).
//
// It is a template over the value type V so that the core stays free of
// Python: the bindings instantiate it with a small refcounted handle to a
// Python object; the tests use std::string and std::shared_ptr.
//
// Values are never destroyed under a shard lock. Every call that removes
// values (Get finding an expired entry, Put replacing or evicting, Erase,
// InvalidateTag, InvalidateGroup, Clear, Resize, EvictExpired) moves them
// into the caller's `dropped` vector, to be destroyed by the caller after the
// call returns (destroying a Python object can run arbitrary code, including
// code that calls back into this cache). With `dropped == nullptr` the call
// destroys them itself, after releasing the lock.
//
// Design.
//  * Keys are Key128 (see hash/key128.h); the shard is chosen by key.hi.
//    Each shard has its own Mutex (caudal/base/mutex.h: absl::Mutex made
//    visible to TSan), hash index Key128 -> slot, slot array with a free
//    list, doubly linked LRU list through slot indices, tag index (tag ->
//    slots) and per-group intrusive lists (group -> head).
//  * Bounds are per shard: shard i gets max_entries / S entries (the
//    remainder spread over the first shards), likewise for max_bytes. So the
//    totals never exceed the bounds, and LRU order is exact within a shard
//    (approximate across shards). To keep small caches exact, the number of
//    shards S is reduced (by halving) until every shard has room for at least
//    kMinEntriesPerShard entries and, if max_bytes is set, kMinBytesPerShard
//    bytes: a cache of 3 entries has 1 shard and holds exactly 3 entries.
//    Resize keeps S; a later bound below S leaves some shards without room.
//  * A value whose size exceeds its shard's byte bound is not stored (a
//    "rejection"); an older entry under the same key is removed, since the
//    caller has superseded it.
//  * Expiry: an entry is live while now_ns < expires_at_ns, i.e. it counts as
//    expired from expires_at_ns on (an entry stored with expires_at_ns <= now
//    is never returned). kNeverExpires never expires. Expired entries are
//    removed lazily by Get, or in bulk by EvictExpired.
//  * Invalidation epochs: a result computed by an execution that began before
//    an invalidation covering it must never be stored, even if it finishes
//    after the invalidation removed everything. Every invalidation (tag,
//    group, Clear) takes the next value of one global counter E (fetch_add)
//    and, before it locks any shard, raises the epoch of what it covers to
//    that value: one of kEpochSlots counters for tags (slot = hash of the tag),
//    one of kEpochSlots for groups (slot = group id), one for Clear. An
//    execution reads E when it begins (Epoch(): one relaxed load); Put with
//    that `since_epoch` checks, under the shard lock, that no covering epoch
//    exceeds it (two loads plus one hash and load per tag). If the check runs
//    before the invalidation reaches the shard, the value is stored and then
//    removed by it; if after, the shard lock orders the epoch store before
//    the check and the value is not stored (counted in `stale`). Two tags or
//    groups sharing a slot only make a store be skipped, never a stale value
//    be kept. Storable() makes the same check without storing (the shared
//    tier asks it before writing).
//
// Invariants (checked by CheckInvariants()): per shard, the index, the LRU
// list and the gauges agree; entries <= the shard's entry bound and bytes <=
// its byte bound after every call; the tag index holds exactly the (tag,
// entry) pairs of live entries; each live entry is on exactly its group's
// list.
//
// Cost: Get is one lock, one hash lookup, a list splice and a copy of V (no
// allocation). Put is one lock, one or two hash lookups, one more per tag and
// for the group, and allocates only to grow the slot array or for tag
// strings. InvalidateTag and InvalidateGroup cost O(matching entries) plus
// one lock per shard; Clear, Resize and EvictExpired are O(entries).
//
// Thread-safety: all methods are thread-safe. Counters and gauges are
// atomics, so GetStats() takes no lock; it sums the shards one after the
// other, so under concurrent use it is not one atomic snapshot.
//
// Requirements on V: default-constructible, movable and copyable (Get returns
// a copy, made under the shard lock, so copying must not call into this
// cache). A moved-from V must be cheap and side-effect free to destroy or
// assign to, since that happens under the lock (true of std::string,
// std::shared_ptr and pybind11 object handles).
#ifndef CAUDAL_CACHE_RESULT_CACHE_H_
#define CAUDAL_CACHE_RESULT_CACHE_H_

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "absl/types/span.h"
#include "caudal/base/mutex.h"
#include "caudal/hash/key128.h"

namespace caudal {

// expires_at_ns of an entry that never expires.
inline constexpr int64_t kNeverExpires = std::numeric_limits<int64_t>::max();

struct ResultCacheOptions {
  size_t max_entries = 500;  // > 0
  size_t max_bytes = 0;      // 0 = no byte bound
  size_t num_shards = 16;    // a power of two; may be reduced, see above
};

struct ResultCacheStats {
  uint64_t hits = 0;           // Get returned a live entry
  uint64_t misses = 0;         // Get found nothing, or an expired entry
  uint64_t inserts = 0;        // Put stored a value (new key or replacement)
  uint64_t evictions = 0;      // removed to respect the bounds (Put, Resize)
  uint64_t expirations = 0;    // removed as expired (Get, EvictExpired)
  uint64_t invalidations = 0;  // removed by Erase, Invalidate*, Clear
  uint64_t rejections = 0;     // Put not stored: value larger than the bound
  uint64_t stale = 0;  // Put not stored: an invalidation covering it came
                       // after its since_epoch (see "Invalidation epochs")
  size_t entries = 0;
  size_t bytes = 0;
  size_t max_entries = 0;
  size_t max_bytes = 0;
  size_t num_shards = 0;
  double hit_rate = 0.0;  // hits / (hits + misses), 0 before any Get
};

// kInvalidArgument naming the offending field, or OK.
absl::Status ValidateResultCacheOptions(const ResultCacheOptions& options);

namespace cache_internal {

inline constexpr size_t kMinEntriesPerShard = 32;
// Epoch counters per kind (tags, groups): a power of two.
inline constexpr size_t kEpochSlots = 256;
inline constexpr size_t kMinBytesPerShard = size_t{1} << 20;

// Shards used for `options`: num_shards rounded down to a power of two, then
// halved until each shard gets kMinEntriesPerShard entries and (with a byte
// bound) kMinBytesPerShard bytes, but at least 1.
size_t ShardCountFor(const ResultCacheOptions& options);

// Shard i's part of `total` split over `shards`: the parts differ by at most
// one and add up to `total`.
inline size_t ShareOf(size_t total, size_t shards, size_t i) {
  return total / shards + (i < total % shards ? 1 : 0);
}

}  // namespace cache_internal

// since_epoch of a Put that is not checked against invalidations.
inline constexpr uint64_t kAnyEpoch = std::numeric_limits<uint64_t>::max();

template <typename V>
class ResultCache {
 public:
  // Validates the options first.
  static absl::StatusOr<std::unique_ptr<ResultCache>> Create(
      const ResultCacheOptions& options);

  // `options` should be valid (see Create); invalid values are clamped
  // (max_entries 0 -> 1, num_shards -> a power of two >= 1).
  explicit ResultCache(const ResultCacheOptions& options);
  ResultCache(const ResultCache&) = delete;
  ResultCache& operator=(const ResultCache&) = delete;

  // The value stored under `key` if it is live at now_ns; the entry becomes
  // the most recently used. An expired entry is removed (into `dropped`) and
  // counted as an expiration and a miss.
  absl::optional<V> Get(const Key128& key, int64_t now_ns,
                        std::vector<V>* dropped = nullptr);
  // As Get, but a live value is handed to `visit(const V&)` under the
  // shard's lock instead of being copied out (a caller that takes its own
  // reference to what V points to saves the copy's reference counting).
  // `visit` must be quick and must not call into this cache. True on a hit.
  template <typename F>
  bool Visit(const Key128& key, int64_t now_ns, std::vector<V>* dropped,
             F&& visit);

  // Stores `value` (accounted as `bytes`) under `key` as the most recently
  // used entry, replacing any entry with that key, then evicts least
  // recently used entries of the shard while it is over a bound. `group`
  // identifies the producing step (for InvalidateGroup); `tags` may be empty
  // and may repeat. Returns false when the value was rejected (larger than
  // the shard's byte bound): it is then moved to `dropped` as well.
  // With `since_epoch` (an Epoch() read when the producing execution began),
  // a value that an invalidation since then covers (its group, one of its
  // tags, or Clear) is not stored either: false, moved to `dropped`, counted
  // as stale; an older entry under the key is left alone (the invalidation
  // removed or will remove it).
  bool Put(const Key128& key, V value, size_t bytes, int64_t expires_at_ns,
           uint64_t group, absl::Span<const std::string> tags,
           std::vector<V>* dropped = nullptr, uint64_t since_epoch = kAnyEpoch);

  // The invalidation epoch now: read it when an execution begins, pass it to
  // Put / Storable when it ends. One relaxed load.
  uint64_t Epoch() const { return epoch_.load(std::memory_order_relaxed); }
  // Whether no invalidation covering (group, tags) came after `since_epoch`.
  // Without a lock: an invalidation that starts right after may still come
  // (the caller orders its write before that invalidation's effect itself).
  bool Storable(uint64_t since_epoch, uint64_t group,
                absl::Span<const std::string> tags) const;

  // Removes the entry with `key`, if any; true if there was one.
  bool Erase(const Key128& key, std::vector<V>* dropped = nullptr);

  // Remove every entry carrying `tag` / stored with `group`; return how many.
  // Each first raises the epoch of what it covers (see "Invalidation
  // epochs"), so executions in flight do not store their results later.
  size_t InvalidateTag(absl::string_view tag,
                       std::vector<V>* dropped = nullptr);
  size_t InvalidateGroup(uint64_t group, std::vector<V>* dropped = nullptr);

  // For an invalidation that learns what it covers later (the executor's
  // InvalidatePrefix: steps that have not stored anything yet): TakeEpoch
  // takes the next epoch without covering anything; CoverGroup raises
  // `group`'s epoch to at least `epoch` (one TakeEpoch returned), so that
  // Put and Storable refuse the group's results from executions that began
  // before it.
  uint64_t TakeEpoch() {
    return epoch_.fetch_add(1, std::memory_order_relaxed) + 1;
  }
  void CoverGroup(uint64_t group, uint64_t epoch) {
    RaiseTo(group_epochs_[GroupSlot(group)], epoch);
  }

  // Removes every entry (counted as invalidations) and frees the slot arrays;
  // results of executions in flight are not stored afterwards.
  void Clear(std::vector<V>* dropped = nullptr);

  // Sets new bounds (split over the existing shards) and evicts at once down
  // to them. kInvalidArgument, and no change, if max_entries is 0.
  absl::Status Resize(size_t max_entries, size_t max_bytes,
                      std::vector<V>* dropped = nullptr);

  // Removes every entry expired at now_ns; returns how many. O(entries).
  size_t EvictExpired(int64_t now_ns, std::vector<V>* dropped = nullptr);

  ResultCacheStats GetStats() const;
  size_t num_shards() const { return num_shards_; }

  // Verifies the invariants listed in the header comment, one shard at a
  // time (each under its lock). O(entries); meant for tests.
  absl::Status CheckInvariants() const;

 private:
  static constexpr uint32_t kNil = std::numeric_limits<uint32_t>::max();

  struct Slot {
    Key128 key;
    uint32_t prev = kNil;  // towards the most recently used
    uint32_t next = kNil;  // towards the least recently used; free-list link
    uint32_t group_prev = kNil;
    uint32_t group_next = kNil;
    size_t bytes = 0;
    int64_t expires_at_ns = 0;
    uint64_t group = 0;
    std::vector<std::string> tags;
    V value{};
  };

  struct alignas(64) Shard {
    mutable Mutex mu;
    absl::flat_hash_map<Key128, uint32_t> index ABSL_GUARDED_BY(mu);
    std::vector<Slot> slots ABSL_GUARDED_BY(mu);
    uint32_t free_head ABSL_GUARDED_BY(mu) = kNil;
    uint32_t mru ABSL_GUARDED_BY(mu) = kNil;
    uint32_t lru ABSL_GUARDED_BY(mu) = kNil;
    absl::flat_hash_map<std::string, absl::flat_hash_set<uint32_t>> tag_index
        ABSL_GUARDED_BY(mu);
    absl::flat_hash_map<uint64_t, uint32_t> group_heads ABSL_GUARDED_BY(mu);
    size_t max_entries ABSL_GUARDED_BY(mu) = 0;
    size_t max_bytes ABSL_GUARDED_BY(mu) = 0;  // 0 = unbounded
    // Written only under mu (so load + store is enough), read by GetStats
    // without it.
    std::atomic<uint64_t> hits{0}, misses{0}, inserts{0}, evictions{0},
        expirations{0}, invalidations{0}, rejections{0}, stale{0};
    std::atomic<size_t> entries{0}, bytes{0};
  };

  // Single-writer atomic update (the writer holds the shard lock).
  template <typename T>
  static void Add(std::atomic<T>& a, T delta) {
    a.store(a.load(std::memory_order_relaxed) + delta,
            std::memory_order_relaxed);
  }
  template <typename T>
  static void Sub(std::atomic<T>& a, T delta) {
    a.store(a.load(std::memory_order_relaxed) - delta,
            std::memory_order_relaxed);
  }

  Shard& ShardFor(const Key128& key) const {
    return shards_[key.hi & (num_shards_ - 1)];
  }
  void SetBoundsLocked(Shard& s, size_t i, size_t max_entries, size_t max_bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  bool OverBoundsLocked(const Shard& s) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  void EvictOverBoundsLocked(Shard& s, std::vector<V>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  uint32_t AllocSlotLocked(Shard& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  // Unlinks slot i from everything, moves its value to `out`, frees it.
  void RemoveLocked(Shard& s, uint32_t i, std::vector<V>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  void LinkFrontLocked(Shard& s, uint32_t i)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  void UnlinkLruLocked(Shard& s, uint32_t i)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  void LinkGroupLocked(Shard& s, uint32_t i)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  void UnlinkGroupLocked(Shard& s, uint32_t i)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  void LinkTagsLocked(Shard& s, uint32_t i) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  void UnlinkTagsLocked(Shard& s, uint32_t i)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  absl::Status CheckShardLocked(const Shard& s, size_t shard_index) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);

  // Invalidation epochs (see the header comment).
  static size_t TagSlot(absl::string_view tag) {
    return absl::HashOf(tag) & (cache_internal::kEpochSlots - 1);
  }
  static size_t GroupSlot(uint64_t group) {
    return (group ^ (group >> 32)) & (cache_internal::kEpochSlots - 1);
  }
  // Takes the next epoch and raises `slot` to it (a concurrent, later
  // invalidation of the same slot may have raised it further already).
  void RaiseEpoch(std::atomic<uint64_t>& slot) { RaiseTo(slot, TakeEpoch()); }
  static void RaiseTo(std::atomic<uint64_t>& slot, uint64_t epoch);
  bool StaleSince(uint64_t since_epoch, uint64_t group,
                  absl::Span<const std::string> tags) const;

  const size_t num_shards_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<uint64_t> epoch_{0};
  std::atomic<uint64_t> clear_epoch_{0};
  std::atomic<uint64_t> tag_epochs_[cache_internal::kEpochSlots] = {};
  std::atomic<uint64_t> group_epochs_[cache_internal::kEpochSlots] = {};
  Mutex resize_mu_;  // serialises Resize calls
  std::atomic<size_t> max_entries_;
  std::atomic<size_t> max_bytes_;
};

}  // namespace caudal

// The implementation (a template, so it lives in headers).
// clang-format off
#include "caudal/cache/internal/result_cache_impl.h"   // IWYU pragma: export
#include "caudal/cache/internal/result_cache_slots.h"  // IWYU pragma: export
// clang-format on

#endif  // CAUDAL_CACHE_RESULT_CACHE_H_
