"""The hand audit: sampling, the interactive loop through the real CLI, audit.jsonl durability, sheets, rates."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfinstruct import audit as A
from selfinstruct.records import Instance, Task
from selfinstruct.report import status_text
from selfinstruct.store import RunStore
from tests.helpers import ROOT, cfg_for, make_seeds, release, rows, run_job


def cli(*args, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "selfinstruct", *map(str, args)], cwd=ROOT, env=env,
                          input=stdin, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("audit-run")
    reason, _ = run_job(cfg_for(tmp, target=12), make_seeds())
    assert reason.startswith("target reached")
    return tmp / "run"


@pytest.fixture
def run(built, tmp_path) -> Path:
    """A fresh copy of a finished fake-LM run with 13 accepted tasks."""
    return Path(shutil.copytree(built, tmp_path / "run"))


def tasks_of(run: Path) -> list[Task]:
    return RunStore.open(run, lock=False).tasks()


def sample_ids(run: Path, n: int, seed: int = 0) -> list[str]:
    return [t.id for t in A.sample(tasks_of(run), n, seed)]


def audit_rows(run: Path) -> list[dict]:
    return rows(run / "audit.jsonl")


def answers(run: Path) -> list[tuple]:
    return [(r["id"], r["instruction"], r["input"], r["output"], r["all"]) for r in audit_rows(run)]


def test_sample_is_random_seeded_and_deterministic(run):
    tasks = tasks_of(run)
    assert len(tasks) == 13
    ids = sample_ids(run, 5)
    assert ids == [t.id for t in random.Random(0).sample(tasks, 5)]
    assert ids == sample_ids(run, 5)  # same run + seed + N: same sample, same order
    assert ids != [t.id for t in tasks[:5]]  # not the first N
    assert ids != sample_ids(run, 5, seed=1)
    everything = sample_ids(run, 100)
    assert sorted(everything) == sorted(t.id for t in tasks) and everything != [t.id for t in tasks]


def test_wilson_interval_matches_hand_computed_values():
    # z = 1.96: 0/10 -> [0, z²/(n+z²)] = [0, 0.2775]; 5/10 -> 0.5 ± 0.2634; 10/10 mirrors 0/10
    assert A.wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert A.wilson(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-5)
    assert A.wilson(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert A.rate_line("valid instruction", 41, 50) == "valid instruction: 41/50 = 82.0% (95% CI 69.2-90.2%)"
    assert A.rate_line("all three valid", 0, 10) == "all three valid: 0/10 = 0.0% (95% CI 0.0-27.8%)"


def test_task_display_shows_first_instance_without_provenance():
    t = Task(id="r9-b9-c9", instruction="Name a\nprime.", instances=[Instance("", "7"), Instance("", "11"),
                                                                     Instance("", "13")],
             is_classification=False, origin="machine", meta={"round": 9, "human_examples": ["s1"]})
    text = A.show_task(t, 3, 50)
    assert text.splitlines() == ["[3/50]", "instruction: Name a", "    prime.", "input: (no input)", "output: 7",
                                 "(the task has 2 other instances; only this first one is graded)"]
    assert A.provenance(t).startswith('provenance of r9-b9-c9 (is_classification: false):\n{\n  "round": 9,')


def test_interactive_loop_saves_autofills_shows_provenance_skips_and_reasks(run):
    ids = sample_ids(run, 4)
    script = ("y\ny\nn\n"          # task 1: valid, appropriate, wrong output
              "N\n"                # task 2: invalid instruction -> input and output not asked, recorded as no
              "p\n Y \nmaybe\ny\ny\n"  # task 3: provenance, then upper case with spaces; garbage re-asks
              "s\n")               # task 4: skipped; then EOF
    p = cli("audit", run, "--sample", "4", stdin=script)
    assert p.returncode == 0, p.stderr
    assert answers(run) == [(ids[0], True, True, False, False), (ids[1], False, False, False, False),
                            (ids[2], True, True, True, True)]
    assert all(r["seed"] == 0 and r["time"].endswith("Z") for r in audit_rows(run))
    out = p.stdout
    assert [f"[{i}/4]" in out for i in range(1, 5)] == [True] * 4
    assert out.count("valid instruction? [y/n/s/p/q]") == 5 and out.count("appropriate input? [y/n/s/p/q]") == 3
    assert out.count("acceptable output? [y/n/s/p/q]") == 2
    assert "valid instruction = a task a capable assistant could carry out from the text alone" in out
    assert "input and output recorded as invalid too" in out and "skipped (nothing saved)" in out
    assert out.count(A.ANSWER_HELP) == 2  # once at the start, once for "maybe"
    assert out.count("provenance of") == 1 and f"provenance of {ids[2]} (is_classification:" in out
    assert out.index('"human_examples"') > out.index("[3/4]")  # provenance only once asked for
    assert "valid instruction: 2/3 = 66.7% (95% CI 20.8-93.9%)" in out
    assert "all three valid: 1/3 = 33.3% (95% CI 6.1-79.2%)" in out


def test_quit_and_eof_keep_answers_and_a_rerun_resumes(run):
    ids = sample_ids(run, 4)
    p = cli("audit", run, "--sample", "4", stdin="y\ny\ny\ny\nq\n")  # task 2 quit after one answer
    assert p.returncode == 0 and "3 of the sample left: run the same command again" in p.stdout
    assert answers(run) == [(ids[0], True, True, True, True)]
    p = cli("audit", run, "--sample", "4", stdin="n\ny\n")  # task 2 invalid; EOF halfway through task 3
    assert p.returncode == 0 and "[1/4]" not in p.stdout and "[2/4]" in p.stdout and "[3/4]" in p.stdout
    assert "[4/4]" not in p.stdout and "skipped" not in p.stdout  # EOF stops the loop like q
    assert "4 tasks sampled (seed 0), 1 already graded, 3 to go." in p.stdout
    assert answers(run) == [(ids[0], True, True, True, True), (ids[1], False, False, False, False)]
    p = cli("audit", run, "--sample", "4", stdin="y\ny\nn\ny\nn\ny\n")
    assert "[2/4]" not in p.stdout and "the whole sample is graded." in p.stdout
    assert [a[0] for a in answers(run)] == ids
    p = cli("audit", run, "--sample", "4", stdin="")  # nothing left to ask
    assert p.returncode == 0 and "[" not in p.stdout.split("rates")[0] and len(audit_rows(run)) == 4


def test_torn_last_line_is_ignored_then_cut_before_the_next_append(run):
    ids = sample_ids(run, 2)
    path = run / "audit.jsonl"
    good = A.make_row(ids[0], {"instruction": True, "input": False, "output": False}, 0)
    path.write_bytes(json.dumps(good).encode() + b'\n{"id": "' + ids[1].encode() + b'", "instr')
    assert [r["id"] for r in A.read_log(path).rows] == [ids[0]]
    assert "audit: 1 tasks graded" in status_text(RunStore.open(run, lock=False))
    assert path.read_bytes().endswith(b'"instr')  # reading never writes
    p = cli("audit", run, "--sample", "2", stdin="y\ny\ny\n")
    assert p.returncode == 0 and f"{path}:2: torn last line ignored" in p.stderr
    assert path.read_bytes().split(b"\n")[0] == json.dumps(good).encode() and path.read_bytes().endswith(b"}\n")
    assert answers(run) == [(ids[0], True, False, False, False), (ids[1], True, True, True, True)]


def test_complete_last_row_without_newline_is_kept_and_invalid_last_line_is_torn(tmp_path):
    path = tmp_path / "audit.jsonl"
    a, b = (A.make_row(i, {"instruction": True, "input": True, "output": True}, 0) for i in ("a", "b"))
    path.write_text(json.dumps(a) + "\n" + json.dumps(b))  # killed just before the "\n": the answer is whole
    assert [r["id"] for r in A.read_log(path).rows] == ["a", "b"]
    A.append_rows(path, [A.make_row("c", {"instruction": False, "input": False, "output": False}, 0)])
    assert [r["id"] for r in rows(path)] == ["a", "b", "c"]
    path.write_bytes(path.read_bytes() + b"\x00\x00garbage\n\n")  # a bad final line, even newline-ended
    log = A.read_log(path)
    assert [r["id"] for r in log.rows] == ["a", "b", "c"] and log.torn == 4
    A.append_rows(path, [A.make_row("a", {"instruction": True, "input": True, "output": False}, 0)])
    assert b"garbage" not in path.read_bytes() and len(rows(path)) == 4
    assert A.latest(A.read_log(path).rows)["a"]["output"] is False  # the last row for an id wins


def test_damaged_middle_line_is_an_error_naming_file_and_line(run):
    path = run / "audit.jsonl"
    row = json.dumps(A.make_row(sample_ids(run, 1)[0], {"instruction": True, "input": True, "output": True}, 0))
    path.write_text(f"{row}\n{{not json\n{row}\n")
    before = path.read_bytes()
    p = cli("audit", run, "--sample", "3", stdin="y\ny\ny\n")
    assert p.returncode == 1 and p.stderr == f"Error: {path}:2: damaged row\n"
    assert path.read_bytes() == before
    assert f"audit: {path}:2: damaged row" in cli("status", run).stdout  # status still shows the rest


def test_export_edit_import_round_trip(run, tmp_path):
    ids = sample_ids(run, 5, seed=7)
    by_id = {t.id: t for t in tasks_of(run)}
    assert cli("audit", run, "--sample", "5", "--seed", "7", stdin="y\nn\ny\nq\n").returncode == 0
    sheet = tmp_path / "sheet.csv"
    p = cli("audit", run, "--sample", "5", "--seed", "7", "--export", sheet)
    assert p.returncode == 0 and "wrote 5 sampled tasks (1 already graded)" in p.stdout
    assert len(audit_rows(run)) == 1 and "[1/5]" not in p.stdout  # exporting asks nothing
    with open(sheet, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0] == list(A.CSV_COLUMNS)
    assert [r[0] for r in table[1:]] == ids
    first = by_id[ids[1]]
    assert table[2][1:4] == [first.instruction, first.instances[0].input, first.instances[0].output]
    assert table[1][4:] == ["y", "n", "y"] and all(r[4:] == ["", "", ""] for r in table[2:])
    table[2][4:] = ["Yes", " no", "1"]
    table[3][4:] = ["N", "", ""]  # an invalid instruction: the rest count as no
    table[4][4:] = ["y", "", ""]  # not fully graded: left out
    table[5][4:] = ["TRUE", "true", "false"]
    with open(sheet, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(table)
    p = cli("audit", run, "--import", sheet, "--seed", "7")
    assert p.returncode == 0, p.stderr
    assert f"{sheet}: 3 new answers recorded" in p.stdout and "1 rows not fully graded, left out" in p.stdout
    assert answers(run) == [(ids[0], True, False, True, False), (ids[1], True, False, True, False),
                            (ids[2], False, False, False, False), (ids[4], True, True, False, False)]
    assert "valid instruction: 3/4 = 75.0%" in p.stdout
    p = cli("audit", run, "--import", sheet)  # the same sheet again: every row is already recorded
    assert p.returncode == 0 and "0 new answers" in p.stdout and len(audit_rows(run)) == 4


def test_import_with_a_bad_row_appends_nothing(run, tmp_path):
    ids = sample_ids(run, 3)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("id,instruction,input,output,valid_instruction,appropriate_input,acceptable_output\n"
                     f'{ids[0]},"two\nlines",,,y,y,y\n'
                     "nope,x,,,y,y,y\n"
                     f"{ids[1]},x,,,y,maybe,n\n"
                     f"{ids[2]},x,,,n,,\n")
    p = cli("audit", run, "--import", sheet)
    assert p.returncode == 1
    assert p.stderr == (f"Error: {sheet}:4: unknown task id 'nope' (not in tasks.jsonl)\n"
                        f"{sheet}:5: appropriate_input 'maybe': use y/n, yes/no, 1/0 or true/false\n")
    assert not (run / "audit.jsonl").exists()
    sheet.write_text("id,valid_instruction,acceptable_output\n")
    p = cli("audit", run, "--import", sheet)
    assert p.returncode == 1 and f"Error: {sheet}:1: missing column(s) appropriate_input" in p.stderr


def test_status_shows_the_four_rates_only_when_graded(run):
    assert "audit" not in cli("status", run).stdout
    (run / "audit.jsonl").write_text("")
    assert "audit" not in cli("status", run).stdout
    ids = sample_ids(run, 2)
    A.append_rows(run / "audit.jsonl", [A.make_row(ids[0], {"instruction": True, "input": True, "output": True}, 0),
                                       A.make_row(ids[1], {"instruction": True, "input": False, "output": True}, 0)])
    out = cli("status", run).stdout.splitlines()
    at = out.index(f"audit: 2 tasks graded ({run / 'audit.jsonl'})")
    assert out[at + 1:] == ["  valid instruction: 2/2 = 100.0% (95% CI 34.2-100.0%)",
                            "  appropriate input: 1/2 = 50.0% (95% CI 9.5-90.5%)",
                            "  acceptable output: 2/2 = 100.0% (95% CI 34.2-100.0%)",
                            "  all three valid: 1/2 = 50.0% (95% CI 9.5-90.5%)"]


def test_clear_errors(run, tmp_path):
    p = cli("audit", tmp_path / "none", "--sample", "5")
    assert p.returncode == 1 and p.stderr == f"Error: {tmp_path / 'none'}: no such run directory\n"
    for n in ("0", "-3"):
        p = cli("audit", run, "--sample", n)
        assert p.returncode == 1 and p.stderr == f"Error: --sample must be at least 1 (got {n})\n"
    p = cli("audit", run)
    assert p.returncode == 1 and p.stderr.startswith("Error: --sample N is required")
    empty = tmp_path / "empty"
    release(RunStore.create(empty, "{}\n", "x"))
    p = cli("audit", empty, "--sample", "5")
    assert p.returncode == 1 and p.stderr == f"Error: {empty}: no accepted tasks to audit\n"
    p = cli("audit", run, "--sample", "5", "--export", tmp_path / "no" / "dir.csv")
    assert p.returncode == 1 and "no such directory for the sheet" in p.stderr


def test_quality_benchmark_counts_its_signals_from_the_run(tmp_path):
    """benchmarks/quality.py: one column per run; shares are counted from tasks.jsonl, not assumed."""
    cfg = cfg_for(tmp_path, target=8)
    run_job(cfg, make_seeds())
    tasks = rows(Path(cfg.output_dir) / "tasks.jsonl")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/quality.py"), cfg.output_dir], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    table = {k.strip(): v.strip() for k, v in (line.strip("|").split("|")[:2] for line in proc.stdout.splitlines()[2:])}
    assert table["tasks"] == str(len(tasks))
    empty = sum(not i["input"] for t in tasks for i in t["instances"]) / sum(len(t["instances"]) for t in tasks)
    assert table["empty input"] == f"{empty:.0%}"
    assert table["inst:wrong_arithmetic"] == "0%"
    checked = sum("consistency" in t["meta"] for t in tasks) / len(tasks)
    assert table["checked for consistency"] == f"{checked:.0%}"
