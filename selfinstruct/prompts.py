"""Prompt templates, building prompts from tasks, and parsing completions back into items.

Parsers keep the model's text as written (no case changes) and accept skipped, repeated or
restarted numbering and odd spacing: an item is never dropped for its number.
"""

from __future__ import annotations

import re

import functools

from selfinstruct.language import Language, english
from selfinstruct.records import Instance, Task

STYLES = ("self-instruct", "alpaca")

# English, the default language; the text of every template lives in selfinstruct/templates/<language>.yaml.
_EN = english()
INSTRUCTION_HEADER = _EN["instruction_header"]
CLASSIFY_HEADER = _EN["classify_header"]
CLASSIFY_DEMOS = [(t, c) for t, c in _EN["classify_demos"]]
INPUT_FIRST_HEADER = _EN["input_first_header"]
OUTPUT_FIRST_HEADER = _EN["output_first_header"]
ALPACA_HEADER = _EN["alpaca_header"]
NO_INPUT = _EN["no_input"]
_COLON = "[:：]"  # ASCII or full-width colon, in any language
_PERIOD = "[.．。、]"  # "3." / "3．" / "3。" / "3、"


def _lang(lang: Language | None) -> Language:
    return lang or _EN


def label_pattern(label: str) -> str:
    """A pattern for a template label: its words with any spacing, either colon, `{n}` as a number."""
    text = label.strip().rstrip(":：").strip()
    parts = [r"\s*".join(map(re.escape, w.split())) if w.strip() else "" for w in text.split("{n}")]
    return r"\s*\d+\s*".join(p for p in parts)


def _labels(lang: Language, key: str) -> str:
    """Alternatives for a label in the job's language and in English (models slip into English labels)."""
    alts = dict.fromkeys(label_pattern(x[key]) for x in (lang, _EN))
    return "(?:" + "|".join(alts) + ")"


@functools.lru_cache(maxsize=None)
def _patterns(lang: Language) -> dict[str, re.Pattern]:
    task = label_pattern(lang["task_prefix"]).split(r"\s*\d+")[0]  # "Task" / "任务"
    words = "|".join(dict.fromkeys(x for x in (task, "task") if x))
    colon = rf"\s*{_COLON}"
    fields = "|".join([f"(?P<example>{_labels(lang, 'example_label')}{colon}?)",
                       f"(?P<input>{_labels(lang, 'input_label')}{colon})",
                       f"(?P<output>{_labels(lang, 'output_label')}{colon})",
                       f"(?P<class_label>{_labels(lang, 'class_label')}{colon})"])
    alpaca = "|".join(f"(?P<{n}>{_labels(lang, k)})" for n, k in (("instruction", "instruction_label"),
                                                                   ("input", "input_label"),
                                                                   ("output", "output_label")))
    return {
        # (?!\d): "3.5 cups" or "2-3 words" opening a continuation line is not a new item.
        # (?:#\s*)? rather than #?\s*: two \s* in a row backtrack quadratically on a long run of spaces.
        "task_line": re.compile(rf"^\s*(?:(?:{words})\s*)?(?:#\s*)?\d+\s*(?:[:.)\-]|[：．。、）])(?!\d)\s*(.*)$",
                                re.IGNORECASE),
        "field": re.compile(rf"^\s*(?:{fields})\s?(?P<value>.*)$", re.IGNORECASE),
        "alpaca_field": re.compile(rf"^\s*(?:\d+\s*{_PERIOD}\s*)?(?:{alpaca}){colon}\s?(?P<value>.*)$",
                                   re.IGNORECASE),
        "alpaca_start": re.compile(rf"^\s*\d+\s*{_PERIOD}\s*{_labels(lang, 'instruction_label')}\s*{_COLON}",
                                   re.IGNORECASE),
    }


def one_line(text: str) -> str:
    """Collapse whitespace so an instruction fits on its numbered line."""
    return re.sub(r"\s+", " ", text).strip()


def clean_input(text: str, lang: Language | None = None) -> str:
    text = text.strip()
    return "" if text.lower() in _lang(lang).empty_inputs | _EN.empty_inputs else text


# ---- instruction generation (self-instruct style) ----

def _task_prefix(lang: Language, n: int) -> str:
    return lang["task_prefix"].format(n=n)


def build_instruction_prompt(examples: list[Task], lang: Language | None = None) -> str:
    lang = _lang(lang)
    lines = [f"{_task_prefix(lang, i)}{lang['space']}{one_line(t.instruction)}" for i, t in enumerate(examples, 1)]
    return lang["instruction_header"] + "\n".join(lines) + f"\n{_task_prefix(lang, len(examples) + 1)}"


def instruction_stops(num_examples: int, new_per_prompt: int, lang: Language | None = None) -> tuple[str, ...]:
    return (_task_prefix(_lang(lang), num_examples + new_per_prompt + 1), "\n\n")


def parse_instructions(completion: str, lang: Language | None = None) -> list[str]:
    """Split a completion of 'Task N:' lines into instructions. The first item has no prefix."""
    task_line = _patterns(_lang(lang))["task_line"]
    items: list[str] = []
    current: list[str] = []
    for k, line in enumerate(completion.split("\n")):
        m = task_line.match(line)
        if m and k > 0:
            items.append(" ".join(current))
            current = [m.group(1).strip()]
        elif line.strip():
            current.append(line.strip())
    items.append(" ".join(current))
    return [one_line(i) for i in items]


# ---- classification identification ----

def build_classify_prompt(instruction: str, lang: Language | None = None) -> str:
    lang = _lang(lang)
    task, q, sp = lang["task_label"], lang["classify_question"], lang["space"]
    yes, no = classify_answers(lang)
    demos = "".join(f"{task}{sp}{t}\n{q}{yes if c else no}\n\n" for t, c in lang["classify_demos"])
    return lang["classify_header"] + demos + f"{task}{sp}{one_line(instruction)}\n{q}"


def classify_answers(lang: Language | None = None) -> tuple[str, str]:
    """The continuations scored after the classification question: (yes, no)."""
    return _lang(lang)["answer_yes"], _lang(lang)["answer_no"]


# ---- instance generation ----

def _field(lang: Language, key: str, value: str) -> str:
    return f"{lang[key]}{lang['space']}{value}"


def _format_input_first(task: Task, max_instances: int, lang: Language) -> str:
    blocks = [_field(lang, "task_label", one_line(task.instruction))]
    for i, inst in enumerate(task.instances[:max_instances], 1):
        blocks.append(f"{lang['example_label'].format(n=i)}\n{_field(lang, 'input_label', inst.input.strip())}\n"
                      f"{_field(lang, 'output_label', inst.output.strip())}")
    return "\n".join(blocks) + "\n\n"


def _format_output_first(task: Task, max_instances: int, lang: Language) -> str:
    blocks = [_field(lang, "task_label", one_line(task.instruction))]
    for inst in task.instances[:max_instances]:
        blocks.append(f"{_field(lang, 'class_label', inst.output.strip())}\n"
                      f"{_field(lang, 'input_label', inst.input.strip())}")
    return "\n".join(blocks) + "\n\n"


def build_instance_prompt(instruction: str, demos: list[Task], classification: bool,
                          lang: Language | None = None) -> str:
    lang = _lang(lang)
    task = _field(lang, "task_label", one_line(instruction))
    if classification:
        body = "".join(_format_output_first(d, 3, lang) for d in demos)
        return lang["output_first_header"] + body + f"{task}\n{lang['class_label']}"
    body = "".join(_format_input_first(d, 2, lang) for d in demos)
    return lang["input_first_header"] + body + f"{task}\n{lang['example_label'].format(n=1)}\n{lang['input_label']}"


def instance_stops(lang: Language | None = None) -> tuple[str, ...]:
    return ("\n" + _lang(lang)["task_label"], "\n\n\n")


INSTANCE_STOPS = instance_stops()


def _fields(text: str, lang: Language) -> list[tuple[str, str]]:
    """[(field, value)] from 'Input:'/'Output:'/'Class label:'/'Example N' lines; other lines continue a value."""
    pattern = _patterns(lang)["field"]
    out: list[tuple[str, list[str]]] = []
    for line in text.split("\n"):
        m = pattern.match(line)
        if m:
            name = next(k for k in ("example", "input", "output", "class_label") if m.group(k) is not None)
            out.append((name.replace("_", " "), [m.group("value")]))
        elif out:
            out[-1][1].append(line)
        elif line.strip():
            out.append(("", [line]))
    return [(name, "\n".join(lines).strip()) for name, lines in out]


def parse_instances(completion: str, classification: bool, lang: Language | None = None) -> list[Instance]:
    """Parse the continuation of build_instance_prompt (which ended at 'Input:' or 'Class label:')."""
    lang = _lang(lang)
    first = lang["class_label"] if classification else lang["input_label"]
    body = completion.lstrip(" \t")  # keep a leading newline: it means the first field is empty
    fields = _fields(f"{first} {body}" if completion.strip() else "", lang)
    instances: list[Instance] = []
    if classification:
        label = None
        for name, value in fields:
            if name == "class label":
                if label is not None:  # a label with no input: input-less task
                    instances.append(Instance("", label))
                label = value
            elif name == "input" and label is not None:
                instances.append(Instance(clean_input(value, lang), label))
                label = None
        if label is not None:
            instances.append(Instance("", label))
        return instances
    inp = None
    for name, value in fields:
        if name == "input":
            inp = value
        elif name == "output":
            instances.append(Instance(clean_input(inp or "", lang), value))
            inp = None
    return instances


# ---- alpaca style: one prompt yields instruction, input and output ----

def build_alpaca_prompt(examples: list[Task], lang: Language | None = None) -> str:
    lang = _lang(lang)
    labels = (lang["instruction_label"], lang["input_label"], lang["output_label"])
    parts = []
    for i, t in enumerate(examples, 1):
        inst = t.instances[0] if t.instances else Instance("", "")
        parts.append(f"###\n{i}. {labels[0]}{lang['space']}{one_line(t.instruction)}\n{i}. {labels[1]}\n"
                     f"{inst.input.strip() or lang['no_input']}\n{i}. {labels[2]}\n{inst.output.strip()}\n")
    return lang["alpaca_header"] + "".join(parts) + f"###\n{len(examples) + 1}. {labels[0]}"


def alpaca_stops(num_examples: int, new_per_prompt: int, lang: Language | None = None) -> tuple[str, ...]:
    return (f"{num_examples + new_per_prompt + 1}. {_lang(lang)['instruction_label']}",)


def parse_alpaca(completion: str, lang: Language | None = None) -> list[tuple[str, Instance | None]]:
    """[(instruction, instance or None if the item lacked Input/Output)], one per item.

    Items start at "N. Instruction:" and hold "N. Input:" / "N. Output:" field lines. An item ends at
    a '###' line or at the next 'N. Instruction:' line (the model often skips '###'); a field ends at
    the next field line, so markers never leak into a value.
    """
    lang = _lang(lang)
    pats = _patterns(lang)
    items: list[list[tuple[str, list[str]]]] = []
    for k, line in enumerate(completion.split("\n")):
        if re.fullmatch(r"\s*###\s*", line):
            items.append([])
            continue
        m = pats["alpaca_field"].match(line)
        name = next(n for n in ("instruction", "input", "output") if m.group(n) is not None) if m else ""
        if k == 0:
            items.append([("instruction", [line])])  # the prompt ended at "N. Instruction:"
        elif m and (name == "instruction" or pats["alpaca_start"].match(line)):
            items.append([("instruction", [m.group("value")])])
        elif m:
            if not items:
                items.append([])
            items[-1].append((name, [m.group("value")]))
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
            inst = Instance(clean_input(values["input"], lang), values["output"]) if whole else None
            out.append((instruction, inst))
    return out


def needs_input(instruction: str, lang: Language | None = None) -> bool:
    """Whether the instruction refers to an input it does not itself contain ("the following text", "下面的句子")."""
    return bool(_lang(lang).re["refers"].search(instruction))


def chat_turn(instruction: str, input_text: str) -> str:
    """The user turn that asks for an output: the instruction, then the input (if any) after a blank line."""
    return instruction.strip() + (f"\n\n{input_text.strip()}" if input_text.strip() else "")
