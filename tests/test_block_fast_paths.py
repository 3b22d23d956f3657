"""The fast paths of the block quantizer give the same bits as the plain formulas they replace.

* ``ScaledTensor.dequantize`` without a tensor scale multiplies element by block scale in
  float32; checked against the exact product (fractions.Fraction) rounded once to float32 by
  lowprec.reference.round_exact, on elements and scales chosen to hit float32's subnormal range,
  its overflow and its specials.
* ``block._amax`` reduces the magnitudes' bit patterns as integers; checked against NumPy's
  float max (NaN-propagating) and nanmax (NaN-ignoring) on odd and even blocks.
* ``cast_statistics`` counts clipped and flushed values without full-size temporaries; checked
  against the definition written out with NumPy.
"""
import math
import warnings
from fractions import Fraction as Q

import numpy as np
import pytest

from lowprec import round as round_to
from lowprec.formats import E2M1, E4M3, E5M2
from lowprec.reference import round_exact
from lowprec.scaling import ScaledTensor, block_quantize
from lowprec.scaling.block import _amax
from lowprec.scaling.fp8 import cast_statistics


def _adversarial_elements(fmt, rng, shape):
    e = round_to(rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 100.0], shape),
                 fmt, overflow="saturate").astype(np.float32)
    e.flat[:6] = [0.0, -0.0, fmt.max, -fmt.max, 2.0 ** (fmt.emin - fmt.mantissa_bits), np.nan]
    return e


def _adversarial_scales(rng, shape):
    """Powers of two over float32's whole range (subnormal 2**-149 up to 2**127), float32
    values with full significands (some subnormal), and 0, inf, NaN."""
    pow2 = np.exp2(rng.integers(-149, 128, shape).astype(np.float64)).astype(np.float32)
    full = (rng.random(shape) * np.exp2(rng.integers(-149, 128, shape))).astype(np.float32)
    scales = np.where(rng.random(shape) < 0.5, pow2, full).astype(np.float32)
    scales.flat[:5] = [0.0, np.inf, np.nan, np.float32(2.0 ** -149), np.float32(3 * 2.0 ** -148)]
    return scales


def _exact_f32(e: np.float32, s: np.float32) -> float:
    """float32(e * s) from the exact product: Fraction, rounded once by round_exact."""
    if math.isnan(e) or math.isnan(s) or (math.isinf(s) and e == 0):
        return math.nan
    if math.isinf(s):
        return math.copysign(math.inf, float(e) * float(s))
    negative = math.copysign(1.0, float(e)) * math.copysign(1.0, float(s)) < 0
    return round_exact(Q(float(e)) * Q(float(s)), "fp32", negative=negative, overflow="inf")


@pytest.mark.parametrize("fmt", [E4M3, E5M2, E2M1], ids=lambda f: f.name)
def test_dequantize_float32_product_is_the_exact_product_rounded_once(fmt):
    rng = np.random.default_rng(7)
    elements = _adversarial_elements(fmt, rng, (24, 64))
    scales = _adversarial_scales(rng, (24, 4))
    values = ScaledTensor(elements, fmt, block_scales=scales, block_size=16,
                          axis=1).dequantize()
    assert values.dtype == np.float32
    want = np.array([[_exact_f32(elements[i, j], scales[i, j // 16]) for j in range(64)]
                     for i in range(24)], np.float64)
    finite = ~np.isnan(want)
    assert np.array_equal(np.isnan(values), ~finite)
    # Exact values (zero signs included) compared as float32 bit patterns.
    got = values[finite].view(np.uint32)
    assert np.array_equal(got, want[finite].astype(np.float32).view(np.uint32))
    # The values land in float32's subnormal range and overflow: the test reaches both.
    assert np.any((values != 0) & (np.abs(values) < np.finfo(np.float32).tiny))
    assert np.any(np.isinf(values[finite]))


@pytest.mark.parametrize("layout", ["partial", "axis0", "tile"])
def test_dequantize_float32_product_other_layouts(layout):
    rng = np.random.default_rng(8)
    if layout == "partial":  # 50 = 3 whole blocks of 16 and one of 2
        elements = _adversarial_elements(E4M3, rng, (6, 50))
        kw = dict(block_scales=_adversarial_scales(rng, (6, 4)), block_size=16, axis=1)
        scale_of = lambda i, j: kw["block_scales"][i, j // 16]  # noqa: E731
    elif layout == "axis0":
        elements = _adversarial_elements(E4M3, rng, (64, 5))
        kw = dict(block_scales=_adversarial_scales(rng, (2, 5)), block_size=32, axis=0)
        scale_of = lambda i, j: kw["block_scales"][i // 32, j]  # noqa: E731
    else:
        elements = _adversarial_elements(E4M3, rng, (20, 33))
        kw = dict(block_scales=_adversarial_scales(rng, (2, 3)), block_size=(16, 16))
        scale_of = lambda i, j: kw["block_scales"][i // 16, j // 16]  # noqa: E731
    values = ScaledTensor(elements, E4M3, **kw).dequantize()
    m, n = elements.shape
    want = np.array([[_exact_f32(elements[i, j], scale_of(i, j)) for j in range(n)]
                     for i in range(m)], np.float64).astype(np.float32)
    assert np.array_equal(values, want, equal_nan=True)
    number = ~np.isnan(want)  # zero signs too; a NaN's sign bit is not specified
    assert np.array_equal(np.signbit(values[number]), np.signbit(want[number]))


def test_block_quantize_values_match_exact_route():
    """block_quantize's values equal the float64 route of exact_values on MX recipes."""
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((8, 256)) * np.exp2(rng.integers(-140, 120, (8, 1)))).astype(
        np.float32)
    x[0, 3], x[1, 40], x[2, 7] = np.nan, np.inf, 1e-45
    for rule in ("floor", "rceil", "floor_torchao", "rceil_torchao", "rceil_te"):
        values, record = block_quantize(x, "e4m3", block=32, scale_format="e8m0", rule=rule)
        exact = record.tensor.exact_values()
        with np.errstate(over="ignore"):
            want = exact.astype(np.float32)
        assert np.array_equal(values.view(np.uint32)[~np.isnan(values)],
                              want.view(np.uint32)[~np.isnan(want)]), rule
        assert np.array_equal(np.isnan(values), np.isnan(want)), rule


@pytest.mark.parametrize("shape", [(7, 32), (3, 5, 16), (4, 1), (2, 3, 6), (5, 7), (3, 0),
                                   (2, 12), (3, 128)])
def test_amax_matches_numpy(shape):
    rng = np.random.default_rng(10)
    x = (rng.standard_normal(shape) * np.exp2(rng.integers(-149, 120, shape))).astype(np.float32)
    if x.size > 4:
        x.flat[1], x.flat[3], x.flat[-1] = np.nan, -np.inf, np.nan
    if shape == (3, 128):
        x[2] = np.nan  # an all-NaN block: NaN-ignoring amax is 0 (fmaxf over nothing)
    for view in (x, np.moveaxis(x, 0, -1)):
        if view.shape[-1] == 0:
            assert np.array_equal(_amax(view, True), np.zeros(view.shape[:-1], np.float32))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmax of an all-NaN block
            ignoring = np.nanmax(np.abs(view), axis=-1)
        ignoring = np.where(np.isnan(ignoring), np.float32(0), ignoring)
        got = _amax(view, True)
        assert got.dtype == np.float32
        assert np.array_equal(got, np.max(np.abs(view), axis=-1), equal_nan=True)
        assert np.array_equal(_amax(view, False), ignoring)


@pytest.mark.parametrize("zeros", [0.0, 0.5, 1.0])
def test_cast_statistics_match_definition(zeros):
    """Few zeros in the output (gathered) and many (one pass): both give the definition."""
    rng = np.random.default_rng(11)
    x32 = (rng.standard_normal(4000) * 100).astype(np.float32)
    x32[rng.random(4000) < zeros] = 0.0
    x32[:6] = [np.nan, np.inf, -np.inf, 1e-30, -1e-30, 0.0]
    scaled = x32 * np.float32(4)
    with np.errstate(invalid="ignore"):
        out = np.clip(np.where(np.abs(scaled) < 1, 0, scaled), -448, 448).astype(np.float32)
    out[1] = 0.0  # an infinite input read as 0 is not a flushed value
    clipped, flushed = cast_statistics(x32, scaled, out, E4M3)
    assert clipped == np.count_nonzero(np.abs(scaled) > 448) / x32.size
    assert flushed == np.count_nonzero((out == 0) & (x32 != 0) & np.isfinite(x32)) / x32.size
    assert clipped > 0 and flushed > 0


@pytest.mark.parametrize("scales_kind", ["e4m3", "full", "tiny"])
def test_dequantize_with_tensor_scale_is_the_exact_product_rounded_once(scales_kind):
    """NVFP4's two levels: element * block scale * tensor scale, rounded once to float32,
    whether the float32 route applies (E4M3 block scales) or not (full float32 significands,
    or block scales so small that element * scale would leave float32's normal range)."""
    rng = np.random.default_rng(12)
    elements = _adversarial_elements(E2M1, rng, (16, 64))
    if scales_kind == "e4m3":
        scales = round_to(rng.random((16, 4)) * 448, E4M3).astype(np.float32)
        scales[0, 0] = 0.0
    elif scales_kind == "full":
        scales = (rng.random((16, 4)) * 448).astype(np.float32)
    else:
        scales = np.exp2(rng.integers(-130, -120, (16, 4)).astype(np.float64)).astype(np.float32)
    tensor_scales = [np.float32(2.0 ** -149), np.float32(1 / 3), np.float32(3e37)]
    for t in tensor_scales:
        st = ScaledTensor(elements, E2M1, block_scales=scales, block_size=16, axis=1,
                          tensor_scale=float(t))
        values = st.dequantize()
        want = np.full(elements.shape, np.nan)
        for (r, c), e in np.ndenumerate(elements):
            if not np.isnan(e):  # the exact three-factor product, rounded once
                q = Q(float(e)) * Q(float(scales[r, c // 16])) * Q(float(t))
                want[r, c] = round_exact(q, "fp32", negative=bool(np.signbit(e)),
                                         overflow="inf")
        number = ~np.isnan(want)
        assert np.array_equal(np.isnan(values), ~number)
        assert np.array_equal(values[number].view(np.uint32),
                              want[number].astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "e3m2", "e2m3", "e2m1"])
@pytest.mark.parametrize("mode", ["nearest", "toward_zero", "up", "down", "nearest_away", "odd"])
def test_round_elements_saturates_like_clamping_first(fmt, mode):
    """Elements saturate (CUDA __NV_SATFINITE): +-inf and everything beyond +-max read +-max,
    in every mode; checked against round_exact of the value clamped to [-max, max]."""
    from lowprec.formats import as_format
    from lowprec.rounding import as_mode
    from lowprec.scaling.block import _round_elements

    f = as_format(fmt)
    rng = np.random.default_rng(13)
    top = np.float32(f.max)
    x = np.concatenate([[np.inf, -np.inf, top, -top, np.nextafter(top, np.float32(np.inf))],
                        rng.standard_normal(200) * f.max * 1.5]).astype(np.float32)
    got = _round_elements(x, f, as_mode(mode), None)
    want = [round_exact(Q(float(np.clip(v, -top, top))), f, mode, negative=bool(v < 0),
                        overflow="saturate") for v in x]
    assert np.array_equal(got, np.array(want, np.float32))
