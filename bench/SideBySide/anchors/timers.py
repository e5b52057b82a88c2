# gevent's side of the timers rows: 10k greenlets each sleep a random 0-100 ms (seeded). Prints the wall time, the
# ideal (the longest sleep) and how late each sleeper woke (p50/p99/max in ms). Usage: timers.py
import random, time
import gevent
from anchor_util import emit, percentile

N = 10_000
rng = random.Random(42)
delays = [rng.uniform(0, 0.1) for _ in range(N)]
lateness = []


def sleeper(delay):
    began = time.perf_counter()
    gevent.sleep(delay)
    lateness.append(time.perf_counter() - began - delay)


gevent.sleep(0)
start = time.perf_counter()
gevent.joinall([gevent.spawn(sleeper, d) for d in delays])
wall = time.perf_counter() - start
lateness.sort()
ideal = max(delays)
emit(bench="timers_10k", N=N, wall_s=wall, ideal_s=ideal, overhead_s=wall - ideal,
     lateness_ms_p50=percentile(lateness, 0.5) * 1e3, lateness_ms_p99=percentile(lateness, 0.99) * 1e3,
     lateness_ms_max=lateness[-1] * 1e3)
