"""`status --watch`: a compact view refreshed from the run directory alone, ending when the run's final marker is set.

Progress is replayed by the injected `sleep` (each call installs the next progress.json), so no test waits on time;
the subprocess test synchronises on the watcher's own output.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfinstruct.errors import RunDirError
from selfinstruct.report import CLEAR, finished, watch
from selfinstruct.store import write_atomic
from tests.helpers import ROOT, cfg_for, make_seeds, run_job


@pytest.fixture(scope="module")
def final(tmp_path_factory) -> Path:
    """A finished fake-model run (target reached)."""
    tmp = tmp_path_factory.mktemp("watch")
    reason, store = run_job(cfg_for(tmp, target=20), make_seeds())
    assert reason.startswith("target reached")
    return tmp / "run"


@pytest.fixture
def run(final, tmp_path) -> Path:
    shutil.copytree(final, tmp_path / "run")
    return tmp_path / "run"


def progress_of(run: Path) -> dict:
    return json.loads((run / "progress.json").read_text())


def earlier(p: dict, accepted: int, round_no: int) -> dict:
    """The same run as it stood earlier (only what the view reads)."""
    q = copy.deepcopy(p)
    q["totals"]["accepted"], q["cursor"], q["stop_reason"] = accepted, {"round": round_no, "batch": 1}, None
    return q


class Replay:
    """An injected sleep: each call installs the next progress.json text (or runs the next action)."""

    def __init__(self, run: Path, steps: list):
        self.run, self.steps, self.calls = run, list(steps), 0

    def __call__(self, seconds: float) -> None:
        self.calls += 1
        step = self.steps.pop(0)
        if callable(step):
            step()
        else:  # a dict is committed the way the store does it; a str lands as raw (torn) bytes
            text = json.dumps(step) if isinstance(step, dict) else step
            (write_atomic if isinstance(step, dict) else Path.write_text)(self.run / "progress.json", text)


def blocks(text: str) -> list[str]:
    return [b for b in text.split("\n\n") if b.strip()]


def test_watch_follows_commits_and_stops_at_the_final_marker(run):
    p = progress_of(run)
    write_atomic(run / "progress.json", json.dumps(earlier(p, 0, 1)))
    sleep, out = Replay(run, [earlier(p, 7, 2), p]), io.StringIO()
    assert watch(run, 0.5, out=out, sleep=sleep, tty=False) == 0
    views = blocks(out.getvalue())
    assert sleep.calls == 2 and len(views) == 3  # exits by itself once the marker is committed
    assert "accepted: 0 of target 20" in views[0] and "in progress: next batch is round 1 batch 1" in views[0]
    assert "accepted: 7 of target 20" in views[1]
    assert f"state: finished: {p['stop_reason']}" in views[2] and "full statistics: selfinstruct status" in views[2]


def test_watch_prints_a_view_per_change_only_when_not_a_terminal(run):
    p = progress_of(run)
    mid = earlier(p, 3, 1)
    write_atomic(run / "progress.json", json.dumps(mid))
    out = io.StringIO()
    assert watch(run, 1, count=4, out=out, sleep=Replay(run, [mid, mid, mid]), tty=False) == 0
    assert len(blocks(out.getvalue())) == 1  # four refreshes, one committed state
    out = io.StringIO()
    watch(run, 1, count=2, out=out, sleep=Replay(run, [mid]), tty=True)
    assert out.getvalue().count(CLEAR) == 2  # a terminal is redrawn in place on every refresh


def test_watch_survives_a_progress_file_caught_mid_replacement(run):
    p = progress_of(run)
    write_atomic(run / "progress.json", json.dumps(earlier(p, 2, 1)))
    torn = json.dumps(p)[:40]  # what a reader sees of a file replaced without rename (e.g. a network disk)
    out = io.StringIO()
    assert watch(run, 1, out=out, sleep=Replay(run, [torn, p]), tty=False) == 0
    text = out.getvalue()
    assert "could not read progress.json this time" in text and "showing the last view" in text
    assert "accepted: 2 of target 20" in blocks(text)[1]  # the last good numbers, not garbage
    assert "state: finished" in blocks(text)[-1]


def test_watch_gives_up_on_lasting_damage(run):
    torn = "{not json"
    (run / "progress.json").write_text(torn)
    with pytest.raises(RunDirError, match="damaged"):
        watch(run, 1, out=io.StringIO(), sleep=Replay(run, [torn, torn]), tty=False)


def test_watch_waits_for_a_run_that_has_not_started(run, tmp_path):
    later = tmp_path / "later"
    out = io.StringIO()
    assert watch(later, 1, out=out, sleep=Replay(later, [lambda: shutil.copytree(run, later)]), tty=False) == 0
    views = blocks(out.getvalue())
    assert "holds no run yet" in views[0] and "state: finished" in views[1]


def test_a_marker_left_before_a_resume_raised_the_target_is_not_the_end(run):
    p = progress_of(run)
    cfg = (run / "config.yaml").read_text()
    assert finished(p, {"target": 20, "max_rounds": 4, "stall": 3})
    (run / "config.yaml").write_text(cfg.replace("target: 20", "target: 500"))  # what resume target=500 saves first
    out = io.StringIO()
    assert watch(run, 1, count=2, out=out, sleep=Replay(run, [p]), tty=False) == 0
    assert "state: in progress" in out.getvalue() and "of target 500" in out.getvalue()


def test_ctrl_c_ends_the_watch_quietly(run):
    def interrupt():
        raise KeyboardInterrupt

    write_atomic(run / "progress.json", json.dumps(earlier(progress_of(run), 1, 1)))
    assert watch(run, 1, out=io.StringIO(), sleep=Replay(run, [interrupt]), tty=False) == 0


def test_watch_a_real_job_in_another_process(tmp_path):
    """A run stopped at its first round end, watched, then resumed in the background: the watcher sees it finish.

    Synchronised on output, never on time: the resume starts only after the watcher printed its first view.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFINSTRUCT_FAULT")}
    env["PYTHONPATH"] = str(ROOT)
    run = tmp_path / "run"
    base = [sys.executable, "-m", "selfinstruct", "-q"]
    job = ["run", str(ROOT / "configs/default.yaml"), "model.backend=fake", "target=30", "max_rounds=4",
           "prompts_per_round=6", "prompts_per_batch=2", f"output_dir={run}", "--no-progress"]
    stopped = subprocess.run(base + job, env={**env, "SELFINSTRUCT_FAULT": "round_end=sigint"}, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 130 and progress_of(run)["stop_reason"] is None, stopped.stderr
    watcher = subprocess.Popen(base + ["status", str(run), "--watch", "0.05"], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = ""
        while (line := watcher.stdout.readline()) not in ("\n", ""):  # the first view, up to its blank line
            first += line
        assert "state: in progress" in first, first
        resumed = subprocess.run(base + ["resume", str(run), "--no-progress"], env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        rest, err = watcher.communicate(timeout=60)  # a safety net: the watcher ends by itself at the marker
    finally:
        watcher.kill()
    assert watcher.returncode == 0 and err == ""
    assert "state: finished: target reached" in blocks(rest)[-1]


def test_cli_watch_options(run, capsys):
    from selfinstruct.cli import main

    assert main(["status", str(run), "--watch", "--count", "1"]) == 0  # finished: one view, then done
    assert "state: finished" in capsys.readouterr().out
    assert main(["status", str(run), "--count", "2"]) == 1
    assert capsys.readouterr().err == "Error: --count only applies with --watch\n"
    for bad in ("0", "-1", "nan", "x"):
        with pytest.raises(SystemExit):
            main(["status", str(run), "--watch", bad])
        assert "--watch" in capsys.readouterr().err
