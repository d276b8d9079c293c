"""Continuous batching over one KV cache: a finished row leaves the batch and its slot takes the next prompt.

A static batch runs until its longest row ends, so on the pipeline's prompts (rows end at about half
of max_new_tokens) half of the model's work was padding. Here every step feeds only live rows; when
rows finish, their cache rows are dropped and waiting prompts are prefilled and merged in.

Each prompt samples from its own generator seeded from (seed, prompt index), so which rows share
its batch (slots, queue order) changes a row's samples only through floating-point rounding.
transformers' own continuous batching (generate_batch) was not used: in 5.24 it samples with the
global RNG across the batch (no per-request seed), has no stop strings and drops custom logits
processors, and on CPU it took 15 s for four 12-token rows of a tiny model.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections import deque
from dataclasses import dataclass, field

from selfinstruct.lm.base import GenerationParams

STOP_WINDOW_SLACK = 16  # tokens decoded beyond the longest stop string's length (every token is >= 1 char)
NUCLEUS_PEEK = 256  # likeliest tokens searched for the top-p nucleus before sorting the whole vocabulary
CACHE_ROOM = 64  # positions a cache layer reserves beyond what it holds, so most decode steps write in place


def row_seed(seed: int, index: int) -> int:
    """The seed of prompt `index`'s own generator: stable across runs, processes and PYTHONHASHSEED."""
    digest = hashlib.sha256(f"{seed}:row:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass
class Finished:
    """How one row ended: every new token, how many count as generated, how many to decode, and why."""

    tokens: list[int]
    generated: int
    keep: int
    reason: str  # "eos" | "stop" | "length"


@dataclass
class _Row:
    index: int
    prompt: list[int]
    generator: object  # torch.Generator on the CPU: the same uniforms on every device
    rules: "RowRules"
    tokens: list[int] = field(default_factory=list)


class RowRules:
    """Per-row logits processing, sampling and stopping, identical whatever the batch holds."""

    def __init__(self, tokenizer, params: GenerationParams, eos_ids: set[int], stop_ids: set[int]):
        self.tokenizer, self.params = tokenizer, params
        self.eos_ids, self.stop_ids = eos_ids, stop_ids - eos_ids
        self.stop = tuple(s for s in params.stop if s)
        self.window = max((len(s) for s in self.stop), default=0) + STOP_WINDOW_SLACK

    def pick(self, logits, rows: list[_Row]) -> list[int]:
        """Next token per row from float32 logits [rows, vocab]."""
        import torch

        p = self.params
        if p.repetition_penalty != 1.0:  # as transformers' RepetitionPenaltyLogitsProcessor, completion only
            seen = torch.zeros_like(logits, dtype=torch.bool)
            r_idx = [i for i, row in enumerate(rows) for _ in row.tokens]
            t_idx = [t for row in rows for t in row.tokens]
            if t_idx:
                seen[r_idx, t_idx] = True
                penalised = torch.where(logits < 0, logits * p.repetition_penalty, logits / p.repetition_penalty)
                logits = torch.where(seen, penalised, logits)
        if p.no_repeat_ngram_size > 0:
            r_idx, t_idx = [], []
            for i, row in enumerate(rows):
                banned = _banned_ngram_tokens(row.tokens, p.no_repeat_ngram_size)
                r_idx += [i] * len(banned)
                t_idx += banned
            if t_idx:
                logits = logits.clone()
                logits[r_idx, t_idx] = float("-inf")
        if p.temperature <= 0:
            return logits.argmax(-1).tolist()
        logits = logits / p.temperature
        if p.top_p < 1.0:
            logits = nucleus(logits, p.top_p)
        probs = torch.softmax(logits.double(), dim=-1)
        cdf = probs.cumsum(-1)
        # One uniform per row from the row's own generator: inverse-CDF sampling, so a row's draw never
        # depends on which rows share the batch. side="right" never lands on a zero-probability token.
        u = torch.cat([torch.rand(1, generator=row.generator, dtype=torch.float64) for row in rows])
        target = (u.to(cdf.device) * cdf[:, -1])[:, None]
        picked = torch.searchsorted(cdf, target, side="right").clamp(max=cdf.shape[-1] - 1)
        return picked[:, 0].tolist()

    def finished(self, row: _Row) -> Finished | None:
        """Whether the row's last token ended it (EOS, a stop token or string, or the token limit)."""
        n, last = len(row.tokens), row.tokens[-1]
        if last in self.eos_ids:  # counted as generated, not decoded
            return Finished(row.tokens, n, n - 1, "eos")
        if last in self.stop_ids:
            return Finished(row.tokens, n, n - 1, "stop")
        if self.stop:
            text = self.tokenizer.decode(row.tokens[-self.window:], skip_special_tokens=True)
            if any(s in text for s in self.stop):
                return Finished(row.tokens, n, n, "stop")  # apply_stop cuts the text
        if n >= self.params.max_new_tokens:
            return Finished(row.tokens, n, n, "length")
        return None


def nucleus(logits, top_p: float, peek: int = NUCLEUS_PEEK):
    """`logits` with the tokens outside each row's top-p nucleus at -inf, as transformers' TopPLogitsWarper.

    The warper sorts the whole vocabulary at every step (27 ms of a 16-row step of the bundled model on
    2 CPU cores, 8 % of the instruction stage). The nucleus is nearly always among the `peek` likeliest
    tokens, so those are found with topk; a row whose `peek` likeliest tokens hold less than top_p goes
    through the warper itself. A token is kept when the mass of the tokens likelier than it is below
    top_p (the warper: the mass of it and the tokens less likely is above 1 - top_p); the likeliest is
    always kept.
    """
    import torch

    peek = min(peek, logits.shape[-1])
    probs = torch.softmax(logits, dim=-1)
    top, idx = probs.topk(peek, dim=-1)
    above = top.cumsum(-1) - top
    keep = above < top_p
    keep[:, 0] = True
    out = torch.full_like(logits, float("-inf"))
    out.scatter_(-1, idx, torch.where(keep, logits.gather(-1, idx), out[:, :peek]))
    wide = (top.sum(-1) < top_p).nonzero()[:, 0]  # the nucleus may reach past the peek
    if len(wide):
        from transformers.generation.logits_process import TopPLogitsWarper

        out[wide] = TopPLogitsWarper(top_p)(None, logits[wide])
    return out


def _banned_ngram_tokens(tokens: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram of `tokens` (as transformers' NoRepeatNGramLogitsProcessor)."""
    if len(tokens) + 1 < n:
        return []
    if n == 1:
        return sorted(set(tokens))
    prefix = tokens[len(tokens) - n + 1:]
    return sorted({tokens[j + n - 1] for j in range(len(tokens) - n + 1) if tokens[j:j + n - 1] == prefix})


@functools.cache
def _slot_layer_class():
    """DynamicLayer that writes new positions into reserved room instead of re-concatenating the whole cache.

    DynamicLayer.update runs torch.cat over every cached position at every step: on the bundled model
    in float32 on 2 CPU cores that copy was 26 % of a 64-row decode step. Here `keys`/`values` are views
    of a buffer with CACHE_ROOM spare positions; a step copies only its new position, and the buffer is
    rebuilt (one copy) when the room runs out or when the batcher assigns `keys`/`values` (evict, merge).
    The values attended are the same tensors, so logits are bit-identical to DynamicLayer's.
    """
    from transformers.cache_utils import DynamicLayer

    class SlotLayer(DynamicLayer):
        _buffers: tuple | None = None  # (key buffer, value buffer, the views last handed out)

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            keys, values = self.keys, self.values
            held = keys.shape[-2] if keys.numel() else 0
            add = key_states.shape[-2]
            buffers = self._buffers
            if buffers is None or buffers[2] is not keys or held + add > buffers[0].shape[-2]:
                k_buf = key_states.new_empty((*key_states.shape[:2], held + add + CACHE_ROOM, key_states.shape[-1]))
                v_buf = value_states.new_empty((*value_states.shape[:2], k_buf.shape[-2], value_states.shape[-1]))
                if held:
                    k_buf[:, :, :held] = keys
                    v_buf[:, :, :held] = values
            else:
                k_buf, v_buf = buffers[0], buffers[1]
            k_buf[:, :, held:held + add] = key_states
            v_buf[:, :, held:held + add] = value_states
            self.keys, self.values = k_buf[:, :, :held + add], v_buf[:, :, :held + add]
            self._buffers = (k_buf, v_buf, self.keys)
            return self.keys, self.values

    return SlotLayer


def new_cache(config):
    """A DynamicCache for `config` whose layers write in place (see _slot_layer_class).

    Every layer becomes a SlotLayer: the batcher runs only models whose cache is all plain DynamicLayer
    (SlotBatcher.supports), so no sliding-window or other layer kind is replaced here.
    """
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    layer_class = _slot_layer_class()
    cache.layers = [layer_class() for _ in cache.layers]
    return cache


class SlotBatcher:
    """Generates every prompt through `slots` concurrent rows of one KV cache, refilling freed slots."""

    def __init__(self, model, pad_id: int, device: str):
        self.model, self.pad_id, self.device = model, pad_id, device
        params = inspect.signature(model.forward).parameters
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}  # last position's logits only
        # transformers 5.24 renamed past_key_values to cache (the old name warns); the cache is updated in place
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.steps = 0  # decode forward passes, for tests and benchmarks
        self.prefills = 0
        self.max_rows = 0  # the widest batch a step saw
        self.row_steps = 0  # rows fed, summed over decode steps: no finished or padding row is ever fed

    @staticmethod
    def supports(model) -> bool:
        """Only plain full-attention layers: their cache rows can be dropped, left-padded and concatenated."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        try:
            cache = DynamicCache(config=model.config)
        except Exception:  # a model type whose cache DynamicCache cannot describe
            return False
        return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)

    def run(self, prompts: list[list[int]], order: list[int], rules: RowRules | list[RowRules], seed: int,
            slots: int) -> dict[int, Finished]:
        """The completion of each prompt in `order` (admitted in that order), at most `slots` rows per pass.

        `rules` holds for every prompt, or is one per prompt: rows of different stages (greedy answers,
        sampled consistency checks) then share the batch, each sampled and stopped by its own rules.
        A row's generator is seeded from its index in `prompts`, so running a subset gives the same rows.
        """
        import torch

        if isinstance(rules, RowRules):
            rules = [rules] * len(prompts)
        queue = deque(order)
        done: dict[int, Finished] = {}
        rows: list[_Row] = []  # live rows, in cache order
        cache = mask = None
        while queue or rows:
            if queue and len(rows) < slots:
                new = [queue.popleft() for _ in range(min(slots - len(rows), len(queue)))]
                fresh, fresh_mask, fresh_rows = self._prefill(prompts, new, rules, seed, done)
                if fresh_rows:
                    cache, mask = self._merge(cache, mask, fresh, fresh_mask)
                    rows += fresh_rows
                if not rows:
                    continue
            self.max_rows = max(self.max_rows, len(rows))
            self.row_steps += len(rows)
            feed = torch.tensor([[r.tokens[-1]] for r in rows], dtype=torch.long, device=self.device)
            positions = mask.sum(-1, keepdim=True)  # real tokens before the fed one, whatever the padding
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
            out = self.model(input_ids=feed, attention_mask=mask, position_ids=positions, use_cache=True,
                             **{self._cache_kw: cache}, **self._keep)
            self.steps += 1
            cache, mask, rows = self._advance(out.logits, rows, cache, mask, done)
        return done

    def _prefill(self, prompts, new: list[int], rules: list[RowRules], seed: int, done: dict):
        """Prompts `new` through one forward pass; rows that end on their first token go straight to `done`."""
        import torch

        width = max(len(prompts[i]) for i in new)
        ids = torch.full((len(new), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for j, i in enumerate(new):
            ids[j, width - len(prompts[i]):] = torch.tensor(prompts[i], dtype=torch.long)
            mask[j, width - len(prompts[i]):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = new_cache(self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **{self._cache_kw: cache}, **self._keep)
        self.prefills += 1
        rows = []
        for i in new:
            g = torch.Generator()
            g.manual_seed(row_seed(seed, i))
            rows.append(_Row(i, prompts[i], g, rules[i]))
        return self._advance(out.logits, rows, cache, mask, done)

    def _advance(self, logits, rows: list, cache, mask, done: dict):
        """Append each row's next token; rows that ended go to `done` and leave the batch and its cache."""
        last = logits[:, -1].float()
        groups: dict[int, list[int]] = {}
        for j, row in enumerate(rows):
            groups.setdefault(id(row.rules), []).append(j)
        for members in groups.values():
            if len(members) == len(rows):  # one stage's rows only: no gather
                picked = rows[0].rules.pick(last, rows)
            else:
                picked = rows[members[0]].rules.pick(last[members], [rows[j] for j in members])
            for j, token in zip(members, picked):
                rows[j].tokens.append(token)
        keep = []
        for j, row in enumerate(rows):
            end = row.rules.finished(row)
            if end is None:
                keep.append(j)
            else:
                done[row.index] = end
        if len(keep) < len(rows):
            cache, mask = self._evict(cache, mask, keep)
        return cache, mask, [rows[j] for j in keep]

    def _evict(self, cache, mask, keep: list[int]):
        """Keep only rows `keep`, then drop the leading columns that are padding in every row left."""
        import torch

        if not keep:
            return None, None
        idx = torch.tensor(keep, dtype=torch.long, device=mask.device)
        mask = mask[idx]
        first = int(mask.any(0).nonzero()[0])
        for layer in cache.layers:
            layer.keys = layer.keys[idx, :, first:]
            layer.values = layer.values[idx, :, first:]
        return cache, mask[:, first:]

    def _merge(self, cache, mask, fresh, fresh_mask):
        """Append fresh rows to the live cache, left-padding whichever side is shorter."""
        import torch
        import torch.nn.functional as F

        if cache is None:
            return fresh, fresh_mask
        old_w, new_w = mask.shape[1], fresh_mask.shape[1]
        width = max(old_w, new_w)
        for layer, add in zip(cache.layers, fresh.layers):
            # [batch, heads, seq, dim]: pad the seq axis on the left with zeros (masked out, never attended)
            layer.keys = torch.cat([F.pad(layer.keys, (0, 0, width - old_w, 0)),
                                    F.pad(add.keys, (0, 0, width - new_w, 0))], dim=0)
            layer.values = torch.cat([F.pad(layer.values, (0, 0, width - old_w, 0)),
                                      F.pad(add.values, (0, 0, width - new_w, 0))], dim=0)
        mask = torch.cat([F.pad(mask, (width - old_w, 0)), F.pad(fresh_mask, (width - new_w, 0))], dim=0)
        return cache, mask
