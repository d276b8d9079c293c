"""The one task record, and reading/writing seed and task files."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from selfinstruct.errors import DataError

log = logging.getLogger("selfinstruct")


@dataclass
class Instance:
    input: str
    output: str


@dataclass
class Task:
    """An instruction with its instances. `origin` is "human" (seed) or "machine"."""

    id: str
    instruction: str
    instances: list[Instance] = field(default_factory=list)
    is_classification: bool | None = None  # None: unknown (decided by the pipeline)
    name: str | None = None
    origin: str = "human"
    meta: dict = field(default_factory=dict)  # provenance of machine tasks

    @property
    def depth(self) -> int:
        """Lineage depth: 0 for a seed, 1 + deepest machine example for a machine task."""
        return int(self.meta.get("depth", 0)) if self.origin == "machine" else 0

    def to_json(self) -> dict:
        d = asdict(self)
        if d["name"] is None:
            del d["name"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> Task:
        return cls(
            id=d["id"], instruction=d["instruction"],
            instances=[Instance(i["input"], i["output"]) for i in d.get("instances", [])],
            is_classification=d.get("is_classification"), name=d.get("name"),
            origin=d.get("origin", "machine"), meta=d.get("meta", {}),
        )


def _str(row: dict, key: str, where: str, required: bool = True) -> str:
    value = row.get(key, None if required else "")
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: '{key}' must be a string" + (" (missing)" if key not in row else ""))
    return value


# Seeds go into few-shot prompts: one that cannot fit a prompt is a mistake in the file, not a task.
MAX_SEED_CHARS = {"instruction": 4_000, "input": 8_000, "output": 8_000}


JSON_LINES = "seed files are JSON Lines: one JSON object per line, not one JSON array or a pretty-printed object"


def _loads(line: str, where: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        hint = f"; {JSON_LINES}" if line.strip() in ("[", "{") else ""
        raise DataError(f"{where}: invalid JSON: {e.msg} (column {e.colno}){hint}") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise DataError(f"{where}: invalid JSON: {e}") from None
    except RecursionError:
        raise DataError(f"{where}: invalid JSON: nested too deeply") from None


def _no_surrogates(row: object, where: str) -> None:
    """A lone surrogate (JSON "\\ud800") is no character: it cannot be encoded to write a prompt or a row."""
    text = json.dumps(row, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f"{where}: holds a lone surrogate {text[e.start]!r}, which is not a character") from None


def _parse_seed(row: object, where: str, line_no: int) -> Task:
    if not isinstance(row, dict):
        hint = f" ({JSON_LINES})" if isinstance(row, list) else ""
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}{hint}")
    _no_surrogates(row, where)
    instruction = _str(row, "instruction", where).strip()
    if not instruction:
        raise DataError(f"{where}: 'instruction' is empty")
    if "instances" in row:  # Self-Instruct schema
        raw = row["instances"]
        if not isinstance(raw, list) or not raw:
            raise DataError(f"{where}: 'instances' must be a non-empty list")
        instances = []
        for k, inst in enumerate(raw):
            if not isinstance(inst, dict):
                raise DataError(f"{where}: instances[{k}] must be an object with 'input' and 'output'")
            instances.append(Instance(_str(inst, "input", f"{where}: instances[{k}]", required=False),
                                      _str(inst, "output", f"{where}: instances[{k}]")))
    elif "output" in row:  # flat Alpaca row
        instances = [Instance(_str(row, "input", where, required=False), _str(row, "output", where))]
    else:
        raise DataError(f"{where}: needs 'instances' (Self-Instruct) or 'output' (Alpaca)")
    for key, text in [("instruction", instruction)] + [(k, getattr(i, k)) for i in instances for k in ("input", "output")]:
        if len(text) > MAX_SEED_CHARS[key]:
            raise DataError(f"{where}: '{key}' is {len(text):,} characters; a seed must fit a few-shot prompt "
                            f"(at most {MAX_SEED_CHARS[key]:,})")
    cls = row.get("is_classification")
    if cls is not None and not isinstance(cls, bool):
        raise DataError(f"{where}: 'is_classification' must be true, false or absent")
    task_id = row.get("id", f"seed_line_{line_no}")
    if not isinstance(task_id, (str, int)) or isinstance(task_id, bool):
        raise DataError(f"{where}: 'id' must be a string")
    name = row.get("name")
    return Task(id=str(task_id), instruction=instruction, instances=instances,
                is_classification=cls, name=name if isinstance(name, str) else None, origin="human")


def load_seeds(path: str | Path) -> list[Task]:
    """Read human seed tasks; a bad row raises DataError 'file:line: reason'.

    Rows sharing one instruction are merged into one task with several (distinct) instances.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read seed file: {e.strerror}") from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")  # tolerate a BOM from Windows editors
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    # Split on "\n" only: str.splitlines() also breaks at U+2028, U+0085 etc., which JSON strings may hold raw.
    lines = text.split("\n")
    tasks: list[Task] = []
    by_instruction: dict[str, Task] = {}
    ids: dict[str, tuple[int, object]] = {}
    merged = 0
    for n, line in enumerate(lines, 1):
        line = line.removeprefix("\ufeff")  # `cat a.jsonl b.jsonl` of two files saved with a BOM
        if not line.strip():
            continue
        where = f"{path}:{n}"
        row = _loads(line, where)
        task = _parse_seed(row, where, n)
        if task.id in ids:
            if ids[task.id][1] != row:
                raise DataError(f"{where}: duplicate id {task.id!r} (first on line {ids[task.id][0]})")
            merged += 1  # the same row again: published sets hold exact duplicates
            continue
        if task.instruction in by_instruction:  # published sets repeat an instruction with other inputs
            known = by_instruction[task.instruction].instances
            known.extend(i for i in task.instances if i not in known)
            merged += 1
            continue
        ids[task.id] = (n, row)
        by_instruction[task.instruction] = task
        tasks.append(task)
    if not tasks:
        raise DataError(f"{path}: no seed tasks found")
    if merged:
        log.info("%s: %d rows repeat an earlier instruction (or a whole row); merged into its task", path, merged)
    return tasks


def read_jsonl(path: Path) -> list[dict]:
    """Read a run-directory JSONL file; a bad line raises DataError naming it."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: invalid JSON: {e.msg}") from None
    return rows


def dumps(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"
