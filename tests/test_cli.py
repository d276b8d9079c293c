"""The real entry point in a subprocess: exit codes, messages, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, rows

FAST = ["model.backend=fake", "target=40", "max_rounds=3", "prompts_per_round=6", "prompts_per_batch=2"]


def cli(*args, cwd=None, env=None, check_rc=None, timeout=120) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    p = subprocess.run([sys.executable, "-m", "selfinstruct", *map(str, args)], cwd=cwd or ROOT, env=e,
                       capture_output=True, text=True, timeout=timeout)
    if check_rc is not None:
        assert p.returncode == check_rc, p.stderr
    return p


def test_validate_reports_every_problem_with_its_key():
    p = cli("validate", "configs/default.yaml", "target=-1", "prompt.human_fraction=x", "model.nme=y")
    assert p.returncode == 1
    assert p.stderr.startswith("Error: configs/default.yaml: 3 problem(s)")
    for key in ("target:", "prompt.human_fraction:", "model.nme: unknown key"):
        assert key in p.stderr


def test_bad_override_and_missing_config_fail_cleanly(tmp_path):
    p = cli("run", "configs/default.yaml", "novalue")
    assert p.returncode == 1 and "must look like key=value" in p.stderr and "Traceback" not in p.stderr
    p = cli("run", tmp_path / "nope.yaml")
    assert p.returncode == 1 and "cannot read config" in p.stderr


def test_bad_seed_file_names_file_and_line(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "ok task here", "output": "x"}\n{"instruction": 5}\n')
    p = cli("validate", "configs/default.yaml", f"seed_tasks={seeds}")
    assert p.returncode == 1 and f"{seeds}:2: 'instruction' must be a string" in p.stderr


def test_run_status_export(tmp_path):
    out = tmp_path / "run"
    cli("run", "configs/default.yaml", *FAST, f"output_dir={out}", "--no-progress", check_rc=0)
    tasks = rows(out / "tasks.jsonl")
    assert len(tasks) >= 40
    p = cli("status", out, check_rc=0)
    assert "state: finished: target reached" in p.stdout and "per round:" in p.stdout
    assert "lineage depth: 1:" in p.stdout and "rejected by stage:reason:" in p.stdout
    cli("export", out, "--format", "alpaca", "-o", tmp_path / "a.jsonl", check_rc=0)
    alpaca = rows(tmp_path / "a.jsonl")
    assert len(alpaca) == sum(len(t["instances"]) for t in tasks)
    assert set(alpaca[0]) == {"instruction", "input", "output"}
    cli("export", out, "--format", "messages", "-o", tmp_path / "m.jsonl", check_rc=0)
    msg = rows(tmp_path / "m.jsonl")[0]["messages"]
    assert [m["role"] for m in msg] == ["user", "assistant"]
    cli("export", out, "--format", "jsonl", "-o", tmp_path / "t.jsonl", check_rc=0)
    assert rows(tmp_path / "t.jsonl") == tasks
    card = (tmp_path / "README.md").read_text(encoding="utf-8")  # the card names what the run recorded
    env = json.loads((out / "progress.json").read_text())["environment"]
    assert env["model"] and f"| model | `{env['model']}` |" in card and "path: t.jsonl" in card
    assert "seed file license: apache-2.0" in card  # configs/default.yaml names the shipped seeds' license
    # running a finished job again does no new work
    before = (out / "tasks.jsonl").read_bytes()
    cli("run", "configs/default.yaml", *FAST, f"output_dir={out}", "--no-progress", check_rc=0)
    assert (out / "tasks.jsonl").read_bytes() == before


def test_resume_refuses_decision_changes_and_allows_limits(tmp_path):
    out = tmp_path / "run"
    cli("run", "configs/default.yaml", *FAST, "target=10", f"output_dir={out}", "--no-progress", check_rc=0)
    p = cli("run", "configs/default.yaml", *FAST, "target=10", "prompt.human_fraction=0.5", f"output_dir={out}")
    assert p.returncode == 1 and "prompt.human_fraction: 0.75 -> 0.5" in p.stderr
    n = len(rows(out / "tasks.jsonl"))
    p = cli("resume", out, "target=30", "--no-progress", check_rc=0)
    assert "target changed to 30" in p.stderr
    assert len(rows(out / "tasks.jsonl")) >= 30 > n
    p = cli("resume", out, "seed=3")
    assert p.returncode == 1 and "seed: 0 -> 3" in p.stderr


def test_status_and_export_on_a_non_run_directory(tmp_path):
    p = cli("status", tmp_path)
    assert p.returncode == 1 and p.stderr.startswith("Error: ") and "progress.json: missing" in p.stderr
    p = cli("export", tmp_path / "none", "-o", tmp_path / "x.jsonl")
    assert p.returncode == 1 and "no such run directory" in p.stderr


@pytest.mark.parametrize("cfg", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_validates_through_the_cli(cfg):
    p = cli("validate", f"configs/{cfg}", check_rc=0)
    assert ("OK (108 seed tasks" if cfg == "zh.yaml" else "OK (175 seed tasks") in p.stdout


def test_resume_refuses_a_run_from_an_older_version(tmp_path):
    """A saved config without today's keys (e.g. instances.response) would switch behaviour mid-run."""
    out = tmp_path / "run"
    cli("run", "configs/default.yaml", *FAST, "target=3", f"output_dir={out}", "--no-progress", check_rc=0)
    saved = (out / "config.yaml").read_text()
    older = "\n".join(line for line in saved.split("\n")
                      if not line.strip().startswith(("response:", "classification_margin:", "inputs:")))
    (out / "config.yaml").write_text(older)
    p = cli("resume", out, "target=5")
    assert p.returncode == 1 and "older selfinstruct" in p.stderr
    assert "instances.classification_margin, instances.inputs, instances.response" in p.stderr
    assert len(rows(out / "tasks.jsonl")) >= 3  # nothing lost
    (out / "config.yaml").write_text(saved)
    cli("resume", out, "target=5", "--no-progress", check_rc=0)


def test_damaged_progress_and_export_to_a_directory_are_clean_errors(tmp_path):
    """Issue 8, item 6: these ended in KeyError / IsADirectoryError tracebacks."""
    out = tmp_path / "run"
    cli("run", "configs/default.yaml", *FAST, "target=3", f"output_dir={out}", "--no-progress", check_rc=0)
    p = cli("export", out, "--format", "alpaca", "-o", tmp_path)
    assert p.returncode == 1 and "is a directory" in p.stderr and "Traceback" not in p.stderr
    progress = json.loads((out / "progress.json").read_text())
    good = dict(progress)
    del progress["cursor"], progress["totals"]
    (out / "progress.json").write_text(json.dumps(progress))
    for args in (("status", out), ("resume", out), ("export", out, "-o", tmp_path / "x.jsonl")):
        p = cli(*args)
        assert p.returncode == 1 and "missing cursor, totals" in p.stderr and "Traceback" not in p.stderr, args
    assert not (tmp_path / "x.jsonl").exists()
    (out / "progress.json").write_text(json.dumps(good))
    cli("status", out, check_rc=0)


def test_a_model_typo_leaves_no_run_directory_behind(tmp_path):
    """Issue 8, item 3: fixing the typo must not be refused as a config change."""
    out = tmp_path / "run"
    p = cli("run", "configs/default.yaml", *[a for a in FAST if a != "model.backend=fake"], "model.backend=hf",
            f"model.name={tmp_path / 'no-such-model'}", f"output_dir={out}", "--no-progress")
    assert p.returncode == 1 and "model path not found" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()
    cli("run", "configs/default.yaml", *FAST, "target=3", f"output_dir={out}", "--no-progress", check_rc=0)


def test_run_records_its_environment_and_resume_warns_when_it_changed(tmp_path):
    """Issue 8, item 7: what decides the numerics is saved; a resume elsewhere says so."""
    out = tmp_path / "run"
    cli("run", "configs/default.yaml", *FAST, "target=3", f"output_dir={out}", "--no-progress", check_rc=0)
    progress = json.loads((out / "progress.json").read_text())
    assert progress["environment"]["model"] == "fake:bundled" and progress["environment"]["selfinstruct"]
    progress["environment"]["model"] = "fake:elsewhere"
    (out / "progress.json").write_text(json.dumps(progress))
    p = cli("resume", out, "target=5", "--no-progress", check_rc=0)
    assert "resume: model was 'fake:elsewhere' at the start of this run and is 'fake:bundled' now" in p.stderr
