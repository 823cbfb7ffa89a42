#!/usr/bin/env bash
# Make sure a PostgreSQL server answers for the tests, and export WEIR_TEST_PG_URL.
# Sourced by scripts/test. In order:
#   1. WEIR_TEST_PG_URL, if set and answering;
#   2. a server on 127.0.0.1:5432 that lets user postgres in (trust auth);
#   3. the machine's Debian cluster, started with pg_ctlcluster;
#   4. a private cluster (initdb/pg_ctl) in $HOME/.cache/weir-test-pg on port 55432,
#      installing Debian's postgresql package first if the binaries are missing.
# WEIR_TEST_PG_PRIVATE=1 skips 2 and 3 (to exercise the private cluster).

pg_answers() { # URL
  if command -v psql >/dev/null 2>&1; then
    psql "$1" -Atqc 'select 1' >/dev/null 2>&1
  else
    local hostport=${1#*@}; hostport=${hostport%%/*}
    (exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}") 2>/dev/null
  fi
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else return 1; fi
}

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)"
}

ensure_postgres() {
  if [ -n "${WEIR_TEST_PG_URL:-}" ] && pg_answers "$WEIR_TEST_PG_URL"; then
    echo "postgres: using WEIR_TEST_PG_URL"; return 0
  fi
  local default=postgres://postgres@127.0.0.1:5432/postgres
  if [ "${WEIR_TEST_PG_PRIVATE:-}" = 1 ]; then
    :
  elif pg_answers "$default"; then
    export WEIR_TEST_PG_URL=$default; echo "postgres: using the server on 127.0.0.1:5432"; return 0
  fi
  if [ "${WEIR_TEST_PG_PRIVATE:-}" != 1 ] && command -v pg_ctlcluster >/dev/null 2>&1 && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
    for v in $(ls /etc/postgresql); do
      as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start >/dev/null 2>&1 || true
    done
    for _ in $(seq 1 30); do
      if pg_answers "$default"; then
        export WEIR_TEST_PG_URL=$default; echo "postgres: started the Debian cluster on 5432"; return 0
      fi
      sleep 1
    done
  fi
  if [ -z "$(pg_bindir)" ]; then
    echo "postgres: installing Debian's postgresql package"
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
  fi
  local bin; bin=$(pg_bindir)
  if [ -z "$bin" ]; then echo "postgres: cannot find or install PostgreSQL's server binaries" >&2; return 1; fi
  local data=${WEIR_TEST_PG_DIR:-$HOME/.cache/weir-test-pg} port=55432 run=()
  local url=postgres://postgres@127.0.0.1:$port/postgres
  if pg_answers "$url"; then export WEIR_TEST_PG_URL=$url; echo "postgres: using the private cluster on $port"; return 0; fi
  # PostgreSQL refuses to run as root: run it as the postgres user in a folder it can reach.
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    data=/var/tmp/weir-test-pg
    mkdir -p "$data" && chown postgres "$data" && chmod 700 "$data"
    run=(runuser -u postgres --)
  fi
  mkdir -p "$data"
  if [ ! -f "$data/PG_VERSION" ]; then
    (cd / && "${run[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null)
  fi
  (cd / && "${run[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c max_connections=200" start >/dev/null)
  export WEIR_TEST_PG_URL=$url
  echo "postgres: started a private cluster in $data on port $port"
}

ensure_postgres
