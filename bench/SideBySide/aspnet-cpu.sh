#!/usr/bin/env bash
# The cost of one ASP.NET Core request, three ways: throughput, p99, and the CPU time and context switches each request
# costs, read from /proc around a wrk run (the numbers docs/aspnetcore.md and docs/BENCHMARKS.md quote).
#
# For each run: the upstream (for the upstream endpoint) and the server start as fresh processes of the harness
# (SideBySide.dll worker aspnet_upstream / aspnet_server); wrk loads the server for the warm-up, unrecorded, then for
# 10 s, around which the script reads the server's and the upstream's CPU time (/proc/PID/stat) and the machine's
# context switches (/proc/stat). Ways are run alternately, RUNS times each, since this kind of VM drifts by ±30 %
# within minutes.
#
# Usage: bench/SideBySide/aspnet-cpu.sh [endpoint=upstream] [ways="greenlets async"] [runs=3]
#   endpoint: upstream (GetStringAsync(upstream).Result, the upstream answering after 20 ms), sleep (Thread.Sleep(20)),
#             hello (no wait)
#   ways:     any of greenlets (UseGreenlets), async (the endpoint rewritten async), plain (the blocking endpoint on
#             plain Kestrel)
# Environment: CONNS (wrk's connections, 1000), WARM (warm-up seconds, 10), SERVER_ENV (variables for the server
#             process only, such as "DOTNET_ThreadPool_UnfairSemaphoreSpinLimit=0").
# Output, one line per run: way, req/s, p99, server µs of CPU per request, upstream µs per request, context switches of
# the whole machine per request (the load client's and the upstream's included).
# wrk is a Debian package (apt-get install wrk); without it the script says so and exits 0.
set -uo pipefail
cd "$(dirname "$0")/../.."

endpoint=${1:-upstream}
ways=${2:-greenlets async}
runs=${3:-3}
conns=${CONNS:-1000}
warm=${WARM:-10}

# shellcheck source=../wrk-common.sh
source bench/wrk-common.sh
require_wrk
build_release bench/SideBySide
harness=bench/SideBySide/bin/Release/net10.0/SideBySide.dll
log=$(mktemp -d)
ticks=$(getconf CLK_TCK)
upstream_port=${UPSTREAM_PORT:-18440}
port=${PORT:-18441}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
switches() { awk '/^ctxt/ {print $2}' /proc/stat; }
wait_ready() { for _ in $(seq 1 300); do grep -q READY "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

for run in $(seq 1 "$runs"); do
  for way in $ways; do
    upstream_pid=
    if [ "$endpoint" = upstream ]; then
      dotnet "$harness" worker aspnet_upstream "$upstream_port" >"$log/upstream.txt" 2>&1 &
      upstream_pid=$!
      wait_ready "$log/upstream.txt" || { echo "the upstream did not start"; kill "$upstream_pid"; exit 1; }
    fi
    # shellcheck disable=SC2086 # SERVER_ENV is a list of NAME=value words
    env ${SERVER_ENV:-} dotnet "$harness" worker aspnet_server "$port" "$way" "$endpoint" "$upstream_port" >"$log/server.txt" 2>&1 &
    server_pid=$!
    wait_ready "$log/server.txt" || { echo "the server did not start: $(tail -3 "$log/server.txt")"; kill "$server_pid" $upstream_pid; exit 1; }
    wrk -t2 -c"$conns" -d"${warm}s" "http://127.0.0.1:$port/bench" >/dev/null 2>&1
    server0=$(cpu_ticks "$server_pid"); upstream0=$([ -n "$upstream_pid" ] && cpu_ticks "$upstream_pid" || echo 0); switches0=$(switches)
    wrk -t2 -c"$conns" -d10s --latency "http://127.0.0.1:$port/bench" >"$log/wrk.txt" 2>&1
    server1=$(cpu_ticks "$server_pid"); upstream1=$([ -n "$upstream_pid" ] && cpu_ticks "$upstream_pid" || echo 0); switches1=$(switches)
    kill "$server_pid" $upstream_pid 2>/dev/null
    wait 2>/dev/null
    requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$log/wrk.txt")
    if [ -z "$requests" ] || [ "$requests" -eq 0 ]; then
      echo "$way: no requests answered: $(tail -3 "$log/wrk.txt")"
      continue
    fi
    rate=$(awk '/Requests\/sec/ {print $2}' "$log/wrk.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$log/wrk.txt")
    awk -v way="$way" -v rate="$rate" -v p99="$p99" -v n="$requests" -v hz="$ticks" \
      -v s="$((server1 - server0))" -v u="$((upstream1 - upstream0))" -v c="$((switches1 - switches0))" \
      'BEGIN { printf "%s: %s req/s, p99 %s, server %.0f µs/request, upstream %.0f µs/request, %.1f context switches/request (machine)\n",
               way, rate, p99, s * 1e6 / hz / n, u * 1e6 / hz / n, c / n }'
  done
done
rm -rf "$log"
