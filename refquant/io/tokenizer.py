"""Byte-level BPE tokenizer of a GGUF ``gpt2``-type vocabulary (SmolLM2), token for token as llama.cpp.

``encode`` runs llama.cpp's ``llama_vocab::impl::tokenize`` (``src/llama-vocab.cpp``) in four steps:

1. **Special tokens** (``tokenizer_st_partition``): the texts of the CONTROL / UNKNOWN tokens (with
   ``parse_special``) and of the USER_DEFINED tokens (always) are cut out of the text as whole strings,
   longest first, before anything else; the text between them is tokenized piece by piece. (The
   LSTRIP / RSTRIP attributes llama.cpp sets by model name for a few models, not SmolLM2, are not mirrored.)
2. **Pre-tokenizer** (``unicode_regex_split`` with the ``smollm`` list, which it shares with starcoder,
   refact, command-r, codeshell, exaone, minerva): first ``\\p{N}`` — every number character becomes its
   own piece — then, inside each piece, GPT-2's
   ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)`` as llama.cpp's
   hand-written scanner ``unicode_regex_split_custom_gpt2`` runs it: contractions lowercase only, and a
   whitespace run that ends its piece (end of text, a special token or a digit follows) is taken
   whole, while one followed by a letter or symbol leaves its last character to the next word.
3. **Byte-level mapping** (Radford et al. 2019, GPT-2 ``bytes_to_unicode``): each UTF-8 byte becomes one
   printable character; ``!``–``~``, ``¡``–``¬``, ``®``–``ÿ`` map to themselves and the other 68 bytes to
   U+0100… in order, so space → ``Ġ`` (U+0120) and newline → ``Ċ`` (U+010A).
4. **BPE** (Sennrich et al. 2016, §3.2; ``llm_tokenizer_bpe_session``): repeatedly merge the adjacent
   pair with the lowest merge rank (its index in ``tokenizer.ggml.merges``), leftmost first on ties. A
   final symbol that is not a token is replaced by the tokens of its single ASCII bytes — none, for
   a byte character that is not a token. SmolLM2's vocabulary has no token for the bytes of U+0004,
   U+0006, U+0013, U+0014, U+0016, U+001D nor for the UTF-8 lead bytes F1 and F2 (code points
   U+40000–U+BFFFF, planes 4–11, all unassigned), and llama.cpp silently drops those bytes: so
   ``decode(encode(s)) == s`` holds for every text without those six characters and those planes.

Character classes are llama.cpp's own (``scripts/gen-unicode-data.py``, Unicode 15.1): letters L*,
numbers N*, and its explicit White_Space list (which, unlike ``str.isspace``, leaves out U+001C–U+001F).
They come from :mod:`unicodedata` plus the L/N characters Unicode 15.0/15.1 added over Python 3.11's
Unicode 14.0 (``_ADDED_IN_15``). On Python 3.10 (Unicode 13.0) the letters added in Unicode 14.0, and on
Python ≥ 3.14 those added in 16.0, are classified differently from llama.cpp.

References
----------
Sennrich, Haddow & Birch 2016, *Neural Machine Translation of Rare Words with Subword Units*, §3.2 (BPE).
Radford et al. 2019, *Language Models are Unsupervised Multitask Learners*, §2.2 (byte-level BPE).
llama.cpp ``src/llama-vocab.cpp`` (``tokenize``, ``tokenizer_st_partition``, ``llm_tokenizer_bpe_session``,
``token_to_piece``, ``detokenize``) and ``src/unicode.cpp`` (``unicode_regex_split``,
``unicode_regex_split_custom_gpt2``, ``unicode_byte_to_utf8_map``).
"""
from __future__ import annotations

import bisect
import functools
import heapq
import operator
import os
import re
import unicodedata
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

from ..core._types import ArrayLike
from ..models.llama import chat_prompt
from .gguf import open_gguf

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # GGUF tokenizer.ggml.token_type
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


def bytes_to_unicode() -> tuple[str, ...]:
    """GPT-2's byte → printable character table, indexed by byte (``unicode_byte_to_utf8_map``)."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    moved = [b for b in range(256) if b not in keep]
    table = {b: chr(b) for b in keep} | {b: chr(256 + i) for i, b in enumerate(moved)}
    return tuple(table[b] for b in range(256))


@dataclass(frozen=True)
class Tokenizer:
    """A GGUF ``gpt2`` vocabulary ready to tokenize: build with :func:`load_tokenizer` / :func:`make_tokenizer`."""

    tokens: tuple[str, ...] = field(repr=False)            # texts in byte-level characters (id = index)
    token_types: tuple[int, ...] = field(repr=False)       # GGUF token types: NORMAL, CONTROL, USER_DEFINED, …
    token_to_id: Mapping[str, int] = field(repr=False)     # text → id (a repeated text: its last id, as llama.cpp)
    ranks: Mapping[tuple[str, str], int] = field(repr=False)  # (left, right) → rank = index in the merges
    special: tuple[tuple[str, int], ...] = field(repr=False)  # (text, id), CONTROL/UNKNOWN/USER_DEFINED, longest first
    byte_encoder: tuple[str, ...] = field(repr=False)      # byte → character (bytes_to_unicode)
    bos_id: int | None = None
    eos_id: int | None = None
    add_bos: bool = False                                  # tokenizer.ggml.add_bos_token (absent: False)
    add_eos: bool = False                                  # tokenizer.ggml.add_eos_token (absent: False)
    chat_template: str | None = field(default=None, repr=False)  # tokenizer.chat_template (Jinja)

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)


def make_tokenizer(tokens: Sequence[str], merges: Sequence[str], token_types: Sequence[int] | None = None, *,
                   pre: str = "smollm", bos_id: int | None = None, eos_id: int | None = None,
                   add_bos: bool = False, add_eos: bool = False, chat_template: str | None = None) -> Tokenizer:
    """A :class:`Tokenizer` from the GGUF arrays: ``merges`` as ``"left right"`` strings, in rank order."""
    if pre not in SMOLLM_PRE:
        raise ValueError(f"pre={pre!r}: only llama.cpp's smollm pre-tokenizer rules are implemented {SMOLLM_PRE}")
    tokens = tuple(tokens)
    types = tuple(NORMAL for _ in tokens) if token_types is None else tuple(int(t) for t in token_types)
    if len(types) != len(tokens):
        raise ValueError(f"token_types has {len(types)} entries for {len(tokens)} tokens")
    token_to_id = {t: i for i, t in enumerate(tokens)}
    ranks: dict[tuple[str, str], int] = {}
    for r, m in enumerate(merges):
        cut = m.find(" ", 1)                # llama.cpp: word.find(' ', 1); the first rank of a pair wins
        if cut < 0:
            raise ValueError(f"merges[{r}] = {m!r} is not 'left right'")
        ranks.setdefault((m[:cut], m[cut + 1:]), r)
    special = sorted(((t, i) for i, t in enumerate(tokens) if types[i] in (CONTROL, UNKNOWN, USER_DEFINED)),
                     key=lambda s: (-len(s[0].encode()), s[1]))
    for name, v in (("bos_id", bos_id), ("eos_id", eos_id)):
        if v is not None and not 0 <= v < len(tokens):
            raise ValueError(f"{name}={v} is not a token id (vocabulary of {len(tokens)})")
    return Tokenizer(tokens, types, MappingProxyType(token_to_id), MappingProxyType(ranks), tuple(special),
                     bytes_to_unicode(), bos_id, eos_id, bool(add_bos), bool(add_eos), chat_template)


def load_tokenizer(path_or_reader: object) -> Tokenizer:
    """The tokenizer stored in a GGUF file.

    ``path_or_reader``: a path (its header is read by :func:`refquant.io.gguf.open_gguf`, ~0.2 s for
    SmolLM2), a ``GGUFFile`` from it, a ``gguf.GGUFReader``, or the metadata as a mapping (key → value).
    """
    if isinstance(path_or_reader, Mapping):
        meta = path_or_reader
    elif hasattr(path_or_reader, "metadata"):          # refquant.io.gguf.GGUFFile
        meta = path_or_reader.metadata
    elif hasattr(path_or_reader, "fields"):            # gguf.GGUFReader
        meta = {k: f.contents() for k, f in path_or_reader.fields.items() if k.startswith("tokenizer.")}
    else:
        meta = open_gguf(os.fspath(path_or_reader)).metadata
    get = meta.get
    if get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"path_or_reader: tokenizer.ggml.model is {get('tokenizer.ggml.model')!r}, not 'gpt2' "
                         "(byte-level BPE)")
    return make_tokenizer(get("tokenizer.ggml.tokens"), get("tokenizer.ggml.merges", []),
                          get("tokenizer.ggml.token_type"), pre=get("tokenizer.ggml.pre", "default"),
                          bos_id=get("tokenizer.ggml.bos_token_id"), eos_id=get("tokenizer.ggml.eos_token_id"),
                          add_bos=get("tokenizer.ggml.add_bos_token", False),
                          add_eos=get("tokenizer.ggml.add_eos_token", False),
                          chat_template=get("tokenizer.chat_template"))


def bpe(tok: Tokenizer, word: str) -> list[int]:
    """Token ids of one byte-level word: lowest-rank merge first, leftmost on ties (``llm_bigram_bpe``)."""
    sym = list(word)                                     # one symbol per byte character
    nxt = list(range(1, len(sym))) + [-1]
    prv = list(range(-1, len(sym) - 1))
    heap = []

    def push(left, right):
        if left >= 0 and right >= 0:
            rank = tok.ranks.get((sym[left], sym[right]))
            if rank is not None:
                heapq.heappush(heap, (rank, left, right, sym[left] + sym[right]))

    for i in range(len(sym) - 1):
        push(i, i + 1)
    while heap:
        _, left, right, text = heapq.heappop(heap)
        if not sym[left] or not sym[right] or sym[left] + sym[right] != text:
            continue                                     # outdated: a side was merged since
        sym[left], sym[right] = text, ""
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prv[nxt[right]] = left
        push(prv[left], left)
        push(left, nxt[left])
    ids = []
    for s in filter(None, sym):
        i = tok.token_to_id.get(s)
        if i is not None:
            ids.append(i)
        else:  # llama.cpp falls back to the tokens of the symbol's single bytes; a byte without one is dropped
            ids += [tok.token_to_id[chr(b)] for b in s.encode() if b < 0x80 and chr(b) in tok.token_to_id]
    return ids


def _split_special(tok: Tokenizer, text: str, parse_special: bool) -> list[str | int]:
    """``text`` cut at the special tokens' texts, longest first (``tokenizer_st_partition``): strings and ids."""
    parts: list[str | int] = [text]
    for s, i in tok.special:
        if not parse_special and tok.token_types[i] != USER_DEFINED:
            continue
        out: list[str | int] = []
        for p in parts:
            if isinstance(p, int) or s not in p:
                out.append(p)
                continue
            for k, piece in enumerate(p.split(s)):
                out += ([i] if k else []) + ([piece] if piece else [])
        parts = out
    return parts


def encode(tok: Tokenizer, text: str, *, add_bos: bool | None = None, add_eos: bool | None = None,
           parse_special: bool = True) -> list[int]:
    """Token ids of ``text``, equal to llama.cpp's ``llama_tokenize(vocab, text, add_special, parse_special)``.

    Parameters
    ----------
    tok : Tokenizer
    text : str
        Any text without lone surrogates (it must have a UTF-8 encoding).
    add_bos, add_eos : bool or None
        Prepend BOS / append EOS; None (default) follows the GGUF's ``add_bos_token`` / ``add_eos_token``
        as llama.cpp's ``add_special=True`` does (SmolLM2 adds neither).
    parse_special : bool
        Match the texts of CONTROL / UNKNOWN tokens (``<|im_start|>``, …) as those tokens; USER_DEFINED
        tokens are matched either way.

    Returns
    -------
    list of int
        Token ids. Each distinct pre-token word is merged once per call (memoised).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"text contains a lone surrogate at index {e.start}; it has no UTF-8 encoding") from None
    add_bos = tok.add_bos if add_bos is None else add_bos
    add_eos = tok.add_eos if add_eos is None else add_eos
    for name, flag, i in (("add_bos", add_bos, tok.bos_id), ("add_eos", add_eos, tok.eos_id)):
        if flag and i is None:
            raise ValueError(f"{name}=True but the vocabulary has no {name[4:]} token")
    to_chars = {b: c for b, c in enumerate(tok.byte_encoder)}  # latin-1 character of a byte → byte-level char
    ids = [tok.bos_id] if add_bos else []
    memo: dict[str, list[int]] = {}
    for part in _split_special(tok, text, parse_special):
        if isinstance(part, int):
            ids.append(part)
            continue
        for word in pretokenize(part):
            if word not in memo:
                memo[word] = bpe(tok, word.encode("utf-8").decode("latin-1").translate(to_chars))
            ids += memo[word]
    return ids + ([tok.eos_id] if add_eos else [])


def decode(tok: Tokenizer, ids: ArrayLike, *, special: bool = True) -> str:
    """The text of token ids (``llama_detokenize`` without space cleaning, which smollm turns off).

    Special tokens render as their text (``special=False``: as nothing), UNUSED and BYTE tokens as nothing
    (llama.cpp's ``token_to_piece``); a byte sequence that is not valid UTF-8 becomes U+FFFD.
    """
    byte_of = {c: b for b, c in enumerate(tok.byte_encoder)}
    out = bytearray()
    for i in ids:
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(f"ids must hold integers, got {i!r}") from None
        if not 0 <= i < tok.n_vocab:
            raise ValueError(f"ids contains {i}, not a token id in [0, {tok.n_vocab})")
        t, kind = tok.tokens[i], tok.token_types[i]
        if kind == NORMAL:
            out += bytes(byte_of[c] for c in t)
        elif kind == USER_DEFINED or (special and kind in (CONTROL, UNKNOWN)):
            out += t.encode()
    return out.decode("utf-8", errors="replace")


def apply_chat_template(tok: Tokenizer, messages: Sequence[Mapping[str, str]],
                        add_generation_prompt: bool = True) -> str:
    """The prompt text of ``messages`` under the GGUF's ChatML ``tokenizer.chat_template``.

    SmolLM2's template: when the first message is not ``system``, a default system message (the one
    written in the template) comes first; then ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message;
    then ``<|im_start|>assistant\\n`` if ``add_generation_prompt``. (llama.cpp's built-in ``chatml``, used
    without ``--jinja``, leaves the default system message out; HF transformers and ``--jinja`` keep it.)
    Rendered by :func:`refquant.models.llama.chat_prompt` with the template's default system message.
    """
    template = tok.chat_template or ""
    if "<|im_start|>" not in template:
        raise ValueError("the tokenizer's chat_template is not ChatML (<|im_start|>); only ChatML is implemented")
    if isinstance(messages, (str, bytes, Mapping)):
        raise TypeError(f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    default = re.search(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", template, re.S)
    return chat_prompt(list(messages), add_generation_prompt=add_generation_prompt,
                       default_system=default.group(1) if default else None)
