#!/usr/bin/env bash
# Installs what elevate's tests need (idempotent) and runs every check and
# test: formatting, clippy, unit tests, and integration tests against real
# PostgreSQL clusters that the tests start and stop themselves.
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

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The browser test runs on its own afterwards: Chromium's processes would
# otherwise compete with the rest of the suite's servers and peers for the
# machine's cores for a minute, and slow them past their start-up waits.
cargo test --workspace -- --skip web_e2e 2>&1 | tee "$log"
echo "== browser test"
cargo test -p elevate --test it web_e2e 2>&1 | tee -a "$log"

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

# One closing line that counts every test run above.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
