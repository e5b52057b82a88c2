# gevent's side of the spawn rows. Usage: spawn.py MODE
#   spawn_join  spawn 100k greenlets that do nothing, then join them all: greenlets_per_s
#   sleep_mem   100k greenlets each sleeping 1 s: wall_s from the first spawn to the last join, spawn_s for the
#               spawn loop, and bytes_per_greenlet from the growth of the peak resident set
import gc, resource, sys, time
import gevent
from anchor_util import emit, rss_kib

N = 100_000
mode = sys.argv[1]
gevent.sleep(0)  # let the hub start before the clock does

if mode == "spawn_join":
    start = time.perf_counter()
    greenlets = [gevent.spawn(lambda: None) for _ in range(N)]
    gevent.joinall(greenlets)
    seconds = time.perf_counter() - start
    emit(bench="spawn_join_noop", N=N, seconds=seconds, greenlets_per_s=N / seconds)
elif mode == "sleep_mem":
    gc.collect()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_before = rss_kib()
    start = time.perf_counter()
    greenlets = [gevent.spawn(gevent.sleep, 1) for _ in range(N)]
    spawn_s = time.perf_counter() - start
    gevent.sleep(0.5)  # every greenlet has started and waits in its sleep now
    rss_mid = rss_kib()
    gevent.joinall(greenlets)
    wall_s = time.perf_counter() - start
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    emit(bench="sleep1s_100k", N=N, wall_s=wall_s, spawn_s=spawn_s, baseline_rss_kb=rss_before, rss_mid_kb=rss_mid,
         ru_maxrss_kb=peak_after, bytes_per_greenlet=(peak_after - peak_before) * 1024 / N)
else:
    sys.exit("unknown mode " + mode + ": spawn_join | sleep_mem")
