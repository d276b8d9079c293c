"""Languages: templates as data files, English prompts unchanged, Chinese prompts, parsing and filters."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
import yaml

from selfinstruct import config as C
from selfinstruct import filters as F
from selfinstruct import prompts as P
from selfinstruct.errors import ConfigError
from selfinstruct.language import TEMPLATES_DIR, count_units, language_share, load
from selfinstruct.records import Instance, Task, load_seeds

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = json.loads((ROOT / "tests/assets/en_prompts.json").read_text(encoding="utf-8"))


def test_english_prompts_are_byte_identical_to_the_hard_coded_ones():
    """tests/assets/en_prompts.json was written by tests/assets/make_en_prompts.py before the templates moved."""
    seeds = load_seeds(ROOT / "seed_tasks.jsonl")
    rng = random.Random(0)
    for i in range(6):
        ex = rng.sample(seeds, 8)
        assert P.build_instruction_prompt(ex) == GOLDEN["instruction"][i]
        assert P.build_alpaca_prompt(ex) == GOLDEN["alpaca"][i]
        assert P.build_classify_prompt(ex[0].instruction) == GOLDEN["classify"][i]
        demos = rng.sample(seeds, 2)
        assert P.build_instance_prompt(ex[1].instruction, demos, True) == GOLDEN["instance_cls"][i]
        assert P.build_instance_prompt(ex[2].instruction, demos, False) == GOLDEN["instance_gen"][i]
    assert [list(P.instruction_stops(8, 6)), list(P.instruction_stops(3, 8))] == GOLDEN["instruction_stops"]
    assert [list(P.alpaca_stops(8, 6))] == GOLDEN["alpaca_stops"]
    assert list(P.INSTANCE_STOPS) == GOLDEN["instance_stops"]


# ---- Chinese templates: build and parse ----

ZH = load("zh")
ZH_SEEDS = ROOT / "seeds" / "zh_seed_tasks.jsonl"


def test_chinese_instruction_prompt_numbers_tasks_in_chinese():
    ex = [Task(id="a", instruction="写一首诗。", instances=[]), Task(id="b", instruction="翻译这句话。", instances=[])]
    prompt = P.build_instruction_prompt(ex, ZH)
    assert prompt == "请想出一系列任务：\n\n任务 1：写一首诗。\n任务 2：翻译这句话。\n任务 3："
    assert P.instruction_stops(2, 3, ZH) == ("任务 6：", "\n\n")


@pytest.mark.parametrize("marker", ["任务 3：", "任务3:", "任务 3．", "3。", "3、", "Task 3:", "3）"])
def test_chinese_task_numbering_and_full_width_punctuation_split_items(marker):
    assert P.parse_instructions(f"写一首诗。\n{marker}把句子翻译成英文。", ZH) == ["写一首诗。", "把句子翻译成英文。"]


def test_a_number_inside_a_chinese_line_does_not_split_it():
    assert P.parse_instructions("计算\n3.5乘以2等于多少。", ZH) == ["计算 3.5乘以2等于多少。"]


def test_chinese_instance_prompt_and_parse_with_either_colon():
    demo = Task(id="d", instruction="写出反义词。", instances=[Instance("高", "低")])
    prompt = P.build_instance_prompt("写出近义词。", [demo], False, ZH)
    assert prompt.endswith("任务：写出近义词。\n示例 1\n输入：")
    assert "示例 1\n输入：高\n输出：低" in prompt
    got = P.parse_instances("美丽\n输出：漂亮\n示例 2\n输入: 立刻\nOutput: 马上\n示例 3\n输入：无\n输出：好", False, ZH)
    assert got == [Instance("美丽", "漂亮"), Instance("立刻", "马上"), Instance("", "好")]
    cls = P.parse_instances("正面\n输入：很好吃\n类别标签：负面\n输入：太难吃了", True, ZH)
    assert cls == [Instance("很好吃", "正面"), Instance("太难吃了", "负面")]


def test_chinese_alpaca_round_trip():
    ex = [Task(id="a", instruction="写出反义词。", instances=[Instance("高", "低")])]
    prompt = P.build_alpaca_prompt(ex, ZH)
    assert "###\n1. 指令：写出反义词。\n1. 输入：\n高\n1. 输出：\n低\n###\n2. 指令：" in prompt
    got = P.parse_alpaca("说出一个水果。\n2. 输入：\n<无输入>\n2. 输出：\n苹果\n3．指令：写出近义词。\n3. 输入：\n美丽\n3. 输出：\n漂亮", ZH)
    assert got == [("说出一个水果。", Instance("", "苹果")), ("写出近义词。", Instance("美丽", "漂亮"))]


def test_chinese_needs_input():
    assert P.needs_input("把下面的句子翻译成英文。", ZH)
    assert not P.needs_input("中国的首都是哪座城市？", ZH)


# ---- config ----

def test_language_picks_tokenizer_and_blacklist_unless_given():
    cfg = C.from_dict({"language": "zh"})
    assert cfg.novelty.tokenizer == "unicode" and "图片" in cfg.filters.blacklist
    cfg = C.from_dict({"language": "zh-Hans", "novelty": {"tokenizer": "unicode"}, "filters": {"blacklist": ["x"]}})
    assert cfg.novelty.tokenizer == "unicode" and cfg.filters.blacklist == ["x"]
    en = C.from_dict({})
    assert en.language == "en" and en.novelty.tokenizer == "rouge" and "image" in en.filters.blacklist


def test_default_yaml_switched_to_chinese_refuses_the_rouge_tokenizer_and_warns_on_the_english_blacklist(caplog):
    with caplog.at_level(logging.WARNING, logger="selfinstruct"):
        with pytest.raises(ConfigError, match="novelty.tokenizer: rouge sees only ASCII"):
            C.load(ROOT / "configs" / "default.yaml", ["language=zh"])
        cfg = C.load(ROOT / "configs" / "default.yaml", ["language=zh", "novelty.tokenizer=unicode"])
    assert cfg.language == "zh" and "filters.blacklist is the English list in a zh job" in caplog.text


def test_language_without_templates_is_an_error_that_says_what_to_do():
    with pytest.raises(ConfigError) as e:
        C.from_dict({"language": "de"})
    assert "language: no shipped templates for 'de'" in str(e.value) and "prompt.templates" in str(e.value)
    with pytest.raises(ConfigError, match="language: must be a language code"):
        C.from_dict({"language": "Chinese!"})


def test_a_users_own_template_file_for_another_language(tmp_path):
    data = yaml.safe_load((TEMPLATES_DIR / "en.yaml").read_text(encoding="utf-8"))
    data.update(instruction_header="Denke dir eine Reihe von Aufgaben aus:\n\n", task_prefix="Aufgabe {n}:",
                blacklist=["Bild"])
    path = tmp_path / "de.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    cfg = C.from_dict({"language": "de", "prompt": {"templates": str(path)}})
    assert cfg.novelty.tokenizer == "unicode" and cfg.filters.blacklist == ["Bild"]
    de = load("de", str(path))
    one = [Task(id="a", instruction="Schreibe ein Gedicht.", instances=[])]
    assert P.build_instruction_prompt(one, de).endswith("aus:\n\nAufgabe 1: Schreibe ein Gedicht.\nAufgabe 2:")
    assert P.parse_instructions("Schreibe ein Gedicht.\nAufgabe 2: Nenne drei Farben.", de)[1] == "Nenne drei Farben."


def test_a_broken_template_file_lists_every_problem(tmp_path):
    path = tmp_path / "xx.yaml"
    data = yaml.safe_load((TEMPLATES_DIR / "en.yaml").read_text(encoding="utf-8"))
    del data["instruction_header"]
    data.update(task_prefix="Task:", program="(", length_unit="syllable", extra="?")
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        C.from_dict({"language": "xx", "prompt": {"templates": str(path)}})
    msg = str(e.value)
    assert str(path) in msg and "4 problem" not in msg
    for key in ("instruction_header: missing", "extra: unknown key", "program: bad regular expression",
                "length_unit: must be one of", "task_prefix: must hold"):
        assert key in msg


def test_old_ascii_start_filter_name_maps_to_wrong_language(caplog):
    with caplog.at_level(logging.WARNING, logger="selfinstruct"):
        cfg = C.from_dict({"filters": {"instruction": ["length", "ascii_start"]}})
    assert cfg.filters.instruction == ["length", "wrong_language"]
    assert "ascii_start is now called wrong_language" in caplog.text


def test_every_shipped_template_has_every_key_and_loads():
    for path in TEMPLATES_DIR.glob("*.yaml"):
        assert load(path.stem).data.keys() == load("en").data.keys()


def test_pyproject_ships_the_templates_in_the_package():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "templates/*.yaml" in data["tool"]["setuptools"]["package-data"]["selfinstruct"]


# ---- filters in a Chinese job ----

ZCFG = C.from_dict({"language": "zh"}).filters
ZCTX = F.Context(lang=ZH)


def test_length_counts_characters_in_chinese_and_words_in_english():
    assert count_units("把下面的词语按字数从少到多排列。", ZH) == 15
    assert count_units("把 iPhone 翻译成中文", ZH) == 7  # a Latin word counts as one
    assert F.length("把下面的词语按字数从少到多排列。", ZCFG, ZCTX) is None
    assert F.length("写诗", ZCFG, ZCTX) == "too_short"
    assert F.length("Write a poem now", C.FilterConfig()) is None


@pytest.mark.parametrize("text,reason", [
    ("把下面的句子翻译成英文：I like it.", None),
    ("Write a short poem about the moon.", "wrong_language"),
    ("画一幅春天的图片。", "blacklist"),
    ("写一首关于春天的诗艾万矫\ufffd", "broken_characters"),
    ("写一首诗。任务 9：翻译这句话。", "leaked_markers"),
    ("写一首关于春天的", "truncated"),
    ("今天的天气很好。", "not_a_task"),
    ("，写一首诗吧。", "leading_punctuation"),
    ("请编写一个Python程序计算质数。", "program_task"),
])
def test_chinese_instruction_filters(text, reason):
    assert F.check_instruction(text, ZCFG, ZCTX) == reason


def test_chinese_instance_filters():
    ctx = F.Context(instruction="法国的首都是哪里？", lang=ZH)
    for out, reason in (("巴黎。", None), ("The capital of France is Paris, a city on the Seine.", "wrong_language"),
                        ("抱歉，我无法回答这个问题。", "refusal"), ("巴\ufffd", "broken_characters")):
        assert F.instance_reason(Instance("", out), ZCFG, ctx) == reason
    apology = F.Context(instruction="以店家的身份回复这条差评。", lang=ZH)
    assert F.filter_instances([Instance("太慢了。", "非常抱歉让您久等了，我们会改进。")], ZCFG, apology)[0]
    grammar = F.Context(instruction="改正下面英文句子中的语法错误。", lang=ZH)
    assert F.instance_reason(Instance("She go to school.", "She goes to school."), ZCFG, grammar) is None
    # A bundled-model reply that drifted into English prose (its instruction names pinyin, so a third of 0.5 applies)
    drift = json.loads((ROOT / "tests/assets/zh_drift.json").read_text(encoding="utf-8"))
    ctx = F.Context(field="instance", instruction=drift["instruction"], lang=ZH)
    assert F.wrong_language(drift["output"], ZCFG, ctx) == "wrong_language"
    english = F.Context(instruction="Translate the sentence into Chinese.")
    assert F.instance_reason(Instance("Good morning.", "早上好。"), C.FilterConfig(), english) is None
    assert F.instance_reason(Instance("", "早上好。"), C.FilterConfig(), F.Context(instruction="Say hi.")) \
        == "wrong_language"
    missing = F.Context(instruction="把下面的句子翻译成英文", lang=ZH)
    assert F.filter_instances([Instance("", "Hello.")], ZCFG, missing)[1] == {"missing_input": 1}
    these = F.Context(instruction="将这些汉字的拼音写出来。", lang=ZH)
    assert F.instance_reason(Instance("", "hàn zì"), ZCFG, these) == "missing_input"


# ---- the Chinese seed set ----

def test_chinese_seeds_are_many_varied_and_pass_the_chinese_filters():
    seeds = load_seeds(ZH_SEEDS)
    assert len(seeds) >= 100
    assert sum(bool(t.is_classification) for t in seeds) >= 15
    assert sum(all(not i.input for i in t.instances) for t in seeds) >= 20
    for t in seeds:
        assert F.check_instruction(t.instruction, ZCFG, ZCTX) is None, t.instruction
        ctx = F.Context(instruction=t.instruction, classification=bool(t.is_classification), lang=ZH)
        assert not F.filter_instances(t.instances, ZCFG, ctx)[1], t.instruction


def test_no_two_chinese_seeds_are_too_similar_under_the_unicode_tokenizer():
    from selfinstruct.novelty import NoveltyIndex

    index = NoveltyIndex(0.7, "unicode")
    for t in load_seeds(ZH_SEEDS):
        verdict = index.check(t.instruction)
        assert verdict.score <= 0.7, (t.instruction, verdict)
        index.add(t.instruction, t.id)


# ---- a Chinese job on the fake model ----

def test_chinese_job_on_the_fake_model(tmp_path):
    from tests.helpers import cfg_for, rows, run_job

    cfg = cfg_for(tmp_path, language="zh", seed_tasks=str(ZH_SEEDS), target=10, filters__min_words=6)
    reason, store = run_job(cfg, load_seeds(ZH_SEEDS))
    tasks = rows(tmp_path / "run" / "tasks.jsonl")
    assert len(tasks) >= 10 and reason.startswith("target reached")
    for t in tasks:
        assert t["meta"]["language"] == "zh"
        assert language_share(t["instruction"], ZH) == 1.0
    rejected = {r["reason"] for r in rows(tmp_path / "run" / "rejected.jsonl")}
    assert "blacklist" in rejected and "too_short" in rejected and "too_similar" in rejected
    # Chinese prompts only: the fake LM answers Chinese templates in Chinese
    assert all(t["instances"][0]["output"] for t in tasks)
