"""Pipeline logic on a scripted fake LM: stages, accounting, determinism, resume, stop rules."""

from __future__ import annotations

import json
import re

import pytest

from selfinstruct import prompts as P
from selfinstruct.lm.fake import FakeLM
from selfinstruct.records import Instance
from selfinstruct.store import RunStore
from tests.helpers import cfg_for, make_seeds, release, rows, run_job


def test_job_reaches_target_and_accounts_for_every_candidate(tmp_path):
    cfg = cfg_for(tmp_path, target=25)
    reason, store = run_job(cfg, make_seeds())
    assert reason.startswith("target reached")
    accepted, rejected = rows(tmp_path / "run/tasks.jsonl"), rows(tmp_path / "run/rejected.jsonl")
    totals = store.progress["totals"]
    assert len(accepted) == totals["accepted"] >= 25
    assert len(accepted) + len(rejected) == totals["candidates"]
    assert len({r["id"] for r in accepted + rejected}) == totals["candidates"]  # no candidate twice
    for r in rejected:
        assert r["stage"] in ("filter", "novelty", "instances") and r["reason"]
    for task in accepted:
        meta = task["meta"]
        assert task["instances"] and meta["model"] == "fake" and meta["style"] == "self-instruct"
        assert len(meta["human_examples"]) + len(meta["machine_examples"]) == cfg.prompt.num_examples
        assert meta["nearest"]["score"] <= cfg.novelty.threshold
        assert {"round", "batch", "depth", "generation"} <= set(meta)


def test_same_config_gives_byte_identical_run(tmp_path):
    seeds = make_seeds()
    run_job(cfg_for(tmp_path / "a"), seeds)
    run_job(cfg_for(tmp_path / "b"), seeds)
    for name in ("tasks.jsonl", "rejected.jsonl"):
        assert (tmp_path / "a/run" / name).read_bytes() == (tmp_path / "b/run" / name).read_bytes()


class Crash(Exception):
    pass


class CrashingLM(FakeLM):
    """Dies on the n-th generate call, like a kill in the middle of a batch."""

    def __init__(self, crash_at: int):
        super().__init__()
        self.calls, self.crash_at = 0, crash_at

    def generate(self, prompts, params, seed):
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash()
        return super().generate(prompts, params, seed)


@pytest.mark.parametrize("crash_at", [1, 2, 5, 9, 12])
def test_crash_then_resume_equals_uninterrupted(tmp_path, crash_at):
    seeds = make_seeds()
    run_job(cfg_for(tmp_path / "ref"), seeds)
    cfg = cfg_for(tmp_path / "x")
    store = RunStore.create(cfg.output_dir, "", cfg.fingerprint())
    with pytest.raises(Crash):
        run_job(cfg, seeds, lm=CrashingLM(crash_at), store=store)
    release(store)
    # a torn, uncommitted write is left behind, as a kill during append would
    with open(tmp_path / "x/run/tasks.jsonl", "a") as f:
        f.write('{"id": "torn", "instr')
    run_job(cfg, seeds)
    for name in ("tasks.jsonl", "rejected.jsonl"):
        assert (tmp_path / "x/run" / name).read_bytes() == (tmp_path / "ref/run" / name).read_bytes()


def test_in_batch_near_duplicates_are_caught_in_candidate_order(tmp_path):
    cfg = cfg_for(tmp_path, target=1, max_rounds=1, prompts_per_round=1, prompts_per_batch=1,
                  prompt__new_per_prompt=3)
    lm = FakeLM(replies=[" Name three rivers that flow through more than four countries\n"
                         "Task 9: Name three rivers that flow through more than four countries today\n"
                         "Task 10: Suggest a weekend hobby for someone who loves quiet evenings"])
    run_job(cfg, make_seeds(), lm=lm)
    rejected = rows(tmp_path / "run/rejected.jsonl")
    assert [(r["id"], r["reason"], r["nearest"]) for r in rejected] == [("r1-b0-c1", "too_similar", "r1-b0-c0")]
    assert rejected[0]["nearest_text"].startswith("Name three rivers")
    accepted = rows(tmp_path / "run/tasks.jsonl")
    assert [t["id"] for t in accepted] == ["r1-b0-c0", "r1-b0-c2"]


def test_stall_guard_stops_a_job_that_accepts_nothing(tmp_path):
    cfg = cfg_for(tmp_path, stall__rounds_without_accept=2, max_rounds=10)
    seeds = make_seeds()
    copy_seed = lambda prompt: " " + seeds[0].instruction  # noqa: E731 - every candidate duplicates a seed
    lm = FakeLM(replies=[copy_seed] * 1000)
    reason, store = run_job(cfg, seeds, lm=lm)
    assert reason.startswith("stalled") and store.progress["cursor"]["round"] == 3
    assert store.progress["totals"]["accepted"] == 0
    assert {r["reason"] for r in rows(tmp_path / "run/rejected.jsonl")} == {"too_similar"}


def test_round_limit(tmp_path):
    reason, store = run_job(cfg_for(tmp_path, target=10_000, max_rounds=2), make_seeds())
    assert reason.startswith("round limit reached: 2 rounds")
    assert sorted(store.progress["rounds"]) == ["1", "2"]


def test_round_samples_only_from_pool_as_it_stood_at_round_start(tmp_path):
    cfg = cfg_for(tmp_path, target=10_000, max_rounds=3, prompt__human_fraction=0.0)
    run_job(cfg, make_seeds())
    accepted = rows(tmp_path / "run/tasks.jsonl")
    order = {t["id"]: (t["meta"]["round"]) for t in accepted}
    for t in accepted:
        r = t["meta"]["round"]
        assert all(order[m] < r for m in t["meta"]["machine_examples"])  # never this round's tasks
        if r == 1:
            assert t["meta"]["machine_examples"] == [] and t["meta"]["depth"] == 1
        else:  # fraction 0.0: all machine once the round-start pool holds k tasks
            assert len(t["meta"]["machine_examples"]) == cfg.prompt.num_examples
            deepest = max(next(x for x in accepted if x["id"] == m)["meta"]["depth"]
                          for m in t["meta"]["machine_examples"])
            assert t["meta"]["depth"] == deepest + 1


def test_schedule_changes_the_mix_across_rounds(tmp_path):
    cfg = cfg_for(tmp_path, target=10_000, max_rounds=3, prompt__schedule={"start": 1.0, "end": 0.25, "rounds": 3})
    _, store = run_job(cfg, make_seeds())
    fractions = [store.progress["rounds"][str(r)]["human_fraction"] for r in (1, 2, 3)]
    assert fractions == [1.0, 0.625, 0.25]
    accepted = rows(tmp_path / "run/tasks.jsonl")
    assert all(not t["meta"]["machine_examples"] for t in accepted if t["meta"]["round"] == 1)
    assert all(len(t["meta"]["machine_examples"]) == 6 for t in accepted if t["meta"]["round"] == 3)


def test_alpaca_style_takes_instances_from_the_generation_prompt(tmp_path):
    cfg = cfg_for(tmp_path, style="alpaca", target=10, prompt__num_examples=3, prompt__human_fraction=1.0,
                  instances__response="fewshot")
    lm = FakeLM()
    run_job(cfg, make_seeds(), lm=lm)
    assert all(p.startswith(P.ALPACA_HEADER) for p, _, _ in lm.history)  # one prompt kind only
    accepted = rows(tmp_path / "run/tasks.jsonl")
    assert len(accepted) >= 10 and all(len(t["instances"]) == 1 for t in accepted)
    assert all(t["meta"]["response"] == "fewshot" and t["instances"][0]["output"].startswith("Answer")
               for t in accepted)


def test_alpaca_style_with_chat_regenerates_each_output(tmp_path):
    cfg = cfg_for(tmp_path, style="alpaca", target=10, prompt__num_examples=3, prompt__human_fraction=1.0)
    lm = FakeLM()
    run_job(cfg, make_seeds(), lm=lm)
    chat = [(p, params) for p, params, _ in lm.history if params.chat]
    accepted = rows(tmp_path / "run/tasks.jsonl")
    assert len(accepted) >= 10 and all(t["meta"]["response"] == "chat" for t in accepted)
    asked = {p for p, _ in chat}
    for t in accepted:
        inst = t["instances"][0]
        assert inst["output"].startswith("Here is my answer")  # the fake's chat reply, not "Answer N"
        assert P.chat_turn(t["instruction"], inst["input"]) in asked
    assert all(params.repetition_penalty == cfg.answers.repetition_penalty for _, params in chat)


def test_classification_routes_instances_output_first(tmp_path):
    cfg = cfg_for(tmp_path, target=1, max_rounds=1, prompts_per_round=1, prompts_per_batch=1,
                  instances__response="fewshot")
    lm = FakeLM(replies=[" Classify the mood of this sentence as happy or sad\nTask 10: Plan a picnic menu for six people",
                         " happy\nInput: I won the race!\nClass label: sad\nInput: My dog ran away.",
                         " \nOutput: Sandwiches, fruit, lemonade.\nExample 2\nInput:\nOutput: Salad and wraps."])
    run_job(cfg, make_seeds(), lm=lm)
    prompts = [p for p, _, _ in lm.history]
    assert prompts[1].startswith(P.OUTPUT_FIRST_HEADER) and prompts[2].startswith(P.INPUT_FIRST_HEADER)
    # classification is decided by log-probabilities of " Yes" / " No", not by generating
    assert [(c, chat) for p, c, chat in lm.scored] == [(" Yes", False), (" Yes", False), (" No", False), (" No", False)]
    accepted = {t["instruction"]: t for t in rows(tmp_path / "run/tasks.jsonl")}
    mood = accepted["Classify the mood of this sentence as happy or sad"]
    assert mood["is_classification"] is True and mood["meta"]["classification_margin"] == 1.8
    assert [(i["input"], i["output"]) for i in mood["instances"]] == [("I won the race!", "happy"),
                                                                       ("My dog ran away.", "sad")]
    picnic = accepted["Plan a picnic menu for six people"]
    assert picnic["is_classification"] is False
    # two answers to the same (empty) input: the first is kept
    assert [(i["input"], i["output"]) for i in picnic["instances"]] == [("", "Sandwiches, fruit, lemonade.")]


def test_instance_stage_rejects_tasks_left_without_instances(tmp_path):
    cfg = cfg_for(tmp_path, target=1, max_rounds=1, prompts_per_round=1, prompts_per_batch=1)
    cfg.instances.response = "fewshot"
    lm = FakeLM(replies=[" Describe the smell of rain to someone who has never noticed it", " \nOutput:"])
    run_job(cfg, make_seeds(), lm=lm)
    rejected = rows(tmp_path / "run/rejected.jsonl")
    assert [(r["stage"], r["reason"]) for r in rejected] == [("instances", "empty_output")]


def test_unknown_seed_classification_is_decided_once_and_saved(tmp_path):
    seeds = make_seeds()
    for s in seeds[:4]:
        s.is_classification = None
    cfg = cfg_for(tmp_path, target=3)
    first = FakeLM()
    _, store = run_job(cfg, seeds, lm=first)
    assert set(store.progress["seed_classification"]) == {"s0", "s1", "s2", "s3"}
    asked = [p for p, _, _ in first.scored if p.startswith(P.CLASSIFY_HEADER) and "seed task number" in p]
    assert len(asked) == 8  # " Yes" and " No" for each of the 4 unknown seeds
    lm = FakeLM()
    store2 = RunStore.open(cfg.output_dir)
    run_job(cfg, seeds, lm=lm, store=store2)
    assert not any(p.startswith(P.CLASSIFY_HEADER) and "seed task number" in p for p, _, _ in lm.scored)


def _one_prompt_cfg(tmp_path, **over):
    return cfg_for(tmp_path, target=1, max_rounds=1, prompts_per_round=1, prompts_per_batch=1, **over)


def test_chat_answers_replace_fewshot_outputs_but_not_labels(tmp_path):
    lm = FakeLM(replies=[" Classify the mood of this sentence as happy or sad\nTask 10: Summarize the following text",
                         " happy\nInput: I won the race!\nClass label: sad\nInput: My dog ran away.",
                         " The cat sat on the mat all day.\nOutput: 1.\n\nTask:",
                         "A cat spent its day on a mat."])
    run_job(_one_prompt_cfg(tmp_path), make_seeds(), lm=lm)
    chat = [(p, params) for p, params, _ in lm.history if params.chat]
    assert [p for p, _ in chat] == ["Summarize the following text\n\nThe cat sat on the mat all day."]
    accepted = {t["instruction"]: t for t in rows(tmp_path / "run/tasks.jsonl")}
    summary = accepted["Summarize the following text"]
    assert summary["instances"] == [{"input": "The cat sat on the mat all day.", "output": "A cat spent its day on a mat."}]
    assert summary["meta"]["response"] == "chat" and summary["meta"]["answers"]["repetition_penalty"] == 1.15
    mood = accepted["Classify the mood of this sentence as happy or sad"]
    assert [i["output"] for i in mood["instances"]] == ["happy", "sad"]  # labels stay as the task wrote them


def test_response_auto_is_fewshot_without_a_chat_template_and_chat_is_refused(tmp_path):
    lm = FakeLM(has_chat_template=False)
    run_job(cfg_for(tmp_path, target=5), make_seeds(), lm=lm)
    assert not any(params.chat for _, params, _ in lm.history)
    assert {t["meta"]["response"] for t in rows(tmp_path / "run/tasks.jsonl")} == {"fewshot"}
    from selfinstruct.errors import ModelError

    with pytest.raises(ModelError, match="no chat template"):
        run_job(cfg_for(tmp_path / "b", instances__response="chat"), make_seeds(), lm=FakeLM(has_chat_template=False))


def test_self_contained_instructions_get_no_input(tmp_path):
    lm = FakeLM(replies=[" What is the capital of France?\nTask 10: Translate the sentence into French",
                         " 100 C\nOutput: Paris\n\nTask:", " I am here.\nOutput: Je suis ici.\n\nTask:"])
    run_job(_one_prompt_cfg(tmp_path, instances__response="fewshot"), make_seeds(), lm=lm)
    got = {t["instruction"]: t["instances"] for t in rows(tmp_path / "run/tasks.jsonl")}
    assert got["What is the capital of France?"] == [{"input": "", "output": "Paris"}]
    assert got["Translate the sentence into French"] == [{"input": "I am here.", "output": "Je suis ici."}]
    lm2 = FakeLM(replies=[" What is the capital of France?", " 100 C\nOutput: Paris\n\nTask:"])
    run_job(_one_prompt_cfg(tmp_path / "b", instances__response="fewshot", instances__inputs="always"),
            make_seeds(), lm=lm2)
    assert rows(tmp_path / "b/run/tasks.jsonl")[0]["instances"] == [{"input": "100 C", "output": "Paris"}]


def test_new_filters_reject_with_their_reason_and_keep_the_text(tmp_path):
    def cut_off(prompt):  # a completion that ends mid-item because it ran into max_new_tokens
        return " This is a lie.\nTask 10: Write a limerick about a cat\nTask 11: Explain how tides " + "w" * 10

    lm = FakeLM(replies=[cut_off, " \nOutput: 1.\n\nTask:"])
    cfg = _one_prompt_cfg(tmp_path, instances__response="fewshot", generation__max_new_tokens=12)
    run_job(cfg, make_seeds(), lm=lm)
    rejected = {r["text"]: (r["stage"], r["reason"]) for r in rows(tmp_path / "run/rejected.jsonl")}
    assert rejected["This is a lie."] == ("filter", "not_a_task")
    assert rejected["Explain how tides " + "w" * 10] == ("filter", "truncated")  # last item of a cut completion
    assert rejected["Write a limerick about a cat"] == ("instances", "marker_only")


def test_foreign_labels_are_rejected_in_the_pipeline(tmp_path):
    seeds = make_seeds()
    for t in seeds:
        if t.is_classification:
            t.instances = [Instance(i.input, "isosceles" if i.output == "yes" else "scalene") for i in t.instances]
    lm = FakeLM(replies=[" Classify the weather report as good or bad",
                         lambda prompt: " " + re.search(r"Class label: (\w+)", prompt).group(1) + "\nInput: sunny"],
                scorer=lambda p, c: -0.1 if c == " Yes" else -3.0)
    run_job(_one_prompt_cfg(tmp_path), seeds, lm=lm)
    [r] = rows(tmp_path / "run/rejected.jsonl")
    assert (r["stage"], r["reason"]) == ("instances", "foreign_label")


def test_self_contained_task_in_chat_mode_skips_the_instance_prompt(tmp_path):
    # greedy answer, then the two consistency samples a short answer to a question gets
    lm = FakeLM(replies=[" What is the capital of France?", "Paris is the capital of France.", "France: Paris.", "Lyon"])
    run_job(_one_prompt_cfg(tmp_path), make_seeds(), lm=lm)
    kinds = [p[:20] for p, _, _ in lm.history]
    assert not any(p.startswith((P.INPUT_FIRST_HEADER, P.OUTPUT_FIRST_HEADER)) for p, _, _ in lm.history), kinds
    [t] = rows(tmp_path / "run/tasks.jsonl")
    assert t["instances"] == [{"input": "", "output": "Paris is the capital of France."}]
    [check] = t["meta"]["consistency"]["checks"]
    assert check == {"input": "", "terms": ["paris"], "samples": ["France: Paris.", "Lyon"], "agreed": True}


def _answer_job(tmp_path, question: str, greedy: str, *samples: str, **over):
    lm = FakeLM(replies=[f" {question}", greedy, *samples])
    run_job(_one_prompt_cfg(tmp_path, **over), make_seeds(), lm=lm)
    return lm, rows(tmp_path / "run/tasks.jsonl"), rows(tmp_path / "run/rejected.jsonl")


def test_quantity_answer_that_no_sample_repeats_is_rejected_as_unstable(tmp_path):
    lm, accepted, rejected = _answer_job(
        tmp_path, "What is the sum of the squares of 1 to 6?",
        "Squaring and adding gives 1, 4, 9, 16, 25, 36, so the sum is 92.", "The sum is 91.", "It is 21.")
    assert accepted == []
    [r] = [r for r in rejected if r["text"].startswith("What is the sum")]
    assert (r["stage"], r["reason"]) == ("instances", "unstable_answer")
    sampled = [params for _, params, _ in lm.history if params.chat and params.temperature > 0]
    assert len(sampled) == 2 and all((p.temperature, p.top_p) == (0.5, 0.9) for p in sampled)


def test_quantity_answer_repeated_by_a_sample_is_kept_with_its_check(tmp_path):
    _, [t], _ = _answer_job(tmp_path, "How many days of the week are there?", "There are 7 days in a week.",
                            "A week has 7 days.", "Ten.")
    assert t["meta"]["consistency"]["checks"] == [
        {"input": "", "number": 7.0, "samples": [7.0, None], "agreed": True}]
    assert t["meta"]["consistency"]["samples"] == 2


def test_consistency_off_samples_nothing(tmp_path):
    lm, [t], _ = _answer_job(tmp_path, "How many days of the week are there?", "There are 8 days in a week.",
                             consistency__samples=0)
    assert not any(params.temperature > 0 for _, params, _ in lm.history if params.chat)
    assert "consistency" not in t["meta"]


def test_wrong_arithmetic_is_rejected_without_sampling(tmp_path):
    lm, accepted, rejected = _answer_job(tmp_path, "How much is 9 times 8?", "We multiply: 9 * 8 = 64.")
    assert accepted == [] and [r["reason"] for r in rejected if r["stage"] == "instances"] == ["wrong_arithmetic"]
    assert not any(params.temperature > 0 for _, params, _ in lm.history if params.chat)


def test_long_answers_and_rewrites_are_not_sampled(tmp_path):
    long = ("Start with the one thing the reader must do, say why it matters in a sentence, give the "
            "date it is due, name who can help, keep each paragraph short, and end by thanking them.")
    lm, [t], _ = _answer_job(tmp_path, "How should I write a clear email?", long)
    assert "consistency" not in t["meta"] and t["instances"][0]["output"] == long
    assert not any(params.temperature > 0 for _, params, _ in lm.history if params.chat)


def test_alpaca_style_drops_inputs_of_self_contained_instructions(tmp_path):
    block = (" What is the capital of France?\n4. Input:\n13\n4. Output:\nParis\n###\n5. Instruction: Summarize the "
             "following text.\n5. Input:\nThe cat sat on the mat.\n5. Output:\nA cat sat.")
    cfg = _one_prompt_cfg(tmp_path, style="alpaca", prompt__num_examples=3, instances__response="fewshot")
    run_job(cfg, make_seeds(), lm=FakeLM(replies=[block]))
    got = {t["instruction"]: t["instances"] for t in rows(tmp_path / "run/tasks.jsonl")}
    assert got == {"What is the capital of France?": [{"input": "", "output": "Paris"}],
                   "Summarize the following text.": [{"input": "The cat sat on the mat.", "output": "A cat sat."}]}


def test_instance_prompts_and_answers_of_a_batch_share_one_queue(tmp_path):
    """Issue 7: an answer that needs no generated input rides with the instance prompts, not after them."""
    lm = FakeLM(replies=[" What is the capital of France?\nTask 10: Summarize the following text"])
    run_job(_one_prompt_cfg(tmp_path, consistency__samples=0), make_seeds(), lm=lm)
    calls: dict[int, list] = {}
    for prompt, params, seed in lm.history:  # one seed per generate call
        calls.setdefault(seed, []).append((prompt, params))
    _, first, second = calls.values()
    assert sorted((params.chat, prompt.startswith(P.INPUT_FIRST_HEADER)) for prompt, params in first) == [
        (False, True), (True, False)]
    assert [p for p, params in first if params.chat] == ["What is the capital of France?"]
    assert second and all(params.chat and turn.startswith("Summarize the following text") for turn, params in second)
    got = {t["instruction"] for t in rows(tmp_path / "run/tasks.jsonl")}
    assert got == {"What is the capital of France?", "Summarize the following text"}


def test_a_common_opening_is_capped_at_its_share_of_the_pool(tmp_path):
    questions = ["What is the most expensive car ever sold at an auction?",
                 "What is the most popular sport among teenagers in Brazil?",
                 "What is the most spoken language in India today?",
                 "What is the most visited museum in Europe each year?",
                 "How do I keep basil fresh for a week?"]
    reply = " " + questions[0] + "".join(f"\nTask {9 + i}: {q}" for i, q in enumerate(questions[1:], 1))
    run_job(_one_prompt_cfg(tmp_path, prompt__new_per_prompt=5, consistency__samples=0), make_seeds(),
            lm=FakeLM(replies=[reply]))
    accepted, rejected = rows(tmp_path / "run/tasks.jsonl"), rows(tmp_path / "run/rejected.jsonl")
    capped = [r for r in rejected if r["reason"] == "common_opening"]
    assert [(r["text"], r["opening"], r["count"]) for r in capped] == [(questions[3], "what is the most", 3)]
    assert {t["instruction"] for t in accepted} == set(questions) - {questions[3]}


@pytest.mark.parametrize("crash_at", [3, 7])
def test_resume_with_capped_openings_equals_uninterrupted(tmp_path, crash_at):
    """Openings are counted from accepted tasks only, so a resumed run caps exactly as an uninterrupted one."""
    seeds = make_seeds()
    over = {"novelty__opening_words": 1, "target": 30}  # the fake's ten verbs: the cap bites every batch
    run_job(cfg_for(tmp_path / "ref", **over), seeds)
    assert any(json.loads(l)["reason"] == "common_opening" for l in open(tmp_path / "ref/run/rejected.jsonl"))
    cfg = cfg_for(tmp_path / "x", **over)
    store = RunStore.create(cfg.output_dir, "", cfg.fingerprint())
    with pytest.raises(Crash):
        run_job(cfg, seeds, lm=CrashingLM(crash_at), store=store)
    release(store)
    run_job(cfg, seeds)
    for name in ("tasks.jsonl", "rejected.jsonl"):
        assert (tmp_path / "x/run" / name).read_bytes() == (tmp_path / "ref/run" / name).read_bytes()
