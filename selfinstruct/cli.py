"""Command line: parse arguments and dispatch. All work lives in the other modules."""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from pathlib import Path

from selfinstruct import __version__
from selfinstruct import config as C
from selfinstruct.errors import RunDirError, SelfInstructError

log = logging.getLogger("selfinstruct")


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never crash the job
            self.handleError(record)


def _setup_logging(quiet: bool) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("selfinstruct: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _seeds_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _execute(cfg: C.Config, run_dir: Path, progress_bar: bool) -> int:
    """Create or resume the run in `run_dir` with `cfg`, then run it to a stop."""
    from selfinstruct.lm import load_lm
    from selfinstruct.pipeline import Pipeline
    from selfinstruct.records import load_seeds
    from selfinstruct.store import RunStore

    seeds = load_seeds(cfg.seed_tasks)
    digest = _seeds_digest(cfg.seed_tasks)
    lm = None
    cfg.seed_tasks = str(Path(cfg.seed_tasks).resolve())  # the saved config works from any directory
    if RunStore.exists(run_dir):
        store = RunStore.open(run_dir)
        saved_text = store.saved_config_text()
        missing = C.missing_keys(saved_text)
        if missing:  # their defaults would decide the rest of the run differently from its start
            raise RunDirError(f"{run_dir}: started by an older selfinstruct whose config has no "
                              f"{', '.join(missing)}; finish it with that version, or start a new output_dir")
        saved = C.load_text(saved_text, str(run_dir / "config.yaml"))
        safe, unsafe = C.diff(saved.to_dict(), cfg.to_dict())
        if unsafe:
            old, new = C.flatten(saved.to_dict()), C.flatten(cfg.to_dict())
            changes = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in unsafe)
            raise RunDirError(f"{run_dir}: config differs from the run's saved config in keys that shape past "
                              f"decisions ({changes}); use a new output_dir, or resume with the saved values")
        if store.progress.get("seeds_digest") not in (None, digest):
            raise RunDirError(f"{cfg.seed_tasks}: seed file changed since this run started; "
                              "use a new output_dir or restore the original seeds")
        for k in safe:
            if k not in ("seed_tasks", "output_dir"):
                log.info("resume: %s changed to %r (allowed: it only decides when the job stops)",
                         k, C.flatten(cfg.to_dict())[k])
        if safe:
            store.save_config(C.dump(cfg), cfg.fingerprint())
        if store.progress.get("stop_reason"):
            store.progress["stop_reason"] = None  # re-evaluated against the (possibly raised) limits
        log.info("resuming %s at round %d batch %d (%d tasks accepted)", run_dir,
                 store.progress["cursor"]["round"], store.progress["cursor"]["batch"],
                 store.progress["totals"]["accepted"])
    else:
        lm = load_lm(cfg.model)  # before the run directory exists: a model that fails to load leaves none behind
        store = RunStore.create(run_dir, C.dump(cfg), cfg.fingerprint())
        store.progress["seeds_digest"] = digest
        store.commit([], [], store.progress)
        log.info("new run in %s: %d seed tasks, target %d, up to %d rounds", run_dir, len(seeds), cfg.target,
                 cfg.max_rounds)
    log.info("config:\n%s", C.dump(cfg).rstrip())
    lm = lm or load_lm(cfg.model)
    _record_environment(store, lm)
    reason = Pipeline(cfg, lm, store, seeds, show_progress=progress_bar).run()
    log.warning("done: %s", reason)
    print(f"{store.progress['totals']['accepted']} tasks in {run_dir / 'tasks.jsonl'}; "
          f"export with: selfinstruct export {run_dir} --format alpaca -o data.jsonl")
    return 0


def _record_environment(store, lm) -> None:
    """Save what decides the numerics at the run's start; on resume, warn about each difference."""
    now = {"selfinstruct": __version__, **lm.environment()}
    then = store.progress.get("environment")
    if then is None:
        store.progress["environment"] = now
        store.commit([], [], store.progress)
        return
    for key in sorted(set(then) | set(now)):
        if then.get(key) != now.get(key):
            log.warning("resume: %s was %r at the start of this run and is %r now; the rest of the run may "
                        "differ from what an uninterrupted run would have made", key, then.get(key), now.get(key))


def cmd_run(a) -> int:
    cfg = C.load(a.config, a.overrides)
    return _execute(cfg, Path(cfg.output_dir), not a.no_progress)


def cmd_resume(a) -> int:
    from selfinstruct.store import RunStore

    run_dir = Path(a.run_dir)
    store = RunStore.open(run_dir, lock=False)
    cfg = C.load_text(store.saved_config_text(), str(run_dir / "config.yaml"), a.overrides)
    cfg.output_dir = str(run_dir)
    return _execute(cfg, run_dir, not a.no_progress)


def cmd_validate(a) -> int:
    from selfinstruct.records import load_seeds

    cfg = C.load(a.config, a.overrides)
    seeds = load_seeds(cfg.seed_tasks)
    print(f"{a.config}: OK ({len(seeds)} seed tasks in {cfg.seed_tasks}; fingerprint {cfg.fingerprint()})")
    return 0


def cmd_status(a) -> int:
    from selfinstruct.report import status_text
    from selfinstruct.store import RunStore

    print(status_text(RunStore.open(a.run_dir, lock=False)))
    return 0


def cmd_export(a) -> int:
    from selfinstruct.report import export
    from selfinstruct.store import RunStore

    n = export(RunStore.open(a.run_dir, lock=False), a.format, a.output)
    if a.output != "-":
        print(f"wrote {n} rows ({a.format}) to {a.output}")
    return 0


def cmd_audit(a) -> int:
    from selfinstruct.audit import audit

    return audit(a.run_dir, a.sample, a.seed, export=a.export, import_=a.import_)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfinstruct", description=__doc__)
    parser.add_argument("--version", action="version", version=f"selfinstruct {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run (or continue) the job a config describes")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. prompt.human_fraction=0.5")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("resume", help="continue a run from its saved config")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", help="safe keys only, e.g. target=500 max_rounds=40")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_resume)

    p = sub.add_parser("validate", help="check a config (and its seed file) without running")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("status", help="progress and per-round statistics of a run")
    p.add_argument("run_dir")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("export", help="write accepted tasks as a training file")
    p.add_argument("run_dir")
    p.add_argument("--format", default="alpaca", choices=["jsonl", "alpaca", "messages"])
    p.add_argument("-o", "--output", required=True, help="output path, or - for stdout")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("audit", help="grade a random sample of accepted tasks by hand (the Self-Instruct audit)")
    p.add_argument("run_dir")
    p.add_argument("--sample", type=int, metavar="N", help="how many tasks to grade (50 at least to compare runs; "
                   "not needed with --import)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="sampling seed: the same run, seed and N give the same sample")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--export", metavar="CSV", help="write the sample as a sheet to grade offline, then stop")
    g.add_argument("--import", dest="import_", metavar="CSV", help="record the answers filled in a sheet, then stop")
    p.set_defaults(fn=cmd_audit)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may come after options (`run cfg --no-progress target=5`); argparse alone rejects that
    if extra and (not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    _setup_logging(args.quiet)
    try:
        return args.fn(args)
    except SelfInstructError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `selfinstruct status run | head`: the reader left; not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("Interrupted: every committed batch is saved; run the same command again to resume.",
              file=sys.stderr)
        return 130
