"""The training loop: determinism, loss-scaler protocol, skipped steps and the culprit layer."""
import importlib
import sys
import types
from fractions import Fraction

import numpy as np
import pytest

from lowprec import data
from lowprec.nn import (CAST_POINTS, POLICIES, SGD, Adam, Cast, Caster, MLPConfig, TrainConfig,
                        Trainer, train)
from lowprec.nn.train import batch_indices
from lowprec.observe import History
from lowprec.scaling import DelayedScaling, DynamicScalingConfig, NonFiniteSource

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


@pytest.mark.parametrize("policy",
                         ["fp16_mixed", POLICIES["fp16_pure"].replace(update="stochastic")])
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
    assert (h.count.shape == (6, 3, len(CAST_POINTS))
            and h.exp_hist.shape[:3] == (6, 3, len(CAST_POINTS)))
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
    assert record["culprit"] == NonFiniteSource(2, "activation_grad", "inf")
    assert trainer.scaler.updates == [True]
    for old, new in zip(before, trainer.stored):  # the step was not applied
        assert all(np.array_equal(old[k], new[k]) for k in old)


def test_forward_overflow_is_traced_to_the_input_cast(spirals):
    x = spirals.x_train[:8] * np.float32(1e5)  # beyond FP16's 65504
    trainer = Trainer("fp16_mixed", SMALL, scaler=_StaticScaler(1.0))
    record = trainer.step(x, spirals.y_train[:8])
    assert record["found_inf"] and record["skipped"]
    assert record["culprit"] == NonFiniteSource(0, "input", "inf")


def test_without_a_loss_scaler_non_finite_gradients_are_applied(spirals):
    """Pure FP16 without a scaler behaves like plain PyTorch: nothing checks, NaN gets in."""
    trainer = Trainer("fp16_pure", SMALL)
    x = spirals.x_train[:8] * np.float32(1e5)
    record = trainer.step(x, spirals.y_train[:8])
    assert record["found_inf"] and not record["skipped"]
    assert not np.isfinite(trainer.stored[0]["weight"]).all()


def test_lowprec_dynamic_scaler_halves_after_overflow(spirals):
    trainer = Trainer(POLICIES["fp16_mixed"].replace(loss_scale="dynamic"), SMALL)
    x = spirals.x_train[:8] * np.float32(1e5)
    trainer.step(x, spirals.y_train[:8])
    # GradScaler: backoff_factor 0.5 (torch/amp/grad_scaler.py)
    assert trainer.scaler.scale == 32768.0


class _FakeTqdm:
    """Stands in for tqdm.auto.tqdm: records what train() tells it."""
    made = []

    def __init__(self, total, initial=0, **kwargs):
        self.total, self.n, self.postfix, self.closed = total, initial, None, False
        _FakeTqdm.made.append(self)

    def update(self, n):
        self.n += n

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def close(self):
        self.closed = True


def _without_tqdm(monkeypatch):
    _FakeTqdm.made.clear()
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # `from tqdm.auto import tqdm` fails


def _with_fake_tqdm(monkeypatch):
    module = types.ModuleType("tqdm.auto")
    module.tqdm = _FakeTqdm
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setitem(sys.modules, "tqdm.auto", module)
    _FakeTqdm.made.clear()


def test_progress_uses_tqdm_when_installed(spirals, monkeypatch, capsys):
    _with_fake_tqdm(monkeypatch)
    config = TrainConfig(steps=5, batch_size=16, eval_every=0)
    h = train("fp32", spirals, SMALL, config, progress=True)
    (bar,) = _FakeTqdm.made
    assert (bar.total, bar.n, bar.closed) == (5, 5, True)
    assert bar.postfix == f"loss {h.loss[-1]:.4g}"
    assert capsys.readouterr().err == ""  # tqdm drew it, not the fallback
    # display only: the same run without progress gives the same History, bit for bit
    quiet = train("fp32", spirals, SMALL, config, progress=False)
    for name, value in h.to_arrays().items():
        assert np.array_equal(value, quiet.to_arrays()[name], equal_nan=name != "meta"), name


def test_progress_without_tqdm_falls_back_to_a_text_bar(spirals, monkeypatch, capsys):
    _without_tqdm(monkeypatch)
    train("fp32", spirals, SMALL, TrainConfig(steps=3, batch_size=16, eval_every=0), progress=True)
    assert "3/3" in capsys.readouterr().err


def test_progress_false_and_the_default_under_pytest_print_nothing(spirals, monkeypatch, capsys):
    for install in (_without_tqdm, _with_fake_tqdm):
        install(monkeypatch)
        train("fp32", spirals, SMALL, TrainConfig(steps=3, batch_size=16, eval_every=0),
              progress=False)
        train("fp32", spirals, SMALL, TrainConfig(steps=3, batch_size=16, eval_every=0))
        assert capsys.readouterr() == ("", "") and _FakeTqdm.made == []


def test_progress_default_shows_only_long_runs_someone_watches(monkeypatch, capsys):
    """progress=None: estimated from the first steps (a fake clock: 1 s per step), shown only
    when the run looks longer than 5 s and runs in a terminal or a Jupyter kernel."""
    train_module = importlib.import_module("lowprec.nn.progress")

    def run(total):
        ticks = iter(range(1000))
        bar = train_module.Progress(total, None, clock=lambda: float(next(ticks)))
        for step in range(1, total + 1):
            bar.show(step, 0.5)
        bar.close()
        return bar

    _without_tqdm(monkeypatch)
    monkeypatch.setattr(train_module, "_in_kernel", lambda: False)
    assert run(100).mode is None  # pytest: stderr is not a terminal, no kernel
    assert capsys.readouterr() == ("", "")
    monkeypatch.setattr(train_module, "_in_kernel", lambda: True)
    assert run(3).mode is None  # about 3 s: too short to bother
    bar = run(100)  # Jupyter without tqdm: a printed line now and then, not a redrawn bar
    out = capsys.readouterr().out.splitlines()
    assert (bar.mode == "notebook" and 2 <= len(out) <= 100 // 4
            and out[-1].startswith("step 100/100"))
    _with_fake_tqdm(monkeypatch)
    assert run(100).mode == "tqdm" and _FakeTqdm.made[0].n == 100


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
    sgd = recorded["optimizer"][1]
    assert sgd["lr"] == 13421773 / 2**27 and sgd["momentum"] == 0.9
    assert Fraction(recorded["optimizer"][1]["lr"]) == Fraction(float(lr32))
    assert recorded["steps"] == 4 and h.meta["model"]["init_gain"] == 0.75
    for value in (*recorded.values(), *recorded["optimizer"][1].values(),
                  h.meta["model"]["init_gain"]):
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


@pytest.mark.parametrize("name", list(POLICIES))
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


# --- Trainer.state_dict / load_state_dict ---------------------------------------------------------
STATE_CASES = {
    # a dynamic scaler that backs off and grows within the run (init 2**24 overflows FP16)
    "fp16_mixed_dynamic": (POLICIES["fp16_mixed"].replace(
        name="dyn", loss_scale=DynamicScalingConfig(init_scale=2.0**24, growth_interval=3)), SGD()),
    # per-tensor amax histories longer than the first part of the run
    "fp8_delayed": (POLICIES["fp8_hybrid"].replace(
        fp8_recipe=DelayedScaling(amax_history_len=8)), SGD()),
    # Adam moments and the stochastic-rounding generator (bf16 master weights rounded
    # stochastically)
    "adam_bf16_stochastic": (POLICIES["bf16_mixed"].replace(
        name="sr", master_weights=Cast("bf16", "stochastic")),
                             Adam(lr=0.01)),
    # the Kahan compensation buffers of pure BF16 weights
    "bf16_kahan": (POLICIES["fp16_pure"].replace(name="kahan", weight="bf16", update="kahan"),
                   SGD()),
}


def _steps(trainer, spirals, start, end, history):
    """Steps start..end-1 of the batch schedule, recorded as train() records them."""
    for s in range(start, end):
        idx = batch_indices(len(spirals.x_train), 32, 0, s)
        record = trainer.step(spirals.x_train[idx], spirals.y_train[idx], observe=s % 3 == 0)
        fp8 = record.pop("fp8")
        history.record_step(**record)
        if fp8 is not None:
            history.record_fp8(record["step"], fp8)
        if s % 3 == 0:
            history.record_observation(record["step"], trainer.observer)


def _same_state(a: dict, b: dict):
    """Two state_dicts hold the same values bit for bit (arrays compared as bytes)."""
    assert a.keys() == b.keys()
    for key, value in a.items():
        other = b[key]
        if isinstance(value, np.ndarray):
            assert value.dtype == other.dtype and value.tobytes() == other.tobytes(), key
        elif isinstance(value, dict):
            _same_state(value, other)
        elif isinstance(value, list):
            assert len(value) == len(other), key
            _same_state(dict(enumerate(value)), dict(enumerate(other)))
        else:
            assert value == other, key


@pytest.mark.parametrize("name", list(STATE_CASES))
def test_resume_from_state_dict_is_bit_identical(spirals, name):
    """Steps 0-6, state_dict, then a trainer of another seed (other initial weights, other random
    bits) loads it and takes steps 7-15: the same History and final state as 16 steps in one go."""
    policy, optimizer = STATE_CASES[name]
    whole, whole_history = Trainer(policy, SMALL, optimizer, seed=0), History(3, CAST_POINTS)
    _steps(whole, spirals, 0, 16, whole_history)

    first, history = Trainer(policy, SMALL, optimizer, seed=0), History(3, CAST_POINTS)
    _steps(first, spirals, 0, 7, history)
    state = first.state_dict()
    # a state_dict is a copy: this changes nothing
    _steps(first, spirals, 7, 9, History(3, CAST_POINTS))
    resumed = Trainer(policy, SMALL, optimizer, seed=1)
    assert not np.array_equal(resumed.stored[0]["weight"], first.stored[0]["weight"])
    resumed.load_state_dict(state)
    _steps(resumed, spirals, 7, 16, history)
    _same_history(whole_history, history)
    _same_state(whole.state_dict(), resumed.state_dict())
    if name == "fp16_mixed_dynamic":  # the scaler's state mattered: it backed off and grew
        assert whole_history.skipped.any() and len(set(whole_history.scale)) >= 3
    if name == "fp8_delayed":  # and the recipe states did: 9 tensors, scales off their start of 1
        assert len(state["fp8"]) == 9 and all(s["scale"] != 1.0 for _, _, s in state["fp8"])


def test_a_state_dict_of_another_trainer_is_refused_and_changes_nothing(spirals):
    trainer = Trainer("fp16_mixed", SMALL, seed=0)
    before = trainer.state_dict()
    others = {"policy.weight": Trainer("bf16_mixed", SMALL),
              "model.sizes": Trainer("fp16_mixed", MLPConfig(sizes=(2, 8, 8, 3))),
              "optimizer": Trainer("fp16_mixed", SMALL, Adam())}
    for what, other in others.items():
        with pytest.raises(ValueError, match=f"another policy, model or optimizer(.|\n)*{what}"):
            trainer.load_state_dict(other.state_dict())
    state = trainer.state_dict()
    state["stored"][1]["weight"] = state["stored"][1]["weight"][:, :8]
    with pytest.raises(ValueError, match=r"stored\.1\.weight.*\(16, 8\).*\(16, 16\)"):
        trainer.load_state_dict(state)
    with pytest.raises(ValueError, match="missing.*rounding_rng"):
        trainer.load_state_dict({k: v for k, v in before.items() if k != "rounding_rng"})
    with pytest.raises(ValueError, match="without.*loss scaler"):
        trainer.load_state_dict({**before, "scaler": None})
    with pytest.raises(TypeError, match="mapping"):
        trainer.load_state_dict([before])
    _same_state(before, trainer.state_dict())


def test_caster_argument_makes_the_trainers_caster(spirals):
    class Recording(Caster):
        rounds = 0

        def round(self, x, spec, layer, point):
            Recording.rounds += 1
            return super().round(x, spec, layer, point)

    trainer = Trainer("fp16_mixed", SMALL, caster=Recording)
    assert type(trainer.caster) is Recording and trainer.caster.rng is trainer.rounding_rng
    plain = Trainer("fp16_mixed", SMALL)
    x, y = spirals.x_train[:16], spirals.y_train[:16]
    assert trainer.step(x, y)["loss"] == plain.step(x, y)["loss"] and Recording.rounds > 0
    with pytest.raises(TypeError, match="Caster class or a callable"):
        Trainer("fp16_mixed", SMALL, caster=Caster(POLICIES["fp16_mixed"]))
    with pytest.raises(TypeError, match="not a lowprec.nn.Caster"):
        Trainer("fp16_mixed", SMALL, caster=lambda policy, rng, xp: object())
