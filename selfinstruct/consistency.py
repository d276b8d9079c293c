"""Self-consistency of chat answers (the unstable_answer filter): what to check, how to sample, agreement.

A checkable answer is sampled `consistency.samples` more times; it stands when one sample agrees.
Checkable: the last number of an answer to a question asking for one ("How many ...",
"Calculate ..."), or the terms a short answer adds to a question with no input ("Paris"); a rewrite
or summary of an input may say the same in other words, so it is not checked. A 135M model's
arithmetic is noise: its answer and two samples to "What is the sum of the squares of 1 to 6?" end
on 6, 9 and 2; to "How many days of the week are there?" on 7, 10 and 7 (kept).
"""

from __future__ import annotations

import re

from selfinstruct.arithmetic import wrong_arithmetic
from selfinstruct.config import Config
from selfinstruct.filters import strip_list_marker
from selfinstruct.language import Language, count_units, tokens
from selfinstruct.lm.base import Completion, GenerationParams

_ANY_NUM = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


def final_number(text: str) -> float | None:
    """The last number an answer states, list numbers aside ("... so the ball costs $0.05." -> 0.05)."""
    found = _ANY_NUM.findall("\n".join(strip_list_marker(line) for line in text.split("\n")))
    return float(found[-1].replace(",", "")) if found else None


def same_number(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


def answer_terms(answer: str, question: str) -> frozenset[str]:
    """What a short answer adds to its question: its words (CJK: characters) that the question lacks.

    "The capital of France is Paris." to "What is the capital of France?" -> {"paris"}.
    """
    asked = {t.lower() for t in tokens(question)}
    return frozenset(t.lower() for t in tokens(answer) if t.lower() not in asked)


def sample_params(cfg: Config) -> GenerationParams:
    """The consistency samples: the answers' token limit and penalties, sampled at consistency's settings."""
    a, k = cfg.answers, cfg.consistency
    return GenerationParams(a.max_new_tokens, k.temperature, k.top_p, (), a.repetition_penalty,
                            a.no_repeat_ngram_size, True)


def check_key(cfg: Config, lang: Language, instruction: str, input_text: str, turn: str,
              out: Completion) -> dict | None:
    """What the samples must repeat of this answer to `turn`; None when it is not checked."""
    on = cfg.filters.instance
    if not cfg.consistency.samples or "unstable_answer" not in on or out.meta.get("finish_reason") == "length":
        return None
    if "wrong_arithmetic" in on and wrong_arithmetic(out.text, turn):
        return None  # dropped anyway: not worth sampling for
    n = final_number(out.text) if lang.re["asks_number"].search(instruction) else None
    if n is not None:
        return {"number": n}
    if not input_text and any(q in instruction for q in lang["question_marks"]) \
            and 0 < count_units(out.text, lang) <= cfg.consistency.short_answer:
        terms = answer_terms(out.text, turn)
        return {"terms": sorted(terms)} if terms else None
    return None


def verdict(key: dict, samples: list[str]) -> dict:
    """agreed: at least one sample ends on the same number, or holds every term of the answer."""
    if "number" in key:
        numbers = [final_number(t) for t in samples]
        return {"samples": numbers, "agreed": any(same_number(key["number"], n) for n in numbers)}
    return {"samples": [t.strip() for t in samples],
            "agreed": any(set(key["terms"]) <= {w.lower() for w in tokens(t)} for t in samples)}
