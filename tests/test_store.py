"""The run directory contract: atomic commits, torn-write recovery, damage detection, locking."""

from __future__ import annotations

import json

import pytest

from selfinstruct.errors import RunDirError
from selfinstruct.store import RunStore
from tests.helpers import release


def _store(tmp_path) -> RunStore:
    return RunStore.create(tmp_path / "run", "target: 1\n", "fp")


def test_commit_appends_and_records_committed_sizes(tmp_path):
    store = _store(tmp_path)
    store.commit([{"id": "a", "instruction": "x"}], [{"id": "b"}], store.progress)
    sizes = json.loads((tmp_path / "run/progress.json").read_text())["sizes"]
    assert sizes["tasks.jsonl"] == (tmp_path / "run/tasks.jsonl").stat().st_size > 0
    assert sizes["rejected.jsonl"] == (tmp_path / "run/rejected.jsonl").stat().st_size > 0
    assert [t.id for t in store.tasks()] == ["a"]
    assert not (tmp_path / "run/progress.json.tmp").exists()


def test_open_cuts_uncommitted_tail(tmp_path):
    store = _store(tmp_path)
    store.commit([{"id": "a", "instruction": "x"}], [], store.progress)
    release(store)
    with open(tmp_path / "run/tasks.jsonl", "a") as f:
        f.write('{"id": "b", "instruction": "half')
    reopened = RunStore.open(tmp_path / "run")
    assert [t.id for t in reopened.tasks()] == ["a"]
    assert (tmp_path / "run/tasks.jsonl").read_text().count("\n") == 1


def test_read_only_open_does_not_modify(tmp_path):
    store = _store(tmp_path)
    release(store)
    with open(tmp_path / "run/tasks.jsonl", "a") as f:
        f.write("partial")
    RunStore.open(tmp_path / "run", lock=False)
    assert (tmp_path / "run/tasks.jsonl").read_text() == "partial"


def test_damaged_progress_is_a_clear_error(tmp_path):
    release(_store(tmp_path))
    (tmp_path / "run/progress.json").write_text("{not json")
    with pytest.raises(RunDirError, match=r"progress.json: damaged"):
        RunStore.open(tmp_path / "run")


def test_truncated_committed_file_is_detected(tmp_path):
    store = _store(tmp_path)
    store.commit([{"id": "a", "instruction": "x"}], [], store.progress)
    release(store)
    (tmp_path / "run/tasks.jsonl").write_text("")
    with pytest.raises(RunDirError, match=r"tasks.jsonl: holds 0 bytes but \d+ were committed"):
        RunStore.open(tmp_path / "run")


def test_not_a_run_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="progress.json: missing"):
        RunStore.open(tmp_path / "empty")
    with pytest.raises(RunDirError, match="no such run directory"):
        RunStore.open(tmp_path / "nope")


def test_second_writer_is_refused(tmp_path):
    store = _store(tmp_path)
    with pytest.raises(RunDirError, match="another selfinstruct process"):
        RunStore.open(tmp_path / "run")
    release(store)
    release(RunStore.open(tmp_path / "run"))


def test_create_refuses_existing_run(tmp_path):
    release(_store(tmp_path))
    with pytest.raises(RunDirError, match="already holds a run"):
        _store(tmp_path)


def test_rows_holding_line_separators_read_back(tmp_path):
    """U+2028, U+2029 and U+0085 are legal raw inside JSON strings; only b"\\n" ends a row."""
    from selfinstruct.store import RunStore

    store = RunStore.create(tmp_path / "run", "x: 1\n", "fp")
    odd = "first\u2028second\u2029third\u0085fourth"
    task = {"id": "t1", "instruction": odd, "instances": [{"input": odd, "output": "ok"}], "meta": {}}
    store.commit([task], [{"id": "r1", "text": odd}], store.progress)
    again = RunStore.open(tmp_path / "run", lock=False)
    assert [t.instruction for t in again.tasks()] == [odd]
    assert again.rejected() == [{"id": "r1", "text": odd}]


def test_create_never_writes_into_a_foreign_or_orphaned_directory(tmp_path):
    """Issue 8, item 2: a user's own tasks.jsonl, or a run whose progress.json was deleted, must survive."""
    import pytest

    from selfinstruct.errors import RunDirError
    from selfinstruct.store import RunStore

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "tasks.jsonl").write_text('{"my": "data"}\n')
    with pytest.raises(RunDirError, match="not a run directory"):
        RunStore.create(mine, "x: 1\n", "fp")
    assert (mine / "tasks.jsonl").read_text() == '{"my": "data"}\n' and sorted(p.name for p in mine.iterdir()) == ["tasks.jsonl"]

    run = RunStore.create(tmp_path / "run", "x: 1\n", "fp")
    run.commit([{"id": "t", "instruction": "i", "instances": []}], [], run.progress)
    (tmp_path / "run" / "progress.json").unlink()
    with pytest.raises(RunDirError, match="not a run directory"):
        RunStore.create(tmp_path / "run", "x: 1\n", "fp")
    assert (tmp_path / "run" / "tasks.jsonl").stat().st_size > 0

    interrupted = tmp_path / "interrupted"  # a create() killed before its first progress.json
    interrupted.mkdir()
    for name in ("tasks.jsonl", "rejected.jsonl", ".lock"):
        (interrupted / name).write_bytes(b"")
    (interrupted / "config.yaml").write_text("x: 1\n")
    assert RunStore.create(interrupted, "x: 1\n", "fp").progress["totals"]["accepted"] == 0
    assert RunStore.create(tmp_path / "empty-dir-made-by-user", "x: 1\n", "fp")  # a missing or empty dir is fine
