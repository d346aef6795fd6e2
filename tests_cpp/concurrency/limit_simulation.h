// A deterministic discrete-event simulation of closed-loop clients calling a
// backend with a hidden capacity through a concurrency limit, for testing
// adaptive limit algorithms without sleeping (time is simulated).
//
// Two backend models:
//
// Queueing (the default): a request arriving while n requests are at the
// backend takes
//   base_rtt * max(1, n / capacity) * jitter          (jitter uniform in
//                                                      [1 - j, 1 + j])
// and, beyond capacity, fails with probability
//   min(max_error_rate, error_slope * (n - capacity) / capacity),
// failing after a fifth of that time (an overload error: a drop sample).
//
// Rejecting (`rejecting = true`, an API answering HTTP 429 at once): a
// request arriving while `capacity` requests are being served is rejected
// after reject_rtt (a drop sample) and is not served; a served request takes
// base_rtt * jitter whatever the load.
//
// In both, a fraction `stray_drop_rate` of the served requests fail as a
// drop after a fifth of their time whatever the load (a connection reset),
// a fraction `outlier_rate` of the others take
// base_rtt * uniform(outlier_min, outlier_max) instead, independent of the
// load (a slow answer keeps its backend slot that long), and the capacity
// changes at the given simulated times.
//
// The caller: with retry_backoff_ns == 0 a client whose request dropped
// releases its permit and asks again at once. With retry_backoff_ns > 0 it
// keeps its permit, waits that long and tries again, up to `attempts`
// attempts in all, then gives up, releases the permit and asks again at
// once (as caudal's executor retries an overloaded attempt under the permit
// it holds, 3 attempts by default); each attempt is one sample, reported
// with the in-flight count when the permit was granted.
#ifndef CAUDAL_TESTS_CPP_CONCURRENCY_LIMIT_SIMULATION_H_
#define CAUDAL_TESTS_CPP_CONCURRENCY_LIMIT_SIMULATION_H_

#include <algorithm>
#include <cstdint>
#include <queue>
#include <utility>
#include <vector>

#include "caudal/concurrency/limit_algorithms.h"

namespace caudal::testing_sim {

struct Backend {
  int capacity = 20;
  int64_t base_rtt_ns = 20'000'000;
  double jitter = 0.1;
  // Queueing model: failure rate beyond capacity.
  double error_slope = 0.5;
  double max_error_rate = 0.5;
  // Rejecting model.
  bool rejecting = false;
  int64_t reject_rtt_ns = 1'000'000;
  // Drops independent of load (connection resets), among served requests.
  double stray_drop_rate = 0;
  // Slow answers independent of load.
  double outlier_rate = 0;
  double outlier_min = 50;  // in base rtts
  double outlier_max = 100;
  // (at_ns, capacity), ascending.
  std::vector<std::pair<int64_t, int>> capacity_changes;
  // The caller's back-off after a drop, permit held (0: released at once).
  int64_t retry_backoff_ns = 0;
  int attempts = 3;  // per permit, with retry_backoff_ns > 0

  int CapacityAt(int64_t now) const {
    int c = capacity;
    for (const auto& [at, cap] : capacity_changes) {
      if (at <= now) c = cap;
    }
    return c;
  }
};

struct SimResult {
  double goodput_per_s = 0;  // successes per second over the measured part
  double p50_ms = 0;
  double p99_ms = 0;  // of successful requests, measured part
  double error_rate = 0;
  double mean_limit = 0;  // time-weighted over the measured part
  int final_limit = 0;
  int64_t drops = 0;       // drop samples (rejections) in the measured part
  int64_t settle_ns = -1;  // first time after which the limit stays in
                           // [0.75, 1.5] * capacity
  std::vector<std::pair<int64_t, int>> trajectory;  // (time, limit) changes
  std::vector<int64_t> drop_times;                  // every drop, whole run
  int64_t end_ns = 0;                               // the simulated duration

  // Drops completed in [from_ns, to_ns).
  int64_t DropsBetween(int64_t from_ns, int64_t to_ns) const {
    int64_t n = 0;
    for (int64_t t : drop_times) n += t >= from_ns && t < to_ns;
    return n;
  }
  // The limit in force at time t.
  int LimitAt(int64_t t) const {
    int l = trajectory.front().second;
    for (const auto& [at, limit] : trajectory) {
      if (at <= t) l = limit;
    }
    return l;
  }
  // The lowest and highest limit in force during [from_ns, to_ns).
  std::pair<int, int> LimitRange(int64_t from_ns, int64_t to_ns) const {
    int lo = LimitAt(from_ns), hi = lo;
    for (const auto& [at, limit] : trajectory) {
      if (at > from_ns && at < to_ns) {
        lo = std::min(lo, limit);
        hi = std::max(hi, limit);
      }
    }
    return {lo, hi};
  }
  // Time-weighted mean limit over [from_ns, to_ns).
  double MeanLimit(int64_t from_ns, int64_t to_ns) const {
    double area = 0;
    int64_t t = from_ns;
    int l = LimitAt(from_ns);
    for (const auto& [at, limit] : trajectory) {
      if (at <= from_ns) continue;
      if (at >= to_ns) break;
      area += static_cast<double>(l) * static_cast<double>(at - t);
      t = at;
      l = limit;
    }
    area += static_cast<double>(l) * static_cast<double>(to_ns - t);
    return area / static_cast<double>(to_ns - from_ns);
  }
  // The first time from which the limit stays within [lo, hi] to the end of
  // the run (from `from_ns` on); -1 if it ends outside.
  int64_t SettledAt(int lo, int hi, int64_t from_ns = 0) const {
    int64_t since = from_ns;
    bool inside = false;
    int l = LimitAt(from_ns);
    inside = l >= lo && l <= hi;
    for (const auto& [at, limit] : trajectory) {
      if (at <= from_ns) continue;
      const bool in = limit >= lo && limit <= hi;
      if (in && !inside) since = at;
      inside = in;
    }
    return inside ? since : -1;
  }
  // The first time at or after from_ns when the limit was at least `level`;
  // -1 if never.
  int64_t FirstReached(int level, int64_t from_ns = 0) const {
    if (LimitAt(from_ns) >= level) return from_ns;
    for (const auto& [at, limit] : trajectory) {
      if (at > from_ns && limit >= level) return at;
    }
    return -1;
  }
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
  struct Event {
    int64_t at;
    int64_t start;  // the attempt's start
    int inflight;   // in flight when the permit was granted
    bool drop;
    bool served;  // held a backend slot (released at `at`)
    bool retry;   // not a completion: a held permit tries again
    int attempt;  // 1 for the first attempt under a permit
    bool operator>(const Event& o) const { return at > o.at; }
  };
  Rng rng(seed);
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events;
  int in_flight = 0;  // permits held
  int at_backend = 0;
  int waiting = clients;
  std::vector<double> lat_ms;
  int64_t ok = 0, failed = 0;
  SimResult r;
  r.end_ns = duration_ns;
  int limit = algo ? algo->limit() : 1 << 30;
  r.trajectory.push_back({0, limit});
  double limit_area = 0;
  int64_t last_t = measure_from_ns;
  auto attempt = [&](int64_t now, int inflight, int n) {
    const int capacity = b.CapacityAt(now);
    if (b.rejecting && at_backend >= capacity) {
      events.push(
          {now + b.reject_rtt_ns, now, inflight, true, false, false, n});
      return;
    }
    ++at_backend;
    const double load =
        b.rejecting ? 1.0
                    : std::max(1.0, static_cast<double>(at_backend) / capacity);
    const double jit = 1.0 + b.jitter * (2 * rng.Uniform() - 1);
    auto rtt = static_cast<int64_t>(b.base_rtt_ns * load * jit);
    double p = 0;
    if (!b.rejecting && at_backend > capacity) {
      p = std::min(b.max_error_rate, b.error_slope * (at_backend - capacity) /
                                         static_cast<double>(capacity));
    }
    bool drop = !b.rejecting && rng.Uniform() < p;
    if (!drop && b.stray_drop_rate > 0 && rng.Uniform() < b.stray_drop_rate) {
      drop = true;
    }
    if (!drop && b.outlier_rate > 0 && rng.Uniform() < b.outlier_rate) {
      const double k =
          b.outlier_min + (b.outlier_max - b.outlier_min) * rng.Uniform();
      rtt = static_cast<int64_t>(b.base_rtt_ns * k);
    }
    events.push(
        {now + (drop ? rtt / 5 : rtt), now, inflight, drop, true, false});
  };
  auto fill = [&](int64_t now) {
    while (waiting > 0 && in_flight < limit) {
      ++in_flight;
      --waiting;
      attempt(now, in_flight, 1);
    }
  };
  fill(0);
  while (!events.empty()) {
    const Event d = events.top();
    events.pop();
    if (d.at > duration_ns) break;
    if (d.retry) {
      attempt(d.at, d.inflight, d.attempt);
      continue;
    }
    if (d.served) --at_backend;
    const bool hold =
        d.drop && b.retry_backoff_ns > 0 && d.attempt < b.attempts;
    if (!hold) {
      --in_flight;
      ++waiting;  // the client asks again at once
    }
    if (d.drop) r.drop_times.push_back(d.at);
    if (d.at >= measure_from_ns) {
      limit_area +=
          static_cast<double>(limit) *
          static_cast<double>(d.at - std::max(last_t, measure_from_ns));
      last_t = d.at;
      if (d.drop) {
        ++failed;
        ++r.drops;
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
    if (hold) {
      events.push({d.at + b.retry_backoff_ns, 0, d.inflight, false, false, true,
                   d.attempt + 1});
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
