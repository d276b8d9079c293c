"""A job's language: its prompt templates and filter data (a YAML file), its script and its length unit.

Shipped files live in selfinstruct/templates/<code>.yaml; `prompt.templates: PATH` points at a user's own
copy for any other language. Every file must hold every key of en.yaml.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path

import yaml

from selfinstruct.errors import ConfigError

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
SHIPPED = tuple(sorted(p.stem for p in TEMPLATES_DIR.glob("*.yaml")))
UNITS = ("word", "char")
_LISTS = ("scripts", "classify_demos", "empty_inputs", "blacklist")
_REGEXES = ("refers", "points_at", "asks_number", "program", "refusal", "ask_openers", "other_script_ok")
CODE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")  # BCP-47-style: en, zh, zh-Hans, pt-BR


class Language:
    """One language's templates and data, with its regular expressions compiled."""

    def __init__(self, code: str, data: dict, source: str):
        self.code, self.data, self.source = code, data, source
        self.primary = code.split("-")[0].lower()
        self.scripts = frozenset(s.upper() for s in data["scripts"])
        self.unit = data["length_unit"]
        self.empty_inputs = frozenset(data["empty_inputs"])
        self.request_words = frozenset(data["request_words"].split())
        self.dangling = frozenset(data["dangling"].split())
        self.re = {k: re.compile(data[k], re.IGNORECASE) for k in _REGEXES}

    def __getitem__(self, key: str):
        return self.data[key]

    def __repr__(self) -> str:
        return f"Language({self.code!r}, {self.source!r})"


def _read(path: Path, source: str) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{source}: cannot read templates: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"{source}{f':{mark.line + 1}' if mark else ''}: invalid YAML: "
                          f"{getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of template keys")
    return data


def _problems(data: dict, reference: dict) -> list[str]:
    errors = [f"{k}: missing (every key of en.yaml is needed)" for k in reference if k not in data]
    errors += [f"{k}: unknown key" for k in data if k not in reference]
    for k in reference:
        if k not in data:
            continue
        want = list if k in _LISTS else str
        if not isinstance(data[k], want):
            errors.append(f"{k}: expected {'a list' if want is list else 'text'}, got {data[k]!r}")
        elif k in _REGEXES:
            try:
                re.compile(data[k])
            except re.error as e:
                errors.append(f"{k}: bad regular expression: {e}")
    if isinstance(data.get("length_unit"), str) and data["length_unit"] not in UNITS:
        errors.append(f"length_unit: must be one of {UNITS}, got {data['length_unit']!r}")
    for k in ("task_prefix", "example_label"):
        if isinstance(data.get(k), str) and "{n}" not in data[k]:
            errors.append(f"{k}: must hold the number placeholder {{n}}")
    demos = data.get("classify_demos")
    if isinstance(demos, list) and not all(isinstance(d, list) and len(d) == 2 and isinstance(d[0], str)
                                           and isinstance(d[1], bool) for d in demos):
        errors.append("classify_demos: each item must be [task text, true|false]")
    return errors


@functools.lru_cache(maxsize=None)
def load(code: str = "en", path: str = "") -> Language:
    """The language `code`, from `path` if given, else from the shipped file for it (or its primary subtag)."""
    if path:
        file = Path(path)
    else:
        primary = code.split("-")[0].lower()
        name = code if code in SHIPPED else primary
        if name not in SHIPPED:
            raise ConfigError(f"language: no shipped templates for {code!r} (shipped: {', '.join(SHIPPED)}); copy "
                              f"{TEMPLATES_DIR / 'en.yaml'}, translate it and set prompt.templates: PATH")
        file = TEMPLATES_DIR / f"{name}.yaml"
    data = _read(file, str(file))
    errors = _problems(data, _read(TEMPLATES_DIR / "en.yaml", "en.yaml"))
    if errors:
        raise ConfigError(f"{file}: {len(errors)} problem(s) in templates:\n  " + "\n  ".join(errors))
    return Language(code, data, str(file))


def english() -> Language:
    return load("en")


# ---- scripts and units ----

_SCRIPT_ALIASES = {"CJK": "CJK", "FULLWIDTH": "LATIN", "HALFWIDTH": "KATAKANA"}


@functools.lru_cache(maxsize=4096)
def script_of(ch: str) -> str:
    """The script of one letter from its Unicode name ("LATIN SMALL LETTER A" -> LATIN); "" if not a letter."""
    if not ch.isalpha():
        return ""
    if ch.isascii():
        return "LATIN"
    first = unicodedata.name(ch, "").split(" ")[0]
    return _SCRIPT_ALIASES.get(first, first)


def tokens(text: str) -> list[str]:
    """The `unicode` novelty tokenizer's units: each CJK character alone, runs of other letters and digits."""
    from selfinstruct.novelty import TOKENIZERS  # one tokenizer for novelty, length and script share

    return TOKENIZERS["unicode"](text)


def count_units(text: str, lang: Language) -> int:
    """Length in the language's unit: space-separated words, or characters (tokens()) for CJK."""
    return len(text.split()) if lang.unit == "word" else len(tokens(text))


_ONE_CHAR_SCRIPTS = frozenset({"CJK", "HIRAGANA", "KATAKANA", "HANGUL"})  # a unit is one character


def language_share(text: str, lang: Language) -> float | None:
    """Share of the text's lettered units written in the language's scripts; None if it has none.

    A unit's script is that of its first letter. A lone letter of a spaced script ("x" in "3x = 15",
    "I", "a") is not counted: variables and units appear in every language.
    """
    scripts = []
    for unit in tokens(text):
        letters = [c for c in unit if c.isalpha()]
        script = script_of(letters[0]) if letters else ""
        if script and (len(letters) > 1 or script in _ONE_CHAR_SCRIPTS):
            scripts.append(script)
    if not scripts:
        return None
    return sum(s in lang.scripts for s in scripts) / len(scripts)
