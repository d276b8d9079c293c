"""Continuous batching (selfinstruct.lm.batching) on the tiny random Llama: same rows as a per-row reference."""

from __future__ import annotations

import pytest

from selfinstruct.lm.base import GenerationParams, apply_stop
from selfinstruct.lm.batching import _banned_ngram_tokens
from selfinstruct.lm.hf import HFBackend

PROMPTS = [
    "Give three tips.",
    "Write a short poem about the sea and the lazy dog.",
    "1.",
    "Instruction: translate the sentence into French.\nInput: Where is the station?\nOutput:",
    "Classify the sentiment of this review as positive or negative.",
    "Come up with a series of tasks:\n1.",
    "The quick brown fox",
]
GREEDY = GenerationParams(max_new_tokens=16, temperature=0.0)
HOT = GenerationParams(max_new_tokens=16, temperature=3.0, top_p=0.9)  # the tiny model is very peaked


def texts(completions):
    return [c.text for c in completions]


@pytest.fixture(scope="module")
def backends(tiny_model_dir):
    """Continuous with 2 slots (so freed slots are refilled), and the old static path, in float32."""
    cont = HFBackend(str(tiny_model_dir), dtype="float32", batch_size=2)
    static = HFBackend(str(tiny_model_dir), dtype="float32", batch_size=2, continuous=False)
    assert cont.batching == "continuous" and static.batching == "static"
    return cont, static


def reference(lm, prompt: str, params: GenerationParams) -> str:
    """One prompt alone through plain model.generate: no padding, no batch."""
    import torch

    ids = lm._encode([prompt], False)[0]
    out = lm.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            max_new_tokens=params.max_new_tokens, do_sample=False,
                            eos_token_id=sorted(lm.eos_ids), pad_token_id=lm.tokenizer.pad_token_id)
    new = [t for t in out[0, len(ids):].tolist() if t not in lm.eos_ids]
    return apply_stop(lm.tokenizer.decode(new, skip_special_tokens=True), params.stop)


def test_greedy_matches_per_row_generate_and_keeps_order(backends):
    cont, _ = backends
    got = cont.generate(PROMPTS, GREEDY, seed=0)
    assert texts(got) == [reference(cont, p, GREEDY) for p in PROMPTS]
    assert cont.batcher.max_rows <= 2


def test_greedy_matches_static_path_with_stops_and_penalties(backends):
    cont, static = backends
    for params in (GREEDY, GenerationParams(max_new_tokens=16, temperature=0.0, repetition_penalty=1.3),
                   GenerationParams(max_new_tokens=16, temperature=0.0, no_repeat_ngram_size=2)):
        a, b = cont.generate(PROMPTS, params, seed=0), static.generate(PROMPTS, params, seed=0)
        assert texts(a) == texts(b)
        assert [c.completion_tokens for c in a] == [c.completion_tokens for c in b]
        assert [c.meta for c in a] == [c.meta for c in b]
    # the penalties do change something, or the comparison above would prove nothing about them
    assert texts(cont.generate(PROMPTS, GenerationParams(max_new_tokens=16, temperature=0.0,
                                                         no_repeat_ngram_size=2), 0)) != texts(
        cont.generate(PROMPTS, GREEDY, 0))


def test_stop_strings_end_rows_and_cut_text(backends):
    cont, static = backends
    full = cont.generate(PROMPTS, GREEDY, seed=0)
    stops = tuple(sorted({c.text[3:5] for c in full if len(c.text) > 6}))
    assert stops, "the tiny model wrote nothing long enough to cut"
    params = GenerationParams(max_new_tokens=16, temperature=0.0, stop=stops)
    cut = cont.generate(PROMPTS, params, seed=0)
    assert texts(cut) == texts(static.generate(PROMPTS, params, seed=0))
    for f, c in zip(full, cut):
        assert not any(s in c.text for s in stops)
        assert c.text == apply_stop(f.text, stops)
        if c.meta["finish_reason"] == "stop":
            assert c.completion_tokens < f.completion_tokens or f.meta["finish_reason"] != "length"
    assert any(c.meta["finish_reason"] == "stop" for c in cut)


def test_finished_rows_leave_the_batch(backends):
    """Every decode step feeds only live rows: rows fed = tokens generated minus each row's prefill token."""
    cont, _ = backends
    stops = tuple(sorted({c.text[2:4] for c in cont.generate(PROMPTS, GREEDY, 0) if len(c.text) > 6}))
    params = GenerationParams(max_new_tokens=16, temperature=0.0, stop=stops)  # rows end at different steps
    before = cont.batcher.row_steps
    out = cont.generate(PROMPTS, params, seed=0)
    lengths = {c.completion_tokens for c in out}
    assert len(lengths) > 1
    assert cont.batcher.row_steps - before == sum(c.completion_tokens - 1 for c in out)


def test_sampling_reproducible_and_independent_of_slots(tiny_model_dir, backends):
    cont, _ = backends
    first = texts(cont.generate(PROMPTS, HOT, seed=3))
    assert texts(cont.generate(PROMPTS, HOT, seed=3)) == first
    assert texts(cont.generate(PROMPTS, HOT, seed=4)) != first
    # each prompt samples from its own generator: how many rows share a pass does not change its sample
    for slots in (1, 7):
        other = HFBackend(str(tiny_model_dir), dtype="float32", batch_size=slots)
        assert texts(other.generate(PROMPTS, HOT, seed=3)) == first


def test_max_new_tokens_and_finish_reasons(backends):
    cont, _ = backends
    params = GenerationParams(max_new_tokens=3, temperature=3.0, top_p=1.0)
    for c in cont.generate(PROMPTS, params, seed=0):
        assert 1 <= c.completion_tokens <= 3
        want = {"length", "eos"} if c.completion_tokens == 3 else {"eos"}  # EOS can be the 3rd token too
        assert c.meta["finish_reason"] in want


def test_mixed_settings_in_one_call_match_each_setting_alone(backends):
    """Issue 7: prompts of several stages share one queue; each row keeps its own sampling and stopping."""
    cont, static = backends
    first = cont.generate(PROMPTS, GREEDY, 0)
    stops = tuple(sorted({c.text[3:5] for c in first if len(c.text) > 6}))
    settings = [GREEDY, HOT, GenerationParams(max_new_tokens=5, temperature=0.0, stop=stops, repetition_penalty=1.3),
                GenerationParams(max_new_tokens=16, temperature=0.0, chat=False, no_repeat_ngram_size=2)]
    each = [settings[i % len(settings)] for i in range(len(PROMPTS))]
    for lm in (cont, static):
        mixed = lm.generate(PROMPTS, each, seed=5)
        for setting in settings:
            idx = [i for i, p in enumerate(each) if p == setting]
            alone = lm.generate([PROMPTS[i] for i in idx], setting, seed=5)
            if setting.temperature == 0:  # greedy rows do not depend on their neighbours or index
                assert [mixed[i].text for i in idx] == texts(alone)
                assert [mixed[i].meta for i in idx] == [c.meta for c in alone]
            assert all(mixed[i].completion_tokens <= setting.max_new_tokens for i in idx)
    # a sampled row draws from its own generator, seeded by its index in the call: slots change nothing
    two = cont.generate(PROMPTS, each, seed=5)
    assert texts(two) == texts(cont.generate(PROMPTS, each, seed=5))
    with pytest.raises(ValueError, match="one per prompt"):
        cont.generate(PROMPTS, each[:-1], seed=5)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_banned_ngrams_match_transformers(n):
    import torch
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    seq = [5, 6, 5, 6, 7, 5, 6, 5]
    scores = NoRepeatNGramLogitsProcessor(n)(torch.tensor([seq]), torch.zeros(1, 10))
    want = sorted(int(i) for i in (scores[0] == float("-inf")).nonzero()[:, 0])
    assert _banned_ngram_tokens(seq, n) == want


def test_slot_cache_layer_holds_what_dynamic_layer_holds_and_writes_steps_in_place():
    import torch
    from transformers.cache_utils import DynamicLayer

    from selfinstruct.lm.batching import CACHE_ROOM, _slot_layer_class

    gen = torch.Generator().manual_seed(0)
    slot, plain = _slot_layer_class()(), DynamicLayer()
    buffers = set()

    def step(width, rows=4):
        k, v = (torch.randn(rows, 2, width, 8, generator=gen) for _ in range(2))
        got, want = slot.update(k, v), plain.update(k, v)
        for a, b in zip(got, want):
            assert torch.equal(a, b)
        buffers.add(id(slot._buffers[0]))

    step(5)  # prefill
    for _ in range(2 * CACHE_ROOM + 3):  # decode steps, past the reserved room twice
        step(1)
    assert len(buffers) == 3  # the prefill's buffer and two regrowths, not one copy per step
    keep = torch.tensor([0, 2])  # the batcher evicts rows by assigning keys/values
    for layer in (slot, plain):
        layer.keys, layer.values = layer.keys[keep, :, 3:], layer.values[keep, :, 3:]
    for _ in range(3):
        step(1, rows=2)
    assert torch.equal(slot.keys, plain.keys) and torch.equal(slot.values, plain.values)
    assert slot.get_seq_length() == plain.get_seq_length() == 5 + 2 * CACHE_ROOM + 3 - 3 + 3


def test_nucleus_keeps_what_transformers_top_p_keeps():
    import torch
    from transformers.generation.logits_process import TopPLogitsWarper

    from selfinstruct.lm.batching import nucleus

    gen = torch.Generator().manual_seed(0)
    # sharp rows (nucleus of a few tokens), flat rows (nucleus past the peek: the warper's own path)
    logits = torch.cat([torch.randn(6, 5000, generator=gen) * 6, torch.randn(3, 5000, generator=gen) * 0.1])
    for top_p in (0.1, 0.5, 0.9, 0.99):
        want = TopPLogitsWarper(top_p)(None, logits.clone())
        got = nucleus(logits, top_p, peek=64)
        assert torch.equal(got.isinf(), want.isinf()), top_p
        assert torch.equal(got[~got.isinf()], want[~want.isinf()])
    kept = (~nucleus(logits, 0.5, peek=64).isinf()).sum(-1)
    assert kept[:6].max() < 64 < kept[6:].min()  # both paths were taken
