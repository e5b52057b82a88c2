# gevent's side of the SideBySide HTTP workload: pywsgi serving a blocking-style handler under monkey.patch_all(),
# the gevent counterpart of GreenRuntime's HttpServer under Patch.All(). Usage: http_server.py PORT
# Prints READY once listening; exits by itself after LIFETIME seconds (every loop of the harness is bounded).
import sys
from gevent import monkey; monkey.patch_all()
import time
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

server = WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None, error_log=None, backlog=1024)
server.start()
print("READY", flush=True)
gevent.sleep(LIFETIME)
server.stop(timeout=1)
