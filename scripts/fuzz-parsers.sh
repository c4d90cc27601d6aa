#!/usr/bin/env bash
# Coverage-guided fuzzing of elevate's parsers with cargo-fuzz (libFuzzer):
# the config file parser and the value parsers (durations, tickets,
# justifications, names, e-mails, request ids, subjects). Each target runs
# for a bounded time from the seed corpus in fuzz/corpus/TARGET; a panic,
# a broken property, a hang or a memory blow-up fails the run.
#
#   scripts/fuzz-parsers.sh                    # every target, 60 s each
#   FUZZ_SECONDS=600 FUZZ_TARGETS=config scripts/fuzz-parsers.sh
#
# Knobs (environment):
#   FUZZ_SECONDS             time per target, seconds         (60)
#   FUZZ_TARGETS             targets to run                   (config values subject)
#   FUZZ_SANITIZER           address, none, ...               (address)
#   ELEVATE_FUZZ_TARGET_DIR  build dir for instrumented code  (~/.cache/elevate-fuzz-target)
#   FUZZ_KEEP=1              keep the working corpora and logs
#
# cargo-fuzz needs unstable compiler flags (-Zsanitizer, sanitizer
# coverage). Only a stable toolchain is assumed, so they are unlocked with
# RUSTC_BOOTSTRAP=1 for the fuzz build alone.
#
# Idempotent: cargo-fuzz is installed once (into cargo's bin dir) and the
# instrumented build is reused. Inputs in fuzz/regressions/TARGET/ (ones
# that once failed) are replayed first, one by one. The seed corpus is
# copied to a temporary working corpus, so the repository's corpus does not
# grow. A crash input and the run's log are kept in fuzz/artifacts/TARGET/
# (ignored by git); replay one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz TARGET fuzz/artifacts/TARGET/crash-...
# Exits non-zero if any target fails, after one line per failure or target.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CARGO_FUZZ_VERSION=0.13.2
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-config values subject}
SANITIZER=${FUZZ_SANITIZER:-address}
# Not CARGO_TARGET_DIR: scripts/test.sh sets that for the normal build, and
# instrumented artefacts must not churn it.
FUZZ_TARGET_DIR=${ELEVATE_FUZZ_TARGET_DIR:-$HOME/.cache/elevate-fuzz-target}

say() { printf 'fuzz-parsers: %s\n' "$*" >&2; }

case $SECONDS_EACH in
  '' | *[!0-9]*) say "FUZZ_SECONDS must be a whole number of seconds, not '$SECONDS_EACH'"; exit 2 ;;
esac
for t in $TARGETS; do
  if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
    say "unknown target '$t' (see fuzz/fuzz_targets/)"
    exit 2
  fi
done

# ---- cargo-fuzz -------------------------------------------------------------
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --quiet
fi

# ---- build ------------------------------------------------------------------
# One build for all targets: release code with debug assertions and
# overflow checks, so arithmetic mistakes panic instead of wrapping.
export CARGO_TARGET_DIR=$FUZZ_TARGET_DIR
export RUSTC_BOOTSTRAP=1
FUZZ_FLAGS=(--fuzz-dir fuzz --release --debug-assertions --sanitizer "$SANITIZER")
say "building ($SANITIZER sanitizer) in $CARGO_TARGET_DIR"
build_started=$(date +%s)
cargo fuzz build "${FUZZ_FLAGS[@]}"
say "built in $(($(date +%s) - build_started))s"

# ---- run --------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/elevate-fuzz-parsers.XXXXXX")
if [ "${FUZZ_KEEP:-0}" = 1 ]; then
  say "keeping $WORK"
else
  trap 'rm -rf "$WORK"' EXIT
fi

stat_of() { # stat name, log file
  sed -n "s/^stat::$1: *//p" "$2" | tail -n 1
}

# One line on why a run failed, from its log (cut: inputs can be long).
why_failed() { # log file, exit status
  local why
  if grep -q "panicked at" "$1"; then
    # "panicked at FILE:LINE:COL:", then the message on the next line.
    why="$(grep -m 1 -o "panicked at .*" "$1") $(grep -m 1 -A 1 "panicked at" "$1" | tail -n 1)"
  else
    why=$(grep -m 1 -E "^==[0-9]+== ?ERROR|ERROR: libFuzzer|deadly signal" "$1" || true)
  fi
  [ -n "$why" ] || why="exit status $2"
  printf '%s' "${why:0:400}"
}

# Keeps a failed run's log beside its crash input and shows the essentials.
report() { # target, log file
  local kept="fuzz/artifacts/$1/$(basename "$2")"
  cp "$2" "$kept"
  grep -m 1 -A 4 "panicked at" "$2" | cut -c 1-400 >&2 || tail -n 20 "$2" | cut -c 1-400 >&2
  say "full log: $kept"
}

summaries=()
failed=0
for t in $TARGETS; do
  mkdir -p "fuzz/artifacts/$t"

  # Inputs that once broke a property: each must pass before fuzzing.
  for input in fuzz/regressions/"$t"/*; do
    [ -f "$input" ] || continue
    log=$WORK/$t-regression-$(basename "$input").log
    rc=0
    cargo fuzz run "${FUZZ_FLAGS[@]}" "$t" "$input" >"$log" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
      failed=1
      summaries+=("$t: FAILED on regression input $input: $(why_failed "$log" "$rc")")
      say "$t: regression input $input fails:"
      report "$t" "$log"
    fi
  done

  corpus=$WORK/corpus/$t
  log=$WORK/$t.log
  mkdir -p "$corpus"
  if [ -d "fuzz/corpus/$t" ]; then
    cp -R "fuzz/corpus/$t/." "$corpus/"
  fi
  seeds=$(find "$corpus" -type f | wc -l)
  args=(
    -max_total_time="$SECONDS_EACH"
    # An input that takes seconds, or gigabytes, is a finding too.
    -timeout=10
    -rss_limit_mb=2048
    -print_final_stats=1
  )
  if [ -f "fuzz/dicts/$t.dict" ]; then
    args+=(-dict="fuzz/dicts/$t.dict")
  fi
  say "$t: fuzzing for ${SECONDS_EACH}s from $seeds seed(s)"
  started=$(date +%s)
  rc=0
  # -max_total_time bounds the run, -timeout each input.
  cargo fuzz run "${FUZZ_FLAGS[@]}" "$t" "$corpus" -- "${args[@]}" >"$log" 2>&1 || rc=$?
  took=$(($(date +%s) - started))
  runs=$(stat_of number_of_executed_units "$log")
  speed=$(stat_of average_exec_per_sec "$log")
  found=$(find "$corpus" -type f | wc -l)
  if [ "$rc" = 0 ]; then
    summaries+=("$t: ok, ${took}s, ${runs:-?} runs, ${speed:-?} exec/s, corpus $seeds -> $found")
    continue
  fi
  failed=1
  input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
  summaries+=("$t: FAILED after ${took}s: $(why_failed "$log" "$rc"); input: ${input:-none written}")
  say "$t: fuzzing failed:"
  report "$t" "$log"
  if [ -n "$input" ]; then
    say "replay: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz --sanitizer $SANITIZER $t $input"
  fi
done

for s in "${summaries[@]}"; do
  say "$s"
done
exit "$failed"
