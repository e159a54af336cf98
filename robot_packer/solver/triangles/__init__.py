"""The triangles2d domain's solvers, denoiser graph, training and benchmark runner.

``batched`` (torch violations, graph, normalisation, refinement) → ``solve`` (solvers, plan) →
``train`` (the composed denoiser on generated problems) and ``bench`` (side-by-side runs).
"""
