// Engine: a step-table miss that reuses an entry instead of making one:
// a plain function refits the least recently used entry of its template,
// and a caudal.Step's evicted entry is parked on its memo and taken back
// (docs/executor.md, "The step table"). Engine::Analyse (engine.cc) calls
// these.
#include <atomic>

#include "engine.h"

namespace caudal::bindings {

namespace {

// Whether `p` is the only reference to its entry, so that the caller may
// change it. The count is read relaxed; the fence makes whatever the last
// other holder did before dropping its reference (a release) visible here.
bool OnlyHolder(const std::shared_ptr<StepEntry>& p) {
  if (p.use_count() != 1) return false;
  std::atomic_thread_fence(std::memory_order_acquire);
  return true;
}

}  // namespace

void Engine::Dropped(std::shared_ptr<StepEntry> dropped) {
  if (Park(dropped)) return;
  // What the evicted entry learnt (breaker, limiter, admission) goes back
  // to its analysis's lookups, for the next entry made from it.
  auto* d = static_cast<PyStepEntry*>(dropped.get());
  if (d->tmpl && d->tmpl->proto) {
    CopyEntryCaches(*d, *d->tmpl->proto);
  } else if (d->memo && d->memo->proto && d->memo->proto_engine == id_) {
    CopyEntryCaches(*d, *d->memo->proto);
  }
  dropped.reset();  // its Python objects go here, with the GIL held
}

std::shared_ptr<StepEntry> Engine::RefitFromTemplate(
    const std::shared_ptr<FunctionTemplate>& tmpl, uint64_t key,
    py::handle step) {
  // The replaced objects are released after the table's lock, with the GIL.
  py::object old_key, old_fn, old_identity;
  // What the template's entries learnt last (the cache admission's verdict
  // above all), as an entry made from the template would get it.
  const std::shared_ptr<StepEntry> fresher = tmpl->last.lock();
  std::shared_ptr<StepEntry> got = core_.steps().Refit(
      key,
      [&](const std::shared_ptr<StepEntry>& v) {
        // The table's is the only reference: no execution, admission or
        // caller holds the entry (all of them take theirs with the GIL).
        return OnlyHolder(v) &&
               static_cast<PyStepEntry*>(v.get())->tmpl == tmpl;
      },
      [&](StepEntry& v) {
        // What EntryFrom(tmpl->analysis, step, step) sets per object.
        auto& p = static_cast<PyStepEntry&>(v);
        old_key = std::move(p.key_a);
        old_fn = std::move(p.fn);
        old_identity = std::move(p.identity_of);
        p.key_a = py::reinterpret_borrow<py::object>(step);
        p.fn = py::reinterpret_borrow<py::object>(step);
        p.identity_of = py::reinterpret_borrow<py::object>(step);
        p.identity_pending = true;
        p.no_identity = "(pending)";
        p.cache_ns.clear();
        if (fresher && fresher.get() != &v) CopyEntryCaches(*fresher, v);
      });
  if (got) tmpl->last = got;
  return got;
}

bool Engine::Park(const std::shared_ptr<StepEntry>& dropped) {
  auto* d = static_cast<PyStepEntry*>(dropped.get());
  if (!d->memo || d->memo->proto_engine != id_ || !OnlyHolder(dropped))
    return false;
  std::shared_ptr<StepMemo> memo = std::move(d->memo);  // no cycle
  // The step's own objects go (the memo lives as long as the step does);
  // what stays is native, or str and tuples of str (name, context fields).
  d->key_a = py::object();
  d->key_b = py::object();
  d->fn = py::object();
  d->fallback = py::object();
  d->retry_on = py::object();
  d->breaker_exclude = py::object();
  d->identity_of = py::object();
  d->stats_weak = d->stats_owner;
  d->stats_owner.reset();
  d->stats = nullptr;
  memo->parked = dropped;
  return true;
}

std::shared_ptr<PyStepEntry> Engine::Unpark(
    const std::shared_ptr<StepMemo>& memo, RecalledObjects& got) {
  auto e = std::static_pointer_cast<PyStepEntry>(memo->parked);
  memo->parked.reset();  // the table's now (it holds the step again)
  e->memo = memo;
  e->fn = got.fn;
  e->fallback = std::move(got.fallback);
  e->breaker_exclude = std::move(got.breaker_exclude);
  e->retry_on = std::move(got.retry_on);
  if (e->identity_pending)
    e->identity_of = memo->identity_is_fn ? got.fn : py::none();
  e->stats_owner = e->stats_weak.lock();
  if (!e->stats_owner) e->stats_owner = core_.StatsFor(e->spec.name);
  e->stats = e->stats_owner.get();
  return e;
}

}  // namespace caudal::bindings
