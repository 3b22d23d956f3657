"""Cast-point statistics against independent references (NumPy's float16 cast, frexp), and
the History's .npz round trip."""
import pathlib

import numpy as np
import pytest

import lowprec
from lowprec import data, observe
from lowprec.nn import CAST_POINTS, Cast, MLPConfig, TrainConfig, train
from lowprec.observe import (HIST_BINS, HIST_MIN_EXP, HIST_SAMPLE, History, Observer,
                             exponent_histogram)
from lowprec.scaling import NonFiniteSource


def _values(rng, n):
    """Magnitudes from 2**-30 to 2**20, both signs, some exact zeros, an inf and a NaN."""
    x = rng.choice([-1, 1], n) * 2.0 ** rng.uniform(-30, 20, n)
    x[::17] = 0
    x[5], x[6] = np.inf, np.nan
    return x.astype(np.float32)


def test_cast_statistics_match_numpy_float16():
    rng = np.random.default_rng(0)
    before = _values(rng, 3000)
    after = lowprec.round(before, "fp16")
    with np.errstate(over="ignore"):
        half = before.astype(np.float16).astype(np.float32)  # NumPy's own, independent cast
    assert np.array_equal(after, half, equal_nan=True)
    obs = Observer(layers=2, points=CAST_POINTS)
    obs.record(1, 3, before, after, Cast("fp16"))
    stats = {k: v[1, 3] for k, v in obs.cast_stats.items()}
    assert stats["count"] == 3000
    assert stats["zeros"] == np.count_nonzero(half == 0)
    assert stats["underflow"] == np.count_nonzero((before != 0) & (half == 0))
    assert stats["subnormal"] == np.count_nonzero((half != 0) & (np.abs(half) < 2.0**-14))
    assert stats["overflow"] == np.count_nonzero(~np.isfinite(half))
    assert np.isnan(obs.amax[1, 3])
    assert obs.cast_stats["count"][0].sum() == 0  # nothing recorded elsewhere


def test_saturating_cast_counts_clamped_values():
    before = np.array([1.0, 500.0, -1e4, 448.0, 0.0], np.float32)
    spec = Cast("e4m3", overflow="saturate")
    after = lowprec.round(before, "e4m3", overflow="saturate")
    obs = Observer(1, CAST_POINTS)
    obs.record(0, 1, before, after, spec)
    assert obs.cast_stats["overflow"][0, 1] == 2  # 500 and -1e4 clamped to +-448
    assert obs.amax[0, 1] == 448.0


def test_exponent_histogram_matches_frexp():
    rng = np.random.default_rng(1)
    x = _values(rng, HIST_SAMPLE)  # small enough to be counted whole
    hist = exponent_histogram(x)
    finite = x[np.isfinite(x) & (x != 0)].astype(np.float64)
    exps = np.frexp(np.abs(finite))[1] - 1  # floor(log2|x|)
    expected = np.bincount(np.clip(exps - HIST_MIN_EXP, 0, HIST_BINS - 1), minlength=HIST_BINS)
    assert np.array_equal(hist, expected)
    assert np.array_equal(exponent_histogram(x.astype(np.float64)), expected)


def test_big_tensors_are_sampled_for_the_histogram_only():
    x = np.full(10 * HIST_SAMPLE, 0.75, np.float32)
    hist = exponent_histogram(x)
    assert hist.sum() <= HIST_SAMPLE and hist[-1 - HIST_MIN_EXP] == hist.sum()  # all in 2**-1
    obs = Observer(1, CAST_POINTS)
    obs.record(0, 0, x, x, None)
    assert obs.cast_stats["count"][0, 0] == x.size  # the counts see every value


def test_update_statistics():
    w = np.array([1.0, 1.0, 1.0, 2.0], np.float32)
    u = np.array([2.0**-12, 2.0**-9, 0.0, 2.0**-12], np.float32)
    # 1 - 2**-12 is a tie between 1 - 2**-11 and 1 (even: 1); 2 - 2**-12 is below half an ulp
    new = lowprec.round(w - u, "fp16")
    obs = Observer(1, CAST_POINTS)
    obs.record_update(0, w, new, u)
    lost = np.count_nonzero((u != 0) & (new.astype(np.float16) == w.astype(np.float16)))
    assert obs.update_stats["update_nonzero"][0] == 3
    assert obs.update_stats["update_lost"][0] == lost == 2
    exact = float((u.astype(np.float64) ** 2).sum())
    assert obs.update_stats["update_sq"][0] == pytest.approx(exact)


def test_history_round_trip_and_helpers(tmp_path):
    spirals = data.spirals(np.random.default_rng(0), points_per_class=40)
    h = train("fp16_pure", spirals, MLPConfig(sizes=(2, 8, 3)),
              TrainConfig(steps=12, batch_size=16, eval_every=6, observe_every=4))
    path = tmp_path / "history.npz"
    h.save(path)
    back = History.load(path)
    for name, value in h.to_arrays().items():
        assert np.array_equal(value, back.to_arrays()[name], equal_nan=name != "meta"), name
    assert back.meta["policy"]["name"] == "fp16_pure"
    f = h.fraction("underflow", "activation_grad", layer=0)
    assert f.shape == (3,) and np.all((0 <= f) & (f <= 1))
    assert h.update_lost_fraction().shape == (3,) and h.update_ratio(0).shape == (3,)
    with pytest.raises(ValueError, match="unknown cast point"):
        h.fraction("zeros", "gradient")
    with pytest.raises(AttributeError, match="no field"):
        h.accuracy
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="not a lowprec History"):
        History.load(tmp_path / "other.npz")


def test_the_culprit_goes_in_and_comes_back_as_a_non_finite_source(tmp_path):
    """record_step takes the step's NonFiniteSource (or None); the saved columns index the cast
    points and ("inf", "nan"), -1 for none; a loaded History gives the same NonFiniteSource."""
    h = History(3, CAST_POINTS)
    fields = {"loss": 1.5, "scale": 8.0, "new_scale": 8.0, "found_inf": False, "skipped": False,
              "growth_tracker": -1, "hysteresis": -1}
    h.record_step(step=1, **fields)
    h.record_step(step=2, culprit=NonFiniteSource(2, "weight_grad", "nan"),
                  **{**fields, "found_inf": True, "skipped": True})
    h.save(tmp_path / "h.npz")
    back = History.load(tmp_path / "h.npz")
    assert back.culprit(0) is None and back.culprit(1) == NonFiniteSource(2, "weight_grad", "nan")
    assert back.culprits() == [(2, 2, "weight_grad", "nan")]
    assert list(back.culprit_layer) == [-1, 2] and list(back.culprit_kind) == [-1, 1]
    assert list(back.culprit_point) == [-1, list(CAST_POINTS).index("weight_grad")]
    with pytest.raises(TypeError, match="NonFiniteSource"):
        h.record_step(step=3, culprit=(2, "weight_grad", "nan"), **fields)
    with pytest.raises(TypeError, match="culprit=NonFiniteSource"):
        h.record_step(step=3, culprit_layer=0, culprit_point=1, culprit_kind=0, **fields)
    with pytest.raises(ValueError, match="unknown cast point 'gradient'"):
        h.record_step(step=3, culprit=NonFiniteSource(0, "gradient"), **fields)


@pytest.mark.parametrize("as_path", [str, pathlib.Path])
def test_history_save_and_load_take_a_path_with_or_without_the_npz_suffix(tmp_path, as_path):
    """save adds .npz to a path without it, as numpy.savez does, and load reads the same file:
    "run" and "run.npz" name one History either way."""
    spirals = data.spirals(np.random.default_rng(0), points_per_class=20)
    h = train("fp32", spirals, MLPConfig(sizes=(2, 4, 3)), TrainConfig(steps=3, batch_size=8))
    for saved, loaded in [("run", "run"), ("run", "run.npz"), ("b.npz", "b"), ("b.npz", "b.npz")]:
        h.save(as_path(tmp_path / saved))
        back = History.load(as_path(tmp_path / loaded))
        for name, value in h.to_arrays().items():
            assert np.array_equal(value, back.to_arrays()[name], equal_nan=name != "meta"), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npz", "run.npz"]


def test_statistics_never_recorded_raise_and_say_how_to_record_them():
    """Observation is off by default (observe_every=0): every statistic accessor refuses with
    the same error, naming the fix, instead of an empty array or NaN; the index columns and
    summary() stay readable."""
    from lowprec.observe import CAST_STATS, FP8_STATS, UPDATE_STATS, NotRecordedError

    assert TrainConfig().observe_every == 0
    spirals = data.spirals(np.random.default_rng(0), points_per_class=40)
    h = train("fp16_mixed", spirals, MLPConfig(sizes=(2, 8, 3)),
              TrainConfig(steps=4, batch_size=16, eval_every=0))
    refused = {
        "fraction": lambda: h.fraction("zeros", "activation_grad"),
        "fraction(layer)": lambda: h.fraction("underflow", "activation_grad", layer=0),
        "pooled": lambda: h.pooled("zeros", "activation_grad"),
        "update_lost_fraction": lambda: h.update_lost_fraction(),
        "update_lost_fraction(layer)": lambda: h.update_lost_fraction(0),
        "update_ratio": lambda: h.update_ratio(0),
        "fp8": lambda: h.fp8("amax", "input", 0),
        **{name: (lambda name=name: getattr(h, name))
           for name in CAST_STATS + ("amax", "exp_hist") + UPDATE_STATS},
        **{f"fp8_{name}": (lambda name=name: getattr(h, f"fp8_{name}")) for name in FP8_STATS},
    }
    for what, ask in refused.items():
        with pytest.raises(NotRecordedError) as error:
            ask()
        message = str(error.value)
        if what.startswith("fp8"):
            assert "no FP8 scaling recipe" in message, what
        else:
            assert ("observation was off" in message
                    and "TrainConfig(observe_every=N)" in message), what
    assert len(h.observed_step) == 0 and len(h.fp8_step) == 0  # how to check first: never refused
    s = h.summary()
    assert s["act_grad_zero"] is None and s["updates_lost"] is None and s["steps"] == 4
    assert "-" in observe.summarize({"run": h}).splitlines()[2]
    # unknown names still get the unknown-name errors, first
    with pytest.raises(ValueError, match="unknown statistic"):
        h.pooled("zero", "activation_grad")
    with pytest.raises(AttributeError, match="no field"):
        h.zero
    # and with observation on, the same accessors answer
    on = train("fp16_mixed", spirals, MLPConfig(sizes=(2, 8, 3)),
               TrainConfig(steps=4, batch_size=16, eval_every=0, observe_every=2))
    assert on.pooled("zeros", "activation_grad").shape == (2,)
    assert on.update_lost_fraction().shape == (2,) and on.exp_hist.shape[0] == 2
