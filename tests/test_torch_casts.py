"""lowprec.round against PyTorch's CPU casts (optional: skipped without torch; CI pins
torch==2.13.0).

Where PyTorch and ml_dtypes disagree, the test says which lowprec policy matches which:

* float8_e4m3fn overflow: PyTorch saturates, finite values and +-inf alike, to +-448 (lowprec
  ``overflow="saturate"``); ml_dtypes gives NaN (lowprec's default for E4M3, ``"nan"``).
* float64 input: PyTorch's CPU casts to float16, bfloat16 and float8 go through float32 and so
  round twice; lowprec rounds once (tested against the exact reference).
"""
import numpy as np
import pytest
from lowprec.reference import round_exact
from test_rounding import assert_same, structured_float32

import lowprec
from lowprec.formats import as_format

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

# lowprec format -> (torch dtype, the overflow policy that matches PyTorch's cast)
TORCH = {
    "fp16": (torch.float16, "inf"),
    "bf16": (torch.bfloat16, "inf"),
    "e4m3": (torch.float8_e4m3fn, "saturate"),
    "e5m2": (torch.float8_e5m2, "inf"),
    "e4m3fnuz": (torch.float8_e4m3fnuz, "nan"),
    "e5m2fnuz": (torch.float8_e5m2fnuz, "nan"),
}


def torch_cast(x, dtype):
    back = torch.float64 if x.dtype == np.float64 else torch.float32
    return torch.from_numpy(x).to(dtype).to(back).numpy()


@pytest.mark.parametrize("name", sorted(TORCH))
def test_float32_equals_torch(name):
    dtype, policy = TORCH[name]
    x = structured_float32(as_format(name))
    assert_same(lowprec.round(x, name, overflow=policy), torch_cast(x, dtype), x)


def test_e4m3_overflow_torch_saturates_ml_dtypes_gives_nan():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.array([464.0, 464.0001, 480.0, 1e6, np.inf, -np.inf, -1e6, np.nan], np.float32)
    theirs_torch = torch_cast(x, torch.float8_e4m3fn)
    theirs_ml = x.astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    assert_same(theirs_torch, [448, 448, 448, 448, 448, -448, -448, np.nan])
    assert_same(lowprec.round(x, "e4m3", overflow="saturate"), theirs_torch)  # PyTorch's policy
    assert_same(lowprec.round(x, "e4m3"), theirs_ml)  # the default: ml_dtypes' policy
    assert_same(theirs_ml, [448, np.nan, np.nan, np.nan, np.nan, -np.nan, -np.nan, np.nan])


@pytest.mark.parametrize("name, value",
                         [("bf16", 1 + 2.0**-8 + 2.0**-30), ("fp16", 1 + 2.0**-11 + 2.0**-40),
                          ("e4m3", 1 + 2.0**-4 + 2.0**-30), ("e5m2", 1 + 2.0**-3 + 2.0**-30)])
def test_float64_torch_rounds_twice_lowprec_once(name, value):
    dtype, policy = TORCH[name]
    x = np.array([value])
    exact = round_exact(value, as_format(name))
    assert lowprec.round(x, name)[0] == exact
    assert torch_cast(x, dtype)[0] == lowprec.round(x.astype(np.float32),
                                                    name)[0] != exact  # via float32


@pytest.mark.parametrize("name", sorted(TORCH))
def test_float64_values_of_float32_equal_torch(name):
    """Where float32 holds the value exactly, PyTorch's one-too-many rounding is harmless."""
    dtype, policy = TORCH[name]
    x = structured_float32(as_format(name), seed=3).astype(np.float64)
    assert_same(lowprec.round(x, name, overflow=policy), torch_cast(x, dtype), x)
