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
