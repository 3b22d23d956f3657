"""The figures: each plot function returns a Figure with labelled axes and the titles the README
describes, and the shares printed on the underflow histogram (Micikevicius et al. 2018, Fig. 3)
equal a NumPy computation on the activation gradients collected independently."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lowprec import data, demo, plots  # noqa: E402
from lowprec.nn import MLPConfig, TrainConfig, train  # noqa: E402
from lowprec.nn.cast import Caster  # noqa: E402


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [fig._suptitle.get_text()
                                                                   if fig._suptitle else ""]


def _labelled(fig):
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.get_ylabel(), ax.get_title()
    assert any(ax.get_xlabel() for ax in fig.axes)


@pytest.fixture(scope="module")
def fp32_run(request):
    """A tiny FP32 training, every step observed, and every dL/dz tensor it computed, taken
    from the Caster's trace (tensors of at most 32 x 64 values: the History's histograms see
    every value, no sampling)."""
    grads = []
    end_step = Caster.end_step

    def spy(self):
        grads.extend(np.array(y) for layer, point, y in self.trace if point == "grad_output")
        end_step(self)
    mp = pytest.MonkeyPatch()
    mp.setattr(Caster, "end_step", spy)
    small = data.teacher(np.random.default_rng(0), target_scale=3e-3)
    model = MLPConfig(sizes=(16,) + (64,) * 6 + (4,), loss="mse")
    history = train("fp32", small, model, TrainConfig(steps=6, batch_size=32, observe_every=1,
                                                      eval_every=0))
    mp.undo()
    assert len(grads) == 6 * 7
    return history, grads


def test_underflow_shares_equal_numpy(fp32_run):
    history, grads = fp32_run
    g = np.concatenate([t.ravel() for t in grads]).astype(np.float32)
    pooled = history.log2_histogram("grad_output")
    zero_fp32 = np.count_nonzero(g == 0) / g.size
    assert 0.2 < zero_fp32 < 0.8  # ReLU's zeros
    for k in (0, 8, plots.tail_scale(pooled["counts"], pooled["bin_log2"], pooled["amax"])):
        shares = plots.fp16_shares(pooled["counts"], pooled["bin_log2"], pooled["zeros"], k)
        scaled = g * np.float32(2.0**k)  # exact: a power of two, nothing near float32's limits
        flushed = np.count_nonzero((scaled != 0) & (scaled.astype(np.float16) == 0)) / g.size
        assert shares["zero"] == pytest.approx(100 * zero_fp32)
        assert shares["flushed"] == pytest.approx(100 * flushed, abs=1e-9)
        nonzero = np.abs(g[g != 0])
        per_bin = np.bincount(np.floor(np.log2(nonzero)).astype(int) + 96, minlength=128)
        assert shares["percent"] == pytest.approx(100 * per_bin / g.size)
    assert pooled["amax"] == np.abs(g).max()
    k = plots.tail_scale(pooled["counts"], pooled["bin_log2"], pooled["amax"])
    assert np.abs(g).max() * 2.0**k <= 65504
    lifted = g[g != 0] * np.float32(2.0**k)
    assert np.abs(lifted).min() >= 2.0**-24 or np.abs(g).max() * 2.0**(k + 1) > 65504
    assert np.abs(g[g != 0]).min() * 2.0**(k - 1) < 2.0**-24 or k == 0  # the smallest such k


def test_underflow_histogram_prints_its_shares(fp32_run):
    history, _ = fp32_run
    pooled = history.log2_histogram("grad_output")
    fig = plots.plot_underflow_histogram(**pooled, what="dL/dz, all layers")
    _labelled(fig)
    k = plots.tail_scale(pooled["counts"], pooled["bin_log2"], pooled["amax"])
    texts = " ".join(_texts(fig))
    for shift in (0, k):
        shares = plots.fp16_shares(pooled["counts"], pooled["bin_log2"], pooled["zeros"], shift)
        assert f"become zero in FP16: {shares['flushed']:.1f}% of all values" in texts
        assert f"zero already: {shares['zero']:.1f}%" in texts
    assert "Micikevicius et al. 2018, Fig. 3" in texts
    assert f"2^{k}" in fig.axes[1].get_title() and "65504" in fig.axes[1].get_title()
    assert fig.axes[0].get_ylabel() == "% of all values"
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("subnormal" in t and "2^-24" in t for t in legend)
    assert any("2^-25" in t for t in legend) and any("zero in FP32" in t for t in legend)
    plt.close(fig)


def test_layer_histogram_is_one_layer(fp32_run):
    history, grads = fp32_run
    layer0 = history.log2_histogram("grad_output", layer=0)
    # the trace runs backward: layer 0's dL/dz is the last grad_output of each step
    g0 = np.concatenate([t.ravel() for t in grads[6::7]])
    assert layer0["zeros"] == np.count_nonzero(g0 == 0)
    assert layer0["counts"].sum() == pytest.approx(np.count_nonzero(g0))


def test_heatmaps_name_the_task_and_explain_an_empty_panel(fp32_run):
    history, _ = fp32_run
    fig = plots.plot_underflow_heatmaps({"FP32": history}, stat="zeros", point="activation_grad",
                                        task="tiny regression", empty_text="nothing is zero here")
    _labelled(fig)
    assert fig._suptitle.get_text().startswith("tiny regression:")
    assert "nothing is zero here\n(every share is exactly 0%)" in _texts(fig)
    plt.close(fig)


def test_master_weights_draws_the_reference_on_top(fp32_run):
    history, _ = fp32_run
    fig = plots.plot_master_weights({"FP32 master weights": history, "other": history})
    _labelled(fig)
    left, right = fig.axes[:2]
    reference = left.get_lines()[0]
    assert reference.get_zorder() > left.get_lines()[1].get_zorder()
    assert reference.get_linestyle() == "--"
    assert "w - u rounds back to w" in right.get_title()
    plt.close(fig)


def test_fp8_figure_compares_unscaled_with_delayed_scaling():
    teacher = data.teacher(np.random.default_rng(0), target_scale=0.1)
    config = TrainConfig(steps=8, batch_size=32, observe_every=2, eval_every=0)
    delayed, unscaled = train("fp8_hybrid", teacher, config=config), train("fp8_hybrid_unscaled",
                                                                           teacher, config=config)
    tensors = [(0, "input"), (0, "grad_output")]
    fig = plots.plot_fp8_scaling(delayed, tensors, unscaled=unscaled)
    _labelled(fig)
    bars = fig.axes[2]
    assert "unscaled" in bars.get_title() and "delayed" in bars.get_title()
    printed = [float(t.get_text()) for t in bars.texts]
    expected = [100 * run.pooled(stat, point)[layer] for run, stat in
                ((unscaled, "underflow"), (delayed, "underflow"), (unscaled, "overflow"),
                 (delayed, "overflow")) for layer, point in tensors]
    assert printed == pytest.approx(expected, abs=0.05)
    plt.close(fig)


def test_other_figures_are_labelled():
    lines = plots.plot_number_lines()
    for ax in lines.axes:  # y: one row per format, named by its tick label
        assert (ax.get_xlabel() and ax.get_title()
                and "FP16" in [t.get_text() for t in ax.get_yticklabels()])
    plt.close(lines)
    scaled = train("fp16_mixed", data.spirals(np.random.default_rng(0)),
                   config=TrainConfig(steps=5, batch_size=32, eval_every=0))
    for fig in (plots.plot_loss_scale({"GradScaler": scaled}),
                plots.plot_accumulation_error(*demo.accumulation_errors(ks=(16, 64), trials=4),
                                              "test")):
        _labelled(fig)
        assert all(ax.get_title() for ax in fig.axes)
        plt.close(fig)
