"""Training files from a run's accepted tasks, each with a dataset card beside it. Reads only the run directory.

The format picks the row shape (alpaca, sharegpt, messages, jsonl = the stored task records; hf = alpaca
rows as a Hugging Face dataset); the output path picks the container: `-` stdout (JSON Lines), `.json`
one JSON array, `.parquet` Parquet (needs the `hf` extra), anything else JSON Lines; `--format hf` with
a path that is not `.parquet` is a `datasets.save_to_disk` directory.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from contextlib import suppress
from pathlib import Path
from typing import NamedTuple

from selfinstruct import __version__
from selfinstruct.errors import RunDirError, SelfInstructError
from selfinstruct.prompts import chat_turn
from selfinstruct.records import Task, dumps
from selfinstruct.report import mix_summary, pct, rejected_by_reason
from selfinstruct.store import AUDIT, PROGRESS, RunStore, check_output, fsync_dir, write_outputs

FORMATS = ("alpaca", "sharegpt", "messages", "jsonl", "hf")
CARD = "README.md"
# Marks a card as ours: a README.md without it is the user's, and is never replaced.
MARKER = "<!-- selfinstruct dataset card: written by `selfinstruct export`; the next export here replaces it -->"
SHAPES = {
    "alpaca": 'one row per instance: {"instruction", "input", "output"} (Stanford Alpaca\'s fields)',
    "sharegpt": 'one row per instance: {"id", "conversations": [{"from": "human", "value"}, '
                '{"from": "gpt", "value"}]}; the human turn is the instruction, then a blank line and the input '
                '(when there is one): the user turn that chat-mode answers (instances.response: chat) are generated from',
    "messages": 'one row per instance: {"messages": [{"role": "user", "content"}, {"role": "assistant", '
                '"content"}]} (the OpenAI / TRL chat format); the user turn joins instruction and input as sharegpt does',
    "jsonl": "one row per task, as selfinstruct stores it: id, instruction, instances, is_classification, "
             "origin and provenance (meta)",
    "hf": 'one row per instance: {"instruction", "input", "output"} (the alpaca rows) as a Hugging Face dataset',
}
HF_HINT = "pip install 'selfinstruct[hf]'"


class Written(NamedTuple):
    rows: int
    container: str  # "stdout", "json", "jsonl", "parquet" or "dir"
    card: Path | None


def export_rows(tasks: list[Task], fmt: str) -> list[dict]:
    """The rows of `fmt` for `tasks`, in commit order (instances in task order)."""
    if fmt == "jsonl":
        return [t.to_json() for t in tasks]
    rows = []
    for t in tasks:
        for k, inst in enumerate(t.instances):
            if fmt in ("alpaca", "hf"):
                rows.append({"instruction": t.instruction, "input": inst.input, "output": inst.output})
            elif fmt == "sharegpt":
                rows.append({"id": f"{t.id}_{k}", "conversations": [
                    {"from": "human", "value": chat_turn(t.instruction, inst.input)},
                    {"from": "gpt", "value": inst.output}]})
            else:
                rows.append({"messages": [{"role": "user", "content": chat_turn(t.instruction, inst.input)},
                                          {"role": "assistant", "content": inst.output}]})
    return rows


def container(fmt: str, out: str) -> str:
    """Where the rows go for this format and output path; a combination that cannot work is an error."""
    suffix = Path(out).suffix.lower()
    if out == "-":
        if fmt == "hf":
            raise SelfInstructError("--format hf writes a directory or a .parquet file, not stdout; "
                                    "for JSON Lines on stdout use --format alpaca")
        return "stdout"
    if suffix == ".parquet":
        if fmt == "jsonl":
            raise SelfInstructError(f"{out}: --format jsonl holds nested provenance of varying shape, which Parquet "
                                    "cannot take as one schema; use alpaca, sharegpt, messages or hf for .parquet")
        return "parquet"
    if fmt == "hf":
        return "dir"
    return "json" if suffix == ".json" else "jsonl"


def _datasets():
    try:
        import datasets
    except ImportError:
        raise SelfInstructError(f"this export needs Hugging Face datasets (the hf extra): {HF_HINT}") from None
    datasets.disable_progress_bars()  # one summary line from the CLI, not a bar per shard
    return datasets


def _features(datasets, fmt: str):
    """Explicit column types, so an empty export still has its schema."""
    s = datasets.Value("string")
    if fmt in ("alpaca", "hf"):
        return datasets.Features({"instruction": s, "input": s, "output": s})
    if fmt == "sharegpt":
        return datasets.Features({"id": s, "conversations": datasets.List({"from": s, "value": s})})
    return datasets.Features({"messages": datasets.List({"role": s, "content": s})})


def _dataset(rows: list[dict], fmt: str):
    ds = _datasets()
    features = _features(ds, fmt)  # from columns: from_list([]) would drop the schema of an empty export
    return ds.Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)


def _is_ours(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return MARKER in f.read(65536)
    except OSError:  # a directory or unreadable file of that name is the user's
        return False


def card_path(data: Path) -> Path:
    """Where a file export's card goes: README.md beside it, or <stem>.README.md when README.md is the user's."""
    readme = data.parent / CARD
    if data.name == CARD:
        raise RunDirError(f"{data}: {CARD} is the dataset card's name; choose another file name for the data")
    if not readme.exists() or _is_ours(readme):
        return readme
    alt = data.parent / f"{data.stem}.{CARD}"
    if not alt.exists() or _is_ours(alt):
        return alt
    raise RunDirError(f"{readme} and {alt} exist and are not selfinstruct dataset cards; nothing was written: "
                      "export to another directory, or pass --no-card")


# ---- the dataset card ----

def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    return next((label for limit, label in bounds if n < limit), "100M<n<1B")


def _saved_config(store: RunStore) -> tuple[str | None, dict]:
    """config.yaml's text and keys; (None, {}) when it cannot be read: the data exports, the card says so."""
    import yaml

    try:
        text = store.saved_config_text()
    except RunDirError:
        return None, {}
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        data = {}
    return text, data if isinstance(data, dict) else {}


def _audit_lines(root: Path) -> list[str]:
    from selfinstruct.audit import AuditError, latest, rate_lines, read_log

    try:
        rows = read_log(root / AUDIT).rows
    except AuditError as e:
        return [f"{AUDIT} could not be read ({e}); no rates given."]
    if not rows:
        return ["No hand audit yet (`selfinstruct audit RUN_DIR --sample 50` grades a sample with the "
                "Self-Instruct paper's three questions)."]
    answers = latest(rows)
    return [f"Hand audit of {len(answers)} sampled tasks (the Self-Instruct paper's three questions; "
            "first instance of each task):", ""] + [f"- {x}" for x in rate_lines(answers)]


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]


def dataset_card(store: RunStore, tasks: list[Task], fmt: str, n_rows: int, data_file: str | None,
                 kind: str) -> str:
    """README.md for an export: the Hub's YAML front matter, then model, counts, filters, mix, audit, config."""
    import yaml

    config_text, cfg = _saved_config(store)
    p, t = store.progress, store.progress["totals"]
    env = p.get("environment") or {}
    license_ = cfg.get("seed_license") or ""
    language = str(cfg.get("language") or "en").split("-")[0].lower()
    name = f"selfinstruct {store.root.resolve().name}"
    meta: dict = {"license": license_ or "unknown", "language": [language], "task_categories": ["text-generation"],
                  "size_categories": [_size_category(n_rows)], "tags": ["self-instruct", "synthetic"],
                  "pretty_name": name}
    if data_file and kind != "dir":  # a save_to_disk directory is read by load_from_disk, not by data_files
        meta["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": data_file}]}]
    model = env.get("model") or (cfg.get("model") or {}).get("name", "?")
    m = mix_summary(tasks)
    state = (f"finished ({p['stop_reason']})" if p.get("stop_reason")
             else f"not finished: exported after round {p['cursor']['round']} batch {p['cursor']['batch']} "
                  "was next; a later export will hold more")
    where = {"dir": f"this directory, written by `datasets.save_to_disk`; load it with "
                    f"`datasets.load_from_disk(\"{data_file}\")`",
             "parquet": f"`{data_file}` (Parquet)", "json": f"`{data_file}` (one JSON array)",
             "jsonl": f"`{data_file}` (JSON Lines)"}[kind]
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", MARKER, "",
             f"# {name}", "",
             f"{n_rows} training rows from {t['accepted']} machine-written tasks that selfinstruct {__version__} "
             f"grew from human seed tasks with the model `{model}`, following Self-Instruct (arXiv 2212.10560). "
             "The data is synthetic: no person checked it beyond the hand audit below, if any.", "",
             "## Files", "", f"- data: {where}", f"- format `{fmt}`: {SHAPES[fmt]}",
             f"- run: {state}", "",
             "## Model", "",
             *_table(("key", "value"), [(k, f"`{v}`") for k, v in env.items()] or [("model", f"`{model}`")]),
             "", "(the model, its revision and the software that decide the numerics, as the run recorded them)", "",
             "## Counts", "",
             f"- accepted tasks: {t['accepted']} ({m['instances']} instances; {m['classification']} classification tasks)",
             f"- candidates: {t['candidates']}; accepted {pct(t['accepted'], t['candidates'])}; "
             f"rejected: {t['rejected']}",
             f"- LM tokens: {t['prompt_tokens']} prompt, {t['completion_tokens']} generated", "",
             "### Rejected, by stage and filter", ""]
    by = rejected_by_reason(p).most_common()
    lines += _table(("stage:reason", "rejected", "of candidates"),
                    [(k, v, pct(v, t["candidates"])) for k, v in by]) if by else ["None."]
    prompt = cfg.get("prompt") if isinstance(cfg.get("prompt"), dict) else {}
    share = "n/a" if m["human_share"] is None else f"{100 * m['human_share']:.1f}%"
    lines += ["", "## Mix and lineage", "",
              f"- configured human fraction of the few-shot examples: {prompt.get('human_fraction', '?')}"
              + (f", schedule `{json.dumps(prompt['schedule'])}`" if prompt.get("schedule") is not None else ""),
              f"- human share of the prompt examples behind the accepted tasks: {share} "
              f"({m['human_examples']} human, {m['machine_examples']} machine)",
              "- lineage depth (1 = made from human examples only; d = 1 + the deepest machine example):", ""]
    lines += _table(("depth", "tasks"), list(m["depths"].items())) if m["depths"] else ["No accepted tasks."]
    lines += ["", "## Audit", "", *_audit_lines(store.root), "",
              "## Seeds and license", "",
              f"- seed file: `{Path(str(cfg.get('seed_tasks', '?'))).name}` (sha256 prefix "
              f"`{p.get('seeds_digest', '?')}`)",
              f"- seed file license: {license_}" if license_ else
              "- seed file license: not stated (set `seed_license` in the config)",
              "- the model's own license and terms also apply to what it generated", "",
              "## Config", ""]
    lines += (["The resolved config the run used (`config.yaml`):", "", "```yaml", config_text.rstrip(), "```", ""]
              if config_text is not None else ["The run's `config.yaml` could not be read; it is not shown.", ""])
    return "\n".join(lines)


# ---- writing ----

def _dir_target(path: Path) -> None:
    """Refuse a save_to_disk target that is not new, empty, or an earlier hf export (whose card says so)."""
    if not path.parent.is_dir():
        raise RunDirError(f"{path.parent}: no such directory for the export")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path}: is a file; --format hf writes a directory (or give a .parquet file name)")
    if path.is_dir() and any(path.iterdir()):
        if (path / PROGRESS).exists():
            raise RunDirError(f"{path}: is a run directory; the export would replace it; choose another directory")
        if not (_is_ours(path / CARD) and (path / "dataset_info.json").exists()):
            raise RunDirError(f"{path}: exists, is not empty and is not an earlier selfinstruct hf export; "
                              "nothing was written: choose another directory")


def _write_dir(path: Path, rows: list[dict], card: str | None) -> None:
    """save_to_disk into a hidden sibling, add the card, then swap it in: the old export stays until then."""
    _dir_target(path)
    ds = _dataset(rows, "hf")
    tmp, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
    try:
        for leftover in (tmp, old):  # our own names, left by a killed export
            shutil.rmtree(leftover, ignore_errors=True)
        ds.save_to_disk(str(tmp))
        if card is not None:
            with open(tmp / CARD, "w", encoding="utf-8") as f:
                f.write(card)
                f.flush()
                os.fsync(f.fileno())
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        if old.exists() and not path.exists():
            with suppress(OSError):
                os.rename(old, path)
        raise RunDirError(f"{path}: cannot write the export: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def export(store: RunStore, fmt: str, out: str, card: bool = True) -> Written:
    """Write the run's accepted tasks as `fmt` to `out` ('-' = stdout) with a dataset card, all or none."""
    if fmt not in FORMATS:
        raise SelfInstructError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    kind = container(fmt, out)
    tasks = store.tasks()
    rows = export_rows(tasks, fmt)
    if kind == "stdout":  # no card: nowhere to put it
        sys.stdout.write("".join(dumps(r) for r in rows))
        return Written(len(rows), kind, None)
    path = Path(out)
    if kind == "dir":
        _write_dir(path, rows, dataset_card(store, tasks, fmt, len(rows), path.name, kind) if card else None)
        return Written(len(rows), kind, path / CARD if card else None)
    check_output(path)  # before any work: a bad place fails fast and writes nothing
    where = card_path(path) if card else None
    if kind == "parquet":
        buf = io.BytesIO()
        _dataset(rows, fmt).to_parquet(buf)
        data: str | bytes = buf.getvalue()
    elif kind == "json":
        data = json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    else:
        data = "".join(dumps(r) for r in rows)
    files: dict[Path, str | bytes] = {path: data}
    if where is not None:
        rel = os.path.relpath(path.resolve(), where.parent.resolve())
        files[where] = dataset_card(store, tasks, fmt, len(rows), rel, kind)
    write_outputs(files)  # refuses the run's own files; temps first, then both renames
    return Written(len(rows), kind, where)

