"""Task record and seed loading: Self-Instruct rows, partial rows, Alpaca rows, and `file:line: reason` errors."""

from __future__ import annotations

import json

import pytest

from selfinstruct.errors import DataError
from selfinstruct.records import Instance, Task, dumps, load_seeds, read_jsonl


def si_row(i: int, instruction: str | None = None, **over) -> dict:
    row = {"id": f"seed_task_{i}", "name": f"task_{i}",
           "instruction": instruction or f"Do the thing number {i} carefully.",
           "instances": [{"input": f"in {i}", "output": f"out {i}"}], "is_classification": False}
    row.update(over)
    return row


def write(tmp_path, rows: list, name: str = "seeds.jsonl"):
    """Rows are dicts (dumped as JSON) or raw strings (written as is), one per line."""
    path = tmp_path / name
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def load_error(path) -> str:
    with pytest.raises(DataError) as e:
        load_seeds(path)
    return str(e.value)


# ---- accepted inputs ----

def test_self_instruct_rows(tmp_path):
    rows = [si_row(0, is_classification=True,
                   instances=[{"input": "great", "output": "positive"}, {"input": "awful", "output": "negative"}]),
            si_row(1)]
    tasks = load_seeds(write(tmp_path, rows))
    assert [t.id for t in tasks] == ["seed_task_0", "seed_task_1"]
    t = tasks[0]
    assert t.name == "task_0" and t.instruction == rows[0]["instruction"]
    assert t.instances == [Instance("great", "positive"), Instance("awful", "negative")]
    assert t.is_classification is True and tasks[1].is_classification is False
    assert all(t.origin == "human" and t.depth == 0 for t in tasks)


def test_rows_missing_name_and_is_classification(tmp_path):
    row = si_row(0)
    del row["name"], row["is_classification"]
    [t] = load_seeds(write(tmp_path, [row]))
    assert t.name is None and t.is_classification is None
    assert "name" not in t.to_json()


def test_is_classification_null_means_unknown(tmp_path):
    [t] = load_seeds(write(tmp_path, [si_row(0, is_classification=None)]))
    assert t.is_classification is None


def test_instance_without_input_gets_empty_input(tmp_path):
    [t] = load_seeds(write(tmp_path, [si_row(0, instances=[{"output": "42"}, {"input": None, "output": "43"}])]))
    assert t.instances == [Instance("", "42"), Instance("", "43")]


def test_flat_alpaca_rows_input_optional(tmp_path):
    rows = [{"instruction": "Name a primary color.", "output": "Red"},
            {"instruction": "Translate to French.", "input": "cat", "output": "chat"}]
    tasks = load_seeds(write(tmp_path, rows))
    assert [t.instruction for t in tasks] == ["Name a primary color.", "Translate to French."]
    assert tasks[0].instances == [Instance("", "Red")]
    assert tasks[1].instances == [Instance("cat", "chat")]
    assert all(t.is_classification is None and t.name is None for t in tasks)
    assert len({t.id for t in tasks}) == 2  # ids are made up and distinct


def test_alpaca_rows_sharing_an_instruction_merge(tmp_path):
    rows = [{"instruction": "Translate to French.", "input": "cat", "output": "chat"},
            {"instruction": "Name a primary color.", "output": "Red"},
            {"instruction": "Translate to French.", "input": "dog", "output": "chien"},
            {"instruction": "Translate to French.", "input": "bird", "output": "oiseau"}]
    tasks = load_seeds(write(tmp_path, rows))
    assert len(tasks) == 2
    assert tasks[0].instruction == "Translate to French."  # keeps the order of first appearance
    assert tasks[0].instances == [Instance("cat", "chat"), Instance("dog", "chien"), Instance("bird", "oiseau")]


def test_instruction_is_stripped(tmp_path):
    [t] = load_seeds(write(tmp_path, [si_row(0, instruction="  Say hello.\n")]))
    assert t.instruction == "Say hello."


def test_blank_lines_skipped_and_line_numbers_kept(tmp_path):
    path = write(tmp_path, [si_row(0), "\n", "   \n", si_row(1), "{oops\n"])
    assert load_error(path).startswith(f"{path}:5: invalid JSON")


def test_crlf_line_endings(tmp_path):
    path = tmp_path / "crlf.jsonl"
    path.write_bytes((json.dumps(si_row(0)) + "\r\n" + json.dumps(si_row(1)) + "\r\n").encode())
    assert [t.id for t in load_seeds(path)] == ["seed_task_0", "seed_task_1"]


def test_utf8_bom_is_tolerated(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(si_row(0)) + "\n").encode())
    assert load_seeds(path)[0].id == "seed_task_0"


def test_unicode_line_separators_inside_strings(tmp_path):
    """A JSON line written with ensure_ascii=False may hold raw U+2028 / U+0085; they are not line breaks."""
    row = si_row(0, instruction="Join these\u2028two lines.", instances=[{"input": "a\x85b", "output": "caf\u00e9"}])
    path = tmp_path / "u.jsonl"
    path.write_text(dumps(row) + dumps(si_row(1)), encoding="utf-8")
    tasks = load_seeds(path)
    assert [t.id for t in tasks] == ["seed_task_0", "seed_task_1"]
    assert tasks[0].instruction == "Join these\u2028two lines."
    assert tasks[0].instances == [Instance("a\x85b", "caf\u00e9")]


# ---- every bad row: DataError with file:line: reason ----

@pytest.mark.parametrize("bad, reason", [
    ("{not json\n", "invalid JSON"),
    ('"just a string"\n', "expected a JSON object"),
    ("[1, 2]\n", "expected a JSON object"),
    ({"id": "x", "instances": [{"input": "", "output": "o"}]}, "'instruction'"),
    ({"id": "x", "instruction": 5, "instances": [{"input": "", "output": "o"}]}, "'instruction' must be a string"),
    ({"id": "x", "instruction": "   ", "instances": [{"input": "", "output": "o"}]}, "'instruction' is empty"),
    ({"id": "x", "instruction": "Do it now please.", "instances": "nope"}, "'instances' must be a non-empty list"),
    ({"id": "x", "instruction": "Do it now please.", "instances": []}, "'instances' must be a non-empty list"),
    ({"id": "x", "instruction": "Do it now please.", "instances": ["a"]}, "instances[0] must be an object"),
    ({"id": "x", "instruction": "Do it now please.", "instances": [{"input": "a"}]}, "instances[0]: 'output'"),
    ({"id": "x", "instruction": "Do it now please.", "instances": [{"input": "a", "output": "b"}, {"input": "c"}]},
     "instances[1]: 'output'"),
    ({"id": "x", "instruction": "Do it now please.", "instances": [{"input": "a", "output": 3}]},
     "'output' must be a string"),
    ({"id": "x", "instruction": "Do it now please.", "instances": [{"input": 3, "output": "b"}]},
     "'input' must be a string"),
    ({"id": "x", "instruction": "Do it now please."}, "needs 'instances'"),
    ({"instruction": "Do it now please.", "input": "a", "output": None}, "'output' must be a string"),
    (si_row(9, is_classification="yes"), "'is_classification' must be true, false or absent"),
    (si_row(9, is_classification=1), "'is_classification'"),
    (si_row(9, id=["x"]), "'id' must be a string"),
])
def test_bad_row_names_file_and_line(tmp_path, bad, reason):
    path = write(tmp_path, [si_row(0), si_row(1), bad])
    msg = load_error(path)
    assert msg.startswith(f"{path}:3: ")
    assert reason in msg


def test_missing_instruction_says_missing(tmp_path):
    path = write(tmp_path, [{"id": "x", "instances": [{"input": "", "output": "o"}]}])
    assert "(missing)" in load_error(path)


def test_duplicate_id(tmp_path):
    path = write(tmp_path, [si_row(0), si_row(1), si_row(2, id="seed_task_0")])
    msg = load_error(path)
    assert msg.startswith(f"{path}:3: duplicate id 'seed_task_0'")
    assert "line 1" in msg


def test_repeated_instruction_is_merged_into_one_task(tmp_path, caplog):
    """Issue 8, item 4: published sets repeat an instruction with other inputs; that is more instances."""
    import logging

    path = write(tmp_path, [si_row(0, instruction="Say hi."), si_row(1), si_row(2, instruction=" Say hi. ")])
    with caplog.at_level(logging.INFO, logger="selfinstruct"):
        tasks = load_seeds(path)
    assert [t.id for t in tasks] == ["seed_task_0", "seed_task_1"]
    first, third = si_row(0)["instances"], si_row(2)["instances"]
    assert [vars(i) for i in tasks[0].instances] == first + third
    assert "1 rows repeat an earlier instruction" in caplog.text


@pytest.mark.parametrize("field, size", [("instruction", 4_001), ("input", 8_001), ("output", 8_001)])
def test_a_seed_too_big_for_a_prompt_is_refused(tmp_path, field, size):
    """Issue 8, item 5: a 10 MB instruction used to go into prompts."""
    row = si_row(1)
    if field == "instruction":
        row["instruction"] = "x" * size
    else:
        row["instances"][0][field] = "x" * size
    path = write(tmp_path, [si_row(0), row])
    assert load_error(path).startswith(f"{path}:2: '{field}' is {size:,} characters")
    row = si_row(1)
    row["instruction"] = "x" * 4_000  # at the limit: fine
    assert len(load_seeds(write(tmp_path, [si_row(0), row]))) == 2


def test_empty_file(tmp_path):
    path = write(tmp_path, ["\n", "  \n"])
    msg = load_error(path)
    assert msg.startswith(str(path)) and "no seed tasks" in msg
    (tmp_path / "zero.jsonl").write_bytes(b"")
    assert "no seed tasks" in load_error(tmp_path / "zero.jsonl")


def test_non_utf8_file_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes((json.dumps(si_row(0)) + "\n").encode() + '{"instruction": "caf\xe9"}\n'.encode("latin-1"))
    msg = load_error(path)
    assert msg.startswith(f"{path}:2: ") and "UTF-8" in msg


def test_missing_file(tmp_path):
    msg = load_error(tmp_path / "nope.jsonl")
    assert msg.startswith(str(tmp_path / "nope.jsonl")) and "cannot read" in msg


def test_directory_instead_of_file(tmp_path):
    assert "cannot read" in load_error(tmp_path)


# ---- Task JSON ----

def test_task_to_json_from_json_round_trip_machine():
    t = Task(id="r1-b0-c3", instruction="Name three rivers in Africa.",
             instances=[Instance("", "Nile, Congo, Niger")], is_classification=False, origin="machine",
             meta={"round": 1, "depth": 2, "human_examples": ["seed_task_1"], "nearest": {"score": 0.3}})
    d = t.to_json()
    assert "name" not in d  # None name is left out
    back = Task.from_json(json.loads(json.dumps(d)))
    assert back == t
    assert back.depth == 2


def test_task_round_trip_human_with_name_and_unknown_class():
    t = Task(id="seed_task_7", instruction="Is it raining?", instances=[Instance("x", "y"), Instance("", "z")],
             is_classification=None, name="rain", origin="human")
    back = Task.from_json(json.loads(dumps(t.to_json())))
    assert back == t and back.depth == 0
    assert dumps(t.to_json()).endswith("\n") and dumps(t.to_json()).count("\n") == 1


def test_human_depth_is_zero_even_with_meta():
    assert Task(id="s", instruction="x", origin="human", meta={"depth": 5}).depth == 0


def test_dumps_keeps_unicode_readable():
    assert "caf\u00e9" in dumps({"a": "caf\u00e9"})


def test_read_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{bad\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_jsonl(path)
    assert str(e.value).startswith(f"{path}:4: invalid JSON")
    path.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
