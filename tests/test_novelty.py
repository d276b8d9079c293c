"""The novelty index must agree exactly with rouge-score (decision, score bits, nearest)."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from selfinstruct.novelty import TOKENIZERS, NoveltyIndex, Verdict, rouge_l
from selfinstruct import novelty

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference(pool: list[str], text: str) -> list[float]:
    """rouge-score itself, the way the Self-Instruct reference calls it."""
    return [SCORER.score(p, text)["rougeL"].fmeasure for p in pool]


def lcs(a: list, b: list) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def unicode_reference(pool: list[str], text: str) -> list[float]:
    """rouge-score's F formula on the unicode tokens, with a plain-Python LCS."""
    tok = TOKENIZERS["unicode"]
    c = tok(text)
    out = []
    for p in pool:
        t = tok(p)
        if not c or not t or not (n := lcs(t, c)):
            out.append(0.0)
            continue
        prec, rec = n / len(c), n / len(t)
        out.append(2 * prec * rec / (prec + rec))
    return out


def expected(pool: list[str], text: str, threshold: float, ref=reference) -> Verdict:
    scores = ref(pool, text)
    best = max(scores, default=0.0)
    nearest = f"k{scores.index(best)}" if best > 0.0 else None  # index(): earliest added
    return Verdict(best <= threshold, float(best), nearest)


def assert_agrees(index: NoveltyIndex, pool: list[str], text: str, ref=reference) -> None:
    want = expected(pool, text, index.threshold, ref)
    got = index.check(text)
    assert (got.novel, got.score.hex(), got.nearest) == (want.novel, want.score.hex(), want.nearest), text
    assert index.is_novel(text) == want.novel


def build(pool: list[str], threshold: float = 0.7, tokenizer: str = "rouge", bulk: bool = False):
    index = NoveltyIndex(threshold, tokenizer)
    if bulk:
        index.add_many((t, f"k{i}") for i, t in enumerate(pool))
    else:
        for i, t in enumerate(pool):
            index.add(t, f"k{i}")
    return index


# Texts from a small vocabulary, so that overlaps, repeats and near-duplicates are common.
WORDS = ["the", "a", "of", "write", "list", "poem", "story", "cat", "dog", "sea", "x1", "Blue", "RED"]
word_texts = st.lists(st.sampled_from(WORDS), max_size=14).map(
    lambda ws: " ".join(ws) + random.Random(len(ws)).choice(["", ".", "?", " !"])
)


@st.composite
def near_duplicate(draw, base: str) -> str:
    words = base.split()
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["swap", "insert", "delete"]))
        i = draw(st.integers(0, max(len(words) - 1, 0)))
        if op == "insert" or not words:
            words.insert(i, draw(st.sampled_from(WORDS)))
        elif op == "swap":
            words[i] = draw(st.sampled_from(WORDS))
        else:
            del words[i]
    return " ".join(words)


@st.composite
def pool_and_candidates(draw):
    pool = draw(st.lists(word_texts, max_size=25))
    cands = draw(st.lists(word_texts, min_size=1, max_size=4))
    if pool:
        for _ in range(draw(st.integers(0, 4))):
            cands.append(draw(near_duplicate(draw(st.sampled_from(pool)))))
    return pool, cands


def zipf_corpus(seed: int, size: int, vocab: int = 400) -> list[str]:
    """Instruction-like texts over a Zipfian vocabulary, with near-duplicates."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    weights = [1 / (r + 1) for r in range(vocab)]
    out: list[str] = []
    for _ in range(size):
        if out and rng.random() < 0.3:
            ws = rng.choice(out).split()
            for _ in range(rng.randint(1, 2)):
                ws[rng.randrange(len(ws))] = rng.choices(words, weights)[0]
        else:
            ws = rng.choices(words, weights, k=rng.randint(1, 25))
        out.append(" ".join(ws))
    return out


# -- tokenizers and the pairwise score ---------------------------------------------


@FAST
@given(st.text())
def test_rouge_tokenizer_is_rouge_scores(text):
    assert TOKENIZERS["rouge"](text) == SCORER._tokenizer.tokenize(text)


@FAST
@given(word_texts, word_texts)
def test_rouge_l_bit_identical(a, b):
    want = SCORER.score(a, b)["rougeL"].fmeasure
    assert rouge_l(a, b).hex() == float(want).hex()
    assert rouge_l(b, a).hex() == float(want).hex()  # symmetric, bit for bit


@FAST
@given(st.text(max_size=40), st.text(max_size=40))
def test_rouge_l_on_arbitrary_text(a, b):
    assert rouge_l(a, b) == SCORER.score(a, b)["rougeL"].fmeasure


def test_float_boundary():
    # m=7, n=13, L=7: F = 0.7000000000000001 > 0.7 (reject); m=n=10, L=7: exactly 0.7 (keep).
    cand7 = "a b c d e f g"
    pool13 = "a b c d e f g h i j k l m"
    assert rouge_l(pool13, cand7) == 0.7000000000000001
    index = build([pool13])
    assert index.check(cand7) == Verdict(False, 0.7000000000000001, "k0")
    pool10, cand10 = "a b c d e f g h i j", "a b c d e f g x y z"
    assert rouge_l(pool10, cand10) == 0.7
    index = build([pool10])
    assert index.check(cand10) == Verdict(True, 0.7, "k0")
    assert index.is_novel(cand10) and not build([pool13]).is_novel(cand7)


def test_bounds_come_from_the_float_formula():
    # Exhaustive for lengths up to 120: need_row and omin agree with the float F itself.
    for t in (0.7, 0.5, 0.33):
        bounds = novelty._Bounds(t)
        for m in range(1, 121):
            row = bounds.need_row(m, 120)
            for n in range(1, 121):
                passing = [L for L in range(1, min(m, n) + 1) if novelty._f1(L, m, n) > t]
                assert row[n] == (passing[0] if passing else m + 1)
                if passing:
                    assert bounds.omin(n) <= passing[0] and bounds.omin(m) <= passing[0]


# -- the index against rouge-score -------------------------------------------------


@FAST
@given(pool_and_candidates(), st.sampled_from([0.7, 0.5, 0.0, 1.0, 0.3]), st.booleans())
def test_index_matches_rouge_score(data, threshold, bulk):
    pool, cands = data
    index = build(pool, threshold, bulk=bulk)
    assert len(index) == len(pool)
    for text in cands:
        assert_agrees(index, pool, text)


@FAST
@given(pool_and_candidates(), st.integers(1, 6))
def test_top_k_exact_and_ordered(data, k):
    pool, cands = data
    index = build(pool)
    for text in cands:
        scores = reference(pool, text)
        order = sorted(range(len(pool)), key=lambda i: (-scores[i], i))[:k]
        assert index.top_k(text, k) == [(float(scores[i]), f"k{i}") for i in order]


@pytest.mark.parametrize("seed", range(3))
def test_larger_vocabulary_incremental(seed):
    # More than 64 distinct elements (postings, common masks, re-ranking as the pool
    # doubles), queried while it grows one entry at a time.
    texts = zipf_corpus(seed, 500)
    index = NoveltyIndex()
    pool: list[str] = []
    rng = random.Random(seed)
    for i, text in enumerate(texts):
        if i % 7 == 0:
            probe = rng.choice(pool) if pool and rng.random() < 0.5 else text
            assert_agrees(index, pool, probe)
        index.add(text, f"k{i}")
        pool.append(text)
    for text in zipf_corpus(seed + 100, 60):
        assert_agrees(index, pool, text)
        scores = reference(pool, text)
        order = sorted(range(len(pool)), key=lambda i: (-scores[i], i))[:5]
        assert index.top_k(text, 5) == [(float(scores[i]), f"k{i}") for i in order]


def test_add_many_and_add_agree():
    texts = zipf_corpus(7, 300)
    one, bulk, mixed = NoveltyIndex(), NoveltyIndex(), NoveltyIndex()
    for i, t in enumerate(texts):
        one.add(t, f"k{i}")
    bulk.add_many((t, f"k{i}") for i, t in enumerate(texts))
    mixed.add_many((t, f"k{i}") for i, t in enumerate(texts[:100]))
    for i, t in enumerate(texts[100:], 100):
        if i % 50:
            mixed.add(t, f"k{i}")
        else:
            mixed.add_many([(t, f"k{i}")])
    for text in zipf_corpus(8, 60):
        assert one.check(text) == bulk.check(text) == mixed.check(text)
        assert one.top_k(text, 3) == bulk.top_k(text, 3) == mixed.top_k(text, 3)


def test_add_many_stays_consistent_when_items_fail():
    index = NoveltyIndex()

    def items():
        yield "write a poem about the sea", "k0"
        yield "list three dogs", "k1"
        raise RuntimeError("reader failed")

    with pytest.raises(RuntimeError):
        index.add_many(items())
    assert len(index) == 2
    assert index.check("write a poem about the sea") == Verdict(False, 1.0, "k0")
    index.add("explain gravity", "k2")
    assert index.check("explain gravity now").nearest == "k2"


def test_long_texts():
    # Lengths past the 4095 cap of the packed fields.
    rng = random.Random(1)
    words = [f"w{i}" for i in range(50)]
    long_entry = " ".join(rng.choices(words, k=4200))
    pool = zipf_corpus(2, 40) + [long_entry, "w1 w2 w3"]
    index = build(pool)
    for text in ["w1 w2 w3 w4", " ".join(rng.choices(words, k=8)), long_entry.split(" ", 4100)[-1]]:
        assert_agrees(index, pool, text)
    long_cand = " ".join(rng.choices(words, k=4300))
    short = build(pool[:-2])
    assert_agrees(short, pool[:-2], long_cand)


@pytest.mark.parametrize("bulk", [False, True])
def test_capped_fields(monkeypatch, bulk):
    # Postings cap lengths and positions at novelty._FIELD (4095); shrink it so that
    # ordinary texts exercise every capped path, long near-duplicates included.
    monkeypatch.setattr(novelty, "_FIELD", 31)
    rng = random.Random(5)
    words = [f"w{i}" for i in range(80)]

    def mutate(text: str) -> str:
        ws = text.split()
        for _ in range(rng.randint(0, 3)):
            ws[rng.randrange(len(ws))] = rng.choice(words)
        return " ".join(ws)

    pool = [" ".join(rng.choices(words, k=rng.randint(1, 90))) for _ in range(60)]
    pool += [mutate(rng.choice(pool)) for _ in range(20)]
    index = build(pool, bulk=bulk)
    for text in [mutate(rng.choice(pool)) for _ in range(40)] + [" ".join(rng.choices(words, k=70))]:
        assert_agrees(index, pool, text)
    text = mutate(max(pool, key=len))
    scores = reference(pool, text)
    order = sorted(range(len(pool)), key=lambda i: (-scores[i], i))[:4]
    assert index.top_k(text, 4) == [(float(scores[i]), f"k{i}") for i in order]


# -- edge cases and the documented rules -------------------------------------------


def test_empty_pool():
    index = NoveltyIndex()
    assert index.check("Write a poem.") == Verdict(True, 0.0, None)
    assert index.is_novel("Write a poem.")
    assert index.top_k("Write a poem.", 3) == []
    assert len(index) == 0


def test_zero_tokens_score_zero():
    index = build(["Write a poem.", "!!!", ""])
    assert index.check("???") == Verdict(True, 0.0, None)  # candidate without tokens
    assert index.check("") == Verdict(True, 0.0, None)
    assert index.top_k("...", 2) == [(0.0, "k0"), (0.0, "k1")]  # zeros in insertion order
    assert index.check("Write a poem").nearest == "k0"


def test_nearest_is_none_when_nothing_is_shared():
    index = build(["write a poem", "list three dogs"])
    assert index.check("explain gravity") == Verdict(True, 0.0, None)


def test_ties_go_to_the_earliest_added():
    index = build(["a poem about the sea", "tell a joke", "a poem about the sea", "a sea poem about"])
    assert index.check("a poem about the sea") == Verdict(False, 1.0, "k0")
    assert [key for _, key in index.top_k("a poem about the sea", 4)] == ["k0", "k2", "k3", "k1"]


def test_unknown_tokenizer_and_bad_threshold():
    with pytest.raises(ValueError, match="unknown tokenizer 'bert'; known: rouge, unicode"):
        NoveltyIndex(tokenizer="bert")
    with pytest.raises(ValueError, match="rouge, unicode"):
        rouge_l("a", "b", tokenizer="spacy")
    with pytest.raises(ValueError, match="threshold"):
        NoveltyIndex(threshold=1.5)


def test_top_k_of_nothing():
    assert build(["a b"]).top_k("a b", 0) == []


def test_popcount_fallback_matches(monkeypatch):
    import numpy as np

    a = np.array([0, 1, 2**63 + 5, 2**64 - 1, 12345], dtype=np.uint64)
    want = [bin(int(x)).count("1") for x in a]
    assert novelty._popcount(a).tolist() == want
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert novelty._popcount(a).tolist() == want


def test_code_points_past_unicode_fall_back_to_tuples():
    big = [1, 0x10FFFF + 5, 7]
    assert novelty._encode(big) == tuple(big)
    assert novelty._lcs(novelty._encode(big), novelty._encode([0x10FFFF + 5, 7])) == 2
    assert novelty._lcs(novelty._encode([1, 7]), novelty._encode(big)) == 2


# -- scripts -----------------------------------------------------------------------

CHINESE = ("请写一首关于秋天的诗", "请写一首关于秋天的短诗")
RUSSIAN = (
    "Напишите короткое стихотворение о зимнем лесе.",
    "Напишите короткое стихотворение о зимнем утре.",
)


@pytest.mark.parametrize("pair", [CHINESE, RUSSIAN])
def test_non_english_near_duplicates(pair):
    original, duplicate = pair
    # rouge-score's tokenizer sees no tokens at all: the duplicate passes as novel.
    assert TOKENIZERS["rouge"](duplicate) == []
    assert build([original]).check(duplicate) == Verdict(True, 0.0, None)
    # The unicode tokenizer catches it.
    verdict = build([original], tokenizer="unicode").check(duplicate)
    assert not verdict.novel and verdict.nearest == "k0"
    assert verdict.score == rouge_l(original, duplicate, tokenizer="unicode") > 0.8


def test_unicode_tokenizer():
    tok = TOKENIZERS["unicode"]
    assert tok("Café NAÏVE_test 123") == ["café", "naïve", "test", "123"]
    assert tok("写一首诗") == ["写", "一", "首", "诗"]
    assert tok("カタカナとひらがな한국어") == list("カタカナとひらがな한국어")
    assert tok("GPT-4 写诗 (in Chinese)") == ["gpt", "4", "写", "诗", "in", "chinese"]


unicode_texts = st.lists(
    st.sampled_from(["秋", "天", "诗", "写", "лес", "зима", "Лес", "café", "the", "к", "한", "글", "5"]),
    max_size=12,
).map(" ".join)


@FAST
@given(st.lists(unicode_texts, max_size=15), st.lists(unicode_texts, min_size=1, max_size=4))
def test_unicode_index_matches_plain_lcs(pool, cands):
    index = build(pool, tokenizer="unicode")
    for text in cands + pool[:2]:
        assert_agrees(index, pool, text, ref=unicode_reference)
        first = pool[0] if pool else ""
        assert rouge_l(first, text, "unicode") == unicode_reference([first], text)[0]


@pytest.mark.slow
def test_random_corpus_against_rouge_score_at_scale():
    pool = zipf_corpus(11, 2000, vocab=2000)
    index = build(pool, bulk=True)
    for text in zipf_corpus(12, 60, vocab=2000) + random.Random(3).sample(pool, 30):
        assert_agrees(index, pool, text)
