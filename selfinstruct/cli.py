"""Command line: parse arguments and dispatch. All work lives in the other modules."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from selfinstruct import __version__
from selfinstruct import config as C
from selfinstruct.errors import SelfInstructError, Stopped
from selfinstruct.export import FORMATS as EXPORT_FORMATS

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


def _report_done(run_dir: Path, accepted: int) -> int:
    print(f"{accepted} tasks in {run_dir / 'tasks.jsonl'}; "
          f"export with: selfinstruct export {run_dir} --format alpaca -o data.jsonl")
    return 0


def cmd_run(a) -> int:
    from selfinstruct import job

    cfg = C.load(a.config, a.overrides)
    run_dir = Path(cfg.output_dir)
    return _report_done(run_dir, job.run(cfg, run_dir, progress_bar=not a.no_progress))


def cmd_resume(a) -> int:
    from selfinstruct import job

    run_dir = Path(a.run_dir)
    cfg = job.saved_config(run_dir, a.overrides)
    return _report_done(run_dir, job.run(cfg, run_dir, progress_bar=not a.no_progress))


def cmd_validate(a) -> int:
    from selfinstruct.records import load_seeds

    cfg = C.load(a.config, a.overrides)
    seeds = load_seeds(cfg.seed_tasks)
    print(f"{a.config}: OK ({len(seeds)} seed tasks in {cfg.seed_tasks}; fingerprint {cfg.fingerprint()})")
    return 0


def cmd_status(a) -> int:
    from selfinstruct.report import status_text, watch
    from selfinstruct.store import RunStore

    if a.watch is not None:
        return watch(a.run_dir, a.watch, count=a.count)
    if a.count is not None:
        raise SelfInstructError("--count only applies with --watch")
    print(status_text(RunStore.open(a.run_dir, lock=False)))
    return 0


def cmd_export(a) -> int:
    from selfinstruct.export import export
    from selfinstruct.store import RunStore

    w = export(RunStore.open(a.run_dir, lock=False), a.format, a.output, card=not a.no_card)
    if w.container != "stdout":
        what = {"json": "JSON array", "jsonl": "JSON Lines", "parquet": "Parquet", "dir": "datasets save_to_disk"}
        card = f"; dataset card: {w.card}" if w.card else ""
        print(f"wrote {w.rows} rows ({a.format}, {what[w.container]}) to {a.output}{card}")
    return 0


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def cmd_audit(a) -> int:
    from selfinstruct.audit import audit

    return audit(a.run_dir, a.sample, a.seed, export=a.export, import_=a.import_)


def cmd_report(a) -> int:
    from selfinstruct.report_html import build

    print(f"wrote {build(a.run_dir, a.output)}")
    return 0


def cmd_sweep(a) -> int:
    from selfinstruct.sweep import sweep

    return sweep(a.config, a.overrides, a.out, progress_bar=not a.no_progress)


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
    p.add_argument("--watch", nargs="?", const=2.0, type=_seconds, metavar="SECONDS",
                   help="refresh a compact view every SECONDS (default 2) until the run finishes or Ctrl-C; "
                        "reads the run directory only, never takes its lock")
    p.add_argument("--count", type=_positive, metavar="N", help="with --watch: stop after N views")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("export", help="write accepted tasks as a training file, with a dataset card beside it")
    p.add_argument("run_dir")
    p.add_argument("--format", default="alpaca", choices=EXPORT_FORMATS,
                   help="row shape; the path picks the container: .json one JSON array, .parquet Parquet, "
                        "else JSON Lines; hf: a datasets save_to_disk directory (or .parquet)")
    p.add_argument("-o", "--output", required=True, help="output path, or - for stdout (no card)")
    p.add_argument("--no-card", action="store_true", help="write no dataset card (README.md)")
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

    p = sub.add_parser("report", help="an HTML page with plots of a run's data (needs the extra: .[report])")
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", metavar="DIR", help="where report.html and the PNGs go (default RUN_DIR/report)")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("sweep", help="one job per value (or combination) of KEY=V1,V2,..., then a comparison table")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="KEY=V1,V2,... to sweep; plain key=value applies to every run")
    p.add_argument("--out", metavar="DIR", help="sweep directory (default: the config's output_dir + '-sweep')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_sweep)
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
    except Stopped as e:  # asked to stop, and stopped at a safe point: a note, not an error
        print(e, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("Interrupted: every committed batch is saved; run the same command again to resume.",
              file=sys.stderr)
        return 130
