#!/usr/bin/env bash
# The seed paper's three 2D domains (docs/benchmarks.md): every applicable solver on the same
# generated problems of each domain, at the paper's object counts, 2 s budget, one torch thread
# per process. Per domain two parts run at once (one per core: diffusion + heuristic, rejection +
# cem; triangles2d has no heuristic), then they are merged into docs/bench/<domain>.
# stack2d success includes PyBullet settling; qualitative2d and triangles2d are exact-checked.
# Usage: scripts/bench_domains.sh   (env: PROBLEMS=50, DOMAINS="qualitative2d stack2d triangles2d")
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PROBLEMS=${PROBLEMS:-50}
DOMAINS=${DOMAINS:-"qualitative2d stack2d triangles2d"}
for domain in $DOMAINS; do
  out=docs/bench/$domain
  learned=diffusion,heuristic
  [ "$domain" = triangles2d ] && learned=diffusion
  common=(--domain "$domain" --problems "$PROBLEMS" --budget 2.0 --device cpu --seed 0
          --threads 1 --no-progress)
  mkdir -p "$out"
  "$PY" -m robot_packer.bench "${common[@]}" --solvers "$learned" \
    --out "$out/parts/learned" > "$out.learned.log" 2>&1 &
  a=$!
  "$PY" -m robot_packer.bench "${common[@]}" --no-passk --solvers rejection,cem \
    --out "$out/parts/sampling" > "$out.sampling.log" 2>&1 &
  b=$!
  wait "$a" "$b"
  "$PY" -m robot_packer.bench --merge "$out/parts/learned" "$out/parts/sampling" --out "$out"
  rm -rf "$out"/parts/*/scenes   # the merged folder holds every scene once
done
