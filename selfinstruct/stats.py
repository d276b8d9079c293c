"""Numbers about a run's data, read from its directory only: the views `report` draws and `sweep` compares.

Nothing here loads a model. Seeds are read from the file the run's saved config names (to score
accepted instructions against them); when that file is gone the seed-based numbers are None.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from selfinstruct import audit as A
from selfinstruct import config as C
from selfinstruct.errors import SelfInstructError
from selfinstruct.filters import _units
from selfinstruct.language import Language, count_units
from selfinstruct.language import load as load_language
from selfinstruct.records import Task, load_seeds
from selfinstruct.store import RunStore

FIELDS = ("instruction", "input", "output")


@dataclass
class RunData:
    """One run directory, read once: its store, saved config, language, tasks, rejected rows and seeds."""

    root: Path
    store: RunStore
    cfg: C.Config
    lang: Language
    tasks: list[Task]
    rejected: list[dict]
    seeds: list[Task] | None  # None: the seed file is gone or changed since the run started
    seeds_note: str = ""  # why seeds is None
    audit: dict[str, dict] = field(default_factory=dict)  # task id -> latest audit answer


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory (read-only, no lock: a job may be running in it)."""
    from selfinstruct.job import seeds_digest

    root = Path(run_dir)
    store = RunStore.open(root, lock=False)
    cfg = C.load_text(store.saved_config_text(), str(root / "config.yaml"))
    seeds, note = None, ""
    path = Path(cfg.seed_tasks)
    if not path.is_file():
        note = f"seed file {path} not found"
    elif store.progress.get("seeds_digest") not in (None, seeds_digest(str(path))):
        note = f"seed file {path} changed since the run started"
    else:
        try:
            seeds = load_seeds(path)
        except SelfInstructError as e:
            note = str(e)
    try:
        answers = A.latest(A.read_log(root / A.AUDIT).rows)
    except A.AuditError:  # a damaged audit must not hide the rest of the report
        answers = {}
    return RunData(root, store, cfg, load_language(cfg.language, cfg.prompt.templates), store.tasks(),
                   store.rejected(), seeds, note, answers)


# ---- similarity ----

def rouge_to_seeds(data: RunData) -> list[float] | None:
    """Highest ROUGE-L F1 of each accepted instruction against the seed instructions, exactly (novelty index)."""
    from selfinstruct.novelty import NoveltyIndex

    if data.seeds is None:
        return None
    index = NoveltyIndex(data.cfg.novelty.threshold, data.cfg.novelty.tokenizer)
    index.add_many((s.instruction, s.id) for s in data.seeds)
    return [index.check(t.instruction).score for t in data.tasks]


def rouge_to_pool(tasks: list[Task]) -> list[float]:
    """Highest ROUGE-L F1 against the pool when each task was accepted (recorded in meta.nearest)."""
    return [float((t.meta.get("nearest") or {}).get("score") or 0.0) for t in tasks]


# ---- shape of the data ----

def lengths(tasks: list[Task], lang: Language) -> dict[str, list[int]]:
    """Length of every instruction, and of every instance's input and output, in the language's unit."""
    return {"instruction": [count_units(t.instruction, lang) for t in tasks],
            "input": [count_units(i.input, lang) for t in tasks for i in t.instances],
            "output": [count_units(i.output, lang) for t in tasks for i in t.instances]}


def distinct(texts: list[str], n: int, lang: Language) -> float:
    """Distinct-n: unique n-grams over all n-grams of the texts (word units, CJK characters)."""
    grams = [tuple(w[i:i + n]) for t in texts for w in [_units(t, lang)] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def empty_input(t: Task) -> bool:
    """A task whose every instance has an empty input (it needs none)."""
    return all(not i.input.strip() for i in t.instances)


def funnel(progress: dict) -> list[dict]:
    """Per round: generated candidates, rejections by stage:reason, accepted, human fraction."""
    rounds = sorted(progress["rounds"].items(), key=lambda kv: int(kv[0]))
    return [{"round": int(r), "generated": s["candidates"], "accepted": s["accepted"],
             "rejected": dict(s["rejected"]), "human_fraction": s["human_fraction"]} for r, s in rounds]


def mix_by_round(tasks: list[Task]) -> list[dict]:
    """Per round of accepted tasks: human share of the prompt examples behind them, and lineage depths."""
    by: dict[int, list[Task]] = {}
    for t in tasks:
        by.setdefault(int(t.meta.get("round", 0)), []).append(t)
    out = []
    for r, ts in sorted(by.items()):
        h = sum(len(t.meta.get("human_examples", [])) for t in ts)
        m = sum(len(t.meta.get("machine_examples", [])) for t in ts)
        depths = [t.depth for t in ts]
        out.append({"round": r, "tasks": len(ts), "human_share": h / (h + m) if h + m else None,
                    "depth_mean": sum(depths) / len(depths), "depths": dict(sorted(Counter(depths).items()))})
    return out


# ---- leading verbs ----
# The paper parsed each instruction with the Berkeley Neural Parser and took the verb nearest the root and its
# first direct object. A parser needs a model download, so this is a heuristic over the first words, for
# instructions, which are nearly always imperatives: skip a polite or framing opener ("Please", "Given X, ..."),
# take the first word as the verb unless it opens a question or a statement, and take as its object the last
# word of the noun phrase that follows (English noun phrases end in their head: "a short poem" -> poem), the
# phrase ending at a preposition, conjunction, wh-word or punctuation. English only.
_NOT_VERBS = frozenset(
    "what how why who whom whose when where which is are was were am do does did can could would should will "
    "shall may might must have has had i you he she it we they my your our their this that these those there "
    "the a an if in on at for of to by with from as given based using according imagine suppose assume".split())
_OPENERS = ("please ", "kindly ", "now ", "then ")
_FRAMES = ("given ", "based on ", "using ", "according to ", "for ", "in ", "if ", "from ", "with ")
_PHRASE_END = frozenset(
    "of for about to in on at by with from into as that which who whom whose what why how when where whether if "
    "and or but so then than while because using based given between within without over under".split())
_WH = frozenset("what how why who whom whose when where which whether".split())
_DETERMINERS = frozenset("a an the this that these those each every all some any its his her their my your our "
                         "one two three four five six seven eight nine ten few several".split())
_PARTICLES = frozenset("up out down".split())
_SKIP_OBJECT = frozenset("me us him her them it you yourself".split())


def verb_object(instruction: str) -> tuple[str | None, str | None]:
    """(leading verb, its object's head word) of an imperative instruction, or (None, None) for other shapes."""
    text = instruction.strip().lower()
    for opener in _OPENERS:
        text = text.removeprefix(opener)
    frame, comma, rest = text.partition(",")
    if text.startswith(_FRAMES) and comma and not _WH.intersection(frame.split()):
        text = rest.strip()  # "Given a list of numbers, find the largest" -> find; not "In which language, ..."
    words = re.findall(r"[a-z0-9][a-z0-9'-]*|[^\sa-z0-9]", text)
    if (not words or not words[0][0].isalpha() or words[0] in _NOT_VERBS or "'" in words[0]
            or words[0].endswith(("ing", "ed"))):
        return None, None
    verb, rest = words[0], words[1:]
    if rest[:1] and rest[0] in _PARTICLES:  # "come up with", "pick out", "sum up"
        verb, rest = f"{verb} {rest[0]}", rest[1:]
        rest = rest[1:] if rest[:1] == ["with"] else rest
    phrase: list[str] = []
    for i, w in enumerate(rest):
        if w == "," and len([x for x in phrase if x not in _DETERMINERS]) == 1 and i + 1 < len(rest) \
                and rest[i + 1][0].isalpha() and rest[i + 1] not in _PHRASE_END:
            continue  # "a short, informative title": adjectives in a row
        if w[0].isdigit():
            continue  # "a 3-day trip"
        if not w[0].isalpha() or w in _PHRASE_END:
            break
        if w.endswith(("ed", "ing")) and any(x not in _DETERMINERS for x in phrase):
            break  # a participle after the head modifies it: "every name mentioned", but "the following text"
        phrase.append(w.removesuffix("'s"))
    heads = [w for w in phrase if w not in _SKIP_OBJECT and w not in _DETERMINERS]
    return verb, heads[-1] if heads else None


def leading_verbs(tasks: list[Task], lang: Language) -> tuple[Counter, Counter, int] | None:
    """(verb counts, (verb, object) counts, tasks without a verb) ; None for a language other than English."""
    if lang.primary != "en":
        return None
    verbs: Counter = Counter()
    pairs: Counter = Counter()
    none = 0
    for t in tasks:
        v, o = verb_object(t.instruction)
        if v is None:
            none += 1
            continue
        verbs[v] += 1
        if o:
            pairs[(v, o)] += 1
    return verbs, pairs, none


# ---- audit and summary ----

def audit_rates(answers: dict[str, dict]) -> dict[str, tuple[int, int]]:
    """(yes, graded) per audit question and for all three, from the latest answer per task."""
    n = len(answers)
    return {k: (sum(bool(a[k]) for a in answers.values()), n) for k in (*A.KEYS, "all")}


def _mean(xs: list[float] | None) -> float | None:
    return sum(xs) / len(xs) if xs else None


# The columns `sweep` compares, in order: (key, header, format)
SUMMARY_COLUMNS = (
    ("accepted", "accepted", "{:d}"), ("candidates", "candidates", "{:d}"),
    ("acceptance", "acceptance", "{:.1%}"),
    ("rouge_seeds", "ROUGE-L to seeds", "{:.3f}"), ("rouge_pool", "ROUGE-L to pool", "{:.3f}"),
    ("distinct_1", "distinct-1", "{:.3f}"), ("distinct_2", "distinct-2", "{:.3f}"),
    ("depth", "lineage depth", "{:.2f}"), ("human_share", "human share of examples", "{:.1%}"),
    ("len_instruction", "instruction length", "{:.1f}"), ("len_input", "input length", "{:.1f}"),
    ("len_output", "output length", "{:.1f}"),
    ("classification", "classification", "{:.1%}"), ("empty_input", "empty input", "{:.1%}"),
    ("tokens_per_task", "generated tokens per task", "{:.0f}"),
    ("audit_instruction", "audit: valid instruction", "{:.1%}"), ("audit_input", "audit: appropriate input", "{:.1%}"),
    ("audit_output", "audit: acceptable output", "{:.1%}"), ("audit_all", "audit: all valid", "{:.1%}"),
)


def summary(data: RunData) -> dict[str, object]:
    """One row of numbers per run (None where it cannot be computed); keys as in SUMMARY_COLUMNS."""
    tasks, t = data.tasks, data.store.progress["totals"]
    n = len(tasks)
    lens = lengths(tasks, data.lang)
    h = sum(len(x.meta.get("human_examples", [])) for x in tasks)
    m = sum(len(x.meta.get("machine_examples", [])) for x in tasks)
    instructions = [x.instruction for x in tasks]
    row: dict[str, object] = {
        "accepted": n, "candidates": t["candidates"],
        "acceptance": n / t["candidates"] if t["candidates"] else None,
        "rouge_seeds": _mean(rouge_to_seeds(data)), "rouge_pool": _mean(rouge_to_pool(tasks)),
        "distinct_1": distinct(instructions, 1, data.lang) if n else None,
        "distinct_2": distinct(instructions, 2, data.lang) if n else None,
        "depth": _mean([x.depth for x in tasks]), "human_share": h / (h + m) if h + m else None,
        "len_instruction": _mean(lens["instruction"]), "len_input": _mean(lens["input"]),
        "len_output": _mean(lens["output"]),
        "classification": sum(bool(x.is_classification) for x in tasks) / n if n else None,
        "empty_input": sum(empty_input(x) for x in tasks) / n if n else None,
        "tokens_per_task": t["completion_tokens"] / n if n else None,
    }
    rates = audit_rates(data.audit) if data.audit else {}
    for k in (*A.KEYS, "all"):
        yes, graded = rates.get(k, (0, 0))
        row[f"audit_{k}"] = yes / graded if graded else None
    return row


def fmt(value: object, spec: str) -> str:
    """A summary value as table text; '' for None."""
    if value is None:
        return ""
    return spec.format(value)
