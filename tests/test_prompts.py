"""Prompt building and completion parsing for every stage, both styles."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfinstruct import prompts as P
from selfinstruct.records import Instance, Task


def task(i: int, instruction: str, instances=(("", "out"),), cls=None) -> Task:
    return Task(id=f"t{i}", instruction=instruction, instances=[Instance(a, b) for a, b in instances],
                is_classification=cls)


EXAMPLES = [task(1, "Write a haiku about autumn leaves."),
            task(2, "Translate the sentence into  Spanish.\nKeep the tone.", [("Good morning", "Buenos dias")]),
            task(3, "Is this number PRIME?", [("7", "Yes"), ("8", "No")], cls=True)]


# ---- instruction generation ----

def test_instruction_prompt_numbers_examples_and_ends_with_next_task():
    prompt = P.build_instruction_prompt(EXAMPLES)
    assert prompt.startswith(P.INSTRUCTION_HEADER)
    assert prompt.endswith(f"Task {len(EXAMPLES) + 1}:")
    body = prompt[len(P.INSTRUCTION_HEADER):].split("\n")
    assert body == ["Task 1: Write a haiku about autumn leaves.",
                    "Task 2: Translate the sentence into Spanish. Keep the tone.",  # one line per task
                    "Task 3: Is this number PRIME?",
                    "Task 4:"]


@pytest.mark.parametrize("k", [1, 2, 8])
def test_instruction_prompt_ends_with_task_k_plus_1(k):
    prompt = P.build_instruction_prompt([task(i, f"Instruction number {i}.") for i in range(k)])
    assert prompt.endswith(f"\nTask {k + 1}:")
    assert f"Task {k}: Instruction number {k - 1}." in prompt


def test_instruction_prompt_body_parses_back():
    """The examples as the prompt lists them are what the parser would read back."""
    prompt = P.build_instruction_prompt(EXAMPLES)
    after_first = prompt.split("Task 1:", 1)[1]
    items = P.parse_instructions(after_first)
    assert items[:3] == [P.one_line(t.instruction) for t in EXAMPLES]
    assert items[3:] in ([], [""])  # the trailing open "Task 4:" carries no text


def test_parse_keeps_case_exactly():
    out = P.parse_instructions(" Translate 'NASA' into FRENCH.\nTask 10: explain why iPhone sales DROPPED.")
    assert out == ["Translate 'NASA' into FRENCH.", "explain why iPhone sales DROPPED."]


def test_parse_skipped_numbers():
    out = P.parse_instructions(" First task here.\nTask 9: Second task.\nTask 12: Third task.")
    assert out == ["First task here.", "Second task.", "Third task."]


def test_parse_restarted_and_repeated_numbering():
    out = P.parse_instructions(" A one.\nTask 10: B two.\nTask 3: C three.\nTask 3: D four.\nTask 1: E five.")
    assert out == ["A one.", "B two.", "C three.", "D four.", "E five."]


@pytest.mark.parametrize("line", ["Task  10 : Next one.", "task 11 - Next one.", "10. Next one.", "TASK 12: Next one.",
                                  "Task 13) Next one.", "Task #14: Next one.", "  15 :Next one.", "Task10: Next one."])
def test_parse_odd_spacing_and_separators(line):
    assert P.parse_instructions(f" First one.\n{line}") == ["First one.", "Next one."]


def test_parse_continuation_lines_join_the_item():
    out = P.parse_instructions(" Write a story about\n  a dragon who\nlikes tea.\nTask 10: Second.\n  more of second")
    assert out == ["Write a story about a dragon who likes tea.", "Second. more of second"]


def test_parse_number_like_continuation_is_not_a_new_item():
    out = P.parse_instructions(" Convert the recipe amounts:\n3.5 cups of flour and\n2-3 eggs.\nTask 10: Next.")
    assert out == ["Convert the recipe amounts: 3.5 cups of flour and 2-3 eggs.", "Next."]


def test_parse_blank_trailing_text_adds_nothing():
    assert P.parse_instructions(" One.\nTask 10: Two.\n\n   \n\t\n") == ["One.", "Two."]
    assert P.parse_instructions(" One.\n\n\nTask 10: Two.") == ["One.", "Two."]


def test_parse_dangling_header_gives_no_text():
    out = P.parse_instructions(" One.\nTask 10: Two.\nTask 11:")
    assert [i for i in out if i] == ["One.", "Two."]
    assert all(i == "" for i in out[2:])  # at most an empty item, which the length filter drops as "empty"


def test_parse_first_item_has_no_prefix():
    # The prompt ends at "Task k+1:", so a first line that *looks* numbered is still the first item's text.
    assert P.parse_instructions(" 3 apples: count them.") == ["3 apples: count them."]


def test_instruction_stops():
    prompt = P.build_instruction_prompt([task(i, f"Instruction {i}.") for i in range(8)])
    stops = P.instruction_stops(8, 6)
    # The model writes tasks 9..14 (6 new ones); it must stop before starting task 15.
    assert stops[0] == "Task 15:"
    assert "Task 14:" not in stops and "\n\n" in stops
    assert not any(s in prompt[len(P.INSTRUCTION_HEADER):] for s in stops)  # no stop fires inside the prompt


# ---- classification identification ----

def test_classify_prompt():
    prompt = P.build_classify_prompt("Is the review\n positive   or negative?")
    assert prompt.startswith(P.CLASSIFY_HEADER)
    assert prompt.endswith("Task: Is the review positive or negative?\nIs it classification?")
    for text, is_cls in P.CLASSIFY_DEMOS:
        assert f"Task: {text}\nIs it classification? {'Yes' if is_cls else 'No'}\n" in prompt
    assert {c for _, c in P.CLASSIFY_DEMOS} == {True, False}  # demonstrations of both answers


# ---- instance generation ----

def test_input_first_prompt():
    demo = task(5, "Add the numbers.", [("2 3", "5"), ("", "0"), ("1 1", "2")])
    prompt = P.build_instance_prompt("Reverse the  word.", [demo], classification=False)
    assert prompt.startswith(P.INPUT_FIRST_HEADER)
    assert prompt.endswith("Task: Reverse the word.\nExample 1\nInput:")
    assert "Example 1\nInput: 2 3\nOutput: 5\nExample 2\nInput: \nOutput: 0" in prompt
    assert "1 1" not in prompt  # at most two demonstrations per demo task


def test_output_first_prompt_puts_label_before_input():
    demo = task(6, "Is the sentiment positive or negative?", [("I love it", "positive"), ("Awful", "negative")], True)
    prompt = P.build_instance_prompt("Is the number even or odd?", [demo], classification=True)
    assert prompt.startswith(P.OUTPUT_FIRST_HEADER)
    assert prompt.endswith("Task: Is the number even or odd?\nClass label:")
    assert "Class label: positive\nInput: I love it\nClass label: negative\nInput: Awful" in prompt
    assert prompt.index("Class label: positive") < prompt.index("Input: I love it")


@pytest.mark.parametrize("classification", [False, True])
def test_demo_in_instance_prompt_parses_back(classification):
    """A demo block as formatted in the prompt is what parse_instances reads from a completion."""
    demo = task(7, "Classify the animal.", [("cat", "mammal"), ("", "bird")], cls=classification)
    prompt = P.build_instance_prompt("Something else.", [demo], classification)
    opener = "Class label:" if classification else "Example 1\nInput:"
    start = prompt.index(f"Task: Classify the animal.\n{opener}") + len(f"Task: Classify the animal.\n{opener}")
    completion = prompt[start:prompt.index("\n\nTask: Something else.")]
    assert P.parse_instances(completion, classification) == demo.instances


def test_parse_input_first_multiple_examples():
    completion = " 3 4\nOutput: 7\nExample 2\nInput: 10 -2\nOutput: 8\n\nExample 3\nInput: 0 0\nOutput: 0"
    assert P.parse_instances(completion, False) == [Instance("3 4", "7"), Instance("10 -2", "8"),
                                                    Instance("0 0", "0")]


@pytest.mark.parametrize("empty", ["", " ", "<noinput>", "None", "none", "N/A", "<no input>", "null", "-"])
def test_parse_input_first_empty_input_normalised(empty):
    assert P.parse_instances(f" {empty}\nOutput: Hello there.", False) == [Instance("", "Hello there.")]


def test_parse_input_first_empty_input_on_its_own_line():
    # The prompt ends at "Input:"; a model that leaves it empty goes straight to a new line.
    assert P.parse_instances("\nOutput: 42", False) == [Instance("", "42")]
    assert P.parse_instances(" \n\nOutput: 42\nExample 2\nInput:\nOutput: 43", False) == [
        Instance("", "42"), Instance("", "43")]


def test_parse_input_first_multiline_values():
    completion = " Roses are red,\nviolets are blue.\nOutput: Line one.\nLine two.\n\nLine four.\nExample 2\nInput: x\nOutput: y"
    assert P.parse_instances(completion, False) == [
        Instance("Roses are red,\nviolets are blue.", "Line one.\nLine two.\n\nLine four."), Instance("x", "y")]


def test_parse_input_first_truncated_example_is_dropped():
    assert P.parse_instances(" a\nOutput: b\nExample 2\nInput: c", False) == [Instance("a", "b")]
    assert P.parse_instances("", False) == [] and P.parse_instances("  \n ", False) == []


def test_parse_input_first_field_names_any_case():
    assert P.parse_instances(" a\nOUTPUT: b\nexample 2\ninput: c\noutput : d", False) == [
        Instance("a", "b"), Instance("c", "d")]


def test_parse_output_first_pairs_labels_with_inputs():
    completion = " positive\nInput: What a lovely day.\nClass label: negative\nInput: The bus was late again.\n"
    assert P.parse_instances(completion, True) == [Instance("What a lovely day.", "positive"),
                                                   Instance("The bus was late again.", "negative")]


def test_parse_output_first_labels_without_inputs():
    assert P.parse_instances(" Yes\nClass label: No", True) == [Instance("", "Yes"), Instance("", "No")]
    assert P.parse_instances(" odd\nInput: 3\nClass label: even", True) == [Instance("3", "odd"), Instance("", "even")]
    assert P.parse_instances(" spam", True) == [Instance("", "spam")]


def test_parse_output_first_empty_inputs_normalised_and_multiline():
    completion = " yes\nInput: <noinput>\nClass label: no\nInput: line one\nline two"
    assert P.parse_instances(completion, True) == [Instance("", "yes"), Instance("line one\nline two", "no")]


# ---- alpaca style ----

ALPACA_EXAMPLES = [task(1, "Summarize the paragraph in one sentence.",
                        [("The city council met on Monday.\nThey approved a new park.", "The council approved a park.")]),
                   task(2, "Give three tips for better sleep.",
                        [("", "1. Keep a schedule.\n2. Avoid screens.\n3. Keep the room cool.")]),
                   task(3, "Is 17 a prime number?", [("   ", "Yes.")])]


def test_alpaca_prompt_shape():
    prompt = P.build_alpaca_prompt(ALPACA_EXAMPLES)
    assert prompt.startswith(P.ALPACA_HEADER)
    assert prompt.endswith(f"###\n{len(ALPACA_EXAMPLES) + 1}. Instruction:")
    assert "2. Input:\n<noinput>\n2. Output:\n1. Keep a schedule." in prompt
    assert prompt.count("###\n") == len(ALPACA_EXAMPLES) + 1


def test_alpaca_build_parse_round_trip():
    prompt = P.build_alpaca_prompt(ALPACA_EXAMPLES)
    completion = prompt[len(P.ALPACA_HEADER):].split("1. Instruction:", 1)[1]
    parsed = P.parse_alpaca(completion)
    assert parsed == [(t.instruction, Instance(t.instances[0].input.strip(), t.instances[0].output))
                      for t in ALPACA_EXAMPLES]


def test_alpaca_stops():
    assert P.alpaca_stops(3, 2) == ("6. Instruction:",)
    assert P.alpaca_stops(3, 2)[0] not in P.build_alpaca_prompt(ALPACA_EXAMPLES)


def test_parse_alpaca_model_like_completion():
    completion = (" Rewrite the sentence in the passive voice.\n4. Input:\nThe dog chased the ball.\n4. Output:\n"
                  "The ball was chased by the dog.\n###\n5. Instruction: List two uses of vinegar.\n5. Input:\n"
                  "<noinput>\n5. Output:\nCleaning glass and pickling vegetables.\n###\n6. Instruction:")
    assert P.parse_alpaca(completion) == [
        ("Rewrite the sentence in the passive voice.",
         Instance("The dog chased the ball.", "The ball was chased by the dog.")),
        ("List two uses of vinegar.", Instance("", "Cleaning glass and pickling vegetables.")),
    ]


def test_parse_alpaca_odd_numbering_and_spacing():
    completion = (" First.\nInput: a\nOutput: b\n  ###  \n7 . Instruction:  Second.\n7. input:\nnone\n7 . OUTPUT: c\n"
                  "###\nInstruction: Third.\nInput:\nx\nOutput:\ny")
    assert P.parse_alpaca(completion) == [("First.", Instance("a", "b")), ("Second.", Instance("", "c")),
                                          ("Third.", Instance("x", "y"))]


@pytest.mark.parametrize("completion, instruction", [
    (" Just an instruction with no fields", "Just an instruction with no fields"),
    (" Explain tides.\nmore words here", "Explain tides."),
    (" Explain tides.\n4. Input:\nthe moon", "Explain tides."),  # no Output
    (" Explain tides.\n4. Output:\nThe moon pulls water.", "Explain tides."),  # no Input
])
def test_parse_alpaca_malformed_block(completion, instruction):
    assert P.parse_alpaca(completion) == [(instruction, None)]


def test_parse_alpaca_keeps_good_blocks_around_a_bad_one():
    completion = " Good one.\nInput: a\nOutput: b\n###\n5. Instruction: Broken one.\n###\n6. Instruction: Good two.\nInput: c\nOutput: d"
    assert P.parse_alpaca(completion) == [("Good one.", Instance("a", "b")), ("Broken one.", None),
                                          ("Good two.", Instance("c", "d"))]


def test_parse_alpaca_empty():
    assert P.parse_alpaca("") == [] and P.parse_alpaca("\n  \n") == []


# ---- round-trip properties ----

_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789,'?!()", min_size=1, max_size=8)
_LINE = st.lists(_WORD, min_size=1, max_size=6).map(" ".join)
_TEXT = st.lists(_LINE, min_size=1, max_size=3).map("\n".join)


def _real_input(text: str) -> bool:
    return P.clean_input(text) == text.strip()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_LINE, _TEXT.filter(_real_input) | st.just(""), _TEXT), min_size=1, max_size=4,
                unique_by=lambda x: x[0]))
def test_alpaca_round_trip_property(rows):
    examples = [task(i, ins, [(inp, out)]) for i, (ins, inp, out) in enumerate(rows)]
    prompt = P.build_alpaca_prompt(examples)
    completion = prompt[len(P.ALPACA_HEADER):].split("1. Instruction:", 1)[1]
    assert P.parse_alpaca(completion) == [(ins, Instance(inp, out)) for ins, inp, out in rows]


@settings(max_examples=60, deadline=None)
@given(st.lists(_LINE, min_size=1, max_size=8))
def test_instruction_round_trip_property(instructions):
    prompt = P.build_instruction_prompt([task(i, s) for i, s in enumerate(instructions)])
    items = P.parse_instructions(prompt.split("Task 1:", 1)[1])
    assert [i for i in items if i] == instructions


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_TEXT.filter(_real_input) | st.just(""), _TEXT), min_size=1, max_size=2),
       st.booleans())
def test_instance_round_trip_property(pairs, classification):
    demo = task(0, "Demo task.", pairs, cls=classification)
    prompt = P.build_instance_prompt("New task.", [demo], classification)
    opener = "Class label:" if classification else "Example 1\nInput:"
    head = f"Task: Demo task.\n{opener}"
    completion = prompt[prompt.index(head) + len(head):prompt.index("\n\nTask: New task.")]
    assert P.parse_instances(completion, classification) == [Instance(a, b) for a, b in pairs]


def test_parse_alpaca_splits_items_that_skip_the_separator():
    # The model often omits '###': the next "N. Instruction:" still starts a new item.
    completion = (" Name a pirate.\n7. Input:\n<noinput>\n7. Output:\n3 golden paras\n8. Instruction: Provide 2 gifts "
                  "for the pirate.\n8. Input:\n<noinput>\n8. Output:\nA map and a hat.")
    assert P.parse_alpaca(completion) == [("Name a pirate.", Instance("", "3 golden paras")),
                                          ("Provide 2 gifts for the pirate.", Instance("", "A map and a hat."))]


def test_parse_alpaca_stops_a_field_at_a_repeated_marker():
    completion = " Give an antonym of cry.\n1. Input:\n<noinput>\n1. Output:\nlaugh\n2. Output: travel\nmore"
    assert P.parse_alpaca(completion) == [("Give an antonym of cry.", Instance("", "laugh"))]


def test_chat_turn():
    assert P.chat_turn(" Summarize the text. ", "") == "Summarize the text."
    assert P.chat_turn("Summarize the text.", " The cat sat.\n") == "Summarize the text.\n\nThe cat sat."


@pytest.mark.parametrize("instruction, needed", [
    ("What is the capital of France?", False),
    ("How to make a pizza at home.", False),
    ("Summarize the following text.", True),
    ("Is this email spam?", True),
    ("Given a list of integers, find the maximum.", True),
    ("Is the speaker a feminist?", True),
    ("Translate the sentence into French.", True),
])
def test_needs_input(instruction, needed):
    assert P.needs_input(instruction) is needed
