# gevent's side of the SideBySide HTTP workload: pywsgi serving a blocking-style handler under monkey.patch_all(),
# the gevent counterpart of GreenRuntime's HttpServer under Patch.All(). Usage: http_server.py PORT
# Prints READY once listening; exits by itself after LIFETIME seconds (every loop of the harness is bounded).
import sys
from gevent import monkey; monkey.patch_all()
import socket, time
import gevent
from gevent.pywsgi import WSGIServer

LIFETIME = 120
SLEEP_S = 0.020
# The same bytes as HttpWorkloads.Body on the .NET side.
BODY = b"hello from a blocking handler: it slept 20 ms, as a database call would\n" + b"." * 27 + b"\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]

def app(environ, start_response):
    time.sleep(SLEEP_S)  # patched: parks this greenlet only, like a database call made with a patched driver
    start_response("200 OK", HEADERS)
    return [BODY]

class NoDelayServer(WSGIServer):
    # pywsgi sends the head and the body in two writes. Without TCP_NODELAY the body waits for the client's delayed
    # ACK of the head (40 ms on Linux): 64 ms per request instead of 20. GreenRuntime's HttpServer and Go's net/http
    # set TCP_NODELAY on accepted sockets, so this does too, and the comparison is of servers, not of Nagle.
    def handle(self, sock, address):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle(sock, address)

server = NoDelayServer(("127.0.0.1", int(sys.argv[1])), app, log=None, error_log=None, backlog=1024)
server.start()
print("READY", flush=True)
gevent.sleep(LIFETIME)
server.stop(timeout=1)
