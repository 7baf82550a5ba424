"""Plots of LLM post-training algorithms (notebook 08): GPTQ, AWQ, SmoothQuant, LLM.int8(). Every function draws on ``ax`` and returns it."""
from __future__ import annotations

__all__: list = []
