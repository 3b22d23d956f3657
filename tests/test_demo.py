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
    assert len(list(tmp_path.glob("*.png"))) == 8
    assert "65536" in out  # GradScaler's scale in the small-gradient run
    print(out)


def _coarse(image, block=25):
    """Grey levels averaged over block x block squares: a view that font hinting and
    anti-aliasing (which differ between matplotlib and FreeType builds) barely move."""
    grey = image[..., :3].mean(axis=-1)
    h, w = (grey.shape[0] // block) * block, (grey.shape[1] // block) * block
    return grey[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3))


def _looks_alike(a, b) -> bool:
    if a.shape != b.shape:
        return False
    difference = np.abs(_coarse(a) - _coarse(b))
    return difference.max() < 0.15 and difference.mean() < 0.012


def test_figure_files_are_the_committed_ones(tmp_path):
    """The committed number-line figure is what the code draws today, with any matplotlib that
    pyproject allows (3.7's text rendering differs from 3.11's by up to 0.07 in a 25-pixel
    square; a bar moved by one binade, by more than 0.3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    import lowprec
    from lowprec import plots

    committed = REPO / "figures" / "01_number_lines.png"
    if not committed.exists():
        pytest.fail("figures/01_number_lines.png is missing: run `make figures`")

    def drawn(formats, name):
        fig = plots.plot_number_lines(formats)
        fig.savefig(tmp_path / name, dpi=100, metadata={"Software": None})
        plt.close(fig)
        return mpimg.imread(tmp_path / name)

    published = mpimg.imread(committed)
    assert _looks_alike(published, drawn((lowprec.FP32, lowprec.BF16, lowprec.FP16, lowprec.E5M2,
                                          lowprec.E4M3), "today.png"))
    # the comparison does see a change: E4M3FNUZ's range is one binade below E4M3's
    assert not _looks_alike(published, drawn((lowprec.FP32, lowprec.BF16, lowprec.FP16, lowprec.E5M2,
                                              lowprec.E4M3FNUZ), "changed.png"))


def test_figures_go_where_the_user_says(tmp_path, monkeypatch):
    import sysconfig

    monkeypatch.chdir(tmp_path)
    assert demo.figure_dir() == Path("figures")  # relative: the current directory's figures/
    assert demo.figure_dir(tmp_path / "x") == tmp_path / "x"
    for inside in (Path(sysconfig.get_paths()["purelib"]) / "lowprec" / "figures",
                   Path(demo.__file__).parent / "figures"):
        with pytest.raises(ValueError, match="refusing to write figures into"):
            demo.figure_dir(inside)


def test_make_demo_leaves_the_tree_clean():
    """`make demo` sends its figures to a folder git ignores; `make figures` alone rewrites
    the committed ones."""
    makefile = (REPO / "Makefile").read_text()
    demo_recipe = makefile[makefile.index("\ndemo:"):].split("\n\n")[0]
    out = demo_recipe.split("--out", 1)[1].split()[0]
    assert out != "figures"
    ignored = subprocess.run(["git", "check-ignore", "-q", f"{out}/01_number_lines.png"], cwd=REPO)
    assert ignored.returncode == 0, f"make demo writes figures into {out}/, which git does not ignore"


def test_comparison_table_reports_divergence_and_missing_accuracy():
    from lowprec import data
    from lowprec.nn import TrainConfig, train

    spirals = data.spirals(np.random.default_rng(0))
    runs = {"fp32": train("fp32", spirals, config=TrainConfig(steps=30, observe_every=10)),
            "fp16 pure": train("fp16_pure", spirals, config=TrainConfig(steps=30, observe_every=10))}
    table = demo.comparison_table(runs, "spirals")
    assert table.startswith("spirals:") and "fp16 pure" in table and "1.00x" in table
