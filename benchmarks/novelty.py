"""Benchmark the novelty index against the Alpaca-style full scan.

    python benchmarks/novelty.py                 # pools of 100K, 300K, 1M (about 8 minutes on 2 cores)
    python benchmarks/novelty.py --quick         # pools of 1K and 10K, fewer candidates (< 1 min)
    python benchmarks/novelty.py --sizes 1000000 --candidates 5000 --exact 2000

Synthetic instruction-like text (seeded): an opener ("Write a", "Given the",
...) followed by words drawn from a Zipfian vocabulary, with some pool entries
and candidates being near-duplicates (a few words changed) of earlier ones.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
from rapidfuzz.distance import LCSseq
from rapidfuzz.process import cdist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rouge_score import rouge_scorer  # noqa: E402

from selfinstruct.novelty import TOKENIZERS, NoveltyIndex, rouge_l  # noqa: E402

OPENERS = [
    "Write a", "Write a short", "Generate a list of", "Explain how", "Explain why",
    "Describe the", "Given a", "Given the following", "Classify the", "Create a",
    "Summarize the", "Translate the", "Find the", "Suggest some", "Tell me about",
    "What is the", "How do you", "Rewrite the", "Identify the", "Compose a",
]
# Frequent words first: their Zipf ranks make them the common ones.
COMMON = (
    "the a of to and in for is that on with as this be are it your by from an or "
    "text sentence following list given each word story poem article email answer "
    "question user input output best way how what which why one two three new "
    "data people time good make use write example number names using about into"
).split()
SYLLABLES = (
    "ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo ga ge go ka ke ki ko la le li lo lu "
    "ma me mi mo mu na ne ni no nu pa pe pi po ra re ri ro ru sa se si so ta te ti to tu va ve vi vo za zo"
).split()


class Corpus:
    """Seeded generator of instruction-like sentences."""

    def __init__(self, seed: int = 0, vocab_size: int = 30_000, zipf_s: float = 1.07):
        self.rng = random.Random(seed)
        words = list(COMMON)
        seen = set(words)
        while len(words) < vocab_size:
            w = "".join(self.rng.choices(SYLLABLES, k=self.rng.choice((2, 2, 3, 3, 4))))
            if w not in seen:
                seen.add(w)
                words.append(w)
        self.words = words
        cum, total = [], 0.0
        for rank in range(1, vocab_size + 1):
            total += rank ** -zipf_s
            cum.append(total)
        self.cum = cum

    def sentence(self) -> str:
        rng = self.rng
        n = max(2, min(60, int(rng.lognormvariate(2.53, 0.44))))  # + opener: tokens as in seed_tasks.jsonl
        body = rng.choices(self.words, cum_weights=self.cum, k=n)
        text = rng.choice(OPENERS) + " " + " ".join(body)
        return text + rng.choice((".", "?", ":", "."))

    def near_duplicate(self, text: str) -> str:
        """Change, insert or delete one to three words, sometimes the case and punctuation."""
        rng = self.rng
        toks = text.rstrip(".?:").split()
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            i = rng.randrange(len(toks))
            word = rng.choices(self.words, cum_weights=self.cum)[0]
            if op < 0.4:
                toks[i] = word
            elif op < 0.7 or len(toks) < 4:
                toks.insert(i, word)
            else:
                del toks[i]
        out = " ".join(toks)
        return (out.upper() if rng.random() < 0.05 else out) + rng.choice((".", "!", ""))

    def pool(self, size: int, dup_rate: float = 0.1) -> list[str]:
        out: list[str] = []
        for _ in range(size):
            if out and self.rng.random() < dup_rate:
                out.append(self.near_duplicate(self.rng.choice(out)))
            else:
                out.append(self.sentence())
        return out

    def candidates(self, pool: list[str], count: int, dup_rate: float = 0.2) -> list[str]:
        out = []
        for _ in range(count):
            r = self.rng.random()
            if pool and r < 0.02:
                out.append(self.rng.choice(pool))
            elif pool and r < dup_rate:
                out.append(self.near_duplicate(self.rng.choice(pool)))
            else:
                out.append(self.sentence())
        return out


def alpaca_scan(pool_tokens: list[list[str]], tokens: list[str]) -> list[float]:
    """The Alpaca-style reference: cached tokens, rouge-score's _score_lcs over the whole pool."""
    return [rouge_scorer._score_lcs(tokens, t).fmeasure for t in pool_tokens]


def timed(fn, items) -> tuple[float, list, list[float]]:
    """Total seconds, results, and per-item latencies in microseconds."""
    out, lat = [], []
    clock = time.perf_counter
    start = clock()
    for x in items:
        t = clock()
        out.append(fn(x))
        lat.append((clock() - t) * 1e6)
    return clock() - start, out, sorted(lat)


def pct(lat: list[float], q: float) -> float:
    return lat[min(len(lat) - 1, int(q * len(lat)))]


def rss_mb() -> float:
    """Resident set size now (Linux /proc), else the peak so far (getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    import resource  # not on Windows

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


class BruteForce:
    """Every candidate against the whole pool: the same LCS (rapidfuzz, compiled, all cores) on
    an independent token-id mapping, F with rouge-score's float operations, in numpy."""

    def __init__(self, pool: list[str]):
        self.ids: dict[str, int] = {}
        self.tok = TOKENIZERS["rouge"]
        self.pool = [self.encode(p) for p in pool]
        self.n = np.array([len(p) for p in self.pool], dtype=np.float64)

    def encode(self, text: str) -> str:
        return "".join(chr(self.ids.setdefault(t, len(self.ids))) for t in self.tok(text))

    def scores(self, cands: list[str], chunk: int = 16, cols: int = 1 << 18):
        """Yield (candidate index, F over the pool as float64) for each candidate."""
        for lo in range(0, len(cands), chunk):
            qs = [self.encode(c) for c in cands[lo:lo + chunk]]
            m = np.array([len(q) for q in qs], dtype=np.float64)[:, None]
            lcs = cdist(qs, self.pool, scorer=LCSseq.similarity, dtype=np.int32, workers=-1)
            f = np.zeros(lcs.shape, dtype=np.float64)
            for c0 in range(0, lcs.shape[1], cols):  # bounded temporaries
                L = lcs[:, c0:c0 + cols].astype(np.float64)
                with np.errstate(divide="ignore", invalid="ignore"):
                    p, r = L / m, L / self.n[c0:c0 + cols]
                    fc = 2 * p * r / (p + r)  # _f1's operations in its order, so the same bits
                f[:, c0:c0 + cols] = np.where(L > 0, fc, 0.0)
            del lcs
            for j in range(len(qs)):
                yield lo + j, f[j]


def top_of(f: np.ndarray, k: int) -> list[tuple[float, int]]:
    """The k best (score, index) by score descending, earliest index on ties (zeros included)."""
    k = min(k, f.size)
    kth = np.partition(f, f.size - k)[f.size - k]
    above = np.flatnonzero(f > kth)
    tied = np.flatnonzero(f == kth)[: k - above.size]
    idx = np.concatenate((above, tied))
    order = np.lexsort((idx, -f[idx]))
    return [(float(f[i]), int(i)) for i in idx[order]]


def run_size(size: int, args) -> dict:
    """One pool size, in its own process so that its RSS is its own."""
    corpus = Corpus(args.seed)
    pool = corpus.pool(size)
    cands = corpus.candidates(pool, args.candidates)
    r: dict = {"size": size}
    gc.collect()
    rss0 = rss_mb()

    index = NoveltyIndex()  # one add per accepted task, the pipeline's way
    t = time.perf_counter()
    for i, text in enumerate(pool):
        index.add(text, f"t{i}")
    r["build_add"] = time.perf_counter() - t
    gc.collect()
    r["index_rss"], r["rss"] = rss_mb() - rss0, rss_mb()
    secs, decisions, lat = timed(index.is_novel, cands)
    r["novel_rate"], r["novel_p50"], r["novel_p99"] = len(cands) / secs, pct(lat, .5), pct(lat, .99)
    checked = cands[: args.checks]
    secs, verdicts, lat = timed(index.check, checked)
    r["check_rate"], r["check_p50"], r["check_p99"] = len(checked) / secs, pct(lat, .5), pct(lat, .99)
    r["rejected"] = sum(not d for d in decisions) / len(cands)
    r["peak_rss"] = peak_rss_mb()  # before the baselines below add their own memory

    if size <= args.bulk_max:  # the resume path, and exact Python-heap figures (tracemalloc is slow)
        items = [(text, f"t{i}") for i, text in enumerate(pool)]
        t = time.perf_counter()
        NoveltyIndex().add_many(items)
        r["build_many"] = time.perf_counter() - t
        gc.collect()
        tracemalloc.start()
        bulk = NoveltyIndex()
        bulk.add_many(items)
        r["mem_now"], r["mem_peak"] = (x / 2**20 for x in tracemalloc.get_traced_memory())
        tracemalloc.stop()
        del bulk, items
        gc.collect()

    # The Alpaca-style baseline on a sample: a few candidates against a slice of the pool;
    # its cost is linear in the pool, so candidates/s at this size = pairs/s / size.
    tok = TOKENIZERS["rouge"]
    n_base = 4
    sample = [tok(p) for p in pool[: max(1, min(size, args.base_pairs // n_base))]]
    secs, base_scores, _ = timed(lambda c: alpaca_scan(sample, tok(c)), cands[:n_base])
    r["base_pairs_s"] = n_base * len(sample) / secs
    r["base_rate"] = r["base_pairs_s"] / size

    # Exactness on a sample: brute force over the whole pool, then rouge-score on the best pairs.
    brute = BruteForce(pool)
    exact = cands[: args.exact]
    bad = {"decision": 0, "score": 0, "nearest": 0, "top10": 0, "rouge_score": 0, "baseline": 0}
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    brute_secs, it, clock = 0.0, brute.scores(exact), time.perf_counter
    while True:
        t = clock()
        j, f = next(it, (None, None))
        brute_secs += clock() - t
        if j is None:
            break
        if j < n_base:  # the brute force itself against rouge-score's _score_lcs on the slice
            bad["baseline"] += f[: len(sample)].tobytes() != np.array(base_scores[j], dtype=np.float64).tobytes()
        best = float(f.max()) if f.size else 0.0
        nearest = int(np.argmax(f)) if best > 0.0 else None  # argmax: the earliest among ties
        v = verdicts[j] if j < len(verdicts) else index.check(exact[j])
        bad["decision"] += v.novel != (best <= index.threshold) or decisions[j] != (best <= index.threshold)
        bad["score"] += v.score.hex() != best.hex()
        bad["nearest"] += v.nearest != (None if nearest is None else f"t{nearest}")
        if j < args.top10:
            bad["top10"] += index.top_k(exact[j], 10) != [(s, f"t{i}") for s, i in top_of(f, 10)]
        if nearest is not None:  # rouge-score itself on the best pair
            bad["rouge_score"] += float(scorer.score(pool[nearest], exact[j])["rougeL"].fmeasure).hex() != best.hex()
    r["brute_rate"] = len(exact) / brute_secs
    r["exact_n"], r["top10_n"], r["bad"] = len(exact), min(len(exact), args.top10), bad
    r["mismatches"] = sum(bad.values())
    return r


def pairwise_check(n_pairs: int, seed: int) -> int:
    """rouge_l against RougeScorer.score on random and near-duplicate pairs; returns mismatches."""
    corpus = Corpus(seed + 1)
    pool = corpus.pool(2000, dup_rate=0.3)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(seed)
    bad = 0
    for _ in range(n_pairs):
        a = rng.choice(pool)
        b = corpus.near_duplicate(a) if rng.random() < 0.5 else rng.choice(pool)
        want = scorer.score(a, b)["rougeL"].fmeasure
        bad += rouge_l(a, b).hex() != float(want).hex()
    return bad


def shape_line(seed: int) -> str:
    """Token-length quantiles and vocabulary of the synthetic pool next to seed_tasks.jsonl's."""
    tok = TOKENIZERS["rouge"]

    def stats(texts: list[str]) -> str:
        lengths = sorted(len(tok(t)) for t in texts)
        q = [lengths[int(x * (len(lengths) - 1))] for x in (.1, .5, .9)]
        words = Counter(w for t in texts for w in tok(t))
        top = sum(c for _, c in words.most_common(10)) / max(1, sum(words.values()))
        return f"tokens p10/p50/p90 {q[0]}/{q[1]}/{q[2]}, {len(words)} distinct words, top-10 words {top:.0%}"

    seeds = Path(__file__).resolve().parents[1] / "seed_tasks.jsonl"
    texts = [json.loads(line)["instruction"] for line in seeds.open()] if seeds.is_file() else []
    line = f"synthetic ({len(texts) or 175} sentences): {stats(Corpus(seed).pool(len(texts) or 175, dup_rate=0))}"
    return line + (f"\nseed_tasks.jsonl ({len(texts)} instructions): {stats(texts)}" if texts else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", help="pool sizes, comma-separated (default 100000,300000,1000000)")
    ap.add_argument("--candidates", type=int, help="candidates decided by the index per size (default 5000)")
    ap.add_argument("--checks", type=int, help="of those, checked with score and nearest (default 2000)")
    ap.add_argument("--exact", type=int, help="of those, compared with brute force over the pool (default 2000)")
    ap.add_argument("--top10", type=int, help="of those, top-10 compared too (default 500)")
    ap.add_argument("--quick", action="store_true", help="pools 1K and 10K, fewer candidates (< 1 min)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size, print JSON
    args = ap.parse_args()
    q = args.quick
    args.candidates = args.candidates or (1000 if q else 5000)
    args.checks = min(args.candidates, args.checks or (1000 if q else 2000))
    args.exact = min(args.candidates, args.exact or (1000 if q else 2000))
    args.top10 = min(args.exact, args.top10 if args.top10 is not None else (1000 if q else 500))
    args.base_pairs = 100_000 if q else 200_000  # Alpaca-baseline pairs per size (~25 us each)
    args.bulk_max = 100_000  # add_many and tracemalloc above this would double the build time
    if args.one:
        print(json.dumps(run_size(args.one, args)))
        return
    sizes = [int(s) for s in (args.sizes or ("1000,10000" if q else "100000,300000,1000000")).split(",")]
    n_pairs = 20_000 if q else 100_000

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {platform.processor() or platform.machine()},"
          f" {os.cpu_count()} cores; seed {args.seed}; per size: {args.candidates} decisions,"
          f" {args.checks} checks, {args.exact} vs brute force ({args.top10} with top-10)")
    print(shape_line(args.seed))
    print("one process per pool size; decide = is_novel, check = decision + exact top-1 score/key;"
          " alpaca/s = rouge-score _score_lcs scan (measured on a pool slice, scaled);"
          " brute/s = rapidfuzz LCS over the whole pool, all cores\n")
    print(f"{'pool':>7} {'build':>7} {'idx MB':>7} {'RSS MB':>7} | {'decide/s':>8} {'p50us':>6} {'p99us':>6}"
          f" | {'check/s':>7} {'p50us':>6} {'p99us':>6} | {'alpaca/s':>8} {'x decide':>9} | {'brute/s':>7}"
          f" {'x decide':>8} | {'reject':>6} {'exact n':>7} {'mismatch':>8}")
    rows = []
    for size in sizes:
        cmd = [sys.executable, __file__, "--one", str(size), "--seed", str(args.seed), "--candidates",
               str(args.candidates), "--checks", str(args.checks), "--exact", str(args.exact),
               "--top10", str(args.top10)] + (["--quick"] if q else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"pool {size} failed:\n{out.stderr[-2000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{size:>7} {r['build_add']:>6.1f}s {r['index_rss']:>7.0f} {r['peak_rss']:>7.0f} |"
              f" {r['novel_rate']:>8.0f} {r['novel_p50']:>6.0f} {r['novel_p99']:>6.0f} |"
              f" {r['check_rate']:>7.0f} {r['check_p50']:>6.0f} {r['check_p99']:>6.0f} |"
              f" {r['base_rate']:>8.3f} {r['novel_rate'] / r['base_rate']:>8.0f}x |"
              f" {r['brute_rate']:>7.1f} {r['novel_rate'] / r['brute_rate']:>7.0f}x |"
              f" {r['rejected']:>6.1%} {r['exact_n']:>7} {r['mismatches']:>8}", flush=True)
    bad = pairwise_check(n_pairs, args.seed)
    print("\nbuild: add() one at a time (the pipeline's way); idx MB = RSS grown by the build;"
          " RSS MB = process peak before the baselines (pool texts + candidates + index)")
    for r in rows:
        extra = (f"; add_many {r['build_many']:.1f}s, tracemalloc retained {r['mem_now']:.1f} MB,"
                 f" peak {r['mem_peak']:.1f} MB") if "build_many" in r else ""
        print(f"  {r['size']:>7}: add() x{r['size']} {r['build_add']:.1f}s{extra}")
    first = rows[0]
    for r in rows[1:]:
        print(f"  pool x{r['size'] / first['size']:<5.0f} decisions/s x{r['novel_rate'] / first['novel_rate']:.2f},"
              f" check/s x{r['check_rate'] / first['check_rate']:.2f}")
    total_bad = sum(r["mismatches"] for r in rows)
    kinds = Counter()
    for r in rows:
        kinds.update(r["bad"])
    print(f"exactness: {sum(r['exact_n'] for r in rows)} candidates x their whole pool"
          f" ({sum(r['exact_n'] * r['size'] for r in rows):.3g} pairs; decision, score bits, nearest;"
          f" top-10 on {sum(r['top10_n'] for r in rows)}; rouge-score on each best pair): {total_bad} mismatches"
          f" {dict(kinds) if total_bad else ''}; rouge_l vs RougeScorer.score on {n_pairs} pairs: {bad} mismatches")
    if total_bad or bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
