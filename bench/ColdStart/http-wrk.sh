#!/usr/bin/env bash
# Cold-start load test of examples/HttpServer: N fresh server processes in a row, each hit by wrk the moment it
# listens (before any request has warmed anything up), each checked for a clean run:
#   - wrk got answers, and its only socket errors are timeouts (a request still waiting when the 2 s wrk
#     timeout or the run's end came is not a failure of the server);
#   - the server still answers a plain curl afterwards (a hung server does not);
#   - the server logged no error (a failed handler, a scheduler fault: it logs warnings and errors to its console).
# Usage: bench/ColdStart/http-wrk.sh [processes=20] [connections=1000] [seconds=5]
# wrk is a Debian package (apt-get install wrk); without it the script says so and exits 0.
set -uo pipefail
cd "$(dirname "$0")/../.."

processes=${1:-20}
connections=${2:-1000}
seconds=${3:-5}
port=${PORT:-18120}

# shellcheck source=../wrk-common.sh
source bench/wrk-common.sh
require_wrk
build_release examples/HttpServer
server=examples/HttpServer/bin/Release/net10.0/HttpServerExample.dll
log=$(mktemp -d)
failures=0
for run in $(seq 1 "$processes"); do
  dotnet "$server" green "$port" >"$log/server-$run.txt" 2>&1 &
  pid=$!
  # Wait until the server listens (Patch.All and start-up take a while on a loaded machine), then load it at
  # once: the first burst is the cold case. Probing with `ss` sends no request, so nothing is warmed up.
  started=$(date +%s%N)
  for _ in $(seq 1 300); do
    ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && break
    sleep 0.1
  done
  listening_ms=$((($(date +%s%N) - started) / 1000000))
  wrk -t2 -c"$connections" -d"${seconds}s" --timeout 2s "http://127.0.0.1:$port/x" >"$log/wrk-$run.txt" 2>&1
  requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$log/wrk-$run.txt")
  errors=$(sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' "$log/wrk-$run.txt")
  read -r connect read write timeout <<<"${errors:-0 0 0 0}"
  non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: \([0-9]*\).*/\1/p' "$log/wrk-$run.txt")
  rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$log/wrk-$run.txt")
  after=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/after" || true)
  logged=$(grep -cE '^(fail|crit):' "$log/server-$run.txt")
  verdict=ok
  if [ "${requests:-0}" -eq 0 ] || [ "$connect" -ne 0 ] || [ "$read" -ne 0 ] || [ "$write" -ne 0 ] || [ "${non2xx:-0}" -ne 0 ] || [ "$after" != "200" ] || [ "$logged" -ne 0 ]; then
    verdict=FAILED
    failures=$((failures + 1))
  fi
  printf 'run %2d: listening after %5s ms, %7s requests, %8s req/s, errors connect %s read %s write %s timeout %s, non-2xx %s, curl after: %s, errors logged %s  %s\n' \
    "$run" "$listening_ms" "${requests:-0}" "${rps:-0}" "$connect" "$read" "$write" "$timeout" "${non2xx:-0}" "$after" "$logged" "$verdict"
  if [ "$verdict" = FAILED ]; then
    sed 's/^/    wrk: /' "$log/wrk-$run.txt"
    sed 's/^/    server: /' "$log/server-$run.txt" | tail -n 20
  fi
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
done
rm -rf "$log"
echo "$((processes - failures)) of $processes cold processes served cleanly"
[ "$failures" -eq 0 ]
