"""Kill a real `selfinstruct run` (tiny random Llama, the real transformers path) at named points and at
random instants; resume; the run directory must equal an uninterrupted run's byte for byte.

The kills come from the store's fault-injection switch (SELFINSTRUCT_FAULT), never from timing guesses.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from selfinstruct.store import FAULT_POINTS

ROOT = Path(__file__).resolve().parents[1]
# Small, but long enough to cross rounds: 8 rounds x 2 batches; loose filters so tasks are both accepted
# (short random text) and rejected (too_long), so every append point is reached.
JOB = ["max_rounds=8", "target=1000", "prompts_per_round=4", "prompts_per_batch=2", "generation.max_new_tokens=24",
       "instances.max_new_tokens=12", "answers.max_new_tokens=12", "generation.temperature=3.0",
       "generation.top_p=1.0", "filters.instruction=[length]", "filters.instance=[empty_output]",
       "filters.min_words=1", "filters.max_words=5", "stall.rounds_without_accept=10"]
COMPARED = ("tasks.jsonl", "rejected.jsonl")


def run(model: Path, out: Path, fault: str | None = None, trace: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFINSTRUCT_FAULT")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if fault:
        env["SELFINSTRUCT_FAULT"] = fault
    if trace:
        env["SELFINSTRUCT_FAULT_TRACE"] = str(trace)
    return subprocess.run([sys.executable, "-m", "selfinstruct", "run", "configs/default.yaml", *JOB,
                           f"model.name={model}", f"output_dir={out}", "--no-progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def progress_core(run_dir: Path) -> dict:
    p = json.loads((run_dir / "progress.json").read_text())
    t = {k: v for k, v in p["totals"].items() if k != "lm_seconds"}  # wall time differs by nature
    return {"cursor": p["cursor"], "sizes": p["sizes"], "rounds": p["rounds"], "totals": t,
            "stop_reason": p["stop_reason"], "seeds_digest": p["seeds_digest"]}


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    """An uninterrupted run, and the fault points it passed, in order."""
    out = tmp_path_factory.mktemp("chaos") / "ref"
    trace = out.parent / "trace.txt"
    p = run(tiny_model_dir, out, trace=trace)
    assert p.returncode == 0, p.stderr
    points = trace.read_text().split()
    ref = progress_core(out)
    assert ref["totals"]["accepted"] > 0 and ref["totals"]["rejected"] > 0, "the job must exercise both files"
    assert set(points) == set(FAULT_POINTS), f"some points never reached: {set(FAULT_POINTS) - set(points)}"
    return out, points


def assert_same_as_reference(out: Path, ref: Path) -> None:
    for name in COMPARED:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert progress_core(out) == progress_core(ref)
    config = [(d / "config.yaml").read_text().replace(str(d), "RUN") for d in (out, ref)]
    assert config[0] == config[1]


def kill_then_resume(model: Path, ref: Path, out: Path, fault: str) -> None:
    p = run(model, out, fault=fault)
    assert p.returncode == -signal.SIGKILL, f"not killed at {fault}: rc {p.returncode}\n{p.stderr[-2000:]}"
    p = run(model, out)
    assert p.returncode == 0, p.stderr
    assert_same_as_reference(out, ref)


# Arrival numbers chosen so each kill lands mid-run: the 3rd tasks append is in round 2.
NAMED = ["load@1", "torn_append@3", "tasks_appended@3", "rejected_appended@4", "progress_renamed@5",
         "round_end@2"]


@pytest.mark.parametrize("fault", NAMED)
def test_kill_at_named_point_then_resume_is_byte_identical(tiny_model_dir, reference, tmp_path, fault):
    ref, _ = reference
    kill_then_resume(tiny_model_dir, ref, tmp_path / "run", fault)


def test_named_points_cover_every_fault_point():
    assert {f.split("@")[0] for f in NAMED} == set(FAULT_POINTS)


def test_kill_during_load_of_a_resume_then_resume(tiny_model_dir, reference, tmp_path):
    """The create path loads the model before the directory exists; a resume loads it after opening."""
    ref, _ = reference
    out = tmp_path / "run"
    assert run(tiny_model_dir, out, fault="round_end@1").returncode == -signal.SIGKILL
    kill_then_resume(tiny_model_dir, ref, out, "load@1")


@pytest.mark.slow
def test_killed_at_20_random_instants_in_one_run_then_resumed(tiny_model_dir, reference, tmp_path):
    """One run killed again and again, each process at a random point of its own (load included), as a
    flaky machine would; every process must die where it was told to, and the end result must not change."""
    ref, points = reference
    out, rng = tmp_path / "run", random.Random(0)
    for n in range(20):
        k = rng.randint(1, 8)  # about two batches' worth of points: the chain crosses the whole run
        p = run(tiny_model_dir, out, fault=f"any@{k}")
        assert p.returncode == -signal.SIGKILL, f"kill {n + 1} (any@{k}) did not happen: rc {p.returncode}"
    assert json.loads((out / "progress.json").read_text())["cursor"]["round"] >= 3, "the kills stayed early"
    p = run(tiny_model_dir, out)
    assert p.returncode == 0, p.stderr
    assert_same_as_reference(out, ref)


def test_first_ctrl_c_stops_at_the_next_safe_point_with_one_line(tiny_model_dir, reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "run"
    p = run(tiny_model_dir, out, fault="tasks_appended@3=sigint")  # Ctrl-C while round 2's batch 1 commits
    assert p.returncode == 130, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last == f"stopped after round 2 batch 1; resume with: selfinstruct resume {out}"
    assert "Traceback" not in p.stderr
    assert json.loads((out / "progress.json").read_text())["cursor"] == {"round": 2, "batch": 1}
    p = subprocess.run([sys.executable, "-m", "selfinstruct", "resume", str(out), "--no-progress"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr
    assert_same_as_reference(out, ref)


def test_second_ctrl_c_stops_at_once_and_corrupts_nothing(tiny_model_dir, reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "run"
    p = run(tiny_model_dir, out, fault="tasks_appended@3=sigint2")  # two presses inside a commit
    assert p.returncode == 130, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()[-1]) < 200
    assert run(tiny_model_dir, out).returncode == 0
    assert_same_as_reference(out, ref)
