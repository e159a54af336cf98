"""Solvers behind one entry point: ``solve(problem, config) -> Plan``.

Importing this package registers every solver in ``SOLVERS``.
"""
from robot_packer.solver.base import (SOLVERS, Candidates, SolverConfig, make_solver,  # noqa: F401
                                      register_solver, resolve_device)
from robot_packer.solver.pipeline import solve  # noqa: F401
# cpsat imports OR-Tools lazily (optional extra `.[cpsat]`): always registered, usable if installed
from robot_packer.solver import (cem, cpsat, diffusion, heuristic, portfolio,  # noqa: F401,E402
                                 rejection)
