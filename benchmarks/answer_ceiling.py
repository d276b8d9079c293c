"""How good are the model's answers when a person wrote the instruction and the input?

Usage: python benchmarks/answer_ceiling.py --sample 30 [--seed 0] [--config configs/default.yaml] -o sheet.csv [KEY=VALUE ...]
       python benchmarks/answer_ceiling.py --score sheet.csv

The first form answers a random sample of the non-classification seed tasks (human-written, valid by construction, with
their own inputs) exactly as a job answers its generated tasks: one chat turn per instruction + input,
with the config's `answers` settings. It writes a sheet with the seed's reference output beside the
model's answer and an empty `acceptable` column to grade (y / n, as audit.md's third question).

`--score` prints the share of acceptable answers with a 95 % interval. No filter and no instruction can
make a job's share of fully valid tasks higher than this share, save by keeping only the tasks whose
answers the model gets right: it bounds what the tool can do with this model.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfinstruct import config as C  # noqa: E402
from selfinstruct import prompts as P  # noqa: E402
from selfinstruct.audit import SHEET_VALUES, rate_line  # noqa: E402
from selfinstruct.lm import load_lm  # noqa: E402
from selfinstruct.pipeline import _params  # noqa: E402
from selfinstruct.records import load_seeds  # noqa: E402

COLUMNS = ("id", "instruction", "input", "reference", "answer", "acceptable")


def answer(config: str, overrides: list[str], n: int, seed: int, out: str) -> None:
    cfg = C.load(config, overrides)
    seeds = load_seeds(cfg.seed_tasks)
    open_tasks = [t for t in seeds if t.is_classification is not True]  # a job answers these in chat
    picked = random.Random(seed).sample(open_tasks, min(n, len(open_tasks)))
    rows = [(t, inst) for t in picked for inst in t.instances[:1]]
    lm = load_lm(cfg.model)
    if not lm.has_chat_template:
        raise SystemExit(f"{cfg.model.name}: no chat template, so a job would not answer in chat")
    turns = [P.chat_turn(t.instruction, inst.input) for t, inst in rows]
    outs = lm.generate(turns, _params(cfg.answers, (), chat=True), seed=seed)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for (t, inst), o in zip(rows, outs):
            w.writerow((t.id, t.instruction, inst.input, inst.output, o.text.strip(), ""))
    print(f"{len(rows)} seed tasks answered by {cfg.model.name} -> {out}; grade the acceptable column")


def score(sheet: str) -> None:
    with open(sheet, newline="", encoding="utf-8") as f:
        marks = [r["acceptable"].strip().lower() for r in csv.DictReader(f)]
    bad = [m for m in marks if m and m not in SHEET_VALUES]
    if bad:
        raise SystemExit(f"{sheet}: acceptable must be y or n, got {bad[0]!r}")
    graded = [SHEET_VALUES[m] for m in marks if m]
    print(rate_line("acceptable answer to a human-written task", sum(graded), len(graded)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--sample", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", default="answer_ceiling.csv")
    ap.add_argument("--score", metavar="SHEET", help="print the graded share of a sheet instead")
    ap.add_argument("overrides", nargs="*", help="config overrides, as for `selfinstruct run` (model.name=DIR)")
    a = ap.parse_args()
    if a.score:
        score(a.score)
    else:
        answer(a.config, a.overrides, a.sample, a.seed, a.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
