"""Small named filters. A filter returns None (keep) or a reason string (drop).

Instruction filters see the instruction text; instance filters see one instance plus the task it
belongs to (`Context`). Cheap filters run first; every drop is counted by its reason.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import string
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from selfinstruct.arithmetic import wrong_arithmetic
from selfinstruct.language import Language, count_units, english, language_share, tokens
from selfinstruct.records import Instance

if TYPE_CHECKING:
    from selfinstruct.config import FilterConfig


@dataclass(frozen=True)
class Context:
    """What a filter may know beyond the text itself."""

    field: str = "instruction"  # what is judged: "instruction", or "instance" (its input and output)
    cut: bool = False  # the text ran into max_new_tokens (the last item of a completion cut short)
    unstable: bool = False  # sampled answers to this quantity question end on other numbers (unstable_answer)
    instruction: str = ""  # the task's instruction (instance filters)
    classification: bool = False
    demo_labels: frozenset[str] = frozenset()  # normalised labels of *other* tasks shown in the prompt
    lang: Language | None = None  # the job's language (None: English)


NO_CONTEXT = Context()
InstructionFilter = Callable[..., "str | None"]

def _lang(ctx: Context) -> Language:
    return ctx.lang or english()


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _units(text: str, lang: Language) -> list[str]:
    """Words for n-gram checks: [a-z0-9] runs for English (as ever), the unicode tokenizer's units otherwise."""
    return _words(text) if lang.primary == "en" else tokens(text)


def length(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    """min_words/max_words count the language's unit: words, or characters for CJK (see README)."""
    n = count_units(text, _lang(ctx))
    if n == 0:
        return "empty"
    if n < cfg.min_words:
        return "too_short"
    return "too_long" if n > cfg.max_words else None


def blacklist(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    lowered = text.lower()
    spaced = _lang(ctx).unit == "word"
    for word in cfg.blacklist:
        # Whole words/phrases only ("mapping" is not "map"); lookarounds, not \b, so "c++" works too.
        # Without spaces between words (CJK) there are no word edges to ask for.
        phrase = r"\s+".join(map(re.escape, word.lower().split()))
        if re.search(rf"(?<!\w){phrase}(?!\w)" if spaced else phrase, lowered):
            return "blacklist"
    return None


def program(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    return "program_task" if _lang(ctx).re["program"].match(text) else None


def punctuation(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    first = text.lstrip()[:1]  # "" is `in` every string, so test emptiness first
    bad = first in string.punctuation or first in _lang(ctx)["leading_punctuation"]
    return "leading_punctuation" if first and bad else None


def wrong_language(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    """Mostly written in another script than the job's language (Unicode script of each letter unit).

    An instance (its input and output) whose instruction asks for another language or a notation
    (`other_script_ok`: translation, pinyin, code) is judged with its instruction at a third of that
    share: there the other script is the task, but a long reply all in another script has drifted.
    """
    lang = _lang(ctx)
    least = cfg.language_share
    if ctx.field != "instruction" and lang.re["other_script_ok"].search(ctx.instruction):
        text, least = f"{ctx.instruction}\n{text}", least / 3
    share = language_share(text, lang)
    return "wrong_language" if share is not None and share < least else None


def broken_characters(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    """A U+FFFD replacement character: bytes of a multi-byte character that were cut or invalid."""
    return "broken_characters" if "\ufffd" in text else None


# The prompts' own item markers: "Task 9:", "3. Instruction:", "Input:", "Output:", "Class label:",
# "Example 2" on a line of its own, "###". Found in a field, they mean two items ran together.
_MARKERS = re.compile(
    r"\btask\s*\d+\s*:"
    r"|\b\d+\s*\.\s*(?:instruction|input|output)\s*:"
    r"|(?:^|\n)\s*(?:instruction|input|output|class\s*label)\s*:"
    r"|(?:^|\n)\s*example\s*\d+\s*:?\s*(?:\n|$)"
    r"|###",
    re.IGNORECASE)
# Inside a one-line instruction a bare "Input:" / "Output:" also means a field leaked in.
_INLINE_FIELD = re.compile(r"(?<![\w-])(?:input|output|class\s*label)\s*:", re.IGNORECASE)


@functools.lru_cache(maxsize=None)
def _own_markers(lang: Language) -> tuple[re.Pattern, re.Pattern] | None:
    """The same markers in a non-English job's own labels ("任务 9：", "3. 输入：", "示例 2")."""
    if lang.primary == "en":
        return None
    from selfinstruct.prompts import label_pattern  # prompts owns how a label is matched

    def alt(*keys: str) -> str:
        return "|".join(label_pattern(lang[k]) for k in keys)

    c = r"\s*[:：]"
    fields = alt("input_label", "output_label", "class_label")
    markers = re.compile(
        rf"{label_pattern(lang['task_prefix'])}{c}|\d+\s*[.．。、]\s*(?:{alt('instruction_label', 'input_label')}"
        rf"|{label_pattern(lang['output_label'])}){c}|(?:^|\n)\s*(?:{alt('instruction_label')}|{fields}){c}"
        rf"|(?:^|\n)\s*(?:{label_pattern(lang['example_label'])}){c}?\s*(?:\n|$)", re.IGNORECASE)
    return markers, re.compile(rf"(?:{fields}){c}", re.IGNORECASE)


def _has_markers(text: str, ctx: Context, inline: bool) -> bool:
    own = _own_markers(_lang(ctx))
    if _MARKERS.search(text) or (inline and _INLINE_FIELD.search(text)):
        return True
    return bool(own and (own[0].search(text) or (inline and own[1].search(text))))


def leaked_markers(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    return "leaked_markers" if _has_markers(text, ctx, ctx.field == "instruction") else None


def truncated(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    """The item ran into the token limit (known from the completion), or stops mid-clause."""
    if ctx.cut:
        return "truncated"
    if not text.split() or ctx.field != "instruction":  # outputs are judged by ctx.cut only: prose may end anywhere
        return None
    lang = _lang(ctx)
    dangling = lang.dangling  # words a trailing fragment ends on: "... If 2" / "... the total cost of the"
    if lang.unit == "char":  # no spaces: "写一首关于春天的" ends on 的
        return "truncated" if any(text.rstrip().endswith(w) for w in dangling) else None
    words = text.split()
    last = words[-1].lower()
    if last in dangling or (last[-1].isdigit() and len(words) > 1 and words[-2].lower() in dangling):
        return "truncated"
    return None


def not_a_task(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    """A statement with no request: no question, and no clause opens with a request verb (or, in a
    language written without spaces, holds none of its request words anywhere)."""
    lang = _lang(ctx)
    if any(q in text for q in lang["question_marks"]):
        return None
    if lang.unit == "char":
        hit = lang.re["ask_openers"].search(text) or any(w in text for w in lang.request_words)
        return None if hit else "not_a_task"
    for clause in re.split(r"[.!;:,\n()]+|\s[-–—]\s", text):
        clause = clause.strip().strip("\"'*` ")
        if not clause:
            continue
        first = re.sub(r"[^a-z]", "", clause.split()[0].lower())
        if first in lang.request_words or lang.re["ask_openers"].match(clause):
            return None
    return "not_a_task"


def _max_ngram_count(text: str, n: int, lang: Language | None = None) -> int:
    w = _units(text, lang or english())
    return max(Counter(tuple(w[i:i + n]) for i in range(len(w) - n + 1)).values(), default=0)


def repeated_phrase(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    """An n-gram repeated: once too often in an instruction, more than repeat_limit times in a field."""
    limit = 1 if ctx.field == "instruction" else cfg.repeat_limit
    return "repeated_phrase" if _max_ngram_count(text, cfg.repeat_ngram, _lang(ctx)) > limit else None


INSTRUCTION_FILTERS: dict[str, InstructionFilter] = {
    "length": length, "blacklist": blacklist, "program": program,
    "punctuation": punctuation, "wrong_language": wrong_language, "broken_characters": broken_characters,
    "leaked_markers": leaked_markers,
    "truncated": truncated, "not_a_task": not_a_task, "repeated_phrase": repeated_phrase,
}


def check_instruction(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    """First reason to drop `text` among the enabled filters, in config order; None to keep."""
    if not text.strip():
        return "empty"
    for name in cfg.instruction:
        reason = INSTRUCTION_FILTERS[name](text, cfg, ctx)
        if reason:
            return reason
    return None


# ---- instance filters ----

def is_repetitive(text: str, min_chars: int = 80, max_ratio: float = 0.25) -> bool:
    """Degenerate text (a line or digit run looping to the token limit) compresses far better than prose.

    Human-written seed outputs of 80+ bytes compress to >= 0.53 of their size with zlib; a line
    repeated six times compresses to 0.22.
    """
    data = text.encode("utf-8")
    return len(data) >= min_chars and len(zlib.compress(data, 9)) / len(data) < max_ratio


_LIST_MARK = re.compile(r"^\s*(?:[-*•]+|\(?\d+[.):]|\(?[a-z][.)])\s*", re.IGNORECASE)


def strip_list_marker(line: str) -> str:
    """The line without its list marker ("2. ", "- ", "b) ")."""
    return _LIST_MARK.sub("", line)


def is_looping(text: str, min_repeats: int = 3) -> bool:
    """One line again and again with only its list number changed ("2. 20 / 10 = 2.", "3. 20 / 10 = 2.").

    Lines are compared after dropping their list marker, so a list of one item repeated counts too.
    """
    lines = [" ".join(strip_list_marker(line).lower().split()) for line in text.split("\n")]
    counts = Counter(x for x in lines if x)
    return bool(counts) and counts.most_common(1)[0][1] >= min_repeats


# An output that is only a list marker, a field name or a placeholder.
_MARKER_ONLY = re.compile(
    r"^(?:\(?\d+[.):]|[-*•#>=_.…]+|[a-z][.)]|<\s*no\s*input\s*>|"
    r"(?:\d+\s*\.\s*)?(?:input|output|answer|example(?:\s*\d+)?|class\s*label|instruction|task(?:\s*\d+)?|"
    r"response|solution)\s*:?)$", re.IGNORECASE)


def _missing_input(inst: Instance, ctx: Context) -> bool:
    """No input, yet the instruction points at content it does not hold itself (no quote, no colon).

    ("Classify the following two sentences", "Given a list of numbers, ..."): the task cannot be done.
    """
    lang = _lang(ctx)
    return (not inst.input and bool(lang.re["points_at"].search(ctx.instruction))
            and not any(q in ctx.instruction for q in lang["quotes"]))


def norm_label(text: str) -> str:
    return " ".join(_words(text))


_ALWAYS_IMPLIED = {"yes", "no", "true", "false"}


def _foreign_label(inst: Instance, ctx: Context) -> bool:
    """A class label taken from another task's demonstration: not named in this task's instruction."""
    label = norm_label(inst.output)
    if not ctx.classification or not label or label in _ALWAYS_IMPLIED or label not in ctx.demo_labels:
        return False
    return f" {label} " not in f" {norm_label(ctx.instruction)} "


def _both(check: Callable[[str], bool]) -> Callable[[Instance, "FilterConfig", Context], bool]:
    return lambda inst, cfg, ctx: check(inst.output) or check(inst.input)


# Instance filters by name, in the order they run (cheap first); config validation reads these names.
# None marks the two that judge a task's instances together, in filter_instances.
INSTANCE_FILTERS: dict[str, Callable[[Instance, "FilterConfig", Context], bool] | None] = {
    "empty_output": lambda inst, cfg, ctx: not inst.output,
    "marker_only": lambda inst, cfg, ctx: bool(_MARKER_ONLY.match(inst.output)),
    "missing_input": lambda inst, cfg, ctx: _missing_input(inst, ctx),
    "output_equals_input": lambda inst, cfg, ctx: bool(inst.input) and inst.output == inst.input,
    "broken_characters": _both(lambda text: "\ufffd" in text),
    "leaked_markers": lambda inst, cfg, ctx: _has_markers(inst.output, ctx, False) or _has_markers(inst.input, ctx, False),
    "truncated": lambda inst, cfg, ctx: ctx.cut,
    "refusal": lambda inst, cfg, ctx: bool(_lang(ctx).re["refusal"].match(inst.output)),
    "wrong_language": lambda inst, cfg, ctx: bool(
        wrong_language(f"{inst.input}\n{inst.output}", cfg, dataclasses.replace(ctx, field="instance"))),
    "looping": _both(is_looping),
    "repetitive": _both(is_repetitive),
    "repeated_phrase": lambda inst, cfg, ctx: bool(repeated_phrase(inst.output, cfg, ctx)
                                                   or repeated_phrase(inst.input, cfg, ctx)),
    "foreign_label": lambda inst, cfg, ctx: _foreign_label(inst, ctx),
    "wrong_arithmetic": lambda inst, cfg, ctx: bool(wrong_arithmetic(inst.output, f"{ctx.instruction}\n{inst.input}")),
    "unstable_answer": lambda inst, cfg, ctx: ctx.unstable,
    "conflicting": None,
    "duplicate": None,
}


def instance_reason(inst: Instance, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    """First reason to drop one instance among the enabled per-instance filters; None to keep."""
    on = cfg.instance
    for name, check in INSTANCE_FILTERS.items():
        if check is not None and name in on and check(inst, cfg, ctx):
            return name
    return None


def filter_instances(instances: list[Instance], cfg: FilterConfig, ctx: Context = NO_CONTEXT,
                     cut: list[bool] | None = None,
                     unstable: list[bool] | None = None) -> tuple[list[Instance], Counter]:
    """Keep well-formed instances (at most cfg.max_instances); count why the others went.

    `cut[i]` says instance i's output ran into the token limit; `unstable[i]` that sampled answers to
    it disagreed with it (the pipeline's self-consistency check).
    """
    dropped: Counter = Counter()
    enabled = set(cfg.instance)
    kept = []
    for k, inst in enumerate(instances):
        inst = Instance(inst.input.strip(), inst.output.strip())
        one = dataclasses.replace(ctx, field="instance", cut=bool(cut and cut[k]),
                                  unstable=bool(unstable and unstable[k]))
        reason = instance_reason(inst, cfg, one)
        if reason:
            dropped[reason] += 1
        else:
            kept.append(inst)
    if "conflicting" in enabled:
        outputs: dict[str, set[str]] = {}
        for inst in kept:
            outputs.setdefault(inst.input, set()).add(inst.output)
        conflicted = {k for k, v in outputs.items() if len(v) > 1}
        # An input with two answers teaches nothing: drop them all. Without input, keep the first answer.
        first_empty = next((i for i, inst in enumerate(kept) if inst.input == "" and "" in conflicted), None)
        before = len(kept)
        kept = [inst for i, inst in enumerate(kept) if inst.input not in conflicted or i == first_empty]
        dropped["conflicting_outputs"] += before - len(kept)
    if "duplicate" in enabled:
        seen, unique = set(), []
        for inst in kept:
            key = (inst.input, inst.output)
            if key in seen:
                dropped["duplicate_instance"] += 1
            else:
                seen.add(key)
                unique.append(inst)
        kept = unique
    if len(kept) > cfg.max_instances:
        dropped["over_max_instances"] += len(kept) - cfg.max_instances
        kept = kept[:cfg.max_instances]
    return kept, +dropped
