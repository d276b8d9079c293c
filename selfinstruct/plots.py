"""The report's and the sweep's figures, drawn with matplotlib (the optional extra `report`), as PNG bytes."""

from __future__ import annotations

import io
from collections import Counter

from selfinstruct.errors import SelfInstructError

MISSING = 'this needs matplotlib, the optional extra "report": pip install -e ".[report]"'
DPI = 100
ACCEPTED, REJECTED = "#3b7d3b", "#b04a3a"


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend; a one-line error when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise SelfInstructError(MISSING) from None
    matplotlib.use("Agg")  # no display needed; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    # no Software/date metadata: the same run gives the same bytes
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    pyplot().close(fig)
    return buf.getvalue()


def _empty(ax, text: str = "no accepted tasks") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def funnel(rows: list[dict]) -> bytes:
    """Per round: a stacked bar of accepted and each rejection reason; the bar's height is what was generated."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    if not rows:
        _empty(ax, "no round committed yet")
        return _png(fig)
    totals: Counter = Counter()
    for r in rows:
        totals.update(r["rejected"])
    reasons = [k for k, _ in totals.most_common()]
    xs = [str(r["round"]) for r in rows]
    bottom = [0] * len(rows)
    ax.bar(xs, [r["accepted"] for r in rows], color=ACCEPTED, label="accepted")
    bottom = [r["accepted"] for r in rows]
    cmap = plt.get_cmap("tab20")
    colors = [cmap(i) for i in range(20) if i not in (4, 5)]  # tab20's greens would read as "accepted"
    for i, reason in enumerate(reasons):
        vals = [r["rejected"].get(reason, 0) for r in rows]
        ax.bar(xs, vals, bottom=bottom, color=colors[i % len(colors)], label=f"rejected {reason}")
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xlabel("round")
    ax.set_ylabel("candidates generated")
    ax.set_title("Funnel per round: generated = accepted + rejected by stage:reason")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _png(fig)


def rouge(to_seeds: list[float] | None, to_pool: list[float], threshold: float, note: str = "") -> bytes:
    """Histograms of each accepted instruction's highest ROUGE-L F1 against the seeds and against the pool."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    bins = [i / 20 for i in range(21)]
    for ax, values, title in ((axes[0], to_seeds, "against the seeds"),
                              (axes[1], to_pool, "against the pool at acceptance")):
        if values is None:
            _empty(ax, note or "seeds unavailable")
        elif not values:
            _empty(ax)
        else:
            ax.hist(values, bins=bins, color="#4a6fa5", edgecolor="white")
            ax.axvline(threshold, color=REJECTED, linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
            ax.legend(fontsize=8)
            ax.set_xlim(0, 1)
        ax.set_title(f"highest ROUGE-L {title}", fontsize=10)
        ax.set_xlabel("ROUGE-L F1")
    axes[0].set_ylabel("accepted tasks")
    return _png(fig)


def lengths(lens: dict[str, list[int]], unit: str) -> bytes:
    """Histograms of instruction, input and output lengths; `unit` labels the axis ("words", "characters")."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    for ax, (name, values) in zip(axes, lens.items()):
        if not values:
            _empty(ax)
        else:
            lo, hi = min(values), max(values)
            # one bar per length when the range is short, else 30 bins; integer ticks either way
            bins = [x - 0.5 for x in range(lo, hi + 2)] if hi - lo < 30 else 30
            ax.hist(values, bins=bins, color="#7a5ca5", edgecolor="white")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(unit)
        ax.set_title(f"{name} length" + (" (per instance)" if name != "instruction" else ""), fontsize=10)
    axes[0].set_ylabel("count")
    return _png(fig)


def mix(rounds: list[dict], configured: dict[int, float]) -> bytes:
    """Per round: human share of the prompt examples behind accepted tasks, and their lineage depths."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    if not rounds:
        _empty(a1)
        _empty(a2)
        return _png(fig)
    xs = [r["round"] for r in rounds]
    a1.plot(xs, [r["human_share"] for r in rounds], "o-", color="#4a6fa5", label="actual (accepted tasks' prompts)")
    cx = sorted(configured)
    a1.plot(cx, [configured[x] for x in cx], "s--", color="#999", label="configured human_fraction")
    a1.set_ylim(-0.05, 1.05)
    a1.set_xticks(sorted(set(xs) | set(cx)))
    a1.set_xlabel("round")
    a1.set_ylabel("human share of prompt examples")
    a1.set_title("human-to-model spectrum", fontsize=10)
    a1.legend(fontsize=7)
    depths = sorted({d for r in rounds for d in r["depths"]})
    bottom = [0] * len(rounds)
    cmap = plt.get_cmap("viridis")
    for i, d in enumerate(depths):
        vals = [r["depths"].get(d, 0) for r in rounds]
        a2.bar([str(x) for x in xs], vals, bottom=bottom, color=cmap(i / max(1, len(depths) - 1)), label=f"depth {d}")
        bottom = [b + v for b, v in zip(bottom, vals)]
    a2.set_xlabel("round")
    a2.set_ylabel("accepted tasks")
    a2.set_title("lineage depth of accepted tasks", fontsize=10)
    a2.legend(fontsize=7)
    return _png(fig)


def verbs(verb_counts: Counter, pairs: Counter, top: int = 20) -> bytes:
    """The most frequent leading verbs, and verb-object pairs."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 0.28 * top + 1.4))
    for ax, counts, title in ((a1, verb_counts, "leading verbs"), (a2, pairs, "verb + object")):
        items = counts.most_common(top)
        if not items:
            _empty(ax, "none found")
        else:
            labels = [k if isinstance(k, str) else " ".join(k) for k, _ in items][::-1]
            ax.barh(labels, [v for _, v in items][::-1], color="#c08a2e")
            ax.tick_params(axis="y", labelsize=8)
            ax.set_xlabel("accepted tasks")
        ax.set_title(f"top {top} {title}", fontsize=10)
    return _png(fig)


def sweep(labels: list[str], axis: str, rows: list[dict], columns: list[tuple[str, str]]) -> bytes:
    """One small bar chart per metric, one bar per sweep run."""
    plt = pyplot()
    cols = 4
    n = len(columns)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(12, 2.6 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax, (key, title) in zip(axes.flat, columns):
        vals = [r.get(key) for r in rows]
        ax.bar(range(len(rows)), [v if v is not None else 0 for v in vals], color="#4a6fa5")
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_xlabel(axis, fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return _png(fig)
