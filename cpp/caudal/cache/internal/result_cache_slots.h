// ResultCache's bookkeeping under a shard lock: bounds and eviction, the
// slot free list, the LRU list, the group lists and the tag index, and the
// invariant checker. Included at the end of caudal/cache/result_cache.h.
// Internal to caudal/cache: include caudal/cache/result_cache.h instead.
#ifndef CAUDAL_CACHE_INTERNAL_RESULT_CACHE_SLOTS_H_
#define CAUDAL_CACHE_INTERNAL_RESULT_CACHE_SLOTS_H_

#include <string>
#include <vector>

namespace caudal {

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

#endif  // CAUDAL_CACHE_INTERNAL_RESULT_CACHE_SLOTS_H_
