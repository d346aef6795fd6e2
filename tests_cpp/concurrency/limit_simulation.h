// A deterministic discrete-event simulation of closed-loop clients calling a
// backend with a hidden capacity through a concurrency limit, for testing
// adaptive limit algorithms without sleeping (time is simulated).
//
// Backend model: a request admitted while n requests are in flight takes
//   base_rtt * max(1, n / capacity) * jitter          (jitter uniform in
//                                                      [1 - j, 1 + j])
// and, beyond capacity, fails with probability
//   min(max_error_rate, error_slope * (n - capacity) / capacity),
// failing after a fifth of that time (an overload error: a drop sample).
#ifndef CAUDAL_TESTS_CPP_CONCURRENCY_LIMIT_SIMULATION_H_
#define CAUDAL_TESTS_CPP_CONCURRENCY_LIMIT_SIMULATION_H_

#include <algorithm>
#include <cstdint>
#include <deque>
#include <queue>
#include <vector>

#include "caudal/concurrency/limit_algorithms.h"

namespace caudal::testing_sim {

struct Backend {
  int capacity = 20;
  int64_t base_rtt_ns = 20'000'000;
  double jitter = 0.1;
  double error_slope = 0.5;
  double max_error_rate = 0.5;
};

struct SimResult {
  double goodput_per_s = 0;  // successes per second over the measured part
  double p50_ms = 0;
  double p99_ms = 0;  // of successful requests, measured part
  double error_rate = 0;
  double mean_limit = 0;  // time-weighted over the measured part
  int final_limit = 0;
  int64_t settle_ns = -1;  // first time after which the limit stays in
                           // [0.75, 1.5] * capacity
  std::vector<std::pair<int64_t, int>> trajectory;  // (time, limit) changes
};

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed ? seed : 1) {}
  double Uniform() {  // [0, 1)
    s_ ^= s_ << 13;
    s_ ^= s_ >> 7;
    s_ ^= s_ << 17;
    return static_cast<double>(s_ >> 11) * (1.0 / 9007199254740992.0);
  }

 private:
  uint64_t s_;
};

// Runs `clients` closed-loop clients for `duration_ns`; measures from
// `measure_from_ns`. A null algorithm means no limit.
inline SimResult Simulate(LimitAlgorithm* algo, const Backend& b, int clients,
                          int64_t duration_ns, int64_t measure_from_ns,
                          uint64_t seed = 42) {
  struct Done {
    int64_t at;
    int64_t start;
    int inflight;
    bool drop;
    bool operator>(const Done& o) const { return at > o.at; }
  };
  Rng rng(seed);
  std::priority_queue<Done, std::vector<Done>, std::greater<Done>> events;
  int in_flight = 0;
  int waiting = clients;
  std::vector<double> lat_ms;
  int64_t ok = 0, failed = 0;
  SimResult r;
  int limit = algo ? algo->limit() : 1 << 30;
  r.trajectory.push_back({0, limit});
  double limit_area = 0;
  int64_t last_t = measure_from_ns;
  auto start_one = [&](int64_t now) {
    ++in_flight;
    --waiting;
    const double load =
        std::max(1.0, static_cast<double>(in_flight) / b.capacity);
    const double jit = 1.0 + b.jitter * (2 * rng.Uniform() - 1);
    const auto rtt = static_cast<int64_t>(b.base_rtt_ns * load * jit);
    double p = 0;
    if (in_flight > b.capacity) {
      p = std::min(b.max_error_rate, b.error_slope * (in_flight - b.capacity) /
                                         static_cast<double>(b.capacity));
    }
    const bool drop = rng.Uniform() < p;
    events.push({now + (drop ? rtt / 5 : rtt), now, in_flight, drop});
  };
  auto fill = [&](int64_t now) {
    while (waiting > 0 && in_flight < limit) start_one(now);
  };
  fill(0);
  while (!events.empty()) {
    const Done d = events.top();
    events.pop();
    if (d.at > duration_ns) break;
    --in_flight;
    ++waiting;  // the client asks again at once
    if (d.at >= measure_from_ns) {
      limit_area +=
          static_cast<double>(limit) *
          static_cast<double>(d.at - std::max(last_t, measure_from_ns));
      last_t = d.at;
      if (d.drop) {
        ++failed;
      } else {
        ++ok;
        lat_ms.push_back(static_cast<double>(d.at - d.start) / 1e6);
      }
    }
    if (algo) {
      const int next =
          algo->OnSample(d.start, d.at - d.start, d.inflight, d.drop);
      if (next != limit) {
        limit = next;
        r.trajectory.push_back({d.at, limit});
      }
    }
    fill(d.at);
  }
  const double secs = static_cast<double>(duration_ns - measure_from_ns) / 1e9;
  r.goodput_per_s = static_cast<double>(ok) / secs;
  r.error_rate = ok + failed ? static_cast<double>(failed) / (ok + failed) : 0;
  std::sort(lat_ms.begin(), lat_ms.end());
  if (!lat_ms.empty()) {
    r.p50_ms = lat_ms[lat_ms.size() / 2];
    r.p99_ms = lat_ms[std::min(lat_ms.size() - 1, lat_ms.size() * 99 / 100)];
  }
  r.mean_limit =
      last_t > measure_from_ns
          ? limit_area / static_cast<double>(last_t - measure_from_ns)
          : limit;
  r.final_limit = limit;
  // Settled: the last time the limit left [0.75, 1.5] * capacity.
  r.settle_ns = 0;
  for (const auto& [t, l] : r.trajectory) {
    if (l < 0.75 * b.capacity || l > 1.5 * b.capacity) r.settle_ns = t;
  }
  return r;
}

}  // namespace caudal::testing_sim

#endif  // CAUDAL_TESTS_CPP_CONCURRENCY_LIMIT_SIMULATION_H_
