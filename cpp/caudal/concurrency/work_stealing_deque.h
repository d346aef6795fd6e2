// WorkStealingDeque: a Chase-Lev work-stealing deque. One owner thread
// pushes and pops at the bottom (LIFO, cache-warm); any number of thieves
// steal from the top (FIFO, oldest work first).
//
// Idea: two indices, top <= bottom, over a growable power-of-two ring. The
// owner alone moves bottom; thieves move top only by compare-and-swap. The
// one conflict -- owner and thief both going for the last element -- is
// settled by a CAS on top that both sides attempt. Memory orders follow Lê,
// Pop, Cohen and Zappa Nardelli, "Correct and Efficient Work-Stealing for
// Weak Memory Models" (PPoPP 2013), with two changes that cost nothing on
// x86 and let ThreadSanitizer see the happens-before edges it cannot infer
// from fences: every store to bottom is a release store (the paper uses a
// release fence + relaxed store in Push and relaxed stores in Pop; release
// stores keep the edge valid even under C++20's shorter release sequences),
// and Steal reads the ring pointer with an acquire load (not consume).
//
// Invariant: items at indices [top, bottom) are present, each taken by
// exactly one Pop or successful Steal. Slots are std::atomic<T>, so a thief
// reading a slot the owner is overwriting is not a data race; its CAS on top
// then fails and it discards the value.
//
// Growth: when full, Push copies the live range into a ring twice as large.
// Old rings stay allocated until the deque is destroyed, because a thief may
// still be reading one (total memory stays below twice the largest ring).
//
// Thread-safety: Push and Pop only from the owner thread (at a time; handing
// ownership to another thread needs a happens-before edge, e.g. a join).
// Steal, size and empty from any thread. T must be trivially copyable and
// lock-free as std::atomic<T> -- in practice a pointer or an integer id;
// the payload it points to is published to the thief by Push/Steal.
//
// Cost: Push is two loads and two stores (plus a rare grow); Pop adds one
// seq_cst fence, and a CAS only for the last element; Steal is a seq_cst
// fence plus one CAS. Steal may fail spuriously (nullopt while non-empty)
// when it loses a race with another thief or the owner; callers retry or
// move on.
#ifndef CAUDAL_CONCURRENCY_WORK_STEALING_DEQUE_H_
#define CAUDAL_CONCURRENCY_WORK_STEALING_DEQUE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

namespace caudal {

template <typename T>
class WorkStealingDeque {
  static_assert(std::is_trivially_copyable_v<T>,
                "WorkStealingDeque holds trivially copyable handles");
  static_assert(std::atomic<T>::is_always_lock_free,
                "WorkStealingDeque needs lock-free std::atomic<T>");

 public:
  // capacity is rounded up to a power of two (at least 2).
  explicit WorkStealingDeque(int64_t capacity = 256);
  ~WorkStealingDeque();

  WorkStealingDeque(const WorkStealingDeque&) = delete;
  WorkStealingDeque& operator=(const WorkStealingDeque&) = delete;

  // Owner only. Never fails (grows when full).
  void Push(T item);
  // Owner only. The most recently pushed item, or nullopt when empty.
  std::optional<T> Pop();
  // Any thread. The oldest item, or nullopt when empty or when this thief
  // lost a race for it.
  std::optional<T> Steal();

  // Approximate when other threads are active.
  int64_t size() const;
  bool empty() const { return size() == 0; }
  // Current ring capacity (exact for the owner).
  int64_t capacity() const {
    return array_.load(std::memory_order_relaxed)->capacity;
  }

 private:
  struct Ring {
    explicit Ring(int64_t cap)
        : capacity(cap), mask(cap - 1), slots(new std::atomic<T>[cap]) {}
    T Get(int64_t i) const {
      return slots[i & mask].load(std::memory_order_relaxed);
    }
    void Put(int64_t i, T v) {
      slots[i & mask].store(v, std::memory_order_relaxed);
    }
    const int64_t capacity;
    const int64_t mask;
    std::unique_ptr<std::atomic<T>[]> slots;
  };

  Ring* Grow(Ring* old, int64_t top, int64_t bottom);

  // top and bottom on separate cache lines: thieves hammer top, the owner
  // bottom.
  alignas(64) std::atomic<int64_t> top_{0};
  alignas(64) std::atomic<int64_t> bottom_{0};
  alignas(64) std::atomic<Ring*> array_;
  std::vector<std::unique_ptr<Ring>> rings_;  // owner only; all ever used
};

// ------------------------------------------------------------------------
// Implementation.

template <typename T>
WorkStealingDeque<T>::WorkStealingDeque(int64_t capacity) {
  int64_t cap = 2;
  while (cap < capacity) cap <<= 1;
  rings_.push_back(std::make_unique<Ring>(cap));
  array_.store(rings_.back().get(), std::memory_order_relaxed);
}

template <typename T>
WorkStealingDeque<T>::~WorkStealingDeque() = default;

template <typename T>
typename WorkStealingDeque<T>::Ring* WorkStealingDeque<T>::Grow(
    Ring* old, int64_t top, int64_t bottom) {
  auto bigger = std::make_unique<Ring>(old->capacity * 2);
  for (int64_t i = top; i < bottom; ++i) bigger->Put(i, old->Get(i));
  Ring* ring = bigger.get();
  rings_.push_back(std::move(bigger));
  // Release: a thief that loads the new ring sees the copied slots.
  array_.store(ring, std::memory_order_release);
  return ring;
}

template <typename T>
void WorkStealingDeque<T>::Push(T item) {
  const int64_t b = bottom_.load(std::memory_order_relaxed);
  const int64_t t = top_.load(std::memory_order_acquire);
  Ring* a = array_.load(std::memory_order_relaxed);
  if (b - t > a->capacity - 1) a = Grow(a, t, b);
  a->Put(b, item);
  // Release: whoever sees bottom = b + 1 also sees the item (and whatever
  // the owner wrote into the object it refers to before pushing).
  bottom_.store(b + 1, std::memory_order_release);
}

template <typename T>
std::optional<T> WorkStealingDeque<T>::Pop() {
  const int64_t b = bottom_.load(std::memory_order_relaxed) - 1;
  Ring* a = array_.load(std::memory_order_relaxed);
  bottom_.store(b, std::memory_order_release);
  // Order the claim on bottom before reading top: a concurrent thief either
  // sees the smaller bottom, or we see its larger top.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  int64_t t = top_.load(std::memory_order_relaxed);
  if (t > b) {  // was empty
    bottom_.store(b + 1, std::memory_order_release);
    return std::nullopt;
  }
  T item = a->Get(b);
  if (t == b) {
    // Last element: race the thieves for it via top.
    const bool won = top_.compare_exchange_strong(
        t, t + 1, std::memory_order_seq_cst, std::memory_order_relaxed);
    bottom_.store(b + 1, std::memory_order_release);
    if (!won) return std::nullopt;
  }
  return item;
}

template <typename T>
std::optional<T> WorkStealingDeque<T>::Steal() {
  int64_t t = top_.load(std::memory_order_acquire);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const int64_t b = bottom_.load(std::memory_order_acquire);
  if (t >= b) return std::nullopt;
  Ring* a = array_.load(std::memory_order_acquire);
  T item = a->Get(t);
  if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                    std::memory_order_relaxed)) {
    return std::nullopt;  // lost to another thief or the owner
  }
  return item;
}

template <typename T>
int64_t WorkStealingDeque<T>::size() const {
  const int64_t b = bottom_.load(std::memory_order_relaxed);
  const int64_t t = top_.load(std::memory_order_relaxed);
  return b > t ? b - t : 0;
}

}  // namespace caudal

#endif  // CAUDAL_CONCURRENCY_WORK_STEALING_DEQUE_H_
