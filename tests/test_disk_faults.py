"""A full disk or a read-only run directory: a one-line error, committed data intact, resume works after."""

from __future__ import annotations

import errno
import os

import pytest

from selfinstruct import cli, store as S
from selfinstruct.errors import RunDirError
from tests.helpers import cfg_for, make_seeds, release, run_job


@pytest.fixture
def faults(monkeypatch):
    """Arm the store's fault switch for this test only (arrival counts start from zero)."""
    monkeypatch.setattr(S, "_fault_hits", {})

    def arm(spec: str) -> None:
        S._fault_hits.clear()
        monkeypatch.setenv(S.FAULT_ENV, spec)

    yield arm
    monkeypatch.delenv(S.FAULT_ENV, raising=False)


def committed(run) -> dict[str, bytes]:
    return {n: (run / n).read_bytes() for n in (S.TASKS, S.REJECTED, S.PROGRESS)}


@pytest.mark.parametrize("point", ["tasks_appended", "rejected_appended"])
@pytest.mark.parametrize("action, words", [("enospc", "No space left on device"), ("eacces", "Permission denied")])
def test_failed_commit_keeps_committed_data_and_resume_finishes_the_job(tmp_path, faults, point, action, words):
    seeds = make_seeds()
    ref_cfg = cfg_for(tmp_path / "ref")
    run_job(ref_cfg, seeds)
    cfg = cfg_for(tmp_path)
    run = tmp_path / "run"
    faults(f"{point}@3={action}")  # the third batch's commit fails
    store = S.RunStore.create(cfg.output_dir, "x: 1\n", cfg.fingerprint())
    with pytest.raises(RunDirError) as err:
        run_job(cfg, seeds, store=store)
    release(store)
    msg = str(err.value)
    assert words in msg and "resume" in msg and "\n" not in msg
    before = committed(run)
    assert S.RunStore.open(run, lock=False).progress["cursor"] == {"round": 1, "batch": 2}
    # the failed batch's bytes were cut back: the files end exactly at the committed sizes
    sizes = S.RunStore.open(run, lock=False).progress["sizes"]
    assert all(len(before[n]) == sizes[n] for n in (S.TASKS, S.REJECTED))
    faults("")  # space freed
    run_job(cfg, seeds)
    for n in (S.TASKS, S.REJECTED):
        assert (run / n).read_bytes() == (tmp_path / "ref" / "run" / n).read_bytes()


def test_full_disk_while_writing_progress_keeps_the_previous_progress(tmp_path, monkeypatch):
    seeds = make_seeds()
    cfg = cfg_for(tmp_path, max_rounds=1)
    _, store = run_job(cfg, seeds)
    run = tmp_path / "run"
    before = committed(run)
    store = S.RunStore.open(run)

    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(S, "write_atomic", full)
    with pytest.raises(RunDirError, match="progress.json: cannot commit a batch .No space left on device"):
        store.commit([{"id": "x", "instruction": "a new task", "instances": []}], [], store.progress)
    release(store)
    assert committed(run) == before  # the appended row was cut back; progress.json untouched


def test_cli_reports_a_full_disk_in_one_line(tmp_path, faults, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"output_dir: {tmp_path / 'run'}\nmodel: {{backend: fake}}\ntarget: 20\nprompts_per_round: 4\n"
                   "prompts_per_batch: 2\n")
    faults("tasks_appended@2=enospc")
    assert cli.main(["run", str(cfg), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("Error: ") and "No space left on device" in err[-1] and "Traceback" not in "".join(err)
    faults("")
    assert cli.main(["resume", str(tmp_path / "run"), "--no-progress"]) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories; covered by eacces above")
def test_read_only_run_directory_is_a_one_line_error(tmp_path):
    seeds = make_seeds()
    cfg = cfg_for(tmp_path, max_rounds=1)
    run_job(cfg, seeds)
    run = tmp_path / "run"
    before = committed(run)
    for p in [run, *run.iterdir()]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        with pytest.raises(RunDirError):
            run_job(cfg_for(tmp_path, max_rounds=2), seeds)
    finally:
        for p in [run, *run.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert committed(run) == before


def test_run_files_follow_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        cfg = cfg_for(tmp_path, max_rounds=1)
        run_job(cfg, make_seeds())
    finally:
        os.umask(old)
    for p in (tmp_path / "run").iterdir():
        assert p.stat().st_mode & 0o777 == 0o640, p.name
