# gevent's side of the switch-rate rows: two greenlets hand control back and forth N times in total.
# Usage: switch.py MODE [N]   MODE: sleep0 | event | queue | channel | raw_greenlet   (N defaults to 1,000,000)
#   sleep0        both greenlets call gevent.sleep(0) in a loop (each call goes through the hub)
#   event         ping-pong over two Events (set / wait / clear)
#   queue         ping-pong over two unbounded Queues
#   channel       ping-pong over two Channels (rendezvous, no buffer)
#   raw_greenlet  greenlet.switch between two greenlets with no hub: the floor of a switch's cost
import sys, time
import gevent, greenlet
from gevent.event import Event
from gevent.queue import Queue, Channel
from anchor_util import emit


def timed(*bodies):
    start = time.perf_counter()
    gevent.joinall([gevent.spawn(body) for body in bodies])
    return time.perf_counter() - start


def by_sleep0(n):
    def yielder():
        for _ in range(n // 2):
            gevent.sleep(0)
    return timed(yielder, yielder)


def by_event(n):
    ping, pong = Event(), Event()
    def first():
        for _ in range(n // 2):
            ping.set(); pong.wait(); pong.clear()
    def second():
        for _ in range(n // 2):
            ping.wait(); ping.clear(); pong.set()
    return timed(second, first)


def by_pair(make):
    def run(n):
        there, back = make(), make()
        def first():
            for i in range(n // 2):
                there.put(i); back.get()
        def second():
            for _ in range(n // 2):
                back.put(there.get())
        return timed(second, first)
    return run


def by_raw_greenlet(n):
    main = greenlet.getcurrent()
    def echo(value):
        while True:
            value = main.switch(value)
    other = greenlet.greenlet(echo)
    start = time.perf_counter()
    for i in range(n // 2):
        other.switch(i)
    return time.perf_counter() - start


MODES = {"sleep0": by_sleep0, "event": by_event, "queue": by_pair(Queue), "channel": by_pair(Channel),
         "raw_greenlet": by_raw_greenlet}
mode = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
seconds = MODES[mode](n)
emit(bench="switch_" + mode, N_switches=n, seconds=seconds, switches_per_s=n / seconds)
