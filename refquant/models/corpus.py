"""A character-level corpus written by a small probabilistic grammar: offline, deterministic, and with
structure of several difficulties, so that quantization damage shows up in the metrics.

Each line is one of:

* agreement — ``the small cat sleeps.`` / ``the small cats sleep.`` (the verb agrees with the noun);
* objects — ``alice sees the red dog.``;
* arithmetic — ``3+4=7.`` (the model must learn 100 addition facts);
* counting — ``count 4 5 6 7.`` (deterministic after the first number);
* copying — ``echo kav kav.`` (a random word repeated: only attention can predict it).

References: the idea of a synthetic grammar to probe what a small LM learns follows e.g.
Allen-Zhu & Li, "Physics of Language Models: Part 1, Context-Free Grammar", arXiv:2305.13673.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

ADJ = ["small", "big", "red", "old", "happy", "quiet", "green", "fast"]
NOUN = ["cat", "dog", "bird", "fox", "horse", "frog", "lion", "duck"]
VERB = [("sleeps", "sleep"), ("runs", "run"), ("sings", "sing"), ("jumps", "jump"), ("eats", "eat"), ("waits", "wait")]
NAME = ["alice", "bob", "carol", "dave", "erin", "frank"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"
ALPHABET = "\n +.=0123456789" + LETTERS  # every character the grammar can write


def _line(rng: np.random.Generator) -> str:
    kind = rng.integers(5)
    if kind == 0:
        plural = rng.random() < 0.5
        adj = ADJ[rng.integers(len(ADJ))] + " " if rng.random() < 0.7 else ""
        noun = NOUN[rng.integers(len(NOUN))] + ("s" if plural else "")
        return f"the {adj}{noun} {VERB[rng.integers(len(VERB))][int(plural)]}."
    if kind == 1:
        return f"{NAME[rng.integers(len(NAME))]} sees the {ADJ[rng.integers(len(ADJ))]} {NOUN[rng.integers(len(NOUN))]}."
    if kind == 2:
        a, b = rng.integers(10, size=2)
        return f"{a}+{b}={a + b}."
    if kind == 3:
        start, n = rng.integers(10), rng.integers(3, 6)
        return "count " + " ".join(str(start + i) for i in range(n)) + "."
    word = "".join(LETTERS[i] for i in rng.integers(26, size=rng.integers(2, 5)))
    return f"echo {word} {word}."


def make_corpus(n_chars: int = 1_000_000, seed: int = 0) -> str:
    """At least ``n_chars`` characters of grammar text (whole lines), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    lines, total = [], 0
    while total < n_chars:
        s = _line(rng)
        lines.append(s)
        total += len(s) + 1
    return "\n".join(lines) + "\n"


def encode(text: str) -> np.ndarray:
    """Characters to ids (uint8) in :data:`ALPHABET`; an unknown character raises ValueError."""
    lookup = {c: i for i, c in enumerate(ALPHABET)}
    try:
        return np.array([lookup[c] for c in text], dtype=np.uint8)
    except KeyError as e:
        raise ValueError(f"text: character {e.args[0]!r} is not in the corpus alphabet") from None


def decode(ids: ArrayLike) -> str:
    return "".join(ALPHABET[int(i)] for i in np.asarray(ids).ravel())


def train_val_split(seed: int = 0, n_train: int = 1_000_000, n_val: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Token ids for training and validation, from independent streams of the grammar."""
    return encode(make_corpus(n_train, seed)), encode(make_corpus(n_val, seed + 1))
