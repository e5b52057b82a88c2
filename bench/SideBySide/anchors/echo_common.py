# The echo protocol of the SideBySide echo rows, gevent's side: the server handler and the client load, written as
# plain blocking socket code that gevent's monkey.patch_all() makes cooperative.
import socket, time
from anchor_util import percentile

MESSAGE = b"x" * 64


def serve_connection(conn, _address):
    """Echoes everything back until the peer closes."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            data = conn.recv(4096)
            if not data:
                return
            conn.sendall(data)
    finally:
        conn.close()


def one_client(port, rounds, latencies):
    """One connection: `rounds` round trips of 64 bytes, each timed from send to the last byte back."""
    conn = socket.create_connection(("127.0.0.1", port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    mine = []
    for _ in range(rounds):
        began = time.perf_counter()
        conn.sendall(MESSAGE)
        received = 0
        while received < len(MESSAGE):
            data = conn.recv(len(MESSAGE) - received)
            if not data:
                raise EOFError("the server closed the connection")
            received += len(data)
        mine.append(time.perf_counter() - began)
    conn.close()
    latencies.extend(mine)


def load(port, clients, rounds):
    """Runs `clients` connections at once and returns the result fields (rate and latency percentiles)."""
    import gevent
    latencies = []
    start = time.perf_counter()
    gevent.joinall([gevent.spawn(one_client, port, rounds, latencies) for _ in range(clients)], raise_error=True)
    seconds = time.perf_counter() - start
    latencies.sort()
    return dict(clients=clients, rounds=rounds, requests=len(latencies), seconds=seconds,
                req_per_s=len(latencies) / seconds, p50_us=percentile(latencies, 0.5) * 1e6,
                p99_us=percentile(latencies, 0.99) * 1e6, max_us=latencies[-1] * 1e6)
