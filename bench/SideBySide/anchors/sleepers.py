# gevent's side of the SideBySide sleepers rows: N greenlets each sleep a random 0-49 ms (seeded), then end.
# Prints one JSON object with the wall time from the first spawn to the last join. Usage: sleepers.py N
import json, random, sys, time
import gevent

n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
rng = random.Random(42)
delays = [rng.randrange(50) / 1000.0 for _ in range(n)]
start = time.perf_counter()
gevent.joinall([gevent.spawn(gevent.sleep, d) for d in delays])
print(json.dumps({"wall_s": time.perf_counter() - start, "greenlets": n}))
