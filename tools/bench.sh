#!/usr/bin/env bash
# The issue-13 benchmark matrix: a fresh 3-node cluster on loopback per run (fsync on), the same
# closed-loop load generator (`raftctl bench`) for every build, each row run REPS times; prints a
# markdown table of the medians and keeps every run's JSON and node logs.
#
#   tools/bench.sh [--raftd PATH] [--label NAME] [--reps N] [--duration SECS] [--rows LIST] [--out DIR]
#
# LIST (comma-separated, default "c1,c64,c64-1m,c64-4k"): c1 (1 client), c16, c64, c256,
# c64-1m (64 clients over a 1,000,000-key space for 4×SECS: the state grows to ~800k keys),
# c64-4k (4 KiB values), get64 (linearizable gets), pipe256 (one connection, 256 writes in flight).
# Columns: ops/s, latency percentiles, server CPU per write (all three nodes, from /proc),
# leader changes seen, and event-loop stall lines in the node logs ("event loop stall" or the old
# "held the event loop"). BENCH_RAFTD_ARGS is passed to every raftd. Needs python3 for the table.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
raftd="$here/target/release/raftd"
raftctl="$here/target/release/raftctl"
label=after
reps=3
duration=10
rows="c1,c64,c64-1m,c64-4k"
out=""
base_port=${BENCH_BASE_PORT:-17301}
while [ $# -gt 0 ]; do
  case "$1" in
    --raftd) raftd=$2; shift 2 ;;
    --label) label=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$raftd" ] && [ -x "$raftctl" ] || { echo "bench.sh: build first (cargo build --release)" >&2; exit 2; }
out=${out:-$(mktemp -d /tmp/bench-XXXXXX)}
mkdir -p "$out"
cluster="127.0.0.1:$base_port,127.0.0.1:$((base_port + 1)),127.0.0.1:$((base_port + 2))"

row_args() {
  case "$1" in
    c1) echo "--clients 1 --duration $duration" ;;
    c16) echo "--clients 16 --duration $duration" ;;
    c64) echo "--clients 64 --duration $duration" ;;
    c256) echo "--clients 256 --duration $duration" ;;
    c64-1m) echo "--clients 64 --duration $((duration * 4)) --key-space 1000000" ;;
    c64-4k) echo "--clients 64 --duration $duration --value-size 4096" ;;
    get64) echo "--clients 64 --duration $duration --op get --keys 1000" ;;
    pipe256) echo "--clients 1 --pipeline 256 --duration $duration" ;;
    *) echo "bench.sh: unknown row $1" >&2; exit 2 ;;
  esac
}

run_once() { # row rep
  local dir="$out/$label-$1-$2" pids
  rm -rf "$dir"; mkdir -p "$dir"
  # shellcheck disable=SC2086
  "$raftctl" cluster up --nodes 3 --base-port "$base_port" --data "$dir" --raftd "$raftd" -- ${BENCH_RAFTD_ARGS:-} \
    >"$dir/cluster.out" 2>&1 &
  local up=$!
  for _ in $(seq 100); do
    "$raftctl" --cluster "$cluster" set bench-warmup x >/dev/null 2>&1 && break
    sleep 0.1
  done
  # shellcheck disable=SC2046
  "$raftctl" --cluster "$cluster" --json bench --data "$dir" $(row_args "$1") >"$dir/bench.json" 2>"$dir/bench.err" || true
  pids=$(cat "$dir"/node-*.pid)
  kill -TERM $pids 2>/dev/null || true
  wait "$up" 2>/dev/null || true
  local stalls
  stalls=$(cat "$dir"/node-*.log | grep -c -E "event loop stall|held the event loop" || true)
  python3 - "$dir/bench.json" "$stalls" "$label" "$1" >>"$out/runs.jsonl" <<'PY'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
run = json.loads(lines[-1]) if lines else {}
run.update(stall_lines=int(sys.argv[2]), label=sys.argv[3], row=sys.argv[4])
print(json.dumps(run))
PY
  tail -1 "$out/runs.jsonl" >&2
  rm -rf "$dir"/node-1 "$dir"/node-2 "$dir"/node-3 # keep logs and JSON, not the data
}

IFS=, read -ra row_list <<<"$rows"
for row in "${row_list[@]}"; do
  for rep in $(seq "$reps"); do run_once "$row" "$rep"; done
done

python3 - "$out/runs.jsonl" "$label" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = [r for r in runs if r.get("label") == sys.argv[2]]
cols = [("throughput_ops_s", "ops/s", "{:,.0f}"), ("latency_ms_p50", "p50 ms", "{:.2f}"),
        ("latency_ms_p99", "p99 ms", "{:.2f}"), ("latency_ms_p999", "p99.9 ms", "{:.2f}"),
        ("latency_ms_max", "max ms", "{:.1f}"), ("server_cpu_us_per_op", "CPU µs/write", "{:.0f}"),
        ("leader_changes", "leader changes", "{:.0f}"), ("stall_lines", "stall lines", "{:.0f}")]
print(f"| {sys.argv[2]} (median of runs) | runs | " + " | ".join(c[1] for c in cols) + " |")
print("|---|---|" + "---|" * len(cols))
for row in dict.fromkeys(r["row"] for r in runs):
    rs = [r for r in runs if r["row"] == row and "throughput_ops_s" in r]
    cells = []
    for key, _, fmt in cols:
        vals = [r[key] for r in rs if key in r]
        cells.append(fmt.format(statistics.median(vals)) if vals else "-")
    print(f"| {row} | {len(rs)} | " + " | ".join(cells) + " |")
PY
echo "runs and logs in $out" >&2
