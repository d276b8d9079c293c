"""One queue for a batch's stages: separate generate calls per stage against one call, on the hf backend.

Usage: python benchmarks/stage_queue.py [--model bundled] [--reps 3] [--max-new-tokens N]
                                       [--config configs/default.yaml]

Builds the requests one pipeline batch makes after instruction generation, from the seed file (its
instructions stand in for generated ones): instance prompts (few-shot, ~500 tokens) for tasks that
need an input, chat answers for tasks that need none, and consistency samples (chat, sampled) of
some answers. Two mixes, each timed three ways, alternating, --reps times (the minimum counts: this
box's CPU is shared and a run can lose a third of its time to steal):
- separate: one generate call per stage, as the pipeline did before the queue;
- one call: all requests in one generate call with a setting per prompt, as the pipeline does now
  (the hf backend lets chat turns and few-shot prompts take turns within the call);
- free mix: every row in the same slots whatever its kind (the batcher called directly), to show
  what the backend's kind split avoids.
Prints seconds, generated tok/s and the ratio to `separate`, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from generation import machine_line  # noqa: E402

from selfinstruct import config as C  # noqa: E402
from selfinstruct import prompts as P  # noqa: E402
from selfinstruct.consistency import sample_params  # noqa: E402
from selfinstruct.language import load as load_language  # noqa: E402
from selfinstruct.lm.base import Completion, GenerationParams, apply_stop, decode_whole_chars  # noqa: E402
from selfinstruct.pipeline import _params  # noqa: E402
from selfinstruct.records import load_seeds  # noqa: E402


def free_mix(lm, prompts: list[str], each: list[GenerationParams], seed: int) -> list[Completion]:
    """All rows through one batcher run, kinds mixed (what HFBackend no longer does)."""
    from selfinstruct.lm.batching import RowRules

    ids = lm._encode_each(prompts, [p.chat for p in each])
    rules = {p: RowRules(lm.tokenizer, p, lm.eos_ids, lm._stop_ids(p.stop)) for p in dict.fromkeys(each)}
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    ends = lm.batcher.run(ids, order, [rules[p] for p in each], seed, lm.batch_size)
    return [Completion(apply_stop(decode_whole_chars(lm.tokenizer, ends[i].tokens[:ends[i].keep]), each[i].stop),
                       len(ids[i]), ends[i].generated) for i in range(len(ids))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=0, help="cap every stage's token limit (0: the config's)")
    args = ap.parse_args()
    caps = [f"{section}.max_new_tokens={args.max_new_tokens}" for section in ("instances", "answers")
            if args.max_new_tokens]
    cfg = C.load(args.config, [f"model.name={args.model}", *caps])
    from selfinstruct.lm import load_lm

    lm = load_lm(cfg.model)
    if lm.batcher is None:
        sys.exit("Error: this model falls back to static batches; the queue benchmark needs continuous batching")
    lang = load_language(cfg.language)
    seeds = load_seeds(ROOT / cfg.seed_tasks)
    rng = random.Random(0)
    plain = [s for s in seeds if not s.is_classification]
    instance = _params(cfg.instances, P.instance_stops(lang))
    answer = _params(cfg.answers, (), chat=True)
    sample = sample_params(cfg)
    picks = rng.sample(plain, 20)
    inst = [P.build_instance_prompt(s.instruction, rng.sample(plain, cfg.prompt.instance_examples), False, lang)
            for s in picks[:4]]
    turns = [P.chat_turn(s.instruction, "") for s in picks[4:12]]
    checks = [P.chat_turn(s.instruction, "") for s in picks[12:16] for _ in range(cfg.consistency.samples)]
    mixes = {"call 1: instance prompts + answers": [(inst, instance), (turns, answer)],
             "call 2: answers + consistency samples": [(turns, answer), (checks, sample)]}
    print(machine_line(lm) + f"; {lm.batch_size} slots; min of {args.reps} alternating reps")
    lm.generate(turns[:2], answer, 0)  # warm-up
    print("| mix | rows | way | seconds | generated tok/s | ratio to separate |")
    print("|---|---|---|---|---|---|")
    for name, groups in mixes.items():
        prompts = [p for ps, _ in groups for p in ps]
        each = [s for ps, s in groups for _ in ps]
        ways = {"separate": lambda: [c for ps, s in groups for c in lm.generate(ps, s, 7)],
                "one call": lambda: lm.generate(prompts, each, 7),
                "free mix": lambda: free_mix(lm, prompts, each, 7)}
        best: dict[str, tuple[float, int]] = {}
        for _ in range(args.reps):
            for way, fn in ways.items():
                t = time.perf_counter()
                out = fn()
                dt = time.perf_counter() - t
                if way not in best or dt < best[way][0]:
                    best[way] = (dt, sum(c.completion_tokens for c in out))
        base = best["separate"][0]
        for way, (dt, tokens) in best.items():
            print(f"| {name} | {len(prompts)} | {way} | {dt:.3f} | {tokens / dt:.1f} | {base / dt:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
