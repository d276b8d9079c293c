"""The openai backend against a scripted fault server on 127.0.0.1: order, retries, errors, keys, a whole job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from openai_server import FaultServer, answer
from selfinstruct import config as C
from selfinstruct.errors import ConfigError, ModelError
from selfinstruct.lm import GenerationParams
from selfinstruct.lm.fake import fake_score
from selfinstruct.lm.openai import BACKOFF_CAP_S, OpenAIBackend, request_seed

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-7f3a9c0d2e"  # must never show up in a log, an error or a run directory


@pytest.fixture
def server():
    with FaultServer() as s:
        yield s


def backend(url, sleeps=None, **kw) -> OpenAIBackend:
    kw.setdefault("timeout_s", 5.0)
    return OpenAIBackend(url, kw.pop("name", "test-model"), sleep=(sleeps.append if sleeps is not None else
                                                                   lambda s: None), **kw)


def expected(prompt: str, seed: int, i: int, chat: bool = False, max_tokens: int = 64) -> str:
    body = {"messages": [{"content": prompt}]} if chat else {"prompt": prompt}
    words = answer({**body, "seed": request_seed(seed, i)}).split()
    return " ".join(words[:max_tokens]) if len(words) >= max_tokens else answer({**body, "seed": request_seed(seed, i)})


PARAMS = GenerationParams(max_new_tokens=64, temperature=0.7, top_p=0.9)


def test_answers_keep_prompt_order_when_they_arrive_reversed(server):
    prompts = [f"prompt number {i}" for i in range(8)]
    server.order = prompts[::-1]  # the server answers the last prompt first, the first last
    out = backend(server.url, concurrency=8).generate(prompts, PARAMS, seed=11)
    assert server.answered == prompts[::-1]
    assert [c.text for c in out] == [expected(p, 11, i) for i, p in enumerate(prompts)]
    sent = sorted(server.requests, key=lambda b: prompts.index(b["prompt"]))
    assert [b["seed"] for b in sent] == [request_seed(11, i) for i in range(8)]
    assert len(set(b["seed"] for b in sent)) == 8
    assert all(b["max_tokens"] == 64 and b["temperature"] == 0.7 and b["top_p"] == 0.9 for b in sent)


def test_every_fault_is_retried_and_nothing_is_lost_or_doubled(server):
    server.plan("500", ("429", 7), "truncate", "reset", "garbage", "500")
    prompts = [f"task {i}" for i in range(5)]
    sleeps: list[float] = []
    out = backend(server.url, sleeps, concurrency=1, max_retries=6, backoff_s=0.01).generate(prompts, PARAMS, 3)
    assert [c.text for c in out] == [expected(p, 3, i) for i, p in enumerate(prompts)]
    assert sorted(server.answered) == sorted(prompts)  # each answered exactly once
    assert len(server.requests) == len(prompts) + 6  # one extra attempt per fault, no more
    assert 7 in sleeps or any(7 <= s for s in sleeps)  # Retry-After honoured
    assert len(sleeps) == 6 and all(s <= max(7, BACKOFF_CAP_S) for s in sleeps)


def test_backoff_is_exponential_and_its_jitter_deterministic(server):
    runs = []
    for _ in range(2):
        server.plan(*["500"] * 4)
        sleeps: list[float] = []
        backend(server.url, sleeps, concurrency=1, max_retries=4, backoff_s=0.1).generate(["one"], PARAMS, 5)
        runs.append(sleeps)
    assert runs[0] == runs[1] and len(runs[0]) == 4
    for k, s in enumerate(runs[0]):  # base * 2**k, times a jitter in [0.5, 1)
        assert 0.1 * 2 ** k * 0.5 <= s < 0.1 * 2 ** k


def test_a_request_that_hangs_past_the_timeout_is_retried(server):
    server.plan("hang")
    out = backend(server.url, timeout_s=0.2, concurrency=2).generate(["slow one", "fast one"], PARAMS, 1)
    assert [c.text for c in out] == [expected("slow one", 1, 0), expected("fast one", 1, 1)]
    assert len(server.requests) == 3


def test_retries_are_bounded_and_the_error_is_one_line(server):
    server.plan(*["500"] * 10)
    lm = backend(server.url, concurrency=1, max_retries=2)
    with pytest.raises(ModelError) as e:
        lm.generate(["x y z"], PARAMS, 0)
    assert len(server.requests) == 3
    assert "HTTP 500" in str(e.value) and "gave up after 3 attempts" in str(e.value) and "\n" not in str(e.value)


def test_a_timeout_every_time_ends_in_a_clear_error(server):
    server.plan("hang", "hang")
    with pytest.raises(ModelError, match=r"no answer within model.timeout_s = 0.2 s \(gave up after 2 attempts"):
        backend(server.url, timeout_s=0.2, max_retries=1).generate(["p"], PARAMS, 0)


def test_a_failed_request_stops_the_others_retrying(server):
    server.always = {"bad": ("400", "no such thing"), "busy": "500"}
    lm = backend(server.url, concurrency=2, max_retries=8, backoff_s=0.05)  # real backoff waits: 0.05 s doubling
    with pytest.raises(ModelError, match="HTTP 400: .*no such thing"):  # the real error, not the abandoned retry
        lm.generate(["busy", "bad"], PARAMS, 0)
    # "bad" fails at once; "busy" would take 9 attempts over ~10 s of backoff, but stops at the next one
    assert sum(b["prompt"] == "busy" for b in server.requests) <= 3


def test_malformed_answers(server):
    server.plan("nochoices")
    with pytest.raises(ModelError, match="malformed answer.*no choices"):
        backend(server.url, concurrency=1).generate(["p"], PARAMS, 0)
    assert len(server.requests) == 1  # a well-formed answer of the wrong shape is not retried
    server.plan(*["garbage"] * 3)
    with pytest.raises(ModelError, match="malformed answer \\(not JSON"):
        backend(server.url, concurrency=1, max_retries=2).generate(["p"], PARAMS, 0)


def test_model_not_served_is_found_at_load(server):
    with pytest.raises(ModelError, match="model 'other' is not served by http://127.0.0.1:\\d+/v1; it serves: test-model"):
        backend(server.url, name="other")


def test_connection_refused_is_found_at_load():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(ModelError, match=f"cannot reach the model server at http://127.0.0.1:{port}/v1.*is it running"):
        backend(f"http://127.0.0.1:{port}/v1")


def test_replicas_are_used_round_robin_and_a_retry_goes_to_the_next():
    with FaultServer() as a, FaultServer() as b:
        lm = backend([a.url, b.url], concurrency=4)
        prompts = [f"p {i}" for i in range(6)]
        out = lm.generate(prompts, PARAMS, 2)
        assert [c.text for c in out] == [expected(p, 2, i) for i, p in enumerate(prompts)]
        assert sorted(x["prompt"] for x in a.requests) == prompts[0::2]
        assert sorted(x["prompt"] for x in b.requests) == prompts[1::2]
        a.plan("500")
        assert lm.generate(["only"], PARAMS, 2)[0].text == expected("only", 2, 0)
        assert b.requests[-1]["prompt"] == "only"
        assert lm.environment() == {"backend": "openai", "base_url": [a.url, b.url], "model": "test-model",
                                    "served_model": "test-model", "endpoint": "completions"}


def test_chat_turns_stop_strings_penalty_and_finish_reasons(server):
    lm = backend(server.url)
    chat = lm.generate(["What is an orbit?"], GenerationParams(max_new_tokens=64, chat=True), 4)[0]
    assert server.requests[-1]["messages"] == [{"role": "user", "content": "What is an orbit?"}]
    assert chat.text == expected("What is an orbit?", 4, 0, chat=True)
    assert chat.meta["finish_reason"] == "eos" and chat.completion_tokens == len(chat.text.split())
    cut = lm.generate(["What is an orbit?"], GenerationParams(max_new_tokens=3, chat=True), 4)[0]
    assert cut.meta["finish_reason"] == "length" and cut.completion_tokens == 3
    stop = lm.generate(["a prompt"], GenerationParams(stop=("e",), repetition_penalty=1.15), 4)[0]
    assert "e" not in stop.text and stop.meta["finish_reason"] == "stop"
    assert server.requests[-1]["stop"] == ["e"] and server.requests[-1]["repetition_penalty"] == 1.15
    assert "repetition_penalty" not in server.requests[0]  # 1.0 is not sent: servers that refuse it still work
    with pytest.raises(ModelError, match="no_repeat_ngram_size"):
        lm.generate(["p"], GenerationParams(no_repeat_ngram_size=3), 0)


def test_one_setting_per_prompt_goes_into_each_request(server):
    """Issue 7: a call mixing stages (few-shot completions and chat turns) sends each its own settings."""
    each = [GenerationParams(max_new_tokens=7, temperature=0.0, stop=("\n\n",)),
            GenerationParams(max_new_tokens=64, temperature=0.5, top_p=0.9, chat=True, repetition_penalty=1.15)]
    out = backend(server.url, concurrency=2).generate(["Task 1: x", "What is an orbit?"], each, seed=3)
    by_kind = {("messages" in b): b for b in server.requests}
    assert by_kind[False]["prompt"] == "Task 1: x" and by_kind[False]["max_tokens"] == 7
    assert by_kind[False]["stop"] == ["\n\n"] and by_kind[False]["temperature"] == 0.0
    assert by_kind[True]["messages"] == [{"role": "user", "content": "What is an orbit?"}]
    assert (by_kind[True]["max_tokens"], by_kind[True]["temperature"], by_kind[True]["repetition_penalty"]) == (
        64, 0.5, 1.15)
    assert out[1].text == expected("What is an orbit?", 3, 1, chat=True)


def test_endpoint_chat_sends_every_prompt_as_a_user_turn(server):
    backend(server.url, endpoint="chat").generate(["Task 1: x"], PARAMS, 0)
    assert "messages" in server.requests[-1]


def test_scoring_by_echo_and_by_top_logprobs(server):
    prompts = ["Task: Classify the sentiment.\nIs it classification?", "Task: Write a poem.\nIs it classification?"]
    lm = backend(server.url, concurrency=2)
    got = lm.score(prompts, [" Yes", " Yes"])
    assert got == pytest.approx([fake_score(p, " Yes") for p in prompts])
    assert all(b["echo"] and b["logprobs"] == 1 for b in server.requests)
    chat = lm.score(prompts, [" No", " No"], chat=True)
    assert chat == pytest.approx([fake_score(p, " No") for p in prompts])
    assert server.requests[-1]["top_logprobs"] == 20


def test_a_server_without_logprobs_says_it_cannot_score():
    with FaultServer(logprobs=False) as s:
        lm = backend(s.url)
        with pytest.raises(ModelError, match="returned no prompt log-probabilities .*cannot score"):
            lm.score(["p"], [" Yes"])
        with pytest.raises(ModelError, match="returned no chat log-probabilities"):
            lm.score(["p"], [" Yes"], chat=True)
    with FaultServer(echo=False) as s:  # logprobs for the generated token only: must not read as log P = 0
        with pytest.raises(ModelError, match="generated tokens only .*echo not honoured"):
            backend(s.url).score(["Is it classification?"], [" Yes"])


def test_the_key_goes_in_a_header_and_nowhere_else(server, monkeypatch, caplog):
    monkeypatch.setenv("SI_TEST_KEY", KEY)
    lm = backend(server.url, api_key_env="SI_TEST_KEY")
    assert server.headers_seen[-1]["Authorization"] == f"Bearer {KEY}"
    server.plan(("400", f"bad key {KEY}"))  # a server that echoes the key back
    with pytest.raises(ModelError) as e:
        lm.generate(["p"], PARAMS, 0)
    assert KEY not in str(e.value) and "***" in str(e.value)
    assert KEY not in json.dumps(lm.environment()) and KEY not in caplog.text
    monkeypatch.delenv("SI_TEST_KEY")
    with pytest.raises(ModelError, match="SI_TEST_KEY, which is not set"):
        backend(server.url, api_key_env="SI_TEST_KEY")


def test_config_validation():
    with pytest.raises(ConfigError) as e:
        C.from_dict({"model": {"backend": "openai", "base_url": ["http://u:hunter2@h:1/v1", "ftp://x", "http://a/v1"],
                               "concurrency": 0, "timeout_s": 0, "api_key_env": "sk-abc"},
                     "answers": {"no_repeat_ngram_size": 3}})
    msg = str(e.value)
    for part in ("model.base_url[0]: must not hold credentials", "model.base_url[1]: must be an http",
                 "model.concurrency: must be >= 1", "model.timeout_s: must be > 0", "model.name: the served model",
                 "model.api_key_env: the NAME", "answers.no_repeat_ngram_size: not part of the OpenAI API"):
        assert part in msg
    assert "hunter2" not in msg
    with pytest.raises(ConfigError, match="model.base_url: required with model.backend: openai"):
        C.from_dict({"model": {"backend": "openai", "name": "m"}})
    with pytest.raises(ConfigError, match="model.base_url: only used with model.backend: openai"):
        C.from_dict({"model": {"base_url": "http://a/v1"}})


def test_speed_keys_may_change_on_resume_and_decision_keys_may_not():
    base = {"model": {"backend": "openai", "name": "m", "base_url": "http://a:1/v1"}}
    a = C.from_dict(base)
    b = C.from_dict({"model": {**base["model"], "base_url": ["http://a:1/v1", "http://b:1/v1"], "concurrency": 64,
                               "timeout_s": 5.0, "max_retries": 9, "api_key_env": "K"}})
    assert C.diff(a.to_dict(), b.to_dict())[1] == [] and a.fingerprint() == b.fingerprint()
    c = C.from_dict({"model": {**base["model"], "endpoint": "chat", "name": "n"}})
    assert C.diff(a.to_dict(), c.to_dict())[1] == ["model.endpoint", "model.name"]


# ---- a whole job against the fault server ----

JOB = ["target=12", "max_rounds=4", "prompts_per_round=4", "prompts_per_batch=2", "model.backend=openai",
       "model.name=test-model", "model.api_key_env=SI_TEST_KEY", "model.concurrency=4", "model.timeout_s=5",
       "--no-progress"]


def selfinstruct(url: str, *args, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFINSTRUCT_FAULT")}
    env["SI_TEST_KEY"] = KEY
    if fault:
        env["SELFINSTRUCT_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "selfinstruct", *args, f"model.base_url={url}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def run_dir_text(run: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(run.iterdir()) if p.is_file())


def test_a_job_on_the_server_survives_faults_and_a_kill(server, tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    server.plan("500", ("429", 0), "truncate")
    p = selfinstruct(server.url, "run", "configs/default.yaml", f"output_dir={ref}", *JOB)
    assert p.returncode == 0, p.stderr
    tasks = (ref / "tasks.jsonl").read_text().splitlines()
    assert tasks, p.stderr
    assert all(json.loads(t)["meta"]["round"] >= 1 for t in tasks)
    assert any(b.get("echo") for b in server.requests)  # classification scored by log-probabilities
    assert any("messages" in b for b in server.requests)  # outputs answered as chat turns

    p = selfinstruct(server.url, "run", "configs/default.yaml", f"output_dir={killed}", *JOB,
                     fault="rejected_appended@2=kill")
    assert p.returncode == -9
    p = selfinstruct(server.url, "run", "configs/default.yaml", f"output_dir={killed}", *JOB)
    assert p.returncode == 0, p.stderr
    for name in ("tasks.jsonl", "rejected.jsonl"):
        assert (killed / name).read_bytes() == (ref / name).read_bytes()
    for out in (ref, killed):
        assert KEY not in run_dir_text(out)
    assert KEY not in p.stderr + p.stdout
    env = json.loads((ref / "progress.json").read_text())["environment"]
    assert env["base_url"] == server.url and env["endpoint"] == "completions"
