// SpanRecorder: one span per finished execution, recorded natively into
// per-thread buffers and handed to exporters in batches, off the hot path.
//
// What is recorded. A SpanRecord holds the step's name, monotonic start and
// end, attempts, the outcome (ok, error, timeout, rejected, cancelled,
// fallback, cache hit), the breaker's state, the last error's type, whether
// the execution was slow, and the trace parent that was current when it
// ended (filled in by a source the bindings install; see Executor). Records
// are plain data: no allocation per span once a buffer has grown.
//
// Sampling. Sample() keeps a fraction `sampling_rate` of executions, decided
// by a per-thread xorshift generator; failures and slow executions are
// always kept (`must_keep`). A rate of 1 keeps everything without drawing,
// a rate of 0 keeps only what must be kept.
//
// Buffers. Each recording thread owns a buffer (found through a one-entry
// thread-local cache, so the lookup is a compare). Record() takes the
// buffer's own lock, which only the draining thread ever contends for, and
// appends; a buffer holding `buffer_size` spans drops further ones and
// counts them. When a buffer reaches half of `buffer_size`, Record() wakes
// the flusher (once per half buffer), so spans are exported before they are
// dropped; otherwise the flusher wakes every flush interval.
//
// Draining. Drain() swaps each buffer's vector with a spare one under that
// buffer's lock (the producer is held up for a swap, never for a copy) and
// appends the spans to `out`; capacity is recycled, so a steady state
// allocates nothing. Drain() calls are serialised among themselves.
//
// Activity. The owner decides whether to record at all (the executor:
// only with an exporter attached, one relaxed load per execution).
//
// Counters (recorded, sampled out, dropped) are per buffer, bumped by the
// owning thread without a locked instruction and summed when read.
//
// Thread-safety: every method is thread-safe. Buffers live as long as the
// recorder (one per thread that ever recorded; bounded by the thread count).
#ifndef CAUDAL_TELEMETRY_SPAN_RECORDER_H_
#define CAUDAL_TELEMETRY_SPAN_RECORDER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "caudal/base/mutex.h"

namespace caudal {

enum class SpanOutcome : uint8_t {
  kOk = 0,
  kError,      // failed after its attempts
  kTimeout,    // failed; the last attempt timed out
  kRejected,   // refused by an open circuit breaker, never attempted
  kCancelled,  // asyncio.CancelledError (not a failure)
  kFallback,   // failed, then its fallback step ran
  kCacheHit,   // answered from the result cache
};
absl::string_view SpanOutcomeName(SpanOutcome outcome);
// Whether the outcome is a failure (always kept by the sampler).
inline bool IsFailure(SpanOutcome o) {
  return o == SpanOutcome::kError || o == SpanOutcome::kTimeout ||
         o == SpanOutcome::kRejected || o == SpanOutcome::kFallback;
}

// The span that was current in the caller's trace (OpenTelemetry's ids).
struct TraceParent {
  uint64_t trace_hi = 0;
  uint64_t trace_lo = 0;
  uint64_t span_id = 0;
  uint8_t flags = 0;
  bool valid = false;
};

struct SpanRecord {
  static constexpr size_t kErrorTypeLen = 56;
  static constexpr uint8_t kNoBreaker = 255;

  const std::string* step = nullptr;  // stable for the executor's lifetime
  int64_t start_ns = 0;               // monotonic
  int64_t end_ns = 0;
  uint64_t span_id = 0;  // random, never 0
  TraceParent parent;
  uint32_t attempts = 0;
  SpanOutcome outcome = SpanOutcome::kOk;
  uint8_t breaker_state = kNoBreaker;  // CircuitBreaker::State, or none
  bool slow = false;
  bool sampled = false;  // kept by the sampling rate (not only as a failure)
  char error_type[kErrorTypeLen] = {};  // NUL-terminated, truncated

  void SetErrorType(absl::string_view type);
  absl::string_view error() const { return error_type; }
};

class SpanRecorder {
 public:
  struct Options {
    double sampling_rate = 1.0;  // [0, 1]
    size_t buffer_size = 4096;   // spans per thread before drops
  };
  struct Stats {
    uint64_t recorded = 0;     // spans put in a buffer
    uint64_t sampled_out = 0;  // executions the sampler skipped
    uint64_t dropped = 0;      // spans lost to a full buffer
    uint64_t drained = 0;      // spans handed out by Drain()
    size_t buffered = 0;       // spans waiting in buffers now
    size_t threads = 0;        // buffers (threads that recorded)
  };

  explicit SpanRecorder(uint64_t seed = 0x5eed5);
  SpanRecorder(const SpanRecorder&) = delete;
  SpanRecorder& operator=(const SpanRecorder&) = delete;

  void Configure(const Options& options);
  double sampling_rate() const { return rate_.load(std::memory_order_relaxed); }

  // The sampling decision for one finished execution: true = record it.
  // `*sampled` says whether the rate chose it (as opposed to must_keep).
  bool Sample(bool must_keep, bool* sampled) {
    const uint64_t threshold = threshold_.load(std::memory_order_relaxed);
    if (threshold == kKeepAll) {
      *sampled = true;
      return true;
    }
    return SampleSlow(threshold, must_keep, sampled);
  }
  // Appends to the calling thread's buffer (assigns span_id).
  void Record(SpanRecord& span);

  // Moves every buffered span to `out`; returns how many.
  size_t Drain(std::vector<SpanRecord>* out);
  // Blocks until a buffer is half full, Notify() is called, or `timeout`
  // passes. True unless it timed out with nothing signalled.
  bool WaitForWork(absl::Duration timeout);
  void Notify();

  Stats GetStats() const;

 private:
  struct ThreadBuffer {
    Mutex mu;
    std::vector<SpanRecord> spans ABSL_GUARDED_BY(mu);
    std::vector<SpanRecord> spare;  // guarded by the recorder's drain_mu_
    uint64_t rng = 0;               // the owning thread's only
    // Written by the owning thread only (a plain load and store, no locked
    // instruction), read by GetStats.
    std::atomic<uint64_t> recorded{0};
    std::atomic<uint64_t> sampled_out{0};
    std::atomic<uint64_t> dropped{0};
  };
  static void Bump(std::atomic<uint64_t>& c) {
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  static constexpr uint64_t kKeepAll = ~uint64_t{0};
  bool SampleSlow(uint64_t threshold, bool must_keep, bool* sampled);
  ThreadBuffer* Local();
  ThreadBuffer* Register();
  static uint64_t Next(uint64_t& state);

  const uint64_t serial_;  // tells this recorder's thread-local cache apart
  const uint64_t seed_;
  std::atomic<double> rate_{1.0};
  std::atomic<uint64_t> threshold_{0};  // keep when draw < threshold
  std::atomic<size_t> limit_{4096};
  std::atomic<uint64_t> drained_{0};

  mutable Mutex mu_;
  absl::flat_hash_map<std::thread::id, ThreadBuffer*> by_thread_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<ThreadBuffer>> buffers_ ABSL_GUARDED_BY(mu_);
  CondVar cv_;
  bool signalled_ ABSL_GUARDED_BY(mu_) = false;
  Mutex drain_mu_;
};

}  // namespace caudal

#endif  // CAUDAL_TELEMETRY_SPAN_RECORDER_H_
