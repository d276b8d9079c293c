"""Shared helpers for pipeline and CLI tests (fake LM jobs in a temp dir)."""

from __future__ import annotations

import json
from pathlib import Path

from selfinstruct import config as C
from selfinstruct.lm.fake import FakeLM
from selfinstruct.pipeline import Pipeline
from selfinstruct.records import Instance, Task
from selfinstruct.store import RunStore

ROOT = Path(__file__).resolve().parent.parent


def make_seeds(n: int = 30) -> list[Task]:
    """Distinct human tasks; every third one is a classification task."""
    words = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar "
             "papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
    tasks = []
    for i in range(n):
        a, b, c = words[i % 26], words[(i * 7 + 3) % 26], words[(i * 11 + 5) % 26]
        cls = i % 3 == 0
        inst = [Instance(f"{a} {b}", "yes"), Instance(f"{c}", "no")] if cls else [Instance("", f"{a} {c} {i}")]
        tasks.append(Task(id=f"s{i}", instruction=f"Describe seed task number {i} about {a} {b} {c} for testing",
                          instances=inst, is_classification=cls))
    return tasks


def cfg_for(tmp: Path, **over) -> C.Config:
    data = {"output_dir": str(tmp / "run"), "target": 40, "max_rounds": 4, "prompts_per_round": 6,
            "prompts_per_batch": 2, "model": {"backend": "fake"}}
    for key, value in over.items():
        C._set_dotted(data, key.replace("__", "."), value)
    return C.from_dict(data)


def run_job(cfg: C.Config, seeds: list[Task], lm=None, store: RunStore | None = None) -> tuple[str, RunStore]:
    if store is None:
        store = (RunStore.open(cfg.output_dir) if RunStore.exists(cfg.output_dir)
                 else RunStore.create(cfg.output_dir, C.dump(cfg), cfg.fingerprint()))
    reason = Pipeline(cfg, lm or FakeLM(), store, seeds, show_progress=False).run()
    release(store)
    return reason, store


def release(store: RunStore) -> None:
    """Drop the run-directory lock (a process exit does this in real use)."""
    import os

    if store._lock_fd is not None:
        os.close(store._lock_fd)
        store._lock_fd = None


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]
