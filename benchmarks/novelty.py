"""Benchmark the novelty index against the Alpaca-style full scan.

    python benchmarks/novelty.py                 # pools of 1K, 10K, 50K, 100K (a few minutes)
    python benchmarks/novelty.py --quick         # pools of 1K and 10K, fewer candidates (< 1 min)
    python benchmarks/novelty.py --sizes 1000,20000 --candidates 2000

Synthetic instruction-like text (seeded): an opener ("Write a", "Given the",
...) followed by words drawn from a Zipfian vocabulary, with some pool entries
and candidates being near-duplicates (a few words changed) of earlier ones.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from pathlib import Path

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
        n = max(2, min(60, int(rng.lognormvariate(2.3, 0.5))))  # median ~10 words
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


def verdict_of(scores: list[float], threshold: float) -> tuple[bool, str, int | None]:
    best = max(scores, default=0.0)
    nearest = scores.index(best) if best > 0.0 else None  # earliest added among ties
    return best <= threshold, float(best).hex(), nearest


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


def run_size(size: int, n_cands: int, pair_budget: int, seed: int) -> dict:
    corpus = Corpus(seed)
    pool = corpus.pool(size)
    cands = corpus.candidates(pool, n_cands)
    items = [(t, f"t{i}") for i, t in enumerate(pool)]
    r: dict = {"size": size}

    index = NoveltyIndex()  # one add per accepted task, the pipeline's way
    t = time.perf_counter()
    for text, key in items:
        index.add(text, key)
    r["build_add"] = time.perf_counter() - t
    secs, decisions, lat = timed(index.is_novel, cands)
    r["novel_rate"], r["novel_lat"] = len(cands) / secs, lat
    secs, verdicts, lat = timed(index.check, cands)
    r["check_rate"], r["check_lat"] = len(cands) / secs, lat
    r["rejected"] = sum(not v.novel for v in verdicts) / len(cands)

    t = time.perf_counter()
    NoveltyIndex().add_many(items)  # the resume path
    r["build_many"] = time.perf_counter() - t
    gc.collect()
    tracemalloc.start()
    bulk = NoveltyIndex()
    bulk.add_many(items)
    r["mem_now"], r["mem_peak"] = (x / 2**20 for x in tracemalloc.get_traced_memory())
    tracemalloc.stop()
    del bulk
    gc.collect()

    # Baseline on as many candidates as the pair budget allows, then compare exactly.
    n_base = max(3, min(len(cands), pair_budget // size))
    tok = TOKENIZERS["rouge"]
    pool_tokens = [tok(p) for p in pool]
    base = cands[:n_base]
    secs, scores, _ = timed(lambda c: alpaca_scan(pool_tokens, tok(c)), base)
    r["base_rate"], r["base_n"] = n_base / secs, n_base
    mismatches = 0
    for c, s, v, d in zip(base, scores, verdicts, decisions):
        novel, best, nearest = verdict_of(s, index.threshold)
        got = (v.novel, v.score.hex(), None if v.nearest is None else int(v.nearest[1:]))
        mismatches += got != (novel, best, nearest) or d != novel
        top = sorted(range(len(s)), key=lambda i: (-s[i], i))[:10]
        mismatches += index.top_k(c, 10) != [(float(s[i]), f"t{i}") for i in top]
    r["mismatches"], r["pairs"] = mismatches, n_base * size
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", help="pool sizes, comma-separated (default 1000,10000,50000,100000)")
    ap.add_argument("--candidates", type=int, help="candidates checked by the index per size (default 5000)")
    ap.add_argument("--quick", action="store_true", help="defaults for a run under a minute: pools 1K, 10K; 1000 candidates")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = [int(s) for s in (args.sizes or ("1000,10000" if args.quick else "1000,10000,50000,100000")).split(",")]
    n_cands = args.candidates or (1000 if args.quick else 5000)
    pair_budget = 100_000 if args.quick else 400_000  # baseline pairs per size (~25 us each)
    n_pairs = 20_000 if args.quick else 100_000

    print(f"python {sys.version.split()[0]}, {n_cands} candidates per pool size, seed {args.seed}")
    print("times: one process; index decisions = is_novel, check = decision + exact top-1 score/key\n")
    head = (f"{'pool':>7} {'build add':>9} {'mem MB':>7} {'peak MB':>7} | {'decide/s':>9} {'p50us':>6} {'p99us':>6}"
            f" | {'check/s':>8} {'p50us':>6} {'p99us':>6} | {'alpaca/s':>8} {'x decide':>9} {'x check':>8}"
            f" | {'reject':>6} {'mismatch':>8} {'pairs':>8}")
    print(head)
    rows = []
    for size in sizes:
        r = run_size(size, n_cands, pair_budget, args.seed)
        rows.append(r)
        print(f"{size:>7} {r['build_add']:>8.2f}s {r['mem_now']:>7.1f} {r['mem_peak']:>7.1f} |"
              f" {r['novel_rate']:>9.0f} {pct(r['novel_lat'], .5):>6.0f} {pct(r['novel_lat'], .99):>6.0f} |"
              f" {r['check_rate']:>8.0f} {pct(r['check_lat'], .5):>6.0f} {pct(r['check_lat'], .99):>6.0f} |"
              f" {r['base_rate']:>8.2f} {r['novel_rate'] / r['base_rate']:>8.0f}x {r['check_rate'] / r['base_rate']:>7.0f}x |"
              f" {r['rejected']:>6.1%} {r['mismatches']:>8} {r['pairs']:>8}", flush=True)
    bad = pairwise_check(n_pairs, args.seed)
    first = rows[0]
    print("\nindex build (seconds) and memory (tracemalloc, MB, measured on a separate add_many):")
    for r in rows:
        print(f"  {r['size']:>7}: add() x{r['size']} {r['build_add']:.2f}s, add_many {r['build_many']:.2f}s;"
              f" retained {r['mem_now']:.1f} MB, peak while building {r['mem_peak']:.1f} MB")
    print("scaling (vs the smallest pool):")
    for r in rows[1:]:
        grow = r["size"] / first["size"]
        print(f"  pool x{grow:<5.0f} decisions/s x{r['novel_rate'] / first['novel_rate']:.2f},"
              f" check/s x{r['check_rate'] / first['check_rate']:.2f}, alpaca/s x{r['base_rate'] / first['base_rate']:.3f}")
    total_pairs = sum(r["pairs"] for r in rows)
    total_bad = sum(r["mismatches"] for r in rows)
    print(f"exactness: {sum(r['base_n'] for r in rows)} candidates x pool = {total_pairs} candidate-pool pairs"
          f" (verdict, score bits, nearest, top-10): {total_bad} mismatches;"
          f" rouge_l vs RougeScorer.score on {n_pairs} pairs: {bad} mismatches")
    try:
        import resource  # not on Windows

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
        print(f"process peak RSS {rss:.0f} MB (texts, baseline token lists and the index)")
    except ImportError:
        pass
    if total_bad or bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
