// Allocation counting for tests and benchmarks: how many times the global
// operator new ran, per thread and in total.
//
// Only in builds configured with -DCAUDAL_COUNT_ALLOCATIONS=ON (never with a
// sanitizer, which owns operator new itself): alloc_counter.cc then replaces
// the global operator new/delete with versions that count and call
// malloc/free. In a test executable that replacement sees every C++
// allocation of the process; in the Python extension module it sees the
// allocations made by caudal's own code (the module's calls bind to it),
// not those made inside libstdc++.so (e.g. growing a std::string there).
// Without the option, Enabled() is false and the counts stay 0.
//
// Thread-safety: the per-thread count is thread_local; the total is a
// relaxed atomic. Cost when enabled: one thread_local increment and one
// relaxed atomic add per allocation.
#ifndef CAUDAL_BASE_ALLOC_COUNTER_H_
#define CAUDAL_BASE_ALLOC_COUNTER_H_

#include <cstdint>

namespace caudal::alloc_counter {

// Whether this build counts allocations.
bool Enabled();
// operator new calls made by the calling thread so far.
uint64_t ThreadAllocations();
// operator new calls made by all threads so far.
uint64_t TotalAllocations();

}  // namespace caudal::alloc_counter

#endif  // CAUDAL_BASE_ALLOC_COUNTER_H_
