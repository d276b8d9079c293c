"""The hostile-input catalogue: every case ends in one clean `Error: ...` line or is handled, and nothing
committed is ever lost.

Classes (the id prefix): seed-, config-, override-, rundir-, export-, model-. The CLI runs in-process
(`selfinstruct.cli.main`) for speed; `test_no_traceback_reaches_the_terminal` repeats a few cases through
a real `python -m selfinstruct` subprocess. docs/reliability.md describes the classes and what each checks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfinstruct import config as C
from selfinstruct import filters as F
from selfinstruct import prompts as P
from selfinstruct.cli import main
from selfinstruct.records import Instance
from tests.helpers import ROOT

GOOD = {"instruction": "Name three rivers that flow through Europe.", "instances": [{"input": "", "output": "Danube"}]}
ALPACA = {"instruction": "Translate the sentence into French.", "input": "Good morning.", "output": "Bonjour."}


def jl(*rows: object) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def task(i: int, **over) -> dict:
    return {"id": f"t{i}", "instruction": f"Write a short note about topic number {i} for a friend.",
            "instances": [{"input": "", "output": f"Note {i}."}], **over}


# ---- running the CLI and checking what it left behind ----

class Result(NamedTuple):
    rc: int
    out: str
    err: str


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for a directory). The run lock is not data."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*")) if p.name != ".lock"}


def _close_run_locks(root: Path) -> None:
    """An in-process run keeps its lock until exit; drop it so the next command can take it."""
    for fd in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith("/.lock") and target.startswith(str(root)):
            os.close(int(fd))


@pytest.fixture
def cli(capsys, tmp_path):
    def invoke(*args) -> Result:
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse usage errors
            rc = e.code
        finally:
            _close_run_locks(tmp_path)
        out, err = capsys.readouterr()
        return Result(rc, out, err)
    return invoke


def assert_error(res: Result, *needles: str) -> None:
    """Exit 1 and exactly one `Error:` line (a config error may list its problems indented below it)."""
    assert res.rc == 1, res
    assert "Traceback" not in res.err, res.err
    assert res.err.count("Error: ") == 1, res.err
    tail = res.err[res.err.index("Error: "):].rstrip("\n").split("\n")
    assert all(line.startswith("  ") for line in tail[1:]), res.err
    for needle in needles:
        assert needle in res.err, (needle, res.err)


def assert_usage_error(res: Result, needle: str) -> None:
    """argparse's own refusal: exit 2, its `error:` line, no traceback."""
    assert res.rc == 2 and "Traceback" not in res.err and "error:" in res.err and needle in res.err, res


def assert_ok(res: Result) -> None:
    assert res.rc == 0, res
    assert "Traceback" not in res.err and "Error: " not in res.err, res.err


FAST = {"model": {"backend": "fake"}, "target": 1000, "max_rounds": 1, "prompts_per_round": 4,
        "prompts_per_batch": 2, "prompt": {"num_examples": 4, "new_per_prompt": 4}}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A temp dir holding a good seed file and a config for a small fake-model job; cwd is the temp dir."""
    monkeypatch.chdir(tmp_path)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_bytes(jl(*(task(i) for i in range(12))))
    cfg = tmp_path / "job.yaml"
    cfg.write_text(json.dumps({**FAST, "seed_tasks": str(seeds), "output_dir": str(tmp_path / "run")}))
    return tmp_path


# ---- seed files ----

BIG = 10_000_000
SEED_CASES = [
    # (id, file bytes, None = handled (expected task count) or the needle of the expected error)
    ("seed-bom", b"\xef\xbb\xbf" + jl(GOOD), 1),
    ("seed-bom-mid-file", b"\xef\xbb\xbf" + jl(task(1)) + b"\xef\xbb\xbf" + jl(task(2)), 2),
    ("seed-cr-only-line-endings", jl(task(1), task(2)).replace(b"\n", b"\r"), ":1: invalid JSON: Extra data"),
    ("seed-crlf", jl(task(1), task(2)).replace(b"\n", b"\r\n"), 2),
    ("seed-no-final-newline", jl(task(1), task(2)).rstrip(b"\n"), 2),
    ("seed-blank-lines-between", b"\n\n" + jl(task(1)) + b"   \n\t\n" + jl(task(2)) + b"\n\n", 2),
    ("seed-u2028-in-text", jl(task(1, instruction="Split this\u2028line and that\u2029one\x85too, then join them.")),
     1),
    ("seed-escaped-control-chars", jl(task(1, instruction="Remove the tab\tand the bell\x07 from the text.")), 1),
    ("seed-alpaca-flat-rows", jl(ALPACA, {**ALPACA, "instruction": "Say hello.", "input": ""}), 2),
    ("seed-alpaca-without-input", jl({"instruction": "Name a prime number.", "output": "7"}), 1),
    ("seed-mixed-schemas", jl(GOOD, ALPACA, task(3)), 3),
    ("seed-same-instruction-other-inputs-merged",
     jl(ALPACA, {**ALPACA, "input": "Good night.", "output": "Bonne nuit."}), 1),
    ("seed-exact-duplicate-rows-without-id", jl(ALPACA, ALPACA, ALPACA), 1),
    ("seed-exact-duplicate-rows-with-id", jl(task(1), task(1), task(2)), 2),
    ("seed-extra-fields-ignored", jl({**GOOD, "category": "geo", "score": 3.5}), 1),
    ("seed-missing-name-and-classification", jl({"instruction": GOOD["instruction"], "instances": GOOD["instances"]}),
     1),
    ("seed-huge-whitespace-line", b" " * 2_000_000 + jl(GOOD), 1),
    ("seed-utf16", "\ufeff".encode("utf-16-le") + jl(GOOD).decode().encode("utf-16-le"), "not UTF-8"),
    ("seed-latin1-bytes", jl(GOOD) + '{"instruction": "Décris le café.", "output": "x"}\n'.encode("latin-1"),
     "seeds.jsonl:2: not UTF-8"),
    ("seed-invalid-utf8", jl(task(1), task(2)) + b'{"instruction": "bad \xc3\x28 byte", "output": "x"}\n',
     ":3: not UTF-8"),
    ("seed-raw-nul-byte", jl(task(1)) + b"\x00\x00\x00\n", "seeds.jsonl:2: invalid JSON"),
    ("seed-raw-nul-inside-string", b'{"instruction": "a\x00b c d", "output": "x"}\n', ":1: invalid JSON"),
    ("seed-huge-instruction", jl(task(1, instruction="word " * (BIG // 5))), "'instruction' is 9,999,999 characters"),
    ("seed-huge-output", jl(task(1, instances=[{"input": "", "output": "x" * 100_000}])), "'output' is 100,000"),
    ("seed-json-array-one-line", json.dumps([GOOD, ALPACA]).encode() + b"\n", "JSON Lines"),
    ("seed-json-array-pretty", json.dumps([GOOD, ALPACA], indent=2).encode(), "JSON Lines"),
    ("seed-json-object-pretty", json.dumps(GOOD, indent=2).encode(), "JSON Lines"),
    ("seed-row-is-string", b'"just a string"\n', "expected a JSON object, got str"),
    ("seed-row-is-number", jl(task(1)) + b"42\n", ":2: expected a JSON object, got int"),
    ("seed-instruction-number", jl({"instruction": 5, "output": "x"}), "'instruction' must be a string"),
    ("seed-instruction-list", jl({"instruction": ["a", "b"], "output": "x"}), "'instruction' must be a string"),
    ("seed-instruction-null", jl({"instruction": None, "output": "x"}), "'instruction' must be a string"),
    ("seed-instruction-missing", jl({"output": "x"}), "'instruction' must be a string (missing)"),
    ("seed-instruction-blank", jl({"instruction": " \t ", "output": "x"}), "'instruction' is empty"),
    ("seed-instances-object", jl({**GOOD, "instances": {"input": "", "output": "x"}}),
     "'instances' must be a non-empty list"),
    ("seed-instances-string", jl({**GOOD, "instances": "x"}), "'instances' must be a non-empty list"),
    ("seed-instances-empty", jl({**GOOD, "instances": []}), "'instances' must be a non-empty list"),
    ("seed-instance-not-object", jl({**GOOD, "instances": ["x"]}), "instances[0] must be an object"),
    ("seed-instance-output-null", jl({**GOOD, "instances": [{"input": "", "output": None}]}),
     "instances[0]: 'output' must"),
    ("seed-instance-output-missing", jl({**GOOD, "instances": [{"input": "a"}]}),
     "'output' must be a string (missing)"),
    ("seed-instance-input-number", jl({**GOOD, "instances": [{"input": 3, "output": "x"}]}),
     "'input' must be a string"),
    ("seed-no-output-no-instances", jl({"instruction": "Do the thing well.", "input": "x"}), "needs 'instances'"),
    ("seed-is-classification-string", jl({**GOOD, "is_classification": "yes"}), "'is_classification' must be"),
    ("seed-id-float", jl({**GOOD, "id": 1.5}), "'id' must be a string"),
    ("seed-id-bool", jl({**GOOD, "id": True}), "'id' must be a string"),
    ("seed-duplicate-id-other-task", jl(task(1), {**task(2), "id": "t1"}), ":2: duplicate id 't1' (first on line 1)"),
    ("seed-trailing-garbage-on-line", jl(task(1))[:-1] + b" trailing\n", ":1: invalid JSON: Extra data"),
    ("seed-garbage-last-line", jl(task(1), task(2)) + b"<html>oops</html>\n", ":3: invalid JSON"),
    ("seed-truncated-last-row", jl(task(1), task(2))[:-20], ":2: invalid JSON"),
    ("seed-deeply-nested-json", b"[" * 100_000 + b"]" * 100_000 + b"\n", ":1: "),
    ("seed-huge-number", b'{"instruction": "Say it.", "output": "x", "id": ' + b"9" * 5000 + b"}\n", ":1: "),
    ("seed-lone-surrogate", b'{"instruction": "Repeat this: \\ud800 please.", "output": "x"}\n', ":1: "),
    ("seed-nan-instruction", b'{"instruction": NaN, "output": "x"}\n', "'instruction' must be a string"),
    ("seed-empty-file", b"", "no seed tasks found"),
    ("seed-only-blank-lines", b"\n  \n\t\n\r\n", "no seed tasks found"),
]


@pytest.mark.parametrize("content, expect", [pytest.param(c, e, id=i) for i, c, e in SEED_CASES])
def test_seed_file(work, cli, content, expect):
    seeds = work / "seeds.jsonl"
    seeds.write_bytes(content)
    before = snapshot(work)
    res = cli("validate", work / "job.yaml")
    if isinstance(expect, int):
        assert_ok(res)
        assert f"OK ({expect} seed tasks" in res.out
    else:
        assert_error(res, str(seeds), expect)
    assert snapshot(work) == before


@pytest.mark.parametrize("make", [pytest.param(lambda p: None, id="seed-missing-file"),
                                  pytest.param(lambda p: p.mkdir(), id="seed-is-a-directory")])
def test_seed_path_is_not_a_file(work, cli, make):
    path = work / "other.jsonl"
    make(path)
    before = snapshot(work)
    assert_error(cli("run", work / "job.yaml", f"seed_tasks={path}"), f"{path}: cannot read seed file")
    assert snapshot(work) == before and not (work / "run").exists()


def test_seed_text_with_line_separators_runs_and_reads_back(work, cli):
    """seed-u2028-run: a line separator inside JSON text survives a run, status, export and resume."""
    odd = "Join these\u2028two lines\u2029and this\x85one, then say how many words there are."
    (work / "seeds.jsonl").write_bytes(jl(*(task(i, instruction=odd + f" ({i})") for i in range(8))))
    assert_ok(cli("run", work / "job.yaml", "--no-progress"))
    assert_ok(cli("status", work / "run"))
    assert_ok(cli("export", work / "run", "-o", work / "out.jsonl"))
    assert_ok(cli("resume", work / "run", "max_rounds=2", "--no-progress"))


def test_a_single_seed_task_still_runs(work, cli):
    """seed-single-task: fewer seeds than few-shot examples."""
    (work / "seeds.jsonl").write_bytes(jl(GOOD))
    assert_ok(cli("run", work / "job.yaml", "--no-progress"))
    assert json.loads((work / "run" / "progress.json").read_text())["cursor"]["round"] == 2


# ---- configs and overrides ----

def _leaves() -> list[tuple[str, dataclasses.Field, type]]:
    """(dotted key, field, type) of every leaf key of the config dataclasses."""
    out = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
            else:
                out.append((prefix + f.name, f, tp))
    walk(C.Config, "")
    return out


WRONG_TYPE = {int: "abc", float: "abc", str: "[1, 2]", bool: "maybe", list: "5", typing.Any: "abc"}
OUT_OF_RANGE = [-1, 0, 1.5, "bogus"]


def _config_cases() -> list:
    cases = []
    for key, f, tp in _leaves():
        cases.append(pytest.param(f"{key}={WRONG_TYPE[tp]}", key, id=f"config-{key}-wrong-type"))
        check = f.metadata.get("check")
        if check:
            bad = next(v for v in OUT_OF_RANGE if C._type_ok(v, tp) and not check(float(v) if tp is float else v))
            cases.append(pytest.param(f"{key}={bad}", key, id=f"config-{key}-out-of-range"))
        if tp is float:
            cases.append(pytest.param(f"{key}=.nan", key, id=f"config-{key}-nan"))
            cases.append(pytest.param(f"{key}=.inf", key, id=f"config-{key}-inf"))
    for key, value, what in [("filters.instruction", "[lenght]", "unknown-filter"),
                             ("filters.instance", "[nope]", "unknown-filter"),
                             ("filters.blacklist", "['']", "empty-word"),
                             ("filters.min_words", "500", "above-max-words"),
                             ("prompt.schedule", "[2.0]", "fraction-above-1"), ("model", "5", "not-a-mapping"),
                             ("tagret", "5", "unknown-key"), ("model.nme", "x", "unknown-key"),
                             ("seed_tasks", "", "empty")]:
        cases.append(pytest.param(f"{key}={value}", key, id=f"config-{key}-{what}"))
    return cases


def test_every_leaf_key_is_in_the_catalogue():
    """The programmatic cases cover each key; a new key with a type the table lacks fails here, not silently."""
    keys = {k for k, _, _ in _leaves()}
    assert keys == set(C.flatten(C.Config().to_dict())) and all(tp in WRONG_TYPE for _, _, tp in _leaves())


@pytest.mark.parametrize("override, key", _config_cases())
def test_bad_config_value(work, cli, override, key):
    before = snapshot(work)
    res = cli("run", work / "job.yaml", override, "--no-progress")
    if override == "seed_tasks=":  # an empty seed path is the current directory, not a file
        assert_error(res, "cannot read seed file")
    else:
        assert_error(res, "job.yaml", f"{key}:")
    assert snapshot(work) == before


CONFIG_FILE_CASES = [
    ("config-yaml-syntax-error", b"target: [1, 2\nmax_rounds: 3\n", "invalid YAML"),
    ("config-yaml-tab-indent", b"model:\n\tbackend: fake\n", "invalid YAML"),
    ("config-yaml-top-level-list", b"- target: 5\n- max_rounds: 3\n", "expected a mapping"),
    ("config-yaml-top-level-scalar", b"just words\n", "expected a mapping"),
    ("config-binary-file", bytes(range(256)) * 4, "not UTF-8"),
    ("config-nul-bytes", b"target: 5\n\x00\x00\n", "invalid YAML"),
    ("config-yaml-duplicate-key", b"target: 5\nmax_rounds: 3\ntarget: 500\n",
     ":3: invalid YAML: duplicate key 'target'"),
    ("config-yaml-duplicate-nested-key", b"model:\n  backend: fake\n  backend: hf\n", "duplicate key 'backend'"),
    ("config-yaml-list-as-key", b"[1, 2]: x\n", "invalid YAML"),
    ("config-section-not-mapping", b"model: fake\n", "model: expected a mapping"),
    ("config-unknown-nested-key", b"model:\n  backend: fake\n  nmae: x\n", "model.nmae: unknown key"),
]


@pytest.mark.parametrize("content, needle", [pytest.param(c, n, id=i) for i, c, n in CONFIG_FILE_CASES])
def test_bad_config_file(work, cli, content, needle):
    bad = work / "bad.yaml"
    bad.write_bytes(content)
    before = snapshot(work)
    assert_error(cli("run", bad, "--no-progress"), str(bad), needle)
    assert snapshot(work) == before


def test_empty_config_file_means_every_default(work, cli):
    """config-empty-file: handled; the defaults read seed_tasks.jsonl from the current directory."""
    (work / "empty.yaml").write_bytes(b"")
    shutil.copy(work / "seeds.jsonl", work / "seed_tasks.jsonl")
    res = cli("validate", work / "empty.yaml")
    assert_ok(res)
    assert "OK (12 seed tasks in seed_tasks.jsonl" in res.out


@pytest.mark.parametrize("make, needle", [
    pytest.param(lambda p: None, "cannot read config", id="config-missing-file"),
    pytest.param(lambda p: p.mkdir(), "cannot read config", id="config-is-a-directory"),
])
def test_config_path_is_not_a_file(work, cli, make, needle):
    path = work / "cfg.yaml"
    make(path)
    before = snapshot(work)
    assert_error(cli("run", path), str(path), needle)
    assert snapshot(work) == before


@pytest.mark.parametrize("override, needle", [
    pytest.param("target", "must look like key=value", id="override-no-equals"),
    pytest.param("=5", "must look like key=value", id="override-empty-key"),
    pytest.param("a..b=1", "must look like key=value", id="override-empty-path-part"),
    pytest.param("a.b.c=1", "a: unknown key", id="override-unknown-dotted"),
    pytest.param("target=abc", "target: expected int, got 'abc'", id="override-target-abc"),
    pytest.param("target=1e400", "target: expected int", id="override-target-overflow"),
    pytest.param("model.backend.x=1", "model.backend: expected str", id="override-through-a-leaf"),
])
def test_malformed_override(work, cli, override, needle):
    before = snapshot(work)
    assert_error(cli("run", work / "job.yaml", override), needle)
    assert snapshot(work) == before


def test_override_that_looks_like_an_option(work, cli):
    """override-dash-prefix: argparse's usage error, nothing run."""
    before = snapshot(work)
    assert_usage_error(cli("run", work / "job.yaml", "--target=5"), "unrecognized arguments")
    assert snapshot(work) == before


# ---- run directories ----

@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """An unfinished (round limit) fake-model run with committed tasks and rejections; copied by each case."""
    root = tmp_path_factory.mktemp("base")
    seeds = root / "seeds.jsonl"
    seeds.write_bytes(jl(*(task(i) for i in range(12))))
    cfg = root / "job.yaml"
    cfg.write_text(json.dumps({**FAST, "seed_tasks": str(seeds), "output_dir": str(root / "run")}))
    assert main(["-q", "run", str(cfg), "--no-progress"]) == 0
    _close_run_locks(root)
    progress = json.loads((root / "run" / "progress.json").read_text())
    assert progress["totals"]["accepted"] > 0 and progress["totals"]["rejected"] > 0
    return root / "run"


def committed(run: Path) -> dict[str, bytes]:
    sizes = json.loads((run / "progress.json").read_text())["sizes"]
    return {name: (run / name).read_bytes()[:size] for name, size in sizes.items()}


def _edit_progress(fn):
    def damage(run: Path) -> None:
        p = json.loads((run / "progress.json").read_text())
        fn(p)
        (run / "progress.json").write_text(json.dumps(p))
    return damage


def _overwrite_committed_row(run: Path, new: bytes) -> None:
    data = (run / "tasks.jsonl").read_bytes()
    end = data.index(b"\n")
    (run / "tasks.jsonl").write_bytes(new.ljust(end)[:end] + data[end:])


def _rewrite_tasks(run: Path, content: bytes) -> None:
    (run / "tasks.jsonl").write_bytes(content)
    _edit_progress(lambda p: p["sizes"].update({"tasks.jsonl": len(content)}))(run)


def _foreign(run: Path) -> None:
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    (run / "notes.txt").write_text("my own notes\n")
    (run / "tasks.jsonl").write_text('{"mine": true}\n')


def _a_file(run: Path) -> None:
    shutil.rmtree(run, ignore_errors=True)
    run.write_text("not a directory\n")


E, OK = "error", "ok"
AUDIT_ROW = b'{"id": "x", "instruction": true, "input": true, "output": false, "all": false}\n'
COMMANDS = ("status", "export", "resume", "audit")
# (damage id, damage, expected per command (status, export, resume, audit), error needle)
RUNDIR_CASES = [
    ("progress-garbled", lambda r: (r / "progress.json").write_bytes(b"\x8f{{not json at all"), (E,) * 4, "damaged"),
    ("progress-truncated", lambda r: (r / "progress.json").write_bytes((r / "progress.json").read_bytes()[:60]),
     (E,) * 4, "damaged"),
    ("progress-empty", lambda r: (r / "progress.json").write_bytes(b""), (E,) * 4, "damaged"),
    ("progress-wrong-version", _edit_progress(lambda p: p.update(version=99)), (E,) * 4, "not a selfinstruct v1"),
    ("progress-foreign-json", lambda r: (r / "progress.json").write_text('["a", "list"]'), (E,) * 4,
     "not a selfinstruct v1"),
    ("progress-huge-number", lambda r: (r / "progress.json").write_bytes(b'{"version": 1, "x": ' + b"9" * 5000 + b"}"),
     (E,) * 4, "progress.json: damaged"),
    ("progress-deep-nesting", lambda r: (r / "progress.json").write_bytes(b"[" * 100_000), (E,) * 4,
     "progress.json: damaged"),
    ("progress-missing-cursor", _edit_progress(lambda p: p.pop("cursor")), (E,) * 4, "missing cursor"),
    ("progress-sizes-wrong-type", _edit_progress(lambda p: p.update(sizes={"tasks.jsonl": "12"})), (E,) * 4,
     "progress.json: damaged"),
    ("progress-sizes-negative", _edit_progress(lambda p: p["sizes"].update({"tasks.jsonl": -5})), (E,) * 4,
     "progress.json: damaged"),
    ("progress-cursor-wrong-type", _edit_progress(lambda p: p.update(cursor="1,0")), (E,) * 4,
     "progress.json: damaged"),
    ("progress-totals-wrong-type", _edit_progress(lambda p: p.update(totals=[])), (E,) * 4, "progress.json: damaged"),
    ("progress-is-a-directory", lambda r: ((r / "progress.json").unlink(), (r / "progress.json").mkdir()), (E,) * 4,
     "progress.json: cannot read"),
    ("progress-leftover-tmp", lambda r: (r / "progress.json.tmp").write_bytes(b'{"version": 1, "tor'), (OK,) * 4, None),
    ("user-files-inside-run", lambda r: (r / "notes.md").write_text("my notes\n"), (OK,) * 4, None),
    ("tasks-is-a-directory", lambda r: ((r / "tasks.jsonl").unlink(), (r / "tasks.jsonl").mkdir()), (E,) * 4,
     "tasks.jsonl: missing (or not a file)"),
    ("progress-totals-missing-a-count", _edit_progress(lambda p: p["totals"].pop("accepted")), (E,) * 4,
     "totals must hold"),
    ("progress-round-stats-damaged", _edit_progress(lambda p: p["rounds"].update({"1": {"accepted": "3"}})), (E,) * 4,
     "rounds.1 must hold"),
    ("progress-missing", lambda r: (r / "progress.json").unlink(), (E,) * 4, "progress.json: missing"),
    ("tasks-missing", lambda r: (r / "tasks.jsonl").unlink(), (E,) * 4, "tasks.jsonl: missing"),
    ("rejected-missing", lambda r: (r / "rejected.jsonl").unlink(), (E,) * 4, "rejected.jsonl: missing"),
    ("tasks-shorter-than-committed", lambda r: (r / "tasks.jsonl").write_bytes((r / "tasks.jsonl").read_bytes()[:-7]),
     (E,) * 4, "were committed"),
    ("config-missing", lambda r: (r / "config.yaml").unlink(), (OK, OK, E, OK), "cannot read saved config"),
    ("config-garbled", lambda r: (r / "config.yaml").write_bytes(b"target: [\n\xff"), (OK, OK, E, OK), "config.yaml"),
    ("committed-row-garbled", lambda r: _overwrite_committed_row(r, b"{garbage"), (E, E, E, E),
     "tasks.jsonl:1: damaged committed row"),
    ("committed-row-invalid-utf8", lambda r: _overwrite_committed_row(r, b'"\xff\xfe"'), (E, E, E, E),
     "tasks.jsonl:1: damaged committed row"),
    ("committed-row-wrong-schema", lambda r: _rewrite_tasks(r, b'{"hello": "world"}\n'), (E, E, E, E),
     "tasks.jsonl:1: damaged committed row"),
    ("committed-row-not-object", lambda r: _rewrite_tasks(r, b'[1, 2]\n'), (E, E, E, E),
     "tasks.jsonl:1: damaged committed row"),
    ("committed-row-huge-number", lambda r: _rewrite_tasks(r, b'{"id": ' + b"9" * 5000 + b'}\n'), (E, E, E, E),
     "tasks.jsonl:1: damaged committed row"),
    ("audit-log-damaged-row", lambda r: (r / "audit.jsonl").write_bytes(b"[" * 100_000 + b"\n" + AUDIT_ROW),
     (OK, OK, OK, E), "audit.jsonl:1: damaged row"),
    ("audit-log-huge-number", lambda r: (r / "audit.jsonl").write_bytes(b'{"n": ' + b"9" * 5000 + b"}\n" + AUDIT_ROW),
     (OK, OK, OK, E), "audit.jsonl:1: damaged row"),
    ("audit-log-torn-last-line", lambda r: (r / "audit.jsonl").write_bytes(AUDIT_ROW + b'{"id": "t'), (OK,) * 4, None),
    ("torn-uncommitted-tail", lambda r: (r / "tasks.jsonl").open("ab").write(b'{"id": "half-writ'), (OK,) * 4, None),
    ("torn-tail-both-files",
     lambda r: [(r / n).open("ab").write(b'\xff\x00{"torn') for n in ("tasks.jsonl", "rejected.jsonl")],
     (OK,) * 4, None),
    ("stale-lock-file", lambda r: (r / ".lock").write_text("12345\n"), (OK,) * 4, None),
    ("lock-dir-instead-of-file", lambda r: ((r / ".lock").unlink(), (r / ".lock").mkdir()), (OK, OK, E, OK), ".lock"),
    ("foreign-non-empty-dir", _foreign, (E,) * 4, "progress.json: missing"),
    ("file-instead-of-dir", _a_file, (E,) * 4, "no such run directory"),
    ("missing-dir", lambda r: shutil.rmtree(r), (E,) * 4, "no such run directory"),
]


def _rundir_params():
    for did, damage, expect, needle in RUNDIR_CASES:
        for cmd, outcome in zip(COMMANDS, expect):
            yield pytest.param(damage, cmd, outcome, needle, id=f"rundir-{did}-{cmd}")


def _command(cmd: str, run: Path, out: Path) -> list:
    return {"status": ["status", run], "export": ["export", run, "-o", out / "data.jsonl"],
            "resume": ["resume", run, "max_rounds=2", "--no-progress"],
            "audit": ["audit", run, "--sample", "3", "--export", out / "sheet.csv"]}[cmd]


@pytest.fixture
def run_copy(base_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    (tmp_path / "out").mkdir()
    return run


@pytest.mark.parametrize("damage, cmd, outcome, needle", _rundir_params())
def test_run_directory(run_copy, cli, damage, cmd, outcome, needle):
    run, out = run_copy, run_copy.parent / "out"
    good = committed(run)
    damage(run)
    before = snapshot(run.parent)
    res = cli(*_command(cmd, run, out))
    if outcome == E:
        assert_error(res, str(run), needle)
        assert snapshot(run.parent) == before  # nothing written, nothing cut
        return
    assert_ok(res)
    for name, data in good.items():  # nothing committed lost
        assert (run / name).read_bytes().startswith(data), name
    if cmd == "resume":  # the torn tail was cut, and new batches follow the committed bytes
        now = json.loads((run / "progress.json").read_text())
        assert now["cursor"]["round"] == 3 and all(b"torn" not in (run / n).read_bytes() for n in good)
        assert all(json.loads(x) for x in (run / "tasks.jsonl").read_bytes().split(b"\n") if x)
    else:  # read-only commands leave the run as it was
        assert {k: v for k, v in snapshot(run.parent).items() if not k.startswith("out")} == \
               {k: v for k, v in before.items() if not k.startswith("out")}
    if cmd == "export":
        assert len((out / "data.jsonl").read_bytes().split(b"\n")) > 1
    if cmd == "audit":
        assert (out / "sheet.csv").read_text().startswith("id,instruction")


def test_run_into_a_foreign_directory_writes_nothing(work, cli):
    """rundir-foreign-run: `run` with output_dir holding a user's own files."""
    _foreign(work / "run")
    before = snapshot(work)
    assert_error(cli("run", work / "job.yaml", "--no-progress"), "not a run directory", "nothing was written")
    assert snapshot(work) == before


def test_run_into_a_file_writes_nothing(work, cli):
    """rundir-file-run: `run` with output_dir naming a file."""
    _a_file(work / "run")
    before = snapshot(work)
    assert_error(cli("run", work / "job.yaml", "--no-progress"), str(work / "run"))
    assert snapshot(work) == before


def _hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding the run's flock; it says so on stdout, and lets go when its stdin closes."""
    code = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.skipif(sys.platform == "win32", reason="advisory locks are POSIX")
@pytest.mark.parametrize("cmd", [pytest.param(c, id=f"rundir-locked-{c}") for c in COMMANDS])
def test_another_process_holds_the_run(run_copy, cli, cmd):
    """rundir-locked-*: readers go ahead; a writer refuses, and leaves everything as it was."""
    run, out = run_copy, run_copy.parent / "out"
    holder = _hold_lock(run / ".lock")
    try:
        before = snapshot(run)
        res = cli(*_command(cmd, run, out))
        if cmd == "resume":
            assert_error(res, str(run), "another selfinstruct process is running")
        else:
            assert_ok(res)
        assert snapshot(run) == before
    finally:
        holder.stdin.close()
        holder.wait()
    assert_ok(cli(*_command("resume", run, out)))  # once the holder is gone the run continues


@pytest.mark.skipif(sys.platform == "win32", reason="advisory locks are POSIX")
def test_lock_left_by_a_killed_process_does_not_block(run_copy, cli):
    """rundir-stale-lock-of-killed-process: the kernel drops a dead holder's flock; resume goes on."""
    holder = _hold_lock(run_copy / ".lock")
    holder.kill()
    holder.wait()
    assert (run_copy / ".lock").exists()
    good = committed(run_copy)
    assert_ok(cli("resume", run_copy, "max_rounds=2", "--no-progress"))
    assert all((run_copy / n).read_bytes().startswith(b) for n, b in good.items())


def _make_read_only(path: Path, monkeypatch) -> None:
    """chmod a-w; as root (which ignores modes) also refuse writes below `path` in this process."""
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    if os.geteuid() != 0:
        return
    import builtins
    import errno

    inside = lambda p: str(Path(os.fspath(p)).resolve()).startswith(str(path.resolve()))  # noqa: E731
    real_open, real_os_open, real_replace = builtins.open, os.open, os.replace

    def deny(p):
        raise PermissionError(errno.EACCES, "Permission denied", os.fspath(p))

    def fake_open(file, mode="r", *a, **k):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and inside(file):
            deny(file)
        return real_open(file, mode, *a, **k)

    def fake_os_open(file, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(file):
            deny(file)
        return real_os_open(file, flags, *a, **k)

    def fake_replace(src, dst, *a, **k):
        if inside(dst):
            deny(dst)
        return real_replace(src, dst, *a, **k)
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "replace", fake_replace)
    monkeypatch.setattr(Path, "open", lambda self, mode="r", *a, **k: fake_open(self, mode, *a, **k))


@pytest.mark.parametrize("cmd", [pytest.param(c, id=f"rundir-read-only-{c}") for c in COMMANDS])
def test_read_only_run_directory(run_copy, cli, monkeypatch, cmd):
    """Readers work; resume refuses at the lock, before it writes anything."""
    run, out = run_copy, run_copy.parent / "out"
    good = committed(run)
    _make_read_only(run, monkeypatch)
    try:
        before = snapshot(run)
        res = cli(*_command(cmd, run, out))
        if cmd == "resume":
            assert_error(res, str(run / ".lock"), "Permission denied")
        else:
            assert_ok(res)
        assert snapshot(run) == before and committed(run) == good
    finally:
        monkeypatch.undo()
        for p in [run, *run.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


# ---- exports ----

def test_export_to_stdout_writes_no_file(run_copy, cli):
    """export-stdout."""
    before = snapshot(run_copy.parent)
    res = cli("export", run_copy, "--format", "alpaca", "-o", "-")
    assert_ok(res)
    rows = [json.loads(x) for x in res.out.split("\n") if x]
    tasks = [json.loads(x) for x in (run_copy / "tasks.jsonl").read_text().split("\n") if x]
    assert len(rows) == sum(len(t["instances"]) for t in tasks) and set(rows[0]) == {"instruction", "input", "output"}
    assert snapshot(run_copy.parent) == before


def test_export_overwrites_an_existing_file(run_copy, cli):
    """export-existing-file: replaced whole (atomically), not appended to."""
    target = run_copy.parent / "out" / "data.jsonl"
    target.write_text("old\n" * 1000)
    assert_ok(cli("export", run_copy, "--format", "jsonl", "-o", target))
    assert target.read_bytes() == committed(run_copy)["tasks.jsonl"]


@pytest.mark.parametrize("target, needle", [
    pytest.param("out", "is a directory", id="export-to-a-directory"),
    pytest.param("nowhere/data.jsonl", "no such directory", id="export-missing-parent"),
    pytest.param("run/tasks.jsonl", "run directory", id="export-onto-the-runs-tasks"),
    pytest.param("run/progress.json", "run directory", id="export-onto-the-runs-progress"),
    pytest.param("run/audit.jsonl", "run directory", id="export-onto-the-runs-audit"),
    pytest.param("link.jsonl", "run directory", id="export-via-a-symlink-to-the-runs-tasks"),
    pytest.param("run/tasks.jsonl/x.jsonl", "no such directory", id="export-under-a-file"),
])
def test_export_to_a_bad_place(run_copy, cli, target, needle):
    path = run_copy.parent / target
    (run_copy.parent / "link.jsonl").symlink_to(run_copy / "tasks.jsonl")
    good = committed(run_copy)
    before = snapshot(run_copy.parent)
    assert_error(cli("export", run_copy, "-o", path), needle)
    assert snapshot(run_copy.parent) == before and committed(run_copy) == good


@pytest.mark.parametrize("target, needle", [
    pytest.param("out", "is a directory", id="export-audit-sheet-to-a-directory"),
    pytest.param("run/tasks.jsonl", "run directory", id="export-audit-sheet-onto-the-runs-tasks"),
])
def test_audit_sheet_to_a_bad_place(run_copy, cli, target, needle):
    path = run_copy.parent / target
    before = snapshot(run_copy.parent)
    assert_error(cli("audit", run_copy, "--sample", "2", "--export", path), needle)
    assert snapshot(run_copy.parent) == before


def test_export_to_a_read_only_location(run_copy, cli, monkeypatch):
    """export-read-only-location."""
    out = run_copy.parent / "out"
    _make_read_only(out, monkeypatch)
    try:
        before = snapshot(run_copy.parent)
        assert_error(cli("export", run_copy, "-o", out / "data.jsonl"), str(out / "data.jsonl"))
        assert snapshot(run_copy.parent) == before
    finally:
        monkeypatch.undo()
        out.chmod(0o755)


def test_export_unknown_format(run_copy, cli):
    """export-unknown-format: argparse names the choices."""
    before = snapshot(run_copy.parent)
    assert_usage_error(cli("export", run_copy, "--format", "csv", "-o", "-"), "invalid choice: 'csv'")
    assert snapshot(run_copy.parent) == before


# ---- a real terminal: no traceback gets through ----

def test_no_traceback_reaches_the_terminal(run_copy):
    """A few cases again through `python -m selfinstruct`: exit 1, one `Error:` line, nothing else."""
    tmp = run_copy.parent
    (tmp / "utf16.jsonl").write_bytes(jl(GOOD).decode().encode("utf-16"))
    (tmp / "bin.yaml").write_bytes(bytes(range(256)))
    (tmp / "deep.jsonl").write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    broken = tmp / "broken"
    shutil.copytree(run_copy, broken)
    _overwrite_committed_row(broken, b'"\xff\xfe"')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (["validate", ROOT / "configs/default.yaml", f"seed_tasks={tmp / 'utf16.jsonl'}"],
                 ["validate", ROOT / "configs/default.yaml", f"seed_tasks={tmp / 'deep.jsonl'}"],
                 ["run", tmp / "bin.yaml"],
                 ["status", broken],
                 ["export", run_copy, "-o", run_copy / "tasks.jsonl"]):
        p = subprocess.run([sys.executable, "-m", "selfinstruct", *map(str, args)], env=env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 1 and p.stderr.startswith("Error: ") and p.stderr.count("\n") == 1, (args, p.stderr)


# ---- model output: every parser and filter, fuzzed ----

MARKERS = ["Task 9:", "Task 1:", "task 10 :", "#3.", "3.", "4)", "Instruction:", "Input:", "Output:", "Class label:",
           "Example 2", "Example 3:", "12. Instruction:", "12. Input:", "12. Output:", "###", "<noinput>", "N/A"]
PIECES = MARKERS + ["\n", "\n\n", "\r\n", " ", "\t", "\u2028", "\u2029", "\x85", "\x00", "\x0b", "\x1b[31m",
                    "\ufeff", "é", "文字", "🙂", "\ud7ff", "word", "Write a poem about the sea.", ":", "."]
completions = st.one_of(
    st.text(max_size=400),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=60).map("".join),
)
_ALL_OUTPUT_FILTER_NAMES = ("empty_output marker_only missing_input output_equals_input leaked_markers truncated "
                            "refusal looping repetitive repeated_phrase foreign_label").split()
_KNOWN_REASONS = set(C.INSTRUCTION_FILTERS) | {"empty", "too_short", "too_long", "program_task", "leading_punctuation",
                                              "non_ascii_start"} | set(_ALL_OUTPUT_FILTER_NAMES)


_EN = P._patterns(P._lang(None))  # the English parser's own marker patterns


def _field_lines(value: str) -> list[str]:
    return value.split("\n")[1:]  # the first line may hold marker text inline ("Input: Output: x")


@settings(max_examples=300, deadline=None)
@given(completions)
def test_parse_instructions_fuzz(text):
    """model-fuzz-instructions: one item per 'N:' line; an item is one clean line holding no item marker line."""
    items = P.parse_instructions(text)
    assert isinstance(items, list) and len(items) >= 1
    for item in items:
        assert item == item.strip() and not any(c.isspace() and c != " " for c in item)
    starts = sum(1 for k, line in enumerate(text.split("\n")) if k and _EN["task_line"].match(line))
    assert len(items) == starts + 1


@settings(max_examples=300, deadline=None)
@given(completions, st.booleans())
def test_parse_instances_fuzz(text, classification):
    """model-fuzz-instances: fields are stripped strings; no field marker line continues inside a field."""
    for inst in P.parse_instances(text, classification):
        assert isinstance(inst, Instance)
        for value in (inst.input, inst.output):
            assert isinstance(value, str) and value == value.strip()
            assert not any(_EN["field"].match(line) for line in _field_lines(value)), value


@settings(max_examples=300, deadline=None)
@given(completions)
def test_parse_alpaca_fuzz(text):
    """model-fuzz-alpaca: one-line instructions; inputs/outputs never swallow a field line or a '###' line."""
    for instruction, inst in P.parse_alpaca(text):
        assert instruction and instruction == P.one_line(instruction)
        if inst is not None:
            for value in (inst.input, inst.output):
                assert value == value.strip()
                for line in _field_lines(value):
                    assert not _EN["alpaca_field"].match(line) and line.strip() != "###", value


@settings(max_examples=300, deadline=None)
@given(completions, st.booleans())
def test_filters_fuzz(text, cut):
    """model-fuzz-filters: a known reason or None, never an exception; kept + dropped = given."""
    cfg = C.FilterConfig()
    reason = F.check_instruction(text, cfg, F.Context(cut=cut))
    assert reason is None or reason in _KNOWN_REASONS
    instances = [Instance(text, text[::-1]), Instance("", text), Instance(text, "")]
    ctx = F.Context(instruction=text, classification=cut, demo_labels=frozenset({F.norm_label(text)}))
    kept, dropped = F.filter_instances(instances, cfg, ctx, [cut, False, cut])
    assert len(kept) + sum(dropped.values()) == len(instances) and len(kept) <= cfg.max_instances
    assert all(k.input == k.input.strip() and k.output == k.output.strip() for k in kept)
    assert isinstance(P.needs_input(text), bool) and P.clean_input(text) == P.clean_input(text).strip()


# Markers that mean two items ran together wherever they sit in an instruction (filters._MARKERS, _INLINE_FIELD).
RUN_TOGETHER = ["Task 9:", "Task 1:", "task 10 :", "Input:", "Output:", "Class label:", "12. Instruction:",
                "12. Input:", "12. Output:", "###"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1,
                        max_size=30), max_size=6), st.sampled_from(RUN_TOGETHER))
def test_markers_inside_an_item_are_caught(words, marker):
    """model-imitated-markers: a prompt marker inside an instruction gets the item dropped as leaked_markers."""
    line = f"Describe {' '.join(words)} {marker} more words here"
    items = P.parse_instructions(f" First instruction here.\nTask 2: {line}")
    assert len(items) == 2
    assert F.leaked_markers(items[1], C.FilterConfig()) == "leaked_markers"
    assert F.check_instruction(items[1], C.FilterConfig()) is not None


HUGE = [
    ("model-huge-whitespace-line", " " * 200_000),
    ("model-huge-whitespace-then-digit", " " * 200_000 + "x\n" + "\t" * 100_000 + "1"),
    ("model-huge-one-line", "word " * 200_000),
    ("model-huge-many-items", "".join(f"\nTask {i}: Write about item {i}." for i in range(20_000))),
    ("model-huge-many-fields", "x\n" + "Output: y\nInput: z\n" * 20_000),
    ("model-huge-digits", "1" * 100_000 + " 2" * 50_000),
    ("model-empty", ""),
    ("model-only-newlines", "\n" * 1000),
    ("model-only-markers", "Task 9:\nInput:\nOutput:\nClass label:\n###\n1. Instruction:\nExample 2\n"),
    ("model-control-chars", "".join(map(chr, range(32))) * 100 + "\x7f\x85\u2028\u2029"),
]


@pytest.mark.parametrize("text", [pytest.param(t, id=i) for i, t in HUGE])
def test_parsers_survive_extreme_completions(text):
    """Huge, empty and control-character completions: every parser and filter returns (no exception, no hang)."""
    cfg = C.FilterConfig()
    items = P.parse_instructions(text)
    assert all("\n" not in i for i in items)
    for cls in (False, True):
        assert all(isinstance(i, Instance) for i in P.parse_instances(text, cls))
    assert all("\n" not in ins for ins, _ in P.parse_alpaca(text))
    for item in items[:50]:
        F.check_instruction(item, cfg)
    kept, dropped = F.filter_instances([Instance(text, text)], cfg, F.Context(instruction=text[:1000]))
    assert len(kept) + sum(dropped.values()) == 1


def test_round_trip_of_clean_items():
    """The parsers give back exactly what the prompt format carried (guards the properties above from vacuity)."""
    items = ["Name a colour.", "Sort the list: 3, 1, 2.", "Explain why the sky looks blue at noon."]
    assert P.parse_instructions(" " + "\n".join([items[0]] + [f"Task {i}: {t}" for i, t in enumerate(items[1:], 9)])) \
        == items
    got = P.parse_instances(" a b\nOutput: c d\nExample 2\nInput:\nOutput: e", False)
    assert got == [Instance("a b", "c d"), Instance("", "e")]
    got = P.parse_alpaca(" Say hi.\n9. Input:\n<noinput>\n9. Output:\nHi.\n###\n10. Instruction: Add 2 and 3.\n"
                         "10. Input:\n2, 3\n10. Output:\n5")
    assert got == [("Say hi.", Instance("", "Hi.")), ("Add 2 and 3.", Instance("2, 3", "5"))]


def test_exact_duplicate_rows_add_no_instances(tmp_path):
    """seed-exact-duplicate-rows: merged into the first, without repeating its instances in few-shot prompts."""
    from selfinstruct.records import load_seeds

    path = tmp_path / "s.jsonl"
    path.write_bytes(jl(ALPACA, ALPACA, task(1), task(1), {**ALPACA, "input": "Hi.", "output": "Salut."}))
    tasks = load_seeds(path)
    assert [len(t.instances) for t in tasks] == [2, 1]
