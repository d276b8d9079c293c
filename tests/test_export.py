"""Exports: row shapes, JSON array vs JSON Lines, Parquet and save_to_disk, and the dataset card beside each."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from selfinstruct import config as C
from selfinstruct.audit import append_rows, make_row
from selfinstruct.cli import main
from selfinstruct.errors import RunDirError, SelfInstructError
from selfinstruct.export import MARKER, card_path, container, export, export_rows
from selfinstruct.records import Instance, Task
from selfinstruct.store import AUDIT, RunStore, write_outputs
from tests.helpers import cfg_for, make_seeds, run_job

needs_datasets = pytest.mark.skipif(
    __import__("importlib").util.find_spec("datasets") is None,
    reason="Hugging Face datasets is not installed (pip install -e '.[hf]'; .ci/run installs it)")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("export")
    cfg = cfg_for(tmp, seed_license="cc-by-4.0")
    reason, store = run_job(cfg, make_seeds())
    assert store.progress["totals"]["accepted"] > 0 and store.progress["totals"]["rejected"] > 0
    return tmp / "run"


@pytest.fixture
def run(base, tmp_path) -> Path:
    shutil.copytree(base, tmp_path / "run")
    (tmp_path / "out").mkdir()
    return tmp_path / "run"


def tasks_of(run: Path) -> list[Task]:
    return RunStore.open(run, lock=False).tasks()


def do(run: Path, fmt: str, out, **kw):
    return export(RunStore.open(run, lock=False), fmt, str(out), **kw)


def files(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


# ---- row shapes and containers ----

def test_alpaca_json_is_one_array_and_other_suffixes_are_json_lines(run):
    out = run.parent / "out"
    expected = [{"instruction": t.instruction, "input": i.input, "output": i.output}
                for t in tasks_of(run) for i in t.instances]
    assert do(run, "alpaca", out / "data.json").container == "json"
    assert json.loads((out / "data.json").read_text(encoding="utf-8")) == expected
    assert do(run, "alpaca", out / "data.jsonl").container == "jsonl"
    lines = (out / "data.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and [json.loads(x) for x in lines[:-1]] == expected
    do(run, "alpaca", out / "DATA.JSON")  # the suffix is matched without case
    assert isinstance(json.loads((out / "DATA.JSON").read_text()), list)


def test_stdout_is_json_lines_and_writes_no_card(run, capsys):
    before = files(run.parent)
    assert main(["export", str(run), "--format", "alpaca", "-o", "-"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.split("\n") if x]
    assert len(rows) == sum(len(t.instances) for t in tasks_of(run))
    assert files(run.parent) == before


def test_sharegpt_and_messages_join_instruction_and_input_with_a_blank_line():
    t = Task("m1", "Translate the sentence into French.", [Instance("Good morning.", "Bonjour."),
                                                         Instance("", "Salut.")], origin="machine")
    share = export_rows([t], "sharegpt")
    assert share[0] == {"id": "m1_0", "conversations": [
        {"from": "human", "value": "Translate the sentence into French.\n\nGood morning."},
        {"from": "gpt", "value": "Bonjour."}]}
    assert share[1]["conversations"][0]["value"] == "Translate the sentence into French."  # no input: no blank line
    assert share[1]["id"] == "m1_1"
    msg = export_rows([t], "messages")
    assert [m["role"] for m in msg[0]["messages"]] == ["user", "assistant"]
    assert msg[0]["messages"][0]["content"] == share[0]["conversations"][0]["value"]
    assert export_rows([t], "hf") == export_rows([t], "alpaca") == [
        {"instruction": t.instruction, "input": "Good morning.", "output": "Bonjour."},
        {"instruction": t.instruction, "input": "", "output": "Salut."}]


def test_sharegpt_export_file(run):
    out = run.parent / "out" / "chat.json"
    main(["-q", "export", str(run), "--format", "sharegpt", "-o", str(out)])
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert len(rows) == sum(len(t.instances) for t in tasks_of(run))
    assert len({r["id"] for r in rows}) == len(rows)
    assert all([c["from"] for c in r["conversations"]] == ["human", "gpt"] for r in rows)


@pytest.mark.parametrize("fmt, out, kind", [
    ("alpaca", "-", "stdout"), ("alpaca", "a.json", "json"), ("alpaca", "a.jsonl", "jsonl"),
    ("alpaca", "a.txt", "jsonl"), ("sharegpt", "a.parquet", "parquet"), ("hf", "a.parquet", "parquet"),
    ("hf", "dir", "dir"), ("hf", "dir.jsonl", "dir"), ("jsonl", "t.json", "json")])
def test_the_path_picks_the_container(fmt, out, kind):
    assert container(fmt, out) == kind


@pytest.mark.parametrize("fmt, out, needle", [("hf", "-", "not stdout"), ("jsonl", "t.parquet", "Parquet cannot")])
def test_impossible_combinations_are_errors(fmt, out, needle):
    with pytest.raises(SelfInstructError, match=needle):
        container(fmt, out)


# ---- the dataset card ----

def test_card_front_matter_and_contents(run):
    out = run.parent / "out"
    append_rows(run / AUDIT, [make_row(t.id, {"instruction": True, "input": True, "output": k == 0}, 0)
                              for k, t in enumerate(tasks_of(run)[:2])])
    w = do(run, "alpaca", out / "data.json")
    assert w.card == out / "README.md"
    text = w.card.read_text(encoding="utf-8")
    meta = front_matter(text)
    assert meta["license"] == "cc-by-4.0" and meta["language"] == ["en"]
    assert meta["task_categories"] == ["text-generation"] and meta["size_categories"] == ["n<1K"]
    assert {"self-instruct", "synthetic"} <= set(meta["tags"]) and meta["pretty_name"]
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data.json"}]}]
    assert MARKER in text
    store = RunStore.open(run, lock=False)
    p = store.progress
    assert f"{w.rows} training rows from {p['totals']['accepted']} machine-written tasks" in text
    assert f"- candidates: {p['totals']['candidates']};" in text
    for stats in p["rounds"].values():  # every filter statistic is in the table
        for reason, n in stats["rejected"].items():
            assert f"| {reason} |" in text
    depths: dict[int, int] = {}
    for t in tasks_of(run):
        depths[t.depth] = depths.get(t.depth, 0) + 1
    for d, n in depths.items():
        assert f"| {d} | {n} |" in text
    assert "human share of the prompt examples" in text
    assert "valid instruction: 2/2 = 100.0%" in text and "acceptable output: 1/2 = 50.0%" in text
    assert "seed file license: cc-by-4.0" in text
    assert store.saved_config_text().rstrip() in text  # the resolved config, verbatim
    assert "| model | `bundled` |" in text  # no recorded environment (a run made in process): the config's name


def test_card_without_seed_license_says_unknown(run):
    cfg = (run / "config.yaml").read_text().replace("seed_license: cc-by-4.0", "seed_license: ''")
    (run / "config.yaml").write_text(cfg)
    text = do(run, "alpaca", run.parent / "out" / "d.jsonl").card.read_text()
    assert front_matter(text)["license"] == "unknown" and "not stated (set `seed_license`" in text
    assert "No hand audit yet" in text


def test_card_without_a_readable_config_still_describes_the_data(run):
    (run / "config.yaml").unlink()
    text = do(run, "alpaca", run.parent / "out" / "d.jsonl").card.read_text()
    assert front_matter(text)["license"] == "unknown" and "`config.yaml` could not be read" in text


def test_a_users_readme_is_never_replaced(run):
    out = run.parent / "out"
    (out / "README.md").write_text("my own notes\n")
    w = do(run, "alpaca", out / "data.json")
    assert w.card == out / "data.README.md" and MARKER in w.card.read_text()
    assert (out / "README.md").read_text() == "my own notes\n"
    assert do(run, "alpaca", out / "data.json").card == out / "data.README.md"  # ours: replaced next time
    (out / "data.README.md").write_text("also mine\n")
    before = files(out)
    with pytest.raises(RunDirError, match="not selfinstruct dataset cards; nothing was written"):
        do(run, "alpaca", out / "data.json")
    assert files(out) == before
    assert do(run, "alpaca", out / "data.json", card=False).card is None  # --no-card still exports


def test_our_card_is_replaced_and_readme_is_no_data_name(run):
    out = run.parent / "out"
    do(run, "alpaca", out / "a.json")
    w = do(run, "sharegpt", out / "b.jsonl")
    assert w.card == out / "README.md" and "path: b.jsonl" in w.card.read_text()
    with pytest.raises(RunDirError, match="dataset card's name"):
        card_path(out / "README.md")


def test_card_in_another_directory_names_the_data_relative_to_it(run):
    sub = run.parent / "out" / "sub"
    sub.mkdir()
    w = do(run, "alpaca", sub / "x.jsonl")
    assert front_matter(w.card.read_text())["configs"][0]["data_files"][0]["path"] == "x.jsonl"


def test_data_and_card_are_written_all_or_none(run):
    out = run.parent / "out"
    (out / "README.md.tmp").mkdir()  # the card's temp file cannot be created
    with pytest.raises(RunDirError, match="cannot write the export"):
        do(run, "alpaca", out / "data.json")
    assert sorted(p.name for p in out.iterdir()) == ["README.md.tmp"]  # no data, no stray temp


def test_write_outputs_refuses_the_runs_files_before_writing_any(run):
    out = run.parent / "out"
    with pytest.raises(RunDirError, match="run directory"):
        write_outputs({out / "ok.txt": "x", run / "tasks.jsonl": "y"})
    assert not (out / "ok.txt").exists()


# ---- Hugging Face datasets (the hf extra) ----

@pytest.mark.parametrize("fmt, name", [("hf", "dir"), ("hf", "d.parquet"), ("alpaca", "d.parquet")])
def test_missing_datasets_is_one_error_naming_the_extra(run, capsys, monkeypatch, fmt, name):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    before = files(run.parent)
    assert main(["export", str(run), "--format", fmt, "-o", str(run.parent / "out" / name)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1 and "selfinstruct[hf]" in err
    assert files(run.parent) == before


@needs_datasets
def test_hf_save_to_disk_round_trip(run):
    import datasets

    out = run.parent / "out" / "hf"
    w = do(run, "hf", out)
    assert w.container == "dir" and w.card == out / "README.md"
    back = datasets.load_from_disk(str(out))
    assert back.to_list() == export_rows(tasks_of(run), "alpaca")
    meta = front_matter(w.card.read_text())
    assert "configs" not in meta and meta["license"] == "cc-by-4.0"
    assert "load_from_disk(\"hf\")" in w.card.read_text()
    do(run, "hf", out)  # an earlier export of ours is replaced whole
    assert datasets.load_from_disk(str(out)).num_rows == back.num_rows
    assert not any(p.name.startswith(".hf") for p in out.parent.iterdir())


@needs_datasets
def test_hf_refuses_a_foreign_directory_and_the_run_itself(run):
    foreign = run.parent / "out" / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(RunDirError, match="not an earlier selfinstruct hf export"):
        do(run, "hf", foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    with pytest.raises(RunDirError, match="is a run directory"):
        do(run, "hf", run)
    with pytest.raises(RunDirError, match="is a file"):
        do(run, "hf", run / "config.yaml")


@needs_datasets
@pytest.mark.parametrize("fmt", ["hf", "alpaca", "sharegpt", "messages"])
def test_parquet_holds_the_formats_rows(run, fmt):
    import datasets

    out = run.parent / "out" / "d.parquet"
    w = do(run, fmt, out)
    assert datasets.Dataset.from_parquet(str(out)).to_list() == export_rows(tasks_of(run), fmt)
    assert front_matter(w.card.read_text())["configs"][0]["data_files"][0]["path"] == "d.parquet"


@needs_datasets
def test_empty_run_exports_keep_their_schema(tmp_path):
    import pyarrow.parquet as pq

    cfg = cfg_for(tmp_path)
    store = RunStore.create(cfg.output_dir, C.dump(cfg), cfg.fingerprint())
    store.close()
    w = export(RunStore.open(cfg.output_dir, lock=False), "sharegpt", str(tmp_path / "e.parquet"))
    assert w.rows == 0 and pq.read_table(tmp_path / "e.parquet").column_names == ["id", "conversations"]
