"""The openai backend against a real `transformers serve` on 127.0.0.1 (the tiny random Llama, offline)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from selfinstruct.errors import ModelError
from selfinstruct.lm import GenerationParams
from selfinstruct.lm.openai import OpenAIBackend

ROOT = Path(__file__).resolve().parents[1]
SERVING = all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "openai"))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SERVING, reason="transformers serving extra not installed "
                                                   "(pip install -e '.[serving]')")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    """`transformers serve` pinned to the tiny model's directory; yields (base_url, model id)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(log.parent / "hf")}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "transformers.cli.transformers", "serve", str(tiny_model_dir),
                                 "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # readiness: the server answers /health (or has died, which fails at once)
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"transformers serve not up after 120 s: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield url + "/v1", str(tiny_model_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_chat_endpoint_end_to_end(served):
    url, model = served
    lm = OpenAIBackend(url, model, endpoint="chat", concurrency=3, timeout_s=60)
    assert lm.environment()["served_model"] == model and lm.has_chat_template
    prompts = ["Write a haiku about rivers.", "Name three colours.", "What is 2 + 2?"]
    params = GenerationParams(max_new_tokens=6, temperature=0.0, top_p=1.0)
    out = lm.generate(prompts, params, seed=1)
    assert len(out) == 3 and all(isinstance(c.text, str) for c in out)
    assert all(c.completion_tokens > 0 and c.prompt_tokens > 0 for c in out)
    assert all(c.meta["finish_reason"] in ("eos", "stop", "length") for c in out)
    assert [c.text for c in lm.generate(prompts, params, seed=1)] == [c.text for c in out]  # greedy repeats


def test_what_transformers_serve_does_not_do_is_a_clear_error(served):
    url, model = served
    lm = OpenAIBackend(url, model, endpoint="chat", timeout_s=60)
    with pytest.raises(ModelError, match="no chat log-probabilities .*cannot score"):
        lm.score(["Is it classification?"], [" Yes"])
    with pytest.raises(ModelError, match="HTTP 422.*does not take repetition_penalty"):
        lm.generate(["hi"], GenerationParams(max_new_tokens=2, repetition_penalty=1.15), 0)
    with pytest.raises(ModelError, match="is not served by"):
        OpenAIBackend(url, "some/other-model")


def test_a_small_job_runs_on_transformers_serve(served, tmp_path):
    url, model = served
    out = tmp_path / "run"
    # alpaca style: no classification step (transformers serve returns no log-probabilities)
    job = ["style=alpaca", "target=5", "max_rounds=1", "prompts_per_round=2", "prompts_per_batch=2",
           "generation.max_new_tokens=24", "answers.max_new_tokens=8", "answers.repetition_penalty=1.0",
           "model.backend=openai", f"model.base_url={url}", f"model.name={model}", "model.endpoint=chat",
           f"output_dir={out}", "--no-progress"]
    p = subprocess.run([sys.executable, "-m", "selfinstruct", "run", "configs/alpaca.yaml", *job], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    progress = json.loads((out / "progress.json").read_text())
    assert progress["cursor"]["round"] >= 1 and progress["totals"]["completion_tokens"] > 0
    assert progress["environment"]["endpoint"] == "chat"
