#include "caudal/executor/step_spec.h"

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

std::shared_ptr<StepEntry> StepTable::Find(uint64_t key) const {
  MutexLock lock(&mu_);
  auto it = entries_.find(key);
  return it == entries_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<StepEntry>> StepTable::Insert(
    uint64_t key, std::shared_ptr<StepEntry> entry) {
  std::vector<std::shared_ptr<StepEntry>> dropped;
  MutexLock lock(&mu_);
  if (entries_.size() >= capacity_ && !entries_.contains(key)) {
    dropped.reserve(entries_.size());
    for (auto& kv : entries_) dropped.push_back(std::move(kv.second));
    entries_.clear();
  }
  generation_.store(NextGeneration(), std::memory_order_release);
  auto& slot = entries_[key];
  if (slot) dropped.push_back(std::move(slot));
  slot = std::move(entry);
  ++analyses_;
  return dropped;
}

std::vector<std::shared_ptr<StepEntry>> StepTable::Clear() {
  std::vector<std::shared_ptr<StepEntry>> dropped;
  MutexLock lock(&mu_);
  for (auto& kv : entries_) dropped.push_back(std::move(kv.second));
  entries_.clear();
  generation_.store(NextGeneration(), std::memory_order_release);
  return dropped;
}

size_t StepTable::size() const {
  MutexLock lock(&mu_);
  return entries_.size();
}

uint64_t StepTable::analyses() const {
  MutexLock lock(&mu_);
  return analyses_;
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
