"""Checkpoints: a run saved mid-way and resumed ends bit-identical to the uninterrupted run;
a corrupt or mismatched checkpoint is refused with a clear error."""
import numpy as np
import pytest

from lowprec import data
from lowprec import POLICIES as PRESET_POLICIES
from lowprec.nn import Adam, CheckpointError, MLPConfig, TrainConfig, train
from lowprec.scaling import StaticLossScaler

SMALL = MLPConfig(sizes=(2, 16, 16, 3))
CONFIG = TrainConfig(steps=24, batch_size=32, eval_every=7, observe_every=5, checkpoint_every=6)
POLICIES = {
    # dynamic loss scaler state, FP32 master weights and momentum
    "fp16_mixed": PRESET_POLICIES["fp16_mixed"],
    # stochastic rounding: the RNG state must survive the checkpoint
    "fp16_sr": PRESET_POLICIES["fp16_pure"].replace(name="fp16_sr", update="stochastic"),
    # the Kahan compensation buffers must survive too
    "bf16_kahan": PRESET_POLICIES["fp16_pure"].replace(name="bf16_kahan", weight="bf16",
                                                       update="kahan"),
}


@pytest.fixture(scope="module")
def spirals():
    return data.spirals(np.random.default_rng(0), points_per_class=60)


def _assert_same(a, b):
    arrays_a, arrays_b = a.to_arrays(), b.to_arrays()
    for name in arrays_a:
        assert np.array_equal(arrays_a[name], arrays_b[name], equal_nan=name != "meta"), name


@pytest.mark.parametrize("name", list(POLICIES))
def test_resumed_run_is_bit_identical(spirals, tmp_path, name):
    policy = POLICIES[name]
    whole = train(policy, spirals, SMALL, CONFIG)
    path = tmp_path / "run.npz"
    first_part = train(policy, spirals, SMALL, CONFIG, checkpoint=path, stop_after=13)
    assert len(first_part) == 13
    resumed = train(policy, spirals, SMALL, CONFIG, resume=path)
    assert len(resumed) == 24
    _assert_same(whole, resumed)


def test_adam_state_survives(spirals, tmp_path):
    config = TrainConfig(**{**CONFIG.__dict__, "optimizer": Adam(lr=0.01)})
    whole = train("bf16_mixed", spirals, SMALL, config)
    train("bf16_mixed", spirals, SMALL, config, checkpoint=tmp_path / "a.npz", stop_after=10)
    _assert_same(whole, train("bf16_mixed", spirals, SMALL, config, resume=tmp_path / "a.npz"))


@pytest.fixture()
def saved(spirals, tmp_path):
    path = tmp_path / "run.npz"
    train("fp16_mixed", spirals, SMALL, CONFIG, checkpoint=path, stop_after=6)
    return path


def test_corrupt_checkpoint_is_refused_never_silently_different(spirals, saved):
    """A flipped byte either raises CheckpointError or (when it hit zip metadata that no value
    depends on, e.g. a timestamp) resumes exactly the uninterrupted run."""
    whole = train("fp16_mixed", spirals, SMALL, CONFIG)
    raw = saved.read_bytes()
    refused = 0
    for where in range(7, len(raw), len(raw) // 23):
        broken = bytearray(raw)
        broken[where] ^= 0xFF
        saved.write_bytes(bytes(broken))
        try:
            resumed = train("fp16_mixed", spirals, SMALL, CONFIG, resume=saved)
        except CheckpointError:
            refused += 1
        else:
            _assert_same(whole, resumed)
    assert refused >= 12  # most bytes are data; 17 of 24 flips were refused when written
    saved.write_bytes(raw[: len(raw) // 3])  # truncated
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        train("fp16_mixed", spirals, SMALL, CONFIG, resume=saved)


def test_checkpoint_of_another_run_is_refused(spirals, saved):
    with pytest.raises(CheckpointError, match="policy"):
        train("bf16_mixed", spirals, SMALL, CONFIG, resume=saved)
    with pytest.raises(CheckpointError, match="seed"):
        train("fp16_mixed", spirals, SMALL, TrainConfig(**{**CONFIG.__dict__, "seed": 5}),
              resume=saved)
    other_data = data.spirals(np.random.default_rng(1), points_per_class=60)
    with pytest.raises(CheckpointError, match="data"):
        train("fp16_mixed", other_data, SMALL, CONFIG, resume=saved)


def test_not_a_checkpoint(spirals, tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a lowprec checkpoint"):
        train("fp16_mixed", spirals, SMALL, CONFIG, resume=path)


def test_a_checkpoint_whose_state_does_not_fit_the_trainer_is_refused(spirals, saved):
    """Same run fingerprint, but a scaler passed in that cannot take the saved GradScaler state:
    the trainer's load_state_dict refuses it and the error names the file."""
    with pytest.raises(CheckpointError, match=r"run\.npz: .*unknown state keys"):
        train("fp16_mixed", spirals, SMALL, CONFIG, scaler=StaticLossScaler(8.0), resume=saved)
