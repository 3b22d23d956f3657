"""The main job and the figure command."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lowprec import demo

REPO = Path(__file__).resolve().parent.parent


def test_demo_runs_and_compares_six_policies(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lowprec", "demo", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for label in demo.DEMO_POLICIES:
        assert out.count(label) >= 2, label  # one row in each task's table
    # the story the demo tells, checked on its own numbers (the "vs fp32" column)
    small = out[out.index("small gradients:"):].splitlines()
    ratio = {label: line[len(label):].split()[1] for line in small
             for label in demo.DEMO_POLICIES if line.startswith(label + "  ")}
    assert float(ratio["fp16 no loss scaling"].rstrip("x")) >= 2.0
    assert float(ratio["fp16 mixed + GradScaler"].rstrip("x")) <= 1.1
    assert ratio["fp16 pure"] == "-"  # diverged: the table says so instead of printing NaN
    assert len(list(tmp_path.glob("*.png"))) == 7
    assert "65536" in out  # GradScaler's scale in the small-gradient run
    print(out)


def test_figure_files_are_the_committed_ones(tmp_path):
    """The committed number-line figure is what the code draws (pixel for pixel, up to
    anti-aliasing differences between font builds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    from lowprec import plots

    committed = REPO / "figures" / "01_number_lines.png"
    if not committed.exists():
        pytest.fail("figures/01_number_lines.png is missing: run `python -m lowprec figures`")
    fig = plots.plot_number_lines()
    fig.savefig(tmp_path / "f.png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    a, b = mpimg.imread(committed), mpimg.imread(tmp_path / "f.png")
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 0.01


def test_comparison_table_reports_divergence_and_missing_accuracy():
    from lowprec import data
    from lowprec.nn import TrainConfig, train

    spirals = data.spirals(np.random.default_rng(0))
    runs = {"fp32": train("fp32", spirals, config=TrainConfig(steps=30, observe_every=10)),
            "fp16 pure": train("fp16_pure", spirals, config=TrainConfig(steps=30, observe_every=10))}
    table = demo.comparison_table(runs, "spirals")
    assert table.startswith("spirals:") and "fp16 pure" in table and "1.00x" in table
