// ErrorPatternTable: remembers, per error pattern, whether retrying it has
// ever helped, so the executor can stop retrying errors that never recover
// ("error handling that caches error patterns for faster recovery").
//
// Idea. A pattern is (step, exception type, normalised message), hashed to a
// stable 64-bit id by ErrorPatternId; NormalizeMessage makes messages that
// differ only in numbers, ids and quoted values map to one pattern. For each
// pattern the table counts occurrences and the outcomes of the retries that
// followed it. ShouldRetry answers false (fail fast) once a pattern has been
// retried min_observations times without a single recovery; a pattern that
// recovered even once keeps being retried, and an unknown pattern is always
// retried. Totals for the stats (errors, retries, recoveries) are kept apart
// from the table, so they survive eviction.
//
// Invariant: size() <= capacity(); the least recently used pattern (last
// RecordError or RecordRetryOutcome) is evicted first.
//
// Protocol. After a failed attempt: RecordError(id, ...), then ask
// ShouldRetry(id, n). When the retry that followed finishes:
// RecordRetryOutcome(id, recovered) with the id of the error that caused the
// retry (a cancelled retry reports nothing). RecordFailure does a failed
// attempt's part in one call (one lock): the failed outcome of the retry
// it ends, RecordError, and the ShouldRetry answer.
//
// Caveat: fail-fast is sticky. A pattern judged hopeless is no longer
// retried, so it gathers no new evidence until it is evicted, Clear()ed or
// Resize()d away.
//
// Thread-safety: all methods may be called concurrently (one caudal::Mutex,
// exclusive even for queries; it is only used on the error path).
// Cost: O(1) per record or query (hash map + LRU list), O(n log max) for
// Snapshot; a failed attempt (RecordFailure) takes the lock once. A pattern
// seen before allocates nothing: its sample is rewritten only when the
// message differs from the stored one, in the string's own buffer.
// Memory: about 200 bytes plus the strings per pattern; samples are cut to
// kMaxSampleBytes.
#ifndef CAUDAL_RESILIENCE_ERROR_PATTERNS_H_
#define CAUDAL_RESILIENCE_ERROR_PATTERNS_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "caudal/base/mutex.h"

namespace caudal {

// Stable 64-bit id of a pattern (XXH3; the same inputs give the same id in
// every process and build). Fields are hashed separately, so ("ab", "c")
// and ("a", "bc") differ.
uint64_t ErrorPatternId(absl::string_view step, absl::string_view exc_type,
                        absl::string_view normalized_msg);

// Replaces the variable parts of an error message with placeholders:
//   '...' or "..."                  -> <str>  (a quote preceded by a letter
//                                              or digit, as in "can't", is
//                                              not an opening quote)
//   8-4-4-4-12 hex UUID              -> <uuid>
//   0x followed by hex digits        -> <hex>
//   a word of >= 8 hex digits with
//     at least one digit and letter  -> <hex>  (request ids, hashes)
//   digits, with .digits groups      -> <n>    (also inside words: "step42",
//                                              and "10.0.0.1", "3.5")
// So "timeout after 31ms id=0xdeadbeef" and "timeout after 7ms id=0x1"
// both become "timeout after <n>ms id=<hex>".
std::string NormalizeMessage(absl::string_view message);

// The pattern id of an error:
//   ErrorPatternId(step, exc_type, NormalizeMessage(message)),
// remembered per thread (kPatternMemoSize entries, direct-mapped, keyed by
// a hash of the raw fields): an error seen before on this thread, as every
// retry failing as the attempt before it, is hashed but not normalised
// again, and allocates nothing. Thread-safety: any thread (the memo is the
// calling thread's own).
constexpr size_t kPatternMemoSize = 64;
uint64_t ErrorPatternOf(absl::string_view step, absl::string_view exc_type,
                        absl::string_view message);

struct PatternSnapshot {
  uint64_t id;
  std::string step;
  std::string exc_type;
  std::string sample;  // the latest message seen, cut to kMaxSampleBytes
  uint64_t occurrences;
  uint64_t retried;  // retry outcomes recorded: recovered + failed
  uint64_t recovered;
  uint64_t failed_after_retry;
  int64_t first_seen_ns;
  int64_t last_seen_ns;
};

struct ErrorTableStats {
  uint64_t total_errors;
  uint64_t total_retries;  // retry outcomes recorded
  uint64_t recoveries;
  uint64_t failures_after_retry;
  // recoveries / (recoveries + failures_after_retry); 0 when there are none.
  double recovery_success_rate;
  size_t cached_patterns;
  size_t capacity;
  uint64_t evictions;
};

class ErrorPatternTable {
 public:
  static constexpr size_t kMaxSampleBytes = 256;

  // `capacity` 0 keeps no patterns (every error is retried; totals still
  // count).
  explicit ErrorPatternTable(size_t capacity);
  ErrorPatternTable(const ErrorPatternTable&) = delete;
  ErrorPatternTable& operator=(const ErrorPatternTable&) = delete;

  // One failed attempt with this pattern. step / exc_type are stored on first
  // sight; `sample` (the raw message) replaces the stored one each time.
  void RecordError(uint64_t id, absl::string_view step,
                   absl::string_view exc_type, absl::string_view sample,
                   int64_t now_ns);
  // The retry that followed an error with this pattern succeeded
  // (`recovered`) or failed. Counted in the totals even when the pattern is
  // no longer in the table.
  void RecordRetryOutcome(uint64_t id, bool recovered);

  // A failed attempt, under one lock: RecordRetryOutcome(failed_retry,
  // false) unless `failed_retry` is 0 (the attempt was the retry of that
  // pattern, and did not recover), then RecordError(id, ...), then returns
  // ShouldRetry(id, min_observations).
  bool RecordFailure(uint64_t failed_retry, uint64_t id, absl::string_view step,
                     absl::string_view exc_type, absl::string_view sample,
                     int64_t now_ns, int min_observations);

  // False when the pattern has been retried at least `min_observations`
  // times (values below 1 count as 1) and never recovered; true otherwise.
  bool ShouldRetry(uint64_t id, int min_observations) const;

  ErrorTableStats Stats() const;
  // Up to `max` patterns, most occurrences first (ties: most recently seen
  // first, then by id).
  std::vector<PatternSnapshot> Snapshot(size_t max) const;

  // New capacity; evicts least recently used patterns down to it.
  void Resize(size_t capacity);
  // Forgets every pattern and zeroes the totals.
  void Clear();

  size_t size() const;
  size_t capacity() const;

 private:
  using Lru = std::list<PatternSnapshot>;  // front = most recently used

  // The pattern's entry (nullptr at capacity 0); *seen_before: it was in
  // the table already.
  PatternSnapshot* RecordErrorLocked(uint64_t id, absl::string_view step,
                                     absl::string_view exc_type,
                                     absl::string_view sample, int64_t now_ns,
                                     bool* seen_before)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordRetryOutcomeLocked(uint64_t id, bool recovered)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ShouldRetryLocked(uint64_t id, int min_observations) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static bool ShouldRetryOf(const PatternSnapshot& p, int min_observations);
  void EvictToCapacityLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable Mutex mu_;
  size_t capacity_ ABSL_GUARDED_BY(mu_);
  Lru lru_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Lru::iterator> index_ ABSL_GUARDED_BY(mu_);
  uint64_t total_errors_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t total_retries_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t recoveries_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t failures_after_retry_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t evictions_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace caudal

#endif  // CAUDAL_RESILIENCE_ERROR_PATTERNS_H_
