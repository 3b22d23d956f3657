"""How often rounding float64 through float32 gives the wrong low-precision value, measured on
4M standard-normal float64 values (seed 0): the numbers the README quotes.

PyTorch's CPU casts (2.13) and ml_dtypes before 0.7 go through float32; ml_dtypes 0.7 and
NumPy's float16 cast round once, as lowprec does. Each disagreement is checked against the
exact reference and explained by the float32 detour.
"""
import ml_dtypes
import numpy as np
import pytest
from lowprec.reference import round_exact
from versions import ML_DTYPES_ROUNDS_FLOAT64_TWICE

import lowprec

N = 4_000_000


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal(N)


def disagreements(x, name, theirs):
    """Where ``theirs`` differs from lowprec; asserts lowprec is exact there and ``theirs`` is
    the float32 detour's result. Returns their number."""
    ours = lowprec.round(x, name)
    bad = np.flatnonzero(ours != theirs)
    fmt = lowprec.as_format(name)
    for i in bad[:50]:
        assert ours[i] == round_exact(float(x[i]), fmt)
    np.testing.assert_array_equal(theirs[bad], lowprec.round(x[bad].astype(np.float32), name))
    return bad.size


@pytest.mark.parametrize("name, dtype",
                         [("bf16", ml_dtypes.bfloat16), ("e4m3", ml_dtypes.float8_e4m3fn)])
def test_ml_dtypes_rounds_float64_once_from_0_7(x, name, dtype):
    count = disagreements(x, name, x.astype(dtype).astype(np.float64))
    print(f"ml_dtypes {ml_dtypes.__version__}, {name}: {count} of {N} float64 values "
          "double-rounded")
    if ML_DTYPES_ROUNDS_FLOAT64_TWICE:
        assert count == {"bf16": 35, "e4m3": 1}[name]  # measured with 0.5.0 and 0.6.0
    else:
        assert count == 0


def test_numpy_float16_rounds_once(x):
    assert disagreements(x, "fp16", x.astype(np.float16).astype(np.float64)) == 0


@pytest.mark.torch
@pytest.mark.parametrize("name, expected", [("fp16", 225), ("bf16", 35), ("e4m3", 1)])
def test_torch_cpu_casts_round_float64_twice(x, name, expected):
    torch = pytest.importorskip("torch")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "e4m3": torch.float8_e4m3fn}[name]
    theirs = torch.from_numpy(x).to(dtype).to(torch.float64).numpy()
    count = disagreements(x, name, theirs)
    print(f"torch {torch.__version__}, {name}: {count} of {N} float64 values double-rounded")
    assert count == expected
