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

dropin_free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
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

dropin_servers_start() {
  export DROPIN_SERVERS_REQUIRED=1
  dropin_servers_install
  DROPIN_DIR=$(mktemp -d /tmp/dropin-servers.XXXXXX)
  chmod 755 "$DROPIN_DIR"
  export DROPIN_DIR
  local ok=0

  # PostgreSQL: refuses to run as root, so initdb and postgres run as the postgres user (when we are root).
  local pgbin pguser=postgres port
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ "$(id -u)" -eq 0 ] || pguser=$(id -un)
  if [ -n "$pgbin" ] && port=$(dropin_free_port); then
    mkdir -p "$DROPIN_DIR/pg" && chown "$pguser" "$DROPIN_DIR/pg" 2>/dev/null
    if dropin_as "$pguser" "$pgbin/initdb" -D "$DROPIN_DIR/pg/data" -U postgres -A trust --no-sync >"$DROPIN_DIR/pg/initdb.log" 2>&1; then
      dropin_start_as "$pguser" "$pgbin/postgres" -D "$DROPIN_DIR/pg/data" -h 127.0.0.1 -p "$port" -k "$DROPIN_DIR/pg" \
        -c fsync=off -c max_connections=200 >"$DROPIN_DIR/pg/server.log" 2>&1
      echo $! >"$DROPIN_DIR/pg.pid"
      if dropin_wait_port "$port" 30; then
        export DROPIN_POSTGRES="Host=127.0.0.1;Port=$port;Username=postgres;Database=postgres;Pooling=true;Maximum Pool Size=100"
        ok=$((ok + 1))
      else
        echo "dropin: postgres did not start (log: $DROPIN_DIR/pg/server.log)" >&2
      fi
    else
      echo "dropin: initdb failed: $(tail -n 3 "$DROPIN_DIR/pg/initdb.log")" >&2
    fi
  fi

  # Redis: no persistence, loopback only.
  if command -v redis-server >/dev/null 2>&1 && port=$(dropin_free_port); then
    mkdir -p "$DROPIN_DIR/redis"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$DROPIN_DIR/redis" --save "" --appendonly no \
      --daemonize no --logfile "$DROPIN_DIR/redis/server.log" >/dev/null 2>&1 &
    echo $! >"$DROPIN_DIR/redis.pid"
    if dropin_wait_port "$port" 30; then
      export DROPIN_REDIS="127.0.0.1:$port"
      ok=$((ok + 1))
    else
      echo "dropin: redis-server did not start" >&2
    fi
  fi

  # MariaDB: a fresh data directory owned by the mysql user; a password user for TCP connections is created
  # through the server's socket (root authenticates there by its OS identity).
  local myuser=mysql
  [ "$(id -u)" -eq 0 ] || myuser=$(id -un)
  if command -v mariadbd >/dev/null 2>&1 && port=$(dropin_free_port); then
    mkdir -p "$DROPIN_DIR/mysql" && chown "$myuser" "$DROPIN_DIR/mysql" 2>/dev/null
    if mariadb-install-db --no-defaults --user="$myuser" --datadir="$DROPIN_DIR/mysql/data" \
        --auth-root-authentication-method=socket --skip-test-db >"$DROPIN_DIR/mysql/install.log" 2>&1; then
      mariadbd --no-defaults --user="$myuser" --datadir="$DROPIN_DIR/mysql/data" --bind-address=127.0.0.1 \
        --port="$port" --socket="$DROPIN_DIR/mysql/mysqld.sock" --pid-file="$DROPIN_DIR/mysql/mysqld.pid" \
        --skip-name-resolve --innodb-flush-log-at-trx-commit=0 --max-connections=200 \
        >"$DROPIN_DIR/mysql/server.log" 2>&1 &
      echo $! >"$DROPIN_DIR/mysql.pid"
      if dropin_wait_port "$port" 60 && mariadb --no-defaults --socket="$DROPIN_DIR/mysql/mysqld.sock" -uroot -e \
          "CREATE USER 'dropin'@'127.0.0.1' IDENTIFIED BY 'dropin'; GRANT ALL ON *.* TO 'dropin'@'127.0.0.1'; CREATE DATABASE dropin;" \
          >>"$DROPIN_DIR/mysql/install.log" 2>&1; then
        export DROPIN_MYSQL="Server=127.0.0.1;Port=$port;User ID=dropin;Password=dropin;Database=dropin;Pooling=true;Maximum Pool Size=100"
        ok=$((ok + 1))
      else
        echo "dropin: mariadbd did not start (log: $DROPIN_DIR/mysql/server.log)" >&2
      fi
    else
      echo "dropin: mariadb-install-db failed: $(tail -n 3 "$DROPIN_DIR/mysql/install.log")" >&2
    fi
  fi
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
