"""The training loop: determinism, loss-scaler protocol, skipped steps and the culprit layer."""
from fractions import Fraction

import numpy as np
import pytest

from lowprec import data
from lowprec.nn import CAST_POINTS, PRESETS, SGD, MLPConfig, TrainConfig, Trainer, train
from lowprec.observe import History

SMALL = MLPConfig(sizes=(2, 16, 16, 3))
SHORT = TrainConfig(steps=30, batch_size=32, eval_every=10, observe_every=5)


@pytest.fixture(scope="module")
def spirals():
    return data.spirals(np.random.default_rng(0), points_per_class=60)


class _StaticScaler:
    """A minimal loss scaler with only the interface train() relies on (test stand-in)."""

    def __init__(self, scale):
        self.scale, self.updates = float(scale), []

    def update(self, found_inf):
        self.updates.append(bool(found_inf))

    def state_dict(self):
        return {"scale": self.scale}

    def load_state_dict(self, state):
        self.scale = state["scale"]


def _same_history(a, b):
    arrays_a, arrays_b = a.to_arrays(), b.to_arrays()
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        assert np.array_equal(arrays_a[name], arrays_b[name], equal_nan=name != "meta"), name


@pytest.mark.parametrize("policy", ["fp16_mixed", PRESETS["fp16_pure"].replace(update="stochastic")])
def test_same_seed_same_history_bit_for_bit(spirals, policy):
    first = train(policy, spirals, SMALL, SHORT)
    again = train(policy, spirals, SMALL, SHORT)
    _same_history(first, again)
    other = train(policy, spirals, SMALL, TrainConfig(**{**SHORT.__dict__, "seed": 1}))
    assert not np.array_equal(first.loss, other.loss)


def test_history_records_every_step_eval_and_observation(spirals):
    h = train("fp16_mixed", spirals, SMALL, SHORT)
    assert len(h) == 30 and list(h.step) == list(range(1, 31))
    assert list(h.eval_step) == [10, 20, 30]
    assert list(h.observed_step) == [1, 6, 11, 16, 21, 26]
    assert h.count.shape == (6, 3, len(CAST_POINTS)) and h.exp_hist.shape[:3] == (6, 3, len(CAST_POINTS))
    assert np.all(h.scale == 65536.0)  # GradScaler's initial scale, no growth within 30 steps
    # every observed cast saw every value of its tensor: batch 32, widths 2-16-16-3
    p = h.point_index("activation_grad")
    assert list(h.count[0, :, p]) == [32 * 16, 32 * 16, 32 * 3]
    assert list(h.count[0, :, h.point_index("weight")]) == [2 * 16 + 16, 16 * 16 + 16, 16 * 3 + 3]


def test_overflow_skips_the_step_and_names_the_culprit(spirals):
    """A static scale of 2**40 overflows FP16 at dL/dlogits, the first backward cast."""
    trainer = Trainer("fp16_mixed", SMALL, seed=0, scaler=_StaticScaler(2.0**40))
    before = [{k: v.copy() for k, v in p.items()} for p in trainer.stored]
    record = trainer.step(spirals.x_train[:32], spirals.y_train[:32])
    assert record["found_inf"] and record["skipped"]
    assert (record["culprit_layer"], CAST_POINTS[record["culprit_point"]]) == (2, "activation_grad")
    assert trainer.scaler.updates == [True]
    for old, new in zip(before, trainer.stored):  # the step was not applied
        assert all(np.array_equal(old[k], new[k]) for k in old)


def test_forward_overflow_is_traced_to_the_input_cast(spirals):
    x = spirals.x_train[:8] * np.float32(1e5)  # beyond FP16's 65504
    trainer = Trainer("fp16_mixed", SMALL, scaler=_StaticScaler(1.0))
    record = trainer.step(x, spirals.y_train[:8])
    assert record["found_inf"] and record["skipped"]
    assert (record["culprit_layer"], CAST_POINTS[record["culprit_point"]]) == (0, "input")


def test_without_a_loss_scaler_non_finite_gradients_are_applied(spirals):
    """Pure FP16 without a scaler behaves like plain PyTorch: nothing checks, NaN gets in."""
    trainer = Trainer("fp16_pure", SMALL)
    x = spirals.x_train[:8] * np.float32(1e5)
    record = trainer.step(x, spirals.y_train[:8])
    assert record["found_inf"] and not record["skipped"]
    assert not np.isfinite(trainer.stored[0]["weight"]).all()


def test_lowprec_dynamic_scaler_halves_after_overflow(spirals):
    trainer = Trainer(PRESETS["fp16_mixed"].replace(loss_scale="dynamic"), SMALL)
    x = spirals.x_train[:8] * np.float32(1e5)
    trainer.step(x, spirals.y_train[:8])
    assert trainer.scaler.scale == 32768.0  # GradScaler: backoff_factor 0.5 (torch/amp/grad_scaler.py)


def test_progress_bar_only_on_a_terminal(spirals, capsys):
    train("fp32", spirals, SMALL, TrainConfig(steps=3, batch_size=16, eval_every=0))
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal
    train("fp32", spirals, SMALL, TrainConfig(steps=3, batch_size=16, eval_every=0), progress=True)
    assert "3/3" in capsys.readouterr().err


def test_bad_arguments_get_clear_errors(spirals):
    with pytest.raises(ValueError, match="unknown precision policy"):
        train("fp12", spirals, SMALL, SHORT)
    with pytest.raises(ValueError, match="do not fit the data"):
        train("fp32", spirals, MLPConfig(sizes=(3, 4, 3)), SHORT)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(TypeError, match="optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="activation"):
        MLPConfig(activation="swish")


def test_numpy_scalars_in_the_configs_are_recorded_as_their_exact_values(spirals, tmp_path):
    """NumPy scalars in TrainConfig, SGD and MLPConfig reach the run's record (the History's meta,
    the checkpoint's fingerprint) as Python numbers of exactly their value: np.float32(0.1) as
    13421773 / 2**27. A run with the same values in Python numbers is the same run."""
    lr32 = np.float32(0.1)
    config = TrainConfig(steps=np.int64(4), batch_size=np.int32(16), eval_every=np.int64(2),
                         seed=np.uint8(0), checkpoint_every=np.int64(2),
                         optimizer=SGD(lr=lr32, momentum=np.float64(0.9)))
    model = MLPConfig(sizes=(2, 8, 3), init_gain=np.float32(0.75))
    path = tmp_path / "run.npz"
    h = train("fp32", spirals, model, config, checkpoint=path, stop_after=2)
    recorded = h.meta["train"]
    assert recorded["optimizer"][0] == "SGD"
    assert recorded["optimizer"][1]["lr"] == 13421773 / 2**27 and recorded["optimizer"][1]["momentum"] == 0.9
    assert Fraction(recorded["optimizer"][1]["lr"]) == Fraction(float(lr32))
    assert recorded["steps"] == 4 and h.meta["model"]["init_gain"] == 0.75
    for value in (*recorded.values(), *recorded["optimizer"][1].values(), h.meta["model"]["init_gain"]):
        assert type(value) in (int, float, bool, list), value
    h.save(tmp_path / "h.npz")
    assert History.load(tmp_path / "h.npz").meta == h.meta
    plain = TrainConfig(steps=4, batch_size=16, eval_every=2, seed=0, checkpoint_every=2,
                        optimizer=SGD(lr=13421773 / 2**27, momentum=0.9))
    resumed = train("fp32", spirals, MLPConfig(sizes=(2, 8, 3), init_gain=0.75), plain, resume=path)
    whole = train("fp32", spirals, model, config)
    assert np.array_equal(resumed.loss, whole.loss) and resumed.meta == whole.meta


def test_inputs_are_not_modified(spirals):
    x = spirals.x_train[:16].copy()
    trainer = Trainer("fp16_mixed", SMALL)
    trainer.step(x, spirals.y_train[:16], observe=True)
    assert np.array_equal(x, spirals.x_train[:16])


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_trains(spirals, name):
    h = train(name, spirals, SMALL, TrainConfig(steps=60, batch_size=32, eval_every=0))
    assert np.all(np.isfinite(h.loss))
    assert h.loss[-10:].mean() < h.loss[:10].mean()


def test_summary_table(spirals):
    from lowprec.observe import summarize
    runs = {name: train(name, spirals, SMALL, SHORT) for name in ("fp32", "fp16_pure")}
    runs["unobserved"] = train("fp32", spirals, SMALL, TrainConfig(steps=4, batch_size=16))
    lines = summarize(runs).splitlines()
    assert len(lines) == 5 and lines[2].startswith("fp32") and lines[3].startswith("fp16_pure")
    assert lines[4].rstrip().endswith("-")
