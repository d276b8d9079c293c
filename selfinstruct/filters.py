"""Small named filters. An instruction filter returns None (keep) or a reason string (drop)."""

from __future__ import annotations

import re
import string
import zlib
from collections import Counter
from typing import Callable

from selfinstruct.config import FilterConfig
from selfinstruct.records import Instance

InstructionFilter = Callable[[str, FilterConfig], "str | None"]

_PROGRAM = re.compile(r"^\s*(?:please\s+)?(?:write|create|develop|implement|build|code)\s+(?:an?\s+|the\s+)?"
                      r"(?:[\w+#-]+\s+){0,2}(?:program|script|application|app|software)\b", re.IGNORECASE)


def length(text: str, cfg: FilterConfig) -> str | None:
    n = len(text.split())
    if n == 0:
        return "empty"
    if n < cfg.min_words:
        return "too_short"
    return "too_long" if n > cfg.max_words else None


def blacklist(text: str, cfg: FilterConfig) -> str | None:
    lowered = text.lower()
    for word in cfg.blacklist:
        # Whole words/phrases only ("mapping" is not "map"); lookarounds, not \b, so "c++" works too.
        phrase = r"\s+".join(map(re.escape, word.lower().split()))
        if re.search(rf"(?<!\w){phrase}(?!\w)", lowered):
            return "blacklist"
    return None


def program(text: str, cfg: FilterConfig) -> str | None:
    return "program_task" if _PROGRAM.match(text) else None


def punctuation(text: str, cfg: FilterConfig) -> str | None:
    first = text.lstrip()[:1]  # "" is `in` every string, so test emptiness first
    return "leading_punctuation" if first and first in string.punctuation else None


def ascii_start(text: str, cfg: FilterConfig) -> str | None:
    first = text.lstrip()[:1]
    return "non_ascii_start" if first and not first.isascii() else None


INSTRUCTION_FILTERS: dict[str, InstructionFilter] = {
    "length": length, "blacklist": blacklist, "program": program,
    "punctuation": punctuation, "ascii_start": ascii_start,
}


def check_instruction(text: str, cfg: FilterConfig) -> str | None:
    """First reason to drop `text` among the enabled filters, in config order; None to keep."""
    if not text.strip():
        return "empty"
    for name in cfg.instruction:
        reason = INSTRUCTION_FILTERS[name](text, cfg)
        if reason:
            return reason
    return None


def is_repetitive(text: str, min_chars: int = 80, max_ratio: float = 0.25) -> bool:
    """Degenerate text (a line or digit run looping to the token limit) compresses far better than prose.

    Human-written seed outputs of 80+ bytes compress to >= 0.53 of their size with zlib; a line
    repeated six times compresses to 0.22.
    """
    data = text.encode("utf-8")
    return len(data) >= min_chars and len(zlib.compress(data, 9)) / len(data) < max_ratio


def filter_instances(instances: list[Instance], cfg: FilterConfig) -> tuple[list[Instance], Counter]:
    """Keep well-formed instances (at most cfg.max_instances); count why the others went."""
    dropped: Counter = Counter()
    enabled = set(cfg.instance)
    kept = []
    for inst in instances:
        out, inp = inst.output.strip(), inst.input.strip()
        if "empty_output" in enabled and not out:
            dropped["empty_output"] += 1
        elif "output_equals_input" in enabled and inp and out == inp:
            dropped["output_equals_input"] += 1
        elif "repetitive" in enabled and (is_repetitive(out) or is_repetitive(inp)):
            dropped["repetitive"] += 1
        else:
            kept.append(Instance(inp, out))
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
