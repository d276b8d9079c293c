"""`selfinstruct report`: one self-contained HTML page (plots embedded as data URIs) and the PNGs beside it.

Reads the run directory only (through stats), never the model; works on a run that is still going and on one
that accepted nothing.
"""

from __future__ import annotations

import base64
import random
from collections import Counter
from html import escape
from pathlib import Path

from selfinstruct import audit as A
from selfinstruct import plots
from selfinstruct import stats as S
from selfinstruct.errors import RunDirError
from selfinstruct.store import write_atomic

SAMPLE_ACCEPTED = 15
SAMPLE_PER_REASON, SAMPLE_REJECTED = 3, 40
UNIT_NAMES = {"word": "words", "char": "characters"}  # language.UNITS, as a label
TEXT_LIMIT = 600  # characters of a field shown in a sample (the rest is in tasks.jsonl)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;color:#222;
 padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .5em;vertical-align:top;text-align:left}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font:12px/1.35 ui-monospace,Menlo,Consolas,monospace}
.note{color:#666;font-size:.92em}.kv td:first-child{color:#555}td code{white-space:nowrap}
"""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _clip(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + f" … ({len(text) - TEXT_LIMIT} more characters)"


def _table(header: list[str], rows: list[list[object]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="n">{_e(c)}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "n/a"


def _figure(name: str, png: bytes, alt: str, out: Path, written: list[Path]) -> str:
    path = out / f"{name}.png"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(png)
    tmp.replace(path)
    written.append(path)
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _funnel_table(rows: list[dict]) -> str:
    reasons = [k for k, _ in sum((Counter(r["rejected"]) for r in rows), Counter()).most_common()]
    header = ["round", "human fraction", "generated", *[f"rejected {k}" for k in reasons], "accepted", "acceptance"]
    body = [[r["round"], f"{r['human_fraction']:.2f}", r["generated"], *[r["rejected"].get(k, 0) for k in reasons],
             r["accepted"], _pct(r["accepted"], r["generated"])] for r in rows]
    if rows:
        g, a = sum(r["generated"] for r in rows), sum(r["accepted"] for r in rows)
        body.append(["all", "", g, *[sum(r["rejected"].get(k, 0) for r in rows) for k in reasons], a, _pct(a, g)])
    return '<div style="overflow-x:auto">' + _table(header, body, numeric=set(range(1, len(header)))) + "</div>"


def _accepted_sample(tasks: list) -> str:
    chosen = sorted(random.Random(0).sample(range(len(tasks)), min(SAMPLE_ACCEPTED, len(tasks))))
    rows = []
    for i in chosen:
        t = tasks[i]
        first = t.instances[0] if t.instances else None
        score = (t.meta.get("nearest") or {}).get("score")
        rows.append([f"<code>{_e(t.id)}</code>", f"<pre>{_e(_clip(t.instruction))}</pre>",
                     f"<pre>{_e(_clip(first.input)) if first else ''}</pre>",
                     f"<pre>{_e(_clip(first.output)) if first else ''}</pre>",
                     _e(f"{'yes' if t.is_classification else 'no'}; depth {t.depth}; "
                        f"ROUGE-L to pool {score:.2f}" if score is not None else f"depth {t.depth}")
                     + (f"; +{len(t.instances) - 1} instances" if len(t.instances) > 1 else "")])
    return _table(["id", "instruction", "input (first instance)", "output (first instance)",
                   "classification; lineage; novelty"], rows)


def _rejected_sample(rejected: list[dict]) -> str:
    by: dict[str, list[dict]] = {}
    for row in rejected:
        by.setdefault(f"{row.get('stage')}:{row.get('reason')}", []).append(row)
    rng = random.Random(0)
    rows = []
    for reason, items in sorted(by.items(), key=lambda kv: -len(kv[1])):
        for row in rng.sample(items, min(SAMPLE_PER_REASON, len(items))):
            if len(rows) >= SAMPLE_REJECTED:
                break
            detail = ""
            if row.get("nearest_text"):
                detail = f"nearest ({row.get('score') or 0:.2f}): {row['nearest_text']}"
            elif row.get("instances"):
                inst = row["instances"][0]
                detail = f"input: {inst.get('input', '')}\noutput: {inst.get('output', '')}"
            rows.append([_e(reason), f"<pre>{_e(_clip(str(row.get('text', ''))))}</pre>",
                         f"<pre>{_e(_clip(detail))}</pre>"])
    return _table(["stage:reason", "candidate instruction", "detail"], rows)


def _audit_section(answers: dict[str, dict]) -> str:
    if not answers:
        return ('<p class="note">No audit yet: <code>selfinstruct audit RUN_DIR --sample 50</code> grades tasks '
                'by hand.</p>')
    lines = A.rate_lines(answers)
    return f"<p>{len(answers)} tasks graded by hand.</p><pre>" + _e("\n".join(lines)) + "</pre>"


def build(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write report.html and the PNGs into `out_dir` (default RUN_DIR/report); return the page's path."""
    plots.pyplot()  # a missing matplotlib fails before anything is read or written
    data = S.load_run(run_dir)
    out = Path(out_dir) if out_dir else data.root / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"{out}: cannot create the report directory: {e.strerror}") from None
    if not out.is_dir():
        raise RunDirError(f"{out}: not a directory")
    try:
        return _write(data, out)
    except OSError as e:
        raise RunDirError(f"{out}: cannot write the report: {e.strerror or e}") from None


def _write(data: S.RunData, out: Path) -> Path:
    cfg, p, tasks, lang = data.cfg, data.store.progress, data.tasks, data.lang
    n = len(tasks)
    written: list[Path] = []
    funnel = S.funnel(p)
    to_seeds, to_pool = S.rouge_to_seeds(data), S.rouge_to_pool(tasks)
    lens = S.lengths(tasks, lang)
    mix = S.mix_by_round(tasks)
    verbs = S.leading_verbs(tasks, lang)
    row = S.summary(data)
    t = p["totals"]
    state = f"finished: {p['stop_reason']}" if p.get("stop_reason") else (
        f"not finished (next: round {p['cursor']['round']} batch {p['cursor']['batch']})")
    env = p.get("environment") or {}
    model = f"{cfg.model.name} ({cfg.model.backend}"
    model += f", {env['device']} {env['dtype']}" if env.get("device") else ""
    model += f"; revision {env['revision']})" if env.get("revision") else ")"
    kv = [("run", data.root.resolve()), ("state", state), ("model", model),
          ("style / language", f"{cfg.style} / {cfg.language}"),
          ("mix", f"human_fraction {cfg.prompt.human_fraction:g} of {cfg.prompt.num_examples} examples"
                  + (f", schedule {cfg.prompt.schedule}" if cfg.prompt.schedule else "")),
          ("accepted", f"{n} of {t['candidates']} candidates ({_pct(n, t['candidates'])}); target {cfg.target}"),
          ("generated tokens", f"{t['completion_tokens']} ({row['tokens_per_task']:.0f} per accepted task)"
                               if n else str(t["completion_tokens"])),
          ("seeds", f"{len(data.seeds)} tasks in {cfg.seed_tasks}" if data.seeds is not None else data.seeds_note)]
    parts = [f"<h1>selfinstruct report: {_e(data.root.name)}</h1>",
             '<table class="kv">' + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in kv) + "</table>"]

    parts.append("<h2>Funnel per round</h2>")
    parts.append(_figure("funnel", plots.funnel(funnel), "funnel per round", out, written))
    parts.append(_funnel_table(funnel))

    parts.append("<h2>Novelty: highest ROUGE-L of each accepted instruction</h2>")
    parts.append(_figure("rouge", plots.rouge(to_seeds, to_pool, cfg.novelty.threshold, data.seeds_note),
                         "ROUGE-L histograms", out, written))
    means = [f"mean against the seeds {row['rouge_seeds']:.3f}" if row["rouge_seeds"] is not None else "",
             f"mean against the pool {row['rouge_pool']:.3f}" if row["rouge_pool"] is not None else ""]
    parts.append(f'<p class="note">Against the seeds: computed now, exactly, with the novelty index '
                 f'(tokenizer {_e(cfg.novelty.tokenizer)}). Against the pool: the score recorded when the task was '
                 f'accepted (seeds, earlier tasks, and earlier candidates of its batch that had passed the instruction '
                 f'filters, even if their instances were dropped later). '
                 f'{_e("; ".join(m for m in means if m))}</p>')

    unit = UNIT_NAMES.get(lang.unit, lang.unit)
    parts.append(f"<h2>Lengths ({_e(unit)})</h2>")
    parts.append(_figure("lengths", plots.lengths(lens, unit), "length histograms", out, written))
    stat = [[k, len(v), f"{sum(v) / len(v):.1f}" if v else "", min(v) if v else "", max(v) if v else ""]
            for k, v in lens.items()]
    parts.append(_table(["field", "count", "mean", "min", "max"], stat, numeric={1, 2, 3, 4}))

    parts.append("<h2>Human-to-model spectrum</h2>")
    configured = {r["round"]: r["human_fraction"] for r in funnel}
    parts.append(_figure("mix", plots.mix(mix, configured), "human share and lineage depth per round", out, written))
    parts.append(_table(["round", "accepted", "human share of examples", "mean lineage depth", "depths"],
                        [[m["round"], m["tasks"], f"{m['human_share']:.1%}" if m["human_share"] is not None else "",
                          f"{m['depth_mean']:.2f}", _e(", ".join(f"{d}: {c}" for d, c in m["depths"].items()))]
                         for m in mix], numeric={1, 2, 3}))

    cls = sum(bool(x.is_classification) for x in tasks)
    empty = sum(S.empty_input(x) for x in tasks)
    parts.append("<h2>Task types</h2>")
    parts.append(_table(["", "tasks", "share"], [["classification", cls, _pct(cls, n)],
                                                 ["empty input (every instance)", empty, _pct(empty, n)],
                                                 ["all accepted", n, ""]], numeric={1, 2}))
    if n:
        parts.append(f'<p class="note">Instruction distinct-1 {row["distinct_1"]:.3f}, distinct-2 '
                     f'{row["distinct_2"]:.3f} (unique word uni/bigrams over all of them).</p>')

    parts.append("<h2>Leading verbs and their objects</h2>")
    if verbs is None:
        parts.append(f'<p class="note">Shown for English only; this run is in {_e(cfg.language)}.</p>')
    else:
        vc, pc, none = verbs
        parts.append(_figure("verbs", plots.verbs(vc, pc), "leading verbs and verb-object pairs", out, written))
        parts.append(f'<p class="note">A heuristic over the first words, not a parser (a parser such as the paper\'s '
                     f'Berkeley Neural Parser needs a model download): after an opener ("Please", "Given X, "), the '
                     f'first word is the verb unless it opens a question or statement; the object is the last word of '
                     f'the noun phrase after it. {none} of {n} instructions have no leading verb (questions, '
                     f'statements).</p>')

    parts.append(f"<h2>Sample of accepted tasks ({min(SAMPLE_ACCEPTED, n)} of {n})</h2>")
    parts.append(_accepted_sample(tasks) if tasks else '<p class="note">No accepted tasks.</p>')
    parts.append(f"<h2>Sample of rejected candidates (up to {SAMPLE_PER_REASON} per reason, "
                 f"of {len(data.rejected)})</h2>")
    parts.append(_rejected_sample(data.rejected) if data.rejected else '<p class="note">No rejected candidates.</p>')
    parts.append("<h2>Hand audit</h2>")
    parts.append(_audit_section(data.audit))

    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>selfinstruct report: {_e(data.root.name)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")
    html = out / "report.html"
    write_atomic(html, page)
    return html
