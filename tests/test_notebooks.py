"""Every lab runs top to bottom: the solutions pass every check, the student versions report
"not answered yet" and nothing crashes. (Each notebook is written to take under a minute on a CPU;
the time is printed, never asserted.) Marked `notebooks`: `make test-notebooks` runs them."""
import os
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.notebooks

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOLUTIONS = sorted(NOTEBOOKS.glob("*.ipynb"))
STUDENTS = sorted((NOTEBOOKS / "student").glob("*.ipynb"))
CHECK_CALL = re.compile(r'^check\("(\d\d\.\d)"', re.MULTILINE)


def test_there_are_notebooks_and_student_versions():
    assert len(SOLUTIONS) >= 10
    assert [p.name for p in STUDENTS] == [p.name for p in SOLUTIONS]


@pytest.fixture(autouse=True)
def kernel_imports_this_tree(monkeypatch):
    """The kernel imports the lowprec of this checkout, whatever the venv has installed, and uses
    one BLAS thread unless told otherwise, as `make` sets it (threads that spin for a core slow
    a notebook down on 2 busy cores)."""
    here = str(NOTEBOOKS.parent)
    paths = [here, os.environ.get("PYTHONPATH")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", os.environ.get("OPENBLAS_NUM_THREADS", "1"))


def _run(path):
    """Execute the notebook in its own folder; return (exercise ids called, their printed lines)."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    print(f"{path.parent.name}/{path.name}: {time.perf_counter() - start:.1f} s")
    # IPython shows a DeprecationWarning raised from a cell's own code: a lab must teach the
    # current names, not the ones kept for one release.
    stderr = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                     for o in cell.outputs if o.get("name") == "stderr")
    assert "DeprecationWarning" not in stderr, stderr
    called, lines = [], []
    for cell in nb.cells:
        if cell.cell_type == "code" and CHECK_CALL.search(cell.source):
            called += CHECK_CALL.findall(cell.source)
            text = "".join(o.get("text", "") for o in cell.outputs
                           if o.get("output_type") == "stream")
            lines += [line for line in text.splitlines() if line.startswith("Exercise ")]
    return called, lines


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solution_passes_every_check(path):
    called, lines = _run(path)
    assert called, "a lab without checks"
    assert lines == [f"Exercise {exercise}: correct" for exercise in called]


@pytest.mark.parametrize("path", STUDENTS, ids=[p.stem for p in STUDENTS])
def test_student_version_runs_and_is_not_answered(path):
    called, lines = _run(path)
    assert called, "a lab without checks"
    verdicts = [line.split(":")[1].strip() for line in lines]
    assert len(verdicts) == len(called)
    assert all(v.startswith("not answered yet") for v in verdicts), verdicts
