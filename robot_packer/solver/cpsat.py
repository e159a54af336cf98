"""``cpsat``: an OR-Tools CP-SAT baseline (optional extra: ``pip install .[cpsat]``).

The problem becomes an integer model. Positions use a grid of ``grid_m`` (1 cm) in x and y and
``z_grid_m`` (1 mm) in z; box sizes are rounded UP to the grid, so boxes never overlap once the
real (smaller) box is put back at the centre of its cell. Per object: a yaw bool (0° or 90°) and
the integer lower corner x, y, z of its cell. Constraints:

- containment (the real box may use the ``TOL.slack`` beyond the walls), pairwise 3D
  non-overlap as six-way disjunctions (left/right/front/back/below/above);
- support: each object lies on the floor or on exactly one other object (its bottom at most
  3 mm above that object's top, so it may bridge onto a slightly taller neighbour), with its
  centre over that object's real footprint, as the exact ``stable`` and ``on`` ask, and at
  least ``support_overlap`` of its extent over it along x and along y. The overlaps are tried
  strictest first, (0.75, 0.5, 0.0), the next only once the previous is proven infeasible:
  narrow boxes crossing on a sliver pass the exact checker but tip over in PyBullet.
  ``support="footprint"``: the whole footprint inside, which loses the bridged stacks of dense
  problems. Nothing rests on a fragile object or, with
  ``heavy_below``, on a lighter one (such a pair stacked is kept ``TOL.on_gap`` + 3 mm apart);
- relations: sides on the cells (conservative), ``on`` as the support choice, ``aligned_*`` on
  the cell centres, ``region`` on the cells, ``away_from`` as an L∞ footprint gap of at least
  0.10 m (the Euclidean gap is never smaller: sound), ``close_to`` as an L1 gap of at most
  0.03 m including the real boxes' padding inside their cells (L1 >= Euclidean: sound, it
  loses the diagonal corners);
- gripper (a placing order as ranks): parallel fingers keep ``finger_room / 2`` free along the
  closing (narrower) side against the walls and against every object placed earlier at their
  height, the hand (``HAND_SIZE``) stays inside the walls when it reaches below the rim and
  misses taller objects placed earlier; suction: the cup column misses objects placed earlier,
  the wrist above the tool (``SUCTION_WRIST_SIZE``) stays inside the walls when it reaches below
  the rim and misses taller objects placed earlier.

The solution is converted to centre poses (the real box centred in its cell in x, y, lowered
onto what lies under it; or, if that fails the exact check, its bottom at the cell's bottom: up
to 4 mm above its supporter, within ``TOL.on_gap``) and checked with the exact checker in the
model's placing order and in ``placement_order``. The search starts from a random solution
hint (positions drawn with ``SolverConfig.seed``), so another seed gives another plan — the
pipeline's next proposal round after a plan failed verification is not a repeat. When the exact
check fails, a no-good cut and a random objective produce another solution, until the
deadline. When the model at one grid is infeasible or finds nothing in its share of the budget,
it is rebuilt on a finer grid (halving, down to ``min_grid_m``, 1 mm): rounding to 1 cm can make
a dense problem infeasible. Each grid but the last gets half of the time left.

Options (``SolverConfig.options``): ``grid_m`` (0.01), ``min_grid_m`` (0.001), ``z_grid_m``
(0.001), ``support`` ("overlap" | "footprint"), ``support_overlap`` ((0.75, 0.5, 0.0)),
``keep`` (16).
"""
from __future__ import annotations

import math
import time

import numpy as np

from robot_packer import constraints as C
from robot_packer.deadline import Deadline
from robot_packer.problem import PackingProblem
from robot_packer.solver.base import Candidates, SolverConfig, ranked, register_solver

MISSING = "solver cpsat needs OR-Tools: pip install .[cpsat]"
_EPS = 1e-9
_SAFETY_S = 0.05          # seconds kept free before the deadline for the final exact checks
_Z_MARGIN = 0.002         # m of z kept between the order-dependent gripper levels


def _up(v: float, g: float) -> int:
    return int(math.ceil(v / g - _EPS))


def _down(v: float, g: float) -> int:
    return int(math.floor(v / g + _EPS))


class _Model:
    """The CP-SAT model of one problem on one grid (``g`` in x, y; ``zg`` in z)."""

    def __init__(self, cp_model, problem: PackingProblem, g: float, zg: float, support: str,
                 overlap: float = 0.75):
        self.overlap8 = int(round(8 * overlap))
        self.cp, self.p, self.g, self.zg = cp_model, problem, g, zg
        self.m = cp_model.CpModel()
        self.n = len(problem.items)
        L, W, H = problem.container.size
        self.L, self.W, self.H = L, W, H
        self.Lg, self.Wg, self.Hz = _down(L, g), _down(W, g), _down(H + C.TOL.slack, zg)
        s = problem.sizes
        self.cells = [(_up(a, g), _up(b, g)) for a, b, _ in s]
        self.hz = [_up(h, zg) for h in s[:, 2]]
        self.rot = [self.m.NewBoolVar(f"rot{i}") for i in range(self.n)]
        self.x = [self.m.NewIntVar(-2, self.Lg + 2, f"x{i}") for i in range(self.n)]
        self.y = [self.m.NewIntVar(-2, self.Wg + 2, f"y{i}") for i in range(self.n)]
        self.z = [self.m.NewIntVar(0, self.Hz, f"z{i}") for i in range(self.n)]
        self.rank = [self.m.NewIntVar(0, self.n - 1, f"r{i}") for i in range(self.n)]
        self.before: dict[tuple[int, int], object] = {}
        self.sup: dict[tuple[int, int], object] = {}
        self.support = support
        for build in (self._contain, self._no_overlap, self._order, self._supports,
                      self._relations, self._gripper):
            build()

    # ------------------------------------------------------------ expressions and literals
    def sx(self, i):
        a, b = self.cells[i]
        return a + (b - a) * self.rot[i]

    def sy(self, i):
        a, b = self.cells[i]
        return b + (a - b) * self.rot[i]

    def pad2(self, i, axis):
        """Twice the room (cells, rounded up) between i's cell and its real box along ``axis``."""
        (a, b), (sa, sb) = self.cells[i], self.p.sizes[i, :2]
        p0 = (_up(a - sa / self.g, 1.0), _up(b - sb / self.g, 1.0))[axis]      # yaw 0
        p1 = (_up(b - sb / self.g, 1.0), _up(a - sa / self.g, 1.0))[axis]      # yaw 90°
        return p0 + (p1 - p0) * self.rot[i]

    def top(self, i):
        return self.z[i] + self.hz[i]

    def lit(self, constraint):
        """A new bool that enforces ``constraint`` (a bounded linear expression) when true."""
        b = self.m.NewBoolVar("")
        self.m.Add(constraint).OnlyEnforceIf(b)
        return b

    def closing_x(self, i):
        """The literal 'the parallel gripper closes along world x' (across the narrower side)."""
        sx, sy, _ = self.p.sizes[i]
        return self.rot[i].Not() if sx <= sy else self.rot[i]

    # ------------------------------------------------------------ constraints
    def _contain(self) -> None:
        """Real box (centred in its cell) inside the walls, ``TOL.slack`` allowed; fixed yaw
        when only one fits."""
        t, g = C.TOL.slack, self.g
        for i, (sx, sy, _) in enumerate(self.p.sizes):
            for r, (a, b, ra, rb) in enumerate(((sx, sy, *self.cells[i]),
                                                (sy, sx, *self.cells[i][::-1]))):
                when = self.rot[i] if r else self.rot[i].Not()
                for v, real, cell, ext in ((self.x[i], a, ra, self.L), (self.y[i], b, rb, self.W)):
                    lo = _up(-t - (cell * g - real) / 2, g)
                    hi = _down(ext + t - (cell * g + real) / 2, g)
                    self.m.Add(v >= lo).OnlyEnforceIf(when)
                    self.m.Add(v <= hi).OnlyEnforceIf(when)
            self.m.Add(self.top(i) <= self.Hz)

    def _no_overlap(self) -> None:
        gap = _up(C.TOL.on_gap + 0.003, self.zg)
        for i in range(self.n):
            for j in range(i + 1, self.n):
                x, y = self.x, self.y
                lits = [self.lit(x[i] + self.sx(i) <= x[j]), self.lit(x[j] + self.sx(j) <= x[i]),
                        self.lit(y[i] + self.sy(i) <= y[j]), self.lit(y[j] + self.sy(j) <= y[i]),
                        self.lit(self.top(i) + gap * self._forbidden(j, i) <= self.z[j]),
                        self.lit(self.top(j) + gap * self._forbidden(i, j) <= self.z[i])]
                self.m.AddBoolOr(lits)

    def _forbidden(self, a: int, b: int) -> bool:
        """a must not rest on b: b fragile, or a heavier with ``heavy_below``."""
        p = self.p
        return bool(p.fragile[b] or (p.rules.heavy_below and p.masses[a] > p.masses[b]))

    def _order(self) -> None:
        self.m.AddAllDifferent(self.rank)
        for i in range(self.n):
            for j in range(i + 1, self.n):
                b = self.lit(self.rank[i] + 1 <= self.rank[j])
                self.m.Add(self.rank[j] + 1 <= self.rank[i]).OnlyEnforceIf(b.Not())
                self.before[i, j], self.before[j, i] = b, b.Not()

    def _supports(self) -> None:
        """Floor, or exactly one supporter j (z at most 3 mm above top_j; footprint or centre
        over j)."""
        rest = _down(C.TOL.on_gap - 0.002, self.zg)   # bottom up to 3 mm above j's top: it
        for i in range(self.n):                        # may also touch a slightly taller box
            floor = self.lit(self.z[i] == 0)
            options = [floor]
            for j in range(self.n):
                if j == i or self._forbidden(i, j):
                    continue
                s = self.m.NewBoolVar(f"sup{i}_{j}")
                self.sup[i, j] = s
                options.append(s)
                self.m.Add(self.z[i] >= self.top(j)).OnlyEnforceIf(s)
                self.m.Add(self.z[i] <= self.top(j) + rest).OnlyEnforceIf(s)
                self.m.AddImplication(s, self.before[j, i])
                for axis, (v, e) in enumerate(((self.x, self.sx), (self.y, self.sy))):
                    if self.support == "overlap":   # centre over j's REAL footprint
                        pad = self.pad2(j, axis)
                        self.m.Add(2 * v[i] + e(i) >= 2 * v[j] + pad).OnlyEnforceIf(s)
                        self.m.Add(2 * v[i] + e(i) <= 2 * v[j] + 2 * e(j) - pad).OnlyEnforceIf(s)
                    if self.support == "overlap" and self.overlap8 > 0:  # >= overlap over j
                        k = self.overlap8                 # eighths
                        self.m.Add(8 * (v[i] + e(i) - v[j]) >= k * e(i)).OnlyEnforceIf(s)
                        self.m.Add(8 * (v[j] + e(j) - v[i]) >= k * e(i)).OnlyEnforceIf(s)
                        self.m.Add(8 * e(j) >= k * e(i)).OnlyEnforceIf(s)
                    else:
                        self.m.Add(v[i] >= v[j]).OnlyEnforceIf(s)
                        self.m.Add(v[i] + e(i) <= v[j] + e(j)).OnlyEnforceIf(s)
            self.m.AddExactlyOne(options)

    def _relations(self) -> None:
        ids = {item.id: k for k, item in enumerate(self.p.items)}
        sides = {"left_of": (1, True), "right_of": (1, False), "behind": (0, True),
                 "in_front_of": (0, False)}
        for con in self.p.constraints:
            if con.name == "region":
                self._region(ids[con.args[0]], con.args[1])
                continue
            a, b = ids[con.args[0]], ids[con.args[1]]
            if con.name in sides:
                axis, positive = sides[con.name]
                lo, hi = (b, a) if positive else (a, b)   # lo's cell entirely below hi's
                v, e = ((self.x, self.sx), (self.y, self.sy))[axis]
                self.m.Add(v[lo] + e(lo) <= v[hi])
            elif con.name in ("aligned_x", "aligned_y"):
                v, e = (self.x, self.sx) if con.name == "aligned_x" else (self.y, self.sy)
                d = 2 * v[a] + e(a) - 2 * v[b] - e(b)   # twice the centre difference, cells
                k = _down(2 * C.TOL.aligned - 1e-6, self.g)   # strict: float rounding
                self.m.Add(d <= k)
                self.m.Add(d >= -k)
            else:
                getattr(self, "_rel_" + con.name)(a, b)

    def _rel_on(self, a, b):
        if (a, b) in self.sup:
            self.m.AddBoolOr([self.sup[a, b]])
        else:                                   # a may not rest on b: no model
            never = self.m.NewBoolVar("never")
            self.m.AddBoolOr([never])
            self.m.AddBoolOr([never.Not()])

    def _gaps(self, a, b):
        """Cell gaps (>= the true cell gap, >= 0) along x and y."""
        out = []
        for v, e, ext in ((self.x, self.sx, self.Lg), (self.y, self.sy, self.Wg)):
            d = self.m.NewIntVar(0, ext + 4, "")
            self.m.Add(d >= v[a] - v[b] - e(b))
            self.m.Add(d >= v[b] - v[a] - e(a))
            out.append(d)
        return out

    def _rel_close_to(self, a, b):
        """L1 gap of the real boxes (cell gap + padding, in mm) at most ``TOL.close``."""
        gx, gy = self._gaps(a, b)
        mm = 1000.0
        pad = 0
        for i in (a, b):
            (sx, sy, _), (ca, cb) = self.p.sizes[i], self.cells[i]
            p0 = _up((ca * self.g - sx + cb * self.g - sy) * mm / 2, 1.0)   # yaw 0: x + y pads
            p1 = _up((cb * self.g - sx + ca * self.g - sy) * mm / 2, 1.0)
            pad = pad + p0 + (p1 - p0) * self.rot[i]
        self.m.Add(int(round(self.g * mm)) * (gx + gy) + pad <= _down(C.TOL.close * mm - 0.01, 1.0))

    def _rel_away_from(self, a, b):
        k = _up(C.TOL.away + 1e-6, self.g)
        x, y = self.x, self.y
        self.m.AddBoolOr([self.lit(x[a] + self.sx(a) + k <= x[b]),
                          self.lit(x[b] + self.sx(b) + k <= x[a]),
                          self.lit(y[a] + self.sy(a) + k <= y[b]),
                          self.lit(y[b] + self.sy(b) + k <= y[a])])

    def _region(self, a, name):
        x0, x1, y0, y1 = self._region_cells(name)
        self.m.Add(self.x[a] >= x0)
        self.m.Add(self.x[a] + self.sx(a) <= x1)
        self.m.Add(self.y[a] >= y0)
        self.m.Add(self.y[a] + self.sy(a) <= y1)

    def _region_cells(self, name):
        L, W, t, g = self.L, self.W, C.TOL.slack, self.g
        table = {"left": (0, L, W / 2, W), "right": (0, L, 0, W / 2), "front": (0, L / 2, 0, W),
                 "back": (L / 2, L, 0, W), "center": (L / 4, 3 * L / 4, W / 4, 3 * W / 4)}
        x0, x1, y0, y1 = table[name]
        return _up(x0 - t, g), _down(x1 + t, g), _up(y0 - t, g), _down(y1 + t, g)

    # ------------------------------------------------------------ gripper
    def _gripper(self) -> None:
        if not self.p.rules.gripper_clear:
            return
        for j in range(self.n):
            if self.p.gripper.type == "parallel":
                self._finger_walls(j)
            else:
                self._wrist_walls(j)
            for i in range(self.n):
                if i != j:
                    (self._fingers_clear if self.p.gripper.type == "parallel"
                     else self._cup_clear)(i, j)

    def _finger_walls(self, j) -> None:
        """Fingers inside the walls along the closing axis; the hand too when below the rim."""
        g, t = self.g, C.TOL.slack
        f = _up(C.finger_room(self.p.gripper) / 2 - t, g)
        cx = self.closing_x(j)
        high = self.lit(self.top(j) >= _up(self.H - C.HAND_ABOVE_TCP + _Z_MARGIN, self.zg))
        hand_c, hand_o = _up(C.HAND_SIZE[0], g), _up(C.HAND_SIZE[1], g)   # doubled half extents
        xs, ys = (self.x, self.sx, self.Lg), (self.y, self.sy, self.Wg)
        for when, (v, e, ext), other in ((cx, xs, ys), (cx.Not(), ys, xs)):
            self.m.Add(v[j] >= f).OnlyEnforceIf(when)
            self.m.Add(v[j] + e(j) <= ext - f).OnlyEnforceIf(when)
            for (u, eu, eext), half in (((v, e, ext), hand_c), (other, hand_o)):
                self.m.Add(2 * u[j] + eu(j) >= half).OnlyEnforceIf([when, high.Not()])
                self.m.Add(2 * u[j] + eu(j) + half <= 2 * eext).OnlyEnforceIf([when, high.Not()])

    def _wrist_walls(self, j) -> None:
        """The wrist above j's suction tool inside the walls when it reaches below the rim."""
        high = self.lit(self.top(j) >= _up(self.H - C.SUCTION_WRIST_ABOVE_TCP + _Z_MARGIN,
                                           self.zg))
        side = _up(C.SUCTION_WRIST_SIZE, self.g)                            # doubled half side
        for v, e, ext in ((self.x, self.sx, self.Lg), (self.y, self.sy, self.Wg)):
            self.m.Add(2 * v[j] + e(j) >= side).OnlyEnforceIf(high.Not())
            self.m.Add(2 * v[j] + e(j) + side <= 2 * ext).OnlyEnforceIf(high.Not())

    def _outside(self, i, c2x, hx, c2y, hy):
        """Literals: i's cell misses the rectangle at centre (c2x, c2y)/2, doubled half sizes."""
        x, y = self.x, self.y
        return [self.lit(2 * (x[i] + self.sx(i)) <= c2x - hx), self.lit(2 * x[i] >= c2x + hx),
                self.lit(2 * (y[i] + self.sy(i)) <= c2y - hy), self.lit(2 * y[i] >= c2y + hy)]

    def _fingers_clear(self, i, j) -> None:
        """If i is placed before j, j's fingers and hand miss i."""
        g, zg, p = self.g, self.zg, self.p
        h = float(p.sizes[j, 2])
        grasp = max(min(p.gripper.finger[2], h - C.TOL.grip_margin), 0.5 * h)
        mz = _up(_Z_MARGIN, zg)
        low = self.lit(self.top(i) + mz <= self.top(j) - _up(grasp, zg))
        above = self.lit(self.z[i] >= self.top(j))
        f = _up(C.finger_room(p.gripper) / 2 - C.TOL.slack, g)
        w = _up(p.gripper.finger[0] + 2 * C.TOL.finger_side_clearance, g)   # doubled half width
        c2 = (2 * self.x[j] + self.sx(j), 2 * self.y[j] + self.sy(j))
        before = self.before[i, j]
        for when, axis in ((self.closing_x(j), 0), (self.closing_x(j).Not(), 1)):
            e = (self.sx, self.sy)[axis](j)
            for sign in (-1, 1):                               # the two fingers
                centre = [c2[0], c2[1]]
                centre[axis] = c2[axis] + sign * (e + f)
                half = [w, w]
                half[axis] = f
                lits = self._outside(i, centre[0], half[0], centre[1], half[1])
                self.m.AddBoolOr(lits + [low, above]).OnlyEnforceIf([before, when])
            half = [_up(C.HAND_SIZE[1], g)] * 2
            half[axis] = _up(C.HAND_SIZE[0], g)
            under = self.lit(self.top(i) + mz <= self.top(j) + _down(C.HAND_ABOVE_TCP, zg))
            lits = self._outside(i, c2[0], half[0], c2[1], half[1])
            self.m.AddBoolOr(lits + [under]).OnlyEnforceIf([before, when])

    def _cup_clear(self, i, j) -> None:
        """If i is placed before j, the suction cup column and the wrist above j miss i."""
        r = _up(2 * self.p.gripper.cup_radius, self.g)
        c2x, c2y = 2 * self.x[j] + self.sx(j), 2 * self.y[j] + self.sy(j)
        lits = self._outside(i, c2x, r, c2y, r)
        self.m.AddBoolOr(lits + [self.lit(self.top(i) <= self.top(j))]).OnlyEnforceIf(
            self.before[i, j])
        side = _up(C.SUCTION_WRIST_SIZE, self.g)
        mz, wrist = _up(_Z_MARGIN, self.zg), _down(C.SUCTION_WRIST_ABOVE_TCP, self.zg)
        under = self.lit(self.top(i) + mz <= self.top(j) + wrist)
        self.m.AddBoolOr(self._outside(i, c2x, side, c2y, side) + [under]).OnlyEnforceIf(
            self.before[i, j])

    # ------------------------------------------------------------ solutions
    def poses(self, solver) -> tuple[np.ndarray, list[int]]:
        """Centre poses (n, 4) in the container frame; the placing order. A real box's bottom is
        its cell's bottom: it floats at most 3 mm + the height rounding above its supporter, and
        no box below can have moved up (heights only round up)."""
        s = self.p.sizes
        out = np.zeros((self.n, 4))
        for i in range(self.n):
            rot = solver.Value(self.rot[i])
            a, b = self.cells[i][::-1] if rot else self.cells[i]
            out[i] = [-self.L / 2 + (solver.Value(self.x[i]) + a / 2) * self.g,
                      -self.W / 2 + (solver.Value(self.y[i]) + b / 2) * self.g,
                      solver.Value(self.z[i]) * self.zg + s[i, 2] / 2, math.pi / 2 if rot else 0.0]
        order = sorted(range(self.n), key=lambda i: solver.Value(self.rank[i]))
        return out, order

    def forbid(self, solver) -> None:
        """No-good cut: the next solution differs in some object's x, y or yaw."""
        lits = []
        for i in range(self.n):
            for v in (self.x[i], self.y[i]):
                lits.append(self.lit(v != solver.Value(v)))
            lits.append(self.rot[i].Not() if solver.Value(self.rot[i]) else self.rot[i])
        self.m.AddBoolOr(lits)

    def hint(self, rng: np.random.Generator) -> None:
        """A random solution hint for every x and y (see the module docstring: another seed,
        another plan)."""
        for i in range(self.n):
            self.m.AddHint(self.x[i], int(rng.integers(0, self.Lg + 1)))
            self.m.AddHint(self.y[i], int(rng.integers(0, self.Wg + 1)))

    def perturb(self, rng: np.random.Generator) -> None:
        """A random linear objective over the positions (moves the next solution elsewhere)."""
        coef = rng.integers(-5, 6, size=(self.n, 2))
        self.m.Minimize(sum(int(c) * v for i in range(self.n)
                            for c, v in zip(coef[i], (self.x[i], self.y[i]))))


def _drop(poses: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each real box (yaw 0/90°) lowered onto the floor or the highest real top under it,
    lowest first: no floating gaps (the grid leaves up to 4 mm)."""
    out = poses.copy()
    half = np.where(np.isclose(np.sin(out[:, 3]), 0.0)[:, None], sizes[:, :2], sizes[:, 1::-1]) / 2
    done: list[int] = []
    for i in np.argsort(poses[:, 2] - sizes[:, 2] / 2, kind="stable"):
        bottom = 0.0
        for k in done:
            lo = np.maximum(out[i, :2] - half[i], out[k, :2] - half[k])
            hi = np.minimum(out[i, :2] + half[i], out[k, :2] + half[k])
            if np.all(hi - lo > C.TOL.slack):
                bottom = max(bottom, out[k, 2] + sizes[k, 2] / 2)
        out[i, 2] = bottom + sizes[i, 2] / 2
        done.append(int(i))
    return out


@register_solver("cpsat")
class CPSATSolver:
    """OR-Tools CP-SAT on a grid model of the problem (see the module docstring)."""

    def __init__(self, config: SolverConfig):
        try:
            from ortools.sat.python import cp_model
        except ImportError:
            raise ValueError(MISSING) from None
        self.cp = cp_model
        opts = config.options
        self.grid = float(opts.get("grid_m", 0.01))
        self.min_grid = min(self.grid, float(opts.get("min_grid_m", 0.001)))
        self.zgrid = float(opts.get("z_grid_m", 0.001))
        self.support = str(opts.get("support", "overlap"))
        self.keep = int(opts.get("keep", 16))
        self.overlaps = [float(v) for v in opts.get("support_overlap", (0.75, 0.5, 0.0))]
        if not (self.grid > 0 and self.min_grid > 0 and self.zgrid > 0):
            raise ValueError("solver cpsat: grid_m, min_grid_m and z_grid_m must be positive")
        if self.support not in ("overlap", "footprint") or not self.overlaps:
            raise ValueError(f"solver cpsat: support must be 'overlap' or 'footprint', "
                             f"got {self.support!r}")

    def grids(self) -> list[float]:
        """grid_m, halved until min_grid_m (the last one exactly min_grid_m)."""
        out, g = [self.grid], self.grid
        while g / 2 > self.min_grid + _EPS:
            g /= 2
            out.append(g)
        if out[-1] > self.min_grid + _EPS:
            out.append(self.min_grid)
        return out

    def propose(self, problem: PackingProblem, config: SolverConfig,
                deadline: Deadline) -> Candidates:
        rng = np.random.default_rng(config.seed)
        found: list[tuple[float, np.ndarray, list[int]]] = []
        status = "infeasible"
        overlaps = self.overlaps if self.support == "overlap" else [1.0]
        for overlap in overlaps:          # strictest support first; relax when proven infeasible
            status = self._grids_pass(problem, config, overlap, deadline, rng, found)
            if status != "infeasible":
                break
        return self._candidates(problem, found, status == "unknown")

    def _grids_pass(self, problem, config, overlap, deadline, rng, found) -> str:
        """The grids coarse to fine: 'solved', or the last grid's 'infeasible'/'unknown'."""
        grids = self.grids()
        status = "infeasible"
        for k, g in enumerate(grids):
            left = deadline.left() - _SAFETY_S
            if left <= 0:
                return "unknown"
            share = left if k == len(grids) - 1 else left / 2   # an infeasible grid is
            #                                                   usually proven in milliseconds
            status = self._solve_grid(problem, config, g, overlap,
                                      deadline.sooner(time.monotonic() + share),
                                      rng, found)
            if status == "solved":
                break
        return status

    def _solve_grid(self, problem, config, g, overlap, until, rng, found) -> str:
        """Solve on one grid until ``until`` (a :class:`Deadline`; stopping it interrupts the
        search): 'solved', 'infeasible' (no more solutions) or 'unknown' (its time ran out)."""
        model = _Model(self.cp, problem, g, self.zgrid, self.support, overlap)
        model.hint(rng)
        solver = self.cp.CpSolver()
        solver.parameters.num_workers = 1 if config.threads == 1 else 2
        solver.parameters.random_seed = int(config.seed) % (2 ** 31)
        cap = math.inf                  # the first solve: pure feasibility, all the time left
        while True:
            left = until.left()
            if left <= 0.01:
                return "unknown"
            solver.parameters.max_time_in_seconds = min(left, cap)
            with until.on_stop(solver.stop_search):
                status = solver.Solve(model.m)
            if status not in (self.cp.OPTIMAL, self.cp.FEASIBLE):
                return "infeasible" if status == self.cp.INFEASIBLE else "unknown"
            poses, order = model.poses(solver)
            dropped = _drop(poses, problem.sizes)    # settled: preferred when it still passes
            viol, order = _exact(problem, dropped, order)
            if viol > 0.0:
                viol, order = _exact(problem, poses, order)
            else:
                poses = dropped
            found.append((viol, poses, order))
            if viol <= 0.0:
                return "solved"
            model.forbid(solver)
            model.perturb(rng)
            cap = max(0.2, left / 4)

    def _candidates(self, problem, found, timed_out) -> Candidates:
        n = len(problem.items)
        if not found:
            return Candidates(np.zeros((0, n, 4)), np.zeros(0), 0, timed_out)
        viol = np.array([f[0] for f in found])
        poses = np.stack([f[1] for f in found])
        return ranked(poses, viol, len(found), timed_out, keep=self.keep,
                      orders=np.array([f[2] for f in found]))


def _exact(problem: PackingProblem, poses: np.ndarray, order: list[int]) -> tuple[float, list[int]]:
    """Total exact violation in the model's placing order or in ``placement_order``, whichever
    is lower (0 when every constraint holds), and that order."""
    best = (math.inf, order)
    for cand in (order, C.placement_order(problem, poses)):
        res = C.check(problem, poses, cand)
        v = 0.0 if C.all_satisfied(res) else max(C.total(res), 1e-9)
        if v < best[0]:
            best = (v, list(cand))
        if v <= 0.0:
            break
    return best
