# gevent's side of the SideBySide run_blocking row: 20 greenlets each make a C call that blocks (libc usleep of
# 200 ms through ctypes). A C call holds the GIL's hub thread, so gevent runs it on its thread pool
# (hub.threadpool.apply), the nearest gevent has to Green.RunBlocking. A ticker greenlet sleeping 5 ms at a time
# records the longest gap between its ticks. Prints one JSON object. Usage: run_blocking.py [greenlets]
import ctypes, json, sys, time
import gevent

libc = ctypes.CDLL("libc.so.6")
n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
hub = gevent.get_hub()
hub.threadpool.maxsize = max(hub.threadpool.maxsize, n)
done = False
longest = 0.0

def ticker():
    global longest
    last = time.perf_counter()
    while not done:
        gevent.sleep(0.005)
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now

def call():
    hub.threadpool.apply(libc.usleep, (200000,))

# Warm the pool up (its threads start lazily), as the .NET side warms up its carriers.
gevent.joinall([gevent.spawn(call) for _ in range(n)])
t = gevent.spawn(ticker)
start = time.perf_counter()
gevent.joinall([gevent.spawn(call) for _ in range(n)])
wall = time.perf_counter() - start
done = True
t.join()
print(json.dumps({"wall_s": wall, "max_gap_ms": longest * 1e3}))
