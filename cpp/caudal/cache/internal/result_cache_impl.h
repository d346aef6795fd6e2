// ResultCache's public operations: creation and bounds, Get, Put and the
// invalidation epochs, Erase, invalidation by tag and group, Clear, Resize,
// EvictExpired, GetStats. A template, so it lives in a header; included at
// the end of caudal/cache/result_cache.h, whose comment is the contract.
// Internal to caudal/cache: include caudal/cache/result_cache.h instead.
#ifndef CAUDAL_CACHE_INTERNAL_RESULT_CACHE_IMPL_H_
#define CAUDAL_CACHE_INTERNAL_RESULT_CACHE_IMPL_H_

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace caudal {

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
  absl::optional<V> out;
  Visit(key, now_ns, dropped, [&](const V& v) { out = v; });
  return out;
}

template <typename V>
template <typename F>
bool ResultCache<V>::Visit(const Key128& key, int64_t now_ns,
                           std::vector<V>* dropped, F&& visit) {
  std::vector<V> local;  // destroyed after the lock is released
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  const auto it = s.index.find(key);
  if (it == s.index.end()) {
    Add<uint64_t>(s.misses, 1);
    return false;
  }
  const uint32_t i = it->second;
  Slot& slot = s.slots[i];
  if (now_ns >= slot.expires_at_ns) {
    Add<uint64_t>(s.expirations, 1);
    Add<uint64_t>(s.misses, 1);
    RemoveLocked(s, i, dropped != nullptr ? dropped : &local);
    return false;
  }
  Add<uint64_t>(s.hits, 1);
  if (s.mru != i) {
    UnlinkLruLocked(s, i);
    LinkFrontLocked(s, i);
  }
  visit(static_cast<const V&>(slot.value));
  return true;
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
void ResultCache<V>::RaiseTo(std::atomic<uint64_t>& slot, uint64_t e) {
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

}  // namespace caudal

#endif  // CAUDAL_CACHE_INTERNAL_RESULT_CACHE_IMPL_H_
