#!/usr/bin/env bash
# The real servers tests/DropIn.Tests runs its client libraries against: PostgreSQL, Redis and MariaDB, each
# started on 127.0.0.1 on a free port with its data in one temporary directory, and stopped (directory
# removed) afterwards.
#
#   source tests/DropIn.Tests/servers.sh && dropin_servers_start && ... && dropin_servers_stop   (.ci/run)
#   tests/DropIn.Tests/servers.sh run dotnet test tests/DropIn.Tests                          (by hand)
#
# dropin_servers_start installs the Debian packages it lacks (postgresql, redis-server, mariadb-server; needs
# root), starts the three servers and exports what the tests read:
#   DROPIN_POSTGRES, DROPIN_MYSQL  ADO.NET connection strings
#   DROPIN_REDIS                   a StackExchange.Redis configuration string
#   DROPIN_SERVERS_REQUIRED=1      a server the tests cannot reach is a failure, not an ignored test
# Servers run as unprivileged users where they refuse root (postgres) or should not need it (mariadbd).

# A port nothing listens on, below the kernel's range for outgoing connections' local ports (a port in that
# range can be in use by some connection without anything listening on it, and then the server cannot bind it).
dropin_free_port() {
  local port low=32768
  [ -r /proc/sys/net/ipv4/ip_local_port_range ] && read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  [ "$low" -gt 12000 ] || low=32768
  for _ in $(seq 1 50); do
    port=$((10000 + (RANDOM * 32768 + RANDOM) % (low - 10000)))
    # Nothing answers a connect on it: free (a race with another process is possible but harmless: start fails).
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
  done
  return 1
}

dropin_wait_port() { # port, seconds
  local i
  for i in $(seq 1 $(($2 * 10))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

dropin_servers_install() {
  local missing=()
  [ -x /usr/lib/postgresql/15/bin/postgres ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server mariadb-client)
  if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1 \
        || echo "dropin: could not install ${missing[*]}" >&2
    else
      echo "dropin: missing ${missing[*]} and no apt-get" >&2
    fi
  fi
}

# Runs "$@" as the given user when we are root (the servers' data directories belong to it), else as ourselves.
dropin_as() {
  local user=$1; shift
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

# The same in the background; $! is then the server's (or runuser's) own pid, not a subshell's.
dropin_start_as() {
  local user=$1; shift
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$user" -- "$@" & else "$@" & fi
}

# PostgreSQL: refuses to run as root, so initdb and postgres run as the postgres user (when we are root).
dropin_start_postgres() { # port
  local port=$1 pgbin pguser=postgres dir="$DROPIN_DIR/pg"
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$pgbin" ] || { echo "dropin: no PostgreSQL installed" >&2; return 1; }
  [ "$(id -u)" -eq 0 ] || pguser=$(id -un)
  if [ ! -d "$dir/data" ]; then
    mkdir -p "$dir" && chown "$pguser" "$dir" 2>/dev/null
    dropin_as "$pguser" "$pgbin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1       || { echo "dropin: initdb failed: $(tail -n 3 "$dir/initdb.log")" >&2; rm -rf "$dir/data"; return 1; }
  fi
  dropin_start_as "$pguser" "$pgbin/postgres" -D "$dir/data" -h 127.0.0.1 -p "$port" -k "$dir" \
    -c fsync=off -c max_connections=200 >"$dir/server.log" 2>&1
  echo $! >"$DROPIN_DIR/pg.pid"
  dropin_wait_port "$port" 30 || return 1
  export DROPIN_POSTGRES="Host=127.0.0.1;Port=$port;Username=postgres;Database=postgres;Pooling=true;Maximum Pool Size=100"
}

# Redis: no persistence, loopback only.
dropin_start_redis() { # port
  local port=$1 dir="$DROPIN_DIR/redis"
  command -v redis-server >/dev/null 2>&1 || { echo "dropin: no redis-server installed" >&2; return 1; }
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save "" --appendonly no \
    --daemonize no --logfile "$dir/server.log" >/dev/null 2>&1 &
  echo $! >"$DROPIN_DIR/redis.pid"
  dropin_wait_port "$port" 30 || return 1
  export DROPIN_REDIS="127.0.0.1:$port"
}

# MariaDB: a fresh data directory owned by the mysql user; a password user for TCP connections is created
# through the server's socket (root authenticates there by its OS identity).
dropin_start_mariadb() { # port
  local port=$1 myuser=mysql dir="$DROPIN_DIR/mysql"
  command -v mariadbd >/dev/null 2>&1 || { echo "dropin: no mariadbd installed" >&2; return 1; }
  [ "$(id -u)" -eq 0 ] || myuser=$(id -un)
  if [ ! -d "$dir/data" ]; then
    mkdir -p "$dir" && chown "$myuser" "$dir" 2>/dev/null
    mariadb-install-db --no-defaults --user="$myuser" --datadir="$dir/data" \
        --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1 \
      || { echo "dropin: mariadb-install-db failed: $(tail -n 3 "$dir/install.log")" >&2; rm -rf "$dir/data"; return 1; }
  fi
  mariadbd --no-defaults --user="$myuser" --datadir="$dir/data" --bind-address=127.0.0.1 \
    --port="$port" --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" \
    --skip-name-resolve --innodb-flush-log-at-trx-commit=0 --max-connections=200 \
    >"$dir/server.log" 2>&1 &
  echo $! >"$DROPIN_DIR/mysql.pid"
  dropin_wait_port "$port" 60 || return 1
  mariadb --no-defaults --socket="$dir/mysqld.sock" -uroot -e \
      "CREATE USER IF NOT EXISTS 'dropin'@'127.0.0.1' IDENTIFIED BY 'dropin'; GRANT ALL ON *.* TO 'dropin'@'127.0.0.1'; CREATE DATABASE IF NOT EXISTS dropin;" \
      >>"$dir/install.log" 2>&1 || { echo "dropin: could not create the test user: $(tail -n 3 "$dir/install.log")" >&2; return 1; }
  export DROPIN_MYSQL="Server=127.0.0.1;Port=$port;User ID=dropin;Password=dropin;Database=dropin;Pooling=true;Maximum Pool Size=100"
}

# Starts one server on a free port, up to 3 times: a port that looked free can still be taken by the time the
# server binds it (another process's connection or listener), which shows as a server that never listens.
dropin_start_one() { # name start-function log
  local name=$1 start=$2 log=$3 port attempt pidfile="$DROPIN_DIR/$4.pid"
  for attempt in 1 2 3; do
    port=$(dropin_free_port) || break
    if "$start" "$port"; then return 0; fi
    echo "dropin: $name did not start on port $port (attempt $attempt); its log ends:" >&2
    tail -n 5 "$log" 2>/dev/null | sed 's/^/  /' >&2
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null; sleep 1; rm -f "$pidfile"; fi
  done
  return 1
}

dropin_servers_start() {
  export DROPIN_SERVERS_REQUIRED=1
  dropin_servers_install
  DROPIN_DIR=$(mktemp -d /tmp/dropin-servers.XXXXXX)
  chmod 755 "$DROPIN_DIR"
  export DROPIN_DIR
  local ok=0
  dropin_start_one PostgreSQL dropin_start_postgres "$DROPIN_DIR/pg/server.log" pg && ok=$((ok + 1))
  dropin_start_one Redis dropin_start_redis "$DROPIN_DIR/redis/server.log" redis && ok=$((ok + 1))
  dropin_start_one MariaDB dropin_start_mariadb "$DROPIN_DIR/mysql/server.log" mysql && ok=$((ok + 1))
  echo "dropin: $ok of 3 servers started in $DROPIN_DIR"
}

dropin_servers_stop() {
  [ -n "${DROPIN_DIR:-}" ] && [ -d "$DROPIN_DIR" ] || return 0
  local pids=() pid f
  # The servers' own pid files (postgres's first line is the postmaster), then the processes we started
  # (runuser for postgres, which exits when the server does).
  for f in "$DROPIN_DIR/pg/data/postmaster.pid" "$DROPIN_DIR/mysql/mysqld.pid" "$DROPIN_DIR"/*.pid; do
    [ -f "$f" ] && pid=$(head -n 1 "$f") && [ -n "$pid" ] && pids+=("$pid")
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  rm -rf "$DROPIN_DIR"
  unset DROPIN_DIR
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -u
  case "${1:-}" in
    run)
      shift
      trap dropin_servers_stop EXIT
      dropin_servers_start
      "$@"
      ;;
    *)
      echo "usage: $0 run COMMAND...   (or source it and call dropin_servers_start / dropin_servers_stop)" >&2
      exit 2
      ;;
  esac
fi
