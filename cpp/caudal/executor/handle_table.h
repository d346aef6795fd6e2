// HandleTable<T>: opaque, validated handles of live objects (the executor's
// ExecutionRecords), so that nothing crossing into Python is an address.
//
// Idea. A handle packs (generation, table tag, slot) in 64 bits:
//   bits 63..32  the slot's generation when it was published (odd)
//   bits 31..22  the table's tag (1..1023): another table's handle is refused
//   bits 21..0   the slot (up to 4M objects live at once)
// Find(h) reads the slot's generation (one indexed load) and compares it
// with the handle's: a stale handle (retired: the slot's generation moved
// on, even if the slot's object now serves another use), a
// handle of another table (another tag), or garbage (an even generation, a
// slot never allocated) finds nothing. Nothing the handle names is
// dereferenced except the table's own slot array.
//
// Slots and handles. An object is attached to a slot once, for as long as
// it lives (Attach/Detach: the executor's pooled records keep theirs while
// the pool recycles them), and published under a new handle for each use
// (Publish/Retire: one execution). Add = Attach + Publish and Remove =
// Retire + Detach, for objects used once.
//
// Generations. A slot's generation starts at the table's salt (even) and
// goes up by one on Publish (odd: live) and on Retire (even), mod 2^32. A
// retired handle could pass for a live one only after its slot was
// republished 2^31 times; handles of tables whose tags collide (1023
// tables apart) also need their generations to coincide.
//
// Memory. Slots live in chunks of 1024 that stay in place until the table
// is destroyed, so Find takes no lock. Free slots go on per-thread shards
// of free lists (ObjectPool's spin locks).
//
// Thread-safety: Find, Attach, Detach and Add are thread-safe. Publish and
// Retire of a slot are its object's owner's calls, one thread at a time
// (handing the object over must order them, as the record pool's locks
// do). Find racing with the Retire of the same handle returns the object
// or null (the generation is read before and after the object); using an
// object after its handle was retired is the caller's bug (a handle has
// one owner).
//
// Cost: Find is a tag compare, two loads of the slot's generation and one
// of its object (a few ns). Publish and Retire are a load and a store, no
// locked instruction; Attach and Detach take one shard lock.
#ifndef CAUDAL_EXECUTOR_HANDLE_TABLE_H_
#define CAUDAL_EXECUTOR_HANDLE_TABLE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/base/thread_annotations.h"
#include "caudal/base/mutex.h"
#include "caudal/memory/object_pool.h"

namespace caudal {

namespace executor_internal {
// A fresh table identity: tag in [1, 1023], salt (even) for the first
// generations.
struct TableIdentity {
  uint32_t tag;
  uint32_t salt;
};
TableIdentity NextTableIdentity();
}  // namespace executor_internal

template <typename T>
class HandleTable {
 public:
  using Handle = uint64_t;
  static constexpr Handle kNoHandle = 0;  // never a valid handle
  static constexpr int kSlotBits = 22;
  static constexpr int kTagBits = 10;
  static constexpr int kChunkBits = 10;
  static constexpr uint32_t kMaxSlots = uint32_t{1} << kSlotBits;
  static constexpr uint32_t kMaxTag = (uint32_t{1} << kTagBits) - 1;

  HandleTable() : HandleTable(executor_internal::NextTableIdentity()) {}
  // `tag` in [1, kMaxTag]; `salt` is the first generation (rounded down to
  // even). Tests pick them (generation wrap-around).
  HandleTable(uint32_t tag, uint32_t salt)
      : HandleTable(executor_internal::TableIdentity{tag, salt}) {}
  ~HandleTable() {
    for (auto& c : chunks_) delete[] c.load(std::memory_order_relaxed);
  }
  HandleTable(const HandleTable&) = delete;
  HandleTable& operator=(const HandleTable&) = delete;

  static constexpr uint32_t kNoSlot = ~uint32_t{0};

  // A slot for `obj` for as long as it lives (not published yet: no handle
  // finds it); kNoSlot when kMaxSlots slots are attached already.
  uint32_t Attach(T* obj) {
    uint32_t slot;
    if (!PopFree(&slot)) {
      uint32_t n = next_.load(std::memory_order_relaxed);
      do {
        if (n >= kMaxSlots) return kNoSlot;
      } while (
          !next_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
      slot = n;
      EnsureChunk(slot >> kChunkBits);
    }
    SlotAt(slot).obj.store(obj, std::memory_order_release);
    return slot;
  }

  // Gives back an attached slot whose handle is retired (its object is
  // going away).
  void Detach(uint32_t slot) { PushFree(slot); }

  // A new handle for the object attached to `slot` (its owner's call).
  Handle Publish(uint32_t slot) {
    Slot& s = SlotAt(slot);
    const uint32_t gen = s.gen.load(std::memory_order_relaxed) + 1;  // odd
    s.gen.store(gen, std::memory_order_release);
    return Pack(gen, slot);
  }

  // Retires a published handle: from now on it finds nothing, whatever the
  // slot's object does next (its owner's call). False, and nothing done,
  // for a handle that is not live.
  bool Retire(Handle h) {
    if (Find(h) == nullptr) return false;
    const auto gen = static_cast<uint32_t>(h >> 32);
    SlotAt(static_cast<uint32_t>(h & (kMaxSlots - 1)))
        .gen.store(gen + 1, std::memory_order_release);  // even
    return true;
  }

  // Retires the live handle of the object attached to `slot`, if it has one
  // (its owner's call; the hot path: a load and a store).
  void RetireSlot(uint32_t slot) {
    Slot& s = SlotAt(slot);
    const uint32_t gen = s.gen.load(std::memory_order_relaxed);
    if (gen & 1u) s.gen.store(gen + 1, std::memory_order_release);
  }

  // Attach + Publish, for an object used once; kNoHandle when kMaxSlots
  // slots are attached already.
  Handle Add(T* obj) {
    const uint32_t slot = Attach(obj);
    return slot == kNoSlot ? kNoHandle : Publish(slot);
  }

  // The live object of `h`, or null (stale, another table's, garbage).
  T* Find(Handle h) const {
    const auto gen = static_cast<uint32_t>(h >> 32);
    const auto slot = static_cast<uint32_t>(h & (kMaxSlots - 1));
    if (ABSL_PREDICT_FALSE(((h >> kSlotBits) & kMaxTag) != tag_ ||
                           (gen & 1u) == 0)) {
      return nullptr;
    }
    const Slot* chunk =
        chunks_[slot >> kChunkBits].load(std::memory_order_acquire);
    if (ABSL_PREDICT_FALSE(chunk == nullptr)) return nullptr;
    const Slot& s = chunk[slot & (kChunkSize - 1)];
    if (s.gen.load(std::memory_order_acquire) != gen) return nullptr;
    T* obj = s.obj.load(std::memory_order_acquire);
    // Removed (and maybe reused) between the two loads: not this handle's.
    if (ABSL_PREDICT_FALSE(s.gen.load(std::memory_order_acquire) != gen))
      return nullptr;
    return obj;
  }

  // Retire + Detach (a handle from Add); false, and nothing done, for a
  // handle that is not live.
  bool Remove(Handle h) {
    if (!Retire(h)) return false;
    Detach(static_cast<uint32_t>(h & (kMaxSlots - 1)));
    return true;
  }

  uint32_t tag() const { return tag_; }
  // Slots ever allocated (live + free).
  uint32_t slots() const { return next_.load(std::memory_order_relaxed); }

 private:
  static constexpr uint32_t kChunkSize = uint32_t{1} << kChunkBits;
  static constexpr uint32_t kChunks = kMaxSlots >> kChunkBits;

  struct Slot {
    std::atomic<uint32_t> gen{0};
    std::atomic<T*> obj{nullptr};
  };
  struct alignas(64) FreeShard {
    mutable memory_internal::SpinLock mu;
    std::vector<uint32_t> free ABSL_GUARDED_BY(mu);
  };

  explicit HandleTable(executor_internal::TableIdentity id)
      : tag_(id.tag & kMaxTag), salt_(id.salt & ~1u) {
    for (auto& c : chunks_) c.store(nullptr, std::memory_order_relaxed);
  }

  Handle Pack(uint32_t gen, uint32_t slot) const {
    return (static_cast<uint64_t>(gen) << 32) |
           (static_cast<uint64_t>(tag_) << kSlotBits) | slot;
  }

  Slot& SlotAt(uint32_t slot) const {
    return chunks_[slot >> kChunkBits].load(
        std::memory_order_acquire)[slot & (kChunkSize - 1)];
  }

  void EnsureChunk(uint32_t i) {
    if (chunks_[i].load(std::memory_order_acquire) != nullptr) return;
    MutexLock lock(&grow_mu_);
    if (chunks_[i].load(std::memory_order_relaxed) != nullptr) return;
    Slot* c = new Slot[kChunkSize];
    for (uint32_t k = 0; k < kChunkSize; ++k)
      c[k].gen.store(salt_, std::memory_order_relaxed);
    chunks_[i].store(c, std::memory_order_release);
  }

  bool PopFree(uint32_t* slot) {
    const size_t home = memory_internal::ThisThreadShard();
    for (size_t k = 0; k < memory_internal::kPoolShards; ++k) {
      if (k > 0 && free_count_.load(std::memory_order_relaxed) <= 0) break;
      FreeShard& f = free_[(home + k) % memory_internal::kPoolShards];
      memory_internal::ShardLock lock(&f.mu);
      if (f.free.empty()) continue;
      *slot = f.free.back();
      f.free.pop_back();
      free_count_.fetch_sub(1, std::memory_order_relaxed);
      return true;
    }
    return false;
  }

  void PushFree(uint32_t slot) {
    FreeShard& f = free_[memory_internal::ThisThreadShard()];
    memory_internal::ShardLock lock(&f.mu);
    f.free.push_back(slot);
    free_count_.fetch_add(1, std::memory_order_relaxed);
  }

  const uint32_t tag_;
  const uint32_t salt_;
  mutable std::atomic<Slot*> chunks_[kChunks];
  std::atomic<uint32_t> next_{0};
  std::atomic<int64_t> free_count_{0};
  Mutex grow_mu_;
  FreeShard free_[memory_internal::kPoolShards];
};

}  // namespace caudal

#endif  // CAUDAL_EXECUTOR_HANDLE_TABLE_H_
