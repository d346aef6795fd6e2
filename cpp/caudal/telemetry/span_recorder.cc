#include "caudal/telemetry/span_recorder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace caudal {
namespace {

std::atomic<uint64_t> g_next_serial{1};

struct LocalCache {
  uint64_t serial = 0;
  void* buffer = nullptr;
};
// initial-exec: no __tls_get_addr call from the Python extension module.
thread_local LocalCache t_cache __attribute__((tls_model("initial-exec")));

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

absl::string_view SpanOutcomeName(SpanOutcome outcome) {
  switch (outcome) {
    case SpanOutcome::kOk:
      return "ok";
    case SpanOutcome::kError:
      return "error";
    case SpanOutcome::kTimeout:
      return "timeout";
    case SpanOutcome::kRejected:
      return "rejected";
    case SpanOutcome::kCancelled:
      return "cancelled";
    case SpanOutcome::kFallback:
      return "fallback";
    case SpanOutcome::kCacheHit:
      return "cache_hit";
  }
  return "unknown";
}

void SpanRecord::SetErrorType(absl::string_view type) {
  const size_t n = std::min(type.size(), kErrorTypeLen - 1);
  std::memcpy(error_type, type.data(), n);
  error_type[n] = '\0';
}

SpanRecorder::SpanRecorder(uint64_t seed)
    : serial_(g_next_serial.fetch_add(1, std::memory_order_relaxed)),
      seed_(seed) {
  Configure(Options());
}

void SpanRecorder::Configure(const Options& options) {
  const double rate = std::clamp(options.sampling_rate, 0.0, 1.0);
  rate_.store(rate, std::memory_order_relaxed);
  // A draw is a uniform 64-bit value; keep it when below rate * 2^64.
  uint64_t threshold = 0;
  if (rate >= 1.0) {
    threshold = std::numeric_limits<uint64_t>::max();
  } else if (rate > 0.0) {
    threshold = static_cast<uint64_t>(std::ldexp(rate, 64));
  }
  threshold_.store(threshold, std::memory_order_relaxed);
  limit_.store(std::max<size_t>(options.buffer_size, 1),
               std::memory_order_relaxed);
}

uint64_t SpanRecorder::Next(uint64_t& s) {
  // xorshift64*: the state is never 0 (seeded through SplitMix | 1).
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return s * 0x2545f4914f6cdd1dull;
}

SpanRecorder::ThreadBuffer* SpanRecorder::Local() {
  LocalCache& c = t_cache;
  if (c.serial == serial_) return static_cast<ThreadBuffer*>(c.buffer);
  ThreadBuffer* b = Register();
  c.serial = serial_;
  c.buffer = b;
  return b;
}

SpanRecorder::ThreadBuffer* SpanRecorder::Register() {
  MutexLock lock(&mu_);
  const std::thread::id me = std::this_thread::get_id();
  auto it = by_thread_.find(me);
  if (it != by_thread_.end()) return it->second;
  auto b = std::make_unique<ThreadBuffer>();
  b->rng = SplitMix(seed_ ^ SplitMix(buffers_.size() + 1)) | 1;
  ThreadBuffer* raw = b.get();
  buffers_.push_back(std::move(b));
  by_thread_.emplace(me, raw);
  return raw;
}

bool SpanRecorder::SampleSlow(uint64_t threshold, bool must_keep,
                              bool* sampled) {
  ThreadBuffer* b = Local();
  const bool chosen = threshold != 0 && Next(b->rng) < threshold;
  *sampled = chosen;
  if (chosen || must_keep) return true;
  Bump(b->sampled_out);
  return false;
}

void SpanRecorder::Record(SpanRecord& span) {
  ThreadBuffer* b = Local();
  uint64_t id = Next(b->rng);
  span.span_id = id != 0 ? id : 1;
  const size_t limit = limit_.load(std::memory_order_relaxed);
  size_t n;
  {
    MutexLock lock(&b->mu);
    if (b->spans.size() >= limit) {
      n = 0;
    } else {
      b->spans.push_back(span);
      n = b->spans.size();
    }
  }
  if (n == 0) {
    Bump(b->dropped);
    return;
  }
  Bump(b->recorded);
  if (n == std::max<size_t>(limit / 2, 1)) Notify();
}

size_t SpanRecorder::Drain(std::vector<SpanRecord>* out) {
  MutexLock drain(&drain_mu_);
  std::vector<ThreadBuffer*> buffers;
  {
    MutexLock lock(&mu_);
    signalled_ = false;
    buffers.reserve(buffers_.size());
    for (const auto& b : buffers_) buffers.push_back(b.get());
  }
  size_t total = 0;
  for (ThreadBuffer* b : buffers) {
    {
      MutexLock lock(&b->mu);
      if (b->spans.empty()) continue;
      std::swap(b->spans, b->spare);
    }
    total += b->spare.size();
    out->insert(out->end(), b->spare.begin(), b->spare.end());
    b->spare.clear();
  }
  drained_.fetch_add(total, std::memory_order_relaxed);
  return total;
}

bool SpanRecorder::WaitForWork(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  MutexLock lock(&mu_);
  while (!signalled_) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    WaitWithTimeout(&cv_, &mu_, left);
  }
  signalled_ = false;
  return true;
}

void SpanRecorder::Notify() {
  MutexLock lock(&mu_);
  signalled_ = true;
  cv_.Signal();
}

SpanRecorder::Stats SpanRecorder::GetStats() const {
  Stats s;
  s.drained = drained_.load(std::memory_order_relaxed);
  MutexLock lock(&mu_);
  s.threads = buffers_.size();
  for (const auto& b : buffers_) {
    s.recorded += b->recorded.load(std::memory_order_relaxed);
    s.sampled_out += b->sampled_out.load(std::memory_order_relaxed);
    s.dropped += b->dropped.load(std::memory_order_relaxed);
    MutexLock inner(&b->mu);
    s.buffered += b->spans.size();
  }
  return s;
}

}  // namespace caudal
