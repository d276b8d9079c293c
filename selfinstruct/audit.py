"""Hand audit of accepted tasks: the Self-Instruct paper's three questions, answers kept in audit.jsonl.

The team's grading notes (notes/audit.md) say what each question means. audit.jsonl is append-only, one row per graded
task: {"id", "instruction", "input", "output", "all", "seed", "time"}; when an id has several rows the last wins.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple, TextIO

from selfinstruct.errors import SelfInstructError
from selfinstruct.records import Task, dumps
from selfinstruct.store import AUDIT, RunStore, write_output

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
# (row key, label, CSV column, one-line hint from audit.md)
QUESTIONS = (
    ("instruction", "valid instruction", "valid_instruction",
     "a task a capable assistant could carry out from the text alone (no: a bare statement, a fragment, "
     "needs an image/file/URL, nonsense, a loop)"),
    ("input", "appropriate input", "appropriate_input",
     "the input fits the instruction (empty only if none is needed; not the answer itself, not another task's)"),
    ("output", "acceptable output", "acceptable_output",
     "a correct, complete, on-task answer you would keep for training (no: wrong, cut off, a loop, "
     "copied input, a refusal)"),
)
KEYS = ("instruction", "input", "output")
CSV_COLUMNS = ("id", "instruction", "input", "output", *(q[2] for q in QUESTIONS))
SHEET_VALUES = {**dict.fromkeys(("y", "yes", "1", "true"), True), **dict.fromkeys(("n", "no", "0", "false"), False)}
ANSWER_HELP = "answer y (yes), n (no), s (skip this task), p (show provenance) or q (quit; answers so far are kept)"


class AuditError(SelfInstructError):
    """audit.jsonl or an imported sheet is damaged, or the audit was asked for something impossible."""


class AuditLog(NamedTuple):
    rows: list[dict]  # valid rows in file order
    end: int  # byte offset just past the last valid row: a torn tail starts here
    open_end: bool  # the last valid row lacks its newline (a kill right before it); add one before appending
    torn: int | None  # line number of an ignored torn last line


def _row(raw: bytes) -> dict | None:
    try:
        row = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # bad JSON, not UTF-8, a 5000-digit number, nesting too deep
        return None
    ok = isinstance(row, dict) and isinstance(row.get("id"), str) and all(
        isinstance(row.get(k), bool) for k in (*KEYS, "all"))
    return row if ok else None


def read_log(path: Path) -> AuditLog:
    """Parse audit.jsonl; a bad last line is a torn write (ignored), a bad line before others is an error."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return AuditLog([], 0, False, None)
    rows: list[dict] = []
    start = end = 0
    bad: int | None = None
    for no, raw in enumerate(data.split(b"\n"), 1):  # b"\n" only: JSON strings may hold U+2028 raw
        if raw.strip():
            if bad is not None:  # more rows follow the bad one, so it is damage, not a torn tail
                raise AuditError(f"{path}:{bad}: damaged row")
            row = _row(raw)
            if row is None:
                bad = no
            else:
                rows.append(row)
                end = min(start + len(raw) + 1, len(data))
        start += len(raw) + 1
    # A complete JSON row without its newline is kept: the answer was fully written, only "\n" was lost.
    return AuditLog(rows, end, end > 0 and data[end - 1:end] != b"\n", bad)


def latest(rows: list[dict]) -> dict[str, dict]:
    """Answers by task id; the last row for an id wins."""
    return {r["id"]: r for r in rows}


def append_rows(path: Path, rows: list[dict]) -> None:
    """Durably append rows, first cutting a torn last line (never rewriting what is already there)."""
    log = read_log(path)  # re-read each time: cheap (one row per graded task) and safe if the file changed
    with open(path, "a+b") as f:
        if f.seek(0, os.SEEK_END) > log.end:
            f.truncate(log.end)
        f.write((b"\n" if log.open_end else b"") + "".join(dumps(r) for r in rows).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def make_row(task_id: str, answers: dict[str, bool], seed: int) -> dict:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"id": task_id, **{k: answers[k] for k in KEYS}, "all": all(answers[k] for k in KEYS),
            "seed": seed, "time": when}


def sample(tasks: list[Task], n: int, seed: int) -> list[Task]:
    """N tasks drawn at random (not the first N) with a fixed seed; N above the count = all, shuffled."""
    return random.Random(seed).sample(tasks, min(n, len(tasks)))


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (better than p ± z·se near 0 % and 100 %)."""
    if n == 0:
        return 0.0, 1.0
    p, zz = k / n, z * z
    d = 1 + zz / n
    center = (p + zz / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + zz / (4 * n * n)) / d
    return max(0.0, center - half), min(1.0, center + half)


def rate_line(label: str, k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{label}: {k}/{n} = {100 * k / n:.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}%)"


def rate_lines(answers: dict[str, dict]) -> list[str]:
    """The four rates over every graded task: one line each."""
    rows = list(answers.values())
    if not rows:
        return ["no tasks graded yet"]
    counts = [(label, sum(r[k] for r in rows)) for k, label, _, _ in QUESTIONS]
    counts.append(("all three valid", sum(r["all"] for r in rows)))
    return [rate_line(label, k, len(rows)) for label, k in counts]


def status_lines(root: Path) -> list[str]:
    """Audit rates for `status`; empty when the run has no audit. Never raises: status must still show."""
    path = Path(root) / AUDIT
    try:
        log = read_log(path)
    except AuditError as e:
        return [f"audit: {e}"]
    if not log.rows:
        return []
    answers = latest(log.rows)
    torn = f"; torn line {log.torn} ignored" if log.torn else ""
    return [f"audit: {len(answers)} tasks graded ({path}{torn})"] + ["  " + x for x in rate_lines(answers)]


def show_task(task: Task, pos: int, total: int) -> str:
    """What the grader sees: instruction and the first instance, no provenance."""
    def block(label: str, text: str) -> str:
        return f"{label}: " + text.replace("\n", "\n    ")

    first = task.instances[0] if task.instances else None
    lines = [f"[{pos}/{total}]", block("instruction", task.instruction),
             block("input", first.input) if first and first.input else "input: (no input)",
             block("output", first.output) if first else "output: (no output)"]
    others = len(task.instances) - 1
    if others > 0:
        lines.append(f"(the task has {others} other instance{'s' * (others > 1)}; only this first one is graded)")
    return "\n".join(lines)


def provenance(task: Task) -> str:
    return (f"provenance of {task.id} (is_classification: {json.dumps(task.is_classification)}):\n"
            + json.dumps(task.meta, indent=2, ensure_ascii=False))


def _ask(question: str, hint: str, task: Task, inp: TextIO, out: TextIO) -> str:
    """One of y/n/s/q; p prints the provenance and asks again; EOF counts as q."""
    out.write(f"  {question} = {hint}\n")
    while True:
        out.write(f"{question}? [y/n/s/p/q] ")
        out.flush()
        line = inp.readline()
        if not line:
            out.write("\n")
            return "q"
        answer = line.strip().lower()
        if answer == "p":
            out.write(provenance(task) + "\n")
        elif answer in ("y", "n", "s", "q"):
            return answer
        else:
            out.write(ANSWER_HELP + "\n")


def _grade_one(task: Task, inp: TextIO, out: TextIO) -> dict[str, bool] | str:
    """The three answers for one task, or "s" / "q"."""
    answers: dict[str, bool] = {}
    for key, label, _, hint in QUESTIONS:
        if answers.get("instruction") is False:  # audit.md: an invalid instruction makes all three invalid
            answers[key] = False
            continue
        a = _ask(label, hint, task, inp, out)
        if a in ("s", "q"):
            return a
        answers[key] = a == "y"
    if not answers["instruction"]:
        out.write("input and output recorded as invalid too (the instruction is invalid)\n")
    return answers


def grade(path: Path, tasks: list[Task], seed: int, inp: TextIO, out: TextIO) -> None:
    """The interactive loop: ask the three questions of each ungraded task, saving each task's answers at once."""
    done = set(latest(read_log(path).rows))
    todo = sum(t.id not in done for t in tasks)
    out.write(f"{len(tasks)} tasks sampled (seed {seed}), {len(tasks) - todo} already graded, {todo} to go.\n"
              f"{ANSWER_HELP}\n")
    saved = 0
    try:
        for pos, task in enumerate(tasks, 1):
            if task.id in done:
                continue
            out.write("\n" + show_task(task, pos, len(tasks)) + "\n")
            result = _grade_one(task, inp, out)
            if result == "q":
                break
            if result == "s":
                out.write("skipped (nothing saved)\n")
                continue
            append_rows(path, [make_row(task.id, result, seed)])
            done.add(task.id)
            saved += 1
    except KeyboardInterrupt:  # Ctrl-C is a quit: every finished task is already on disk
        out.write("\n")
    left = sum(t.id not in done for t in tasks)
    out.write(f"\n{saved} tasks graded now; " + (f"{left} of the sample left: run the same command again to continue."
                                                  if left else "the whole sample is graded.") + "\n")


def export_sheet(path: Path, tasks: list[Task], answers: dict[str, dict]) -> int:
    """Write the sample as CSV (sample order), y/n prefilled where graded, atomically; return how many were."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")  # "\n": write_atomic writes text mode, which would double "\r\n"
    w.writerow(CSV_COLUMNS)
    for t in tasks:
        first = t.instances[0] if t.instances else None
        row = answers.get(t.id)
        marks = ["y" if row[k] else "n" for k in KEYS] if row else ["", "", ""]
        w.writerow([t.id, t.instruction, first.input if first else "", first.output if first else "", *marks])
    write_output(path, buf.getvalue(), "sheet")  # refuses a directory, a missing one, and the run's own files
    return sum(t.id in answers for t in tasks)


def import_sheet(path: Path, known: set[str], answers: dict[str, dict], seed: int) -> tuple[list[dict], int]:
    """Rows to append from a filled sheet, and how many rows were left ungraded; every problem at once."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheet programs often save a BOM
    except (OSError, UnicodeDecodeError) as e:
        raise AuditError(f"{path}: cannot read the sheet: {getattr(e, 'strerror', None) or e}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in CSV_COLUMNS if c not in header and c not in ("instruction", "input", "output")]
    if missing:
        raise AuditError(f"{path}:1: missing column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)}")
    col = {c: header.index(c) for c in ("id", *(q[2] for q in QUESTIONS))}
    problems, new, ungraded, end = [], [], 0, reader.line_num
    current = dict(answers)
    for cells in reader:
        line, end = end + 1, reader.line_num  # a quoted cell may span lines: name the row's first line
        cells = cells + [""] * (len(header) - len(cells))
        if not any(c.strip() for c in cells):
            continue
        task_id = cells[col["id"]].strip()
        if task_id not in known:
            problems.append(f"{path}:{line}: unknown task id {task_id!r} (not in tasks.jsonl)")
            continue
        raw = [cells[col[q[2]]] for q in QUESTIONS]
        vals = [SHEET_VALUES.get(v.strip().lower()) for v in raw]
        bad = [f"{q[2]} {v.strip()!r}" for q, v, b in zip(QUESTIONS, raw, vals) if v.strip() and b is None]
        if bad:
            problems.append(f"{path}:{line}: {', '.join(bad)}: use y/n, yes/no, 1/0 or true/false")
            continue
        if vals[0] is False:  # audit.md: an invalid instruction makes input and output invalid
            vals = [False, False, False]
        if None in vals:
            ungraded += 1
            continue
        row = make_row(task_id, dict(zip(KEYS, vals)), seed)
        old = current.get(task_id)
        if old is None or any(old[k] != row[k] for k in KEYS):
            new.append(row)
            current[task_id] = row
    if problems:
        raise AuditError("\n".join(problems))
    return new, ungraded


def audit(run_dir: str | Path, n: int | None, seed: int = 0, export: str | None = None,
          import_: str | None = None, inp: TextIO | None = None, out: TextIO | None = None) -> int:
    """`selfinstruct audit`: grade interactively, or export/import a sheet; then print the rates."""
    inp, out = inp or sys.stdin, out or sys.stdout
    store = RunStore.open(run_dir, lock=False)
    tasks = store.tasks()
    if not tasks:
        raise AuditError(f"{run_dir}: no accepted tasks to audit")
    if import_ is None and n is None:
        raise AuditError("--sample N is required: how many tasks to grade (50 at least to compare runs)")
    if n is not None and n < 1:
        raise AuditError(f"--sample must be at least 1 (got {n})")
    path = store.root / AUDIT
    log = read_log(path)
    if log.torn:
        print(f"{path}:{log.torn}: torn last line ignored (an interrupted write); it is cut off before the "
              "next answer is saved", file=sys.stderr)
    if export is not None:
        chosen = sample(tasks, n, seed)
        graded = export_sheet(Path(export), chosen, latest(log.rows))
        out.write(f"wrote {len(chosen)} sampled tasks ({graded} already graded) to {export}; fill in y/n and "
                  f"record them with: selfinstruct audit {run_dir} --import {export}\n")
        return 0
    if import_ is not None:
        rows, ungraded = import_sheet(Path(import_), {t.id for t in tasks}, latest(log.rows), seed)
        if rows:
            append_rows(path, rows)
        out.write(f"{import_}: {len(rows)} new answers recorded in {path}"
                  + (f"; {ungraded} rows not fully graded, left out" if ungraded else "") + "\n")
    else:
        grade(path, sample(tasks, n, seed), seed, inp, out)
    answers = latest(read_log(path).rows)
    out.write(f"\nrates over {len(answers)} graded tasks in {path}:\n")
    out.write("".join(f"  {x}\n" for x in rate_lines(answers)))
    return 0
