"""Stochastic rounding with given random bits (round_with_bits) and the PTX cvt.rs model.

The reference here is written in the test: integer arithmetic on the float32 bit pattern (the
significand as an integer, the random bits added just below the target's last kept bit, then
truncation), plus the exact rational reference of lowprec.reference for the directed modes and
ml_dtypes for the codes of every format.
"""
import dataclasses
import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from lowprec import reference
from lowprec.cvt_rs import CVT_RS, RBITS_LAYOUT_CANDIDATES, cvt_rs, element_rbits
from lowprec.formats import as_format
from lowprec.rounding import round_with_bits

FORMATS = ["fp16", "bf16", "tf32", "e4m3", "e5m2", "e2m3", "e3m2", "e2m1"]
ML_DTYPES = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16, "e4m3": ml_dtypes.float8_e4m3fn,
             "e5m2": ml_dtypes.float8_e5m2, "e2m3": ml_dtypes.float6_e2m3fn,
             "e3m2": ml_dtypes.float6_e3m2fn, "e2m1": ml_dtypes.float4_e2m1fn}


def reference_round(x32: np.float32, fmt, r: int, k: int, saturate: bool) -> float:
    """Round the float32 ``x32`` to ``fmt`` adding the k-bit ``r`` below the cut: integers only."""
    u = int(np.float32(x32).view(np.uint32))
    negative, field, mantissa = u >> 31, (u >> 23) & 0xFF, u & 0x7FFFFF
    if field == 0xFF:
        if mantissa:
            return math.nan
        mag = fmt.max if saturate else math.inf
        return -mag if negative else mag
    sig, e = (mantissa, -149) if field == 0 else (mantissa | 1 << 23, field - 150)
    if sig == 0:
        return -0.0 if negative else 0.0
    top = e + sig.bit_length() - 1  # the exponent of the leading bit
    qe = max(top, fmt.emin) - fmt.mantissa_bits  # the weight of the last bit the target keeps
    shift = qe - e
    if shift <= 0:
        kept, scale = sig, e  # exact in the target
    else:
        # sig * 2**k, with r in the k bits just below the cut, truncated at the cut
        kept, scale = ((sig << k) + (r << shift)) >> (shift + k), qe
    mag = kept * Fraction(2) ** scale
    if mag > Fraction(fmt.max):
        mag = Fraction(fmt.max) if saturate else None
    value = (math.inf if fmt.has_inf else math.nan) if mag is None else float(mag)
    return -value if negative else value


def random_float32(rng, n, fmt):
    """float32 values spread over the format's range, its subnormals and just past its max."""
    lo, hi = math.log2(fmt.smallest_subnormal) - 2, math.log2(fmt.max) + 1
    mags = np.exp2(rng.uniform(lo, hi, n)) * rng.uniform(1, 2, n)
    mags = np.minimum(mags, np.finfo(np.float32).max)
    return (mags * rng.choice([-1, 1], n)).astype(np.float32)


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("k", [8, 13, 16])
def test_matches_the_integer_reference(name, k):
    fmt = as_format(name)
    rng = np.random.default_rng(k)
    x = random_float32(rng, 600, fmt)
    r = rng.integers(0, 2**k, x.size)
    for saturate in (False, True):
        overflow = "saturate" if saturate else None
        if not saturate and not fmt.has_inf and not fmt.has_nan:
            continue  # (the default of a finite-only format is already saturate)
        got = round_with_bits(x, fmt, r, bits=k, overflow=overflow)
        want = [reference_round(v, fmt, int(ri), k, saturate or fmt.default_overflow ==
                                "saturate") for v, ri in zip(x, r)]
        np.testing.assert_array_equal(got, np.array(want, got.dtype), err_msg=f"{name} k={k}")


@pytest.mark.parametrize("name", FORMATS)
def test_float64_inputs_match_the_rational_reference(name):
    """float64 inputs (more bits than any random source covers) against lowprec.reference's
    exact k-bit rule: away iff rbits + floor(f * 2**k) >= 2**k."""
    fmt = as_format(name)
    rng = np.random.default_rng(7)
    x = random_float32(rng, 300, fmt).astype(np.float64) * (1 + rng.uniform(0, 2**-20, 300))
    for k in (1, 8, 13, 40):
        r = rng.integers(0, 2**k, x.size, dtype=np.uint64)
        got = round_with_bits(x, fmt, r, bits=k, overflow="saturate")
        want = [reference.round_exact(float(v), fmt, "stochastic", random_int=int(ri),
                                      random_bits=k, overflow="saturate") for v, ri in zip(x, r)]
        np.testing.assert_array_equal(got, want, err_msg=f"{name} k={k}")


def test_bf16_is_the_float32_bit_pattern_plus_rbits_truncated():
    # the whole model in one line for normal BF16 results: (bits(x) + r) >> 16
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(20000) * np.exp2(rng.integers(-100, 100, 20000))).astype(np.float32)
    r = rng.integers(0, 2**16, x.size).astype(np.uint32)
    summed = ((x.view(np.uint32) & np.uint32(0x7FFFFFFF)) + r) >> np.uint32(16) << np.uint32(16)
    want = (summed | (x.view(np.uint32) & np.uint32(0x80000000))).view(np.float32)
    np.testing.assert_array_equal(round_with_bits(x, "bf16", r, bits=16), want)


def test_fp16_normal_results_are_the_13_dropped_bits_plus_rbits():
    rng = np.random.default_rng(2)
    x = (rng.uniform(1, 2, 5000) * np.exp2(rng.integers(-14, 15, 5000))).astype(np.float32)
    r = rng.integers(0, 2**13, x.size).astype(np.uint32)
    want = ((x.view(np.uint32) + r) >> np.uint32(13) << np.uint32(13)).view(np.float32)
    np.testing.assert_array_equal(round_with_bits(x, "fp16", r, bits=13), want)


@pytest.mark.parametrize("name, k", [("fp16", 13), ("bf16", 16), ("e4m3", 8), ("e5m2", 8),
                                     ("e2m3", 8), ("e3m2", 8), ("e2m1", 8)])
def test_rbits_zero_truncates_and_all_ones_rounds_away(name, k):
    """rbits = 0 is round toward zero; rbits = 2**k - 1 rounds away every input whose discarded
    part is at least 2**-k of a quantum (exact rational reference, lowprec.reference)."""
    fmt = as_format(name)
    rng = np.random.default_rng(3)
    x = random_float32(rng, 300, fmt)
    x = x[np.abs(x) <= fmt.max]
    down = round_with_bits(x, fmt, 0, bits=k)
    up = round_with_bits(x, fmt, 2**k - 1, bits=k)
    for v, d, u in zip(x, down, up):
        assert d == reference.round_exact(float(v), fmt, "toward_zero"), v
        away = reference.round_exact(float(v), fmt, "up" if v > 0 else "down")
        toward = reference.round_exact(float(v), fmt, "toward_zero")
        ulp = abs(away - toward)
        big_enough = ulp == 0 or abs(float(v) - toward) >= ulp * 2.0**-k
        assert u == (away if big_enough else toward), (v, u, away)


@pytest.mark.parametrize("name", FORMATS)
def test_representable_inputs_never_move(name):
    fmt = as_format(name)
    if name in ML_DTYPES:  # every code of the format, decoded by ml_dtypes
        store = np.uint16 if fmt.bits == 16 else np.uint8
        values = np.arange(2**fmt.bits).astype(store).view(ML_DTYPES[name]).astype(np.float32)
    else:  # tf32: float32 values with the low 13 mantissa bits zero
        values = (np.random.default_rng(4).integers(0, 2**19, 5000).astype(np.uint32)
                  << np.uint32(13)).view(np.float32)
    values = values[np.isfinite(values)]
    for r in (0, 1, 2**8 - 1):
        np.testing.assert_array_equal(round_with_bits(values, fmt, r, bits=8), values)


@pytest.mark.parametrize("name, k", [("fp16", 13), ("bf16", 16), ("e4m3", 8), ("e2m1", 8),
                                     ("e3m2", 8)])
def test_unbiased_over_all_random_values(name, k):
    """The mean over every one of the 2**k values of rbits is x itself when x's discarded part
    has at most k bits, and x truncated to k bits below the cut otherwise (exact fractions)."""
    fmt = as_format(name)
    r = np.arange(2**k)
    rng = np.random.default_rng(5)
    for x in random_float32(rng, 12, fmt):
        if abs(x) > fmt.max:
            continue
        mean = sum(Fraction(float(v)) for v in round_with_bits(np.full(r.size, x), fmt, r,
                                                               bits=k)) / 2**k
        toward = Fraction(reference.round_exact(float(x), fmt, "toward_zero"))
        away = Fraction(reference.round_exact(float(x), fmt, "up" if x > 0 else "down"))
        if away == toward:
            assert mean == Fraction(float(x))
            continue
        f = (Fraction(float(x)) - toward) / (away - toward)  # fraction of a quantum, in [0, 1)
        assert mean == toward + (away - toward) * Fraction(math.floor(f * 2**k), 2**k), x
        if (f * 2**k).denominator == 1:
            assert mean == Fraction(float(x))  # unbiased


def test_subnormal_results_keep_their_probability():
    # 3/4 of FP16's smallest subnormal: rounds to 2**-24 for exactly 3/4 of the 8192 values
    x = np.float32(0.75 * 2.0**-24)
    got = round_with_bits(np.full(8192, x), "fp16", np.arange(8192), bits=13)
    assert set(got.tolist()) == {0.0, 2.0**-24}
    assert (got == 2.0**-24).sum() == 6144
    # ... and in E4M3 (smallest subnormal 2**-9): 0.3 of it rounds up for 76 of 256 (floor)
    x = np.float32(0.3 * 2.0**-9)
    got = round_with_bits(np.full(256, x), "e4m3", np.arange(256), bits=8)
    assert (got == 2.0**-9).sum() == math.floor(float(Fraction(float(x)) / Fraction(2.0**-9))
                                                * 256)
    assert round_with_bits(x, "e4m3", 255, bits=8, subnormals=False) == 0.0


def test_specials_and_signed_zero():
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0], np.float32)
    got = round_with_bits(x, "fp16", 8191, bits=13)
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == -np.inf
    assert np.signbit(got[3]) and not np.signbit(got[4])
    sat = round_with_bits(np.float32(65520.0), "fp16", 8191, bits=13, overflow="saturate")
    assert sat == 65504.0
    with pytest.raises(ValueError, match="no NaN"):
        round_with_bits(np.float32(np.nan), "e2m1", 0, bits=8)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="bits must be"):
        round_with_bits(1.0, "fp16", 0, bits=0)
    with pytest.raises(ValueError, match="rbits must lie"):
        round_with_bits(1.0, "fp16", 2**13, bits=13)
    with pytest.raises(ValueError, match="rbits must lie"):
        round_with_bits(1.0, "fp16", -1, bits=13)
    with pytest.raises(TypeError, match="rbits must be integers"):
        round_with_bits(1.0, "fp16", 0.5, bits=13)
    with pytest.raises(ValueError, match="broadcast"):
        round_with_bits(np.ones(3), "fp16", np.zeros(2, int), bits=13)


# --- the packed PTX instruction -----------------------------------------------------------------

def codes_by_ml_dtypes(values, name):
    dtype = ML_DTYPES[name]
    store = np.uint16 if name in ("fp16", "bf16") else np.uint8
    return np.asarray(values, np.float32).astype(dtype).view(store).astype(np.uint32)


@pytest.mark.parametrize("dtype", sorted(CVT_RS))
def test_cvt_rs_packs_each_lane_from_its_random_bits(dtype):
    instr = CVT_RS[dtype]
    name = instr.fmt.name
    rng = np.random.default_rng(6)
    n = 400
    ops = [random_float32(rng, n, instr.fmt) for _ in range(instr.lanes)]
    rbits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    d = cvt_rs(dtype, ops, rbits)
    assert d.dtype == (np.uint16 if dtype == "e2m1x4" else np.uint32)
    width = instr.field_bits
    for lane, (x, (shift, k)) in enumerate(zip(ops, instr.rbits_fields)):
        r = (rbits.astype(np.uint64) >> np.uint64(shift)) & np.uint64(2**k - 1)
        want = [reference_round(v, instr.fmt, int(ri), k, True) for v, ri in zip(x, r)]
        field = (d.astype(np.uint32) >> np.uint32(width * (instr.lanes - 1 - lane))) \
            & np.uint32(2**width - 1)
        np.testing.assert_array_equal(field, codes_by_ml_dtypes(want, name), err_msg=str(lane))


def test_cvt_rs_random_bit_layouts():
    # f16x2: 13 low bits of each half; the three bits above them are ignored
    a, b = element_rbits("f16x2", 0xFFFF0000)
    assert (int(a), int(b)) == (0x1FFF, 0)
    one = np.float32(1 + 2.0**-11)  # half an FP16 ulp above 1
    assert cvt_rs("f16x2", (one, one), 0xE000E000) == cvt_rs("f16x2", (one, one), 0)
    assert cvt_rs("f16x2", (one, one), 0x10000000) == 0x3C013C00  # only a's bit 12 set
    assert [int(v) for v in element_rbits("bf16x2", 0x12345678)] == [0x1234, 0x5678]
    assert [int(v) for v in element_rbits("e4m3x4", 0x12345678)] == [0x12, 0x34, 0x56, 0x78]
    assert [int(v) for v in element_rbits("e2m1x4", 0x12345678)] == [0x12, 0x56, 0x34, 0x78]
    shared = dataclasses.replace(CVT_RS["e4m3x4"],
                                 rbits_fields=RBITS_LAYOUT_CANDIDATES["pair_shares_16"])
    assert [int(v) for v in element_rbits(shared, 0x12345678)] == [0x1234, 0x1234, 0x5678, 0x5678]


def test_cvt_rs_satfinite_nan_relu():
    inf, nan = np.float32(np.inf), np.float32(np.nan)
    assert cvt_rs("f16x2", (inf, -inf), 0) == 0x7BFFFBFF  # +-65504
    assert cvt_rs("f16x2", (inf, nan), 0, satfinite=False) == 0x7C007FFF
    assert cvt_rs("f16x2", (np.float32(65520), np.float32(65520)), 0x1FFF0000,
                  satfinite=False) == 0x7C007BFF  # a carries past max: inf; b truncates
    assert cvt_rs("bf16x2", (nan, -nan), 0) == 0x7FFF7FFF
    assert cvt_rs("e4m3x4", (np.float32(1e6), -inf, nan, np.float32(464)), 0) == 0x7EFE7F7E
    assert cvt_rs("e5m2x4", (inf, nan, np.float32(-1e9), np.float32(0)), 0xFFFFFFFF) == 0x7B7FFB00
    assert cvt_rs("e2m1x4", (np.float32(100), -inf, np.float32(6.5), np.float32(-0.0)), 0) \
        == 0x7F78
    assert cvt_rs("bf16x2", (np.float32(-1.5), np.float32(-0.0)), 0, relu=True) == 0
    assert cvt_rs("bf16x2", (nan, np.float32(2)), 0, relu=True) == 0x7FFF4000
    with pytest.raises(ValueError, match="no NaN"):
        cvt_rs("e2m1x4", (nan, 0, 0, 0), 0)


def test_cvt_rs_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown cvt.rs destination type"):
        cvt_rs("e4m3x2", (1, 2), 0)
    with pytest.raises(ValueError, match="takes 4 operands"):
        cvt_rs("e4m3x4", (1, 2), 0)
    with pytest.raises(ValueError, match="requires .satfinite"):
        cvt_rs("e4m3x4", (1, 2, 3, 4), 0, satfinite=False)
    with pytest.raises(ValueError, match="not float32 values"):
        cvt_rs("bf16x2", (0.1, 1.0), 0)
    with pytest.raises(ValueError, match="0..2\\*\\*32"):
        cvt_rs("bf16x2", (1.0, 1.0), 2**32)
