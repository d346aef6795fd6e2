#include "caudal/executor/step_spec.h"

#include <iterator>

namespace caudal {

StepSpec::Settings StepSpec::settings() const {
  Settings s;
  if (timeout_ns > 0) s.timeout_s = static_cast<double>(timeout_ns) / 1e9;
  s.cache = cache;
  s.max_retries = retry.max_attempts - 1;
  if (use_breaker) s.breaker = breaker_key.empty() ? name : breaker_key;
  return s;
}

uint64_t StepTable::NextGeneration() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

std::shared_ptr<StepEntry> StepTable::Find(uint64_t key) {
  MutexLock lock(&mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  // Most recently used first: a splice, no allocation.
  if (it->second != recency_.begin())
    recency_.splice(recency_.begin(), recency_, it->second);
  return it->second->entry;
}

std::shared_ptr<StepEntry> StepTable::Insert(uint64_t key,
                                             std::shared_ptr<StepEntry> entry) {
  std::shared_ptr<StepEntry> dropped;
  MutexLock lock(&mu_);
  ++analyses_;
  auto it = index_.find(key);
  if (it != index_.end()) {
    // Replaced (another object now lives at the address, or a bound
    // method's key collided): the old entry goes.
    dropped = std::move(it->second->entry);
    it->second->entry = std::move(entry);
    recency_.splice(recency_.begin(), recency_, it->second);
  } else {
    if (index_.size() >= capacity_) {
      // Full: the least recently used entry goes, and only it; its list
      // node is reused for the new one.
      Slot& last = recency_.back();
      dropped = std::move(last.entry);
      index_.erase(last.key);
      last.key = key;
      last.entry = std::move(entry);
      recency_.splice(recency_.begin(), recency_, std::prev(recency_.end()));
      ++evictions_;
    } else {
      recency_.push_front(Slot{key, std::move(entry)});
    }
    index_.emplace(key, recency_.begin());
  }
  if (dropped) generation_.store(NextGeneration(), std::memory_order_release);
  return dropped;
}

std::shared_ptr<StepEntry> StepTable::Refit(
    uint64_t key,
    absl::FunctionRef<bool(const std::shared_ptr<StepEntry>&)> reusable,
    absl::FunctionRef<void(StepEntry&)> refit) {
  MutexLock lock(&mu_);
  if (index_.size() < capacity_ || recency_.empty() || index_.contains(key))
    return nullptr;
  Slot& last = recency_.back();
  if (!reusable(last.entry)) return nullptr;
  refit(*last.entry);
  index_.erase(last.key);
  last.key = key;
  recency_.splice(recency_.begin(), recency_, std::prev(recency_.end()));
  index_.emplace(key, recency_.begin());
  ++analyses_;
  ++evictions_;
  // Whoever cached the entry under its old key must look it up again.
  generation_.store(NextGeneration(), std::memory_order_release);
  return recency_.front().entry;
}

std::vector<std::shared_ptr<StepEntry>> StepTable::Clear() {
  std::vector<std::shared_ptr<StepEntry>> dropped;
  MutexLock lock(&mu_);
  dropped.reserve(recency_.size());
  for (Slot& s : recency_) dropped.push_back(std::move(s.entry));
  recency_.clear();
  index_.clear();
  generation_.store(NextGeneration(), std::memory_order_release);
  return dropped;
}

void StepTable::Regained() {
  MutexLock lock(&mu_);
  if (capacity_ >= max_capacity_) return;
  if (++regained_ < std::max<size_t>(capacity_ / 8, 1)) return;
  capacity_ = std::min(capacity_ * 2, max_capacity_);
  regained_ = 0;
}

size_t StepTable::capacity() const {
  MutexLock lock(&mu_);
  return capacity_;
}

size_t StepTable::size() const {
  MutexLock lock(&mu_);
  return index_.size();
}

uint64_t StepTable::analyses() const {
  MutexLock lock(&mu_);
  return analyses_;
}

uint64_t StepTable::evictions() const {
  MutexLock lock(&mu_);
  return evictions_;
}

void StepTable::Describe(const StepSpec& spec) {
  StepSpec::Settings s = spec.settings();
  MutexLock lock(&mu_);
  settings_[spec.name] = std::move(s);
}

absl::optional<StepSpec::Settings> StepTable::SettingsOf(
    const std::string& name) const {
  MutexLock lock(&mu_);
  auto it = settings_.find(name);
  if (it == settings_.end()) return absl::nullopt;
  return it->second;
}

void StepTable::MarkUncacheable(const std::string& name, std::string why) {
  MutexLock lock(&mu_);
  uncacheable_[name] = std::move(why);
}

std::vector<std::pair<std::string, std::string>> StepTable::UncacheableSteps()
    const {
  MutexLock lock(&mu_);
  return {uncacheable_.begin(), uncacheable_.end()};
}

}  // namespace caudal
