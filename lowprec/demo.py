"""The main job (``python -m lowprec demo``) and the figure command (``python -m lowprec figures``).

The demo trains the same MLP under six precision policies on two tasks and prints what
happened; both commands then write every figure of the README to ``figures/`` (the repo's
folder, found from the package, never from the working directory). Everything is seeded:
running the figure command again gives the same PNGs.

The two tasks, chosen so that each effect shows within seconds on two cores:

* ``digits`` (8x8 handwritten digits, classification, SGD): accuracy, and how much of the
  early layers' gradients FP16 flushes without loss scaling (it still learns: the flushed
  gradients belong to examples it already classifies);
* ``small gradients`` (a teacher network's outputs times 3e-3, regression, eight hidden layers,
  Adam): here the flushed gradients carry the learning, and FP16 without loss scaling ends
  several times worse than FP32 (tests/test_scaling_training.py measures the same setting).
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from . import data
from .formats import FP16

FIGURES_DIR = Path(__file__).resolve().parent.parent / "figures"

# label -> policy preset (lowprec.nn.PRESETS), in the order the table prints them
DEMO_POLICIES = {
    "fp32": "fp32",
    "fp16 pure": "fp16_pure",
    "fp16 no loss scaling": "fp16_mixed_unscaled",
    "fp16 mixed + GradScaler": "fp16_mixed",
    "bf16 mixed": "bf16_mixed",
    "fp8 hybrid (delayed)": "fp8_hybrid",
}


def tasks(seed: int = 0) -> dict:
    """name -> (dataset, MLPConfig or None for the default model, TrainConfig)."""
    from .nn import Adam, MLPConfig, TrainConfig

    small = data.teacher(np.random.default_rng(seed), target_scale=3e-3)
    return {
        "digits": (data.digits(np.random.default_rng(seed)), None,
                   TrainConfig(observe_every=50, seed=seed)),
        "small gradients": (small, MLPConfig(sizes=(16,) + (64,) * 8 + (4,), loss="mse"),
                            TrainConfig(optimizer=Adam(lr=3e-4), observe_every=50, seed=seed)),
    }


def train_all(seed: int = 0, log=print) -> dict:
    """{task: {label: History}} for every task and every demo policy."""
    from .nn import train

    runs = {}
    for task, (dataset, model, config) in tasks(seed).items():
        runs[task] = {}
        for label, policy in DEMO_POLICIES.items():
            start = time.perf_counter()
            runs[task][label] = train(policy, dataset, model, config)
            log(f"  {task:15s} {label:24s} {time.perf_counter() - start:5.1f} s")
    return runs


def _percent(values) -> str:
    return " ".join("  - " if math.isnan(v) else f"{100 * v:3.0f}" for v in values)


def comparison_table(runs: dict, task: str) -> str:
    """One line per policy: loss, accuracy, per-layer underflow, skipped steps, scale, lost updates."""
    rows = [("policy", "final loss", "vs fp32", "test acc", "act-grad zero % by layer",
             "skipped", "final scale", "updates lost % by layer")]
    reference = runs["fp32"].summary()["final_loss"]
    for label, history in runs.items():
        s = history.summary()
        loss = s["final_loss"]
        rows.append((label, f"{loss:.3g}" if math.isfinite(loss) else "diverged",
                     f"{loss / reference:.2f}x" if math.isfinite(loss) else "-",
                     f"{s['test_accuracy']:.3f}" if math.isfinite(s["test_accuracy"]) else "-",
                     _percent(s["act_grad_zero"]), str(s["skipped"]),
                     f"{s['final_scale']:g}" if math.isfinite(s["final_scale"]) else "-",
                     _percent(s["updates_lost"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return f"{task}:\n" + "\n".join(lines)


# --- figures -------------------------------------------------------------------------------------
def _pooled_exp_hist(history, point: str, layer: int):
    from .observe import HIST_BINS, HIST_MIN_EXP

    counts = history.exp_hist[:, layer, history.point_index(point)].sum(axis=0)
    return counts, HIST_MIN_EXP + np.arange(HIST_BINS)


def accumulation_errors(ks=(16, 64, 256, 1024, 4096), trials: int = 32, seed: int = 0):
    """Median relative error of FP16-input dot products of length K under each accumulation
    model, against the exact sum (math.fsum of the exact float64 products)."""
    from . import arith, tensorcore
    from .rounding import round as lp_round

    models = {"FP32 accumulator (sequential)": ("fp32", "fp32"),
              "FP16 accumulator": ("fp16", "fp16"), "BF16 accumulator": ("bf16", "bf16"),
              "V100 tensor core (n=4, F=23)": (tensorcore.V100_FP16, "fp32"),
              "A100 tensor core (n=8, F=24)": (tensorcore.A100_FP16, "fp32"),
              "H100 tensor core (n=16, F=25)": (tensorcore.H100_FP16, "fp32")}
    rng = np.random.default_rng(seed)
    errors = {label: [] for label in models}
    for k in ks:
        a = lp_round(rng.random((trials, k)), FP16)
        b = lp_round(rng.random((trials, k)), FP16)
        exact = np.array([math.fsum(row) for row in a * b])  # FP16 products are exact in float64
        for label, (accumulate, output) in models.items():
            got = np.asarray(arith.dot(a, b, inputs="fp16", accumulate=accumulate, output=output))
            errors[label].append(float(np.median(np.abs(got - exact) / exact)))
    return list(ks), errors


def figure_runs(seed: int = 0, demo_runs: dict | None = None, log=print) -> dict:
    """The training runs the figures need (reusing the demo's runs when given)."""
    from .formats import FP32
    from .nn import PRESETS, SGD, MLPConfig, TrainConfig, train
    from .scaling import DeepSpeedConfig, DynamicScalingConfig

    task_list = tasks(seed)
    out = {}
    small, small_model, small_config = task_list["small gradients"]
    if demo_runs is None:
        out["small gradients"] = {label: train(DEMO_POLICIES[label], small, small_model, small_config)
                                  for label in ("fp32", "fp16 no loss scaling", "fp16 mixed + GradScaler")}
    else:
        out["small gradients"] = demo_runs["small gradients"]
    log("  figure runs: loss-scale traces")
    digits, _, _ = task_list["digits"]
    config = TrainConfig(steps=600, eval_every=0, seed=seed)
    fp16 = PRESETS["fp16_mixed"]
    out["loss scale"] = {
        "PyTorch GradScaler (init 2^24, growth interval 50)": train(
            fp16.replace(loss_scale=DynamicScalingConfig(init_scale=2.0**24, growth_interval=50)),
            digits, config=config),
        "DeepSpeed (init 2^24, window 50, hysteresis 2)": train(
            fp16.replace(loss_scale=DeepSpeedConfig(init_scale=2.0**24, scale_window=50)),
            digits, config=config),
    }
    log("  figure runs: master weights")
    teacher = data.teacher(np.random.default_rng(seed))
    pure = PRESETS["fp16_pure"]
    stagnation = TrainConfig(steps=800, batch_size=64, optimizer=SGD(lr=0.002, momentum=0.9),
                             observe_every=50, eval_every=0, seed=seed)
    model = MLPConfig(sizes=(16, 64, 64, 64, 64, 4), loss="mse")
    out["master weights"] = {
        label: train(policy, teacher, model, stagnation) for label, policy in {
            "FP32 master weights": pure.replace(name="fp16_master", master_weights=FP32,
                                                optimizer_state=FP32),
            "pure FP16, round to nearest": pure,
            "pure FP16, stochastic rounding": pure.replace(name="fp16_sr", update="stochastic"),
            "pure FP16, Kahan-compensated": pure.replace(name="fp16_kahan", update="kahan"),
        }.items()}
    log("  figure runs: FP8 delayed scaling")
    from .nn import Adam
    fp8_data = data.teacher(np.random.default_rng(seed), target_scale=0.1)
    out["fp8"] = train("fp8_hybrid", fp8_data, config=TrainConfig(optimizer=Adam(lr=1e-3),
                                                                   eval_every=0, seed=seed))
    return out


def make_figures(outdir=None, seed: int = 0, demo_runs: dict | None = None, log=print) -> list:
    """Write every figure; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plots

    outdir = Path(outdir) if outdir is not None else FIGURES_DIR
    outdir.mkdir(parents=True, exist_ok=True)
    runs = figure_runs(seed, demo_runs, log)
    small = runs["small gradients"]
    counts, bins = _pooled_exp_hist(small["fp32"], "activation_grad", 0)
    figures = {
        "01_number_lines.png": plots.plot_number_lines(),
        "02_underflow_histogram.png": plots.plot_underflow_histogram(
            counts, bins, "Layer 0 activation gradients (small-gradient regression)", scale=2.0**16),
        "03_underflow_by_layer.png": plots.plot_underflow_heatmaps(
            {"FP16, no loss scaling": small["fp16 no loss scaling"],
             "FP16 + GradScaler": small["fp16 mixed + GradScaler"]}, stat="zeros"),
        "04_loss_scale.png": plots.plot_loss_scale(runs["loss scale"]),
        "05_master_weights.png": plots.plot_master_weights(runs["master weights"], layer=0),
        "06_accumulation_error.png": plots.plot_accumulation_error(
            *accumulation_errors(), "FP16 inputs uniform in [0, 1)"),
        "07_fp8_delayed_scaling.png": plots.plot_fp8_scaling(
            runs["fp8"], [(0, "input"), (0, "weight"), (0, "grad_output"), (4, "grad_output")]),
    }
    paths = []
    for name, fig in figures.items():
        path = outdir / name
        # Fixed metadata so that the same figure gives the same bytes.
        fig.savefig(path, dpi=100, metadata={"Software": None})
        plt.close(fig)
        paths.append(path)
    return paths


def run_demo(outdir=None, seed: int = 0) -> dict:
    """Train everything, print the comparison, write the figures."""
    start = time.perf_counter()
    print("lowprec demo: the same MLP under six precision policies (seeded; about a minute)\n")
    runs = train_all(seed)
    for task, task_runs in runs.items():
        print()
        print(comparison_table(task_runs, task))
    print("\nReading the tables: 'act-grad zero' is the share of activation gradients that are zero, "
          "layer 0 first;\nwithout loss scaling FP16 flushes the small ones. 'updates lost' is the share "
          "of weight updates that\nrounding discarded (w + u == w). Pure FP16 with Adam diverges at step 2: Adam's "
          "second moment\nv = 0.001 g^2 underflows to zero in FP16, so the update m / (sqrt(v) + 1e-8) "
          "becomes enormous.")
    print("\nwriting figures ...")
    paths = make_figures(outdir, seed, demo_runs=runs)
    for path in paths:
        print(f"  {path}")
    print(f"\ndone in {time.perf_counter() - start:.0f} s")
    sys.stdout.flush()
    return runs
