// SingleFlight: one computation per key at a time. When several callers miss
// the cache for the same key at once, the first becomes the leader and
// computes; the others queue as followers and are woken when the leader
// finishes (then they read the cache, or retry if the leader failed).
//
// W is the caller's waiter type (the bindings use a handle to an asyncio
// future; tests use ints). The core never wakes anyone itself: Finish hands
// the followers back to the caller, which resolves them outside any lock.
//
// Protocol:
//   if (flights.JoinOrLead(key, waiter)) {
//     compute and store the result;
//     for (W& w : flights.Finish(key)) wake(w);
//   } else {
//     wait for waiter;
//   }
// A follower that gives up (cancelled) calls Leave(key, waiter). A leader
// that fails or is cancelled must still call Finish(key), and its followers
// decide what to do (typically: try again, one of them becomes the leader).
// A key stays "in flight" from the leader's JoinOrLead to Finish; a leader
// that calls JoinOrLead again for its own key becomes its own follower.
//
// Design: the keys in flight are spread over shards by key.hi, each a Mutex
// (caudal/base/mutex.h) and a hash map Key128 -> followers (in arrival
// order). A leader with no followers costs one map insert and one erase;
// followers are appended to a vector. No W is destroyed under a lock: the
// leader's ignored waiter dies with the call's argument after the lock is
// released, Leave moves the removed waiter out before unlocking, and Finish
// returns the followers to the caller.
//
// Thread-safety: all methods are thread-safe. W must be movable; Leave needs
// `==` on W.
#ifndef CAUDAL_CACHE_SINGLE_FLIGHT_H_
#define CAUDAL_CACHE_SINGLE_FLIGHT_H_

#include <algorithm>
#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/types/optional.h"
#include "caudal/base/mutex.h"
#include "caudal/hash/key128.h"

namespace caudal {

template <typename W>
class SingleFlight {
 public:
  // num_shards is rounded down to a power of two (at least 1).
  explicit SingleFlight(size_t num_shards = 16);
  SingleFlight(const SingleFlight&) = delete;
  SingleFlight& operator=(const SingleFlight&) = delete;

  // True: no flight existed for `key`; the caller is now its leader and
  // `waiter` is not kept. False: `waiter` was queued as a follower.
  bool JoinOrLead(const Key128& key, W waiter);

  // Ends the flight for `key` and returns its followers in arrival order
  // (empty if there were none or no flight existed).
  std::vector<W> Finish(const Key128& key);

  // Removes the first follower equal to `waiter` from the flight for `key`;
  // true if it was there. The flight itself (and its leader) go on.
  bool Leave(const Key128& key, const W& waiter);

  // True while a leader holds `key`.
  bool InFlight(const Key128& key) const;
  // Number of keys in flight (summed over shards one after the other).
  size_t size() const;

 private:
  struct alignas(64) Shard {
    mutable Mutex mu;
    absl::flat_hash_map<Key128, std::vector<W>> flights ABSL_GUARDED_BY(mu);
  };

  Shard& ShardFor(const Key128& key) const {
    return shards_[key.hi & (num_shards_ - 1)];
  }
  static size_t RoundDown(size_t n) {
    size_t p = 1;
    while (p * 2 <= n) p *= 2;
    return p;
  }

  const size_t num_shards_;
  std::unique_ptr<Shard[]> shards_;
};

template <typename W>
SingleFlight<W>::SingleFlight(size_t num_shards)
    : num_shards_(RoundDown(num_shards)), shards_(new Shard[num_shards_]) {}

template <typename W>
bool SingleFlight<W>::JoinOrLead(const Key128& key, W waiter) {
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  const auto [it, inserted] = s.flights.try_emplace(key);
  if (inserted) return true;  // `waiter` is destroyed after the unlock
  it->second.push_back(std::move(waiter));
  return false;
}

template <typename W>
std::vector<W> SingleFlight<W>::Finish(const Key128& key) {
  std::vector<W> followers;
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  const auto it = s.flights.find(key);
  if (it == s.flights.end()) return followers;
  followers = std::move(it->second);
  s.flights.erase(it);
  return followers;
}

template <typename W>
bool SingleFlight<W>::Leave(const Key128& key, const W& waiter) {
  absl::optional<W> removed;  // destroyed after the unlock
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  const auto it = s.flights.find(key);
  if (it == s.flights.end()) return false;
  std::vector<W>& followers = it->second;
  const auto pos = std::find(followers.begin(), followers.end(), waiter);
  if (pos == followers.end()) return false;
  removed.emplace(std::move(*pos));
  followers.erase(pos);  // shifts the later ones; only moved-from values die
  return true;
}

template <typename W>
bool SingleFlight<W>::InFlight(const Key128& key) const {
  Shard& s = ShardFor(key);
  MutexLock lock(&s.mu);
  return s.flights.contains(key);
}

template <typename W>
size_t SingleFlight<W>::size() const {
  size_t n = 0;
  for (size_t i = 0; i < num_shards_; ++i) {
    MutexLock lock(&shards_[i].mu);
    n += shards_[i].flights.size();
  }
  return n;
}

}  // namespace caudal

#endif  // CAUDAL_CACHE_SINGLE_FLIGHT_H_
