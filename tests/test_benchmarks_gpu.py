"""benchmarks/gpu.py must run on CPU (--quick) and print every row it promises."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.mark.slow  # about 15 s of CPU (two toy models, two batch sizes, three paths)
def test_gpu_benchmark_quick_on_cpu():
    out = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("device: CPU")
    rows = {}
    for line in out.stdout.splitlines():
        m = re.match(r"(tiny \(\S+ layout\))\s+(eager|continuous|vllm\+openai)\s+(\d+)\s+(.*)$", line)
        if m:
            rows[m[1], m[2], int(m[3])] = m[4]
    models = ["tiny (135M layout)", "tiny (1.7B layout)"]
    assert set(rows) == {(mo, p, b) for mo in models for p in ("eager", "continuous", "vllm+openai") for b in (1, 4)}
    for (model, path, batch), rest in rows.items():
        if path == "vllm+openai":
            assert rest.strip() == "skipped: vLLM row needs CUDA"
            continue
        tokens, secs, rate = rest.split()[:3]
        assert int(tokens) == batch * 8  # exactly --new-tokens (8) per prompt
        assert float(rate) == pytest.approx(int(tokens) / float(secs), rel=0.02, abs=0.1)  # secs printed to 0.1 ms


@pytest.mark.slow  # imports torch twice: ~8 s here
def test_gpu_benchmark_without_cuda_is_a_one_line_error():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("Error: no CUDA device") and "Traceback" not in out.stderr
