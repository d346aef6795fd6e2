#include "caudal/resilience/error_patterns.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"

#define XXH_INLINE_ALL
#include "xxhash.h"

namespace caudal {
namespace {

constexpr size_t kNpos = absl::string_view::npos;

bool IsWordChar(char c) { return absl::ascii_isalnum(c); }

// The first at most `max` bytes of `s`, without splitting a UTF-8 sequence.
absl::string_view CutUtf8View(absl::string_view s, size_t max) {
  if (s.size() <= max) return s;
  size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  return s.substr(0, cut);
}

std::string CutUtf8(absl::string_view s, size_t max) {
  return std::string(CutUtf8View(s, max));
}

// Index of the quote closing the one at `open`: the next same quote on the
// line that is not followed by a word character. kNpos when there is none.
size_t ClosingQuote(absl::string_view s, size_t open) {
  const char quote = s[open];
  for (size_t j = open + 1; j < s.size() && s[j] != '\n'; ++j) {
    if (s[j] == quote && (j + 1 == s.size() || !IsWordChar(s[j + 1]))) {
      return j;
    }
  }
  return kNpos;
}

bool EndsToken(absl::string_view s, size_t j) {
  return j == s.size() || !IsWordChar(s[j]);
}

// 8-4-4-4-12 hex digits starting at `i`, ending a token.
bool IsUuidAt(absl::string_view s, size_t i) {
  constexpr size_t kLen = 36;
  if (s.size() - i < kLen) return false;
  for (size_t k = 0; k < kLen; ++k) {
    const char c = s[i + k];
    const bool dash = k == 8 || k == 13 || k == 18 || k == 23;
    if (dash ? c != '-' : !absl::ascii_isxdigit(c)) return false;
  }
  return EndsToken(s, i + kLen);
}

}  // namespace

uint64_t ErrorPatternId(absl::string_view step, absl::string_view exc_type,
                        absl::string_view normalized_msg) {
  // Each field seeds the next: field boundaries matter, unlike hashing the
  // concatenation.
  uint64_t h = XXH3_64bits_withSeed(step.data(), step.size(), 0);
  h = XXH3_64bits_withSeed(exc_type.data(), exc_type.size(), h);
  return XXH3_64bits_withSeed(normalized_msg.data(), normalized_msg.size(), h);
}

std::string NormalizeMessage(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    const bool token_start = i == 0 || !IsWordChar(s[i - 1]);
    if (token_start && (c == '\'' || c == '"')) {
      const size_t close = ClosingQuote(s, i);
      if (close != kNpos) {
        out += "<str>";
        i = close + 1;
        continue;
      }
    }
    if (token_start && absl::ascii_isxdigit(c)) {
      if (IsUuidAt(s, i)) {
        out += "<uuid>";
        i += 36;
        continue;
      }
      if (c == '0' && i + 2 < s.size() &&
          (s[i + 1] == 'x' || s[i + 1] == 'X') &&
          absl::ascii_isxdigit(s[i + 2])) {
        size_t j = i + 2;
        while (j < s.size() && absl::ascii_isxdigit(s[j])) ++j;
        out += "<hex>";
        i = j;
        continue;
      }
      size_t j = i;
      bool digit = false, letter = false;
      while (j < s.size() && absl::ascii_isxdigit(s[j])) {
        (absl::ascii_isdigit(s[j]) ? digit : letter) = true;
        ++j;
      }
      if (j - i >= 8 && digit && letter && EndsToken(s, j)) {
        out += "<hex>";
        i = j;
        continue;
      }
    }
    if (absl::ascii_isdigit(c)) {
      size_t j = i;
      while (j < s.size() && absl::ascii_isdigit(s[j])) ++j;
      while (j + 1 < s.size() && s[j] == '.' && absl::ascii_isdigit(s[j + 1])) {
        ++j;
        while (j < s.size() && absl::ascii_isdigit(s[j])) ++j;
      }
      out += "<n>";
      i = j;
      continue;
    }
    out += c;
    ++i;
  }
  return out;
}

uint64_t ErrorPatternOf(absl::string_view step, absl::string_view exc_type,
                        absl::string_view message) {
  static_assert((kPatternMemoSize & (kPatternMemoSize - 1)) == 0);
  struct Entry {
    uint64_t raw;
    uint64_t pattern;  // 0: empty
  };
  // Plain data: no constructor or destructor runs for the thread.
  static thread_local Entry memo[kPatternMemoSize] = {};
  // The raw fields hashed as a pattern is: a key of its own domain (the
  // unnormalised message), which no pattern id is compared against.
  const uint64_t raw = ErrorPatternId(step, exc_type, message);
  Entry& e = memo[raw & (kPatternMemoSize - 1)];
  if (e.pattern != 0 && e.raw == raw) return e.pattern;
  const uint64_t pattern =
      ErrorPatternId(step, exc_type, NormalizeMessage(message));
  e = {raw, pattern};
  return pattern;
}

ErrorPatternTable::ErrorPatternTable(size_t capacity) : capacity_(capacity) {}

void ErrorPatternTable::RecordError(uint64_t id, absl::string_view step,
                                    absl::string_view exc_type,
                                    absl::string_view sample, int64_t now_ns) {
  MutexLock lock(&mu_);
  RecordErrorLocked(id, step, exc_type, sample, now_ns, nullptr);
}

void ErrorPatternTable::RecordRetryOutcome(uint64_t id, bool recovered) {
  MutexLock lock(&mu_);
  RecordRetryOutcomeLocked(id, recovered);
}

bool ErrorPatternTable::ShouldRetry(uint64_t id, int min_observations) const {
  MutexLock lock(&mu_);
  return ShouldRetryLocked(id, min_observations);
}

bool ErrorPatternTable::RecordFailure(uint64_t failed_retry, uint64_t id,
                                      absl::string_view step,
                                      absl::string_view exc_type,
                                      absl::string_view sample, int64_t now_ns,
                                      int min_observations) {
  MutexLock lock(&mu_);
  if (failed_retry != 0 && failed_retry != id)
    RecordRetryOutcomeLocked(failed_retry, false);
  bool seen_before = false;
  PatternSnapshot* p =
      RecordErrorLocked(id, step, exc_type, sample, now_ns, &seen_before);
  if (failed_retry != 0 && failed_retry == id) {
    // The common case, a retry failing as the attempt before it: one
    // lookup for both records. As RecordRetryOutcome then RecordError: a
    // pattern no longer in the table counts in the totals only.
    ++total_retries_;
    ++failures_after_retry_;
    if (seen_before) {
      ++p->retried;
      ++p->failed_after_retry;
    }
  }
  return p == nullptr || ShouldRetryOf(*p, min_observations);
}

PatternSnapshot* ErrorPatternTable::RecordErrorLocked(
    uint64_t id, absl::string_view step, absl::string_view exc_type,
    absl::string_view sample, int64_t now_ns, bool* seen_before) {
  ++total_errors_;
  if (seen_before != nullptr) *seen_before = false;
  if (capacity_ == 0) return nullptr;
  Lru::iterator node;
  auto it = index_.find(id);
  if (it == index_.end()) {
    PatternSnapshot p;
    p.id = id;
    p.step = CutUtf8(step, kMaxSampleBytes);
    p.exc_type = CutUtf8(exc_type, kMaxSampleBytes);
    p.occurrences = 0;
    p.retried = p.recovered = p.failed_after_retry = 0;
    p.first_seen_ns = now_ns;
    lru_.push_front(std::move(p));
    node = lru_.begin();
    index_.emplace(id, node);
    EvictToCapacityLocked();  // capacity >= 1: the new front stays
  } else {
    node = it->second;
    if (node != lru_.begin()) lru_.splice(lru_.begin(), lru_, node);
    if (seen_before != nullptr) *seen_before = true;
  }
  PatternSnapshot& p = *node;
  ++p.occurrences;
  p.last_seen_ns = now_ns;
  // A pattern's messages are mostly the same message: compared before it
  // is copied, and copied into the buffer the sample already has.
  const absl::string_view cut = CutUtf8View(sample, kMaxSampleBytes);
  if (p.sample != cut) p.sample.assign(cut.data(), cut.size());
  return &p;
}

void ErrorPatternTable::RecordRetryOutcomeLocked(uint64_t id, bool recovered) {
  ++total_retries_;
  ++(recovered ? recoveries_ : failures_after_retry_);
  auto it = index_.find(id);
  if (it == index_.end()) return;
  if (it->second != lru_.begin()) lru_.splice(lru_.begin(), lru_, it->second);
  PatternSnapshot& p = *it->second;
  ++p.retried;
  ++(recovered ? p.recovered : p.failed_after_retry);
}

bool ErrorPatternTable::ShouldRetryLocked(uint64_t id,
                                          int min_observations) const {
  auto it = index_.find(id);
  return it == index_.end() || ShouldRetryOf(*it->second, min_observations);
}

bool ErrorPatternTable::ShouldRetryOf(const PatternSnapshot& p,
                                      int min_observations) {
  const uint64_t needed = static_cast<uint64_t>(std::max(min_observations, 1));
  return p.recovered > 0 || p.retried < needed;
}

ErrorTableStats ErrorPatternTable::Stats() const {
  MutexLock lock(&mu_);
  ErrorTableStats s;
  s.total_errors = total_errors_;
  s.total_retries = total_retries_;
  s.recoveries = recoveries_;
  s.failures_after_retry = failures_after_retry_;
  const uint64_t judged = recoveries_ + failures_after_retry_;
  s.recovery_success_rate = judged == 0 ? 0.0
                                        : static_cast<double>(recoveries_) /
                                              static_cast<double>(judged);
  s.cached_patterns = lru_.size();
  s.capacity = capacity_;
  s.evictions = evictions_;
  return s;
}

std::vector<PatternSnapshot> ErrorPatternTable::Snapshot(size_t max) const {
  std::vector<PatternSnapshot> out;
  {
    MutexLock lock(&mu_);
    out.assign(lru_.begin(), lru_.end());
  }
  const auto before = [](const PatternSnapshot& a, const PatternSnapshot& b) {
    if (a.occurrences != b.occurrences) return a.occurrences > b.occurrences;
    if (a.last_seen_ns != b.last_seen_ns)
      return a.last_seen_ns > b.last_seen_ns;
    return a.id < b.id;
  };
  const size_t keep = std::min(max, out.size());
  std::partial_sort(out.begin(), out.begin() + keep, out.end(), before);
  out.resize(keep);
  return out;
}

void ErrorPatternTable::Resize(size_t capacity) {
  MutexLock lock(&mu_);
  capacity_ = capacity;
  EvictToCapacityLocked();
}

void ErrorPatternTable::Clear() {
  MutexLock lock(&mu_);
  lru_.clear();
  index_.clear();
  total_errors_ = total_retries_ = recoveries_ = failures_after_retry_ = 0;
  evictions_ = 0;
}

size_t ErrorPatternTable::size() const {
  MutexLock lock(&mu_);
  return lru_.size();
}

size_t ErrorPatternTable::capacity() const {
  MutexLock lock(&mu_);
  return capacity_;
}

void ErrorPatternTable::EvictToCapacityLocked() {
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back().id);
    lru_.pop_back();
    ++evictions_;
  }
}

}  // namespace caudal
