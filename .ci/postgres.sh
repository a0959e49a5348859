# Start a throwaway PostgreSQL server for the tests, and export its URL.
#
# Source it:  . .ci/postgres.sh
# It installs Debian's postgresql package when no server is installed, creates a
# cluster in a temporary directory owned by the postgres user, starts it on a free
# local port and creates the database simplepyq_test. SIMPLEPYQ_TEST_POSTGRES_URL
# then points at it, and SIMPLEPYQ_TEST_POSTGRES_DIR names the cluster, which
# ".ci/postgres.sh stop" (or stopping by hand with pg_ctl) shuts down.

simplepyq_pg_bin() {
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$found" ] && [ -x "$found/postgres" ] && echo "$found"
}

simplepyq_pg_start() {
    local bin dir port
    bin="$(simplepyq_pg_bin || true)"
    if [ -z "$bin" ]; then
        echo "== installing PostgreSQL (Debian package)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        bin="$(simplepyq_pg_bin)"
    fi
    # The server refuses to run as root: it runs as the postgres user.
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    dir="$(mktemp -d /tmp/simplepyq-pg.XXXXXX)"
    chown postgres "$dir"
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    su postgres -s /bin/sh -c "cd / && '$bin/initdb' -D '$dir/data' -A trust -U postgres --no-sync -E UTF8" >/dev/null
    su postgres -s /bin/sh -c "cd / && '$bin/pg_ctl' -D '$dir/data' -l '$dir/log' -w start \
        -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c max_connections=200\"" >/dev/null
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres simplepyq_test
    export SIMPLEPYQ_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/simplepyq_test"
    export SIMPLEPYQ_TEST_POSTGRES_DIR="$dir"
    echo "== PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $SIMPLEPYQ_TEST_POSTGRES_URL"
}

simplepyq_pg_stop() {
    local bin
    [ -n "${SIMPLEPYQ_TEST_POSTGRES_DIR:-}" ] || return 0
    bin="$(simplepyq_pg_bin || true)"
    if [ -n "$bin" ]; then
        su postgres -s /bin/sh -c "cd / && '$bin/pg_ctl' -D '$SIMPLEPYQ_TEST_POSTGRES_DIR/data' -m fast -w stop" >/dev/null || true
    fi
    rm -rf "$SIMPLEPYQ_TEST_POSTGRES_DIR"
    unset SIMPLEPYQ_TEST_POSTGRES_URL SIMPLEPYQ_TEST_POSTGRES_DIR
}

if [ "${1:-start}" = "stop" ]; then
    simplepyq_pg_stop
else
    simplepyq_pg_start
fi
