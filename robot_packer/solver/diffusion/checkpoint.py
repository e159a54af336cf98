"""Checkpoint files: ``{"config": {...}, "state_dict": {...}}``, sha256-pinned in
models/README.md."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from robot_packer.solver.diffusion.networks import DENOISERS, DenoiserConfig


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def listed_sha256(readme: str | Path, name: str) -> str | None:
    """The sha256 in the model card's table row ``| name | <sha256> | ... |`` (None if absent)."""
    try:
        text = Path(readme).read_text()
    except OSError:
        return None
    m = re.search(rf"^\|\s*{re.escape(name)}\s*\|\s*([0-9a-f]{{64}})\s*\|", text, re.M)
    return m.group(1) if m else None


def save_model(model: torch.nn.Module, path: str | Path, extra: dict | None = None) -> str:
    """Write the shipped form (config + state dict only) atomically; return its sha256."""
    cfg = {"arch": "composed", **model.config.to_dict(), **(extra or {})}
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"config": cfg, "state_dict": {k: v.detach().cpu() for k, v in
                                              model.state_dict().items()}}, tmp)
    tmp.replace(path)
    return sha256_of(path)


def load_model(path: str | Path, device: torch.device | str = "cpu",
               readme: str | Path | None = None) -> torch.nn.Module:
    """Load a checkpoint after checking its sha256 against the model card.

    Raises:
        ValueError: naming the file when it is missing, not listed in the card, altered
            (hash mismatch, e.g. truncated or tampered) or not a valid checkpoint.
    """
    path = Path(path)
    readme = Path(readme) if readme is not None else path.parent / "README.md"
    if not path.is_file():
        raise ValueError(f"model {path}: file not found")
    expected = listed_sha256(readme, path.name)
    if expected is None:
        raise ValueError(f"model {path}: no sha256 listed for {path.name} in {readme}")
    actual = sha256_of(path)
    if actual != expected:
        raise ValueError(f"model {path}: sha256 {actual[:12]}… does not match the listed "
                         f"{expected[:12]}… (truncated or tampered file)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        cfg = dict(blob["config"])
        arch = DENOISERS[cfg.pop("arch", "composed")]
        known = DenoiserConfig.__dataclass_fields__
        model = arch(DenoiserConfig(**{k: v for k, v in cfg.items() if k in known}))
        model.load_state_dict(blob["state_dict"])
    except Exception as exc:  # noqa: BLE001 - any malformed content is the same user error
        raise ValueError(f"model {path}: not a valid checkpoint ({exc})") from None
    return model.to(device).eval()
