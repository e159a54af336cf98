"""Compositional diffusion constraint solver (Diffusion-CCSP, DESIGN.md §8).

Importing this package registers the ``diffusion`` solver.
"""
from robot_packer.solver.diffusion.solver import DiffusionOptions, DiffusionSolver  # noqa: F401
