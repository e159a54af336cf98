#!/usr/bin/env bash
# The side-by-side benchmark of docs/benchmarks.md: every solver on the same generated pack3d
# problems, 2 s budget (BUDGET), PyBullet verification on, one torch thread per process.
# Two single-threaded parts run at once (one per core: diffusion+heuristic, rejection+cem), then
# the portfolio alone (it races its members, a worker process each); the parts are then merged.
# Usage: scripts/bench_side_by_side.sh   (env: PROBLEMS=20, OBJECTS=3,4,5,6,8,10, TIER=standard,
#        BUDGET=2.0 (seconds per solve),
#        FIRST=diffusion,heuristic, SECOND=rejection,cem — the two parallel parts' solvers)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PROBLEMS=${PROBLEMS:-20}
OBJECTS=${OBJECTS:-3,4,5,6,8,10}
TIER=${TIER:-standard}
BUDGET=${BUDGET:-2.0}
FIRST=${FIRST:-diffusion,heuristic}
SECOND=${SECOND:-rejection,cem}
OUT=${OUT:-docs/bench/side_by_side}
common=(--domain pack3d --objects "$OBJECTS" --problems "$PROBLEMS" --budget "$BUDGET" --device cpu
        --seed 0 --tier "$TIER" --verify --threads 1 --no-progress)
mkdir -p "$OUT"
"$PY" -m robot_packer.bench "${common[@]}" --solvers "$FIRST" \
  --out "$OUT/parts/learned" > "$OUT.learned.log" 2>&1 &
a=$!
"$PY" -m robot_packer.bench "${common[@]}" --no-passk --solvers "$SECOND" \
  --out "$OUT/parts/sampling" > "$OUT.sampling.log" 2>&1 &
b=$!
wait "$a" "$b"
"$PY" -m robot_packer.bench "${common[@]}" --no-passk --solvers portfolio \
  --out "$OUT/parts/portfolio" > "$OUT.portfolio.log" 2>&1
"$PY" -m robot_packer.bench --merge "$OUT/parts/learned" "$OUT/parts/sampling" \
  "$OUT/parts/portfolio" --out "$OUT"
rm -rf "$OUT"/parts/*/scenes   # the merged folder holds every scene once
