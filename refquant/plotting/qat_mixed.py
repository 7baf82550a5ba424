"""Plots of QAT and mixed precision (notebook 09): STE, LSQ, sensitivities, Pareto fronts. Every function draws on ``ax`` and returns it."""
from __future__ import annotations

__all__: list = []
