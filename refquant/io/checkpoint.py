"""Checkpoints of the tiny GPT: an ``.npz`` of named float arrays plus its config and metadata as JSON."""
from __future__ import annotations

import json
import os

import numpy as np

from ..models.gpt import GPTConfig

CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "tiny_gpt.npz")  # shipped, read-only


def save_checkpoint(path: str, p: dict, cfg: GPTConfig, meta: dict | None = None) -> None:
    np.savez_compressed(path, **p, __config__=json.dumps(cfg.__dict__), __meta__=json.dumps(meta or {}))


def load_checkpoint(path: str = CHECKPOINT) -> tuple[dict, GPTConfig, dict]:
    """``(params, config, meta)`` from an .npz written by :func:`save_checkpoint`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} not found (python -m refquant train writes one)")
    with np.load(path) as z:
        fields = json.loads(str(z["__config__"]))
        if "block_size" in fields:  # checkpoints written before refquant 0.2 named the context length so
            fields["context_length"] = fields.pop("block_size")
        cfg = GPTConfig(**fields)
        meta = json.loads(str(z["__meta__"]))
        p = {k: z[k] for k in z.files if not k.startswith("__")}
    return p, cfg, meta
