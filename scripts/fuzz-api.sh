#!/usr/bin/env bash
# Hostile input: fuzz the API with schemathesis against the OpenAPI document
# the server itself serves (/api/v1/openapi.json). Any 5xx, any response that
# does not match the document (status code, content type, headers, body
# schema) fails the run.
#
#   scripts/fuzz-api.sh            # alice, bob and dave; about a minute
#   FUZZ_USERS=alice scripts/fuzz-api.sh
#
# Knobs (environment):
#   ELEVATE_VENV          Python venv for schemathesis  (~/.cache/elevate-venv)
#   CARGO_TARGET_DIR      cargo target dir              (~/.cache/elevate-target)
#   FUZZ_USERS            dev users to fuzz as          (alice bob dave)
#   FUZZ_MAX_EXAMPLES     test cases per operation      (50)
#   FUZZ_SEED             hypothesis seed               (20261124)
#   FUZZ_RUN_TIMEOUT      hard bound per user, seconds  (75)
#   FUZZ_CHECKS           schemathesis checks           (see CHECKS below)
#   FUZZ_KEEP=1           keep the work dir (server log, reports)
#
# Idempotent: the venv and the build are reused when they are current; every
# run gets a fresh database, port and work directory. Exits non-zero if any
# check fails, after a one-line summary.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCHEMATHESIS_VERSION=4.32.5
VENV=${ELEVATE_VENV:-$HOME/.cache/elevate-venv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/elevate-target}
USERS=${FUZZ_USERS:-alice bob dave}
MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-50}
SEED=${FUZZ_SEED:-20261124}
RUN_TIMEOUT=${FUZZ_RUN_TIMEOUT:-75}
# What "no 5xx and no schema violations" means in schemathesis' terms.
# positive_data_acceptance is left out: a schema-valid body naming an unknown
# target or a request that is not pending is rightly refused with 4xx.
CHECKS=${FUZZ_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,ignored_auth,unsupported_method,use_after_free,ensure_resource_availability}

say() { printf 'fuzz-api: %s\n' "$*" >&2; }

# ---- schemathesis -----------------------------------------------------------
if [[ "$("$VENV/bin/schemathesis" --version 2>/dev/null || true)" != *"version $SCHEMATHESIS_VERSION"* ]]; then
    say "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
ST="$VENV/bin/schemathesis"

# ---- elevate ------------------------------------------------------------------
say "building elevate"
(cd "$ROOT" && cargo build --quiet -p elevate)
BIN="$CARGO_TARGET_DIR/debug/elevate"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/elevate-fuzz.XXXXXX")
SERVER_PID=
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ "${FUZZ_KEEP:-0}" == 1 ]]; then
        say "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A free port can be taken between asking and binding: try a few.
for attempt in 1 2 3; do
    PORT=$(free_port)
    BASE="http://127.0.0.1:$PORT"
    "$BIN" serve --dev --listen "127.0.0.1:$PORT" --database "sqlite://$WORK/fuzz.db" \
        >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        if curl -fsS -o /dev/null --max-time 1 "$BASE/healthz" 2>/dev/null; then
            break 2
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    say "server did not come up on port $PORT (attempt $attempt):"
    tail -n 5 "$WORK/server.log" >&2 || true
done
if [[ -z "$SERVER_PID" ]]; then
    say "FAIL: could not start elevate serve --dev"
    exit 2
fi
say "elevate --dev on $BASE (log: $WORK/server.log)"

# Real requests in every state worth reaching, so operations on an id get
# past 404 part of the time: schemathesis draws path ids half the time from
# these (see the config below), the other half it makes its own up.
post() { # USER PATH BODY -> response body
    curl -fsS --max-time 5 -X POST "$BASE$2" -H "Authorization: Bearer dev-$1" \
        -H 'Content-Type: application/json' -d "$3"
}
create() { # RESOURCE ROLE [EXTRA JSON FIELDS] -> id
    post alice /api/v1/requests \
        "{\"target\":\"demo-db\",\"resource\":\"$1\",\"role\":\"$2\",\"duration\":\"30m\",\"reason\":\"fuzz seed\"${3:-}}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}
ids=()
for _ in 1 2 3; do
    ids+=("$(create orders orders_reader)")                      # pending, quorum 1
    ids+=("$(create billing orders_writer)")                     # pending
    ids+=("$(create orders db_admin ',"ticket":"CHG-1"')")       # pending, quorum 2
done
active=$(create orders orders_writer)
post bob "/api/v1/requests/$active/approve" '{}' >/dev/null      # approved -> active
ids+=("$active")
ids+=("$(create orders-staging orders_reader)")                  # no approval needed
ids+=("$(create billing orders_reader ',"break_glass":true')")   # break-glass, to acknowledge
id_list=$(printf '"%s", ' "${ids[@]}")
cat >"$WORK/schemathesis.toml" <<EOF
# No state carried between runs: same seed, same run.
[cache]
enabled = false

[dictionaries.request-ids]
values = [${id_list%, }]

[parameters]
"path.id" = { dictionary = "request-ids", probability = 0.5 }
EOF

# ---- fuzz -------------------------------------------------------------------
cd "$WORK" # anything schemathesis writes stays in the work dir
status=0
summary=()
for user in $USERS; do
    report="$WORK/report-$user"
    say "schemathesis as $user (seed $SEED, $MAX_EXAMPLES examples per operation, ≤ ${RUN_TIMEOUT}s)"
    # One worker: with several threads, schemathesis' coverage phase trips
    # CPython 3.11.7's "AST constructor recursion depth mismatch" bug
    # (python/cpython#106905) and reports runtime errors that are not ours.
    set +e
    timeout --kill-after=5 "$RUN_TIMEOUT" "$ST" --config-file "$WORK/schemathesis.toml" \
        run "$BASE/api/v1/openapi.json" \
        --header "Authorization: Bearer dev-$user" \
        --checks "$CHECKS" \
        --max-examples "$MAX_EXAMPLES" \
        --seed "$SEED" \
        --generation-database none \
        --workers 1 \
        --request-timeout 10 \
        --no-color \
        --output-truncate false \
        --report junit --report-dir "$report" \
        >"$WORK/schemathesis-$user.log" 2>&1
    rc=$?
    set -e
    cat "$WORK/schemathesis-$user.log"
    case $rc in
        0) summary+=("$user: ok") ;;
        124 | 137)
            status=1
            summary+=("$user: TIMED OUT after ${RUN_TIMEOUT}s")
            ;;
        *)
            status=1
            failures=$(python3 - "$report" <<'EOF' 2>/dev/null || echo "?"
import glob, sys, xml.etree.ElementTree as ET
n = 0
for f in glob.glob(sys.argv[1] + "/*.xml"):
    for case in ET.parse(f).getroot().iter("testcase"):
        n += sum(1 for c in case if c.tag in ("failure", "error"))
print(n)
EOF
)
            summary+=("$user: FAILED ($failures failing operation(s), exit $rc)")
            ;;
    esac
done

# The server's own count of 5xx answers: a cross-check independent of
# schemathesis' checks.
server_errors=$(curl -fsS --max-time 5 "$BASE/metrics" |
    awk '/^elevate_http_responses_total\{status="5/ { n += $2 } END { print n + 0 }')
if [[ "$server_errors" != 0 ]]; then
    status=1
    say "the server answered $server_errors 5xx response(s); its log:"
    grep -E 'ERROR|panick' "$WORK/server.log" | tail -n 20 >&2 || true
fi
if grep -q 'panicked' "$WORK/server.log"; then
    status=1
    summary+=("server log has a panic")
fi

joined=$(printf '%s; ' "${summary[@]}")
if [[ $status == 0 ]]; then
    say "PASS — ${joined}server 5xx: $server_errors (seed $SEED)"
else
    FUZZ_KEEP=1
    say "FAIL — ${joined}server 5xx: $server_errors (seed $SEED; reports and server log in $WORK)"
fi
exit $status
