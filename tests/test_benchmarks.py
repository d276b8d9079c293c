"""CPU benchmarks must run on a tiny local model and print every row they promise, with numbers that add up."""

import re
import subprocess
import sys
from pathlib import Path

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
