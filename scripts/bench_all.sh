#!/usr/bin/env bash
# Baseline benchmark of docs/baselines.md: every baseline solver on 100 generated pack3d problems
# per object count, 5 s budget, one torch thread. The solvers run as parallel processes (one per
# solver, same problems), then their results are joined into docs/bench/baselines.
# Usage: scripts/bench_all.sh [extra bench options, e.g. --verify or --tier hard]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-docs/bench/baselines}
SOLVERS=${SOLVERS:-rejection cem heuristic}
VERIFY=${VERIFY:---no-verify}
pids=()
for s in $SOLVERS; do
  "$PY" -m robot_packer.bench --objects 3,4,5,6,8 --problems 100 --solvers "$s" --budget 5.0 \
    --device cpu --seed 0 --tier standard "$VERIFY" --threads 1 --no-progress \
    --out "$OUT/parts/$s" "$@" > "$OUT.$s.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
parts=()
for s in $SOLVERS; do parts+=("$OUT/parts/$s"); done
"$PY" -m robot_packer.bench --merge "${parts[@]}" --out "$OUT"
