"""Decoding a completion cut at any token: never a broken character (issue 10, item 5)."""

from __future__ import annotations

import pytest

from selfinstruct.lm.base import decode_whole_chars
from tests.conftest import build_tiny_tokenizer

TEXTS = ["将下面的三个元素选出最重要的。", "把下面的词语按字数从少到多排列：苹果、香蕉", "Mixed 中文 and emoji 🙂 text"]


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_every_cut_decodes_to_whole_characters(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text)  # byte-level: the CJK characters take several tokens each, so cuts split them
    broken = 0
    for n in range(len(ids) + 1):
        plain = tok.decode(ids[:n], skip_special_tokens=True)
        broken += plain.endswith("\ufffd")
        got = decode_whole_chars(tok, ids[:n])
        assert "\ufffd" not in got
        assert got == plain.rstrip("\ufffd")  # only the unfinished character goes
        assert text.startswith(got)
    assert broken > 0  # the plain decode does break characters at these cuts
    assert decode_whole_chars(tok, ids) == text


def test_bytes_that_were_never_a_character_are_kept_for_the_filter(tok):
    lone = tok.convert_tokens_to_ids(["Ģ"])  # byte 0x80 alone in the byte-level alphabet: no character starts so
    ids = tok("ok ", add_special_tokens=False)["input_ids"] + lone * 4
    assert decode_whole_chars(tok, ids).endswith("\ufffd")
