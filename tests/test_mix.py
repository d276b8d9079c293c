"""The human/model mix: seeds, per-round human fraction, example counts and sampling."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfinstruct import mix as M
from selfinstruct.records import Task

ROOT = Path(__file__).resolve().parent.parent


def pool(n: int, origin: str) -> list[Task]:
    return [Task(id=f"{origin[0]}{i}", instruction=f"{origin} task {i}", origin=origin) for i in range(n)]


HUMANS, MACHINES = pool(20, "human"), pool(30, "machine")


# ---- derive_seed ----

def test_derive_seed_stable_and_in_range():
    a = M.derive_seed(0, 1, 2, "examples")
    assert a == M.derive_seed(0, 1, 2, "examples")
    assert 0 <= a < 2 ** 63
    # the documented recipe: sha256 of the ':'-joined parts, first 8 bytes, top 63 bits
    expected = int.from_bytes(hashlib.sha256(b"0:1:2:examples").digest()[:8], "big") >> 1
    assert a == expected


def test_derive_seed_independent_of_hash_seed():
    code = "from selfinstruct.mix import derive_seed; print(derive_seed(7, 3, 1, 'instructions'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                           env={**os.environ, "PYTHONHASHSEED": h}).stdout.strip() for h in ("1", "2")}
    assert outs == {str(M.derive_seed(7, 3, 1, "instructions"))}


def test_derive_seed_distinct():
    seeds = {M.derive_seed(job, r, b, purpose) for job in range(3) for r in range(1, 5) for b in range(4)
             for purpose in ("examples", "instructions", "classify", "instances", "demos")}
    assert len(seeds) == 3 * 4 * 4 * 5
    assert M.derive_seed(1, 23) != M.derive_seed(12, 3)  # parts are separated, not concatenated
    assert M.derive_seed(0, 1, 2) != M.derive_seed(0, 2, 1)


# ---- schedule and human_fraction ----

def test_no_schedule_uses_default():
    assert [M.human_fraction(0.75, None, r) for r in (1, 2, 50)] == [0.75, 0.75, 0.75]


def test_list_schedule_per_round_last_repeats():
    sched = [1.0, 0.5, 0.25]
    assert [M.human_fraction(0.9, sched, r) for r in range(1, 7)] == [1.0, 0.5, 0.25, 0.25, 0.25, 0.25]
    assert M.human_fraction(0.9, [0], 1) == 0.0 and isinstance(M.human_fraction(0.9, [0], 1), float)


def test_linear_schedule_endpoints_and_middle():
    sched = {"start": 1.0, "end": 0.25, "rounds": 4}
    got = [M.human_fraction(0.5, sched, r) for r in range(1, 8)]
    assert got[0] == 1.0  # round 1 = start
    assert got[3:] == [0.25] * 4  # round `rounds` and later = end
    assert got[1:3] == pytest.approx([0.75, 0.5])  # evenly spaced in between


def test_linear_schedule_rising():
    sched = {"start": 0.0, "end": 1.0, "rounds": 3}
    assert [M.human_fraction(0.5, sched, r) for r in (1, 2, 3, 4)] == pytest.approx([0.0, 0.5, 1.0, 1.0])


def test_linear_schedule_single_round_is_end():
    assert M.human_fraction(0.5, {"start": 1.0, "end": 0.2, "rounds": 1}, 1) == 0.2
    assert M.human_fraction(0.5, {"start": 1.0, "end": 0.2, "rounds": 1}, 9) == 0.2


@settings(max_examples=100, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1), st.integers(1, 30))
def test_linear_schedule_monotone_and_bounded(start, end, rounds):
    sched = {"start": start, "end": end, "rounds": rounds}
    assert M.schedule_error(sched) is None
    vals = [M.human_fraction(0.5, sched, r) for r in range(1, rounds + 5)]
    lo, hi = min(start, end), max(start, end)
    assert all(lo - 1e-12 <= v <= hi + 1e-12 for v in vals)
    steps = [b - a for a, b in zip(vals, vals[1:])]
    assert all(s <= 1e-12 for s in steps) if end <= start else all(s >= -1e-12 for s in steps)
    assert vals[rounds - 1:] == [end] * 5
    if rounds > 1:
        assert vals[0] == start


@pytest.mark.parametrize("schedule", [None, [0.5], [1, 0.0, 0.25], {"start": 1, "end": 0, "rounds": 2}])
def test_schedule_error_accepts_valid(schedule):
    assert M.schedule_error(schedule) is None


@pytest.mark.parametrize("schedule", [[], [2], [-0.1], ["x"], [None], [False], {"start": 1, "end": 0},
                                      {"start": 1, "end": 0, "rounds": 0}, {"start": "1", "end": 0, "rounds": 2},
                                      {"start": 1, "end": 0, "rounds": 2.0}, "linear", 0.5, True])
def test_schedule_error_rejects_malformed(schedule):
    msg = M.schedule_error(schedule)
    assert isinstance(msg, str) and msg


# ---- split ----

@pytest.mark.parametrize("k, fraction, available, expected", [
    (8, 0.75, 100, (6, 2)),  # Self-Instruct: 6 human + 2 machine
    (8, 0.75, 1, (7, 1)),  # small machine pool: top up with humans
    (8, 0.75, 0, (8, 0)),
    (8, 0.0, 100, (0, 8)),
    (8, 0.0, 3, (5, 3)),
    (8, 1.0, 100, (8, 0)),
    (8, 0.5, 100, (4, 4)),
    (4, 0.25, 100, (1, 3)),
    (1, 0.0, 5, (0, 1)),
])
def test_split(k, fraction, available, expected):
    assert M.split(k, fraction, available) == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 16), st.floats(0, 1), st.integers(0, 40))
def test_split_invariants(k, fraction, available):
    h, m = M.split(k, fraction, available)
    assert h + m == k and h >= 0 and 0 <= m <= available
    assert abs(m - k * (1 - fraction)) <= 0.5 + 1e-9 or m == available  # as asked, unless the pool is short
    assert M.split(k, fraction, available + 1)[1] >= m  # a bigger pool never gives fewer machine examples


# ---- sample_examples ----

def counts(chosen: list[Task]) -> tuple[int, int]:
    return sum(t.origin == "human" for t in chosen), sum(t.origin == "machine" for t in chosen)


@pytest.mark.parametrize("k, fraction, n_machine", [(8, 0.75, 30), (8, 0.75, 1), (8, 0.5, 30), (6, 0.0, 30),
                                                    (6, 1.0, 30), (8, 0.0, 3), (8, 0.3, 0)])
def test_sample_examples_counts_match_split(k, fraction, n_machine):
    chosen = M.sample_examples(random.Random(1), HUMANS, MACHINES[:n_machine], k, fraction)
    assert counts(chosen) == M.split(k, fraction, n_machine)
    assert len({t.id for t in chosen}) == len(chosen) == k


def test_fraction_zero_with_big_machine_pool_is_all_machine():
    chosen = M.sample_examples(random.Random(3), HUMANS, MACHINES, 8, 0.0)
    assert counts(chosen) == (0, 8)


def test_fraction_one_is_all_human():
    chosen = M.sample_examples(random.Random(3), HUMANS, MACHINES, 8, 1.0)
    assert counts(chosen) == (8, 0)


def test_sample_examples_deterministic_for_a_seeded_rng():
    a = M.sample_examples(random.Random(M.derive_seed(0, 1, 0, "examples")), HUMANS, MACHINES, 8, 0.75)
    b = M.sample_examples(random.Random(M.derive_seed(0, 1, 0, "examples")), HUMANS, MACHINES, 8, 0.75)
    assert [t.id for t in a] == [t.id for t in b]
    others = {tuple(t.id for t in M.sample_examples(random.Random(s), HUMANS, MACHINES, 8, 0.75)) for s in range(10)}
    assert len(others) > 1  # different seeds give different prompts


def test_sample_examples_does_not_mutate_pools():
    humans, machines = list(HUMANS), list(MACHINES)
    M.sample_examples(random.Random(0), humans, machines, 8, 0.5)
    assert humans == HUMANS and machines == MACHINES


def test_few_humans_are_topped_up_with_machines():
    chosen = M.sample_examples(random.Random(0), HUMANS[:2], MACHINES, 8, 0.75)
    assert counts(chosen) == (2, 6)


def test_whole_pool_smaller_than_k():
    chosen = M.sample_examples(random.Random(0), HUMANS[:3], MACHINES[:2], 8, 0.75)
    assert sorted(t.id for t in chosen) == sorted(t.id for t in HUMANS[:3] + MACHINES[:2])


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 12), st.integers(0, 12), st.integers(1, 10), st.floats(0, 1), st.integers(0, 2 ** 32))
def test_sample_examples_invariants(n_h, n_m, k, fraction, seed):
    humans, machines = HUMANS[:n_h], MACHINES[:n_m]
    chosen = M.sample_examples(random.Random(seed), humans, machines, k, fraction)
    assert len({t.id for t in chosen}) == len(chosen) == min(k, n_h + n_m)
    h, m = counts(chosen)
    want_h, want_m = M.split(k, fraction, n_m)
    if n_h >= want_h:
        assert (h, m) == (want_h, want_m)
    else:
        assert h == n_h  # every human used before more machine tasks are taken
    assert chosen == M.sample_examples(random.Random(seed), humans, machines, k, fraction)
