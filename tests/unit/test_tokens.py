"""Tests of effdepth.tokens: labels of single tokens that are fragments of a UTF-8 character."""

from __future__ import annotations

from pathlib import Path

import pytest

from effdepth import engine
from effdepth.tokens import token_bytes, token_label, token_labels

SMOLLM2_HF = Path(__file__).resolve().parents[2] / "cache" / "models" / "smollm2-135m" / "hf"
TEXT = "🙂 שלום"


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    if not (SMOLLM2_HF / "tokenizer.json").is_file():
        pytest.skip(f"the safetensors copy of smollm2-135m is not at {SMOLLM2_HF}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(SMOLLM2_HF)


@pytest.mark.slow
def test_byte_level_fragments_show_their_bytes(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # the problem: decoded alone they are U+FFFD
    labels = token_labels(tok, ids)
    assert engine.token_strings(tok, ids) == labels
    assert not any("\ufffd" in label for label in labels)
    fragments = [label for i, label in zip(ids, labels) if "\ufffd" in tok.decode([i])]
    assert fragments and all("\\x" in label for label in fragments)
    assert labels[0] == "\\xf0\\x9f"  # the first half of 🙂 (f0 9f 99 82)
    assert b"".join(token_bytes(tok, i) for i in ids) == TEXT.encode("utf-8")
    # whole tokens keep their plain decode
    plain = tok("The capital of France", add_special_tokens=False)["input_ids"]
    assert token_labels(tok, plain) == [tok.decode([i]) for i in plain]


class _FakeSentencePiece:
    """A SentencePiece-style tokenizer with byte-fallback pieces: <0xF0> etc. decode alone to U+FFFD."""

    pieces = ["<unk>", "▁hello", "<0xF0>", "<0x9F>", "<weird>"]

    def convert_ids_to_tokens(self, token_id):
        return self.pieces[token_id]

    def decode(self, ids):
        piece = self.pieces[ids[0]]
        return "\ufffd" if piece.startswith("<0x") or piece == "<weird>" else piece.replace("▁", " ")


def test_sentencepiece_byte_fallback_pieces():
    tok = _FakeSentencePiece()
    assert token_labels(tok, [1, 2, 3]) == [" hello", "\\xf0", "\\x9f"]
    assert token_bytes(tok, 2) == b"\xf0"
    assert token_label(tok, 4) == "<weird>"  # neither byte-level nor byte fallback: the vocabulary string


class _ByteFallbackVocab:
    """Every id is a SentencePiece byte-fallback piece <0xNN> (NN = id + 128: never a whole character)."""

    def convert_ids_to_tokens(self, token_id):
        return f"<0x{(token_id + 128) % 256:02X}>"

    def decode(self, ids):
        return "\ufffd"


def test_logit_lens_top_tokens_use_the_labels():
    """The logit-lens top-k table labels its tokens like the heatmap axes: bytes, not U+FFFD."""
    from effdepth.arch import taps
    from effdepth.capture import capture
    from effdepth.probes import logit_lens
    from tests.tiny import random_ids, tiny_model

    model = tiny_model("llama")
    _, top = logit_lens.logit_lens(capture(model, random_ids(6)), taps(model), tokenizer=_ByteFallbackVocab())
    assert len(top) > 0 and not top["token"].str.contains("\ufffd").any()
    expected = top["token_id"].map(lambda i: f"\\x{(int(i) + 128) % 256:02x}")
    assert top["token"].tolist() == expected.tolist()
