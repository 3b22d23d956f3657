"""block_cast's fast paths: element codes read from the float32 bits against lowprec.encode and
ml_dtypes for every value of every block-scaled element format, both zeros and NaN; the block
amax by halving maxima against NumPy's reductions."""
import ml_dtypes
import numpy as np
import pytest

import lowprec
from lowprec.scaling import block_cast
from lowprec.scaling.block import _element_codes

ML = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2,
      "e3m2": ml_dtypes.float6_e3m2fn, "e2m3": ml_dtypes.float6_e2m3fn,
      "e2m1": ml_dtypes.float4_e2m1fn}


@pytest.mark.parametrize("name", sorted(ML))
def test_codes_of_every_value(name):
    fmt = lowprec.FORMATS[name]
    values = lowprec.all_values(fmt)
    finite = values[np.isfinite(values)].astype(np.float32)
    codes = _element_codes(finite, fmt)
    np.testing.assert_array_equal(codes, lowprec.encode(finite, fmt))
    # ml_dtypes stores the same codes (fp4/fp6 in the low bits of a byte)
    np.testing.assert_array_equal(codes, finite.astype(ML[name]).view(np.uint8))
    nan = np.array([np.nan, -np.nan, 1.0], np.float32)
    expected = lowprec.encode(nan, fmt) if fmt.has_nan else np.array([0, 0, 0], np.uint8)
    if not fmt.has_nan:
        expected[2] = lowprec.encode(np.float32(1.0), fmt)
    np.testing.assert_array_equal(_element_codes(nan, fmt), expected)


@pytest.mark.parametrize("fmt, rule, scale_format, block",
                         [("e4m3", "floor", "e8m0", 32), ("e2m1", "nvfp4", "e4m3", 16),
                          ("e5m2", "fp32", "fp32", (4, 8)), ("e2m3", "rceil", "e8m0", 32)])
def test_block_cast_codes_decode_to_the_elements(fmt, rule, scale_format, block):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, 64)) * np.exp2(rng.integers(-20, 20, (16, 64)))
         ).astype(np.float32)
    x[0, :5] = [0.0, -0.0, np.nan, 1e-30, -1e-30]
    tensor, record = block_cast(x, fmt, block=block, scale_format=scale_format, rule=rule)
    decoded = lowprec.decode(record.element_codes, fmt)
    same = (decoded == tensor.elements) | (np.isnan(decoded) & np.isnan(tensor.elements))
    if not lowprec.FORMATS[fmt].has_nan:  # a NaN element has code 0
        same |= np.isnan(tensor.elements) & (record.element_codes == 0)
    assert same.all()
    np.testing.assert_array_equal(np.signbit(decoded[~np.isnan(decoded)]),
                                  np.signbit(tensor.elements[~np.isnan(decoded)]))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 17, 32, 33, 128])
def test_block_amax_against_numpy(n):
    # the halving maxima of _amax against NumPy's own reductions: NaN propagated (torch.amax)
    # or skipped (fmaxf), -inf and -0.0 blocks, odd block lengths
    from lowprec.scaling.block import _amax
    rng = np.random.default_rng(n)
    b = rng.standard_normal((50, 7, n)).astype(np.float32)
    b[0, 0, 0] = np.nan
    b[1, 1, :] = np.nan
    b[2, 2, -1] = -np.inf
    b[3, 3, :] = -0.0
    mags = np.abs(b)
    propagated = mags.max(-1)
    np.testing.assert_array_equal(_amax(b, True), propagated)
    np.testing.assert_array_equal(_amax(b, False), np.where(np.isnan(mags), 0, mags).max(-1))
    assert not np.signbit(_amax(b, True)[~np.isnan(propagated)]).any()
