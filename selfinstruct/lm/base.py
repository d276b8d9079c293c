"""The one narrow interface between the pipeline and a language model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one generate() call."""

    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.5
    stop: tuple[str, ...] = ()  # completion is cut at the first of these strings


@dataclass
class Completion:
    """One completion, with token counts for throughput reporting."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    meta: dict = field(default_factory=dict)


class LM(Protocol):
    """A backend: prompts in, completions out, reproducible for a given seed."""

    name: str

    def generate(self, prompts: list[str], params: GenerationParams, seed: int) -> list[Completion]:
        """Return one completion per prompt, in order. Same prompts + seed -> same texts."""
        ...


def apply_stop(text: str, stop: tuple[str, ...]) -> str:
    """Cut `text` at the earliest stop string (stop strings are excluded)."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if s and 0 <= i < cut:
            cut = i
    return text[:cut]
