"""Cheap automatic quality signals for runs, side by side: a proxy between hand audits, not a substitute.

Usage: python benchmarks/quality.py RUN_DIR [RUN_DIR ...]

For each run's accepted tasks: model seconds per accepted task, the share each issue-6 filter
would flag today (whether or not the run used it), the share of questions asking for a number and
of tasks whose answers were checked for self-consistency, the share of classification tasks and
of empty inputs, distinct-1/2 of the instructions (unique word uni/bigrams over all of them), the
mean highest ROUGE-L of an instruction against the run's seed tasks, mean output length in words,
and the hand-audit rates when the run has an audit.jsonl. Reads the run directories only; loads no model.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfinstruct import audit as A  # noqa: E402
from selfinstruct import config as C  # noqa: E402
from selfinstruct import filters as F  # noqa: E402
from selfinstruct.language import load as load_language  # noqa: E402
from selfinstruct.novelty import NoveltyIndex  # noqa: E402
from selfinstruct.records import load_seeds  # noqa: E402
from selfinstruct.store import RunStore  # noqa: E402

INSTRUCTION_FLAGS = ("not_a_task", "truncated", "repeated_phrase", "leaked_markers")
# foreign_label is left out: it needs the demonstrations of each instance prompt, which a run does not keep.
INSTANCE_FLAGS = ("marker_only", "looping", "repeated_phrase", "leaked_markers", "missing_input", "wrong_arithmetic")


def distinct(texts: list[str], n: int) -> float:
    grams = [tuple(w[i:i + n]) for t in texts for w in [F._words(t)] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def signals(run_dir: str) -> dict[str, str]:
    store = RunStore.open(run_dir, lock=False)
    cfg = C.load_text(store.saved_config_text(), run_dir)
    tasks = store.tasks()
    n = len(tasks) or 1
    fcfg = C.FilterConfig()  # today's defaults, so runs made before a filter existed are judged alike
    lang = load_language(cfg.language, cfg.prompt.templates)
    flags: Counter = Counter()
    for t in tasks:
        for name in INSTRUCTION_FLAGS:
            flags[f"instr:{name}"] += bool(F.INSTRUCTION_FILTERS[name](t.instruction, fcfg))
        ctx = F.Context(field="instance", instruction=t.instruction, classification=bool(t.is_classification),
                        lang=lang)
        for name in INSTANCE_FLAGS:
            one = C.FilterConfig(instance=[name])
            flags[f"inst:{name}"] += any(F.instance_reason(i, one, ctx) for i in t.instances)
    index = NoveltyIndex(cfg.novelty.threshold, cfg.novelty.tokenizer)
    index.add_many((s.instruction, s.id) for s in load_seeds(cfg.seed_tasks))
    outputs = [i.output for t in tasks for i in t.instances]
    totals = store.progress["totals"]
    row = {"tasks": str(len(tasks)), "acceptance": f"{len(tasks) / max(totals['candidates'], 1):.1%}",
           "model s / accepted task": f"{totals['lm_seconds'] / max(len(tasks), 1):.1f}"}
    row |= {k: f"{v / n:.0%}" for k, v in sorted(flags.items())}
    row["asks a number"] = f"{sum(bool(lang.re['asks_number'].search(t.instruction)) for t in tasks) / n:.0%}"
    row["checked for consistency"] = f"{sum('consistency' in t.meta for t in tasks) / n:.0%}"
    row["classification"] = f"{sum(bool(t.is_classification) for t in tasks) / n:.0%}"
    row["empty input"] = f"{sum(not i.input for t in tasks for i in t.instances) / max(len(outputs), 1):.0%}"
    row["distinct-1"] = f"{distinct([t.instruction for t in tasks], 1):.3f}"
    row["distinct-2"] = f"{distinct([t.instruction for t in tasks], 2):.3f}"
    row["ROUGE-L to seeds"] = f"{sum(index.check(t.instruction).score for t in tasks) / n:.3f}"
    row["output words"] = f"{sum(len(o.split()) for o in outputs) / max(len(outputs), 1):.1f}"
    answers = A.latest(A.read_log(Path(run_dir) / A.AUDIT).rows)
    if answers:
        for key in ("instruction", "input", "output", "all"):
            k = sum(a[key] for a in answers.values())
            row[f"audit {key}"] = f"{k}/{len(answers)} = {k / len(answers):.0%}"
    return row


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    cols = [signals(d) for d in argv]
    keys = list(dict.fromkeys(k for c in cols for k in c))
    print("| signal | " + " | ".join(Path(d).name for d in argv) + " |")
    print("|---|" + "---|" * len(argv))
    for k in keys:
        print(f"| {k} | " + " | ".join(c.get(k, "") for c in cols) + " |")
    return 0


if __name__ == "__main__":
    from selfinstruct.errors import SelfInstructError

    try:
        sys.exit(main(sys.argv[1:]))
    except SelfInstructError as e:  # a run dir or its seed file is missing: one line, not a traceback
        sys.exit(f"Error: {e}")
