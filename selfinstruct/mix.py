"""The human/model mix: how many few-shot examples are human seeds, per round, and sampling them."""

from __future__ import annotations

import hashlib
import random

from selfinstruct.records import Task


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from (job seed, round, batch, purpose); independent of PYTHONHASHSEED."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def schedule_error(schedule: object) -> str | None:
    """Why `schedule` is malformed, or None. Formats: null, [f1, f2, ...], {start, end, rounds}."""
    if schedule is None:
        return None
    if isinstance(schedule, list):
        if not schedule:
            return "a list of human fractions must not be empty"
        bad = [v for v in schedule if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1]
        return f"every value must be a number in [0, 1], got {bad[0]!r}" if bad else None
    if isinstance(schedule, dict):
        if set(schedule) != {"start", "end", "rounds"}:
            return f"a linear schedule needs exactly keys start, end, rounds; got {', '.join(map(str, schedule))}"
        for key in ("start", "end"):
            v = schedule[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                return f"{key} must be a number in [0, 1], got {v!r}"
        r = schedule["rounds"]
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            return f"rounds must be an integer >= 1, got {r!r}"
        return None
    return f"expected null, a list of fractions, or {{start, end, rounds}}; got {schedule!r}"


def human_fraction(default: float, schedule: object, round_no: int) -> float:
    """Share of human examples in round `round_no` (1-based)."""
    if schedule is None:
        return default
    if isinstance(schedule, list):
        return float(schedule[min(round_no, len(schedule)) - 1])
    start, end, rounds = float(schedule["start"]), float(schedule["end"]), schedule["rounds"]
    if rounds == 1 or round_no >= rounds:
        return end if round_no >= rounds else start
    return start + (end - start) * (round_no - 1) / (rounds - 1)


def split(k: int, fraction: float, machine_available: int) -> tuple[int, int]:
    """(human, machine) example counts: machine share as asked, topped up with humans while the pool is small."""
    n_machine = min(k - round(k * fraction), machine_available)
    return k - n_machine, n_machine


def sample_examples(rng: random.Random, humans: list[Task], machines: list[Task], k: int,
                    fraction: float) -> list[Task]:
    """k distinct examples (fewer only if the whole pool is smaller), shuffled."""
    n_human, _ = split(k, fraction, len(machines))
    n_human = min(n_human, len(humans))
    n_machine = min(k - n_human, len(machines))  # too few humans: top up with machine tasks
    chosen = rng.sample(humans, n_human) + rng.sample(machines, n_machine)
    rng.shuffle(chosen)
    return chosen
