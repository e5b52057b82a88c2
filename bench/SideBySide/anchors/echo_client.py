# gevent's echo client: CLIENTS greenlets, each ROUNDS round trips of 64 bytes against 127.0.0.1:PORT, as plain
# blocking socket code under monkey.patch_all(). Usage: echo_client.py PORT [CLIENTS] [ROUNDS]   (100, 1000)
from gevent import monkey; monkey.patch_all()
import sys
from anchor_util import emit
from echo_common import load

port = int(sys.argv[1])
clients = int(sys.argv[2]) if len(sys.argv) > 2 else 100
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
emit(bench="echo_client", **load(port, clients, rounds))
