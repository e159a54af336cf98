"""``robot-packer perceive CLOUD [--labelled] --out OBJECTS`` (DESIGN.md §9).

Reads a world-frame cloud file, fits one box per object and writes
``{"objects": [{id, label, size, pose, n_points}], "support_plane": [a, b, c, d]}`` atomically.
Exit codes: 0 ok, 2 invalid input (one ``error: …`` line on stderr; nothing is written).
Perception warnings (dropped clusters, missing support plane) go to stderr as ``warning: …``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

EXIT_OK, EXIT_INVALID = 0, 2
DECIMALS = 6  # 1 um: well below sensor noise


def result_to_dict(result) -> dict:
    """The JSON document of a :class:`robot_packer.perception.PerceptionResult`."""
    objects = [{"id": f"obj{o.label}", "label": int(o.label),
                "size": [round(float(v), DECIMALS) for v in o.size],
                "pose": [round(float(v), DECIMALS) for v in o.pose],
                "n_points": int(o.n_points)} for o in result.objects]
    return {"objects": objects,
            "support_plane": [round(float(v), DECIMALS) for v in result.support_plane]}


def run_perceive(cloud_path: str | Path, labelled: bool, out_path: str | Path,
                 config=None, container=None) -> int:
    """Perceive the objects of a cloud file and write the objects JSON.

    Args:
        cloud_path: .npy (N, 3) or (N, 4) with a label column, .ply or .pcd; world frame.
        labelled: use the .npy label column (0 = background) instead of clustering.
        out_path: where the JSON goes (written atomically).
        config: optional ``PerceptionConfig`` (e.g. a ``workspace`` crop for unlabelled clouds).
        container: optional ``Container``: in unlabelled mode its walls are not objects.

    Returns:
        0 when objects were found and written, 2 on invalid input or when none were found.
    """
    from robot_packer import perception  # local: open3d loads only for this verb
    from robot_packer.problem import atomic_write

    def error(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return EXIT_INVALID

    try:
        cloud = perception.load_cloud(cloud_path)
        if labelled and cloud.shape[1] != 4:
            return error(f"{cloud_path}: --labelled needs a .npy (N, 4) cloud whose 4th column "
                         "holds the labels")
        labels = cloud[:, 3] if labelled else None
        result = perception.perceive(cloud[:, :3], labels,
                                     config or perception.PerceptionConfig(),
                                     container=container)
    except ValueError as exc:
        return error(str(exc))
    for warning in result.skipped:
        print(f"warning: {warning}", file=sys.stderr)
    if not result.objects:
        return error(f"{cloud_path}: no objects found")
    try:
        atomic_write(out_path, json.dumps(result_to_dict(result), indent=2) + "\n")
    except OSError as exc:
        return error(f"{out_path}: cannot write ({exc.strerror})")
    print(f"{len(result.objects)} objects written to {out_path}")
    return EXIT_OK
