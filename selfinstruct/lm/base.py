"""The one narrow interface between the pipeline and a language model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one generate() call."""

    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.5
    stop: tuple[str, ...] = ()  # completion is cut at the first of these strings
    repetition_penalty: float = 1.0  # 1.0 = off; >1 makes tokens already in the *completion* less likely
    no_repeat_ngram_size: int = 0  # 0 = off; n>0 forbids repeating any n-gram of the completion
    chat: bool = False  # each prompt is one user turn, sent through the model's chat template


@dataclass
class Completion:
    """One completion, with token counts for throughput reporting."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    meta: dict = field(default_factory=dict)  # finish_reason: "eos" | "stop" | "length"


class LM(Protocol):
    """A backend: prompts in, completions (or log-probabilities) out, reproducible for a given seed."""

    name: str
    has_chat_template: bool  # whether GenerationParams(chat=True) / score(chat=True) are meaningful

    def generate(self, prompts: list[str], params: GenerationParams | Sequence[GenerationParams],
                 seed: int) -> list[Completion]:
        """Return one completion per prompt, in order. Same prompts + params + seed -> same texts.

        `params` is one setting for every prompt, or one per prompt: prompts of several stages
        (instance prompts and chat answers, say) then share one queue.
        """
        ...

    def environment(self) -> dict:
        """What decides the numerics (device, dtype, batch size, versions, model revision), for provenance."""
        ...

    def score(self, prompts: list[str], continuations: list[str], chat: bool = False) -> list[float]:
        """Sum of log-probabilities of each continuation right after its prompt (natural log).

        With chat=True each prompt is a user turn and the continuation is the start of the reply.
        """
        ...


def per_prompt(params: GenerationParams | Sequence[GenerationParams], n: int) -> list[GenerationParams]:
    """One GenerationParams per prompt: the one given for all, or the list given (checked for length)."""
    if isinstance(params, GenerationParams):
        return [params] * n
    params = list(params)
    if len(params) != n or not all(isinstance(p, GenerationParams) for p in params):
        raise ValueError(f"generate needs one GenerationParams, or one per prompt ({n}); got {len(params)}")
    return params


def decode_whole_chars(tokenizer, ids: list[int]) -> str:
    """Decode token ids, leaving out trailing tokens that hold only the first bytes of a character.

    A byte-level tokenizer spends 2-3 tokens on one CJK character; a completion cut by max_new_tokens (or
    a stop) can end between them, and decoding would give U+FFFD. As transformers' TextStreamer does, a
    trailing U+FFFD means "character not finished": at most 3 tokens (a UTF-8 character is <= 4 bytes)
    are dropped. If the text still ends in U+FFFD the tokens themselves were invalid; it is kept, and the
    broken_characters filter drops it.
    """
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for drop in range(1, min(3, len(ids)) + 1):
        if not text.endswith("\ufffd"):
            break
        shorter = tokenizer.decode(ids[:len(ids) - drop], skip_special_tokens=True)
        if not shorter.endswith("\ufffd"):
            return shorter
    return text


def apply_stop(text: str, stop: tuple[str, ...]) -> str:
    """Cut `text` at the earliest stop string (stop strings are excluded)."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if s and 0 <= i < cut:
            cut = i
    return text[:cut]
