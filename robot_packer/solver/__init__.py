"""Solvers behind one entry point: ``solve(problem, config) -> Plan``.

Importing this package registers every solver in ``SOLVERS``.
"""
from robot_packer.solver.base import (SOLVERS, Candidates, SolverConfig, make_solver,  # noqa: F401
                                      register_solver, resolve_device)
from robot_packer.solver.pipeline import solve  # noqa: F401
from robot_packer.solver import cem, diffusion, heuristic, portfolio, rejection  # noqa: F401,E402
