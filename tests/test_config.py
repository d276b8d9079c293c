"""Config: defaults, shipped configs, every error at once with dotted paths, overrides, fingerprint, diff."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from selfinstruct import config as C
from selfinstruct.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))


def errors_of(text: str, overrides: list[str] = ()) -> str:
    with pytest.raises(ConfigError) as e:
        C.load_text(text, "job.yaml", list(overrides))
    return str(e.value)


# ---- defaults and shipped configs ----

def test_defaults_validate_and_round_trip_through_yaml():
    cfg = C.Config()
    assert C.from_dict(cfg.to_dict()) == cfg
    assert C.load_text(C.dump(cfg), "dumped") == cfg


def test_empty_file_means_all_defaults():
    assert C.load_text("", "empty.yaml") == C.Config()
    assert C.load_text("# only a comment\n", "c.yaml") == C.Config()


def test_there_are_shipped_configs():
    assert (ROOT / "configs" / "default.yaml") in SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_validates(path):
    cfg = C.load(path)
    assert isinstance(cfg, C.Config)
    # The resolved config must itself be a valid config (what the run directory stores).
    assert C.load_text(C.dump(cfg), f"{path.name} (dumped)") == cfg


def test_default_yaml_lists_every_key():
    """default.yaml says it lists every key; a new field must be documented there."""
    data = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text(encoding="utf-8"))
    assert set(C.flatten(data)) == set(C.flatten(C.Config().to_dict()))


def test_instances_defaults_are_greedy_and_differ_from_generation():
    cfg = C.Config()
    assert cfg.instances.temperature == 0.0 and cfg.instances.top_p == 1.0
    assert cfg.generation.temperature > 0


# ---- partial sections keep their own defaults ----

def test_partial_section_keeps_the_sections_own_defaults():
    cfg = C.load_text("instances:\n  max_new_tokens: 50\n", "p.yaml")
    assert cfg.instances.max_new_tokens == 50
    assert cfg.instances.temperature == 0.0  # instances' greedy default, not SamplingConfig's 0.7
    assert cfg.instances.top_p == 1.0
    assert cfg.generation == C.Config().generation


def test_partial_generation_section_keeps_its_defaults():
    cfg = C.load_text("generation: {top_p: 0.9}\n", "p.yaml")
    assert cfg.generation.top_p == 0.9
    assert cfg.generation.temperature == C.SamplingConfig().temperature
    assert cfg.instances == C.Config().instances


def test_partial_section_via_override_keeps_defaults():
    cfg = C.load_text("", "p.yaml", ["instances.max_new_tokens=50"])
    assert (cfg.instances.temperature, cfg.instances.top_p, cfg.instances.max_new_tokens) == (0.0, 1.0, 50)


# ---- unknown keys, several errors at once ----

def test_unknown_top_level_key_is_reported_with_known_keys():
    msg = errors_of("targte: 5\n")
    assert "targte: unknown key" in msg
    assert "target" in msg.split("targte: unknown key", 1)[1]  # lists the known keys


def test_unknown_nested_key_has_dotted_path():
    msg = errors_of("prompt:\n  humanfraction: 0.5\nfilters:\n  blaklist: []\n")
    assert "prompt.humanfraction: unknown key" in msg
    assert "filters.blaklist: unknown key" in msg
    assert "human_fraction" in msg  # the known keys of that section


def test_all_problems_reported_at_once():
    text = ("bar: 1\n"
            "target: true\n"
            "prompt:\n  human_fraction: 2\n  foo: 1\n"
            "model:\n  backend: gpt\n")
    msg = errors_of(text)
    assert msg.startswith("job.yaml: 5 problem(s):")
    for part in ("bar: unknown key", "target: expected int", "prompt.human_fraction: must be in [0, 1]",
                 "prompt.foo: unknown key", "model.backend: must be one of"):
        assert part in msg
    assert len(msg.splitlines()) == 6  # header + one line per problem


def test_cross_checks_are_reported_together_with_field_errors():
    msg = errors_of("target: 0\nfilters:\n  instruction: [lenght]\n")
    assert "target: must be >= 1" in msg
    assert "unknown filter 'lenght'" in msg
    assert "2 problem(s)" in msg


def test_section_that_is_not_a_mapping():
    msg = errors_of("model: 3\n")
    assert "model: expected a mapping, got int" in msg
    assert "model.:" not in msg


def test_top_level_not_a_mapping():
    assert "mapping" in errors_of("- a\n- b\n")


# ---- types ----

@pytest.mark.parametrize("text, key, expected", [
    ("target: true\n", "target", "expected int"),  # bool is not int
    ("seed: false\n", "seed", "expected int"),
    ("target: 5.0\n", "target", "expected int"),
    ("target: '5'\n", "target", "expected int"),
    ("generation:\n  temperature: '0.5'\n", "generation.temperature", "expected float"),  # string for float
    ("prompt:\n  human_fraction: true\n", "prompt.human_fraction", "expected float"),  # bool for float
    ("model:\n  chat_template: 1\n", "model.chat_template", "expected bool"),
    ("model:\n  name: [a]\n", "model.name", "expected str"),
    ("filters:\n  instruction: length\n", "filters.instruction", "expected list"),
])
def test_type_errors(text, key, expected):
    msg = errors_of(text)
    assert f"{key}: {expected}" in msg


def test_int_is_accepted_for_float_and_stored_as_float():
    cfg = C.load_text("generation:\n  temperature: 1\nnovelty:\n  threshold: 1\n", "t.yaml")
    assert cfg.generation.temperature == 1.0 and type(cfg.generation.temperature) is float
    assert type(cfg.novelty.threshold) is float


# ---- ranges and choices ----

@pytest.mark.parametrize("key, bad, good", [
    ("target", 0, 1),
    ("max_rounds", -1, 1),
    ("prompts_per_round", 0, 1),
    ("prompts_per_batch", 0, 1),
    ("model.batch_size", 0, 1),
    ("generation.temperature", -0.1, 0.0),
    ("generation.top_p", 0.0, 1.0),
    ("generation.top_p", 1.01, 0.01),
    ("instances.max_new_tokens", 0, 1),
    ("prompt.num_examples", 0, 1),
    ("prompt.human_fraction", -0.01, 0.0),
    ("prompt.human_fraction", 1.01, 1.0),
    ("prompt.new_per_prompt", 0, 1),
    ("prompt.instance_examples", -1, 0),
    ("filters.min_words", -1, 0),
    ("filters.max_words", 0, 4),
    ("filters.max_instances", 0, 1),
    ("novelty.threshold", 1.5, 1.0),
    ("novelty.threshold", -0.5, 0.0),
    ("stall.rounds_without_accept", 0, 1),
    ("style", "alpacca", "alpaca"),
    ("model.backend", "gpt", "fake"),
    ("model.dtype", "fp16", "float16"),
    ("novelty.tokenizer", "words", "unicode"),
])
def test_range_and_choice_checks(key, bad, good):
    extra = ["filters.min_words=0"] if key == "filters.max_words" else []
    msg = errors_of("", [f"{key}={bad}"] + extra)
    assert f"{key}: must be" in msg and "got" in msg.split(f"{key}: must be", 1)[1].splitlines()[0]
    cfg = C.load_text("", "ok.yaml", [f"{key}={good}"] + extra)
    section, _, name = key.rpartition(".")
    assert getattr(getattr(cfg, section) if section else cfg, name) == good


def test_min_words_above_max_words():
    msg = errors_of("filters:\n  min_words: 10\n  max_words: 5\n")
    assert "filters.min_words" in msg and "filters.max_words" in msg


def test_blacklist_must_hold_non_empty_strings():
    assert "filters.blacklist" in errors_of("filters:\n  blacklist: [map, '  ']\n")
    assert "filters.blacklist" in errors_of("filters:\n  blacklist: [map, 3]\n")


# ---- filter names ----

def test_unknown_instruction_filter_lists_the_known_ones():
    msg = errors_of("filters:\n  instruction: [length, lenght]\n")
    assert "unknown filter 'lenght'" in msg
    known = msg.split("known:", 1)[1]
    assert all(name in known for name in C.INSTRUCTION_FILTERS)
    assert "'length'" not in msg  # the valid name is not reported


def test_unknown_instance_filter_lists_the_known_ones():
    msg = errors_of("filters:\n  instance: [dupes]\n")
    assert "filters.instance: unknown filter 'dupes'" in msg
    assert all(name in msg for name in C.INSTANCE_FILTERS)


def test_filter_subset_and_order_are_kept():
    cfg = C.load_text("filters:\n  instruction: [program, length]\n  instance: []\n", "f.yaml")
    assert cfg.filters.instruction == ["program", "length"]
    assert cfg.filters.instance == []


# ---- overrides ----

def test_override_top_level_and_nested():
    cfg = C.load_text("target: 5\nprompt:\n  num_examples: 4\n", "o.yaml",
                      ["target=50", "prompt.human_fraction=0.5"])
    assert cfg.target == 50
    assert cfg.prompt.human_fraction == 0.5
    assert cfg.prompt.num_examples == 4  # a sibling from the file survives a nested override


def test_override_creates_a_missing_section():
    cfg = C.load_text("target: 5\n", "o.yaml", ["novelty.threshold=0.6"])
    assert cfg.novelty.threshold == 0.6 and cfg.novelty.tokenizer == "rouge"


def test_later_override_wins():
    assert C.load_text("", "o.yaml", ["target=5", "target=7"]).target == 7


@pytest.mark.parametrize("item, key, value", [
    ("target=50", "target", 50),
    ("prompt.human_fraction=0.5", "prompt.human_fraction", 0.5),
    ("model.chat_template=true", "model.chat_template", True),
    ("model.name=HuggingFaceTB/SmolLM2-360M", "model.name", "HuggingFaceTB/SmolLM2-360M"),
    ("filters.instruction=[length, program]", "filters.instruction", ["length", "program"]),
    ("prompt.schedule=null", "prompt.schedule", None),
    ("prompt.schedule=[1.0, 0.5]", "prompt.schedule", [1.0, 0.5]),
    ("prompt.schedule={start: 1.0, end: 0.25, rounds: 4}", "prompt.schedule",
     {"start": 1.0, "end": 0.25, "rounds": 4}),
    ("model.name=a=b", "model.name", "a=b"),  # only the first '=' separates
    ("  target = 3", "target", 3),
    ("output_dir=", "output_dir", ""),
])
def test_parse_override_uses_yaml_typing(item, key, value):
    assert C.parse_override(item) == (key, value)
    assert type(C.parse_override(item)[1]) is type(value)


def test_override_values_are_typed_then_validated():
    cfg = C.load_text("", "o.yaml", ["prompt.schedule={start: 1.0, end: 0.25, rounds: 4}",
                                     "model.chat_template=true", "filters.instruction=[length]"])
    assert cfg.prompt.schedule == {"start": 1.0, "end": 0.25, "rounds": 4}
    assert cfg.model.chat_template is True
    assert cfg.filters.instruction == ["length"]
    assert "target: expected int, got 'abc'" in errors_of("", ["target=abc"])
    assert "prompt.humanfraction: unknown key" in errors_of("", ["prompt.humanfraction=0.5"])


@pytest.mark.parametrize("bad", ["foo", "=3", " =3", "a b=1", "a..b=1", ".target=1", "target.=1"])
def test_malformed_override_says_how_to_fix_it(bad):
    with pytest.raises(ConfigError) as e:
        C.parse_override(bad)
    msg = str(e.value)
    assert repr(bad) in msg
    assert "key=value" in msg and "e.g." in msg
    with pytest.raises(ConfigError):
        C.load_text("", "o.yaml", [bad])


# ---- YAML and file errors ----

def test_invalid_yaml_reports_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("target: 5\nmodel:\n\tname: x\n", encoding="utf-8")  # a tab on line 3
    with pytest.raises(ConfigError) as e:
        C.load(path)
    assert str(e.value).startswith(f"{path}:3: invalid YAML")


def test_invalid_yaml_line_of_unclosed_flow_list():
    msg = errors_of("target: 5\nseed: 1\nfilters:\n  instruction: [length, program\n  min_words: 3\n")
    assert msg.startswith("job.yaml:") and "invalid YAML" in msg
    line = int(msg.split(":")[1])
    assert 4 <= line <= 6  # where the unclosed list is or where the parser noticed it


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        C.load(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(e.value) and "cannot read" in str(e.value)


def test_non_utf8_config_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        C.load(path)
    assert str(path) in str(e.value) and "UTF-8" in str(e.value)


def test_load_applies_overrides_to_a_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("target: 5\nprompt:\n  human_fraction: 0.25\n", encoding="utf-8")
    cfg = C.load(path, ["prompt.human_fraction=0.5"])
    assert (cfg.target, cfg.prompt.human_fraction) == (5, 0.5)


# ---- schedules ----

@pytest.mark.parametrize("schedule", [
    None, [1.0], [1.0, 0.75, 0.5], [1, 0], {"start": 1.0, "end": 0.25, "rounds": 4},
    {"start": 0, "end": 1, "rounds": 1},
])
def test_valid_schedules(schedule):
    cfg = C.from_dict({"prompt": {"schedule": schedule}})
    assert cfg.prompt.schedule == schedule


@pytest.mark.parametrize("schedule, hint", [
    ([], "must not be empty"),
    ([1.0, 1.5], "1.5"),
    ([0.5, "a"], "'a'"),
    ([True], "True"),
    ({"start": 1.0, "end": 0.25}, "start, end, rounds"),
    ({"start": 1.0, "end": 0.25, "rounds": 4, "step": 1}, "start, end, rounds"),
    ({"start": 2, "end": 0.25, "rounds": 4}, "start"),
    ({"start": 1.0, "end": -1, "rounds": 4}, "end"),
    ({"start": 1.0, "end": 0.25, "rounds": 0}, "rounds"),
    ({"start": 1.0, "end": 0.25, "rounds": 2.5}, "rounds"),
    ({"start": 1.0, "end": 0.25, "rounds": True}, "rounds"),
    ("linear", "expected null"),
    (0.5, "expected null"),
])
def test_malformed_schedules(schedule, hint):
    with pytest.raises(ConfigError) as e:
        C.from_dict({"prompt": {"schedule": schedule}})
    msg = str(e.value)
    assert "prompt.schedule:" in msg and hint in msg


# ---- fingerprint and diff ----

SAFE_CHANGES = [("target", 999), ("max_rounds", 99), ("output_dir", "elsewhere"),
                ("seed_tasks", "other.jsonl"), ("stall.rounds_without_accept", 9), ("seed_license", "cc-by-4.0")]
UNSAFE_CHANGES = [("prompt.human_fraction", 0.5), ("seed", 1), ("prompt.schedule", [1.0, 0.5]),
                  ("novelty.threshold", 0.6), ("model.name", "other"), ("generation.temperature", 1.0),
                  ("instances.max_new_tokens", 64), ("filters.instruction", ["length"]), ("style", "alpaca")]


def _changed(key: str, value) -> C.Config:
    return C.load_text("", "x", [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"]) \
        if not isinstance(value, str) else C.load_text("", "x", [f"{key}={value}"])


def test_fingerprint_is_stable_and_short_hex():
    a, b = C.Config().fingerprint(), C.load_text(C.dump(C.Config()), "x").fingerprint()
    assert a == b and len(a) == 16 and int(a, 16) >= 0


@pytest.mark.parametrize("key, value", SAFE_CHANGES)
def test_fingerprint_ignores_safe_keys(key, value):
    cfg = _changed(key, value)
    assert C.flatten(cfg.to_dict())[key] == value  # the change took effect
    assert cfg.fingerprint() == C.Config().fingerprint()


@pytest.mark.parametrize("key, value", UNSAFE_CHANGES)
def test_fingerprint_changes_with_decision_keys(key, value):
    cfg = _changed(key, value)
    assert C.flatten(cfg.to_dict())[key] == value
    assert cfg.fingerprint() != C.Config().fingerprint()


def test_a_saved_config_without_seed_license_still_resumes():
    """seed_license came later: a run saved before it lacks the key, and that must not block its resume."""
    saved = C.dump(C.Config()).replace("seed_license: ''\n", "")
    assert "seed_license" not in saved
    assert C.missing_keys(saved) == []
    assert C.load_text(saved, "x").fingerprint() == C.Config().fingerprint()


def test_diff_splits_safe_and_unsafe_keys():
    old = C.Config().to_dict()
    new = C.load_text("", "x", ["target=500", "stall.rounds_without_accept=7", "prompt.human_fraction=0.5",
                                "prompt.schedule={start: 1.0, end: 0.5, rounds: 3}"]).to_dict()
    safe, unsafe = C.diff(old, new)
    assert safe == ["stall.rounds_without_accept", "target"]
    assert unsafe == ["prompt.human_fraction", "prompt.schedule"]  # a schedule is one key, not split up
    assert C.diff(old, old) == ([], [])


@pytest.mark.parametrize("key, value", SAFE_CHANGES + UNSAFE_CHANGES)
def test_diff_and_fingerprint_agree(key, value):
    """Resume refuses exactly when the fingerprint differs: both must classify keys the same way."""
    cfg = _changed(key, value)
    safe, unsafe = C.diff(C.Config().to_dict(), cfg.to_dict())
    assert safe + unsafe == [key]
    assert bool(unsafe) == (cfg.fingerprint() != C.Config().fingerprint())


def test_empty_sections_resolve_to_defaults():
    """Every section given as {} builds to its default (no required fields sneak in)."""
    hints = typing.get_type_hints(C.Config)
    sections = [f.name for f in dataclasses.fields(C.Config) if dataclasses.is_dataclass(hints[f.name])]
    assert {"model", "generation", "instances", "prompt", "filters", "novelty", "stall"} <= set(sections)
    for name in sections:
        assert C.from_dict({name: {}}) == C.Config()
