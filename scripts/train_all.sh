#!/usr/bin/env bash
# Train every domain's constraint models into models/ (only pack3d has a model so far).
# Single process:   scripts/train_all.sh
# Several GPUs:     NPROC=8 scripts/train_all.sh   (torchrun + DDP, one process per GPU)
# Extra flags are passed to the trainer, e.g. scripts/train_all.sh --steps 20000 --device cuda
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
NPROC=${NPROC:-1}
for domain in pack3d; do
  args=(--domain "$domain" --steps 30000 --batch 96 --data-size 30000 --data-processes 2
        --threads 1 --seed 0
        --out "models/$domain.pt" "$@")
  if [ "$NPROC" -gt 1 ]; then
    "$PY" -m torch.distributed.run --nproc_per_node="$NPROC" -m robot_packer.solver.diffusion.train "${args[@]}"
  else
    "$PY" -m robot_packer.solver.diffusion.train "${args[@]}"
  fi
  sha=$(sha256sum "models/$domain.pt" | cut -d' ' -f1)
  echo "models/$domain.pt sha256 $sha  -> update its row in models/README.md"
done
