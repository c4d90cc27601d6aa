#!/usr/bin/env bash
# Refreshes docs/screenshots/*.png: runs the end-to-end browser test
# (crates/server/tests/it/web_e2e.rs, which drives Debian's Chromium with
# e2e/flow.mjs) with its screenshots pointed at a scratch directory, then
# replaces docs/screenshots/*.png with them when the flow ran to its end.
# A flow that stopped early (it leaves FAILED-* files) changes nothing. A
# flow that ran to its end but reported bugs on the way still refreshes the
# pictures, and the script exits non-zero like the test.
# Needs what `bash scripts/test.sh` installs (chromium, e2e/node_modules).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/elevate-target}"
out="$PWD/docs/screenshots"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

status=0
ELEVATE_SCREENSHOTS="$scratch" cargo test -p elevate --test it web_e2e -- --nocapture || status=$?

if ls "$scratch"/FAILED-* >/dev/null 2>&1 || ! ls "$scratch"/*.png >/dev/null 2>&1; then
  echo "the browser flow stopped early: docs/screenshots left as they were" >&2
  exit 1
fi
mkdir -p "$out"
rm -f "$out"/*.png
cp "$scratch"/*.png "$out"/
echo "== screenshots in docs/screenshots:"
ls -1 "$out"
if [ "$status" != 0 ]; then
  echo "the browser test failed (see above); the screenshots were refreshed anyway" >&2
fi
exit "$status"
