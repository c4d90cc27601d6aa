#!/usr/bin/env bash
# Installs what elevate's tests need (idempotent) and runs every check and
# test: formatting, clippy, unit tests, and integration tests against real
# PostgreSQL clusters that the tests start and stop themselves, with
# elevate's own store on SQLite and then on PostgreSQL.
#
#   ELEVATE_TEST_ENGINES="sqlite"     only the SQLite pass
#   ELEVATE_TEST_ENGINES="postgres"   only the PostgreSQL pass
#   (default "sqlite postgres")
set -euo pipefail
cd "$(dirname "$0")/.."

# Build artefacts live outside the clone so repeated runs (and CI) reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/elevate-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# PostgreSQL server binaries (initdb, pg_ctl, psql) for the throwaway
# clusters; runuser (util-linux) to run them as the postgres user when root.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "== installing PostgreSQL"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

# aiosmtpd (PyPI), the SMTP server the e-mail tests deliver to
# (crates/testkit/src/smtp.rs), for the Python they run it with.
# PIP_BREAK_SYSTEM_PACKAGES: a Debian python3 refuses pip otherwise.
smtp_python=${ELEVATE_PYTHON:-python3}
if ! "$smtp_python" -c 'import aiosmtpd' >/dev/null 2>&1; then
  echo "== installing aiosmtpd"
  PIP_BREAK_SYSTEM_PACKAGES=1 "$smtp_python" -m pip install --quiet --disable-pip-version-check "aiosmtpd==1.4.6"
fi

# moto (the AWS API emulator the aws-sts tests start, crates/testkit/src/moto.rs)
# and the AWS CLI (the credential_process test runs it).
if ! "$smtp_python" -c 'import moto.server' >/dev/null 2>&1; then
  echo "== installing moto"
  PIP_BREAK_SYSTEM_PACKAGES=1 "$smtp_python" -m pip install --quiet --disable-pip-version-check 'moto[server]'
fi
if ! command -v aws >/dev/null 2>&1; then
  echo "== installing the AWS CLI"
  PIP_BREAK_SYSTEM_PACKAGES=1 "$smtp_python" -m pip install --quiet --disable-pip-version-check awscli
fi

# The OpenID Connect provider the sign-in tests start (testpeers/oidc:
# oidc-provider from npm, pinned by package-lock.json); reinstalled when the
# lock file is newer than node_modules. Needs Node.js 20.12 or later, which
# Debian 12's own nodejs (18) is not.
oidc_peer=testpeers/oidc
if [ ! -d "$oidc_peer/node_modules" ] || [ "$oidc_peer/package-lock.json" -nt "$oidc_peer/node_modules" ]; then
  if ! command -v npm >/dev/null; then
    echo "npm not found: install Node.js 20.12 or later for the OpenID provider in $oidc_peer" >&2
    exit 1
  fi
  echo "== installing the OpenID provider's npm packages"
  (cd "$oidc_peer" && npm ci --no-audit --no-fund --loglevel=error)
  touch "$oidc_peer/node_modules"
fi

# Debian's Chromium for the end-to-end browser test (web_e2e), driven by
# playwright-core from e2e/ (pinned by its package-lock.json; it never
# downloads a browser of its own), and a Japanese font so the screenshots
# show the test's Japanese justification instead of empty boxes.
if [ ! -x /usr/bin/chromium ] || ! dpkg -s fonts-ipafont-gothic >/dev/null 2>&1; then
  echo "== installing Chromium"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-ipafont-gothic >/dev/null
fi
e2e=e2e
if [ ! -d "$e2e/node_modules" ] || [ "$e2e/package-lock.json" -nt "$e2e/node_modules" ]; then
  echo "== installing the browser test's npm packages"
  (cd "$e2e" && npm ci --no-audit --no-fund --loglevel=error)
  touch "$e2e/node_modules"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

# The suite runs once per store engine (ELEVATE_TEST_ENGINES, default both):
# on SQLite, each test's store is a file in its own temporary directory; on
# PostgreSQL, a database of its own on a throwaway server started here (see
# crates/testkit/src/database.rs; ELEVATE_TEST_DATABASE tells the tests).
engines=${ELEVATE_TEST_ENGINES:-sqlite postgres}
for engine in $engines; do
  case "$engine" in
    sqlite | postgres) ;;
    *)
      echo "ELEVATE_TEST_ENGINES: unknown engine '$engine' (expected sqlite and/or postgres)" >&2
      exit 1
      ;;
  esac
done

logs=$(mktemp -d)
log="$logs/all"
touch "$log"
store_pg_dir=""
store_pg_bin=""
store_pg_as=()

# Stops and deletes the store's PostgreSQL server, if one was started.
stop_store_postgres() {
  if [ -n "$store_pg_dir" ]; then
    (cd "$store_pg_dir" && "${store_pg_as[@]}" "$store_pg_bin/pg_ctl" -D "$store_pg_dir/data" -w -m immediate stop) >/dev/null 2>&1 || true
    rm -rf "$store_pg_dir"
    store_pg_dir=""
  fi
}
cleanup() {
  stop_store_postgres
  rm -rf "$logs"
}
trap cleanup EXIT

# Starts a throwaway PostgreSQL server for the store, as testkit's PgCluster
# does: trust authentication, superuser postgres, 127.0.0.1 and a free port
# only, no durability (a test run needs none). Run as the postgres user when
# we are root (PostgreSQL refuses root). Sets store_pg_port.
start_store_postgres() {
  if [ -n "${ELEVATE_PG_BINDIR:-}" ]; then
    store_pg_bin=$ELEVATE_PG_BINDIR
  else
    store_pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  store_pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/elevate-store-pg.XXXXXX")
  store_pg_as=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$store_pg_dir"
    store_pg_as=(runuser -u postgres --)
  fi
  # From the server's own directory, so the postgres user can read its
  # working directory.
  (cd "$store_pg_dir" && "${store_pg_as[@]}" "$store_pg_bin/initdb" -D "$store_pg_dir/data" \
    -A trust -U postgres --no-sync --no-instructions -E UTF8 --locale C >/dev/null)
  # Another process may take the free port before the server binds it.
  local attempt
  for attempt in 1 2 3 4 5; do
    store_pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if (cd "$store_pg_dir" && "${store_pg_as[@]}" "$store_pg_bin/pg_ctl" -D "$store_pg_dir/data" -w \
      -l "$store_pg_dir/log" \
      -o "-p $store_pg_port -k $store_pg_dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      start >/dev/null); then
      return 0
    fi
    if ! grep -q "Address already in use" "$store_pg_dir/log" 2>/dev/null; then
      break
    fi
  done
  echo "the store's PostgreSQL server did not start; its log:" >&2
  cat "$store_pg_dir/log" >&2 || true
  return 1
}

# Runs the suite on one engine: everything but the browser test, then the
# browser test on its own (Chromium's processes would otherwise compete with
# the rest of the suite's servers and peers for the machine's cores for a
# minute, and slow them past their start-up waits). Output goes to
# "$logs/$engine" and "$log". Returns non-zero if anything failed.
run_suite() {
  local engine=$1 name=$2 status=0
  touch "$logs/$engine"
  echo "== cargo test ($name store)"
  cargo test --workspace --no-fail-fast -- --skip web_e2e 2>&1 | tee -a "$log" "$logs/$engine" || status=1
  echo "== browser test ($name store)"
  cargo test -p elevate --test it web_e2e 2>&1 | tee -a "$log" "$logs/$engine" || status=1
  return $status
}

# Prints "passed, failed" totals of the cargo test results in a log.
count_results() {
  awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$1"
}

failed_engines=""
for engine in $engines; do
  case "$engine" in
    sqlite)
      ELEVATE_TEST_DATABASE=sqlite run_suite sqlite SQLite || failed_engines="$failed_engines sqlite"
      ;;
    postgres)
      echo "== starting a PostgreSQL server for the store"
      start_store_postgres
      echo "   postgres://postgres@127.0.0.1:$store_pg_port/postgres (one database per test)"
      if ! ELEVATE_TEST_DATABASE="postgres://postgres@127.0.0.1:$store_pg_port/postgres" \
        run_suite postgres PostgreSQL; then
        failed_engines="$failed_engines postgres"
        echo "== the store's PostgreSQL server log (errors, last 40)"
        grep -E "ERROR|FATAL|PANIC" "$store_pg_dir/log" | tail -n 40 || true
      fi
      stop_store_postgres
      ;;
  esac
done
for engine in $engines; do
  echo "== $engine store: $(count_results "$logs/$engine")"
done
if [ -n "$failed_engines" ]; then
  echo "== tests failed on:$failed_engines" >&2
  count_results "$log"
  exit 1
fi

# Hostile input: schemathesis against the served OpenAPI document (installs
# itself into a venv under ~/.cache on first use).
echo "== API fuzzing"
bash scripts/fuzz-api.sh

# The long variant (ELEVATE_LONG_TESTS=1, which also makes the crash test
# kill 300 times): coverage-guided fuzzing of the config and value parsers.
if [ "${ELEVATE_LONG_TESTS:-}" = 1 ]; then
  echo "== parser fuzzing"
  bash scripts/fuzz-parsers.sh
fi

# One closing line that counts every test run above, on every engine.
count_results "$log"
