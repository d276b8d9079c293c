"""A scripted, deterministic fake LM for tests and dry runs (no torch)."""

from __future__ import annotations

import hashlib
import os
import random
import re
import time
from typing import Callable

from selfinstruct import prompts as P
from selfinstruct.language import load as load_language
from selfinstruct.lm.base import Completion, GenerationParams, apply_stop, per_prompt

_WORDS = ("river planet budget recipe sonnet invoice garden protocol lantern orbit ledger meadow "
          "violin harbor circuit glacier pamphlet compass quartz tundra mosaic parable ember "
          "lattice beacon canyon dialect fossil harvest inkwell jasmine kernel lagoon mantra "
          "nebula oracle pastry quiver rubric saddle thimble umbrella vortex walnut yarrow zephyr "
          "anchor bramble cipher dynamo estuary falcon gazette hammock igloo jigsaw kayak "
          "lullaby marble nutmeg oyster pepper quilt rocket spindle trellis").split()
_VERBS = "Summarize Explain Compare Describe List Rewrite Classify Translate Outline Critique".split()


def _rng(seed: int, prompt: str) -> random.Random:
    h = hashlib.sha256(f"{seed}|{prompt}".encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def _instruction(rng: random.Random, examples: list[str]) -> str:
    roll = rng.random()
    if roll < 0.08 and examples:
        return rng.choice(examples)  # a copy: the novelty filter must catch it
    if roll < 0.12:
        return "Draw a picture of the " + rng.choice(_WORDS)  # blacklisted
    if roll < 0.15:
        return "Do it."  # too short
    words = rng.sample(_WORDS, rng.randint(5, 11))
    return f"{rng.choice(_VERBS)} the {' '.join(words)}."


_ZH = load_language("zh")
_ZH_WORDS = ("春天 河流 预算 菜谱 诗歌 发票 花园 灯笼 轨道 账本 草地 小提琴 港口 电路 冰川 指南针 石英 "
             "马赛克 寓言 灯塔 峡谷 方言 化石 丰收 墨水 茉莉 泻湖 星云 糕点 雨伞 核桃 火箭 蜂蜜 书架 "
             "地铁 风筝 邮票 钢琴").split()
_ZH_VERBS = ("总结", "解释", "比较", "描述", "列出", "改写", "判断", "翻译", "概括", "评价")


def _zh_instruction(rng: random.Random, examples: list[str]) -> str:
    roll = rng.random()
    if roll < 0.08 and examples:
        return rng.choice(examples)  # a copy: the novelty filter must catch it
    if roll < 0.12:
        return "画一幅" + rng.choice(_ZH_WORDS) + "的图片。"  # blacklisted
    if roll < 0.15:
        return "写。"  # too short
    return f"{rng.choice(_ZH_VERBS)}下面关于{'、'.join(rng.sample(_ZH_WORDS, rng.randint(2, 4)))}的短文。"


def _synthesize_zh(prompt: str, rng: random.Random, chat: bool) -> str | None:
    """Chinese completions for the zh templates (None: not a zh prompt)."""
    if chat:
        return f"好的，关于{rng.choice(_ZH_WORDS)}和{rng.choice(_ZH_WORDS)}，我的回答如下。"
    if prompt.startswith(_ZH["instruction_header"]):
        examples = re.findall(r"^任务 \d+：(.*)$", prompt, re.MULTILINE)
        n = len(examples) + 1
        items = [_zh_instruction(rng, examples) for _ in range(rng.randint(2, 6))]
        return "\n".join([items[0]] + [f"任务 {n + i}：{t}" for i, t in enumerate(items[1:], 1)]) + "\n\n"
    if prompt.startswith(_ZH["output_first_header"]):
        return f"正面\n输入：{rng.choice(_ZH_WORDS)}很好\n类别标签：负面\n输入：没有{rng.choice(_ZH_WORDS)}"
    if prompt.startswith(_ZH["input_first_header"]):
        a, b = rng.sample(_ZH_WORDS, 2)
        return f"{a}\n输出：{a}和{b}\n示例 2\n输入：\n输出：只有{b}\n\n任务："
    if prompt.startswith(_ZH["alpaca_header"]):
        n = prompt.count("###\n")
        items = [_zh_instruction(rng, []) for _ in range(rng.randint(1, 3))]
        return "\n###\n".join((f"{n + i}. 指令：" if i else "") + f"{t}\n{n + i}. 输入：\n<无输入>\n"
                               f"{n + i}. 输出：\n答案{i}" for i, t in enumerate(items))
    return None


def synthesize(prompt: str, seed: int, chat: bool = False) -> str:
    """A plausible completion for any of the project's prompt kinds, deterministic in (prompt, seed)."""
    rng = _rng(seed, prompt)
    if re.search("[\u4e00-\u9fff]", prompt):  # a Chinese job (or a Chinese user turn)
        zh = _synthesize_zh(prompt, rng, chat)
        if zh is not None:
            return zh
    if chat:  # an assistant's reply to a user turn: a sure one, the same whatever the seed (self-consistent)
        return f"Here is my answer about the {' and the '.join(_rng(0, prompt).sample(_WORDS, 2))}."
    if prompt.startswith(P.INSTRUCTION_HEADER):
        examples = re.findall(r"^Task \d+: (.*)$", prompt, re.MULTILINE)
        n = len(examples) + 1
        items = [_instruction(rng, examples) for _ in range(rng.randint(2, 6))]
        return " " + "\n".join([items[0]] + [f"Task {n + i}: {t}" for i, t in enumerate(items[1:], 1)]) + "\n\n"
    if prompt.startswith(P.CLASSIFY_HEADER):
        last = prompt.rsplit("Task: ", 1)[-1]
        return " Yes" if last.startswith("Classify") else " No"
    if prompt.startswith(P.OUTPUT_FIRST_HEADER):
        return " positive\nInput: a " + rng.choice(_WORDS) + "\nClass label: negative\nInput: no " + rng.choice(_WORDS)
    if prompt.startswith(P.INPUT_FIRST_HEADER):
        a, b = rng.sample(_WORDS, 2)
        return f" {a}\nOutput: {a} and {b}\nExample 2\nInput:\nOutput: only {b}\n\nTask:"
    if prompt.startswith(P.ALPACA_HEADER):
        n = prompt.count("###\n")
        items = [_instruction(rng, []) for _ in range(rng.randint(1, 3))]
        return " " + "\n###\n".join(
            (f"{n + i}. Instruction: " if i else "") + f"{t}\n{n + i}. Input:\n<noinput>\n{n + i}. Output:\nAnswer {i}"
            for i, t in enumerate(items))
    return " " + " ".join(rng.sample(_WORDS, 6))


def fake_score(prompt: str, continuation: str) -> float:
    """A deterministic stand-in log-probability: classification questions lean on the task's verb."""
    if prompt.startswith(_ZH["classify_header"]):
        task = prompt.rsplit(_ZH["task_label"], 1)[-1]
        likely = _ZH["answer_yes"] if task.startswith(("判断", "分类", "区分")) else _ZH["answer_no"]
        return -0.2 if continuation == likely else -2.0
    if prompt.startswith(P.CLASSIFY_HEADER):
        task = prompt.rsplit("Task: ", 1)[-1]
        likely = " Yes" if task.startswith(("Classify", "Decide", "Label", "Is ", "Does ")) else " No"
        return -0.2 if continuation == likely else -2.0
    h = hashlib.sha256(f"{prompt}|{continuation}".encode()).digest()
    return -1.0 - h[0] / 64  # in [-5, -1]


class FakeLM:
    """Replies from a queue (strings or callables of the prompt), else synthesized ones.

    `history` holds (prompt, params, seed) for every prompt seen and `scored` every (prompt,
    continuation, chat) scored, for tests to inspect. `scorer` replaces fake_score.
    """

    def __init__(self, name: str = "fake", replies: list[str | Callable[[str], str]] | None = None,
                 delay: float | None = None, has_chat_template: bool = True,
                 scorer: Callable[[str, str], float] | None = None):
        self.name = name
        self.queue = list(replies or [])
        self.history: list[tuple[str, GenerationParams, int]] = []
        self.scored: list[tuple[str, str, bool]] = []
        self.delay = float(os.environ.get("SELFINSTRUCT_FAKE_DELAY", 0)) if delay is None else delay
        self.has_chat_template = has_chat_template
        self.scorer = scorer or fake_score

    def environment(self) -> dict:
        return {"model": self.name}

    def score(self, prompts: list[str], continuations: list[str], chat: bool = False) -> list[float]:
        if chat and not self.has_chat_template:
            raise ValueError("fake model configured without a chat template")
        self.scored.extend((p, c, chat) for p, c in zip(prompts, continuations))
        return [self.scorer(p, c) for p, c in zip(prompts, continuations)]

    def enqueue(self, *replies: str | Callable[[str], str]) -> None:
        self.queue.extend(replies)

    def generate(self, prompts: list[str], params: GenerationParams | list[GenerationParams],
                 seed: int) -> list[Completion]:
        if self.delay:
            time.sleep(self.delay)
        out = []
        for prompt, params in zip(prompts, per_prompt(params, len(prompts))):
            self.history.append((prompt, params, seed))
            if self.queue:
                reply = self.queue.pop(0)
                text = reply(prompt) if callable(reply) else reply
            else:
                text = synthesize(prompt, seed, params.chat)
            text = apply_stop(text, params.stop)
            n = len(text.split())
            finish = "length" if n >= params.max_new_tokens else "stop"
            out.append(Completion(text, len(prompt.split()), n, meta={"finish_reason": finish}))
        return out
