"""Which decoding knobs per stage? Repetition penalty / no-repeat n-grams against the filters' flags.

Usage: python benchmarks/decoding.py RUN_DIR [--tasks 40] [--prompts 16] [--stages answers,instructions]

Two stages, the same model and prompts for every setting, so only the knob differs:
- answers: the chat reply to each of --tasks instructions (+ first input) taken from RUN_DIR's
  accepted tasks; reports the share each output filter flags (looping, repetitive,
  repeated_phrase, truncated, marker_only) and the mean reply length in words.
- instructions: --prompts instruction-generation prompts built from the seeds as the pipeline
  builds them (round 1, the job seed); reports candidates per prompt and the share each
  instruction filter drops.
Rates are proxies that pick defaults; the hand audit (`selfinstruct audit`) judges the data.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from selfinstruct import config as C  # noqa: E402
from selfinstruct import filters as F  # noqa: E402
from selfinstruct import prompts as P  # noqa: E402
from selfinstruct.lm.base import GenerationParams  # noqa: E402
from selfinstruct.mix import derive_seed, sample_examples  # noqa: E402
from selfinstruct.records import Instance, load_seeds  # noqa: E402
from selfinstruct.store import RunStore  # noqa: E402

ANSWER_SETTINGS = [(1.0, 0), (1.15, 0), (1.3, 0), (1.0, 4), (1.15, 4)]  # (repetition_penalty, no_repeat_ngram)
INSTRUCTION_SETTINGS = [(1.0, 0), (1.1, 0), (1.0, 6)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--stages", default="answers,instructions", help="comma-separated: answers, instructions")
    a = ap.parse_args()
    stages = set(a.stages.split(","))
    from selfinstruct.lm.hf import HFBackend

    store = RunStore.open(a.run_dir, lock=False)
    cfg = C.load_text(store.saved_config_text(), a.run_dir)
    tasks = random.Random(0).sample(store.tasks(), min(a.tasks, len(store.tasks())))
    lm = HFBackend(cfg.model.name, batch_size=cfg.model.batch_size)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; model {lm.name} "
          f"{lm.dtype}; {len(tasks)} tasks from {a.run_dir}")
    fcfg = C.FilterConfig()
    if "answers" in stages:
        answers(lm, tasks, fcfg, a.max_new_tokens)
    if "instructions" in stages:
        instructions(lm, cfg, fcfg, a.prompts)
    return 0


def answers(lm, tasks, fcfg, max_new_tokens: int) -> None:
    turns = [P.chat_turn(t.instruction, t.instances[0].input if t.instances else "") for t in tasks]
    print("\nanswers (chat, greedy): rp, no_repeat | flagged by filter | mean words | s")
    for rp, nr in ANSWER_SETTINGS:
        start = time.perf_counter()
        outs = lm.generate(turns, GenerationParams(max_new_tokens, 0.0, 1.0, (), rp, nr, chat=True), seed=0)
        flags = Counter()
        for t, o in zip(tasks, outs):
            cut = o.meta.get("finish_reason") == "length"
            _, dropped = F.filter_instances([Instance("", o.text)], fcfg, F.Context(instruction=t.instruction), [cut])
            flags.update(dropped)
        words = sum(len(o.text.split()) for o in outs) / len(outs)
        print(f"  {rp:4} {nr} | {dict(flags) or 'none'} | {words:.0f} | {time.perf_counter() - start:.0f}")



def instructions(lm, cfg, fcfg, n_prompts: int) -> None:
    seeds = load_seeds(cfg.seed_tasks)
    rng = random.Random(derive_seed(cfg.seed, 1, 0, "examples"))
    prompts = [P.build_instruction_prompt(sample_examples(rng, seeds, [], cfg.prompt.num_examples, 1.0))
               for _ in range(n_prompts)]
    stops = P.instruction_stops(cfg.prompt.num_examples, cfg.prompt.new_per_prompt)
    g = cfg.generation
    print("\ninstructions (sampled): rp, no_repeat | candidates/prompt | dropped by filter (share) | s")
    for rp, nr in INSTRUCTION_SETTINGS:
        start = time.perf_counter()
        outs = lm.generate(prompts, GenerationParams(g.max_new_tokens, g.temperature, g.top_p, stops, rp, nr), seed=1)
        items = [(x, o.meta.get("finish_reason") == "length" and k == len(xs) - 1)
                 for o in outs for xs in [P.parse_instructions(o.text)] for k, x in enumerate(xs)]
        why = Counter(F.check_instruction(x, fcfg, F.Context(cut=cut)) for x, cut in items)
        kept = why.pop(None, 0)
        share = {k: f"{v / len(items):.0%}" for k, v in why.most_common()}
        print(f"  {rp:4} {nr} | {len(items) / len(prompts):.1f} | kept {kept / len(items):.0%}; {share} | "
              f"{time.perf_counter() - start:.0f}")


if __name__ == "__main__":
    sys.exit(main())
