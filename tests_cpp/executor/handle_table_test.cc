#include "caudal/executor/handle_table.h"

#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

struct Obj {
  int value = 0;
};

using Table = HandleTable<Obj>;

TEST(HandleTableTest, FindsLiveObjectsByHandle) {
  Table t;
  Obj a, b;
  const Table::Handle ha = t.Add(&a);
  const Table::Handle hb = t.Add(&b);
  ASSERT_NE(ha, Table::kNoHandle);
  ASSERT_NE(hb, Table::kNoHandle);
  EXPECT_NE(ha, hb);
  EXPECT_EQ(t.Find(ha), &a);
  EXPECT_EQ(t.Find(hb), &b);
  // Handles fit in 64 bits without the sign bit mattering, and carry the
  // table's tag.
  EXPECT_EQ((ha >> Table::kSlotBits) & Table::kMaxTag, t.tag());
}

TEST(HandleTableTest, GarbageFindsNothing) {
  Table t;
  Obj a;
  const Table::Handle h = t.Add(&a);
  EXPECT_EQ(t.Find(0), nullptr);
  EXPECT_EQ(t.Find(16), nullptr);
  EXPECT_EQ(t.Find(~uint64_t{0}), nullptr);
  EXPECT_EQ(t.Find(reinterpret_cast<uintptr_t>(&a)), nullptr);
  EXPECT_EQ(t.Find(h + 1), nullptr);                    // a slot never used
  EXPECT_EQ(t.Find(h ^ (uint64_t{1} << 32)), nullptr);  // even generation
  EXPECT_EQ(t.Find(h + (uint64_t{2} << 32)), nullptr);  // a future generation
  std::mt19937_64 rng(42);
  for (int i = 0; i < 100000; ++i) {
    const uint64_t g = rng();
    if (g != h) EXPECT_EQ(t.Find(g), nullptr) << g;
  }
  EXPECT_EQ(t.Find(h), &a);
}

TEST(HandleTableTest, StaleAfterRemoveEvenWhenTheSlotIsReused) {
  Table t;
  Obj a, b;
  const Table::Handle ha = t.Add(&a);
  EXPECT_TRUE(t.Remove(ha));
  EXPECT_EQ(t.Find(ha), nullptr);
  EXPECT_FALSE(t.Remove(ha));  // a second Remove is ignored
  const Table::Handle hb = t.Add(&b);
  // The same slot, a new generation.
  EXPECT_EQ(hb & (Table::kMaxSlots - 1), ha & (Table::kMaxSlots - 1));
  EXPECT_NE(hb, ha);
  EXPECT_EQ(t.Find(ha), nullptr);
  EXPECT_EQ(t.Find(hb), &b);
  EXPECT_EQ(t.slots(), 1u);
  // Even the same object under a new handle: the old one stays stale.
  EXPECT_TRUE(t.Remove(hb));
  const Table::Handle ha2 = t.Add(&a);
  EXPECT_EQ(t.Find(ha), nullptr);
  EXPECT_EQ(t.Find(ha2), &a);
}

// A long-lived object keeps its slot and gets a new handle per use: each
// retired handle stays stale, the slot is never given to anyone else.
TEST(HandleTableTest, AttachedObjectIsRepublishedUnderNewHandles) {
  Table t;
  Obj a, b;
  const uint32_t slot = t.Attach(&a);
  ASSERT_NE(slot, Table::kNoSlot);
  std::vector<Table::Handle> old;
  for (int use = 0; use < 5; ++use) {
    const Table::Handle h = t.Publish(slot);
    EXPECT_EQ(t.Find(h), &a);
    for (Table::Handle o : old) EXPECT_EQ(t.Find(o), nullptr);
    EXPECT_TRUE(t.Retire(h));
    EXPECT_FALSE(t.Retire(h));  // once
    EXPECT_EQ(t.Find(h), nullptr);
    old.push_back(h);
  }
  const Table::Handle h = t.Publish(slot);
  t.RetireSlot(slot);
  EXPECT_EQ(t.Find(h), nullptr);
  t.RetireSlot(slot);  // nothing live: no change
  const Table::Handle h2 = t.Publish(slot);
  EXPECT_EQ(t.Find(h2), &a);
  EXPECT_EQ(h2 >> 32, (h >> 32) + 2);
  EXPECT_TRUE(t.Retire(h2));
  const uint32_t other = t.Attach(&b);  // attached slots are not shared
  EXPECT_NE(other, slot);
  t.Detach(slot);  // `a` goes away
  const uint32_t again = t.Attach(&b);
  EXPECT_EQ(again, slot);  // the slot is reused...
  const Table::Handle hb = t.Publish(again);
  EXPECT_EQ(t.Find(hb), &b);
  for (Table::Handle o : old) EXPECT_EQ(t.Find(o), nullptr);  // ...not them
}

TEST(HandleTableTest, AnotherTablesHandleIsRefused) {
  Table one, other;
  ASSERT_NE(one.tag(), other.tag());
  Obj a, b;
  const Table::Handle ha = one.Add(&a);
  const Table::Handle hb = other.Add(&b);
  EXPECT_EQ(other.Find(ha), nullptr);
  EXPECT_EQ(one.Find(hb), nullptr);
  EXPECT_FALSE(other.Remove(ha));
  EXPECT_EQ(one.Find(ha), &a);
  // Same tag, same salt (as 1023 tables apart could be): a handle of one is
  // only taken by the other if the slot's generation coincides.
  Table x(7, 100), y(7, 100);
  const Table::Handle hx = x.Add(&a);
  EXPECT_EQ(y.Find(hx), nullptr);  // y's slot was never allocated
}

TEST(HandleTableTest, GenerationWrapsAroundAndStaysOdd) {
  // Start just below 2^32: the generation wraps within a few reuses.
  Table t(3, 0xFFFFFFFCu);
  Obj a;
  std::vector<Table::Handle> old;
  for (int i = 0; i < 6; ++i) {
    const Table::Handle h = t.Add(&a);
    ASSERT_NE(h, Table::kNoHandle);
    EXPECT_EQ((h >> 32) & 1u, 1u) << i;  // live handles have odd generations
    EXPECT_EQ(t.Find(h), &a);
    for (Table::Handle o : old) EXPECT_EQ(t.Find(o), nullptr);
    ASSERT_TRUE(t.Remove(h));
    old.push_back(h);
  }
  EXPECT_EQ(old[2] >> 32, 1u);  // 0xFFFFFFFD, 0xFFFFFFFF, then 1
  EXPECT_EQ(t.slots(), 1u);
}

TEST(HandleTableTest, GrowsAcrossChunks) {
  Table t;
  std::vector<Obj> objs(5000);
  std::vector<Table::Handle> hs;
  for (Obj& o : objs) hs.push_back(t.Add(&o));
  absl::flat_hash_set<Table::Handle> unique(hs.begin(), hs.end());
  EXPECT_EQ(unique.size(), hs.size());
  for (size_t i = 0; i < objs.size(); ++i) EXPECT_EQ(t.Find(hs[i]), &objs[i]);
  for (size_t i = 0; i < objs.size(); i += 2) EXPECT_TRUE(t.Remove(hs[i]));
  for (size_t i = 0; i < objs.size(); ++i)
    EXPECT_EQ(t.Find(hs[i]), i % 2 ? &objs[i] : nullptr);
  EXPECT_EQ(t.slots(), 5000u);
}

// Several threads add, find and remove their own objects while checking
// that every handle they retired stays stale: no handle ever finds another
// thread's object. Run under TSan too (make test-tsan): all accesses are
// atomics or under the shard locks.
TEST(HandleTableTest, ConcurrentAddFindRemove) {
  Table t;
  constexpr int kThreads = 4;
  constexpr int kRounds = 20000;
  std::atomic<int> wrong{0};
  std::vector<Table::Handle> shared_stale(kThreads);
  std::vector<std::atomic<Table::Handle>> published(kThreads);
  for (auto& p : published) p.store(0);
  std::vector<std::thread> threads;
  for (int k = 0; k < kThreads; ++k) {
    threads.emplace_back([&, k] {
      std::vector<Obj> mine(8);
      std::vector<Table::Handle> live(8, Table::kNoHandle);
      std::mt19937 rng(k);
      for (int r = 0; r < kRounds; ++r) {
        const size_t i = rng() % mine.size();
        if (live[i] == Table::kNoHandle) {
          live[i] = t.Add(&mine[i]);
          published[k].store(live[i], std::memory_order_relaxed);
        } else {
          if (t.Find(live[i]) != &mine[i]) wrong++;
          const Table::Handle gone = live[i];
          if (!t.Remove(gone)) wrong++;
          live[i] = Table::kNoHandle;
          if (t.Find(gone) != nullptr) wrong++;
        }
        // Another thread's handle, maybe retired meanwhile: whatever it
        // finds is that thread's object or nothing.
        const Table::Handle theirs =
            published[(k + 1) % kThreads].load(std::memory_order_relaxed);
        if (Obj* o = t.Find(theirs)) {
          (void)o;  // not dereferenced: the other thread owns it
        }
      }
      for (Table::Handle h : live)
        if (h != Table::kNoHandle) t.Remove(h);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_LE(t.slots(), static_cast<uint32_t>(kThreads * 8));
}

}  // namespace
}  // namespace caudal
