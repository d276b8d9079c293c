"""Which dtype generates faster on this CPU? float32 vs bfloat16 with the bundled model.

Usage: python benchmarks/dtype.py [--batch 8] [--prompt-tokens 400] [--new-tokens 128] [--reps 2]

Both models are loaded in the same process and their runs are interleaved (f32, bf16, f32,
bf16, ...) so that a noisy neighbour slows both alike; the best run of each counts. Each run
does a fixed amount of work (every row makes exactly --new-tokens tokens, sampling at
temperature 0.7 / top_p 0.5), so tokens/s compare like with like. The result picks
selfinstruct.lm.hf.CPU_DTYPE.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Self-Instruct style few-shot text to cut realistic prompts from (task lists, mixed vocabulary).
TASKS = [
    "Give three tips for staying healthy.",
    "Classify the sentiment of this tweet as positive, negative or neutral.",
    "Rewrite the following sentence in the passive voice.",
    "Write a short poem about the sea at night.",
    "Explain why the sky is blue to a ten-year-old.",
    "Convert 72 degrees Fahrenheit to Celsius and show the steps.",
    "Suggest a name for a bakery that sells only bread made with ancient grains.",
    "Summarize the plot of a famous novel in two sentences.",
    "Find the grammatical error in this sentence and correct it.",
    "List five countries in South America and their capitals.",
    "Write a SQL query that returns the ten most recent orders.",
    "Is this email spam? Answer yes or no and give a reason.",
    "Describe the water cycle in four steps.",
    "Generate a list of interview questions for a data analyst role.",
    "Translate 'Where is the train station?' into Spanish and French.",
    "Write a Python function that checks whether a string is a palindrome.",
]


def machine_line() -> str:
    import torch

    model = "unknown cpu"
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown cpu":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        model = platform.processor() or model
    native = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"machine: {model}; {os.cpu_count()} cores ({usable} usable); torch {torch.__version__} "
            f"with {torch.get_num_threads()} threads; bf16 hardware: {', '.join(native) or 'none'}; "
            f"mkldnn {'on' if torch.backends.mkldnn.is_available() else 'off'}")


def make_prompts(tokenizer, batch: int, prompt_tokens: int) -> list[list[int]]:
    """`batch` different prompts of exactly `prompt_tokens` tokens each."""
    prompts = []
    for b in range(batch):
        lines, k = ["Come up with a series of tasks:"], 0
        while len(tokenizer("\n".join(lines))["input_ids"]) < prompt_tokens + 8:
            lines.append(f"{len(lines)}. {TASKS[(b * 5 + k) % len(TASKS)]}")
            k += 1
        ids = tokenizer("\n".join(lines))["input_ids"][:prompt_tokens]
        prompts.append(ids)
    return prompts


def run(lm, prompts: list[list[int]], new_tokens: int, seed: int) -> tuple[float, float]:
    """Seconds for prefill only (1 new token) and for the full generation of `new_tokens` per row."""
    import torch

    ids = torch.tensor(prompts, dtype=torch.long, device=lm.device)
    mask = torch.ones_like(ids)
    sampling = dict(do_sample=True, temperature=0.7, top_p=0.5, top_k=0, pad_token_id=lm.tokenizer.pad_token_id)
    times = []
    with torch.inference_mode():
        for n in (1, new_tokens):
            torch.manual_seed(seed)
            start = time.perf_counter()
            out = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                    **sampling)
            times.append(time.perf_counter() - start)
            assert out.shape[1] == ids.shape[1] + n
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="prompts per batch")
    parser.add_argument("--prompt-tokens", type=int, default=400, help="tokens per prompt")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per prompt")
    parser.add_argument("--reps", type=int, default=2, help="timed runs per dtype, after one warm-up each")
    parser.add_argument("--model", default="bundled", help="model name, as selfinstruct.lm.hf.HFBackend takes it")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default (one per core)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from selfinstruct.lm.base import GenerationParams
    from selfinstruct.lm.hf import CPU_DTYPE, HFBackend, cpu_has_native_bf16

    print(machine_line(), flush=True)
    lms = {dt: HFBackend(args.model, device="cpu", dtype=dt) for dt in ("float32", "bfloat16")}
    prompts = make_prompts(lms["float32"].tokenizer, args.batch, args.prompt_tokens)
    print(f"workload: {args.batch} prompts x {args.prompt_tokens} tokens, {args.new_tokens} new tokens each, "
          f"sampling (temperature 0.7, top_p 0.5); {args.reps} timed runs per dtype, best counts", flush=True)
    best: dict[str, tuple[float, float]] = {}
    totals: dict[str, list[float]] = {dt: [] for dt in lms}
    for rep in range(args.reps + 1):  # rep 0 warms up (oneDNN primitive caches, allocator)
        for dt, lm in lms.items():
            prefill, total = run(lm, prompts, args.new_tokens, seed=rep)
            tps = args.batch * args.new_tokens / total
            print(f"  {'warm-up' if rep == 0 else f'run {rep}'}  {dt:8s}  prefill {prefill:6.2f} s  "
                  f"total {total:6.2f} s  {tps:6.1f} tokens/s", flush=True)
            if rep:
                totals[dt].append(total)
                if dt not in best or total < best[dt][1]:
                    best[dt] = (prefill, total)
    tps = {dt: args.batch * args.new_tokens / t for dt, (_, t) in best.items()}
    median = {dt: args.batch * args.new_tokens / statistics.median(t) for dt, t in totals.items()}
    ratio = tps["bfloat16"] / tps["float32"]
    for dt in lms:  # best run = least disturbed by other processes; the median shows how noisy it was
        print(f"{dt + ':':9s} {tps[dt]:.1f} tokens/s best, {median[dt]:.1f} median (best prefill {best[dt][0]:.2f} s)")
    print(f"ratio bf16/f32: {ratio:.2f}x best, {median['bfloat16'] / median['float32']:.2f}x median")
    faster = "bfloat16" if ratio > 1.05 and cpu_has_native_bf16() else "float32"
    print(f"suggested CPU_DTYPE: {faster} (current selfinstruct.lm.hf.CPU_DTYPE = {CPU_DTYPE})")

    # The real path: HFBackend.generate on the same prompts as text, default dtype, stop-free.
    lm = HFBackend(args.model, device="cpu", dtype=faster)
    texts = [lm.tokenizer.decode(p) for p in prompts]
    params = GenerationParams(max_new_tokens=args.new_tokens, temperature=0.7, top_p=0.5)
    start = time.perf_counter()
    done = lm.generate(texts, params, seed=0)
    secs = time.perf_counter() - start
    made = sum(c.completion_tokens for c in done)
    print(f"HFBackend.generate ({faster}, batch {len(texts)}): {made} tokens in {secs:.2f} s = "
          f"{made / secs:.1f} tokens/s (rows that end early at EOS count only their own tokens)")


if __name__ == "__main__":
    main()
