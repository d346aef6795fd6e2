// The executor's memory management: the pool of ExecutionRecords and the
// response to memory pressure (docs/memory.md).
//
// Shrink order, applied when the level rises (and undone, in reverse, when
// it falls back to normal):
//   1. record pool: idle records freed; the idle cap becomes half of
//      object_pool_max_size (elevated) or 0 (critical: every record goes
//      back to the allocator);
//   2. L1 result cache: expired entries dropped, then the entry and byte
//      bounds cut to 50% (elevated) or 10% (critical) of cache_max_size /
//      cache_max_bytes, evicting least recently used entries.
// Each level's targets are a pure function of (config, level), so applying
// a level twice, or a config change under pressure, gives the same state.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "caudal/executor/executor.h"

namespace caudal {
namespace {

struct MemoryTargets {
  size_t pool_max_idle;
  size_t cache_entries;
  size_t cache_bytes;
};

MemoryTargets TargetsFor(const OptimizationConfig& cfg, PressureLevel level) {
  const size_t pool_max = cfg.enable_object_pool
                              ? static_cast<size_t>(cfg.object_pool_max_size)
                              : 0;
  const size_t entries = static_cast<size_t>(cfg.cache_max_size);
  const size_t bytes = static_cast<size_t>(cfg.cache_max_bytes);
  auto part = [](size_t n, double f) {
    return n == 0 ? size_t{0}
                  : std::max<size_t>(1, static_cast<size_t>(std::floor(
                                            static_cast<double>(n) * f)));
  };
  switch (level) {
    case PressureLevel::kNormal:
      break;
    case PressureLevel::kElevated:
      return {pool_max / 2, part(entries, 0.5), part(bytes, 0.5)};
    case PressureLevel::kCritical:
      return {0, part(entries, 0.1), part(bytes, 0.1)};
  }
  return {pool_max, entries, bytes};
}

}  // namespace

ExecutionRecord* Executor::NewRecord(const OptimizationConfig& cfg) {
  ExecutionRecord* r;
  if (!cfg.enable_object_pool) {
    r = new ExecutionRecord();
  } else {
    r = records_.Acquire();
    r->pooled = true;
  }
  if (r->table == nullptr) {
    // A new record: a slot in the handle table for its life (a pooled one
    // keeps its slot, so the hot path only publishes and retires handles).
    const uint32_t slot = handles_.Attach(r);
    if (ABSL_PREDICT_FALSE(slot == HandleTable<ExecutionRecord>::kNoSlot)) {
      FreeRecord(r);
      return nullptr;
    }
    r->table = &handles_;
    r->slot = slot;
  }
  return r;
}

void Executor::FreeRecord(ExecutionRecord* r) {
  if (!r->pooled) {
    delete r;  // gives its slot back
    return;
  }
  // Back to the pool it came from, whatever the config says now (the pool
  // deletes it if pooling was turned off meanwhile: its cap is then 0). It
  // keeps its handle-table slot (its handle was retired).
  HandleTable<ExecutionRecord>* table = r->table;
  const uint32_t slot = r->slot;
  *r = ExecutionRecord();
  r->table = table;
  r->slot = slot;
  records_.Release(r);
}

void Executor::ApplyMemoryConfig(const OptimizationConfig& cfg, int64_t now_ns,
                                 std::vector<CachedValue>* dropped) {
  memory_.SetThreshold(cfg.memory_pressure_threshold_mb);
  MutexLock lock(&memory_mu_);
  if (!cfg.enable_memory_optimization &&
      applied_level_ != PressureLevel::kNormal) {
    // Turned off under pressure: capacities go back to the config's.
    applied_level_ = PressureLevel::kNormal;
    shrunk_.clear();
  }
  const MemoryTargets t = TargetsFor(cfg, applied_level_);
  if (records_.max_idle() != t.pool_max_idle)
    records_.SetMaxIdle(t.pool_max_idle);
  const ResultCacheStats cs = cache_.GetStats();
  if (cs.max_entries != t.cache_entries || cs.max_bytes != t.cache_bytes) {
    cache_.Resize(t.cache_entries, t.cache_bytes, dropped).IgnoreError();
  }
  (void)now_ns;
}

void Executor::Maintain(int64_t now_ns) {
  int64_t due = next_maintain_ns_.load(std::memory_order_relaxed);
  if (now_ns < due) return;
  if (!next_maintain_ns_.compare_exchange_strong(
          due, now_ns + memory_.interval_ns(), std::memory_order_relaxed)) {
    return;  // another caller does this round
  }
  const OptimizationConfig& cfg = *current_config();
  // Idle records above object_pool_cleanup_threshold of the cap go back to
  // the allocator.
  const size_t cap = records_.max_idle();
  const auto keep = static_cast<size_t>(
      std::floor(static_cast<double>(cap) * cfg.object_pool_cleanup_threshold));
  if (records_.idle() > keep) records_.Trim(keep);
  MaintainMonitor(cfg, now_ns);  // executor_monitor.cc
  if (!cfg.enable_memory_optimization) return;
  memory_.ReadNow(now_ns);
  SyncPressure(now_ns);
}

void Executor::SyncPressure(int64_t now_ns) {
  const OptimizationConfig& cfg = *current_config();
  std::vector<CachedValue> dropped;  // destroyed after the locks are gone
  PressureLevel from, level;
  {
    MutexLock lock(&memory_mu_);
    level = memory_.level();  // the latest reading's
    from = applied_level_;
    if (level == from || !cfg.enable_memory_optimization) return;
    ++pressure_changes_;
    const MemoryTargets was = TargetsFor(cfg, applied_level_);
    const MemoryTargets t = TargetsFor(cfg, level);
    applied_level_ = level;
    shrunk_.clear();
    // 1. The record pool.
    const size_t freed = records_.SetMaxIdle(t.pool_max_idle);
    if (t.pool_max_idle < static_cast<size_t>(cfg.object_pool_max_size) &&
        cfg.enable_object_pool) {
      shrunk_.push_back(absl::StrCat(
          "object_pool: max idle records ", cfg.object_pool_max_size, " -> ",
          t.pool_max_idle, " (", freed, " idle records freed)"));
    }
    // 2. The L1 result cache: expired entries first, then the bounds.
    if (level > PressureLevel::kNormal) {
      const size_t expired = cache_.EvictExpired(now_ns, &dropped);
      if (expired > 0)
        shrunk_.push_back(absl::StrCat("result_cache: ", expired,
                                       " expired entries dropped"));
    }
    if (t.cache_entries != was.cache_entries ||
        t.cache_bytes != was.cache_bytes) {
      const size_t before_entries = cache_.GetStats().entries;
      cache_.Resize(t.cache_entries, t.cache_bytes, &dropped).IgnoreError();
      if (level > PressureLevel::kNormal) {
        const size_t evicted = before_entries - cache_.GetStats().entries;
        std::string what =
            absl::StrCat("result_cache: max entries ", cfg.cache_max_size,
                         " -> ", t.cache_entries);
        if (cfg.cache_max_bytes > 0)
          absl::StrAppend(&what, ", max bytes ", cfg.cache_max_bytes, " -> ",
                          t.cache_bytes);
        absl::StrAppend(&what, " (", evicted, " evicted)");
        shrunk_.push_back(std::move(what));
      }
    }
  }
  if (events_.Wants(EventType::kMemoryPressure)) {
    Event e;
    e.type = EventType::kMemoryPressure;
    e.time_ns = now_ns;
    e.value = memory_.last_rss_mb();
    e.value2 = static_cast<double>(level);
    e.detail =
        absl::StrCat(PressureLevelName(from), "->", PressureLevelName(level));
    events_.Publish(e);
  }
}

MemorySnapshot Executor::MemoryStats(int64_t now_ns) {
  const OptimizationConfig& cfg = *current_config();
  if (cfg.enable_memory_optimization) {
    memory_.ReadNow(now_ns);
    SyncPressure(now_ns);
  } else {
    memory_.Sample();
  }
  MemorySnapshot s;
  s.usage_mb = memory_.last_rss_mb();
  s.threshold_mb = memory_.threshold_mb();
  s.readings = memory_.readings();
  s.read_errors = memory_.read_errors();
  s.pool = records_.Stats();
  MutexLock lock(&memory_mu_);
  s.level = applied_level_;
  s.pressure_changes = pressure_changes_;
  s.shrunk = shrunk_;
  return s;
}

}  // namespace caudal
