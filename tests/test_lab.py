"""The lab kit: checks that never give the answer, the hidden accumulator of Lab 6, and student
notebooks that are the build of the solutions and contain none of their answers."""
import ast
import json
import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lowprec import lab

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((REPO / "notebooks").glob("*.ipynb"))
STUDENT_DIR = REPO / "notebooks" / "student"
CHECK_CALL = re.compile(r'^check\("(\d\d\.\d)", (.*)\)$', re.MULTILINE)


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(cell):
    return "".join(cell["source"])


def _solution_cells(path):
    return [c for c in _cells(path) if "solution" in c.get("metadata", {}).get("tags", [])]


# --- every answer cell, and the literal answers in it --------------------------------------------
def _literal(node):
    """The value of an answer written as a literal (numbers, powers, Fraction(p, q), tuples and
    dicts of those), or None when the answer is computed from the lab's data."""
    allowed = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.Tuple, ast.Dict, ast.List, ast.operator,
               ast.unaryop, ast.Load, ast.Name, ast.Call)
    for sub in ast.walk(node):
        if not isinstance(sub, allowed) or (isinstance(sub, ast.Name) and sub.id != "Fraction"):
            return None
        if isinstance(sub, ast.Call) and getattr(sub.func, "id", None) != "Fraction":
            return None
    return eval(compile(ast.Expression(node), "<answer>", "eval"), {"Fraction": Fraction})


def _answers(path):
    """{exercise id: (the answer names passed to check, {name: literal value or None})}."""
    names, values = {}, {}
    for cell in _cells(path):
        text = _text(cell)
        if "solution" in cell.get("metadata", {}).get("tags", []) and cell["cell_type"] == "code":
            for node in ast.parse(text).body:
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Tuple):   # a, b = 1.0, 2.0
                            for name, value in zip(target.elts, node.value.elts):
                                values[name.id] = _literal(value)
                        else:
                            values[target.id] = _literal(node.value)
        for exercise, args in CHECK_CALL.findall(text):
            names[exercise] = [a.strip() for a in args.split(",") if a.strip().startswith("answer")]
            if len(names[exercise]) < len(args.split(",")):
                context.add(exercise)   # the check also takes the lab's data
    return {ex: (ns, {n: values[n] for n in ns}) for ex, ns in names.items()}


context = set()


ANSWERS = {ex: entry for path in SOLUTIONS for ex, entry in _answers(path).items()}
LITERAL = {ex: [values[n] for n in names] for ex, (names, values) in ANSWERS.items()
           if all(values[n] is not None for n in names) and ex not in context}


def test_every_exercise_has_one_check_and_an_answer_cell():
    assert sorted(ANSWERS) == list(lab.EXERCISES)
    for exercise, (names, values) in ANSWERS.items():
        assert names and set(names) == set(values), exercise
    assert len(LITERAL) >= 19  # the rest are computed from a lab's own data (labs 6 and 9)


def _printed(capsys, exercise, *answers):
    lab.check(exercise, *answers)
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return out.strip()


@pytest.mark.parametrize("exercise", sorted(LITERAL))
def test_the_solutions_answer_is_correct(exercise, capsys):
    assert _printed(capsys, exercise, *LITERAL[exercise]) == f"Exercise {exercise}: correct"


def _wrong(value):
    """A plausible wrong answer of the same kind: the next power of two, or the next integer."""
    if isinstance(value, dict):
        return {k: _wrong(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_wrong(v) for v in value)
    if isinstance(value, (int, np.integer)):
        return value * 10 if value > 1000 else value + 1   # an estimate is right within a factor 2
    return value * 2


def _forms(value):
    """How an answer could be written in text: repr, the integer, the power of two."""
    if isinstance(value, dict):
        return [f for v in value.values() for f in _forms(v)]
    if isinstance(value, (tuple, list)):
        return [f for v in value for f in _forms(v)]
    if isinstance(value, str):
        return [value] if len(value) >= 5 else []
    if isinstance(value, Fraction) and value.denominator > 1:
        p, q = value.numerator, value.denominator
        return [f"{p}/{q}", f"Fraction({p}, {q})"]
    v = float(value)
    forms = [repr(v)] + ([str(int(v))] if v.is_integer() else [])
    # short numbers ("7.5", "64", "3.0") occur in any lab's text; three significant digits do not
    forms = [f for f in forms if not re.fullmatch(r"-?\d{1,2}(\.0)?", f)
             and len(f.replace(".", "").replace("-", "").strip("0").removesuffix("e")) >= 3]
    if v > 0 and math.frexp(v)[0] == 0.5 and abs(math.log2(v)) >= 3:
        k = int(math.log2(v))
        forms += [f"2^{k}", f"2**{k}", f"2.0**{k}", f"2 ** {k}"]
    return forms


@pytest.mark.parametrize("exercise", sorted(LITERAL))
def test_a_wrong_answer_gets_a_hint_without_the_answer(exercise, capsys):
    right = LITERAL[exercise]
    wrong = [_wrong(v) for v in right]
    message = _printed(capsys, exercise, *wrong)
    assert message.startswith(f"Exercise {exercise}: not right yet. Hint: ")
    for form in _forms(right):
        assert not re.search(rf"(?<![\w.]){re.escape(form)}(?![\w.]?\d)", message), (form, message)


@pytest.mark.parametrize("exercise", lab.EXERCISES)
def test_placeholders_are_not_answered_yet(exercise, capsys):
    names = ANSWERS[exercise][0]
    assert _printed(capsys, exercise, *[...] * len(names)) == \
        f"Exercise {exercise}: not answered yet (replace the ... with your answer and run the cell)"
    assert _printed(capsys, exercise, None).startswith(f"Exercise {exercise}: not answered yet")


def test_unreadable_answers_get_a_hint_not_a_traceback(capsys):
    assert _printed(capsys, "01.1", "2^-24") == \
        "Exercise 01.1: not right yet. Hint: expected a number, not text"
    assert _printed(capsys, "04.1", 448.0).endswith(
        'expected a dict {"e2m3": (max, smallest subnormal), "e3m2": (...)}')
    assert _printed(capsys, "02.3", 1.0).endswith(
        "wrong number of answers: pass every answer_... of the exercise, in order")
    with pytest.raises(ValueError, match="unknown exercise '1.1'; the exercises are 01.1, 01.2"):
        lab.check("1.1", 2.0**-24)


def test_independent_facts_behind_a_few_checks(capsys):
    """Answers from outside the notebooks: IEEE 754 binary16 (smallest subnormal 2^-24, 11
    significant bits), the OCP MX v1.0 FP6 tables, CS336's 9.953125 stagnation of FP16 sums."""
    assert _printed(capsys, "01.1", 2.0**-24).endswith("correct")
    assert _printed(capsys, "01.2", 2**8 + 1).endswith("correct")   # BF16: 8 significant bits
    fp6 = {"e2m3": (7.5, 0.125), "e3m2": (28.0, 0.0625)}
    assert _printed(capsys, "04.1", fp6).endswith("correct")
    assert _printed(capsys, "05.1", 2048.0).endswith("correct")
    assert _printed(capsys, "08.1", 3.0, 10).endswith(
        "not right yet. Hint: right value; the term is the first 1/n that no longer changes it")


# --- Lab 6: the hidden accumulator -------------------------------------------------------------
def _probe(dot, products, c=0.0, K=64):
    a, b = np.zeros(K), np.zeros(K)
    for k, (x, y) in products.items():
        a[k], b[k] = x, y
    return dot(a, b, c)


@pytest.mark.parametrize("seed", range(16))
def test_hidden_accumulator_answers_the_probes_by_the_block_fma_rule(seed, capsys):
    """What the rule of Fasi et al. (2021) predicts, worked out here by hand: a tiny term after a
    cancelling pair survives from the next block on; a term 2^-m in the pair's block survives
    when m <= F; 1 + 1.5 ulp truncates to 1 + 1 ulp and rounds (tie to even) to 1 + 2 ulp; a
    running sum of 2^-30 is truncated away next to 1 unless the halves of K are computed apart."""
    acc = lab.hidden_accumulator(seed)
    hidden = lab._draw(seed)
    assert str(hidden.block) not in repr(acc).replace(str(seed), "")
    for j in (2, 3, 4, 7, 8, 15, 16, 31, 32, 33):
        got = _probe(acc.dot, {0: (1.0, 1.0), 1: (-1.0, 1.0), j: (2.0**-15, 2.0**-15)})
        assert got == (2.0**-30 if j >= hidden.block else 0.0), j
    for m in range(20, 31):
        got = _probe(acc.dot, {0: (1.0, 1.0), 1: (-1.0, 1.0), 2: (2.0**-13, 2.0**-(m - 13))})
        assert got == (2.0**-m if m <= hidden.fraction_bits else 0.0), m
    got = _probe(acc.dot, {0: (1.0, 1.0), 1: (1.5 * 2.0**-12, 2.0**-11)})
    assert got == {"toward_zero": 1 + 2.0**-23, "nearest": 1 + 2.0**-22}[hidden.output_rounding]
    got = _probe(acc.dot, {0: (2.0**-15, 2.0**-15), 32: (1.0, 1.0), 33: (-1.0, 1.0)})
    assert got == {1: 0.0, 2: 2.0**-30}[hidden.split_k]
    assert _printed(capsys, "06.1", hidden.block, acc).endswith("correct")
    assert _printed(capsys, "06.2", hidden.fraction_bits + 1, acc).endswith(
        "not right yet. Hint: cancel 1*1 against (-1)*1 in one block and find the smallest term "
        "2^-m that survives")
    assert _printed(capsys, "06.3", hidden.output_rounding, acc).endswith("correct")
    assert _printed(capsys, "06.4", 3 - hidden.split_k, acc).endswith(
        "not right yet. Hint: put 2^-30 in the first half and a cancelling pair 1, -1 at the start "
        "of the second")


def test_hidden_accumulators_differ_between_seeds():
    drawn = [(m.block, m.fraction_bits, m.output_rounding, m.split_k)
             for m in map(lab._draw, range(40))]
    for i, values in enumerate((lab.BLOCKS, lab.FRACTION_BITS, lab.OUTPUT_ROUNDINGS, lab.SPLITS)):
        assert {d[i] for d in drawn} == set(values)
    assert lab._draw(3) == lab._draw(3)


def test_hidden_accumulator_refuses_bad_input():
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got 'a'"):
        lab.hidden_accumulator("a")
    shapes = r"a and b must be vectors of one length, got shapes \(3,\) and \(4,\)"
    with pytest.raises(ValueError, match=shapes):
        lab.hidden_accumulator(1).dot(np.ones(3), np.ones(4))


def test_gpu_dot_says_why_it_cannot_run():
    from lowprec.gpu import gpu_status

    usable, _ = gpu_status()
    if usable:
        assert lab.gpu_dot([1.0, 1.0], [1.0, 1.0], 0.5) == 2.5   # exact on any tensor core
    else:
        with pytest.raises(RuntimeError, match="no tensor core to probe: "):
            lab.gpu_dot([1.0], [1.0])


# --- the student build ------------------------------------------------------------------------
def test_committed_student_notebooks_are_the_build(tmp_path):
    written = lab.build(tmp_path)
    assert [p.name for p in written] == [p.name for p in SOLUTIONS]
    for path in written:
        committed = STUDENT_DIR / path.name
        assert committed.exists(), f"{committed} is missing: run `make lab-build`"
        assert committed.read_bytes() == path.read_bytes(), \
            f"{committed} is stale: run `make lab-build`"


def test_build_writes_the_install_source(tmp_path):
    lab.build(tmp_path, source="git+https://example.org/course/lowprec@v1")
    setup = _text(_cells(tmp_path / SOLUTIONS[0].name)[0])
    assert 'LAB_SOURCE = "git+https://example.org/course/lowprec@v1"' in setup
    with pytest.raises(FileNotFoundError, match="no notebooks in"):
        lab.build(tmp_path / "out", notebooks=tmp_path / "nowhere")


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_student_notebook_has_placeholders_no_outputs_no_answers(path):
    student = STUDENT_DIR / path.name
    cells = _cells(student)
    assert _text(cells[0]).startswith("# Colab") and "import lowprec" in _text(cells[0])
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert not any("solution" in c.get("metadata", {}).get("tags", []) for c in cells)
    text = "\n".join(_text(c) for c in cells)
    for exercise, (names, values) in _answers(path).items():
        for name in names:
            assert f"{name} = ...  # your answer" in text, (exercise, name)
        for value in values.values():
            for form in (_forms(value) if value is not None else []):
                pattern = rf"(?<![\w.]){re.escape(form)}(?![\w.]?\d)"
                assert not re.search(pattern, text), (exercise, form)
    # computed answers and derivations: no line of a solution cell reaches the student version
    for cell in _solution_cells(path):
        for line in _text(cell).splitlines():
            code = line.split("#")[0].strip() if cell["cell_type"] == "code" else line.strip()
            if len(code) >= 20 and not code.startswith("def "):
                assert code not in text, code


def _run_setup_cell(source, monkeypatch, installs):
    """Run a notebook's first cell as IPython would, in a Python where lowprec is not installed
    until the %pip line has run."""
    import builtins

    transformers = pytest.importorskip("IPython.core.inputtransformer2")
    transform = transformers.TransformerManager().transform_cell
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "lowprec" and not installs:
            raise ImportError("No module named 'lowprec'")
        return real_import(name, *args, **kwargs)

    class FakeIPython:
        def run_line_magic(self, magic, line):
            installs.append((magic, line))

    monkeypatch.setattr(builtins, "__import__", fake_import)
    namespace = {"get_ipython": FakeIPython}
    exec(transform(source), namespace)  # noqa: S102 -- the notebook cell under test
    return namespace


def test_setup_cell_installs_from_the_source_the_build_wrote(tmp_path, monkeypatch):
    lab.build(tmp_path, source="git+https://example.org/course/lowprec")
    source = _text(_cells(tmp_path / SOLUTIONS[0].name)[0])
    installs = []
    namespace = _run_setup_cell(source, monkeypatch, installs)
    # IPython expands {LAB_SOURCE} from the cell's namespace when it runs the magic
    assert installs == [("pip", "install --quiet {LAB_SOURCE}")]
    assert namespace["LAB_SOURCE"] == "git+https://example.org/course/lowprec"
    assert namespace["lowprec"].__name__ == "lowprec"


def test_setup_cell_without_a_source_says_what_to_do(monkeypatch):
    source = _text(_cells(STUDENT_DIR / SOLUTIONS[0].name)[0])
    installs = []
    with pytest.raises(RuntimeError, match="lowprec is not installed and this notebook names no "
                                           "install source: set LAB_SOURCE above"):
        _run_setup_cell(source, monkeypatch, installs)
    assert installs == []
