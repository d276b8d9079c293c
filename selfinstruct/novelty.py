"""Novelty check: exact ROUGE-L F1 of a candidate instruction against the pool, fast.

Scores are bit-identical to rouge-score's
`RougeScorer(["rougeL"], use_stemmer=False).score(pool_text, candidate)["rougeL"].fmeasure`
(tokenizer "rouge"): L = LCS of the token lists, P = L/m, R = L/n,
F = 2*P*R/(P+R), and 0.0 when either side has no tokens. A candidate is novel
when its highest F against the pool is <= the threshold (0.7).

How it stays exact and fast (the work per candidate barely grows with the pool):
- A text becomes a set of elements, (token id, occurrence number) pairs, so
  LCS <= overlap of the two element sets. Every integer bound on L comes from
  the float F formula itself (`_Bounds`), never from 2L/(m+n).
- Decision, AllPairs/PPJoin-style prefix filtering: under one global element
  order, rarest first, a passing pair's first shared element lies within the
  first `len - omin + 1` elements of both texts, so entries are indexed by that
  prefix only and a candidate probes its own. Postings carry the entry's length,
  the longest candidate they can matter for, and how many non-common elements
  follow, so length and position filters run vectorized in numpy, together with
  the exact overlap of the 64 most frequent ("common") elements, kept as a bit
  mask per entry. The ~1 survivor per candidate gets a bit-parallel LCS
  (rapidfuzz, on token ids encoded as code points).
- Exact top-1/top-k below the threshold: every entry's exact overlap (postings
  of the candidate's other elements + masks) bounds its F; entries are verified
  in decreasing order of that bound until none can beat the k-th best.
- The order (and the common set) is document frequency at the last rebuild,
  which happens whenever the pool has doubled; elements first seen since then
  rank rarest. Any fixed order is correct; a good one is fast.
"""

from __future__ import annotations

import heapq
import re
from array import array
from bisect import bisect_left, insort
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
from rapidfuzz.distance import LCSseq

_lcs = LCSseq.similarity  # LCS length of two sequences; here str of token-id code points

_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")
# CJK ideographs (incl. extensions and compatibility), kana, Hangul: one token per character.
_CJK = (
    "\u1100-\u11ff\u3005-\u3007\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
_UNICODE_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")


def _rouge_tokens(text: str) -> list[str]:
    """rouge-score's tokenizer (use_stemmer=False): lowercase, runs of [a-z0-9]; drops all else."""
    return _ROUGE_TOKEN.findall(text.lower())


def _unicode_tokens(text: str) -> list[str]:
    """Lowercase; runs of letters/digits of any script; each CJK/kana/Hangul character alone."""
    return _UNICODE_TOKEN.findall(text.lower())


# "rouge" is exactly rouge-score's, the reference for English data. It drops every
# non-ASCII character: Chinese, Japanese, Russian... candidates score 0 and always
# pass, and accented words are cut apart ("café" -> "caf"). Use "unicode" for any
# data that is not plain English.
TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "rouge": _rouge_tokens,
    "unicode": _unicode_tokens,
}

_OCC = 1 << 32  # element = token_id + occurrence * _OCC (a first occurrence is the id itself)
_N_COMMON = 64  # most frequent elements kept as a per-entry bit mask instead of postings
_CHUNK = 32  # entries verified per round of the top-k search
# A prefix posting is one int64, n << 51 | entry << 24 | (4095 - M) << 12 | r: the
# entry, its token count n, M the longest candidate for which the posting can
# matter, and r the entry's non-common elements from this one to the end. Fields
# are capped at 4095; a capped n lets the posting through to verification.
# Postings are kept sorted, so those with n in the range that matters for a
# candidate are one leading slice.
_FIELD = 4095
_ENTRY = (1 << 27) - 1  # so at most 134M entries

_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def _popcount(a: np.ndarray) -> np.ndarray:
    """Bits set per uint64 (np.bitwise_count needs numpy >= 2)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(a)  # uint8
    return _POP8[a.view(np.uint8)].reshape(-1, 8).sum(axis=1)


def _distinct(a: np.ndarray, counts: bool = False):
    """Sorted distinct values of a (sorted in place), and with counts=True how often each occurs."""
    a.sort()
    start = np.flatnonzero(np.concatenate(([True], a[1:] != a[:-1])))
    return (a[start], np.diff(start, append=a.size)) if counts else a[start]


def _tokenizer(name: str) -> Callable[[str], list[str]]:
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; known: {', '.join(TOKENIZERS)}")
    return TOKENIZERS[name]


def _f1(lcs: int, m: int, n: int) -> float:
    """rouge-score's F with its float operations: P = L/m (candidate), R = L/n (pool)."""
    if lcs == 0:
        return 0.0
    p, r = lcs / m, lcs / n
    return 2 * p * r / (p + r)


def _encode(ids: list[int]) -> str | tuple[int, ...]:
    """Token ids as code points (compact, fastest for rapidfuzz); ids past U+10FFFF as a tuple."""
    try:
        return "".join(map(chr, ids))
    except ValueError:
        return tuple(ids)


def _elements(ids: list[int]) -> list[int]:
    """(token id, occurrence number) pairs packed in one int each: the k-th repeat of a
    token is token_id + k * _OCC."""
    distinct = len(set(ids))
    if distinct == len(ids):
        return ids
    out = []
    if len(ids) - distinct <= 8:  # a few repeats: probing a set is fastest
        seen: set[int] = set()
        for t in ids:
            while t in seen:
                t += _OCC
            seen.add(t)
            out.append(t)
        return out
    counts: dict[int, int] = {}
    for t in ids:
        k = counts.get(t, 0)
        counts[t] = k + _OCC
        out.append(t + k)
    return out


def _largest_within(row: list[int], most: int) -> list[int]:
    """For each budget b in 0..most: the largest k with row[k] <= b (0 if none)."""
    best = [0] * (most + 1)
    for k, need in enumerate(row):
        if need <= most and k > best[need]:
            best[need] = k
    for b in range(1, most + 1):
        best[b] = max(best[b], best[b - 1])
    return best


class _Bounds:
    """Integer LCS bounds derived from the float F formula, for one threshold t."""

    def __init__(self, t: float):
        self.t = t
        self._rows: dict[int, list[int]] = {}  # m -> [smallest L with F(L, m, n) > t, per n]
        self._need: dict[int, np.ndarray] = {}
        self._max_n: dict[int, tuple[int, list[int]]] = {}
        self._tails: dict[tuple[int, int], list[int]] = {}
        self._omin: list[int] = [1]  # n -> smallest L that passes with some partner

    def need_row(self, m: int, n: int) -> list[int]:
        """Row for m covering n; an entry > min(m, n) means "cannot pass" (it is m + 1)."""
        row = self._rows.setdefault(m, [m + 1])  # n = 0: never
        while len(row) <= n:
            k = len(row)
            top = min(m, k)
            low = max(1, int(self.t * (m + k) / 2) - 2)  # F ~ 2L/(m+n): start just below
            while low <= top and _f1(low, m, k) <= self.t:
                low += 1
            row.append(low if low <= top else m + 1)
        return row

    def need_array(self, m: int, max_n: int) -> np.ndarray:
        """need_row(m) over n <= min(max_n, 4095) as an array; 0 (passes) at the cap."""
        size = min(max_n, _FIELD) + 1
        arr = self._need.get(m)
        if arr is None or arr.size < size:
            arr = self._need[m] = np.array(self.need_row(m, size - 1)[:size], dtype=np.int32)
            if size > _FIELD:
                arr[_FIELD] = 0
        return arr

    def max_n(self, m: int, max_n: int) -> list[int]:
        """Per candidate position i: the largest n <= max_n with need(m, n) <= m - i (cap 4095)."""
        size = min(max(max_n, 2 * m), _FIELD)  # beyond 2m only when the pool has longer entries
        cached = self._max_n.get(m)
        if cached is None or cached[0] < size:
            largest = _largest_within(self.need_row(m, size)[: size + 1], m)
            cached = self._max_n[m] = (size, [largest[m - i] for i in range(m + 1)])
        return cached[1]

    def tails(self, n: int, n_common: int) -> list[int]:
        """The low bits of a length-n entry's prefix postings, per position j:
        (4095 - M) << 12 | r, with M the longest candidate m such that
        need(m, n) <= n - j (need is symmetric) and r = non-common elements from j on.
        An entry of 4095+ tokens (capped n) lets every candidate length through."""
        tails = self._tails.get((n, n_common))
        if tails is None:
            if n >= _FIELD:
                largest = [_FIELD] * (n + 1)
            else:
                upper = _FIELD if self.t <= 0 else min(_FIELD, int(n * (2 / self.t - 1)) + 2)
                largest = _largest_within(self.need_row(n, upper)[: upper + 1], n)
            rest = n - n_common
            tails = self._tails[(n, n_common)] = [
                (_FIELD - largest[n - j]) << 12 | min(max(rest - j, 0), _FIELD)
                for j in range(self.prefix_len(n))
            ]
        return tails

    def omin(self, n: int) -> int:
        """Smallest LCS that lets a length-n text pass against any partner (> n: never).

        For a fixed L, F falls as the partner grows past L, so partner length L is best.
        """
        while len(self._omin) <= n:
            k = len(self._omin)
            low = max(1, int(self.t * k / (2 - self.t)) - 2)  # F(L, L, n) ~ 2L/(L+n)
            while low <= k and _f1(low, low, k) <= self.t:
                low += 1
            self._omin.append(low)
        return self._omin[n]

    def prefix_len(self, n: int) -> int:
        return max(0, n - self.omin(n) + 1)


def rouge_l(a: str, b: str, tokenizer: str = "rouge") -> float:
    """Exact ROUGE-L F1 of two texts; symmetric, and for "rouge" the same float as rouge-score."""
    tok = _tokenizer(tokenizer)
    ta, tb = tok(a), tok(b)
    if not ta or not tb:
        return 0.0
    ids: dict[str, int] = {}
    sa = _encode([ids.setdefault(t, len(ids)) for t in ta])
    sb = _encode([ids.setdefault(t, len(ids)) for t in tb])
    return _f1(_lcs(sa, sb), len(tb), len(ta))


@dataclass(frozen=True)
class Verdict:
    novel: bool  # score <= threshold
    score: float  # exact highest ROUGE-L F1 against the pool; 0.0 for an empty pool
    nearest: str | None  # key of the best entry, earliest added on ties; None when score == 0.0


class _Query:
    """A candidate text against the pool: its length, its tokens known to the pool
    (token ids) and its elements held by some entry, rarest first."""

    __slots__ = ("m", "ids", "elems", "_seq")

    def __init__(self, tokens: list[str], vocab: dict[str, int], rank: dict[int, int]):
        self.ids = [i for i in map(vocab.get, tokens) if i is not None]
        self.m = len(tokens)
        self._seq = None
        elems = _elements(self.ids)
        if elems is not self.ids:  # a repeat may occur more often than in any entry
            elems = [e for e in elems if e in rank]
        self.elems = sorted(elems, key=rank.__getitem__)

    @property
    def seq(self) -> str | tuple[int, ...]:
        """The known tokens for LCS (tokens absent from the pool cannot be in one)."""
        if self._seq is None:
            self._seq = _encode(self.ids)
        return self._seq


class NoveltyIndex:
    """Pool of accepted instructions; a candidate is novel when its highest ROUGE-L F1 <= threshold.

    Ties: among entries with the same highest score the EARLIEST ADDED wins
    (`Verdict.nearest`, and the order of `top_k`). `nearest` is None whenever the
    score is 0.0 (empty pool, no shared token, or a candidate without tokens).

    tokenizer "rouge" (default) reproduces rouge-score, flaws included: only ASCII
    letters and digits count, so non-English candidates score 0 and always pass.
    Use "unicode" for Chinese, Japanese, Korean, Russian, accented or mixed data.
    """

    def __init__(self, threshold: float = 0.7, tokenizer: str = "rouge"):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        self.threshold = threshold  # reject when score > threshold (rouge-score F1; default 0.7)
        self.tokenizer = tokenizer  # "rouge" (rouge-score's, English) or "unicode"
        self._tok = _tokenizer(tokenizer)
        self._bounds = _Bounds(threshold)
        self._vocab: dict[str, int] = {}
        self._keys: list[str] = []
        self._seqs: list[str | tuple[int, ...]] = []  # token ids per entry (see _encode)
        self._lengths = array("i")  # token count per entry
        self._max_len = 0
        self._df: dict[int, int] = {}  # element -> number of entries holding it
        self._built_at = 0  # pool size at the last rebuild; the next is at twice that
        self._rank: dict[int, int] = {}  # element -> place in the global order (low = rare)
        self._next_new_rank = -1  # elements first seen since the rebuild rank rarest
        self._common: dict[int, int] = {}  # the _N_COMMON most frequent elements -> bit
        self._masks = array("Q")  # per entry: bits of the common elements it holds
        self._postings: dict[int, array] = {}  # other element -> entries holding it
        self._prefix: dict[int, array] = {}  # element -> sorted postings of entries with it in prefix
        self._plans: dict[int, tuple] = {}  # candidate length -> tables for _above

    def __len__(self) -> int:
        return len(self._keys)

    # -- adding ---------------------------------------------------------------

    def add(self, text: str, key: str) -> None:
        """Add one accepted entry (after its check)."""
        self.add_many([(text, key)])

    def add_many(self, items: Iterable[tuple[str, str]]) -> None:
        """Add (text, key) pairs in order; a bulk load (resume) is ranked and indexed at once.

        The prefix index is re-ranked whenever the pool has doubled since the last
        time, so adding entries one at a time costs O(1) amortized as well.
        """
        start, added = len(self), []
        try:
            for text, key in items:
                added.append(self._append(text, key))
        finally:  # index what was added even if items raised part way
            rebuild = len(self) >= max(2 * self._built_at, 1)
            for i, elems in enumerate(added, start):
                self._index(i, elems, prefix=not rebuild)
            if rebuild:
                self._rebuild()

    def _append(self, text: str, key: str) -> list[int]:
        """Store an entry's key, tokens and frequencies; returns its elements."""
        if len(self._keys) > _ENTRY:
            raise ValueError(f"a NoveltyIndex holds at most {_ENTRY + 1} entries")
        vocab = self._vocab
        ids = [vocab.setdefault(t, len(vocab)) for t in self._tok(text)]
        self._keys.append(key)
        self._seqs.append(_encode(ids))
        self._lengths.append(len(ids))
        self._max_len = max(self._max_len, len(ids))
        elems = _elements(ids)
        df, rank = self._df, self._rank
        for e in elems:
            if e in df:
                df[e] += 1
            else:  # new since the last rebuild: rarest
                df[e] = 1
                rank[e] = self._next_new_rank
                self._next_new_rank -= 1
        return elems

    def _index(self, i: int, elems: list[int], prefix: bool) -> None:
        """Put entry i in the common masks and postings, and (prefix) in the prefix index."""
        common, postings = self._common, self._postings
        mask = 0
        for e in elems:
            if e in common:
                mask |= 1 << common[e]
            elif e in postings:
                postings[e].append(i)
            else:
                postings[e] = array("i", (i,))
        self._masks.append(mask)
        if prefix:
            self._index_prefix(self._prefix, i, elems, mask.bit_count(), insort)

    def _index_prefix(self, index: dict, i: int, elems: list[int], n_common: int, put) -> None:
        """Add entry i's prefix postings to index with put(postings, value)."""
        n = len(elems)
        head = min(n, _FIELD) << 51 | i << 24
        for e, tail in zip(sorted(elems, key=self._rank.__getitem__), self._bounds.tails(n, n_common)):
            if e in index:
                put(index[e], head | tail)
            else:
                index[e] = array("q", (head | tail,))

    def _rebuild(self) -> None:
        """Re-rank elements by document frequency: new common set, new prefix index."""
        order = sorted(self._df.items(), key=lambda kv: (kv[1], kv[0]))
        self._rank = {e: r for r, (e, _) in enumerate(order)}
        self._next_new_rank = -1
        self._set_common([e for e, _ in order[-_N_COMMON:]])
        index: dict[int, array] = {}
        masks = self._masks
        for i, seq in enumerate(self._seqs):
            elems = _elements(list(map(ord, seq)) if isinstance(seq, str) else list(seq))
            self._index_prefix(index, i, elems, masks[i].bit_count(), array.append)
        self._prefix = {e: array("q", sorted(a)) for e, a in index.items()}
        self._built_at = len(self)

    def _set_common(self, elems: list[int]) -> None:
        """Make elems the common set, moving elements between postings and mask bits."""
        old, new = self._common, set(elems)
        common = {e: b for e, b in old.items() if e in new}
        free = sorted(set(range(_N_COMMON)) - set(common.values()), reverse=True)
        masks = np.frombuffer(self._masks, dtype=np.uint64)  # a writable view
        for e, b in old.items():
            if e not in new:  # back to postings
                has = masks & np.uint64(1 << b)
                self._postings[e] = array("i", np.flatnonzero(has).astype(np.int32).tobytes())
                masks ^= has
        for e in elems:
            if e not in common:  # from postings to a bit
                b = common[e] = free.pop()
                masks[np.frombuffer(self._postings.pop(e), dtype=np.int32)] |= np.uint64(1 << b)
        del masks  # release the buffer so that the array can grow again
        self._common = common

    # -- querying -------------------------------------------------------------

    def is_novel(self, text: str) -> bool:
        """Decision only (fastest): True when no entry scores above the threshold."""
        t = self.threshold
        for score, _ in self._above(_Query(self._tok(text), self._vocab, self._rank)):
            if score > t:
                return False
        return True

    def check(self, text: str) -> Verdict:
        """Exact decision, highest score and the key of the (earliest added) best entry."""
        q = _Query(self._tok(text), self._vocab, self._rank)
        # Every entry above the threshold is among those _above verifies.
        best = max(self._above(q), default=(0.0, 0))  # (score, -index)
        if best[0] <= self.threshold:  # the exact top-1 below it, seeded with the best so far
            best = next(iter(self._top(q, 1, [best] if best[0] > 0.0 else [])), (0.0, 0))
        score, i = best
        return Verdict(score <= self.threshold, score, self._keys[-i] if score > 0.0 else None)

    def top_k(self, text: str, k: int) -> list[tuple[float, str]]:
        """The k highest (score, key), by score descending then insertion order; exact."""
        if k <= 0:
            return []
        top = self._top(_Query(self._tok(text), self._vocab, self._rank), k)
        out = [(s, self._keys[-i]) for s, i in top]
        taken = {-i for _, i in top}
        for i in range(len(self._keys)):  # fill with zero-score entries, earliest first
            if len(out) >= k:
                break
            if i not in taken:
                out.append((0.0, self._keys[i]))
        return out

    def _above(self, q: _Query) -> Iterator[tuple[float, int]]:
        """Yield (score, -index) for some entries, among them every one scoring above the threshold."""
        m, known, prefix = q.m, q.elems, self._prefix
        plan = self._plans.get(m)
        if plan is None or plan[0] != self._max_len:
            b = self._bounds
            stops = [(x + 1) << 51 for x in b.max_n(m, self._max_len)]
            plan = self._plans[m] = (self._max_len, b.prefix_len(m), stops, b.need_array(m, self._max_len))
        _, p, stops, need = plan
        base = m - len(known)  # elements absent from the pool rank first (rarest)
        # Filters for the pair's first shared element (in the order), which lies in
        # both prefixes and has >= need(m, n) elements from it to the end on both
        # sides: n <= max_n at candidate position i (a leading slice of the sorted
        # postings) and m <= the posting's M.
        arrays = []
        capped = self._max_len >= _FIELD  # entries of 4095+ tokens (n unknown) sort last
        for i, e in enumerate(known[: max(p - base, 0)], base):
            if (a := prefix.get(e)) is None:
                continue
            if stop := bisect_left(a, stops[i]):
                arrays.append(np.frombuffer(a, dtype=np.int64, count=stop))
            if capped and (start := max(stop, bisect_left(a, _FIELD << 51))) < len(a):
                arrays.append(np.frombuffer(a, dtype=np.int64, count=len(a) - start, offset=8 * start))
        if not arrays:
            return
        key = np.concatenate(arrays)
        key = key[(key & (_FIELD << 12)) <= (_FIELD - min(m, _FIELD)) << 12]
        if not key.size:
            return
        entry = (key >> 24) & _ENTRY  # may repeat: deduplicated once few are left
        # If this key's element is the first shared one, the overlap is at most the
        # exact overlap of the common elements (bit masks) plus the non-common
        # elements from it to the end, on the entry's side (r) or the candidate's.
        # A passing entry passes this at its first shared element.
        qmask = 0
        for e in known[-_N_COMMON:]:  # common elements come last in every order
            if (bit := self._common.get(e)) is not None:
                qmask |= 1 << bit
        masks = np.frombuffer(self._masks, dtype=np.uint64)[entry]
        rest = np.minimum(key & _FIELD, len(known) - qmask.bit_count())
        keep = _popcount(masks & np.uint64(qmask)) + rest >= need[key >> 51]
        seqs, seq, lengths = self._seqs, q.seq, self._lengths
        for i in dict.fromkeys(entry[keep].tolist()):
            yield _f1(_lcs(seq, seqs[i]), m, lengths[i]), -i

    def _top(self, q: _Query, k: int, seed: list[tuple[float, int]] = ()) -> list[tuple[float, int]]:
        """The exact k best (score, -index) with score > 0, best first; seed: known scores."""
        if not self._keys:
            return []
        heap = list(seed)  # the k best (score, -index) so far; the worst at heap[0]
        heapq.heapify(heap)
        common, postings = self._common, self._postings
        qmask = 0
        arrays = []
        for e in q.elems:
            if e in common:
                qmask |= 1 << common[e]
            elif e in postings:
                arrays.append(np.frombuffer(postings[e], dtype=np.int32))
        masks = np.frombuffer(self._masks, dtype=np.uint64)
        seen = None
        if arrays:  # entries sharing a non-common element, with their exact overlap
            seen, overlap = _distinct(np.concatenate(arrays), counts=True)
            if qmask:
                overlap += _popcount(masks[seen] & np.uint64(qmask))
            self._verify(q, seen, overlap, heap, k)
        # Entries sharing only common elements have overlap <= bits(qmask).
        n_common = qmask.bit_count()
        if n_common and (len(heap) < k or _f1(n_common, q.m, n_common) >= heap[0][0]):
            floor = 1  # the least overlap that can reach the k-th best, with any length
            if len(heap) == k:
                while _f1(floor, q.m, floor) < heap[0][0]:
                    floor += 1
            overlap = _popcount(masks & np.uint64(qmask))  # one pass over the pool
            if seen is not None:
                overlap[seen] = 0
            entry = np.flatnonzero(overlap >= floor)
            self._verify(q, entry, overlap[entry].astype(np.int64), heap, k)
        return sorted(heap, reverse=True)

    def _verify(self, q: _Query, entry: np.ndarray, overlap: np.ndarray, heap: list, k: int):
        """Score entries in decreasing order of their bound until none can enter the top k."""
        m = q.m
        n = np.frombuffer(self._lengths, dtype=np.int32)[entry]
        if len(heap) == k:  # F ~ 2*overlap/(m+n): drop what cannot reach the k-th best
            keep = 2 * overlap >= heap[0][0] * (m + n) - 1e-9
            entry, overlap, n = entry[keep], overlap[keep], n[keep]
        p, r = overlap / m, overlap / n
        bound = 2 * p * r / (p + r)  # _f1 at LCS = overlap, same float ops: >= the score
        seqs, seq, lengths = self._seqs, q.seq, self._lengths
        while entry.size:
            if len(heap) == k:
                worst, worst_i = heap[0]
                keep = (bound > worst) | ((bound == worst) & (entry < -worst_i))
                entry, bound = entry[keep], bound[keep]
            if entry.size > _CHUNK:
                sel = np.argpartition(bound, entry.size - _CHUNK)[entry.size - _CHUNK:]
                rest = np.ones(entry.size, dtype=bool)
                rest[sel] = False
                batch_i, batch_b = entry[sel], bound[sel]
                entry, bound = entry[rest], bound[rest]
            else:
                batch_i, batch_b, entry = entry, bound, entry[:0]
            order = np.lexsort((batch_i, -batch_b))
            for i, b in zip(batch_i[order].tolist(), batch_b[order].tolist()):
                if len(heap) == k and (b, -i) <= heap[0]:
                    continue
                item = (_f1(_lcs(seq, seqs[i]), m, lengths[i]), -i)
                if len(heap) < k:
                    heapq.heappush(heap, item)
                elif item > heap[0]:
                    heapq.heapreplace(heap, item)
