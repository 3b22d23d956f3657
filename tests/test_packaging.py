"""The install story: what pyproject.toml promises is what CI tests."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _runtime_floors() -> dict:
    text = (REPO / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[(.*?)\]", text, flags=re.M | re.S).group(1)
    floors = {}
    for requirement in re.findall(r'"([^"]+)"', dependencies):
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement).groups()
        floors[name.lower().replace("-", "_")] = version
    return floors


def test_oldest_lane_pins_every_runtime_floor():
    pins = {}
    for line in (REPO / ".ci" / "oldest-constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("-", "_")] = version
    floors = _runtime_floors()
    assert set(floors) == {"numpy", "ml_dtypes", "matplotlib"}
    assert {name: pins.get(name, "").removesuffix(".0") for name in floors} == \
        {name: v.removesuffix(".0") for name, v in floors.items()}


def test_ci_runs_the_readme_test_command_and_the_oldest_lane():
    ci = (REPO / ".ci" / "run").read_text()
    commands = [line.split("#")[0].strip() for line in ci.splitlines()]
    assert "make test" in commands and "make test-oldest" in commands
    assert "`make test`" in (REPO / "README.md").read_text()


def test_ci_runs_the_notebooks_lane_after_the_fast_lane():
    ci = (REPO / ".ci" / "run").read_text()
    commands = [line.split("#")[0].strip() for line in ci.splitlines()]
    assert "make test-notebooks" in commands
    assert commands.index("make test") < commands.index("make test-notebooks")
    makefile = (REPO / "Makefile").read_text()
    assert "-m notebooks" in makefile.split("\ntest-notebooks:")[1].split("\n\n")[0]
    pyproject = (REPO / "pyproject.toml").read_text()
    addopts = re.search(r'^addopts = "(.*)"', pyproject, flags=re.MULTILINE).group(1)
    assert "not notebooks" in addopts and "not exhaustive" in addopts


def test_make_lab_setup_registers_the_kernel_and_builds_the_student_notebooks(tmp_path):
    """`make lab-setup`'s own recipe, offline: a venv marked as installed (this interpreter, whose
    environment has the test extra) skips the pip steps; the kernel goes under a prefix in tmp."""
    import json
    import os
    import subprocess
    import sys

    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed").touch()
    (venv / ".lab-installed").touch()
    prefix, out = tmp_path / "jupyter", tmp_path / "student"
    paths = [str(REPO), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    args = ["make", "-C", str(REPO), f"VENV={venv}", f"PY={sys.executable}",
            f"KERNEL_INSTALL_ARGS=--prefix {prefix}", f"LAB_OUT={out}"]
    # a fresh venv would install the [lab] extra (JupyterLab) first
    planned = subprocess.run(args[:3] + [f"VENV={tmp_path / 'fresh'}", "-n", "lab-setup"],
                             check=False, capture_output=True, text=True, env=env)
    assert "pip install --quiet -e '.[lab]'" in planned.stdout, planned.stdout + planned.stderr
    done = subprocess.run(args + ["lab-setup"], check=False, capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pip install" not in done.stdout
    kernel = prefix / "share" / "jupyter" / "kernels" / "lowprec" / "kernel.json"
    spec = json.loads(kernel.read_text())
    assert spec["display_name"] == "Python (lowprec)" and spec["argv"][0] == sys.executable
    built = sorted(p.name for p in out.glob("*.ipynb"))
    assert built == sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    for name in built:
        assert (out / name).read_bytes() == (REPO / "notebooks" / "student" / name).read_bytes()
