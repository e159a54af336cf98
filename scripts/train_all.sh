#!/usr/bin/env bash
# Train every domain's constraint models into models/ (the commands of models/README.md).
# Single process:   scripts/train_all.sh
# Some domains:     DOMAINS="qualitative2d stack2d" scripts/train_all.sh
# Several GPUs:     NPROC=8 scripts/train_all.sh   (torchrun + DDP, one process per GPU; the
#                   box domains — triangles2d trains in one process)
# Extra flags are passed to the trainer, e.g. scripts/train_all.sh --steps 20000 --device cuda
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
NPROC=${NPROC:-1}
DOMAINS=${DOMAINS:-"pack3d qualitative2d stack2d triangles2d"}
for domain in $DOMAINS; do
  case "$domain" in
    pack3d)        size=(--steps 30000 --batch 96 --data-size 30000 --data-processes 2) ;;
    qualitative2d) size=(--steps 12000 --batch 96 --data-size 20000) ;;
    stack2d)       size=(--steps 12000 --batch 96 --data-size 10000 --data-processes 2) ;;
    triangles2d)   size=(--steps 24000 --batch 96 --data-size 20000) ;;
    *) echo "unknown domain $domain" >&2; exit 2 ;;
  esac
  args=(--domain "$domain" "${size[@]}" --threads 1 --seed 0 --out "models/$domain.pt" "$@")
  if [ "$NPROC" -gt 1 ] && [ "$domain" != triangles2d ]; then
    "$PY" -m torch.distributed.run --nproc_per_node="$NPROC" -m robot_packer.solver.diffusion.train "${args[@]}"
  else
    "$PY" -m robot_packer.solver.diffusion.train "${args[@]}"
  fi
  sha=$(sha256sum "models/$domain.pt" | cut -d' ' -f1)
  echo "models/$domain.pt sha256 $sha  -> update its row in models/README.md"
done
