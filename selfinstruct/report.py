"""Read-only views of a run directory: status text and exports. Reads only the store and records."""

from __future__ import annotations

import sys
from collections import Counter

from selfinstruct.audit import status_lines as audit_status_lines
from selfinstruct.errors import SelfInstructError
from selfinstruct.records import Task, dumps
from selfinstruct.store import RunStore, write_output

FORMATS = ("jsonl", "alpaca", "messages")


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "n/a"


def status_text(store: RunStore) -> str:
    p = store.progress
    t = p["totals"]
    tasks = store.tasks()
    lines = [f"run: {store.root}"]
    cursor = p["cursor"]
    if p.get("stop_reason"):
        lines.append(f"state: finished: {p['stop_reason']}")
    else:
        lines.append(f"state: not finished; next batch is round {cursor['round']} batch {cursor['batch']} "
                     f"(resume with: selfinstruct resume {store.root})")
    lines.append(f"accepted: {t['accepted']} of {t['candidates']} candidates ({_pct(t['accepted'], t['candidates'])}); "
                 f"rejected: {t['rejected']}")
    if t["lm_seconds"]:
        lines.append(f"LM: {t['prompt_tokens']} prompt + {t['completion_tokens']} completion tokens in "
                     f"{t['lm_seconds']:.1f}s ({t['completion_tokens'] / t['lm_seconds']:.1f} generated tokens/s)")
    by_stage: Counter = Counter()
    for stats in p["rounds"].values():
        by_stage.update(stats["rejected"])
    if by_stage:
        lines.append("rejected by stage:reason: " + ", ".join(f"{k} {v}" for k, v in by_stage.most_common()))
    lines.append("per round:")
    for r, stats in sorted(p["rounds"].items(), key=lambda kv: int(kv[0])):
        rej = ", ".join(f"{k} {v}" for k, v in sorted(stats["rejected"].items())) or "none"
        lines.append(f"  round {r}: human fraction {stats['human_fraction']:.2f}, accepted {stats['accepted']} "
                     f"of {stats['candidates']} ({_pct(stats['accepted'], stats['candidates'])}); rejected: {rej}")
    if tasks:
        humans = sum(len(x.meta.get("human_examples", [])) for x in tasks)
        machines = sum(len(x.meta.get("machine_examples", [])) for x in tasks)
        lines.append(f"prompt examples behind accepted tasks: human {humans} ({_pct(humans, humans + machines)}), "
                     f"machine {machines} ({_pct(machines, humans + machines)})")
        depths = Counter(x.depth for x in tasks)
        lines.append("lineage depth: " + ", ".join(f"{d}: {n}" for d, n in sorted(depths.items())))
        cls = sum(bool(x.is_classification) for x in tasks)
        n_inst = sum(len(x.instances) for x in tasks)
        lines.append(f"classification tasks: {cls}; instances: {n_inst} ({n_inst / len(tasks):.2f} per task)")
    lines += audit_status_lines(store.root)
    return "\n".join(lines)


def export_rows(tasks: list[Task], fmt: str) -> list[dict]:
    if fmt == "jsonl":
        return [t.to_json() for t in tasks]
    rows = []
    for t in tasks:
        for inst in t.instances:
            if fmt == "alpaca":
                rows.append({"instruction": t.instruction, "input": inst.input, "output": inst.output})
            else:
                user = t.instruction + (f"\n\n{inst.input}" if inst.input else "")
                rows.append({"messages": [{"role": "user", "content": user},
                                          {"role": "assistant", "content": inst.output}]})
    return rows


def export(store: RunStore, fmt: str, out: str) -> int:
    """Write the run's accepted tasks as `fmt` to `out` ('-' = stdout), atomically; return rows written."""
    if fmt not in FORMATS:
        raise SelfInstructError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    rows = export_rows(store.tasks(), fmt)
    text = "".join(dumps(r) for r in rows)
    if out == "-":
        sys.stdout.write(text)
        return len(rows)
    write_output(out, text)  # refuses a directory, a missing one, and the run's own files
    return len(rows)
