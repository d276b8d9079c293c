"""Read-only views of a run directory: `status`, its summary numbers, and `status --watch`. Reads only the store."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, TextIO

from selfinstruct.audit import status_lines as audit_status_lines
from selfinstruct.errors import RunDirError
from selfinstruct.records import Task
from selfinstruct.store import CONFIG, PROGRESS, RunStore


def pct(a: int, b: int) -> str:
    """a / b as a percentage with one decimal, or n/a."""
    return f"{100 * a / b:.1f}%" if b else "n/a"


def rejected_by_reason(progress: dict) -> Counter:
    """Rejections over all rounds by "stage:reason" (the filter statistics)."""
    by: Counter = Counter()
    for stats in progress["rounds"].values():
        by.update(stats["rejected"])
    return by


def mix_summary(tasks: list[Task]) -> dict:
    """Where the accepted tasks sit on the human-to-model spectrum: prompt examples and lineage depth."""
    humans = sum(len(x.meta.get("human_examples", [])) for x in tasks)
    machines = sum(len(x.meta.get("machine_examples", [])) for x in tasks)
    return {"human_examples": humans, "machine_examples": machines,
            "human_share": humans / (humans + machines) if humans + machines else None,
            "depths": dict(sorted(Counter(x.depth for x in tasks).items())),
            "classification": sum(bool(x.is_classification) for x in tasks),
            "instances": sum(len(x.instances) for x in tasks)}


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
    lines.append(f"accepted: {t['accepted']} of {t['candidates']} candidates ({pct(t['accepted'], t['candidates'])}); "
                 f"rejected: {t['rejected']}")
    if t["lm_seconds"]:
        lines.append(f"LM: {t['prompt_tokens']} prompt + {t['completion_tokens']} completion tokens in "
                     f"{t['lm_seconds']:.1f}s ({t['completion_tokens'] / t['lm_seconds']:.1f} generated tokens/s)")
    by_stage = rejected_by_reason(p)
    if by_stage:
        lines.append("rejected by stage:reason: " + ", ".join(f"{k} {v}" for k, v in by_stage.most_common()))
    lines.append("per round:")
    for r, stats in sorted(p["rounds"].items(), key=lambda kv: int(kv[0])):
        rej = ", ".join(f"{k} {v}" for k, v in sorted(stats["rejected"].items())) or "none"
        lines.append(f"  round {r}: human fraction {stats['human_fraction']:.2f}, accepted {stats['accepted']} "
                     f"of {stats['candidates']} ({pct(stats['accepted'], stats['candidates'])}); rejected: {rej}")
    if tasks:
        m = mix_summary(tasks)
        humans, machines = m["human_examples"], m["machine_examples"]
        lines.append(f"prompt examples behind accepted tasks: human {humans} ({pct(humans, humans + machines)}), "
                     f"machine {machines} ({pct(machines, humans + machines)})")
        lines.append("lineage depth: " + ", ".join(f"{d}: {n}" for d, n in m["depths"].items()))
        n_inst = m["instances"]
        lines.append(f"classification tasks: {m['classification']}; instances: {n_inst} "
                     f"({n_inst / len(tasks):.2f} per task)")
    lines += audit_status_lines(store.root)
    return "\n".join(lines)


# ---- status --watch ----

# A progress.json that cannot be read this many refreshes in a row is damage, not a replacement caught mid-read.
WATCH_RETRIES = 3
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen (a terminal only)


def _limits(root: Path) -> dict:
    """target / max_rounds / stall limit from the saved config.yaml; {} while it cannot be read."""
    import yaml

    try:
        data = yaml.safe_load((root / CONFIG).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    if not isinstance(data, dict):
        return {}
    stall = data.get("stall") if isinstance(data.get("stall"), dict) else {}
    return {"target": data.get("target"), "max_rounds": data.get("max_rounds"),
            "stall": stall.get("rounds_without_accept")}


def finished(progress: dict, limits: dict) -> bool:
    """The run's final marker (stop_reason, committed after the last batch) is set and still true.

    A resume with raised limits saves config.yaml before its first commit, while progress.json still
    holds the old stop_reason: checking the marker against the saved limits keeps watching then.
    """
    if not progress.get("stop_reason"):
        return False
    target, max_rounds, stall = limits.get("target"), limits.get("max_rounds"), limits.get("stall")
    if not all(isinstance(v, int) for v in (target, max_rounds, stall)):
        return True  # no readable limits: trust the marker
    return (progress["totals"]["accepted"] >= target or progress["cursor"]["round"] > max_rounds
            or progress["rounds_without_accept"] >= stall)


def watch_view(root: Path, progress: dict | None, limits: dict, now: float, note: str = "") -> list[str]:
    """The compact view: state, acceptance against the target, top rejection reasons, LM speed."""
    if progress is None:
        wait = note or f"waiting: {root} holds no run yet (no {PROGRESS}); it appears once the model has loaded"
        return [f"run: {root}", wait]
    t, c = progress["totals"], progress["cursor"]
    try:
        age = f"{now - (root / PROGRESS).stat().st_mtime:.0f}s ago"
    except OSError:
        age = "?"
    if finished(progress, limits):
        state = f"finished: {progress['stop_reason']}"
    else:
        state = f"in progress: next batch is round {c['round']} batch {c['batch']} (last commit {age})"
    target = limits.get("target")
    of_target = f" of target {target} ({pct(t['accepted'], target)})" if isinstance(target, int) else ""
    lines = [f"run: {root}", f"state: {state}",
             f"accepted: {t['accepted']}{of_target}; candidates {t['candidates']}, rejected {t['rejected']} "
             f"(acceptance {pct(t['accepted'], t['candidates'])})"]
    top = rejected_by_reason(progress).most_common(4)
    if top:
        lines.append("top rejections: " + ", ".join(f"{k} {v}" for k, v in top))
    if t["lm_seconds"]:
        lines.append(f"LM: {t['completion_tokens'] / t['lm_seconds']:.1f} generated tokens/s "
                     f"({t['completion_tokens']} tokens in {t['lm_seconds']:.0f}s)")
    if note:
        lines.append(note)
    if finished(progress, limits):
        lines.append(f"full statistics: selfinstruct status {root}")
    return lines


def watch(root: str | Path, interval: float = 2.0, count: int | None = None, out: TextIO | None = None,
          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
          tty: bool | None = None) -> int:
    """`status --watch`: redraw the compact view every `interval` s until the run finishes, Ctrl-C, or `count` views.

    Reads progress.json and config.yaml only (through RunStore.open without the lock), so it never
    blocks or slows the job. On a terminal the view is redrawn in place; otherwise a view is printed
    each time the committed state changes. Returns 0.
    """
    root, out = Path(root), out or sys.stdout
    tty = out.isatty() if tty is None else tty
    last, failures, shown, printed = None, 0, 0, None
    try:
        while True:
            note = ""
            try:
                progress = RunStore.open(root, lock=False).progress if (root / PROGRESS).exists() else None
                failures = 0
            except RunDirError as e:
                failures += 1
                if failures >= WATCH_RETRIES:
                    raise
                progress, note = last, f"(could not read {PROGRESS} this time: {e}; showing the last view)"
            last = progress if progress is not None else last
            limits = _limits(root)
            done = progress is not None and finished(progress, limits)
            lines = watch_view(root, progress, limits, clock(), note)
            if tty:
                out.write(CLEAR + "\n".join(lines) + "\n")
            elif (key := json.dumps([progress, note, done], sort_keys=True)) != printed:
                out.write("\n".join(lines) + "\n\n")  # a pipe or a log file: one block per committed change
                printed = key
            out.flush()
            shown += 1
            if done or (count is not None and shown >= count):
                return 0
            sleep(interval)
    except KeyboardInterrupt:  # Ctrl-C ends the watch, not the job (which runs in its own process)
        out.write("\n")
        return 0
