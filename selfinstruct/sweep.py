"""`selfinstruct sweep`: one job per value (or combination) of swept keys, one after another, then a comparison.

Each job has its own run directory under the sweep directory and goes through job.run, so an interrupted
sweep, run again, skips the finished runs and resumes the unfinished one where it stopped. Every
combination's config is validated before the first job starts.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import re
from pathlib import Path

from selfinstruct import config as C
from selfinstruct import stats as S
from selfinstruct.errors import ConfigError, RunDirError, SelfInstructError, Stopped
from selfinstruct.store import RunStore, write_atomic

log = logging.getLogger("selfinstruct")

MANIFEST = "sweep.json"
TABLE_MD, TABLE_CSV, PLOT = "summary.md", "summary.csv", "summary.png"
NOT_SWEEPABLE = {"output_dir": "each run of a sweep has its own run directory under the sweep directory (--out)"}
# the plot shows these (the table shows every column)
PLOT_COLUMNS = ("acceptance", "human_share", "rouge_seeds", "rouge_pool", "distinct_1", "distinct_2", "depth",
                "len_instruction", "len_output", "classification", "empty_input", "tokens_per_task", "audit_all")


def _scalar_keys() -> dict[str, object]:
    """Every config key whose value is one scalar (lists and schedules cannot be split on commas)."""
    return {k: v for k, v in C.flatten(C.Config().to_dict()).items() if not isinstance(v, (list, dict))
            and k != "prompt.schedule"}


def parse_args(args: list[str]) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """Split command-line items into swept axes [(key, [raw values])] and plain overrides; ConfigError if bad."""
    axes: list[tuple[str, list[str]]] = []
    plain: list[str] = []
    scalar = _scalar_keys()
    keys = [C.parse_override(item)[0] for item in args]  # "must look like key=value" for a malformed one
    for item, key in zip(args, keys):
        raw = item.partition("=")[2].strip()
        if "," not in raw or raw.startswith(("[", "{", '"', "'")):  # a YAML list or quoted text: one value
            plain.append(item)  # as in `run`, a plain key given twice takes the last value
            continue
        if keys.count(key) > 1:
            raise ConfigError(f"{key}: swept and also given again on the command line; give it once")
        if key in NOT_SWEEPABLE:
            raise ConfigError(f"{key}: cannot be swept: {NOT_SWEEPABLE[key]}")
        if key not in scalar:
            known = "a list or schedule value (give it as [a, b] for every run)" if key in C.flatten(
                C.Config().to_dict()) else "unknown key"
            raise ConfigError(f"{key}={raw}: cannot be swept: {known}; sweepable keys hold one value, e.g. "
                              "prompt.human_fraction=0,0.5,1")
        values = [v.strip() for v in raw.split(",")]
        if any(not v for v in values):
            raise ConfigError(f"{item}: empty value in the list; write KEY=V1,V2,... e.g. prompt.human_fraction=0,0.5")
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            raise ConfigError(f"{item}: value {dup[0]} given twice")
        axes.append((key, values))
    if not axes:
        raise ConfigError("sweep: nothing to sweep; give at least one KEY=V1,V2,... e.g. prompt.human_fraction=0,0.5,1")
    return axes, plain


def run_name(combo: list[tuple[str, str]]) -> str:
    """The run directory's name for one combination: 'prompt.human_fraction=0.25,seed=1' (filename-safe)."""
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", ",".join(f"{k}={v}" for k, v in combo))


def plan(config: str, args: list[str], out: str | None = None) -> tuple[Path, list[dict]]:
    """(sweep directory, [{name, combo, cfg, dir}]) with every combination's config validated; nothing written."""
    from selfinstruct.records import load_seeds

    axes, plain = parse_args(args)
    base = C.load(config, plain)
    root = Path(out) if out else Path(base.output_dir.rstrip("/\\") + "-sweep")
    runs, problems, seeds_ok = [], [], set()
    for values in itertools.product(*(vals for _, vals in axes)):
        combo = [(k, v) for (k, _), v in zip(axes, values)]
        name = run_name(combo)
        run_dir = root / name
        try:
            cfg = C.load(config, [*plain, *(f"{k}={v}" for k, v in combo), f"output_dir={run_dir}"])
            if cfg.seed_tasks not in seeds_ok:
                load_seeds(cfg.seed_tasks)
                seeds_ok.add(cfg.seed_tasks)
            _check_existing(cfg, run_dir)
        except SelfInstructError as e:  # config, seed file or an existing run directory
            problems.append(f"{name}: {e}")
            continue
        runs.append({"name": name, "combo": combo, "cfg": cfg, "dir": run_dir})
    names = [r["name"] for r in runs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:  # values that differ only in characters a file name cannot hold
        raise ConfigError(f"sweep: two combinations would share the run directory {clash[0]}; use other values")
    if problems:
        raise ConfigError(f"sweep: {len(problems)} of {len(problems) + len(runs)} runs cannot start; nothing ran:\n  "
                          + "\n  ".join(problems))
    if root.exists() and not root.is_dir():
        raise RunDirError(f"{root}: exists and is not a directory; choose another --out")
    if root.is_dir() and not (root / MANIFEST).exists() and any(root.iterdir()):
        raise RunDirError(f"{root}: not a sweep directory (no {MANIFEST}) and not empty; nothing was written: "
                          "choose another --out")
    return root, runs


def _check_existing(cfg: C.Config, run_dir: Path) -> None:
    """Refuse up front a combination whose run directory holds a run with other decision-shaping keys."""
    if not RunStore.exists(run_dir):
        return
    store = RunStore.open(run_dir, lock=False)
    saved = C.load_text(store.saved_config_text(), str(run_dir / "config.yaml"))
    _, unsafe = C.diff(saved.to_dict(), cfg.to_dict())
    if unsafe:
        raise RunDirError(f"{run_dir}: holds a run made with other values of {', '.join(unsafe)}; "
                          "use another --out, or the sweep's original keys")


def _finished(cfg: C.Config, run_dir: Path) -> bool:
    """The run is finished and nothing that decides when it stops has changed: no need to load the model."""
    if not RunStore.exists(run_dir):
        return False
    store = RunStore.open(run_dir, lock=False)
    if not store.progress.get("stop_reason"):
        return False
    saved = C.load_text(store.saved_config_text(), str(run_dir / "config.yaml"))
    safe, _ = C.diff(saved.to_dict(), cfg.to_dict())
    return not [k for k in safe if k not in ("seed_tasks", "output_dir")]


def sweep(config: str, args: list[str], out: str | None = None, progress_bar: bool = True) -> int:
    """Plan and validate, then run every combination in order (skipping finished ones), then compare."""
    from selfinstruct import job
    from selfinstruct import plots

    plots.pyplot()  # a missing matplotlib fails before any job runs, not after hours of them
    root, runs = plan(config, args, out)
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / MANIFEST, json.dumps({"config": str(Path(config).resolve()), "args": args,
                                              "runs": [r["name"] for r in runs]}, indent=1))
    log.info("sweep of %d runs in %s", len(runs), root)
    for i, r in enumerate(runs, 1):
        if _finished(r["cfg"], r["dir"]):
            log.info("sweep %d/%d: %s finished earlier; skipped", i, len(runs), r["name"])
            continue
        log.info("sweep %d/%d: %s", i, len(runs), r["name"])
        try:
            job.run(r["cfg"], r["dir"], progress_bar=progress_bar)
        except Stopped:
            write_tables(root, runs)
            raise Stopped(f"sweep stopped in run {r['name']} ({i} of {len(runs)}); run the same sweep command "
                          "again to resume it") from None
        write_tables(root, runs)  # after each run: an interrupted sweep still shows what is done
    write_tables(root, runs, plot=True)
    print(f"{len(runs)} runs in {root}; comparison in {root / TABLE_MD}, {root / TABLE_CSV}, {root / PLOT}")
    return 0


def table(runs: list[dict]) -> tuple[list[str], list[list[str]], list[dict]]:
    """(header, text rows, raw summary rows) for the runs that have a run directory."""
    keys = [k for k, _ in runs[0]["combo"]] if runs else []
    summaries, names, states = [], [], []
    for r in runs:
        if not RunStore.exists(r["dir"]):
            continue
        data = S.load_run(r["dir"])
        summaries.append(S.summary(data))
        names.append(r)
        states.append("finished" if data.store.progress.get("stop_reason") else "unfinished")
    cols = [c for c in S.SUMMARY_COLUMNS if not c[0].startswith("audit_")
            or any(s[c[0]] is not None for s in summaries)]  # audit columns only where an audit exists
    header = ["run", *keys, "state", *(h for _, h, _ in cols)]
    rows = [[r["name"], *(v for _, v in r["combo"]), st, *(S.fmt(s[k], f) for k, _, f in cols)]
            for r, s, st in zip(names, summaries, states)]
    return header, rows, summaries


def write_tables(root: Path, runs: list[dict], plot: bool = False) -> None:
    """summary.md and summary.csv (and summary.png) for the runs so far."""
    from selfinstruct import plots

    header, rows, summaries = table(runs)
    md = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    write_atomic(root / TABLE_MD, "\n".join(md) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    write_atomic(root / TABLE_CSV, buf.getvalue())
    if plot and rows:
        labels = ["\n".join(v for _, v in r["combo"]) for r in runs if RunStore.exists(r["dir"])]
        axis = " / ".join(k for k, _ in runs[0]["combo"])  # the values under each bar, top to bottom
        headers = dict((k, h) for k, h, _ in S.SUMMARY_COLUMNS)
        cols = [(k, headers[k]) for k in PLOT_COLUMNS if any(s[k] is not None for s in summaries)]
        png = plots.sweep(labels, axis, summaries, cols)
        tmp = root / (PLOT + ".tmp")
        tmp.write_bytes(png)
        tmp.replace(root / PLOT)
