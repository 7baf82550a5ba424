"""Byte-level BPE tokenizer of a GGUF ``gpt2``-type vocabulary (SmolLM2), token for token as llama.cpp.

``encode`` runs llama.cpp's ``llama_vocab::impl::tokenize`` (``src/llama-vocab.cpp``) in four steps:

1. **Special tokens** (``tokenizer_st_partition``): the texts of the CONTROL / UNKNOWN tokens (with
   ``parse_special``) and of the USER_DEFINED tokens (always) are cut out of the text as whole strings,
   longest first, before anything else; the text between them is tokenized piece by piece. (The
   LSTRIP / RSTRIP attributes llama.cpp sets by model name for a few models, not SmolLM2, are not mirrored.)
2. **Pre-tokenizer** (``unicode_regex_split`` with the ``smollm`` list): numbers one character each, then
   GPT-2's word pattern as llama.cpp scans it, in :mod:`refquant.io.pretokenize`.
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

References
----------
Sennrich, Haddow & Birch 2016, *Neural Machine Translation of Rare Words with Subword Units*, §3.2 (BPE).
Radford et al. 2019, *Language Models are Unsupervised Multitask Learners*, §2.2 (byte-level BPE).
llama.cpp ``src/llama-vocab.cpp`` (``tokenize``, ``tokenizer_st_partition``, ``llm_tokenizer_bpe_session``,
``token_to_piece``, ``detokenize``) and ``src/unicode.cpp`` (``unicode_regex_split``,
``unicode_regex_split_custom_gpt2``, ``unicode_byte_to_utf8_map``).
"""
from __future__ import annotations

import heapq
import operator
import os
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

from ..core._types import ArrayLike
from ..models.llama_generate import chat_prompt
from .gguf import open_gguf
from .pretokenize import SMOLLM_PRE, pretokenize

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # GGUF tokenizer.ggml.token_type

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
    Rendered by :func:`refquant.models.llama_generate.chat_prompt` with the template's default system message.
    """
    template = tok.chat_template or ""
    if "<|im_start|>" not in template:
        raise ValueError("the tokenizer's chat_template is not ChatML (<|im_start|>); only ChatML is implemented")
    if isinstance(messages, (str, bytes, Mapping)):
        raise TypeError(f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    default = re.search(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", template, re.S)
    return chat_prompt(list(messages), add_generation_prompt=add_generation_prompt,
                       default_system=default.group(1) if default else None)
