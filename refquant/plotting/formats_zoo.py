"""Plots of the formats zoo (notebook 10): levels, MSE vs bits per weight, k-quant search, MX scale rules. Every function draws on ``ax`` and returns it."""
from __future__ import annotations

__all__: list = []
