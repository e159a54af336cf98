"""Cheap exact infeasibility checks run before any solver (milliseconds, with a reason)."""
from __future__ import annotations

import numpy as np

from robot_packer import constraints as C
from robot_packer.problem import PackingProblem

_OPPOSITE = {"left_of": "right_of", "right_of": "left_of", "in_front_of": "behind",
             "behind": "in_front_of"}


def infeasibility_reason(problem: PackingProblem) -> str | None:
    """A sentence saying why ``problem`` cannot be solved, or None when no quick proof exists."""
    for check in (_too_big, _too_much_volume, _ungraspable, _contradictions, _fragile_carrier,
                  _close_and_away):
        reason = check(problem)
        if reason:
            return reason
    return None


def _too_big(problem: PackingProblem) -> str | None:
    L, W, H = problem.container.size
    for item in problem.items:
        sx, sy, sz = item.size
        fits = sz <= H + C.TOL.slack and ((sx <= L + C.TOL.slack and sy <= W + C.TOL.slack)
                                          or (sy <= L + C.TOL.slack and sx <= W + C.TOL.slack))
        if not fits:
            return (f"object {item.id} ({sx:.3f} x {sy:.3f} x {sz:.3f} m) fits the container "
                    f"({L:.3f} x {W:.3f} x {H:.3f} m) in no allowed yaw")
    return None


def _too_much_volume(problem: PackingProblem) -> str | None:
    vol = float(np.prod(problem.sizes, axis=1).sum())
    if vol > problem.container.volume:
        return (f"total object volume {vol * 1000:.2f} L exceeds the container volume "
                f"{problem.container.volume * 1000:.2f} L")
    return None


def _ungraspable(problem: PackingProblem) -> str | None:
    if not problem.rules.gripper_clear:
        return None
    excess = C.grasp_excess(problem)
    for item, e in zip(problem.items, excess):
        if e > 0:
            return (f"object {item.id} is wider than the gripper opening "
                    f"({problem.gripper.max_opening:.3f} m) on both horizontal sides")
    return None


def _pairs(problem: PackingProblem, names) -> set[tuple[str, str, str]]:
    return {(c.name, *c.args) for c in problem.constraints if c.name in names}


def _contradictions(problem: PackingProblem) -> str | None:
    listed = _pairs(problem, set(_OPPOSITE) | {"on"})
    for name, a, b in sorted(listed):
        if (name, b, a) in listed:
            return f"contradictory relations: {name}({a}, {b}) and {name}({b}, {a})"
        if name in _OPPOSITE and (_OPPOSITE[name], a, b) in listed:
            return f"contradictory relations: {name}({a}, {b}) and {_OPPOSITE[name]}({a}, {b})"
    on = {(a, b) for name, a, b in listed if name == "on"}
    tops = [a for a, _ in on]
    for a in set(tops):
        if tops.count(a) > 1:
            return f"object {a} cannot rest with its centre on two different objects"
    return _on_cycle(on)


def _on_cycle(on: set[tuple[str, str]]) -> str | None:
    below = dict(on)
    for start in below:
        seen, cur = [start], below[start]
        while cur in below:
            if cur == start:
                return "contradictory relations: a cycle of 'on' relations " + " on ".join(seen)
            seen.append(cur)
            cur = below[cur]
    return None


def _fragile_carrier(problem: PackingProblem) -> str | None:
    by_id = {item.id: item for item in problem.items}
    for con in problem.constraints:
        if con.name == "on":
            top, bottom = by_id[con.args[0]], by_id[con.args[1]]
            if bottom.fragile:
                return f"{top.id} must rest on {bottom.id}, but {bottom.id} is fragile"
            if problem.rules.heavy_below and top.mass > bottom.mass:
                return (f"{top.id} ({top.mass:.2f} kg) must rest on the lighter {bottom.id} "
                        f"({bottom.mass:.2f} kg), which heavy_below forbids")
    return None


def _close_and_away(problem: PackingProblem) -> str | None:
    close = {frozenset(c.args) for c in problem.constraints if c.name == "close_to"}
    for c in problem.constraints:
        if c.name == "away_from" and frozenset(c.args) in close:
            return f"contradictory relations: close_to and away_from on {c.args[0]}, {c.args[1]}"
    return None
