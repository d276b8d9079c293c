"""Generated tok/s against model.concurrency with the openai backend and a local `transformers serve`.

Usage: python benchmarks/serve.py [--prompts 16] [--max-new-tokens 64] [--concurrency 1,4,16]
                                  [--serve-args "--continuous-batching"] [--model DIR] [--num-examples 8]
                                  [--in-process]

Starts `transformers serve` on 127.0.0.1 with the bundled model (its converted safetensors directory under
~/.cache/selfinstruct; --model for another directory), sends --prompts instruction-generation prompts built
as the pipeline builds them (round 1, the job seed, the pipeline's stop strings), greedy so every
concurrency level generates the same tokens, and prints generated tok/s per level with the ratio to
concurrency 1 (the baseline, measured in the same run). Needs the `serving` extra.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from selfinstruct import config as C  # noqa: E402
from selfinstruct import prompts as P  # noqa: E402
from selfinstruct.lm.base import GenerationParams  # noqa: E402
from selfinstruct.lm.openai import OpenAIBackend  # noqa: E402
from selfinstruct.mix import derive_seed, sample_examples  # noqa: E402
from selfinstruct.records import load_seeds  # noqa: E402


def start_server(model: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "transformers.cli.transformers", "serve", model, "--host",
                             "127.0.0.1", "--port", str(port), "--device", "cpu", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"transformers serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return proc, url + "/v1"
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("transformers serve did not come up in 300 s")
            time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--serve-args", default="", help="extra `transformers serve` flags, e.g. --continuous-batching")
    ap.add_argument("--model", default="", help="a model directory (default: the bundled model, converted)")
    ap.add_argument("--num-examples", type=int, default=C.Config().prompt.num_examples,
                    help="few-shot examples per prompt (fewer for a model with a short context)")
    ap.add_argument("--in-process", action="store_true",
                    help="also time the hf backend on the same prompts in this process, after the server stops")
    a = ap.parse_args()
    import torch
    import transformers

    from selfinstruct.lm.hf import default_cache_dir, resolve_model

    model = a.model or resolve_model("bundled", default_cache_dir())[0]
    cfg = C.Config()
    seeds = load_seeds(str(Path(__file__).resolve().parents[1] / "seed_tasks.jsonl"))
    rng = random.Random(derive_seed(cfg.seed, 1, 0, "examples"))
    prompts = [P.build_instruction_prompt(sample_examples(rng, seeds, [], a.num_examples, 1.0))
               for _ in range(a.prompts)]
    stops = P.instruction_stops(a.num_examples, cfg.prompt.new_per_prompt)
    params = GenerationParams(a.max_new_tokens, 0.0, 1.0, stops)  # greedy: the same work at every level

    proc, url = start_server(model, shlex.split(a.serve_args))
    try:
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch "
              f"{torch.__version__}, transformers {transformers.__version__}; transformers serve "
              f"{a.serve_args or '(defaults)'}; model {model}")
        print(f"{len(prompts)} instruction prompts (~{sum(len(p) for p in prompts) // len(prompts)} chars), "
              f"max {a.max_new_tokens} new tokens, greedy, the pipeline's stop strings")
        OpenAIBackend(url, model, timeout_s=600).generate(prompts[:1], GenerationParams(4), 0)  # load + warm up
        print("| model.concurrency | generated tokens | wall s | generated tok/s | ratio to concurrency 1 |")
        print("|---|---|---|---|---|")
        base = None
        for c in [int(x) for x in a.concurrency.split(",")]:
            lm = OpenAIBackend(url, model, concurrency=c, timeout_s=600)
            start = time.perf_counter()
            out = lm.generate(prompts, params, seed=0)
            wall = time.perf_counter() - start
            tokens = sum(o.completion_tokens for o in out)
            rate = tokens / wall
            base = base or rate
            print(f"| {c} | {tokens} | {wall:.2f} | {rate:.1f} | {rate / base:.2f} |", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    if a.in_process:  # the same prompts and settings without HTTP, the server gone: what the hf backend does
        from selfinstruct.lm.hf import HFBackend

        lm = HFBackend(model, batch_size=len(prompts))
        lm.generate(prompts[:1], GenerationParams(4), 0)
        start = time.perf_counter()
        out = lm.generate(prompts, params, seed=0)
        wall = time.perf_counter() - start
        tokens = sum(o.completion_tokens for o in out)
        print(f"| in process (hf backend, batch_size {len(prompts)}) | {tokens} | {wall:.2f} | {tokens / wall:.1f} "
              f"| {tokens / wall / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
