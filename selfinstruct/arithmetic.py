"""Claims over plain numbers in a model's answer ("9 * 8 = 64"), checked: the wrong_arithmetic filter."""

from __future__ import annotations

import ast
import re

_NUM = r"\$?\d{1,3}(?:,\d{3})+(?:\.\d+)?|\$?\d+(?:\.\d+)?"
_TERM = rf"\(*\s*-?\s*(?:{_NUM})\s*\)*"
_OP = r"\s*(?:[-+*/×÷^]|\s[x·]\s)\s*"
_EXPR = rf"{_TERM}(?:{_OP}{_TERM})*"
# A chain of expressions joined by "=", not part of a longer formula (variables, "...", percentages).
_BEFORE = r"\w.^*/+\-=$×÷%"
_CLAIM = re.compile(rf"(?<![{_BEFORE}])(?<![-^*/+=×÷]\s){_EXPR}(?:\s*=\s*{_EXPR})+(?![\w.]*\w|%|\s*[-+*/×÷^(%])")
_CLAIM_END = re.compile(r"\.\s*$")


def _evaluate(expr: str) -> float | None:
    """The value of a +-*/^ expression over plain numbers; None when it is not one or is too large."""
    text = expr.replace("$", "").replace(",", "").replace("×", "*").replace("·", "*").replace("÷", "/")
    text = re.sub(r"\sx\s", "*", text).replace("^", "**")
    if not re.fullmatch(r"[\d.\s+\-*/()]+", text):
        return None
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        return None

    def ev(n) -> float:
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return float(n.value)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            v = ev(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
            a, b = ev(n.left), ev(n.right)
            if isinstance(n.op, ast.Pow) and (abs(b) > 64 or abs(a) > 1e6):
                raise OverflowError
            return _BINOPS[type(n.op)](a, b)
        raise ValueError

    try:
        value = ev(node)
    except (ValueError, OverflowError, ZeroDivisionError):
        return None
    return value if abs(value) < 1e15 else None


_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a ** b}


def _agree(a: str, va: float, b: str, vb: float) -> bool:
    """Equal up to the precision the sides were written with (3.33 stands for 10 / 3)."""
    places = max((len(m) for side in (a, b) if not re.search(r"[-+*/×÷^]|\sx\s", side.strip().lstrip("-"))
                  for m in re.findall(r"\.(\d+)", side)), default=0)
    return abs(va - vb) <= (0.5 * 10 ** -places if places else 0) + 1e-9 * max(1.0, abs(va), abs(vb))


def wrong_arithmetic(text: str, context: str = "") -> str | None:
    """The first claim "a op b = c" in `text` that does not hold ("9 * 8 = 64"); None when all hold.

    Only chains of plain numbers are checked, with at least one operator; claims also written in
    `context` (the instruction and input: "Is 2 + 2 = 5?") are the task's, not the answer's.
    """
    for m in _CLAIM.finditer(text):
        claim = _CLAIM_END.sub("", m.group(0).strip())
        if claim in context:
            continue
        sides = [s.strip() for s in claim.split("=")]
        if not any(re.search(r"\d\s*(?:[-+*/×÷^]|\sx\s)\s*[\d($(-]", s) for s in sides):
            continue
        values = [_evaluate(s) for s in sides]
        for (a, va), (b, vb) in zip(zip(sides, values), zip(sides[1:], values[1:])):
            if va is not None and vb is not None and not _agree(a, va, b, vb):
                return claim
    return None
