"""The pre-tokenizer of llama.cpp's ``smollm`` vocabularies: text → words, before byte-level BPE.

Step 2 of :func:`refquant.io.tokenizer.encode` (``unicode_regex_split`` in llama.cpp's ``src/unicode.cpp``
with the ``smollm`` list, which it shares with starcoder, refact, command-r, codeshell, exaone, minerva):
first ``\\p{N}`` — every number character becomes its own piece — then, inside each piece, GPT-2's
``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)`` as llama.cpp's hand-written
scanner ``unicode_regex_split_custom_gpt2`` runs it: contractions lowercase only, and a whitespace run that
ends its piece (end of text, a special token or a digit follows) is taken whole, while one followed by a
letter or symbol leaves its last character to the next word. :func:`pretokenize` is one :mod:`re` pattern;
:func:`_pretokenize_ref` is the scanner line by line (its loop twin, equal on every text in the tests).

Character classes are llama.cpp's own (``scripts/gen-unicode-data.py``, Unicode 15.1): letters L*,
numbers N*, and its explicit White_Space list (which, unlike ``str.isspace``, leaves out U+001C–U+001F).
They come from :mod:`unicodedata` plus the L/N characters Unicode 15.0/15.1 added over Python 3.11's
Unicode 14.0 (``_ADDED_IN_15``). On Python 3.10 (Unicode 13.0) the letters added in Unicode 14.0, and on
Python ≥ 3.14 those added in 16.0, are classified differently from llama.cpp.

References
----------
Radford et al. 2019, *Language Models are Unsupervised Multitask Learners*, §2.2 (the GPT-2 pattern).
llama.cpp ``src/unicode.cpp`` (``unicode_regex_split``, ``unicode_regex_split_custom_gpt2``) and
``scripts/gen-unicode-data.py`` (the class table).
"""
from __future__ import annotations

import bisect
import functools
import re
import unicodedata

# the GGUF tokenizer.ggml.pre values whose text llama.cpp splits with these rules
SMOLLM_PRE = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")

# unicode-data.cpp's unicode_set_whitespace (PropList.txt White_Space)
WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
              + "\u2028\u2029\u202f\u205f\u3000")
# Letters and numbers of Unicode 15.0 / 15.1 that Python 3.11's Unicode 14.0 database still calls Cn
# (read off llama.cpp's table, code point by code point; tests/data/llamacpp_unicode_ranges.npz).
_ADDED_IN_15 = {
    "L": ((0x1123F, 0x11240), (0x11F02, 0x11F02), (0x11F04, 0x11F10), (0x11F12, 0x11F33), (0x1342F, 0x1342F),
          (0x13441, 0x13446), (0x1B132, 0x1B132), (0x1B155, 0x1B155), (0x1DF25, 0x1DF2A), (0x1E030, 0x1E06D),
          (0x1E4D0, 0x1E4EB), (0x2B739, 0x2B739), (0x2EBF0, 0x2EE5D), (0x31350, 0x323AF)),
    "N": ((0x11F50, 0x11F59), (0x1D2C0, 0x1D2D3), (0x1E4F0, 0x1E4F9)),
}


@functools.lru_cache(maxsize=1)
def class_ranges() -> dict[str, tuple[tuple[int, int], ...]]:
    """Inclusive code point ranges of llama.cpp's ``\\p{L}`` (``"L"``) and ``\\p{N}`` (``"N"``).

    Planes 4–13 and 15–16 hold no letter or number (unassigned or private use) and are not scanned.
    """
    members: dict[str, set[int]] = {"L": set(), "N": set()}
    for cp in (*range(0x40000), *range(0xE0000, 0xE1000)):
        k = unicodedata.category(chr(cp))[0]
        if k in members:
            members[k].add(cp)
    for k, added in _ADDED_IN_15.items():
        members[k].update(cp for a, b in added for cp in range(a, b + 1))
    out = {}
    for k, cps in members.items():
        r: list[list[int]] = []
        for cp in sorted(cps):
            if r and r[-1][1] == cp - 1:
                r[-1][1] = cp
            else:
                r.append([cp, cp])
        out[k] = tuple(map(tuple, r))
    return out


def char_class(c: str) -> str:
    """llama.cpp's class of one character: ``"W"`` whitespace, ``"L"`` letter, ``"N"`` number, ``"O"`` other."""
    if c in WHITESPACE:
        return "W"
    cp = ord(c)
    for k, ranges in class_ranges().items():
        i = bisect.bisect_right(ranges, (cp, 0x10FFFF)) - 1
        if i >= 0 and cp <= ranges[i][1]:
            return k
    return "O"


@functools.lru_cache(maxsize=1)
def _pretoken_regex() -> re.Pattern:
    """The pre-tokenizer as one :mod:`re` pattern, ``\\p{L}`` / ``\\p{N}`` written out as code point ranges."""
    L, N = ("".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in class_ranges()[k]) for k in "LN")
    W = "".join(f"\\U{ord(c):08x}" for c in WHITESPACE)
    return re.compile(
        f"[{N}]"                      # first regex, \p{N}: every number character alone
        f"|'(?:[stmd]|re|ve|ll)"      # the GPT-2 regex from here on, inside the \p{N}-free runs
        f"| ?[{L}]+"
        f"| ?[^{W}{L}{N}]+"
        f"|[{W}]+(?=[{N}]|\\Z)"       # a run ending its \p{N}-free run (llama.cpp: OUT_OF_RANGE) is whole
        f"|[{W}]+(?![^{W}])"          # \s+(?!\S)
        f"|[{W}]+")


def pretokenize(text: str) -> list[str]:
    """The words llama.cpp's ``smollm`` pre-tokenizer cuts ``text`` into (their concatenation is ``text``)."""
    return _pretoken_regex().findall(text)


def _pretokenize_ref(text: str) -> list[str]:
    """Loop twin of :func:`pretokenize`: llama.cpp's two passes, ``unicode_regex_split_custom_gpt2`` line by line."""
    cls = [char_class(c) for c in text]
    pieces, start = [], 0                      # pass 1: \p{N} — each number character is a piece
    for i, k in enumerate(cls):
        if k == "N":
            pieces += [(start, i)] if i > start else []
            pieces.append((i, i + 1))
            start = i + 1
    pieces += [(start, len(text))] if len(text) > start else []
    words = []
    for lo, hi in pieces:                      # pass 2: the GPT-2 scanner inside each piece
        def c(p): return cls[p] if lo <= p < hi else None  # None: out of range (flags 0)
        pos = lo
        while pos < hi:
            ch = text[pos]
            if ch == "'" and pos + 1 < hi:
                if text[pos + 1] in "stmd":
                    words.append(text[pos:pos + 2]); pos += 2; continue
                if pos + 2 < hi and text[pos + 1:pos + 3] in ("re", "ve", "ll"):
                    words.append(text[pos:pos + 3]); pos += 3; continue
            k2 = c(pos + 1) if ch == " " else c(pos)
            end = pos + (ch == " ")
            if k2 in ("L", "N", "O"):          # <space>?\p{L}+ | <space>?\p{N}+ | <space>?[^\s\p{L}\p{N}]+
                while c(end) == k2:
                    end += 1
                words.append(text[pos:end]); pos = end; continue
            n = 0
            while c(pos + n) == "W":
                n += 1
            if n > 1 and pos + n < hi:          # \s+(?!\S)
                n -= 1
            words.append(text[pos:pos + n]); pos += n
    return words
