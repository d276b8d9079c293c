"""CPU benchmarks must run on a tiny local model and print every row they promise, with numbers that add up."""

import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_stage_queue_benchmark_prints_three_ways_per_mix(tiny_model_dir):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/stage_queue.py"), "--model", str(tiny_model_dir),
                          "--reps", "1", "--max-new-tokens", "8"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("machine: ")
    rows = [line.strip("|").split("|") for line in out.stdout.splitlines() if re.match(r"\| call \d", line)]
    assert [(r[0].strip()[:6], r[2].strip()) for r in rows] == [
        (call, way) for call in ("call 1", "call 2") for way in ("separate", "one call", "free mix")]
    for mix in (rows[:3], rows[3:]):
        base = float(mix[0][3])
        for r in mix:
            secs, ratio = float(r[3]), float(r[5])
            assert secs > 0 and abs(ratio - base / secs) <= 0.01 + 0.05 * ratio  # printed with rounding
    assert {r[1].strip() for r in rows[:3]} == {"12"} and {r[1].strip() for r in rows[3:]} == {"16"}


@pytest.mark.slow
@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "openai")),
                    reason="transformers serving extra not installed (pip install -e '.[serving]')")
def test_serve_benchmark_prints_each_concurrency_and_the_in_process_row(tiny_model_dir):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/serve.py"), "--model", str(tiny_model_dir),
                          "--prompts", "3", "--max-new-tokens", "4", "--concurrency", "1,3", "--in-process",
                          "--num-examples", "2"],  # short prompts: a quick check
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.strip("|").split("|") for line in out.stdout.splitlines() if re.match(r"\| (\d|in process)", line)]
    assert [r[0].strip()[:10] for r in rows] == ["1", "3", "in process"]
    base = float(rows[0][3])
    for r in rows:
        tokens, secs, rate, ratio = int(r[1]), float(r[2]), float(r[3]), float(r[4])
        assert 0 < tokens <= 3 * 4 and secs > 0
        assert tokens / (secs + 0.005) - 0.05 <= rate <= tokens / max(secs - 0.005, 1e-3) + 0.05  # wall to 0.01 s
        assert abs(ratio - rate / base) <= 0.01 + 0.05 * ratio


def test_answer_ceiling_scores_a_graded_sheet(tmp_path):
    sheet = tmp_path / "sheet.csv"
    with open(sheet, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "instruction", "input", "reference", "answer", "acceptable"])
        w.writerows([["a", "i", "", "r", "x", "y"], ["b", "i", "", "r", "x", "n"], ["c", "i", "", "r", "x", "yes"],
                     ["d", "i", "", "r", "x", ""]])  # d is not graded yet
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/answer_ceiling.py"), "--score", str(sheet)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2/3 = 66.7%" in out.stdout
    with open(sheet, "a", newline="") as f:
        csv.writer(f).writerow(["e", "i", "", "r", "x", "maybe"])
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/answer_ceiling.py"), "--score", str(sheet)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode != 0 and "'maybe'" in out.stderr


def test_answer_ceiling_answers_open_seed_tasks_in_chat(tiny_model_dir, tmp_path):
    sheet = tmp_path / "sheet.csv"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/answer_ceiling.py"), "--sample", "3", "-o", str(sheet),
                          f"model.name={tiny_model_dir}", "answers.max_new_tokens=4"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    with open(sheet, newline="") as f:
        rows = list(csv.DictReader(f))
    seeds = {json.loads(line)["id"]: json.loads(line) for line in (ROOT / "seed_tasks.jsonl").read_text().splitlines()}
    assert len(rows) == 3 and len({r["id"] for r in rows}) == 3
    for r in rows:
        seed = seeds[r["id"]]
        assert seed["is_classification"] is False and r["instruction"] == seed["instruction"]
        assert r["reference"] == seed["instances"][0]["output"] and r["acceptable"] == ""


@pytest.mark.slow
def test_generation_benchmark_prints_the_ceiling_both_paths_and_the_pool_shares(tiny_model_dir):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/generation.py"), "--model", str(tiny_model_dir),
                          "--prompts", "4", "--slots", "2", "--static", "2", "--new-tokens", "8", "--pools", "50,100"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    top = float(re.search(r"no stops: ([\d.]+) tok/s", out.stdout).group(1))
    rows = [line.strip("|").split("|") for line in out.stdout.splitlines() if line.startswith("| pipeline")]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [("pipeline, continuous", "2"),
                                                            ("pipeline, static (before)", "2")]
    for r in rows:
        assert abs(float(r[3]) - float(r[2]) / top) <= 0.01 + 0.05 * float(r[3])  # ratio = pipeline / ceiling
    pools = [line.strip("|").split("|") for line in out.stdout.splitlines() if re.match(r"\| (50|100) \|", line)]
    assert [p[0].strip() for p in pools] == ["50", "100"]
    assert all(float(p[1]) > 0 and 0 < float(p[2].strip().rstrip("%")) < 100 for p in pools)


def test_generation_benchmark_replays_each_prompt_of_a_mixed_call_by_its_own_stage():
    """A pipeline call may hold several stages (one GenerationParams per prompt): the recording keeps
    each completion under its own stage, and the replay answers each prompt from its stage."""
    spec = importlib.util.spec_from_file_location("generation_bench", ROOT / "benchmarks/generation.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from selfinstruct.lm.base import Completion, GenerationParams, per_prompt

    class Echo:
        name, has_chat_template = "echo", True

        def generate(self, prompts, params, seed):
            return [Completion(f"{p.chat}:{x}") for x, p in zip(prompts, per_prompt(params, len(prompts)))]

    instance, answer = GenerationParams(8, stop=("Output:",)), GenerationParams(8, chat=True)
    rec = bench.RecordingLM(Echo())
    rec.generate(["i1", "a1", "i2"], [instance, answer, instance], 0)
    rec.generate(["a2"], answer, 0)
    replay = bench.ReplayLM(rec)
    assert [c.text for c in replay.generate(["x", "y", "z"], [answer, instance, answer], 1)] == [
        "True:a1", "False:i2", "True:a1"]  # prompt k gets its stage's recording k (cycled)
    assert [c.text for c in replay.generate(["w"], GenerationParams(8, stop=("other",)), 1)] == [""]
