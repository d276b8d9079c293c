"""Wrote en_prompts.json at commit 2c64ab3, from the hard-coded English templates, before they moved to
selfinstruct/templates/en.yaml. Do not regenerate it: the golden test compares today's prompts with that text."""
import json, random
from selfinstruct import prompts as P
from selfinstruct.records import load_seeds

seeds = load_seeds("seed_tasks.jsonl")
rng = random.Random(0)
out = {"instruction": [], "classify": [], "instance_cls": [], "instance_gen": [], "alpaca": [],
       "instruction_stops": [list(P.instruction_stops(8, 6)), list(P.instruction_stops(3, 8))],
       "alpaca_stops": [list(P.alpaca_stops(8, 6))], "instance_stops": list(P.INSTANCE_STOPS)}
for i in range(6):
    ex = rng.sample(seeds, 8)
    out["instruction"].append(P.build_instruction_prompt(ex))
    out["alpaca"].append(P.build_alpaca_prompt(ex))
    out["classify"].append(P.build_classify_prompt(ex[0].instruction))
    demos = rng.sample(seeds, 2)
    out["instance_cls"].append(P.build_instance_prompt(ex[1].instruction, demos, True))
    out["instance_gen"].append(P.build_instance_prompt(ex[2].instruction, demos, False))
json.dump(out, open("tests/assets/en_prompts.json", "w"), ensure_ascii=False, indent=0)
