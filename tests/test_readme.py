"""Every Python example in the README runs, in order, in one namespace, and prints what its
comments say it prints.

A top-level expression (or ``print(...)``) with a comment must state its result after an arrow:

    lowprec.round(1.5, "e2m1")       # -> 1.5: the explanation follows a colon
    print(np.float32([0.5, 2]))      # -> [0.5, 2]
    print(sr.mean())                 # -> ~0.25: "~" allows 2% (random results)
    print(scaler.describe())         # -> "step 0: ... skipped": quoted; "..." matches anything

The result (what ``print`` writes, or the value, with NumPy arrays and scalars as Python lists
and numbers) and the claim are split into numbers and words; numbers must be equal as floats
(``448`` matches ``448.``), words equal. A stale comment is a failing test.
"""
import ast
import contextlib
import io
import math
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
TOKEN = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|[-+]?(?:nan|inf)\b|\w+"
                   r"|[^\s\w,()\[\]'\"]+")


def blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def comments(source: str) -> dict:
    """{line number: comment text without the '#'}."""
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            found[tok.start[0]] = tok.string[1:].strip()
    return found


def plain(value):
    """NumPy arrays and scalars as Python lists and numbers, recursively."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return type(value)(plain(v) for v in value)
    return value


def split_claim(text: str):
    """('value', approximate?) from '-> value: explanation'."""
    text = text[2:].strip()
    if text.startswith('"'):
        return text[:text.index('"', 1) + 1], False
    approximate = text.startswith("~")
    value = text.lstrip("~").split(": ")[0].rstrip(":")
    return value.strip(), approximate


def tokens(text: str) -> list:
    return TOKEN.findall(text)


def _as_number(token):
    try:
        return float(token)
    except ValueError:
        return None


def matches(result: str, claim: str, approximate: bool) -> bool:
    if claim.startswith('"'):  # a quoted text; "..." stands for anything
        pattern = r"\s+".join(re.escape(word) for word in claim[1:-1].split())
        pattern = pattern.replace(re.escape("..."), ".*")
        return re.fullmatch(pattern, " ".join(result.split()), flags=re.S) is not None
    ours, theirs = tokens(result), tokens(claim)
    if len(ours) != len(theirs):
        return False
    for a, b in zip(ours, theirs):
        x, y = _as_number(a), _as_number(b)
        if x is None or y is None:
            if a != b:
                return False
        elif math.isnan(y):
            if not math.isnan(x):
                return False
        elif approximate:
            if not math.isclose(x, y, rel_tol=0.02, abs_tol=1e-12):
                return False
        elif x != y:
            return False
    return True


def run_block(source: str, name: str, namespace: dict) -> int:
    """Run one block statement by statement; check every claim; return how many were checked."""
    notes = comments(source)
    checked = 0
    for node in ast.parse(source).body:
        note = notes.get(node.end_lineno, "")
        where = f"{name}, line {node.lineno}: {ast.get_source_segment(source, node)}"
        is_expression = isinstance(node, ast.Expr)
        if note and is_expression and not note.startswith("->"):
            raise AssertionError(f"{where}\n  an expression's comment must say what it prints: "
                                 "'# -> ...'")
        if not (is_expression and note.startswith("->")):
            exec(compile(ast.Module([node], []), name, "exec"), namespace)
            continue
        call = node.value
        if isinstance(call, ast.Call) and isinstance(call.func,
                                                     ast.Name) and call.func.id == "print":
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(ast.Module([node], []), name, "exec"), namespace)
            result = printed.getvalue()
            print(result, end="")
        else:
            result = str(plain(eval(compile(ast.Expression(call), name, "eval"), namespace)))
        claim, approximate = split_claim(note)
        assert matches(result, claim, approximate), (f"{where}\n  comment says {claim}\n"
                                                     f"  it gives   {result.strip()}")
        checked += 1
    return checked


def test_readme_examples_print_what_they_say():
    found = blocks()
    assert len(found) >= 6
    namespace, checked = {}, 0
    for i, block in enumerate(found):
        checked += run_block(block, f"README.md python block {i + 1}", namespace)
    assert checked >= 25  # the README states results; they are all checked


def test_a_stale_comment_fails():
    with pytest.raises(AssertionError, match="comment says 0.5"):
        run_block("x = 0.25\nx  # -> 0.5: a stale claim\n", "example", {})
    with pytest.raises(AssertionError, match="must say what it prints"):
        run_block("1 + 1  # two\n", "example", {})
    run_block("print([448.0, float('nan')])  # -> [448, nan]: fine\n", "example", {})
    with pytest.raises(AssertionError):
        run_block('print("step 0: ok")  # -> "step 1: ..."\n', "example", {})


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
