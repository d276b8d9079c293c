"""Create or resume a run: check the config and seeds against the run directory, load the LM, run the pipeline.

The rules that decide whether a run directory may be continued live here, not in the CLI.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
from pathlib import Path

from selfinstruct import __version__
from selfinstruct import config as C
from selfinstruct.errors import RunDirError

log = logging.getLogger("selfinstruct")


def seeds_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def saved_config(run_dir: Path, overrides: list[str] | None = None) -> C.Config:
    """The config a run was started with (plus safe `overrides`), for `resume`."""
    from selfinstruct.store import RunStore

    store = RunStore.open(run_dir, lock=False)
    cfg = C.load_text(store.saved_config_text(), str(run_dir / "config.yaml"), overrides)
    cfg.output_dir = str(run_dir)
    return cfg


def _check_resumable(store, cfg: C.Config, run_dir: Path, digest: str) -> None:
    """Refuse a resume whose config or seeds would change decisions already made; save safe changes."""
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
            why = "it only labels exports" if k == "seed_license" else "it only decides when the job stops"
            log.info("resume: %s changed to %r (allowed: %s)", k, C.flatten(cfg.to_dict())[k], why)
    if safe:
        store.tasks(), store.rejected()  # a damaged committed row refuses the resume before anything is written
        store.save_config(C.dump(cfg), cfg.fingerprint())


class StopSignal:
    """First Ctrl-C (or SIGTERM): stop at the next safe point, between batches; a second Ctrl-C: stop at once.

    Either way nothing committed is touched: a batch is committed whole or not at all.
    """

    def __init__(self):
        self.requested = False
        self._saved: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after the batch in flight (Ctrl-C again to stop at once)")

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def run(cfg: C.Config, run_dir: Path, progress_bar: bool = True) -> int:
    """Create or resume the run in `run_dir` with `cfg`, run it to a stop; returns the accepted count.

    Raises Stopped when the user asked it to stop (Ctrl-C, SIGTERM) before it finished.
    """
    with StopSignal() as stop:
        return _run(cfg, run_dir, progress_bar, stop)


def _run(cfg: C.Config, run_dir: Path, progress_bar: bool, stop: StopSignal) -> int:
    from selfinstruct.lm import load_lm
    from selfinstruct.pipeline import Pipeline
    from selfinstruct.records import load_seeds
    from selfinstruct.store import RunStore, fault

    seeds = load_seeds(cfg.seed_tasks)
    digest = seeds_digest(cfg.seed_tasks)
    lm = None
    cfg.seed_tasks = str(Path(cfg.seed_tasks).resolve())  # the saved config works from any directory
    if RunStore.exists(run_dir):
        store = RunStore.open(run_dir)
        _check_resumable(store, cfg, run_dir, digest)
        if store.progress.get("stop_reason"):
            store.progress["stop_reason"] = None  # re-evaluated against the (possibly raised) limits
        log.info("resuming %s at round %d batch %d (%d tasks accepted)", run_dir,
                 store.progress["cursor"]["round"], store.progress["cursor"]["batch"],
                 store.progress["totals"]["accepted"])
    else:
        fault("load")
        lm = load_lm(cfg.model)  # before the run directory exists: a model that fails to load leaves none behind
        # the seed digest and environment go into the same first progress.json that makes the directory a run
        store = RunStore.create(run_dir, C.dump(cfg), cfg.fingerprint(),
                                {"seeds_digest": digest, "environment": _environment(lm)})
        log.info("new run in %s: %d seed tasks, target %d, up to %d rounds", run_dir, len(seeds), cfg.target,
                 cfg.max_rounds)
    try:
        log.info("config:\n%s", C.dump(cfg).rstrip())
        if lm is None:
            fault("load")
            lm = load_lm(cfg.model)
            _warn_environment(store.progress.get("environment") or {}, _environment(lm))
        pipeline = Pipeline(cfg, lm, store, seeds, show_progress=progress_bar, stop_requested=stop)
        reason = pipeline.run()
    finally:
        store.close()
    log.warning("done: %s", reason)
    return pipeline.progress["totals"]["accepted"]


def _environment(lm) -> dict:
    """What decides the numerics: resolved device and dtype, batch size, versions, model revision."""
    return {"selfinstruct": __version__, **lm.environment()}


def _warn_environment(then: dict, now: dict) -> None:
    for key in sorted(set(then) | set(now)):
        if then.get(key) != now.get(key):
            log.warning("resume: %s was %r at the start of this run and is %r now; the rest of the run may "
                        "differ from what an uninterrupted run would have made", key, then.get(key), now.get(key))
