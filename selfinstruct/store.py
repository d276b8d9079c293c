"""The run directory: append-only JSONL files plus an atomically replaced progress.json.

Commit = append + fsync the .jsonl files, then write progress.json to a temp file, fsync,
rename. progress.json records the committed byte length of each .jsonl file, so whatever
lies past it (a torn or uncommitted write) is cut off when the run is opened again.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import signal
from contextlib import suppress
from pathlib import Path

from selfinstruct.errors import RunDirError
from selfinstruct.records import Task, dumps

TASKS, REJECTED, PROGRESS, CONFIG = "tasks.jsonl", "rejected.jsonl", "progress.json", "config.yaml"
LOCK = ".lock"
AUDIT = "audit.jsonl"  # hand-audit answers (audit.py)
RUN_FILES = (TASKS, REJECTED, PROGRESS, CONFIG, LOCK, AUDIT)
VERSION = 1

# Fault injection, for tests only: SELFINSTRUCT_FAULT="POINT[@N][=ACTION],..." makes the N-th (default 1st)
# arrival at POINT (or at any point, for POINT "any") KILL the process (SIGKILL, the default), send it SIGINT,
# or fail as a full disk (enospc) or a read-only one (eacces). SELFINSTRUCT_FAULT_TRACE=FILE appends the name
# of every point reached, so a test can pick random instants among them. Read here and nowhere else.
FAULT_ENV, FAULT_TRACE_ENV = "SELFINSTRUCT_FAULT", "SELFINSTRUCT_FAULT_TRACE"
FAULT_POINTS = (
    "load",               # while the model loads (job)
    "torn_append",        # half of a batch's tasks rows written and synced (a torn write)
    "tasks_appended",     # after the tasks append, before the rejected append
    "rejected_appended",  # after both appends, before progress.json is written
    "progress_renamed",   # after the progress.json rename
    "round_end",          # between rounds (pipeline)
)
_fault_hits: dict[str, int] = {}


def _fault_action(point: str) -> str | None:
    """The action armed for this arrival at `point`, counting arrivals; None when nothing is armed."""
    spec, trace = os.environ.get(FAULT_ENV), os.environ.get(FAULT_TRACE_ENV)
    if not spec and not trace:
        return None
    _fault_hits[point] = _fault_hits.get(point, 0) + 1
    _fault_hits["any"] = _fault_hits.get("any", 0) + 1
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(point + "\n")
    for item in (spec or "").split(","):
        where, _, action = item.strip().partition("=")
        name, _, nth = where.partition("@")
        if name in (point, "any") and _fault_hits[name] == int(nth or 1):
            return action or "kill"
    return None


def fault(point: str) -> None:
    """A named point where tests may inject a fault (see FAULT_ENV); does nothing in normal runs."""
    action = _fault_action(point)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
    elif action == "sigint2":  # two presses: the second stops at once
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    elif action in ("enospc", "eacces"):
        code = errno.ENOSPC if action == "enospc" else errno.EACCES
        raise OSError(code, os.strerror(code))


def new_progress(fingerprint: str) -> dict:
    return {
        "version": VERSION, "fingerprint": fingerprint,
        "cursor": {"round": 1, "batch": 0},  # the next batch to run (rounds are 1-based)
        "round_start_tasks": 0,  # machine tasks in the pool when the cursor's round began
        "sizes": {TASKS: 0, REJECTED: 0},  # committed byte lengths
        "totals": {"accepted": 0, "rejected": 0, "candidates": 0, "prompt_tokens": 0,
                   "completion_tokens": 0, "lm_seconds": 0.0},
        "rounds": {},  # "r" -> {accepted, candidates, rejected: {"stage:reason": n}, human_fraction}
        "rounds_without_accept": 0,
        "seed_classification": {},  # seed id -> bool, for seeds whose file left it unknown
        "stop_reason": None,
    }


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (a no-op where directories cannot be fsynced)."""
    with suppress(OSError):  # not supported on every platform/filesystem
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def check_output(path: str | Path, what: str = "export") -> Path:
    """Refuse a user-named output file that cannot be written or would replace a run's own files."""
    path = Path(path)
    if not path.parent.is_dir():
        raise RunDirError(f"{path.parent}: no such directory for the {what}")
    if path.is_dir():
        raise RunDirError(f"{path}: is a directory; give a file name, e.g. {path / 'data.jsonl'}")
    real = path.resolve()
    if real.name in RUN_FILES and (real.parent / PROGRESS).exists():
        raise RunDirError(f"{path}: is a file of the run directory {real.parent}; the {what} would replace it; "
                          "choose another file name")
    return path


def write_outputs(files: dict[Path, str | bytes], what: str = "export") -> None:
    """Write user-named files all or none: every temp file first, then the renames; any failure is one RunDirError."""
    paths = {check_output(p, what): data for p, data in files.items()}
    temps: list[Path] = []
    current = next(iter(paths), None)
    try:
        for path, data in paths.items():
            current = path
            tmp = path.with_name(path.name + ".tmp")
            temps.append(tmp)
            with open(tmp, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
        for path, tmp in zip(paths, temps):
            current = path
            os.replace(tmp, path)
        for parent in {p.parent for p in paths}:
            fsync_dir(parent)
    except OSError as e:
        for tmp in temps:
            with suppress(OSError):
                tmp.unlink()
        raise RunDirError(f"{current}: cannot write the {what}: {e.strerror or e}") from None


def write_output(path: str | Path, text: str, what: str = "export") -> None:
    """Write a user-named output file atomically; never over a run's own files; any failure is one RunDirError."""
    write_outputs({Path(path): text}, what)


def _leftover_of_create(path: Path) -> bool:
    """What a create() killed before its first progress.json leaves: our names, and no rows yet."""
    if path.name in (TASKS, REJECTED):
        return path.is_file() and path.stat().st_size == 0
    return path.name in (CONFIG, LOCK, CONFIG + ".tmp", PROGRESS + ".tmp")


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _wrong_types(progress: dict) -> str | None:
    """What in a progress.json has the wrong shape (a hand edit, another tool's file), or None."""
    sizes, cursor = progress["sizes"], progress["cursor"]
    if not isinstance(sizes, dict) or set(sizes) != {TASKS, REJECTED} or not all(
            type(v) is int and v >= 0 for v in sizes.values()):
        return f"sizes must give a byte count >= 0 for {TASKS} and {REJECTED}"
    if not isinstance(cursor, dict) or not all(type(cursor.get(k)) is int for k in ("round", "batch")):
        return "cursor must hold integer round and batch"
    for key in ("totals", "rounds", "seed_classification"):
        if not isinstance(progress[key], dict):
            return f"{key} must be an object"
    if not all(_number(progress["totals"].get(k)) for k in new_progress("")["totals"]):
        return f"totals must hold the numbers {', '.join(new_progress('')['totals'])}"
    for r, stats in progress["rounds"].items():
        if not (isinstance(stats, dict) and all(_number(stats.get(k)) for k in ("accepted", "candidates"))
                and isinstance(stats.get("rejected"), dict) and _number(stats.get("human_fraction"))):
            return f"rounds.{r} must hold accepted, candidates, rejected and human_fraction"
    return None


class RunStore:
    """One run directory. Open it with `create` or `open`; `commit` is the only writer."""

    def __init__(self, root: Path, progress: dict):
        self.root = Path(root)
        self.progress = progress
        self._lock_fd: int | None = None

    # ---- opening ----

    @staticmethod
    def exists(root: str | Path) -> bool:
        return (Path(root) / PROGRESS).exists()

    @classmethod
    def create(cls, root: str | Path, config_text: str, fingerprint: str, extra: dict | None = None) -> RunStore:
        """A new run; `extra` goes into the first progress.json, the write that makes `root` a run."""
        root = Path(root)
        if cls.exists(root):
            raise RunDirError(f"{root}: already holds a run; resume it instead")
        if root.is_dir():
            foreign = sorted(p.name for p in root.iterdir() if not _leftover_of_create(p))
            if foreign:
                raise RunDirError(f"{root}: not a run directory (no {PROGRESS}) and not empty "
                                  f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                                  "nothing was written: choose another output_dir")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"{root}: cannot create run directory: {e.strerror}") from None
        for name in (TASKS, REJECTED):  # a crash before the first progress.json leaves stale files
            (root / name).write_bytes(b"")
        store = cls(root, {**new_progress(fingerprint), **(extra or {})})
        store.save_config(config_text, fingerprint)
        store.lock()
        write_atomic(root / PROGRESS, json.dumps(store.progress, indent=1))
        return store

    @classmethod
    def open(cls, root: str | Path, lock: bool = True) -> RunStore:
        """Open an existing run; with lock=True also cut torn writes (resume), else read-only."""
        root = Path(root)
        path = root / PROGRESS
        if not root.is_dir():
            raise RunDirError(f"{root}: no such run directory")
        if not path.exists():
            raise RunDirError(f"{path}: missing; {root} is not a run directory (or it never committed)")
        try:
            progress = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:  # e.g. a directory of that name
            raise RunDirError(f"{path}: cannot read: {e.strerror}") from None
        except (ValueError, UnicodeDecodeError, RecursionError) as e:  # ValueError: also a 5000-digit number
            raise RunDirError(f"{path}: damaged (not valid JSON: {str(e) or type(e).__name__}); "
                              "the run cannot be resumed safely") from None
        if not isinstance(progress, dict) or progress.get("version") != VERSION or "sizes" not in progress:
            raise RunDirError(f"{path}: not a selfinstruct v{VERSION} progress file")
        missing = [k for k in new_progress("").keys() if k not in progress]
        if missing:
            raise RunDirError(f"{path}: damaged (missing {', '.join(missing)}); the run cannot be resumed safely")
        wrong = _wrong_types(progress)
        if wrong:
            raise RunDirError(f"{path}: damaged ({wrong}); the run cannot be resumed safely")
        store = cls(root, progress)
        for name, size in progress["sizes"].items():
            f = root / name
            if not f.is_file():
                raise RunDirError(f"{f}: missing (or not a file), but {size} bytes were committed to it; "
                                  "the run directory was damaged")
            actual = f.stat().st_size
            if actual < size:
                raise RunDirError(f"{f}: holds {actual} bytes but {size} were committed; "
                                  "the run directory was damaged")
        if lock:
            store.lock()
            store._truncate_uncommitted()
        return store

    def lock(self) -> None:
        """Refuse a second process on the same run directory (advisory lock, released at exit)."""
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock
            return
        try:
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(f"{self.root / LOCK}: cannot open the run's lock file: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunDirError(f"{self.root}: another selfinstruct process is running on this directory") from None
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock (a process exit does the same)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _truncate_uncommitted(self) -> None:
        for name, size in self.progress["sizes"].items():
            f = self.root / name
            if f.stat().st_size > size:
                with open(f, "r+b") as fh:
                    fh.truncate(size)
                    fh.flush()
                    os.fsync(fh.fileno())

    # ---- reading ----

    def _read_committed(self, name: str, parse=dict) -> list:
        """The committed rows of `name`, each through `parse`; a row that fails is damage, named by its line."""
        size = self.progress["sizes"][name]
        path = self.root / name
        with open(path, "rb") as f:
            data = f.read(size)
        rows = []
        # b"\n" only: str.splitlines() also breaks at U+2028, U+2029 and U+0085, which JSON strings hold raw.
        for n, line in enumerate(data.split(b"\n"), 1):
            if line.strip():
                try:
                    row = json.loads(line.decode("utf-8"))
                    if not isinstance(row, dict):
                        raise TypeError(f"a JSON {type(row).__name__}, not an object")
                    rows.append(parse(row))
                except json.JSONDecodeError as e:
                    raise RunDirError(f"{path}:{n}: damaged committed row ({e.msg})") from None
                except UnicodeDecodeError:
                    raise RunDirError(f"{path}:{n}: damaged committed row (not UTF-8)") from None
                except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
                    what = f"no {e}" if isinstance(e, KeyError) else str(e) or type(e).__name__
                    raise RunDirError(f"{path}:{n}: damaged committed row ({what})") from None
        return rows

    def tasks(self) -> list[Task]:
        """Accepted machine tasks, in commit order."""
        return self._read_committed(TASKS, Task.from_json)

    def rejected(self) -> list[dict]:
        return self._read_committed(REJECTED)

    def save_config(self, config_text: str, fingerprint: str) -> None:
        write_atomic(self.root / CONFIG, f"# fingerprint: {fingerprint}\n{config_text}")

    def saved_config_text(self) -> str:
        try:
            return (self.root / CONFIG).read_text(encoding="utf-8")
        except OSError as e:
            raise RunDirError(f"{self.root / CONFIG}: cannot read saved config: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise RunDirError(f"{self.root / CONFIG}: damaged saved config (not UTF-8 at byte {e.start})") from None

    # ---- the one writer ----

    def commit(self, accepted: list[dict], rejected: list[dict], progress: dict) -> dict:
        """Durably append rows, then publish `progress` (with new sizes) atomically; returns what was published.

        A failed write (disk full, read-only) raises RunDirError and leaves the committed state as it was:
        the appended bytes lie past the committed sizes, which every reader ignores and resume cuts off.
        """
        progress = copy.deepcopy(progress)
        try:
            for name, rows, point in ((TASKS, accepted, "tasks_appended"), (REJECTED, rejected, "rejected_appended")):
                with open(self.root / name, "ab") as f:
                    if rows:
                        data = "".join(dumps(r) for r in rows).encode("utf-8")
                        if name == TASKS and _fault_action("torn_append") == "kill":
                            f.write(data[: len(data) // 2])
                            f.flush()
                            os.fsync(f.fileno())
                            os.kill(os.getpid(), signal.SIGKILL)
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    progress["sizes"][name] = f.tell()
                fault(point)
            write_atomic(self.root / PROGRESS, json.dumps(progress, indent=1))
        except OSError as e:
            self._cut_back()
            where = e.filename or self.root
            raise RunDirError(f"{where}: cannot commit a batch ({e.strerror or e}); everything committed before "
                              f"is intact; fix it and continue with: selfinstruct resume {self.root}") from None
        self.progress = progress
        fault("progress_renamed")
        return copy.deepcopy(progress)

    def _cut_back(self) -> None:
        """Best effort after a failed commit: drop the bytes appended past the committed sizes."""
        with suppress(OSError):
            self._truncate_uncommitted()
            (self.root / (PROGRESS + ".tmp")).unlink(missing_ok=True)
