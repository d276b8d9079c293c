"""The shipped human seed set: schema, size, balance of task kinds, and no near-duplicate instructions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from selfinstruct.records import load_seeds

SEED_FILE = Path(__file__).resolve().parent.parent / "seed_tasks.jsonl"
SCHEMA = {"id", "name", "instruction", "instances", "is_classification"}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in SEED_FILE.read_text(encoding="utf-8").split("\n") if line.strip()]


@pytest.fixture(scope="module")
def tasks():
    return load_seeds(SEED_FILE)


def test_loads_with_exactly_175_tasks(tasks, rows):
    assert len(tasks) == 175
    assert len(rows) == 175  # no Alpaca-style merging hid a row


def test_self_instruct_schema_on_every_row(rows):
    for n, row in enumerate(rows, 1):
        assert set(row) == SCHEMA, f"line {n}: keys {sorted(row)}"
        assert isinstance(row["id"], str) and isinstance(row["name"], str) and row["name"]
        assert isinstance(row["is_classification"], bool), f"line {n}"
        assert isinstance(row["instances"], list) and row["instances"], f"line {n}"
        for inst in row["instances"]:
            assert set(inst) == {"input", "output"}, f"line {n}"
            assert isinstance(inst["input"], str) and isinstance(inst["output"], str), f"line {n}"
            assert inst["output"].strip(), f"line {n}: empty output"
            assert inst["output"].strip() != inst["input"].strip(), f"line {n}: output equals input"


def test_unique_ids_names_and_instructions(tasks, rows):
    for what, values in (("id", [t.id for t in tasks]), ("instruction", [t.instruction for t in tasks]),
                         ("name", [r["name"] for r in rows])):
        dupes = sorted({v for v in values if values.count(v) > 1})
        assert not dupes, f"duplicate {what}: {dupes[:5]}"
    lowered = [t.instruction.lower() for t in tasks]
    assert len(set(lowered)) == len(lowered)


def test_loaded_tasks_match_the_rows(tasks, rows):
    assert [t.id for t in tasks] == [r["id"] for r in rows]
    assert all(t.origin == "human" and t.is_classification == r["is_classification"] for t, r in zip(tasks, rows))


def test_enough_classification_tasks_with_several_instances(tasks):
    cls = [t for t in tasks if t.is_classification]
    assert len(cls) >= 25
    few = [t.id for t in cls if len(t.instances) < 2]
    assert not few, f"classification tasks with < 2 instances: {few}"
    # showing one label twice teaches nothing about the label set
    same = [t.id for t in cls if len({i.output.strip().lower() for i in t.instances}) < 2]
    assert not same, f"classification tasks whose instances share one label: {same}"


def test_enough_tasks_without_input(tasks):
    assert sum(all(not i.input.strip() for i in t.instances) for t in tasks) >= 40


_STEP = re.compile(r"^\s*(?:step\s*)?\d+\s*[.):]\s", re.IGNORECASE | re.MULTILINE)
_CONCLUSION = re.compile(r"^\s*(?:answer\s*:|so\b|therefore\b|thus\b)", re.IGNORECASE)


def reasons_step_by_step(output: str) -> bool:
    """At least two numbered steps, and a last line that states the conclusion ("Answer: ...", "So ...")."""
    lines = [line for line in output.strip().split("\n") if line.strip()]
    return len(_STEP.findall(output)) >= 2 and bool(lines) and bool(_CONCLUSION.match(lines[-1]))


def test_reasoning_detector():
    assert reasons_step_by_step("1. 2 + 2 = 4.\n2. 4 x 3 = 12.\nAnswer: 12")
    assert reasons_step_by_step("Step 1: halve it.\nStep 2: add one.\nSo the result is 6.")
    assert not reasons_step_by_step("1. Apples\n2. Pears\n3. Plums")  # a list, no conclusion
    assert not reasons_step_by_step("Answer: 12")  # a conclusion, no steps
    assert not reasons_step_by_step("42.16 km\n8.05 km\nSo far so good")  # decimals are not steps


def test_enough_step_by_step_reasoning_tasks(tasks):
    reasoning = [t.id for t in tasks if any(reasons_step_by_step(i.output) for i in t.instances)]
    assert len(reasoning) >= 10, reasoning


def test_no_near_duplicate_instructions(tasks):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    close = []
    for i in range(len(tasks)):
        for j in range(i):
            f = scorer.score(tasks[i].instruction, tasks[j].instruction)["rougeL"].fmeasure
            if f > 0.7:
                close.append((round(f, 3), tasks[j].id, tasks[i].id))
    assert not close, close
