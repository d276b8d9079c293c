"""The Self-Instruct loop: rounds of batches, each batch generated, filtered and committed atomically.

Every random choice is seeded from (job seed, round, batch, purpose), and decisions are made in
batch order then candidate order, so a resumed job yields exactly the uninterrupted job's data.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from selfinstruct import prompts as P
from selfinstruct.config import Config, SamplingConfig
from selfinstruct.errors import ModelError, Stopped
from selfinstruct import consistency as C
from selfinstruct.filters import Context, check_instruction, filter_instances, norm_label
from selfinstruct.language import tokens
from selfinstruct.language import load as load_language
from selfinstruct.lm.base import LM, Completion, GenerationParams
from selfinstruct.mix import derive_seed, human_fraction, sample_examples
from selfinstruct.novelty import NoveltyIndex, rouge_l
from selfinstruct.records import Instance, Task
from selfinstruct.store import RunStore, fault

log = logging.getLogger("selfinstruct")


@dataclass
class Candidate:
    """One generated instruction on its way to acceptance or rejection."""

    id: str
    instruction: str
    prompt_index: int
    examples: list[Task]
    instances: list[Instance] = field(default_factory=list)  # alpaca style: from the generation prompt
    cut: bool = False  # the last item of a completion that ran into max_new_tokens
    instance_cut: list[bool] = field(default_factory=list)  # per instance: its output ran into the limit
    instance_unstable: list[bool] = field(default_factory=list)  # per instance: failed the consistency check
    checks: list[dict] = field(default_factory=list)  # consistency checks run on its answers (provenance)
    is_classification: bool | None = None
    margin: float | None = None  # log P(Yes) - log P(No) to the classification question
    demo_labels: frozenset[str] = frozenset()  # labels of the demonstrations in its instance prompt
    score: float = 0.0
    nearest: str | None = None


OPENING_FLOOR = 3  # a small pool may still hold this many tasks with one opening


class Pipeline:
    def __init__(self, cfg: Config, lm: LM, store: RunStore, seeds: list[Task], show_progress: bool = True,
                 stop_requested: Callable[[], bool] = lambda: False):
        self.cfg, self.lm, self.store, self.seeds = cfg, lm, store, seeds
        self.show_progress = show_progress
        self.stop_requested = stop_requested  # polled at safe points: between batches
        self.lang = load_language(cfg.language, cfg.prompt.templates)  # templates and filter data
        self.progress = copy.deepcopy(store.progress)
        self.machine: list[Task] = store.tasks()
        self.texts: dict[str, str] = {t.id: t.instruction for t in seeds + self.machine}
        self.depth: dict[str, int] = {t.id: t.depth for t in self.machine}
        started = time.perf_counter()
        self.index = NoveltyIndex(cfg.novelty.threshold, cfg.novelty.tokenizer)
        self.index.add_many((t.instruction, t.id) for t in seeds + self.machine)
        log.info("novelty index: %d instructions in %.2fs", len(self.index), time.perf_counter() - started)
        self.openings = Counter(self._opening(t.instruction) for t in seeds + self.machine)
        self.batches_per_round = math.ceil(cfg.prompts_per_round / cfg.prompts_per_batch)
        self.response = self._response_mode()

    def _response_mode(self) -> str:
        """How outputs are written: "chat" (the model's chat template) or "fewshot" (the instance prompt)."""
        mode = self.cfg.instances.response
        if mode == "auto":
            return "chat" if getattr(self.lm, "has_chat_template", False) else "fewshot"
        if mode == "chat" and not getattr(self.lm, "has_chat_template", False):
            raise ModelError(f"instances.response is chat, but model {self.lm.name} has no chat template; "
                             "use instances.response: fewshot (or auto)")
        return mode

    # ---- stopping ----

    def stop_reason(self) -> str | None:
        p, cfg = self.progress, self.cfg
        if p["totals"]["accepted"] >= cfg.target:
            return f"target reached: {p['totals']['accepted']} accepted tasks (target {cfg.target})"
        if p["cursor"]["round"] > cfg.max_rounds:
            return f"round limit reached: {cfg.max_rounds} rounds ({p['totals']['accepted']} of {cfg.target} accepted)"
        if p["rounds_without_accept"] >= cfg.stall.rounds_without_accept:
            return (f"stalled: no task accepted in {p['rounds_without_accept']} rounds in a row "
                    f"(stall.rounds_without_accept); see rejected.jsonl for why")
        return None

    def run(self) -> str:
        self._classify_unknown_seeds()
        bar = self._bar()
        try:
            while (reason := self.stop_reason()) is None:
                if self.stop_requested():
                    raise Stopped(self._stopped_message())
                self._run_batch(bar)
        finally:
            if bar is not None:
                bar.close()
        if self.progress["stop_reason"] != reason:
            self.progress["stop_reason"] = reason
            self.progress = self.store.commit([], [], self.progress)
        return reason

    def _stopped_message(self) -> str:
        r, b = self.progress["cursor"]["round"], self.progress["cursor"]["batch"]
        if b == 0 and r == 1:
            where = "before the first batch"
        else:  # the last committed batch, 1-based for people
            where = f"after round {r} batch {b}" if b else f"after round {r - 1} batch {self.batches_per_round}"
        return f"stopped {where}; resume with: selfinstruct resume {self.store.root}"

    def _bar(self):
        if not self.show_progress:
            return None
        from tqdm import tqdm

        return tqdm(total=self.cfg.target, initial=min(self.progress["totals"]["accepted"], self.cfg.target),
                    unit="task", dynamic_ncols=True, desc="accepted")

    # ---- one batch ----

    def _seed(self, round_no: int, batch: int, purpose: str) -> int:
        return derive_seed(self.cfg.seed, round_no, batch, purpose)

    def _generate(self, prompts: list[str], params: GenerationParams | list[GenerationParams],
                  seed: int) -> list[Completion]:
        if not prompts:
            return []
        started = time.perf_counter()
        out = self.lm.generate(prompts, params, seed)
        t = self.progress["totals"]
        t["lm_seconds"] += time.perf_counter() - started
        t["prompt_tokens"] += sum(c.prompt_tokens for c in out)
        t["completion_tokens"] += sum(c.completion_tokens for c in out)
        return out

    def _run_batch(self, bar) -> None:
        cfg, p = self.cfg, self.progress
        r, b = p["cursor"]["round"], p["cursor"]["batch"]
        pool_machine = self.machine[:p["round_start_tasks"]]  # the pool as it stood when the round began
        frac = human_fraction(cfg.prompt.human_fraction, cfg.prompt.schedule, r)
        first = b * cfg.prompts_per_batch
        n_prompts = min(cfg.prompts_per_batch, cfg.prompts_per_round - first)
        rng = random.Random(self._seed(r, b, "examples"))
        example_sets = [sample_examples(rng, self.seeds, pool_machine, cfg.prompt.num_examples, frac)
                        for _ in range(n_prompts)]
        candidates = self._propose(r, b, example_sets)
        rejected: list[dict] = []
        reasons: Counter = Counter()

        def reject(c: Candidate, stage: str, reason: str, **extra) -> None:
            reasons[f"{stage}:{reason}"] += 1
            rejected.append({"id": c.id, "round": r, "batch": b, "stage": stage, "reason": reason,
                             "score": extra.pop("score", None), "text": c.instruction, **extra})

        survivors, batch_openings = [], Counter()
        for c in candidates:
            reason = check_instruction(c.instruction, cfg.filters, Context(cut=c.cut, lang=self.lang))
            opening = self._opening(c.instruction)
            seen = self.openings[opening] + batch_openings[opening]  # the pool's, and this batch's survivors
            if reason:
                reject(c, "filter", reason)
            elif not self._novel(c, survivors):
                reject(c, "novelty", "too_similar", score=c.score, nearest=c.nearest,
                       nearest_text=self.texts.get(c.nearest))
            elif self._common(seen, len(self.seeds) + len(self.machine) + len(survivors)):
                reject(c, "novelty", "common_opening", score=c.score, opening=opening, count=seen)
            else:
                survivors.append(c)
                batch_openings[opening] += 1
                self.texts[c.id] = c.instruction  # ids are unique; lets provenance name in-batch neighbours
        if cfg.style == "self-instruct":
            self._classify(survivors, r, b)
        else:  # alpaca: the instance came with the instruction
            for c in survivors:
                if self._input_free(c):
                    c.instances = [Instance("", i.output) for i in c.instances]
        self._complete(survivors, r, b)
        accepted = []
        for c in survivors:
            ctx = Context(instruction=c.instruction, classification=bool(c.is_classification),
                          demo_labels=c.demo_labels, lang=self.lang)
            kept, dropped = filter_instances(c.instances, cfg.filters, ctx, c.instance_cut, c.instance_unstable)
            if not kept:
                why = dropped.most_common(1)[0][0] if dropped else "no_instances"
                reject(c, "instances", why, score=c.score,
                       instances=[vars(i) for i in c.instances])
                continue
            c.instances = kept
            accepted.append(self._task(c, r, b, frac))

        # counters, then the one atomic commit for this batch
        stats = p["rounds"].setdefault(str(r), {"accepted": 0, "candidates": 0, "rejected": {},
                                                "human_fraction": frac})
        stats["accepted"] += len(accepted)
        stats["candidates"] += len(candidates)
        for key, n in reasons.items():
            stats["rejected"][key] = stats["rejected"].get(key, 0) + n
        t = p["totals"]
        t["accepted"] += len(accepted)
        t["rejected"] += len(rejected)
        t["candidates"] += len(candidates)
        if b + 1 < self.batches_per_round:
            p["cursor"] = {"round": r, "batch": b + 1}
        else:
            p["cursor"] = {"round": r + 1, "batch": 0}
            p["round_start_tasks"] = len(self.machine) + len(accepted)
            p["rounds_without_accept"] = 0 if stats["accepted"] else p["rounds_without_accept"] + 1
            log.info("round %d done: %d accepted of %d candidates; rejected %s", r, stats["accepted"],
                     stats["candidates"], dict(sorted(stats["rejected"].items())) or "none")
        self.progress = self.store.commit([task.to_json() for task in accepted], rejected, p)
        for task in accepted:
            self.machine.append(task)
            self.texts[task.id] = task.instruction
            self.depth[task.id] = task.depth
            self.index.add(task.instruction, task.id)
            self.openings[self._opening(task.instruction)] += 1
        if p["cursor"]["batch"] == 0:
            fault("round_end")
        if bar is not None:
            bar.update(max(0, min(t["accepted"], self.cfg.target) - bar.n))
            tps = t["completion_tokens"] / t["lm_seconds"] if t["lm_seconds"] else 0.0
            bar.set_postfix_str(f"round {r} batch {b + 1}/{self.batches_per_round} "
                                f"acc {t['accepted'] / max(t['candidates'], 1):.0%} {tps:.0f} tok/s")

    # ---- stages ----

    def _propose(self, r: int, b: int, example_sets: list[list[Task]]) -> list[Candidate]:
        cfg = self.cfg
        k = cfg.prompt.num_examples
        if cfg.style == "alpaca":
            prompts = [P.build_alpaca_prompt(ex, self.lang) for ex in example_sets]
            stops = P.alpaca_stops(k, cfg.prompt.new_per_prompt, self.lang)
        else:
            prompts = [P.build_instruction_prompt(ex, self.lang) for ex in example_sets]
            stops = P.instruction_stops(k, cfg.prompt.new_per_prompt, self.lang)
        completions = self._generate(prompts, _params(cfg.generation, stops), self._seed(r, b, "instructions"))
        out: list[Candidate] = []
        for j, (ex, comp) in enumerate(zip(example_sets, completions)):
            cut = comp.meta.get("finish_reason") == "length"
            if cfg.style == "alpaca":
                items = P.parse_alpaca(comp.text, self.lang)
                for k, (instruction, inst) in enumerate(items):
                    last = cut and k == len(items) - 1  # the last item ran into the limit
                    # A cut instance belongs to the last item; its instruction may be whole.
                    out.append(Candidate(f"r{r}-b{b}-c{len(out)}", instruction, j, ex, [inst] if inst else [],
                                         cut=last and inst is None, instance_cut=[last] if inst else []))
            else:
                items = P.parse_instructions(comp.text, self.lang)
                for k, instruction in enumerate(items):
                    out.append(Candidate(f"r{r}-b{b}-c{len(out)}", instruction, j, ex,
                                         cut=cut and k == len(items) - 1))
        return out

    def _opening(self, instruction: str) -> str:
        return " ".join(t.lower() for t in tokens(instruction)[:self.cfg.novelty.opening_words])

    def _common(self, seen: int, pool: int) -> bool:
        """Whether an opening that `seen` tasks of the pool (seeds and machine) start has its share."""
        share = self.cfg.novelty.opening_share
        return share < 1.0 and seen >= max(OPENING_FLOOR, math.ceil(share * pool))

    def _novel(self, c: Candidate, earlier: list[Candidate]) -> bool:
        """Exact ROUGE-L against the pool, then against this batch's earlier survivors (pool wins ties)."""
        verdict = self.index.check(c.instruction)
        c.score, c.nearest = verdict.score, verdict.nearest
        tok = self.cfg.novelty.tokenizer
        for other in earlier:
            s = rouge_l(other.instruction, c.instruction, tok)
            if s > c.score:
                c.score, c.nearest = s, other.id
        return c.score <= self.cfg.novelty.threshold

    def _margins(self, instructions: list[str]) -> list[float]:
        """log P(" Yes") - log P(" No") after the classification question, one per instruction."""
        if not instructions:
            return []
        prompts = [P.build_classify_prompt(x, self.lang) for x in instructions]
        answer_yes, answer_no = P.classify_answers(self.lang)
        started = time.perf_counter()
        yes = self.lm.score(prompts, [answer_yes] * len(prompts))
        no = self.lm.score(prompts, [answer_no] * len(prompts))
        self.progress["totals"]["lm_seconds"] += time.perf_counter() - started
        return [round(y - n, 4) for y, n in zip(yes, no)]  # rounded: provenance, not noise

    def _classify(self, cands: list[Candidate], r: int, b: int) -> None:
        for c, m in zip(cands, self._margins([c.instruction for c in cands])):
            c.margin, c.is_classification = m, m > self.cfg.instances.classification_margin

    def _demos(self, rng: random.Random, classification: bool) -> list[Task]:
        pool = [t for t in self.seeds if self._is_cls(t) == classification]
        return rng.sample(pool, min(self.cfg.prompt.instance_examples, len(pool)))

    def _is_cls(self, t: Task) -> bool:
        if t.is_classification is not None:
            return t.is_classification
        return bool(self.progress["seed_classification"].get(t.id, False))

    def _input_free(self, c: Candidate) -> bool:
        """A non-classification instruction that refers to no input gets none (instances.inputs: auto)."""
        return (self.cfg.instances.inputs == "auto" and not c.is_classification
                and not P.needs_input(c.instruction, self.lang))

    def _self_contained(self, c: Candidate) -> bool:
        return self.response == "chat" and self._input_free(c)

    def _complete(self, cands: list[Candidate], r: int, b: int) -> None:
        """Instances, chat answers and consistency samples, through one queue of generate calls.

        Work is queued as soon as what it needs exists: the first call holds the instance prompts of
        tasks that need an input and the answers of tasks that need none; the answers to generated
        inputs, and the samples that check the first answers, ride in the next call. Each request
        carries its own sampling settings, so a backend fills its slots across stages.
        """
        queue: list[tuple[str, GenerationParams, Callable[[Completion], None]]] = []
        answer_params = _params(self.cfg.answers, (), chat=True)
        asked: dict[str, list[tuple[Candidate, int]]] = {}  # chat turn -> instances waiting on its answer
        answered: dict[str, Completion] = {}
        check, sample_params = self.cfg.consistency, C.sample_params(self.cfg)

        def settle(c: Candidate, k: int, turn: str) -> None:
            out = answered[turn]
            c.instances[k] = Instance(c.instances[k].input, out.text.strip())
            c.instance_cut[k] = out.meta.get("finish_reason") == "length"

        def on_answer(turn: str, out: Completion) -> None:
            answered[turn] = out
            for c, k in asked[turn]:
                settle(c, k, turn)
            c, k = asked[turn][0]
            key = C.check_key(self.cfg, self.lang, c.instruction, c.instances[k].input, turn, out)
            if key is None:
                return
            samples: list[str] = []

            def on_sample(o: Completion) -> None:
                samples.append(o.text)
                if len(samples) == check.samples:
                    verdict = {**key, **C.verdict(key, samples)}
                    for c2, k2 in asked[turn]:
                        c2.instance_unstable[k2] = not verdict["agreed"]
                        c2.checks.append({"input": c2.instances[k2].input, **verdict})

            queue.extend((turn, sample_params, on_sample) for _ in range(check.samples))

        def ask(c: Candidate) -> None:
            """Queue the chat answer of each of c's instances (labels stay as the task wrote them)."""
            c.instance_unstable = [False] * len(c.instances)
            if self.response != "chat" or c.is_classification:
                return
            for k, inst in enumerate(c.instances):
                turn = P.chat_turn(c.instruction, inst.input)
                if turn in answered:  # a self-contained task's instances all ask the same: answer once
                    asked[turn].append((c, k))
                    settle(c, k, turn)
                elif turn in asked:
                    asked[turn].append((c, k))
                else:
                    asked[turn] = [(c, k)]
                    queue.append((turn, answer_params, lambda out, turn=turn: on_answer(turn, out)))

        def on_instances(c: Candidate, out: Completion) -> None:
            c.instances = P.parse_instances(out.text, c.is_classification, self.lang)
            if self._input_free(c):
                c.instances = [Instance("", i.output) for i in c.instances]
            cut = out.meta.get("finish_reason") == "length"
            c.instance_cut = [cut and k == len(c.instances) - 1 for k in range(len(c.instances))]
            ask(c)

        if self.cfg.style == "self-instruct":
            rng = random.Random(self._seed(r, b, "demos"))
            instance_params = _params(self.cfg.instances, P.instance_stops(self.lang))
            for c in cands:
                demos = self._demos(rng, c.is_classification)  # drawn for every candidate: the rng stays in step
                if self._self_contained(c):
                    # No input to write, and the chat reply writes the output: no instance prompt.
                    c.instances, c.instance_cut = [Instance("", "")], [False]
                    ask(c)
                    continue
                c.demo_labels = frozenset(norm_label(i.output) for d in demos for i in d.instances)
                prompt = P.build_instance_prompt(c.instruction, demos, c.is_classification, self.lang)
                queue.append((prompt, instance_params, lambda out, c=c: on_instances(c, out)))
        else:
            for c in cands:
                ask(c)
        call = 0
        while queue:
            batch, queue = queue, []
            outs = self._generate([q[0] for q in batch], [q[1] for q in batch], self._seed(r, b, f"queue {call}"))
            for (_, _, done), out in zip(batch, outs):
                done(out)
            call += 1

    def _classify_unknown_seeds(self) -> None:
        """Seeds whose file left is_classification unknown get it decided once, then saved."""
        known = self.progress["seed_classification"]
        todo = [t for t in self.seeds if t.is_classification is None and t.id not in known]
        if not todo or self.cfg.style != "self-instruct":
            return
        log.info("deciding is_classification for %d seed tasks", len(todo))
        for t, m in zip(todo, self._margins([t.instruction for t in todo])):
            known[t.id] = m > self.cfg.instances.classification_margin
        self.progress = self.store.commit([], [], self.progress)

    def _task(self, c: Candidate, r: int, b: int, frac: float) -> Task:
        humans = [t.id for t in c.examples if t.origin == "human"]
        machines = [t.id for t in c.examples if t.origin != "human"]
        cfg = self.cfg
        gen = {**dataclasses.asdict(cfg.generation), "seed": cfg.seed}
        meta = {
            "round": r, "batch": b, "prompt": c.prompt_index,
            "depth": 1 + max((self.depth.get(m, 1) for m in machines), default=0),
            "human_examples": humans, "machine_examples": machines, "human_fraction": frac,
            "nearest": {"id": c.nearest, "score": c.score,
                        "instruction": self.texts.get(c.nearest) if c.nearest else None},
            "generation": gen, "instances": dataclasses.asdict(cfg.instances), "model": self.lm.name, "style": cfg.style,
            "language": cfg.language,
            "response": self.response, "classification_margin": c.margin,
        }
        if self.response == "chat":
            meta["answers"] = dataclasses.asdict(cfg.answers)
        if c.checks:
            meta["consistency"] = {**dataclasses.asdict(cfg.consistency), "checks": c.checks}
        return Task(id=c.id, instruction=c.instruction, instances=c.instances,
                    is_classification=c.is_classification, origin="machine", meta=meta)


def _params(s: SamplingConfig, stop: tuple[str, ...], chat: bool = False) -> GenerationParams:
    """GenerationParams for one stage from its config section."""
    return GenerationParams(s.max_new_tokens, s.temperature, s.top_p, stop, s.repetition_penalty,
                            s.no_repeat_ngram_size, chat)
