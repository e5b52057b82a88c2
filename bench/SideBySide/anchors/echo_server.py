# gevent's echo server for the SideBySide echo rows and sweeps. Usage: echo_server.py MODE PORT
#   streamserver  gevent.server.StreamServer, a greenlet per connection
#   socketserver  the standard library's ThreadingTCPServer under monkey.patch_all() (blocking code made cooperative)
# Prints READY once listening on 127.0.0.1:PORT; exits by itself after two minutes.
from gevent import monkey; monkey.patch_all()
import sys, time
import gevent
from echo_common import serve_connection

LIFETIME_S = 120
mode, port = sys.argv[1], int(sys.argv[2])

if mode == "streamserver":
    from gevent.server import StreamServer
    StreamServer(("127.0.0.1", port), serve_connection, backlog=1024).start()
elif mode == "socketserver":
    import socketserver, threading

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            serve_connection(self.request, self.client_address)

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 1024

    threading.Thread(target=Server(("127.0.0.1", port), Handler).serve_forever, daemon=True).start()
else:
    sys.exit("unknown mode " + mode + ": streamserver | socketserver")
print("READY", flush=True)
time.sleep(LIFETIME_S)  # patched: the hub serves connections meanwhile
