"""stats: the numbers report and sweep show, checked on a hand-built run whose answers are known."""

from __future__ import annotations

import json

import pytest
from rouge_score import rouge_scorer

from selfinstruct import config as C
from selfinstruct import stats as S
from selfinstruct import sweep as W
from selfinstruct.job import seeds_digest
from selfinstruct.records import Instance, Task
from selfinstruct.store import RunStore, new_progress

SEEDS = [{"id": "s1", "instruction": "Write a poem about the sea.", "instances": [{"input": "", "output": "Waves."}],
          "is_classification": False},
         {"id": "s2", "instruction": "Classify the sentiment of the review.",
          "instances": [{"input": "Great!", "output": "positive"}], "is_classification": True}]


def _task(tid, instruction, instances, cls, rnd, depth, humans, machines, score):
    return Task(tid, instruction, [Instance(*i) for i in instances], cls, origin="machine",
                meta={"round": rnd, "depth": depth, "human_examples": humans, "machine_examples": machines,
                      "nearest": {"id": "s1", "score": score}})


TASKS = [
    _task("r1-b0-c0", "Write a poem about the moon.", [("", "a b c d")], False, 1, 1, ["s1", "s2"], [], 0.5),
    _task("r2-b0-c0", "Classify the sentiment of this tweet.", [("I love it", "positive"), ("bad", "negative")],
          True, 2, 2, ["s1"], ["r1-b0-c0"], 0.6),
]


def make_run(tmp_path, tasks=TASKS, rejected=(), audit=None):
    """A run directory with `tasks`, 5 candidates in 2 rounds and 100 generated tokens."""
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps(s) + "\n" for s in SEEDS), encoding="utf-8")
    cfg = C.from_dict({"seed_tasks": str(seeds), "output_dir": str(tmp_path / "run"), "model": {"backend": "fake"}})
    store = RunStore.create(tmp_path / "run", C.dump(cfg), cfg.fingerprint(), {"seeds_digest": seeds_digest(seeds)})
    p = new_progress(cfg.fingerprint())
    p["seeds_digest"] = seeds_digest(seeds)
    p["totals"].update(accepted=len(tasks), rejected=5 - len(tasks), candidates=5, completion_tokens=100)
    p["rounds"] = {"1": {"accepted": 1, "candidates": 3, "rejected": {"filter:too_short": 2}, "human_fraction": 1.0},
                   "2": {"accepted": 1, "candidates": 2, "rejected": {"novelty:too_similar": 1},
                         "human_fraction": 0.5}}
    p["stop_reason"] = "target reached"
    store.commit([t.to_json() for t in tasks], list(rejected), p)
    store.close()
    if audit:
        (tmp_path / "run" / "audit.jsonl").write_text("".join(json.dumps(a) + "\n" for a in audit), encoding="utf-8")
    return tmp_path / "run"


def test_summary_of_a_known_run(tmp_path):
    data = S.load_run(make_run(tmp_path))
    row = S.summary(data)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)  # the reference the index must match
    want_seeds = [max(scorer.score(s["instruction"], t.instruction)["rougeL"].fmeasure for s in SEEDS) for t in TASKS]
    assert row["rouge_seeds"] == pytest.approx(sum(want_seeds) / 2)
    assert S.rouge_to_seeds(data) == pytest.approx(want_seeds)
    assert row["accepted"] == 2 and row["candidates"] == 5 and row["acceptance"] == pytest.approx(0.4)
    assert row["rouge_pool"] == pytest.approx(0.55)
    assert row["depth"] == pytest.approx(1.5)
    assert row["human_share"] == pytest.approx(3 / 4)  # 3 human examples, 1 machine example
    assert row["classification"] == pytest.approx(0.5) and row["empty_input"] == pytest.approx(0.5)
    assert row["tokens_per_task"] == pytest.approx(50)
    assert row["len_instruction"] == pytest.approx(6) and row["len_input"] == pytest.approx(4 / 3)
    assert row["len_output"] == pytest.approx(2)  # outputs of 4, 1 and 1 words
    assert row["distinct_1"] == pytest.approx(11 / 12)  # "the" twice among 12 words
    assert row["distinct_2"] == pytest.approx(1.0)
    assert row["audit_all"] is None


def test_funnel_and_mix_per_round(tmp_path):
    data = S.load_run(make_run(tmp_path))
    assert S.funnel(data.store.progress) == [
        {"round": 1, "generated": 3, "accepted": 1, "rejected": {"filter:too_short": 2}, "human_fraction": 1.0},
        {"round": 2, "generated": 2, "accepted": 1, "rejected": {"novelty:too_similar": 1}, "human_fraction": 0.5}]
    mix = S.mix_by_round(data.tasks)
    assert [(m["round"], m["human_share"], m["depth_mean"], m["depths"]) for m in mix] == [
        (1, 1.0, 1.0, {1: 1}), (2, 0.5, 2.0, {2: 1})]


def test_audit_rates_in_summary(tmp_path):
    audit = [{"id": "r1-b0-c0", "instruction": True, "input": True, "output": False, "all": False},
             {"id": "r2-b0-c0", "instruction": True, "input": False, "output": False, "all": False},
             {"id": "r2-b0-c0", "instruction": True, "input": True, "output": True, "all": True}]  # last one wins
    row = S.summary(S.load_run(make_run(tmp_path, audit=audit)))
    assert (row["audit_instruction"], row["audit_input"], row["audit_output"], row["audit_all"]) == (1.0, 1.0, 0.5, 0.5)


def test_seeds_gone_gives_none_not_an_error(tmp_path):
    run = make_run(tmp_path)
    (tmp_path / "seeds.jsonl").unlink()
    data = S.load_run(run)
    assert data.seeds is None and "not found" in data.seeds_note
    assert S.summary(data)["rouge_seeds"] is None


def test_sweep_table_row_of_a_known_run(tmp_path):
    run = make_run(tmp_path)
    header, rows, _ = W.table([{"name": "x", "combo": [("prompt.human_fraction", "0.5")], "dir": run}])
    row = dict(zip(header, rows[0]))
    assert row["prompt.human_fraction"] == "0.5" and row["state"] == "finished"
    assert (row["accepted"], row["acceptance"], row["ROUGE-L to pool"], row["lineage depth"]) == (
        "2", "40.0%", "0.550", "1.50")
    assert (row["classification"], row["empty input"], row["generated tokens per task"]) == ("50.0%", "50.0%", "50")
    assert (row["distinct-1"], row["distinct-2"], row["output length"]) == ("0.917", "1.000", "2.0")
    assert not any(h.startswith("audit") for h in header)  # no audit in this run: no audit columns


@pytest.mark.parametrize("text, want", [
    ("Write a short poem about the sea.", ("write", "poem")),
    ("Please give three tips for staying healthy.", ("give", "tips")),
    ("Given a list of numbers, find the largest number.", ("find", "number")),
    ("Suggest a short, informative title for this article.", ("suggest", "title")),
    ("List every person's name mentioned in the text.", ("list", "name")),
    ("Come up with a name for a cat.", ("come up", "name")),
    ("Plan a 3-day trip to Rome.", ("plan", "trip")),
    ("Explain why the sky is blue.", ("explain", None)),
    ("What is the capital of France?", (None, None)),
    ("In which language is the sentence written: English, Spanish?", (None, None)),
    ("The number 10 is not a palindrome.", (None, None)),
    ("", (None, None)),
])
def test_verb_object_heuristic(text, want):
    assert S.verb_object(text) == want
