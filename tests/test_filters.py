"""Instruction filters (keep/drop with a reason, in config order) and instance filters (counted reasons)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfinstruct import config as C
from selfinstruct import consistency
from selfinstruct import filters as F
from selfinstruct.records import Instance

CFG = C.FilterConfig()


def fcfg(**over) -> C.FilterConfig:
    return C.FilterConfig(**over)


def test_config_validates_against_the_filter_registries(monkeypatch):
    """Issue 8, item 7: a filter registered in filters.py is a valid config name with nothing else to edit."""
    from selfinstruct.errors import ConfigError

    def shouting(text, cfg, ctx=F.NO_CONTEXT):
        return "shouting" if text.isupper() else None

    with pytest.raises(ConfigError, match="unknown filter 'shouting'"):
        C.load_text("", "test.yaml", ["filters.instruction=[length,shouting]"])
    monkeypatch.setitem(F.INSTRUCTION_FILTERS, "shouting", shouting)
    monkeypatch.setitem(F.INSTANCE_FILTERS, "shouting", lambda inst, cfg, ctx: inst.output.isupper())
    cfg = C.load_text("", "test.yaml", ["filters.instruction=[length,shouting]", "filters.instance=[shouting]"])
    assert F.check_instruction("WRITE A POEM ABOUT THE SEA NOW.", cfg.filters) == "shouting"
    assert F.instance_reason(Instance("", "HELLO THERE"), cfg.filters) == "shouting"


# ---- length ----

@pytest.mark.parametrize("text, reason", [
    ("", "empty"), ("   \n", "empty"),
    ("Do it", "too_short"), ("Do it now", "too_short"),
    ("Do it now please", None),  # exactly min_words (4)
    (" ".join(["word"] * 150), None),  # exactly max_words
    (" ".join(["word"] * 151), "too_long"),
])
def test_length_default_bounds(text, reason):
    assert F.length(text, CFG) == reason
    assert F.check_instruction(text, fcfg(instruction=["length"])) == reason


def test_length_bounds_follow_config():
    cfg = fcfg(min_words=2, max_words=3)
    assert F.length("One", cfg) == "too_short"
    assert F.length("One two", cfg) is None
    assert F.length("One two three", cfg) is None
    assert F.length("One two three four", cfg) == "too_long"
    assert F.length("a\tb\n c", cfg) is None  # any whitespace separates words


# ---- blacklist ----

@pytest.mark.parametrize("text", [
    "Draw a cat sitting on a mat.",
    "Describe the image below in detail.",
    "Explain how to go to the nearest station.",
    "Explain how to go  to the station from here.",  # the phrase with odd spacing
    "Summarize the FILE contents for me.",  # any case
    "Which map projection distorts area least?",
    "Plot these numbers as a chart.",
    "Write a review of this music, please.",
    "Describe the graph's main trend.",  # punctuation after the word
])
def test_blacklist_drops_whole_words(text):
    assert F.blacklist(text, CFG) == "blacklist"
    assert F.check_instruction(text, CFG) == "blacklist"


@pytest.mark.parametrize("text", [
    "Describe the mapping between keys and values.",  # "mapping" is not "map"
    "Give me a drawing tip for beginners.",  # "drawing" is not "draw"
    "Summarize the plotline of Hamlet briefly.",
    "Update the user profile description text.",  # "profile" holds "file"
    "Imagine a city on the ocean floor.",  # "imagine" is not "image"
    "Say what happened a long time ago today.",  # "ago to" is not "go to"
    "Give the algorithm a name, please.",
    "Explain why musicians practice scales daily.",
])
def test_blacklist_keeps_words_that_only_contain_a_blacklisted_one(text):
    assert F.blacklist(text, CFG) is None
    assert F.check_instruction(text, CFG) is None


def test_blacklist_follows_config_and_handles_symbols():
    cfg = fcfg(blacklist=["c++", "real time"])
    assert F.blacklist("Explain c++ templates with care.", cfg) == "blacklist"
    assert F.blacklist("Explain the c++ language.", cfg) == "blacklist"
    assert F.blacklist("Show the weather in real time.", cfg) == "blacklist"
    assert F.blacklist("Draw a picture of a house.", cfg) is None  # not in this list
    assert F.blacklist("Explain abc++ syntax to me.", cfg) is None
    assert F.blacklist("Anything at all goes here.", fcfg(blacklist=[])) is None


# ---- program tasks ----

@pytest.mark.parametrize("text", [
    "Write a Python program that sorts a list of numbers.",
    "Write a program to compute prime numbers.",
    "write a C++ program that prints hello.",
    "Please write a script that renames files in bulk.",
    "Create a simple web application for notes.",
    "Develop an app that tracks daily water intake.",
    "Implement a command-line program for todo lists.",
    "  Write the Java program described below.",
])
def test_program_tasks_dropped(text):
    assert F.program(text, CFG) == "program_task"


@pytest.mark.parametrize("text", [
    "Write a poem about the sea at night.",
    "Write a Python function that reverses a string.",
    "Explain what a computer program does in simple terms.",
    "Fix the bug in this Python snippet.",
    "Describe the best app for learning languages.",
    "Write a short story about a programmer.",
    "Create a list of programming languages and their uses.",
])
def test_non_program_tasks_kept(text):
    assert F.program(text, CFG) is None
    assert F.check_instruction(text, CFG) is None


# ---- punctuation and non-ASCII start ----

@pytest.mark.parametrize("text", ['"Quote" this sentence back to me.', "?Why is the sky blue today",
                                  "(Optional) describe your favourite season.", "- List three fruits please.",
                                  "  ...and then what happened next?", "#1 tip for good sleep habits."])
def test_leading_punctuation_dropped(text):
    assert F.punctuation(text, CFG) == "leading_punctuation"


@pytest.mark.parametrize("text", ["Why is the sky blue?", "3 reasons to learn to cook at home.",
                                  "Tell me: what is a verb?", ""])
def test_no_leading_punctuation_kept(text):
    assert F.punctuation(text, CFG) is None


@pytest.mark.parametrize("text", ["日本の首都はどこですか",
                                  "Напишите стихотворение о любви",
                                  "把下面的句子翻译成英文"])
def test_other_script_is_wrong_language_in_an_english_job(text):
    assert F.wrong_language(text, CFG) == "wrong_language"


@pytest.mark.parametrize("text", ["Translate 'caf\u00e9' into English please.", "Explain \u03c0 to a child.", "",
                                  "\u201cQuote\u201d this sentence for me.", "Translate \u4f60\u597d into English."])
def test_english_with_a_few_foreign_letters_is_kept(text):
    assert F.wrong_language(text, CFG) is None


# ---- check_instruction: order and enabled set ----

def test_config_order_decides_the_reported_reason():
    text = "?Draw"  # too short, blacklisted, leading punctuation
    assert F.check_instruction(text, CFG) == "too_short"
    assert F.check_instruction(text, fcfg(instruction=["punctuation", "length", "blacklist"])) == "leading_punctuation"
    assert F.check_instruction(text, fcfg(instruction=["blacklist", "length"])) == "blacklist"


def test_disabled_filters_do_not_run(monkeypatch):
    def boom(text, cfg):
        raise AssertionError("a disabled filter ran")

    for name in ("blacklist", "program", "wrong_language"):
        monkeypatch.setitem(F.INSTRUCTION_FILTERS, name, boom)
    cfg = fcfg(instruction=["length", "punctuation"])
    assert F.check_instruction("Write a Python program to draw a map.", cfg) is None
    assert F.check_instruction("!Write something here now.", cfg) == "leading_punctuation"


def test_no_filters_keeps_all_but_blank():
    cfg = fcfg(instruction=[])
    assert F.check_instruction("?Draw", cfg) is None
    assert F.check_instruction("  ", cfg) == "empty"


def test_clean_instruction_passes_every_default_filter():
    text = "Suggest a name for a bakery that sells only bread."
    assert all(F.INSTRUCTION_FILTERS[n](text, CFG) is None for n in CFG.instruction)


# ---- instance filters ----

def insts(*pairs) -> list[Instance]:
    return [Instance(a, b) for a, b in pairs]


def test_empty_output_dropped():
    kept, dropped = F.filter_instances(insts(("a", ""), ("b", "  \n"), ("c", "ok")), CFG)
    assert kept == insts(("c", "ok"))
    assert dropped == Counter({"empty_output": 2})


def test_output_equal_to_input_dropped():
    kept, dropped = F.filter_instances(insts(("same", "same"), (" same ", "same\n"), ("", "x"), ("in", "out")), CFG)
    assert kept == insts(("", "x"), ("in", "out"))
    assert dropped == Counter({"output_equals_input": 2})


def test_conflicting_outputs_for_one_input_all_dropped():
    kept, dropped = F.filter_instances(insts(("x", "a"), ("y", "c"), ("x", "b"), ("x", "a")), CFG)
    assert kept == insts(("y", "c"))
    assert dropped == Counter({"conflicting_outputs": 3})


def test_conflicting_outputs_for_empty_input_keep_the_first():
    kept, dropped = F.filter_instances(insts(("", "first"), ("", "second"), ("q", "r"), ("", "third")), CFG)
    assert kept == insts(("", "first"), ("q", "r"))
    assert dropped == Counter({"conflicting_outputs": 2})


def test_same_output_twice_is_a_duplicate_not_a_conflict():
    kept, dropped = F.filter_instances(insts(("x", "a"), ("x ", " a"), ("", "z"), ("", "z")), CFG)
    assert kept == insts(("x", "a"), ("", "z"))
    assert dropped == Counter({"duplicate_instance": 2})


def test_max_instances_cap_keeps_the_first():
    rows = insts(*[(f"in{i}", f"out{i}") for i in range(8)])
    kept, dropped = F.filter_instances(rows, CFG)
    assert kept == rows[:CFG.max_instances]
    assert dropped == Counter({"over_max_instances": 8 - CFG.max_instances})
    kept, dropped = F.filter_instances(rows, fcfg(max_instances=2))
    assert kept == rows[:2] and dropped == Counter({"over_max_instances": 6})


def test_cap_applies_after_other_filters():
    rows = insts(("a", ""), ("b", "1"), ("c", "2"), ("d", "3"))
    kept, dropped = F.filter_instances(rows, fcfg(max_instances=2))
    assert kept == insts(("b", "1"), ("c", "2"))
    assert dropped == Counter({"empty_output": 1, "over_max_instances": 1})


def test_mixed_reasons_are_all_counted():
    rows = insts(("a", ""), ("b", "b"), ("c", "1"), ("c", "2"), ("d", "x"), ("d", "x"), ("e", "y"))
    kept, dropped = F.filter_instances(rows, CFG)
    assert kept == insts(("d", "x"), ("e", "y"))
    assert dropped == Counter({"empty_output": 1, "output_equals_input": 1, "conflicting_outputs": 2,
                               "duplicate_instance": 1})


def test_counter_has_no_zero_entries():
    _, dropped = F.filter_instances(insts(("a", "b")), CFG)
    assert dropped == Counter() and not dropped


@pytest.mark.parametrize("disabled, rows, expect_kept", [
    ("empty_output", [("a", ""), ("", "")], [("a", ""), ("", "")]),  # no input to echo: not output_equals_input
    ("output_equals_input", [("a", "a")], [("a", "a")]),
    ("conflicting", [("x", "1"), ("x", "2")], [("x", "1"), ("x", "2")]),
    ("duplicate", [("x", "1"), ("x", "1")], [("x", "1"), ("x", "1")]),
])
def test_disabled_instance_filter_does_not_run(disabled, rows, expect_kept):
    cfg = fcfg(instance=[n for n in C.INSTANCE_FILTERS if n != disabled])
    kept, dropped = F.filter_instances(insts(*rows), cfg)
    assert kept == insts(*expect_kept) and not dropped
    kept_all, dropped_all = F.filter_instances(insts(*rows), CFG)
    assert len(kept_all) < len(rows) and sum(dropped_all.values()) == len(rows) - len(kept_all)


_SMALL = st.sampled_from(["", " ", "a", "b", "a ", "yes", "no"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_SMALL, _SMALL), max_size=12), st.integers(1, 6))
def test_instance_filter_invariants(pairs, cap):
    rows = insts(*pairs)
    cfg = fcfg(max_instances=cap)
    kept, dropped = F.filter_instances(rows, cfg)
    assert len(kept) + sum(dropped.values()) == len(rows)  # every instance kept or counted once
    assert len(kept) <= cap and all(v > 0 for v in dropped.values())
    assert all(k.output and k.output == k.output.strip() and k.input == k.input.strip() for k in kept)
    assert all(k.output != k.input for k in kept if k.input)
    assert len({k.input for k in kept}) == len(kept)  # one answer per input: no conflicts, no duplicates
    assert set(dropped) <= {"empty_output", "output_equals_input", "conflicting_outputs", "duplicate_instance",
                            "over_max_instances"}


def test_repetitive_outputs_are_dropped_and_prose_kept():
    from selfinstruct.config import FilterConfig
    from selfinstruct.filters import filter_instances, is_repetitive
    from selfinstruct.records import Instance

    loop = "Burgers are a favorite of mine.\n" * 6
    assert is_repetitive(loop) and is_repetitive("1" + "0" * 120)
    assert not is_repetitive("Burgers are a favorite of mine.\n" * 2)  # short: not judged
    prose = ("1. Two dice have 6 x 6 = 36 equally likely outcomes.\n2. The pairs that sum to 8 are five.\n"
             "3. Probability = 5 / 36.\nAnswer: 5/36")
    assert not is_repetitive(prose)
    kept, dropped = filter_instances([Instance("", loop), Instance("x", prose)], FilterConfig(instance=["repetitive"]))
    assert [i.output for i in kept] == [prose] and dropped == {"repetitive": 1}
    kept, dropped = filter_instances([Instance("", loop), Instance("x", prose)], FilterConfig())
    assert [i.output for i in kept] == [prose] and dropped == {"looping": 1}  # the line-based check runs first
    kept, dropped = filter_instances([Instance("", loop)], FilterConfig(instance=["empty_output"]))
    assert len(kept) == 1 and not dropped  # disabled filters do not run


# ---- filters for non-tasks and degenerate fields (issue 6's audit examples) ----

@pytest.mark.parametrize("text", [
    "This is a lie.", "The number 10 is not a palindrome.", "I am a robot. I am a superhero.",
    "The best way to make a cup of tea is to boil it.", "This is a movie. It's called \"The Matrix\".",
])
def test_not_a_task_catches_statements(text):
    assert F.not_a_task(text, CFG) == "not_a_task"
    assert F.check_instruction(text, CFG) == "not_a_task"


@pytest.mark.parametrize("text", [
    "What is the sum of the first 10 natural numbers",  # a question, even without its "?"
    "A bat and a ball cost $1.10 in total. How much does the ball cost?",
    "A company has 100 employees. Calculate the share that works from home.",  # request in a later sentence
    "Given a list of numbers, return the largest one.",
    "Update the user profile description text.",
    "I'm looking for three synonyms of the word 'happy'.",
    "In this task, you decide whether a review is positive.",
    "Please proofread my cover letter.",
])
def test_not_a_task_keeps_requests(text):
    assert F.not_a_task(text, CFG) is None


def test_every_seed_instruction_is_a_task_and_passes_the_new_filters():
    from selfinstruct.records import load_seeds
    from tests.helpers import ROOT

    new = ["leaked_markers", "truncated", "not_a_task", "repeated_phrase"]
    for t in load_seeds(ROOT / "seed_tasks.jsonl"):
        assert F.check_instruction(t.instruction, fcfg(instruction=new)) is None, t.instruction
        ctx = F.Context(instruction=t.instruction, classification=bool(t.is_classification))
        kept, dropped = F.filter_instances(t.instances, CFG, ctx)
        assert not dropped, (t.instruction, dropped)


@pytest.mark.parametrize("text, cut, reason", [
    ("A company has 100 employees. If 2", False, "truncated"),  # a dangling "If 2"
    ("Explain how a bill becomes a law in the", False, "truncated"),
    ("Explain how a bill becomes a law", True, "truncated"),  # ran into the token limit
    ("Explain how a bill becomes a law", False, None),
    ("Name the first 10 prime numbers", False, None),
])
def test_truncated(text, cut, reason):
    assert F.truncated(text, CFG, F.Context(cut=cut)) == reason


def test_repeated_phrase_in_instruction_and_output():
    loop = ("Create a new JSON data with two columns: name and age, and create a new JSON data with two "
            "columns: name and age.")
    assert F.repeated_phrase(loop, CFG) == "repeated_phrase"
    assert F.repeated_phrase("Create a new JSON object with two fields: name and age.", CFG) is None
    out = F.Context(field="instance")
    line = "the answer to the question is here. "
    assert F.repeated_phrase(line * 3, CFG, out) is None  # an output may repeat a phrase repeat_limit times
    assert F.repeated_phrase(line * 4, CFG, out) == "repeated_phrase"
    assert F.repeated_phrase(line * 4, fcfg(repeat_limit=4), out) is None


@pytest.mark.parametrize("text, leaked", [
    ("3 golden paras\n8. Instruction: Provide 2 gifts for the pirate.", True),
    ("laugh\n2. Output: travel", True),
    ("Task 9: Write a haiku.", True),
    ("The answer.\nInput: something else", True),
    ("Sort the words.\n###\nNext", True),
    ("The train leaves at 9: take the first one.", False),
    ("Summarize the output of the meeting.", False),
])
def test_leaked_markers(text, leaked):
    assert (output_reason(text) == "leaked_markers") is leaked


def output_reason(text: str) -> str | None:
    """Why the default instance filters would drop an output with no input."""
    return F.instance_reason(Instance("", text), CFG, F.Context(field="instance"))


def test_leaked_field_inside_an_instruction():
    assert F.leaked_markers("Classify the review. Output: positive", CFG) == "leaked_markers"
    assert F.leaked_markers("Classify the review as positive or negative.", CFG) is None


@pytest.mark.parametrize("output", ["1.", " 2) ", "-", "Output:", "Example 2", "<noinput>", "a.", "..."])
def test_marker_only_outputs(output):
    kept, dropped = F.filter_instances([Instance("", output)], CFG)
    assert not kept and dropped == Counter({"marker_only": 1})


@pytest.mark.parametrize("output", ["4", "Paris", "1/6", "10 apples."])
def test_short_real_answers_are_not_markers(output):
    kept, _ = F.filter_instances([Instance("", output)], CFG)
    assert kept == [Instance("", output)]


def test_looping_lines():
    loop = "1. 200 / 10 = 20.\n2. 20 / 10 = 2.\n3. 20 / 10 = 2.\n4. 20 / 10 = 2.\n5. 20 / 10 ="
    same_item = "1. A beach towel\n2. A beach towel\n3. A beach towel"
    assert F.is_looping(loop) and F.is_looping(same_item)
    assert not F.is_looping("1. Apples\n2. Pears\n3. Plums\n4. Figs")
    assert not F.is_looping("135 minutes\n90 minutes\n4,320 minutes")  # different numbers, different lines
    kept, dropped = F.filter_instances([Instance("", loop)], CFG)
    assert not kept and dropped == Counter({"looping": 1})


def test_truncated_instance_is_known_from_the_cut_flag():
    rows = [Instance("", "A full answer."), Instance("", "An answer that ran into the lim")]
    kept, dropped = F.filter_instances(rows, CFG, F.Context(instruction="Say something."), cut=[False, True])
    assert kept == rows[:1] and dropped == Counter({"truncated": 1})


def test_foreign_label_from_another_tasks_demo():
    ctx = F.Context(instruction="A bat and a ball together cost $1.10. How much does the ball cost?",
                    classification=True, demo_labels=frozenset({"isosceles", "scalene", "formal", "yes"}))
    rows = [Instance("2, 3, 4", "isosceles"), Instance("x", "yes"), Instance("y", "ten cents")]
    kept, dropped = F.filter_instances(rows, CFG, ctx)
    # "isosceles" only appears in a demonstration; yes/no fit any classification; a new label is the task's own
    assert kept == rows[1:] and dropped == Counter({"foreign_label": 1})
    named = F.Context(instruction="Classify the triangle as isosceles or scalene.", classification=True,
                      demo_labels=ctx.demo_labels)
    assert F.filter_instances(rows[:1], CFG, named) == (rows[:1], Counter())
    not_cls = F.Context(instruction=ctx.instruction, demo_labels=ctx.demo_labels)
    assert F.filter_instances(rows[:1], CFG, not_cls) == (rows[:1], Counter())


@pytest.mark.parametrize("output, refused", [
    ("I'm sorry for any misunderstanding, but as a chatbot designed to assist, I don't have the ability to help.", True),
    ("As an AI language model, I cannot browse the web.", True),
    ("Sorry, I can't help with that.", True),
    ("I cannot provide jobs, but job boards list them.", True),
    ("I'm sorry to hear that. Here are three ways to cope: ...", False),  # sympathy, then help
    ("The bakery is called Crumb & Co.", False),
    ("You can't go wrong with a classic margherita.", False),
    ("1. Say sorry in person.\n2. Explain what happened.", False),
])
def test_refusal(output, refused):
    assert (output_reason(output) == "refusal") is refused


@pytest.mark.parametrize("instruction, missing", [
    ("The following two sentences are not the same. Which one is it?", True),
    ("The following three numbers are multiples of 3. Find the next number.", True),
    ("Given a list of integers, find the maximum.", True),
    ("Summarize this article in two sentences.", True),
    ("You are given a hat with 100 balls. How many are red?", False),  # "given" inside a scenario
    ("What is the most important thing you can do this week?", False),  # "this" without content to point at
    ("Translate this sentence: 'Hello, friend.'", False),  # the content is inline
    ("What is the capital of France?", False),
    # from a default job's audit: answered with an invented "original sentence" / "list"
    ("Write a new sentence that is the opposite of the original sentence.", True),
    ("What is the most expensive item on the list of items that have been purchased?", True),
    ("Create a list of the top 10 companies in the world.", False),
])
def test_missing_input(instruction, missing):
    ctx = F.Context(field="instance", instruction=instruction)
    empty = F.instance_reason(Instance("", "An answer."), CFG, ctx)
    assert (empty == "missing_input") is missing
    assert F.instance_reason(Instance("Some content.", "An answer."), CFG, ctx) is None  # with an input: fine


# Claims from a default job's answers (bundled model), then correct ones and look-alikes that are no claim.
@pytest.mark.parametrize("text, wrong", [
    ("This gives us 9 * 8 = 64 ≡ 1 (mod 10)", "9 * 8 = 64"),
    ("10 = 2^3 * 5", "10 = 2^3 * 5"),
    ("2^3 = 8 + 4 = 10, 3^2 = 5 + 2 = 7", "2^3 = 8 + 4 = 10"),
    ("we need to calculate 100 - 2 = 90.", "100 - 2 = 90"),
    ("-1 * 8 = 8 ≡ -1 (mod 10)", "-1 * 8 = 8"),
    ("1 × 18 = 2^4 = 6", "1 × 18 = 2^4 = 6"),
    ("3 x 4 = 13", "3 x 4 = 13"),
    ("2 + 3 * 4 = 20", "2 + 3 * 4 = 20"),  # precedence counts
    ("3 * 4 = 12 and 12 - 2 = 9", "12 - 2 = 9"),
    ("3 * 4 = 12, so 12 / 2 = 6", None),
    ("(2 + 3) * 4 = 20", None),
    ("$1.10 - $1.00 = $0.10", None),
    ("1,000 + 2,000 = 3,000", None),
    ("10/3 = 3.33", None),  # rounded as written
    ("A = πr² = 3.14 * 2^2 = 12.56", None),
    ("1 + 2 + 3 + ... + 5 * 6 = 45", None),  # part of a longer formula
    ("Sum = (n * (n + 1)) / 2", None),  # variables
    ("x = 5 + 3", None),
    ("7x = 9", None),
    ("48 - 60 = 5%", None),  # percentages are left alone
    ("The answer is 1/6th of a second", None),
    ("In 2019 the team won 3 games.", None),
    ("2^1000 = 5", None),  # too large to check: left alone
])
def test_wrong_arithmetic(text, wrong):
    assert F.wrong_arithmetic(text) == wrong
    assert (output_reason(text) == "wrong_arithmetic") is bool(wrong)


def test_wrong_arithmetic_quoted_from_the_task_is_not_the_answers():
    ctx = F.Context(field="instance", instruction="Is 2 + 2 = 5 true?")
    assert F.instance_reason(Instance("", "No: 2 + 2 = 5 is false, since 2 + 2 = 4."), CFG, ctx) is None
    assert F.instance_reason(Instance("", "Yes, 2 + 3 = 6."), CFG, ctx) == "wrong_arithmetic"


@pytest.mark.parametrize("text, number", [
    ("There are 7 days in a week.", 7.0),
    ("The ball costs $0.05.", 0.05),
    ("1. Add 2 and 3\n2. The result is 1,500", 1500.0),  # list numbers aside
    ("1. Sleep\n2. Eat", None),
    ("It is -4.5 degrees.", -4.5),
    ("No number here.", None),
])
def test_final_number(text, number):
    assert consistency.final_number(text) == number


def test_answer_terms_are_what_the_answer_adds():
    assert consistency.answer_terms("The capital of France is Paris.", "What is the capital of France?") == {"paris"}
    assert consistency.answer_terms("北京是中国的首都。", "中国的首都是哪里？") == {"北", "京"}
    assert consistency.answer_terms("France.", "Which country has Paris as capital, France?") == frozenset()


def test_unstable_answer_comes_from_the_pipelines_flag():
    ctx = F.Context(field="instance", instruction="How many legs does a cat have?")
    inst = [Instance("", "Four."), Instance("", "Six.")]
    kept, dropped = F.filter_instances(inst, CFG, ctx, unstable=[False, True])
    assert kept == inst[:1] and dropped == Counter({"unstable_answer": 1})
    kept, _ = F.filter_instances(inst, fcfg(instance=["empty_output"]), ctx, unstable=[False, True])
    assert kept == inst  # not enabled: the flag is ignored
