#include "caudal/executor/clock.h"

#include <pthread.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "caudal/executor/calibrated_clock.h"

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace caudal {
namespace {

struct SystemAndTsc {
  static int64_t SystemNs() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  }
  static uint64_t Ticks() {
#if defined(__x86_64__)
    return __rdtsc();
#else
    return 0;
#endif
  }
};

// Whether the TSC may stand in for the system clock: on x86-64 Linux whose
// kernel itself keeps time with it (it checked the TSC is invariant and in
// step across CPUs), and unless CAUDAL_CLOCK=system asks for the system
// clock.
bool TscTrusted() {
#if defined(__x86_64__) && defined(__linux__)
  const char* choice = std::getenv("CAUDAL_CLOCK");
  if (choice != nullptr && std::strcmp(choice, "system") == 0) return false;
  std::FILE* f = std::fopen(
      "/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
  if (f == nullptr) return false;
  char name[32] = {};
  const bool read = std::fgets(name, sizeof(name), f) != nullptr;
  std::fclose(f);
  return read && std::strcmp(name, "tsc\n") == 0;
#else
  return false;
#endif
}

using Clock = CalibratedClock<SystemAndTsc>;

Clock& TheClock() {
  static Clock* clock = [] {
    auto* c = new Clock(TscTrusted());  // never destroyed: read at exit too
    pthread_atfork(nullptr, nullptr, [] { TheClock().AfterFork(); });
    return c;
  }();
  return *clock;
}

}  // namespace

int64_t MonotonicNowNs() { return TheClock().Now(); }

const char* MonotonicClockSource() {
  switch (TheClock().mode()) {
    case Clock::Mode::kTicks:
      return "tsc";
    case Clock::Mode::kCalibrating:
      return "tsc (calibrating)";
    case Clock::Mode::kSystem:
      break;
  }
  return "system";
}

double MonotonicClockTicksPerSecond() { return TheClock().TicksPerSecond(); }

}  // namespace caudal
