"""The offline evaluation protocol for language models: English text that every Python ships, cut
the same way every time, and non-overlapping token windows.

Text (version ``pydoc-topics/1``). CPython's ``pydoc_data.topics.topics`` maps 79 (3.11) keywords to
sections of the Python Language Reference — prose with some grammar and code. Sort the keys; the
**evaluation text** is the topics at even positions (0, 2, 4, …) joined with one blank line
(``"\\n\\n"``) and cut to its first ``EVAL_CHARS`` = 40,000 characters; the **calibration text** is
the topics at odd positions, joined and cut the same way: the two share no topic. The content
follows the Python version (:func:`describe` gives the version and a SHA-256 to report beside any
number). With SmolLM2's tokenizer the evaluation text is ~10,100 tokens, enough for the 16 windows
of 512 tokens the tables use.

Windows. :func:`token_windows` cuts ids into consecutive, non-overlapping windows of ``n_ctx``
tokens from the start, dropping the remainder — the layout of both perplexity conventions in
:mod:`refquant.models.lm_eval` (GPTQ's ``llama_eval`` and llama.cpp's ``perplexity``; no BOS is
inserted, as SmolLM2's ``tokenizer.ggml.add_bos_token`` is false).
"""
from __future__ import annotations

import hashlib
import sys

import numpy as np

from ..core._types import ArrayLike

VERSION = "pydoc-topics/1"
EVAL_CHARS = 40_000
SEPARATOR = "\n\n"


def topics() -> dict:
    """CPython's ``pydoc_data.topics.topics`` (keyword -> text)."""
    try:
        from pydoc_data.topics import topics as t
    except ImportError as e:  # some distributions split the docs out of the standard library
        raise ImportError("the evaluation text needs CPython's pydoc_data package (standard library)") from e
    return dict(t)


def _split(part: int, n_chars: int) -> str:
    if not isinstance(n_chars, (int, np.integer)) or n_chars <= 0:
        raise ValueError(f"n_chars must be a positive integer, got {n_chars!r}")
    t = topics()
    keys = sorted(t)[part::2]
    return SEPARATOR.join(t[k] for k in keys)[:n_chars]


def eval_text(n_chars: int = EVAL_CHARS) -> str:
    """The evaluation text: even-position topics (sorted keys), joined by a blank line, first ``n_chars``."""
    return _split(0, n_chars)


def calibration_text(n_chars: int = EVAL_CHARS) -> str:
    """The calibration text: odd-position topics, joined and cut as :func:`eval_text` — disjoint from it."""
    return _split(1, n_chars)


def describe(n_chars: int = EVAL_CHARS) -> dict:
    """What to report beside a number measured on :func:`eval_text`: version, Python, size, SHA-256."""
    text = eval_text(n_chars)
    return {"text": VERSION, "python": "%d.%d" % sys.version_info[:2], "topics": len(topics()),
            "chars": len(text), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def token_windows(ids: ArrayLike, n_ctx: int, n_windows: int | None = None) -> np.ndarray:
    """Consecutive non-overlapping windows (n, n_ctx) int64 of ``ids``, from the start; the remainder
    is dropped. ``n_windows``: how many (default: all that fit); more than fit is an error."""
    a = np.asarray(ids)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise ValueError(f"ids: expected a 1-D sequence of token ids, got {a.dtype} {a.shape}")
    if n_ctx < 2:
        raise ValueError(f"n_ctx must be >= 2, got {n_ctx}")
    fit = a.size // n_ctx
    n = fit if n_windows is None else n_windows
    if not 0 < n <= fit:
        raise ValueError(f"n_windows: {len(a)} tokens hold {fit} windows of {n_ctx}, asked for {n_windows}")
    return a[: n * n_ctx].astype(np.int64).reshape(n, n_ctx)
