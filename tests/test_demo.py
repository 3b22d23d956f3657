"""The main job and the figure command."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lowprec import demo

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.notebooks  # the whole demo: minutes on 2 cores, so `make test-notebooks` runs it
def test_demo_runs_and_compares_six_policies(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lowprec", "demo", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for label in demo.DEMO_POLICIES:
        assert out.count(label) >= 2, label  # one row in each task's table
    # the story the demo tells, checked on its own numbers (the "vs fp32" column)
    small = out[out.index("small gradients:"):].splitlines()
    cells = {label: re.split(r"\s{2,}", line) for line in small  # columns: two spaces apart
             for label in demo.DEMO_POLICIES if line.startswith(label + "  ")}
    ratio = {label: row[2] for label, row in cells.items()}  # policy, final train loss, vs fp32
    assert float(ratio["fp16 no loss scaling"].rstrip("x")) >= 2.0
    assert float(ratio["fp16 mixed + GradScaler"].rstrip("x")) <= 1.1
    # diverged: the table says where instead of printing NaN, and gives no statistics
    assert (cells["fp16 pure"][1].startswith("diverged at step ")
            and set(cells["fp16 pure"][2:]) == {"-"})
    assert "What to notice:" in out and "Pure FP16 with Adam diverges at step 2" not in out
    assert len(list(tmp_path.glob("*.png"))) == 9
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
    assert not _looks_alike(published, drawn((lowprec.FP32, lowprec.BF16, lowprec.FP16,
                                              lowprec.E5M2, lowprec.E4M3FNUZ), "changed.png"))


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
    assert ignored.returncode == 0, (f"make demo writes figures into {out}/, "
                                     "which git does not ignore")


def test_comparison_table_reports_divergence_and_missing_accuracy():
    from lowprec import data
    from lowprec.nn import TrainConfig, train

    spirals = data.spirals(np.random.default_rng(0))
    runs = {"fp32": train("fp32", spirals, config=TrainConfig(steps=30, observe_every=10)),
            "fp16 pure": train("fp16_pure", spirals,
                               config=TrainConfig(steps=30, observe_every=10))}
    table = demo.comparison_table(runs, "spirals")
    assert table.startswith("spirals:") and "fp16 pure" in table and "1.00x" in table


@pytest.fixture(scope="module")
def small_runs():
    """The demo's small-gradient task, shortened: fp32, a run that diverges (pure FP16 with
    Adam), one that flushes (no loss scaling), one that keeps them (GradScaler)."""
    from lowprec.nn import TrainConfig, train

    dataset, model, config = demo.tasks(0)["small gradients"]
    config = TrainConfig(steps=120, optimizer=config.optimizer, observe_every=30, eval_every=0)
    return {label: train(demo.DEMO_POLICIES[label], dataset, model, config)
            for label in ("fp32", "fp16 pure", "fp16 no loss scaling", "fp16 mixed + GradScaler")}


def test_comparison_table_headers_and_diverged_rows(small_runs):
    lines = demo.comparison_table(small_runs, "small gradients").splitlines()
    assert (lines[0].startswith("small gradients: regression")
            and "Optimizer Adam(lr=0.0003)" in lines[0])
    assert "120 steps of 256 examples" in lines[0]
    group, names, rule = lines[1], lines[2], lines[3]
    assert set(rule) <= {"-", " "}
    layers = small_runs["fp32"].layers
    columns = re.split(r"\s{2,}", names)
    per_layer = [f"L{l}" for l in range(layers)]
    # a regression: no accuracy column
    assert columns == (["policy", "final train loss", "vs fp32"] + per_layer
                       + ["skipped", "final scale"] + per_layer)
    # each group title starts above its first layer column (where the rule's dashes start)
    starts = [m.start() for m in re.finditer(r"-+", rule)]
    assert group.index("act-grad zero %") == starts[3]
    assert group.index("updates lost %") == starts[3 + layers + 2]
    rows = {re.split(r"\s{2,}", line)[0]: re.split(r"\s{2,}", line) for line in lines[4:]
            if line.split("  ")[0] in small_runs}
    step = demo.diverged_at(small_runs["fp16 pure"])
    loss = small_runs["fp16 pure"].loss
    assert step == int(small_runs["fp16 pure"].step[np.flatnonzero(~np.isfinite(loss))[0]])
    assert rows["fp16 pure"][1:] == [f"diverged at step {step}"] + ["-"] * (len(columns) - 2)
    assert rows["fp32"][2] == "1.00x" and rows["fp16 mixed + GradScaler"][-3 - layers] == "0"
    for label in ("fp32", "fp16 no loss scaling", "fp16 mixed + GradScaler"):
        assert len(rows[label]) == len(columns) and demo.diverged_at(small_runs[label]) is None


def _span(shares):
    lo, hi = (f"{100 * v:.0f}" for v in (min(shares), max(shares)))
    return f"{lo}%" if lo == hi else f"{lo}-{hi}%"


def test_what_to_notice_quotes_the_runs_own_numbers(small_runs):
    """Every sentence is one of the known kinds, and each number in it is recomputed here from
    the Histories' raw arrays (not from summary(), which the demo uses)."""
    from lowprec.observe import CULPRIT_KINDS

    def final_loss(h):
        n = len(h.loss)
        return float(h.loss[n - max(n // 10, 1):].mean())

    def zero_shares(h):
        p = h.point_index("activation_grad")
        return list(h.zeros[:, :, p].sum(axis=0) / h.count[:, :, p].sum(axis=0))

    def lost_shares(h):
        return list(h.update_lost.sum(axis=0) / h.update_nonzero.sum(axis=0))
    reference = final_loss(small_runs["fp32"])
    notes = demo.what_to_notice(small_runs)
    kinds = set()
    for note in notes:
        if m := re.fullmatch(r"(.+) diverged at step (\d+): the first (\w+) of the run came out of "
                             r"layer (\d+)'s (\w+) cast at step (\d+); .*", note):
            h = small_runs[m[1]]
            first_bad = int(h.step[np.flatnonzero(~np.isfinite(h.loss))[0]])
            at = np.flatnonzero(h.culprit_point >= 0)[0]
            assert (int(m[2]), m[3], int(m[4]), m[5], int(m[6])) == (
                first_bad, CULPRIT_KINDS[h.culprit_kind[at]], h.culprit_layer[at],
                h.points[h.culprit_point[at]], h.step[at])
            kinds.add("diverged")
        elif m := re.match(r"(.+) zeroes (\S+) of activation gradients across layers "
                           r"\(fp32: (\S+)\); its final train loss is ([\d.]+)x fp32's", note):
            h = small_runs[m[1]]
            assert (m[2], m[3], m[4]) == (_span(zero_shares(h)),
                                          _span(zero_shares(small_runs["fp32"])),
                                          f"{final_loss(h) / reference:.2f}")
            assert max(np.subtract(zero_shares(h),
                                   zero_shares(small_runs["fp32"]))) >= demo.FLUSH_MARGIN
            kinds.add("flushed")
        elif m := re.fullmatch(r"(.+) keeps them: with its loss scale \(last (\S+)\) (\S+) are "
                               r"zero, as in fp32; final train loss ([\d.]+)x fp32's, "
                               r"(\d+) steps skipped\.", note):
            h = small_runs[m[1]]
            assert (m[2], m[3], m[4], int(m[5])) == (f"{h.new_scale[-1]:g}", _span(zero_shares(h)),
                                                     f"{final_loss(h) / reference:.2f}",
                                                     int(h.skipped.sum()))
            kinds.add("kept")
        elif m := re.fullmatch(r"(.+) loses (\d+)% of its weight updates at layer (\d+) in "
                               r"rounding \(w - u rounds back to w\); the other runs at most "
                               r"(\d+)%\.", note):
            lost = {l: max(lost_shares(h)) for l, h in small_runs.items()
                    if demo.diverged_at(h) is None}
            assert m[1] == max(lost, key=lost.get)
            assert (m[2], int(m[3]), m[4]) == (
                f"{100 * lost[m[1]]:.0f}", int(np.argmax(lost_shares(small_runs[m[1]]))),
                f"{100 * max(v for l, v in lost.items() if l != m[1]):.0f}")
            kinds.add("lost")
        else:
            pytest.fail(f"a note of no known kind: {note}")
    assert {"diverged", "flushed", "kept"} <= kinds, notes
    table = demo.comparison_table(small_runs, "small gradients")
    assert table.endswith("\n".join(["What to notice:"] + [f"  - {n}" for n in notes]))


def test_what_to_notice_is_chosen_by_the_numbers(small_runs):
    """The same runs under other names, or without the flushing run, give other sentences:
    nothing is fixed text."""
    renamed = {"fp32": small_runs["fp32"], "A": small_runs["fp16 no loss scaling"],
               "B": small_runs["fp16 mixed + GradScaler"]}
    notes = demo.what_to_notice(renamed)
    assert notes[0].startswith("A zeroes ") and notes[1].startswith("B keeps them")
    # with nothing flushed there is nothing to keep: no "keeps them" sentence
    calm = demo.what_to_notice({"fp32": small_runs["fp32"],
                                "B": small_runs["fp16 mixed + GradScaler"]})
    assert not any("keeps them" in n or "zeroes" in n or "diverged" in n for n in calm)
