#!/usr/bin/env bash
# Runs every benchmark once, in sequence (they share 2 cores: never in
# parallel), and writes their figures to docs/benchmarks.json. The removal
# lateness histogram goes to docs/lateness.svg. Needs PostgreSQL and moto
# installed (scripts/test.sh installs them). Takes about 12 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/elevate-target}"

out=docs/benchmarks.json
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cargo bench -p elevate --no-run --quiet
for bench in latency scheduler throughput decision startup picker inventory identity_store replicas notify; do
  echo "== $bench" >&2
  cargo bench -p elevate --quiet --bench "$bench" -- --json | tail -n 1 > "$tmp/$bench.json"
  cat "$tmp/$bench.json" >&2
done

python3 - "$tmp" "$out" <<'PY'
import json, os, platform, subprocess, sys
tmp, out = sys.argv[1], sys.argv[2]
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""
machine = {
    "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
    "cores": os.cpu_count(),
    "memory": sh("free -h | awk '/Mem:/ {print $2}'"),
    "kernel": platform.release(),
    "rustc": sh("rustc --version"),
    "postgresql": sh("ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1"),
    "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
}
results = {"machine": machine}
for name in ["latency", "scheduler", "throughput", "decision", "startup", "picker", "inventory", "identity_store", "replicas", "notify"]:
    with open(os.path.join(tmp, name + ".json")) as f:
        results[name] = json.load(f)
with open(out, "w") as f:
    json.dump(results, f, indent=2, ensure_ascii=False)
    f.write("\n")
print("wrote", out)
PY
