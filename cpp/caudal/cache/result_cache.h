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
  void RaiseEpoch(std::atomic<uint64_t>& slot);
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

// ---------------------------------------------------------------------------
// Implementation (a template, so it lives in the header).

template <typename V>
absl::StatusOr<std::unique_ptr<ResultCache<V>>> ResultCache<V>::Create(
    const ResultCacheOptions& options) {
  absl::Status status = ValidateResultCacheOptions(options);
  if (!status.ok()) return status;
  return std::make_unique<ResultCache<V>>(options);
}

template <typename V>
ResultCache<V>::ResultCache(const ResultCacheOptions& options)
    : num_shards_(cache_internal::ShardCountFor(options)),
      shards_(new Shard[num_shards_]),
      max_entries_(options.max_entries == 0 ? 1 : options.max_entries),
      max_bytes_(options.max_bytes) {
  const size_t max_entries = max_entries_.load();
  for (size_t i = 0; i < num_shards_; ++i) {
    Shard& s = shards_[i];
    MutexLock lock(&s.mu);
    SetBoundsLocked(s, i, max_entries, options.max_bytes);
  }
}

template <typename V>
void ResultCache<V>::SetBoundsLocked(Shard& s, size_t i, size_t max_entries,
                                     size_t max_bytes) {
  s.max_entries = cache_internal::ShareOf(max_entries, num_shards_, i);
  s.max_bytes =
      max_bytes == 0 ? 0 : cache_internal::ShareOf(max_bytes, num_shards_, i);
}

template <typename V>
absl::optional<V> ResultCache<V>::Get(const Key128& key, int64_t now_ns,
                                      std::vector<V>* dropped) {
  std::vector<V> local;  // destroyed after the lock is released
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  const auto it = s.index.find(key);
  if (it == s.index.end()) {
    Add<uint64_t>(s.misses, 1);
    return absl::nullopt;
  }
  const uint32_t i = it->second;
  Slot& slot = s.slots[i];
  if (now_ns >= slot.expires_at_ns) {
    Add<uint64_t>(s.expirations, 1);
    Add<uint64_t>(s.misses, 1);
    RemoveLocked(s, i, dropped != nullptr ? dropped : &local);
    return absl::nullopt;
  }
  Add<uint64_t>(s.hits, 1);
  if (s.mru != i) {
    UnlinkLruLocked(s, i);
    LinkFrontLocked(s, i);
  }
  return slot.value;
}

template <typename V>
bool ResultCache<V>::Put(const Key128& key, V value, size_t bytes,
                         int64_t expires_at_ns, uint64_t group,
                         absl::Span<const std::string> tags,
                         std::vector<V>* dropped, uint64_t since_epoch) {
  std::vector<V> local;  // destroyed after the lock is released
  std::vector<V>* out = dropped != nullptr ? dropped : &local;
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  // Under the lock: an invalidation that raised an epoch before locking
  // this shard is seen here; one that did not will remove the entry.
  if (since_epoch != kAnyEpoch && StaleSince(since_epoch, group, tags)) {
    Add<uint64_t>(s.stale, 1);
    out->push_back(std::move(value));
    return false;
  }
  if (s.max_entries == 0 || (s.max_bytes != 0 && bytes > s.max_bytes)) {
    const auto it = s.index.find(key);
    if (it != s.index.end()) RemoveLocked(s, it->second, out);
    Add<uint64_t>(s.rejections, 1);
    out->push_back(std::move(value));
    return false;
  }
  const auto [it, inserted] = s.index.try_emplace(key, kNil);
  uint32_t i;
  if (inserted) {
    i = AllocSlotLocked(s);
    it->second = i;
    Slot& slot = s.slots[i];
    slot.key = key;
    slot.value = std::move(value);
    LinkFrontLocked(s, i);
    Add<size_t>(s.entries, 1);
  } else {
    i = it->second;
    Slot& slot = s.slots[i];
    out->push_back(std::move(slot.value));
    slot.value = std::move(value);
    Sub<size_t>(s.bytes, slot.bytes);
    UnlinkGroupLocked(s, i);
    UnlinkTagsLocked(s, i);
    if (s.mru != i) {
      UnlinkLruLocked(s, i);
      LinkFrontLocked(s, i);
    }
  }
  Slot& slot = s.slots[i];
  slot.bytes = bytes;
  slot.expires_at_ns = expires_at_ns;
  slot.group = group;
  slot.tags.assign(tags.begin(), tags.end());
  LinkGroupLocked(s, i);
  LinkTagsLocked(s, i);
  Add<size_t>(s.bytes, bytes);
  Add<uint64_t>(s.inserts, 1);
  EvictOverBoundsLocked(s, out);
  return true;
}

template <typename V>
bool ResultCache<V>::Erase(const Key128& key, std::vector<V>* dropped) {
  std::vector<V> local;
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  const auto it = s.index.find(key);
  if (it == s.index.end()) return false;
  RemoveLocked(s, it->second, dropped != nullptr ? dropped : &local);
  Add<uint64_t>(s.invalidations, 1);
  return true;
}

template <typename V>
void ResultCache<V>::RaiseEpoch(std::atomic<uint64_t>& slot) {
  const uint64_t e = epoch_.fetch_add(1, std::memory_order_relaxed) + 1;
  uint64_t cur = slot.load(std::memory_order_relaxed);
  while (cur < e &&
         !slot.compare_exchange_weak(cur, e, std::memory_order_relaxed)) {
  }
}

template <typename V>
bool ResultCache<V>::StaleSince(uint64_t since_epoch, uint64_t group,
                                absl::Span<const std::string> tags) const {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  if (clear_epoch_.load(kRelaxed) > since_epoch) return true;
  if (group_epochs_[GroupSlot(group)].load(kRelaxed) > since_epoch) return true;
  for (const std::string& tag : tags) {
    if (tag_epochs_[TagSlot(tag)].load(kRelaxed) > since_epoch) return true;
  }
  return false;
}

template <typename V>
bool ResultCache<V>::Storable(uint64_t since_epoch, uint64_t group,
                              absl::Span<const std::string> tags) const {
  return since_epoch == kAnyEpoch || !StaleSince(since_epoch, group, tags);
}

template <typename V>
size_t ResultCache<V>::InvalidateTag(absl::string_view tag,
                                     std::vector<V>* dropped) {
  RaiseEpoch(tag_epochs_[TagSlot(tag)]);
  std::vector<V> local;
  std::vector<V>* out = dropped != nullptr ? dropped : &local;
  size_t removed = 0;
  for (size_t si = 0; si < num_shards_; ++si) {
    Shard& s = shards_[si];
    MutexLock lock(&s.mu);
    const auto it = s.tag_index.find(tag);
    if (it == s.tag_index.end()) continue;
    // Take the tag's set out first: removing an entry unlinks its tags, and
    // this one is then already gone.
    const absl::flat_hash_set<uint32_t> slots = std::move(it->second);
    s.tag_index.erase(it);
    for (const uint32_t i : slots) RemoveLocked(s, i, out);
    Add<uint64_t>(s.invalidations, slots.size());
    removed += slots.size();
  }
  return removed;
}

template <typename V>
size_t ResultCache<V>::InvalidateGroup(uint64_t group,
                                       std::vector<V>* dropped) {
  RaiseEpoch(group_epochs_[GroupSlot(group)]);
  std::vector<V> local;
  std::vector<V>* out = dropped != nullptr ? dropped : &local;
  size_t removed = 0;
  for (size_t si = 0; si < num_shards_; ++si) {
    Shard& s = shards_[si];
    MutexLock lock(&s.mu);
    const auto it = s.group_heads.find(group);
    if (it == s.group_heads.end()) continue;
    uint32_t i = it->second;
    size_t n = 0;
    while (i != kNil) {
      const uint32_t next = s.slots[i].group_next;
      RemoveLocked(s, i, out);  // erases the group head when it empties
      ++n;
      i = next;
    }
    Add<uint64_t>(s.invalidations, n);
    removed += n;
  }
  return removed;
}

template <typename V>
void ResultCache<V>::Clear(std::vector<V>* dropped) {
  RaiseEpoch(clear_epoch_);
  std::vector<V> local;
  std::vector<V>* out = dropped != nullptr ? dropped : &local;
  for (size_t si = 0; si < num_shards_; ++si) {
    Shard& s = shards_[si];
    MutexLock lock(&s.mu);
    size_t n = 0;
    for (uint32_t i = s.mru; i != kNil; i = s.slots[i].next) {
      out->push_back(std::move(s.slots[i].value));
      ++n;
    }
    s.index = {};
    s.tag_index = {};
    s.group_heads = {};
    std::vector<Slot>().swap(s.slots);  // only moved-from values remain
    s.free_head = s.mru = s.lru = kNil;
    s.entries.store(0, std::memory_order_relaxed);
    s.bytes.store(0, std::memory_order_relaxed);
    Add<uint64_t>(s.invalidations, n);
  }
}

template <typename V>
absl::Status ResultCache<V>::Resize(size_t max_entries, size_t max_bytes,
                                    std::vector<V>* dropped) {
  if (max_entries == 0) {
    return absl::InvalidArgumentError("max_entries must be positive");
  }
  std::vector<V> local;
  std::vector<V>* out = dropped != nullptr ? dropped : &local;
  MutexLock resize_lock(&resize_mu_);
  max_entries_.store(max_entries, std::memory_order_relaxed);
  max_bytes_.store(max_bytes, std::memory_order_relaxed);
  for (size_t si = 0; si < num_shards_; ++si) {
    Shard& s = shards_[si];
    MutexLock lock(&s.mu);
    SetBoundsLocked(s, si, max_entries, max_bytes);
    EvictOverBoundsLocked(s, out);
  }
  return absl::OkStatus();
}

template <typename V>
size_t ResultCache<V>::EvictExpired(int64_t now_ns, std::vector<V>* dropped) {
  std::vector<V> local;
  std::vector<V>* out = dropped != nullptr ? dropped : &local;
  size_t removed = 0;
  for (size_t si = 0; si < num_shards_; ++si) {
    Shard& s = shards_[si];
    MutexLock lock(&s.mu);
    size_t n = 0;
    uint32_t i = s.mru;
    while (i != kNil) {
      const uint32_t next = s.slots[i].next;
      if (now_ns >= s.slots[i].expires_at_ns) {
        RemoveLocked(s, i, out);
        ++n;
      }
      i = next;
    }
    Add<uint64_t>(s.expirations, n);
    removed += n;
  }
  return removed;
}

template <typename V>
ResultCacheStats ResultCache<V>::GetStats() const {
  ResultCacheStats st;
  constexpr auto kRelaxed = std::memory_order_relaxed;
  for (size_t si = 0; si < num_shards_; ++si) {
    const Shard& s = shards_[si];
    st.hits += s.hits.load(kRelaxed);
    st.misses += s.misses.load(kRelaxed);
    st.inserts += s.inserts.load(kRelaxed);
    st.evictions += s.evictions.load(kRelaxed);
    st.expirations += s.expirations.load(kRelaxed);
    st.invalidations += s.invalidations.load(kRelaxed);
    st.rejections += s.rejections.load(kRelaxed);
    st.stale += s.stale.load(kRelaxed);
    st.entries += s.entries.load(kRelaxed);
    st.bytes += s.bytes.load(kRelaxed);
  }
  st.max_entries = max_entries_.load(kRelaxed);
  st.max_bytes = max_bytes_.load(kRelaxed);
  st.num_shards = num_shards_;
  const uint64_t lookups = st.hits + st.misses;
  st.hit_rate = lookups == 0 ? 0.0
                             : static_cast<double>(st.hits) /
                                   static_cast<double>(lookups);
  return st;
}

template <typename V>
bool ResultCache<V>::OverBoundsLocked(const Shard& s) const {
  return s.entries.load(std::memory_order_relaxed) > s.max_entries ||
         (s.max_bytes != 0 &&
          s.bytes.load(std::memory_order_relaxed) > s.max_bytes);
}

template <typename V>
void ResultCache<V>::EvictOverBoundsLocked(Shard& s, std::vector<V>* out) {
  while (s.lru != kNil && OverBoundsLocked(s)) {
    RemoveLocked(s, s.lru, out);
    Add<uint64_t>(s.evictions, 1);
  }
}

template <typename V>
uint32_t ResultCache<V>::AllocSlotLocked(Shard& s) {
  if (s.free_head != kNil) {
    const uint32_t i = s.free_head;
    s.free_head = s.slots[i].next;
    return i;
  }
  s.slots.emplace_back();
  return static_cast<uint32_t>(s.slots.size() - 1);
}

template <typename V>
void ResultCache<V>::RemoveLocked(Shard& s, uint32_t i, std::vector<V>* out) {
  UnlinkLruLocked(s, i);
  UnlinkGroupLocked(s, i);
  UnlinkTagsLocked(s, i);
  Slot& slot = s.slots[i];
  s.index.erase(slot.key);
  out->push_back(std::move(slot.value));
  Sub<size_t>(s.entries, 1);
  Sub<size_t>(s.bytes, slot.bytes);
  slot.bytes = 0;
  slot.tags.clear();  // keeps the capacity for the slot's next use
  slot.next = s.free_head;
  s.free_head = i;
}

template <typename V>
void ResultCache<V>::LinkFrontLocked(Shard& s, uint32_t i) {
  Slot& slot = s.slots[i];
  slot.prev = kNil;
  slot.next = s.mru;
  if (s.mru != kNil) {
    s.slots[s.mru].prev = i;
  } else {
    s.lru = i;
  }
  s.mru = i;
}

template <typename V>
void ResultCache<V>::UnlinkLruLocked(Shard& s, uint32_t i) {
  Slot& slot = s.slots[i];
  if (slot.prev != kNil) {
    s.slots[slot.prev].next = slot.next;
  } else {
    s.mru = slot.next;
  }
  if (slot.next != kNil) {
    s.slots[slot.next].prev = slot.prev;
  } else {
    s.lru = slot.prev;
  }
  slot.prev = slot.next = kNil;
}

template <typename V>
void ResultCache<V>::LinkGroupLocked(Shard& s, uint32_t i) {
  Slot& slot = s.slots[i];
  slot.group_prev = kNil;
  const auto [it, inserted] = s.group_heads.try_emplace(slot.group, i);
  if (inserted) {
    slot.group_next = kNil;
  } else {
    slot.group_next = it->second;
    s.slots[it->second].group_prev = i;
    it->second = i;
  }
}

template <typename V>
void ResultCache<V>::UnlinkGroupLocked(Shard& s, uint32_t i) {
  Slot& slot = s.slots[i];
  if (slot.group_prev != kNil) {
    s.slots[slot.group_prev].group_next = slot.group_next;
  } else if (slot.group_next != kNil) {
    s.group_heads[slot.group] = slot.group_next;
  } else {
    s.group_heads.erase(slot.group);
  }
  if (slot.group_next != kNil) {
    s.slots[slot.group_next].group_prev = slot.group_prev;
  }
  slot.group_prev = slot.group_next = kNil;
}

template <typename V>
void ResultCache<V>::LinkTagsLocked(Shard& s, uint32_t i) {
  for (const std::string& tag : s.slots[i].tags) s.tag_index[tag].insert(i);
}

template <typename V>
void ResultCache<V>::UnlinkTagsLocked(Shard& s, uint32_t i) {
  for (const std::string& tag : s.slots[i].tags) {
    const auto it = s.tag_index.find(tag);
    if (it == s.tag_index.end()) continue;  // repeated tag, or invalidating
    it->second.erase(i);
    if (it->second.empty()) s.tag_index.erase(it);
  }
}

template <typename V>
absl::Status ResultCache<V>::CheckInvariants() const {
  for (size_t si = 0; si < num_shards_; ++si) {
    const Shard& s = shards_[si];
    MutexLock lock(&s.mu);
    absl::Status status = CheckShardLocked(s, si);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

template <typename V>
absl::Status ResultCache<V>::CheckShardLocked(const Shard& s,
                                              size_t shard_index) const {
  auto fail = [shard_index](const char* what) {
    return absl::InternalError(std::string("shard ") +
                               std::to_string(shard_index) + ": " + what);
  };
  auto live = [&s](uint32_t i) {
    if (i >= s.slots.size()) return false;
    const auto it = s.index.find(s.slots[i].key);
    return it != s.index.end() && it->second == i;
  };
  // LRU list: consistent links, every element indexed, sums match.
  size_t n = 0;
  size_t bytes = 0;
  uint32_t prev = kNil;
  for (uint32_t i = s.mru; i != kNil; i = s.slots[i].next) {
    if (!live(i)) return fail("LRU list holds a slot that is not indexed");
    if (s.slots[i].prev != prev) return fail("broken LRU prev link");
    if ((s.slots[i].key.hi & (num_shards_ - 1)) != shard_index) {
      return fail("entry in the wrong shard");
    }
    prev = i;
    bytes += s.slots[i].bytes;
    if (++n > s.slots.size()) return fail("LRU list has a cycle");
  }
  if (s.lru != prev) return fail("LRU tail is not the last element");
  if (n != s.index.size()) return fail("index and LRU list sizes differ");
  if (n != s.entries.load()) return fail("entries gauge is wrong");
  if (bytes != s.bytes.load()) return fail("bytes gauge is wrong");
  if (n > s.max_entries) return fail("over the entry bound");
  if (s.max_bytes != 0 && bytes > s.max_bytes) {
    return fail("over the byte bound");
  }
  // Tag index: exactly the (tag, entry) pairs of live entries.
  size_t tag_pairs = 0;
  for (const auto& [tag, slots] : s.tag_index) {
    if (slots.empty()) return fail("empty tag set kept");
    for (const uint32_t i : slots) {
      if (!live(i)) return fail("tag index holds a removed entry");
      const auto& tags = s.slots[i].tags;
      if (std::find(tags.begin(), tags.end(), tag) == tags.end()) {
        return fail("tag index holds an entry without that tag");
      }
      ++tag_pairs;
    }
  }
  size_t distinct_pairs = 0;
  for (uint32_t i = s.mru; i != kNil; i = s.slots[i].next) {
    const auto& tags = s.slots[i].tags;
    for (size_t t = 0; t < tags.size(); ++t) {
      if (std::find(tags.begin(), tags.begin() + t, tags[t]) !=
          tags.begin() + t) {
        continue;  // a repeated tag counts once
      }
      ++distinct_pairs;
    }
  }
  if (tag_pairs != distinct_pairs) return fail("tag index misses entries");
  // Groups: each live entry is on its group's list exactly once.
  size_t grouped = 0;
  for (const auto& [group, head] : s.group_heads) {
    uint32_t gprev = kNil;
    for (uint32_t i = head; i != kNil; i = s.slots[i].group_next) {
      if (!live(i)) return fail("group list holds a removed entry");
      if (s.slots[i].group != group) return fail("entry on a wrong group");
      if (s.slots[i].group_prev != gprev) return fail("broken group link");
      gprev = i;
      if (++grouped > n) return fail("group lists too long");
    }
  }
  if (grouped != n) return fail("group lists miss entries");
  return absl::OkStatus();
}

}  // namespace caudal

#endif  // CAUDAL_CACHE_RESULT_CACHE_H_
