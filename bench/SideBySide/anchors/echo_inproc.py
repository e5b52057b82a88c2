# gevent's echo with the server and 100 clients x 1000 round trips in one process, on one hub. Usage: echo_inproc.py
from gevent import monkey; monkey.patch_all()
from gevent.server import StreamServer
from anchor_util import emit
from echo_common import load, serve_connection

server = StreamServer(("127.0.0.1", 0), serve_connection, backlog=1024)
server.start()
result = load(server.server_port, 100, 1000)
server.stop()
emit(bench="echo_inproc", mode="inproc_streamserver", **result)
