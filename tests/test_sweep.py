"""sweep: one run per combination on the fake backend, up-front validation, and resume after a kill."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from selfinstruct import cli
from selfinstruct import config as C
from selfinstruct import sweep as W
from selfinstruct.errors import ConfigError
from tests.helpers import ROOT

pytest.importorskip("matplotlib", reason="the report extra is not installed (pip install -e '.[report]')")

FAST = ["model.backend=fake", "prompts_per_round=4", "prompts_per_batch=2", "max_rounds=2", "target=6"]


def _config(tmp_path) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(f"seed_tasks: {ROOT / 'seed_tasks.jsonl'}\noutput_dir: {tmp_path / 'runs' / 'job'}\n",
                    encoding="utf-8")
    return str(path)


def _csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_two_by_two_sweep(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert cli.main(["-q", "sweep", cfg, *FAST, "prompt.human_fraction=0,1", "seed=0,1", "--no-progress"]) == 0
    root = tmp_path / "runs" / "job-sweep"  # default: output_dir + "-sweep"
    names = ["prompt.human_fraction=0,seed=0", "prompt.human_fraction=0,seed=1",
             "prompt.human_fraction=1,seed=0", "prompt.human_fraction=1,seed=1"]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == names
    for name in names:
        saved = C.load_text((root / name / "config.yaml").read_text(encoding="utf-8"), name)
        hf, seed = name.split(",")
        assert saved.prompt.human_fraction == float(hf.split("=")[1]) and saved.seed == int(seed.split("=")[1])
        assert saved.target == 6 and saved.model.backend == "fake"  # plain overrides reach every run
        assert saved.output_dir == str(root / name)
    table = _csv(root / "summary.csv")
    assert [r["run"] for r in table] == names and all(r["state"] == "finished" for r in table)
    assert [r["prompt.human_fraction"] for r in table] == ["0", "0", "1", "1"]
    assert (root / "summary.md").read_text(encoding="utf-8").count("\n") == 2 + 4
    assert (root / "summary.png").read_bytes().startswith(b"\x89PNG")
    assert table[0]["accepted"] != "" and table[0]["ROUGE-L to seeds"] != ""
    assert "4 runs in" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["output_dir=a,b"], "output_dir: cannot be swept"),
    (["filters.instruction=length,blacklist"], "cannot be swept: a list or schedule value"),
    (["prompt.schedule=1,0.5"], "cannot be swept"),
    (["nosuch.key=1,2"], "cannot be swept: unknown key"),
    (["prompt.human_fraction=0,,1"], "empty value"),
    (["prompt.human_fraction=0,0"], "value 0 given twice"),
    (["seed=0,1", "seed=2"], "seed: swept and also given again"),
    (["target=5"], "nothing to sweep"),
    (["model.name=a/b,a_b"], "would share the run directory"),
    (["prompt.human_fraction"], "must look like key=value"),
])
def test_malformed_sweep_is_one_line_and_runs_nothing(tmp_path, capsys, args, message):
    cfg = _config(tmp_path)
    assert cli.main(["sweep", cfg, *FAST, *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_every_combination_is_validated_before_the_first_runs(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert cli.main(["sweep", cfg, *FAST, "prompt.human_fraction=0.5,2"]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 runs cannot start; nothing ran" in err and "prompt.human_fraction=2: " in err
    assert not (tmp_path / "runs").exists()  # the valid first combination did not run either


def test_plain_yaml_list_with_commas_is_an_override_not_a_sweep():
    axes, plain = W.parse_args(["filters.instruction=[length, blacklist]", "seed=1,2"])
    assert axes == [("seed", ["1", "2"])] and plain == ["filters.instruction=[length, blacklist]"]
    with pytest.raises(ConfigError):
        W.parse_args(["filters.blacklist=a,b"])


def _sweep(cfg, out, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "selfinstruct", "sweep", cfg, *FAST, "target=8",
                           "prompt.human_fraction=0.25,0.75", "seed=3,4", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)


def test_killed_sweep_resumes_to_the_same_data(tmp_path):
    cfg = _config(tmp_path)
    whole = _sweep(cfg, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    # commits 1-3 make the first run (seed classification, 2 batches); the 4th is the second run's first batch
    killed = _sweep(cfg, tmp_path / "cut", {"SELFINSTRUCT_FAULT": "progress_renamed@4"})
    assert killed.returncode == -9, killed.stderr
    first, second = "prompt.human_fraction=0.25,seed=3", "prompt.human_fraction=0.25,seed=4"
    progress = json.loads((tmp_path / "cut" / second / "progress.json").read_text(encoding="utf-8"))
    assert progress["stop_reason"] is None and progress["totals"]["accepted"] > 0  # killed part way
    assert [r["run"] for r in _csv(tmp_path / "cut" / "summary.csv")] == [first]
    again = _sweep(cfg, tmp_path / "cut")
    assert again.returncode == 0, again.stderr
    assert f"{first} finished earlier; skipped" in again.stderr  # not redone
    assert "resuming" in again.stderr  # the killed one went on through job.run's resume
    for run in (tmp_path / "whole").iterdir():
        if run.is_dir():
            for name in ("tasks.jsonl", "rejected.jsonl"):
                assert (tmp_path / "cut" / run.name / name).read_bytes() == (run / name).read_bytes(), (run, name)
    assert second in {r["run"] for r in _csv(tmp_path / "cut" / "summary.csv")}
    assert _csv(tmp_path / "cut" / "summary.csv") == _csv(tmp_path / "whole" / "summary.csv")
