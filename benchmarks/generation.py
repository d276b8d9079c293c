"""How busy is the model? The pipeline's LM stage against plain generate, and the job's time outside the model.

Usage: python benchmarks/generation.py [--model bundled] [--prompts 64] [--slots 8,16,32,64] [--static 8]
                                       [--pools 1000,10000] [--config configs/default.yaml]

In one process, for one model and the same pipeline-built prompts (round-1 instruction-generation
prompts sampled from the seed file with the project's own mix and prompt code):
- ceiling: plain `model.generate`, all prompts in one batch, exactly --new-tokens new tokens each
  (EOS suppressed, no stop strings), the config's sampling; generated tok/s.
- pipeline: prompt building + `HFBackend.generate` (continuous batching, the pipeline's stop strings,
  at each --slots) + parsing; generated tok/s (tokens the model really made, EOS and stop tokens
  included) and ratio = pipeline / ceiling. --static adds the old static-batch path at the config's
  model.batch_size, for comparison.
- outside the model: one real pipeline batch is run once to record its completions, scores and its
  model seconds; then, for each pool size, a run directory holding that many synthetic machine tasks
  gets one batch from a Pipeline whose LM replays the recording instantly. The wall time of that
  batch is everything but the model (example sampling, prompt building, parsing, filters, novelty
  against the pool, the commit); share = outside / (outside + model seconds of a batch).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from selfinstruct import config as C  # noqa: E402
from selfinstruct import prompts as P  # noqa: E402
from selfinstruct.language import load as load_language  # noqa: E402
from selfinstruct.lm.base import Completion, GenerationParams, per_prompt  # noqa: E402
from selfinstruct.mix import derive_seed, human_fraction, sample_examples  # noqa: E402
from selfinstruct.records import Instance, Task, load_seeds  # noqa: E402


def machine_line(lm) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"machine: {cpu}, {cores} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); "
            f"model {lm.name} on {lm.device} in {lm.dtype}")


def build_prompts(cfg: C.Config, seeds: list[Task], n: int) -> tuple[list[str], tuple[str, ...]]:
    """Round-1 instruction prompts as the pipeline builds them (batch by batch, each batch's own rng)."""
    lang = load_language(cfg.language, cfg.prompt.templates)
    frac = human_fraction(cfg.prompt.human_fraction, cfg.prompt.schedule, 1)
    out: list[str] = []
    batch = 0
    while len(out) < n:
        rng = random.Random(derive_seed(cfg.seed, 1, batch, "examples"))
        for _ in range(min(cfg.prompts_per_batch, n - len(out))):
            out.append(P.build_instruction_prompt(sample_examples(rng, seeds, [], cfg.prompt.num_examples, frac),
                                                  lang))
        batch += 1
    return out, P.instruction_stops(cfg.prompt.num_examples, cfg.prompt.new_per_prompt, lang)


def ceiling(lm, prompts: list[str], gen: C.SamplingConfig, new_tokens: int) -> float:
    """Plain generate, one batch, exactly `new_tokens` per row: generated tok/s."""
    import torch

    from selfinstruct.lm.hf import _left_pad

    ids, mask = _left_pad(lm._encode(prompts, False), lm.tokenizer.pad_token_id)
    sampling = {"do_sample": True, "temperature": gen.temperature, "top_p": gen.top_p, "top_k": 0} \
        if gen.temperature > 0 else {"do_sample": False}
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode():
        out = lm.model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                                max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                pad_token_id=lm.tokenizer.pad_token_id, **sampling)
    seconds = time.perf_counter() - start
    made = (out.shape[1] - ids.shape[1]) * len(prompts)
    return made / seconds


def pipeline_stage(lm, cfg: C.Config, seeds: list[Task], n: int, stops_params: GenerationParams) -> dict:
    """Prompt building + generate + parsing, timed together."""
    lang = load_language(cfg.language, cfg.prompt.templates)
    start = time.perf_counter()
    prompts, _ = build_prompts(cfg, seeds, n)
    comps = lm.generate(prompts, stops_params, derive_seed(cfg.seed, 1, 0, "instructions"))
    parsed = [P.parse_instructions(c.text, lang) for c in comps]
    seconds = time.perf_counter() - start
    tokens = sum(c.completion_tokens for c in comps)
    reasons: dict[str, int] = {}
    for c in comps:
        reasons[c.meta["finish_reason"]] = reasons.get(c.meta["finish_reason"], 0) + 1
    return {"tok_s": tokens / seconds, "seconds": seconds, "tokens": tokens, "mean": tokens / len(comps),
            "instructions": sum(map(len, parsed)), "reasons": reasons, "texts": [c.text for c in comps]}


class RecordingLM:
    """Wraps the real backend; keeps every completion and score per stage, for ReplayLM."""

    def __init__(self, lm):
        self.lm, self.name, self.has_chat_template = lm, lm.name, lm.has_chat_template
        self.generated: dict[tuple, list[Completion]] = {}
        self.scored: dict[str, list[float]] = {}
        self.seconds = 0.0

    def environment(self) -> dict:
        return self.lm.environment()

    def generate(self, prompts, params, seed):
        start = time.perf_counter()
        out = self.lm.generate(prompts, params, seed)
        self.seconds += time.perf_counter() - start
        for p, c in zip(per_prompt(params, len(prompts)), out):  # one call may hold several stages
            self.generated.setdefault((p.stop, p.chat), []).append(c)
        return out

    def score(self, prompts, continuations, chat=False):
        start = time.perf_counter()
        out = self.lm.score(prompts, continuations, chat)
        self.seconds += time.perf_counter() - start
        for c, v in zip(continuations, out):
            self.scored.setdefault(c, []).append(v)
        return out


class ReplayLM:
    """Answers instantly with the recorded completions of the same stage, cycled."""

    def __init__(self, rec: RecordingLM):
        self.rec, self.name, self.has_chat_template = rec, rec.name, rec.has_chat_template
        self.seconds = 0.0

    def environment(self) -> dict:
        return {}

    def generate(self, prompts, params, seed):
        start = time.perf_counter()
        out = []
        for i, p in enumerate(per_prompt(params, len(prompts))):
            got = self.rec.generated.get((p.stop, p.chat)) or [Completion("")]
            out.append(got[i % len(got)])
        self.seconds += time.perf_counter() - start
        return out

    def score(self, prompts, continuations, chat=False):
        return [self.rec.scored.get(c, [0.0])[i % len(self.rec.scored.get(c, [0.0]))]
                for i, c in enumerate(continuations)]


def new_store(cfg: C.Config, root: Path):
    from selfinstruct.store import RunStore

    return RunStore.create(root, C.dump(cfg), cfg.fingerprint(), {"seeds_digest": "bench", "environment": {}})


def record_batch(cfg: C.Config, lm, seeds: list[Task], root: Path) -> RecordingLM:
    """One real batch of the job (round 1, batch 0) through the real model; its completions are kept."""
    from selfinstruct.pipeline import Pipeline

    rec = RecordingLM(lm)
    store = new_store(cfg, root)
    try:
        Pipeline(cfg, rec, store, seeds, show_progress=False)._run_batch(None)
    finally:
        store.close()
    return rec


def outside_the_model(cfg: C.Config, rec: RecordingLM, seeds: list[Task], size: int, root: Path) -> dict:
    """Wall time of one batch with a pool of `size` synthetic machine tasks and an instant LM."""
    from novelty import Corpus

    from selfinstruct.pipeline import Pipeline

    corpus = Corpus(seed=size)
    store = new_store(cfg, root)
    try:
        tasks = [Task(id=f"synthetic-{i}", instruction=text, instances=[Instance("", corpus.sentence())],
                      is_classification=False, origin="machine", meta={"depth": 1})
                 for i, text in enumerate(corpus.pool(size))]
        progress = store.progress
        progress["cursor"] = {"round": 2, "batch": 0}  # round 2: prompts mix pool tasks in
        progress["round_start_tasks"] = size
        progress["totals"]["accepted"] = size
        progress = store.commit([t.to_json() for t in tasks], [], progress)
        cfg = copy.deepcopy(cfg)
        cfg.target = size + 10_000  # the pool's tasks count as accepted: keep the job below its target
        start = time.perf_counter()
        replay = ReplayLM(rec)
        pipe = Pipeline(cfg, replay, store, seeds, show_progress=False)
        setup = time.perf_counter() - start
        start = time.perf_counter()
        pipe._run_batch(None)
        batch = time.perf_counter() - start - replay.seconds
    finally:
        store.close()
    return {"setup": setup, "batch": batch}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    ap.add_argument("--model", default=None, help="model.name (default: the config's, i.e. bundled)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=None, help="ceiling: new tokens per row (default: "
                    "generation.max_new_tokens)")
    ap.add_argument("--slots", default=None, help="comma-separated model.batch_size values (default: the config's)")
    ap.add_argument("--static", type=int, default=0, metavar="B",
                    help="also the old static-batch path at batch size B (8 was the default before)")
    ap.add_argument("--pools", default="1000,10000", help="pool sizes for the outside-the-model share ('' = skip)")
    a = ap.parse_args()

    from selfinstruct.lm.hf import HFBackend

    cfg = C.load(a.config, [f"model.name={a.model}"] if a.model else [])
    seeds = load_seeds(cfg.seed_tasks if Path(cfg.seed_tasks).is_absolute() else ROOT / cfg.seed_tasks)
    slots = [int(s) for s in a.slots.split(",")] if a.slots else [cfg.model.batch_size]
    lm = HFBackend(cfg.model.name, device=cfg.model.device, dtype=cfg.model.dtype, batch_size=slots[0])
    print(machine_line(lm))
    prompts, stops = build_prompts(cfg, seeds, a.prompts)
    lengths = [len(r) for r in lm._encode(prompts, False)]
    g = cfg.generation
    params = GenerationParams(g.max_new_tokens, g.temperature, g.top_p, stops, g.repetition_penalty,
                              g.no_repeat_ngram_size)
    new_tokens = a.new_tokens or g.max_new_tokens
    print(f"{len(prompts)} instruction prompts, {sum(lengths) / len(lengths):.0f} prompt tokens on average "
          f"({min(lengths)}-{max(lengths)}); max_new_tokens {g.max_new_tokens}, temperature {g.temperature}, "
          f"top_p {g.top_p}, {len(stops)} stop strings")

    lm.generate(prompts[:2], GenerationParams(4, g.temperature, g.top_p), 0)  # warm-up: first-call costs
    top = ceiling(lm, prompts, g, new_tokens)
    print(f"\nceiling: plain generate, batch {len(prompts)}, {new_tokens} new tokens, no stops: {top:.1f} tok/s")
    print("\n| path | slots | generated tok/s | ratio | s | mean tokens/row | finish |")
    print("|---|---|---|---|---|---|---|")
    runs = {}
    for s in slots:
        lm.batch_size = s
        r = runs[s] = pipeline_stage(lm, cfg, seeds, a.prompts, params)
        print(f"| pipeline, continuous | {s} | {r['tok_s']:.1f} | {r['tok_s'] / top:.2f} | {r['seconds']:.0f} "
              f"| {r['mean']:.0f} | {r['reasons']} |", flush=True)
    if a.static:
        batcher, lm.batcher, lm.batch_size = lm.batcher, None, a.static
        r = pipeline_stage(lm, cfg, seeds, a.prompts, params)
        print(f"| pipeline, static (before) | {a.static} | {r['tok_s']:.1f} | {r['tok_s'] / top:.2f} "
              f"| {r['seconds']:.0f} | {r['mean']:.0f} | {r['reasons']} |", flush=True)
        lm.batcher = batcher
    lm.batch_size = cfg.model.batch_size
    if len(runs) > 1:  # per-row generators: slots may change a sample only through floating-point rounding
        first = runs[slots[0]]["texts"]
        same = ", ".join(f"{s}: {sum(x == y for x, y in zip(first, r['texts']))}/{len(first)}"
                         for s, r in runs.items() if s != slots[0])
        print(f"\ncompletions identical to slots {slots[0]}'s (same seed, {lm.dtype}): {same}")

    pools = [int(p) for p in a.pools.split(",") if p]
    if pools:
        with tempfile.TemporaryDirectory() as tmp:
            rec = record_batch(cfg, lm, seeds, Path(tmp) / "record")
            print(f"\none real batch of the job ({cfg.prompts_per_batch} prompts, all four stages): "
                  f"{rec.seconds:.1f} s in the model")
            print("\n| pool (machine tasks) | outside the model per batch, s | share of the batch's wall time "
                  "| pipeline setup (index build), s |")
            print("|---|---|---|---|")
            for size in pools:
                o = outside_the_model(cfg, rec, seeds, size, Path(tmp) / f"pool-{size}")
                share = o["batch"] / (o["batch"] + rec.seconds)
                print(f"| {size:,} | {o['batch']:.3f} | {share:.2%} | {o['setup']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
