"""Prompt templates, building prompts from tasks, and parsing completions back into items.

Parsers keep the model's text as written (no case changes) and accept skipped, repeated or
restarted numbering and odd spacing: an item is never dropped for its number.
"""

from __future__ import annotations

import re

from selfinstruct.records import Instance, Task

STYLES = ("self-instruct", "alpaca")

INSTRUCTION_HEADER = "Come up with a series of tasks:\n\n"

CLASSIFY_HEADER = "Can the following task be regarded as a classification task with finite output labels?\n\n"
# The project's own demonstrations for classification identification.
CLASSIFY_DEMOS = [
    ("Decide whether the customer review below is positive, negative or mixed.", True),
    ("Write a short poem about the first snow of the winter.", False),
    ("Is the following number even or odd?", True),
    ("Explain how a bill becomes a law in your own words.", False),
    ("Label each email as urgent or not urgent.", True),
    ("Suggest three names for a bakery that sells only bread.", False),
    ("Tell me which planet in the list is the largest.", False),
    ("Given a sentence, say if it is written in the past, present or future tense.", True),
    ("Convert the temperature from Celsius to Fahrenheit.", False),
    ("Does this paragraph contain a spelling mistake? Answer yes or no.", True),
]

INPUT_FIRST_HEADER = ("Come up with examples for the following tasks. Try to generate multiple examples "
                      "when possible. If the task doesn't require additional input, leave the input empty "
                      "and write the output directly.\n\n")
OUTPUT_FIRST_HEADER = ("Given the classification task definition and the class labels, generate an input "
                       "that corresponds to each of the class labels. If the task doesn't require input, "
                       "just generate the correct class label.\n\n")

ALPACA_HEADER = (
    "You are asked to come up with a set of diverse task instructions, each with an input and the output "
    "a good assistant would give.\n"
    "Requirements: do not repeat verbs across instructions; use many kinds of tasks (open questions, "
    "classification, editing, writing, reasoning, coding); the instruction should be one or two sentences "
    "in English; the input is a concrete example for the instruction, or <noinput> when none is needed; "
    "the output answers the instruction well and is under 100 words.\n\n"
    "List of tasks:\n"
)
NO_INPUT = "<noinput>"
_EMPTY_INPUTS = {"", "none", "n/a", "na", "(none)", "<noinput>", "no input", "<no input>", "null", "-"}


def one_line(text: str) -> str:
    """Collapse whitespace so an instruction fits on its numbered line."""
    return re.sub(r"\s+", " ", text).strip()


def clean_input(text: str) -> str:
    text = text.strip()
    return "" if text.lower() in _EMPTY_INPUTS else text


# ---- instruction generation (self-instruct style) ----

def build_instruction_prompt(examples: list[Task]) -> str:
    lines = [f"Task {i}: {one_line(t.instruction)}" for i, t in enumerate(examples, 1)]
    return INSTRUCTION_HEADER + "\n".join(lines) + f"\nTask {len(examples) + 1}:"


def instruction_stops(num_examples: int, new_per_prompt: int) -> tuple[str, ...]:
    return (f"Task {num_examples + new_per_prompt + 1}:", "\n\n")


# (?!\d): "3.5 cups" or "2-3 words" opening a continuation line is not a new item.
# (?:#\s*)? rather than #?\s*: two \s* in a row backtrack quadratically on a long run of spaces.
_TASK_LINE = re.compile(r"^\s*(?:task\s*)?(?:#\s*)?\d+\s*[:.)\-](?!\d)\s*(.*)$", re.IGNORECASE)


def parse_instructions(completion: str) -> list[str]:
    """Split a completion of 'Task N:' lines into instructions. The first item has no prefix."""
    items: list[str] = []
    current: list[str] = []
    for k, line in enumerate(completion.split("\n")):
        m = _TASK_LINE.match(line)
        if m and k > 0:
            items.append(" ".join(current))
            current = [m.group(1).strip()]
        elif line.strip():
            current.append(line.strip())
    items.append(" ".join(current))
    return [one_line(i) for i in items]


# ---- classification identification ----

def build_classify_prompt(instruction: str) -> str:
    demos = "".join(f"Task: {t}\nIs it classification? {'Yes' if c else 'No'}\n\n" for t, c in CLASSIFY_DEMOS)
    return CLASSIFY_HEADER + demos + f"Task: {one_line(instruction)}\nIs it classification?"


# ---- instance generation ----

def _format_input_first(task: Task, max_instances: int) -> str:
    blocks = [f"Task: {one_line(task.instruction)}"]
    for i, inst in enumerate(task.instances[:max_instances], 1):
        blocks.append(f"Example {i}\nInput: {inst.input.strip()}\nOutput: {inst.output.strip()}")
    return "\n".join(blocks) + "\n\n"


def _format_output_first(task: Task, max_instances: int) -> str:
    blocks = [f"Task: {one_line(task.instruction)}"]
    for inst in task.instances[:max_instances]:
        blocks.append(f"Class label: {inst.output.strip()}\nInput: {inst.input.strip()}")
    return "\n".join(blocks) + "\n\n"


def build_instance_prompt(instruction: str, demos: list[Task], classification: bool) -> str:
    if classification:
        body = "".join(_format_output_first(d, 3) for d in demos)
        return OUTPUT_FIRST_HEADER + body + f"Task: {one_line(instruction)}\nClass label:"
    body = "".join(_format_input_first(d, 2) for d in demos)
    return INPUT_FIRST_HEADER + body + f"Task: {one_line(instruction)}\nExample 1\nInput:"


INSTANCE_STOPS = ("\nTask:", "\n\n\n")

_FIELD = re.compile(r"^\s*(example\s*\d+\s*:?|input\s*:|output\s*:|class\s*label\s*:)\s?(.*)$", re.IGNORECASE)


def _fields(text: str) -> list[tuple[str, str]]:
    """[(field, value)] from 'Input:'/'Output:'/'Class label:'/'Example N' lines; other lines continue a value."""
    out: list[tuple[str, list[str]]] = []
    for line in text.split("\n"):
        m = _FIELD.match(line)
        if m:
            name = re.sub(r"\s+", " ", m.group(1).lower()).rstrip(":").strip()
            name = "example" if name.startswith("example") else name
            out.append((name, [m.group(2)]))
        elif out:
            out[-1][1].append(line)
        elif line.strip():
            out.append(("", [line]))
    return [(name, "\n".join(lines).strip()) for name, lines in out]


def parse_instances(completion: str, classification: bool) -> list[Instance]:
    """Parse the continuation of build_instance_prompt (which ended at 'Input:' or 'Class label:')."""
    first = "class label" if classification else "input"
    body = completion.lstrip(" \t")  # keep a leading newline: it means the first field is empty
    fields = _fields(f"{first}: {body}" if completion.strip() else "")
    instances: list[Instance] = []
    if classification:
        label = None
        for name, value in fields:
            if name == "class label":
                if label is not None:  # a label with no input: input-less task
                    instances.append(Instance("", label))
                label = value
            elif name == "input" and label is not None:
                instances.append(Instance(clean_input(value), label))
                label = None
        if label is not None:
            instances.append(Instance("", label))
        return instances
    inp = None
    for name, value in fields:
        if name == "input":
            inp = value
        elif name == "output":
            instances.append(Instance(clean_input(inp or ""), value))
            inp = None
    return instances


# ---- alpaca style: one prompt yields instruction, input and output ----

def build_alpaca_prompt(examples: list[Task]) -> str:
    parts = []
    for i, t in enumerate(examples, 1):
        inst = t.instances[0] if t.instances else Instance("", "")
        parts.append(f"###\n{i}. Instruction: {one_line(t.instruction)}\n{i}. Input:\n"
                     f"{inst.input.strip() or NO_INPUT}\n{i}. Output:\n{inst.output.strip()}\n")
    return ALPACA_HEADER + "".join(parts) + f"###\n{len(examples) + 1}. Instruction:"


def alpaca_stops(num_examples: int, new_per_prompt: int) -> tuple[str, ...]:
    return (f"{num_examples + new_per_prompt + 1}. Instruction:",)


# Alpaca items start at "N. Instruction:" and hold "N. Input:" / "N. Output:" field lines.
_ALPACA_FIELD = re.compile(r"^\s*(?:\d+\s*\.\s*)?(instruction|input|output)\s*:\s?(.*)$", re.IGNORECASE)
_ALPACA_START = re.compile(r"^\s*\d+\s*\.\s*instruction\s*:", re.IGNORECASE)


def parse_alpaca(completion: str) -> list[tuple[str, Instance | None]]:
    """[(instruction, instance or None if the item lacked Input/Output)], one per item.

    An item ends at a '###' line or at the next 'N. Instruction:' line (the model often skips
    '###'); a field ends at the next field line, so markers never leak into a value.
    """
    items: list[list[tuple[str, list[str]]]] = []
    for k, line in enumerate(completion.split("\n")):
        if re.fullmatch(r"\s*###\s*", line):
            items.append([])
            continue
        m = _ALPACA_FIELD.match(line)
        if k == 0:
            items.append([("instruction", [line])])  # the prompt ended at "N. Instruction:"
        elif m and (m.group(1).lower() == "instruction" or _ALPACA_START.match(line)):
            items.append([("instruction", [m.group(2)])])
        elif m:
            if not items:
                items.append([])
            items[-1].append((m.group(1).lower(), [m.group(2)]))
        elif items and items[-1]:
            items[-1][-1][1].append(line)
    out = []
    for fields in items:
        values: dict[str, str] = {}
        for name, lines in fields:
            if name in values:  # a second Input:/Output: is the next item leaking in: stop here
                break
            values[name] = "\n".join(lines).strip()
        text = values.get("instruction", "")
        whole = "input" in values and "output" in values
        instruction = one_line(text if whole else text.split("\n", 1)[0])  # malformed: keep its first line
        if instruction:
            out.append((instruction, Instance(clean_input(values["input"]), values["output"]) if whole else None))
    return out


# An instruction that points at something outside itself ("the following text", "this email", "given a
# list") needs an input; one that does not ("What is the capital of France?") is answered from its text.
_REFERS = re.compile(
    r"\b(?:following|below|above|given|provided|this|these|input|"
    r"the\s+(?:text|sentence|sentences|passage|paragraph|list|word|words|phrase|review|article|code|snippet|"
    r"email|message|tweet|story|poem|data|table|string|array|statement|argument|recipe|headline|title|"
    r"document|essay|comment|dialogue|conversation|equation|expression|speaker|author|writer|person|"
    r"program|function|query|question|number|numbers|letter|product|description|excerpt|quote|name))\b",
    re.IGNORECASE)


def needs_input(instruction: str) -> bool:
    """Whether the instruction refers to an input it does not itself contain."""
    return bool(_REFERS.search(instruction))


def chat_turn(instruction: str, input_text: str) -> str:
    """The user turn that asks for an output: the instruction, then the input (if any) after a blank line."""
    return instruction.strip() + (f"\n\n{input_text.strip()}" if input_text.strip() else "")
