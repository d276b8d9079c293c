"""Small named filters. A filter returns None (keep) or a reason string (drop).

Instruction filters see the instruction text; instance filters see one instance plus the task it
belongs to (`Context`). Cheap filters run first; every drop is counted by its reason.
"""

from __future__ import annotations

import dataclasses
import re
import string
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from selfinstruct.records import Instance

if TYPE_CHECKING:
    from selfinstruct.config import FilterConfig


@dataclass(frozen=True)
class Context:
    """What a filter may know beyond the text itself."""

    field: str = "instruction"  # what is judged: "instruction", or "instance" (its input and output)
    cut: bool = False  # the text ran into max_new_tokens (the last item of a completion cut short)
    instruction: str = ""  # the task's instruction (instance filters)
    classification: bool = False
    demo_labels: frozenset[str] = frozenset()  # normalised labels of *other* tasks shown in the prompt


NO_CONTEXT = Context()
InstructionFilter = Callable[..., "str | None"]

_PROGRAM = re.compile(r"^\s*(?:please\s+)?(?:write|create|develop|implement|build|code)\s+(?:an?\s+|the\s+)?"
                      r"(?:[\w+#-]+\s+){0,2}(?:program|script|application|app|software)\b", re.IGNORECASE)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def length(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    n = len(text.split())
    if n == 0:
        return "empty"
    if n < cfg.min_words:
        return "too_short"
    return "too_long" if n > cfg.max_words else None


def blacklist(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    lowered = text.lower()
    for word in cfg.blacklist:
        # Whole words/phrases only ("mapping" is not "map"); lookarounds, not \b, so "c++" works too.
        phrase = r"\s+".join(map(re.escape, word.lower().split()))
        if re.search(rf"(?<!\w){phrase}(?!\w)", lowered):
            return "blacklist"
    return None


def program(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    return "program_task" if _PROGRAM.match(text) else None


def punctuation(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    first = text.lstrip()[:1]  # "" is `in` every string, so test emptiness first
    return "leading_punctuation" if first and first in string.punctuation else None


def ascii_start(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    first = text.lstrip()[:1]
    return "non_ascii_start" if first and not first.isascii() else None


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


def leaked_markers(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    hit = _MARKERS.search(text) or (ctx.field == "instruction" and _INLINE_FIELD.search(text))
    return "leaked_markers" if hit else None


# Words a trailing fragment ends on: "A company has 100 employees. If 2" / "... the total cost of the".
_DANGLING = set("a an the and or but if of to in on at by for with from as than that which who whose when "
                "while because so is are was were be been will would can could should may might must "
                "into onto about between each every this these those your my our their its".split())


def truncated(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    """The item ran into the token limit (known from the completion), or stops mid-clause."""
    if ctx.cut:
        return "truncated"
    words = text.split()
    if not words or ctx.field != "instruction":  # outputs are judged by ctx.cut only: prose may end anywhere
        return None
    last = words[-1].lower()
    if last in _DANGLING or (last[-1].isdigit() and len(words) > 1 and words[-2].lower() in _DANGLING):
        return "truncated"
    return None


# Verbs that open a request ("Write ...", "Given ..., find ...") and other ways to ask for something.
_REQUEST_VERBS = set("""
add adapt adjust advise alphabetize analyze analyse answer apply arrange ask assess assign assume break
brainstorm build calculate categorize categorise change check choose cite clarify classify combine come compare
compile complete compose compute condense construct continue convert correct count craft create critique decide
decode define delete derive describe design detect determine develop devise diagnose discuss distinguish divide
do draft edit elaborate eliminate encode estimate evaluate examine expand explain express extract figure fill find
fix flag format formulate generate get give group guess help highlight identify illustrate imagine improve
include indicate infer insert interpret invent judge justify label let list locate make map mark match measure
merge mention modify multiply name note order organize organise outline output paraphrase parse pick plan point
predict prepare present prioritize produce proofread propose prove provide put quote rank rate read recommend
reconstruct recount redact reduce refactor reformulate rephrase replace report represent respond restate
restructure return reverse review revise rewrite round say schedule score select separate share shorten show
simplify solve sort specify spell split state suggest sum summarize summarise supply swap take teach tell test
think transcribe transform translate turn underline use validate verify walk write given using consider pretend
act play pair offer recall recite regroup remove retell rearrange route pull cut scale implement normalize
normalise work tag flip tally trim wrap grade reword invert tabulate enumerate draw sketch debug optimize
optimise inspect fetch keep look lookup stop start finish sign send rename reorder sequence guide instruct
hypothesize brainstorm convince persuade argue defend describe narrate dictate update upgrade
conjugate pluralize capitalize punctuate abbreviate expand"""
    .split())
_ASK_OPENERS = re.compile(
    r"^(?:please|kindly|can|could|would|will|should|shall|how|what|why|when|where|which|who|whom|whose|is|are|"
    r"do|does|did|was|were|has|have|in\s+(?:this|the\s+following)\s+task|"
    r"i(?:\s+am|'m)\s+looking|i\s+(?:want|need|would\s+like|wonder)|i'd\s+like|"
    r"you\s+(?:are|will|need|should|must|have)|your\s+task|help\s+me|let's|let\s+us)\b",
    re.IGNORECASE)


def not_a_task(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    """A statement with no request: no question, and no clause opens with a request verb."""
    if "?" in text:
        return None
    for clause in re.split(r"[.!;:,\n()]+|\s[-–—]\s", text):
        clause = clause.strip().strip("\"'*` ")
        if not clause:
            continue
        first = re.sub(r"[^a-z]", "", clause.split()[0].lower())
        if first in _REQUEST_VERBS or _ASK_OPENERS.match(clause):
            return None
    return "not_a_task"


def _max_ngram_count(text: str, n: int) -> int:
    w = _words(text)
    return max(Counter(tuple(w[i:i + n]) for i in range(len(w) - n + 1)).values(), default=0)


def repeated_phrase(text: str, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    """An n-gram repeated: once too often in an instruction, more than repeat_limit times in a field."""
    limit = 1 if ctx.field == "instruction" else cfg.repeat_limit
    return "repeated_phrase" if _max_ngram_count(text, cfg.repeat_ngram) > limit else None


INSTRUCTION_FILTERS: dict[str, InstructionFilter] = {
    "length": length, "blacklist": blacklist, "program": program,
    "punctuation": punctuation, "ascii_start": ascii_start, "leaked_markers": leaked_markers,
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


def is_looping(text: str, min_repeats: int = 3) -> bool:
    """One line again and again with only its list number changed ("2. 20 / 10 = 2.", "3. 20 / 10 = 2.").

    Lines are compared after dropping their list marker, so a list of one item repeated counts too.
    """
    lines = [" ".join(_LIST_MARK.sub("", line).lower().split()) for line in text.split("\n")]
    counts = Counter(x for x in lines if x)
    return bool(counts) and counts.most_common(1)[0][1] >= min_repeats


# An output that is only a list marker, a field name or a placeholder.
_MARKER_ONLY = re.compile(
    r"^(?:\(?\d+[.):]|[-*•#>=_.…]+|[a-z][.)]|<\s*no\s*input\s*>|"
    r"(?:\d+\s*\.\s*)?(?:input|output|answer|example(?:\s*\d+)?|class\s*label|instruction|task(?:\s*\d+)?|"
    r"response|solution)\s*:?)$", re.IGNORECASE)


# A reply that declines a harmless request (the audit grades it unacceptable): its first sentence
# apologises or says what the assistant cannot do.
_REFUSAL = re.compile(
    r"^[^.!?\n]{0,40}?(?:\bi'?m sorry(?! to hear)|\bi am sorry(?! to hear)|\bsorry, |\bas an? (?:ai|language model|chatbot|"
    r"helpful (?:ai )?assistant)\b|\bi (?:can(?:no|')t|am unable|'m unable|do(?:n't| not) have the ability)\b)",
    re.IGNORECASE)


# An instruction that points at content it does not hold ("Classify the following two sentences",
# "Given a list of numbers, ...") needs an input; without one the task cannot be done.
_CONTENT = (r"(?:text|sentences?|passages?|paragraphs?|list|words?|phrases?|reviews?|articles?|code|snippet|emails?|"
            r"messages?|tweets?|story|poem|data|table|strings?|array|numbers?|statements?|arguments?|recipe|"
            r"headlines?|titles?|documents?|essay|comments?|dialogue|conversation|equation|expressions?|items?|"
            r"options|questions?|letter|excerpt|quotes?|names?)")
_POINTS_AT = re.compile(rf"^\s*given\b|\b(?:the\s+following|following|below|above|provided|this|these)\s+"
                        rf"(?:[\w-]+\s+){{0,2}}?{_CONTENT}\b", re.IGNORECASE)


def _missing_input(inst: Instance, ctx: Context) -> bool:
    """No input, yet the instruction points at content it does not hold itself (no quote, no colon)."""
    return not inst.input and bool(_POINTS_AT.search(ctx.instruction)) and not re.search(r"[\"':]", ctx.instruction)


def norm_label(text: str) -> str:
    return " ".join(_words(text))


_ALWAYS_IMPLIED = {"yes", "no", "true", "false"}


def _foreign_label(inst: Instance, ctx: Context) -> bool:
    """A class label taken from another task's demonstration: not named in this task's instruction."""
    label = norm_label(inst.output)
    if not ctx.classification or not label or label in _ALWAYS_IMPLIED or label not in ctx.demo_labels:
        return False
    return f" {label} " not in f" {norm_label(ctx.instruction)} "


def instance_reason(inst: Instance, cfg: FilterConfig, ctx: Context = NO_CONTEXT) -> str | None:
    """First reason to drop one instance among the enabled per-instance filters; None to keep."""
    out, inp = inst.output, inst.input
    on = cfg.instance
    if "empty_output" in on and not out:
        return "empty_output"
    if "marker_only" in on and _MARKER_ONLY.match(out):
        return "marker_only"
    if "missing_input" in on and _missing_input(inst, ctx):
        return "missing_input"
    if "output_equals_input" in on and inp and out == inp:
        return "output_equals_input"
    if "leaked_markers" in on and (_MARKERS.search(out) or _MARKERS.search(inp)):
        return "leaked_markers"
    if "truncated" in on and ctx.cut:
        return "truncated"
    if "refusal" in on and _REFUSAL.match(out):
        return "refusal"
    if "looping" in on and (is_looping(out) or is_looping(inp)):
        return "looping"
    if "repetitive" in on and (is_repetitive(out) or is_repetitive(inp)):
        return "repetitive"
    if "repeated_phrase" in on and (repeated_phrase(out, cfg, ctx) or repeated_phrase(inp, cfg, ctx)):
        return "repeated_phrase"
    if "foreign_label" in on and _foreign_label(inst, ctx):
        return "foreign_label"
    return None


def filter_instances(instances: list[Instance], cfg: FilterConfig, ctx: Context = NO_CONTEXT,
                     cut: list[bool] | None = None) -> tuple[list[Instance], Counter]:
    """Keep well-formed instances (at most cfg.max_instances); count why the others went.

    `cut[i]` says instance i's output ran into the token limit.
    """
    dropped: Counter = Counter()
    enabled = set(cfg.instance)
    kept = []
    for k, inst in enumerate(instances):
        inst = Instance(inst.input.strip(), inst.output.strip())
        one = dataclasses.replace(ctx, field="instance", cut=bool(cut and cut[k]))
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
