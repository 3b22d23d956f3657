"""lowprec.round against outside references: ml_dtypes, NumPy, exact rationals
(lowprec.reference), gfloat.

The float32 sample here is dense and structured (every binade, every value of the format, every
tie with its float32 neighbours, the boundaries); tests/test_rounding_exhaustive.py walks all
2**32 float32 inputs.
"""
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from versions import (ML_DTYPES_E8M0_SUBNORMAL_QUIRK, ML_DTYPES_E8M0_TIES,
                      ML_DTYPES_ROUNDS_FLOAT64_TWICE)

import lowprec
from lowprec import _bitwords, _fastpaths, arith, bits, rounding, tensorcore
from lowprec._bitwords import RandomSource
from lowprec.formats import FORMATS, FloatFormat, as_format
from lowprec.reference import round_exact
from lowprec.rounding import RoundingMode
from lowprec.scaling import CurrentScaling, quantize

TWINS = {
    "fp16": np.float16, "bf16": ml_dtypes.bfloat16, "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2, "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "e5m2fnuz": ml_dtypes.float8_e5m2fnuz, "e3m2": ml_dtypes.float6_e3m2fn,
    "e2m3": ml_dtypes.float6_e2m3fn, "e2m1": ml_dtypes.float4_e2m1fn,
}
PRESETS = list(FORMATS.values())
DETERMINISTIC = ["nearest", "nearest_away", "toward_zero", "up", "down", "odd"]
CUSTOM = [FloatFormat("e3m4", 3, 4), FloatFormat("e6m9", 6, 9),
          FloatFormat("e5m7fn", 5, 7, specials="fn"),
          FloatFormat("e4m3b11", 4, 3, bias=11, specials="fnuz"), FloatFormat("e2m0", 2, 0),
          FloatFormat("e3m3", 3, 3, specials="finite"), FloatFormat("e9m4", 9, 4),
          FloatFormat("e11m40", 11, 40)]
# Exponent ranges at the edges of the fast paths' scalings: emin above 1 (g; w beyond float32),
# max below 1 with NaN on overflow (h, h2).
RANGE_EDGES = [FloatFormat("g", 4, 3, bias=-1), FloatFormat("w", 9, 20, bias=-200),
               FloatFormat("h", 4, 3, bias=16, specials="fn"),
               FloatFormat("h2", 5, 2, bias=40, specials="fnuz")]
CUSTOM += RANGE_EDGES


@np.errstate(invalid="ignore")  # (signalling NaNs among the float32 inputs)
def same(a, b):
    """Equal values with equal signs (-0 != +0), NaN equal to NaN; arrays of any float dtype."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return ((a == b) & (np.signbit(a) == np.signbit(b))) | (np.isnan(a) & np.isnan(b))


def assert_same(ours, theirs, x=None):
    ok = same(ours, theirs)
    if not ok.all():
        i = np.flatnonzero(~ok)[:5]
        where = f" at x={np.asarray(x).ravel()[i]!r}" if x is not None else ""
        raise AssertionError(f"{(~ok).sum()} mismatches{where}: ours {np.ravel(ours)[i]!r}, "
                             f"theirs {np.ravel(theirs)[i]!r}")


def twin_cast(x, dtype):
    with np.errstate(all="ignore"):
        return x.astype(dtype).astype(np.float32)


def with_neighbours(v, dtype=np.float32):
    v = np.asarray(v, dtype)
    with np.errstate(all="ignore"):
        return np.concatenate([v, np.nextafter(v, dtype(np.inf)), np.nextafter(v, dtype(-np.inf))])


def format_values(fmt):
    """The format's finite non-negative values (all of them up to 16 bits, a sample beyond)."""
    if fmt.bits <= 16:
        v = lowprec.all_values(fmt)
    else:
        v = np.ldexp(1 + np.arange(64) / 64, np.arange(fmt.emin, fmt.emax + 1)[:, None]).ravel()
        v = np.concatenate([v, np.arange(1, 64) * fmt.smallest_subnormal])
    return np.unique(v[np.isfinite(v) & (v >= 0)])


def structured_float32(fmt, seed=1234):
    """Every float32 binade; each value of ``fmt``, each tie and the boundaries, with their float32
    neighbours; both signs; inf, NaN."""
    rng = np.random.default_rng(seed)
    fields = np.repeat(np.arange(255, dtype=np.uint32), 12)
    mantissas = rng.integers(0, 2**23, fields.size, dtype=np.uint32)
    mantissas[::12], mantissas[1::12] = 0, 2**23 - 1
    binades = ((fields << np.uint32(23)) | mantissas).view(np.float32)
    v = format_values(fmt)
    ties = (v[:-1] + v[1:]) / 2
    top_quantum = 2.0 ** (fmt.emax - fmt.mantissa_bits)
    boundaries = [fmt.max, fmt.max + top_quantum / 2, fmt.max + top_quantum, 2.0 ** (fmt.emax + 1),
                  fmt.smallest_subnormal, fmt.smallest_subnormal / 2, fmt.smallest_subnormal * 1.5,
                  fmt.tiny, fmt.tiny - fmt.smallest_subnormal / 2, 0.0]
    with np.errstate(over="ignore"):
        points = np.concatenate([v, ties, boundaries]).astype(np.float32)
    x = np.concatenate([binades, with_neighbours(points), np.array([np.inf, np.nan], np.float32)])
    return np.concatenate([x, -x])


# --- float32 inputs against ml_dtypes and NumPy ---------------------------------------------
@pytest.mark.parametrize("name", sorted(TWINS))
def test_float32_equals_twin(name):
    fmt = as_format(name)
    x = structured_float32(fmt)
    if not fmt.has_nan:
        x = x[~np.isnan(x)]  # lowprec refuses NaN there (test_nan_into_a_format_without_nan)
    ours = lowprec.round(x, fmt)
    assert ours.dtype == np.float32
    assert_same(ours, twin_cast(x, TWINS[name]), x)


@pytest.mark.parametrize("name", sorted(TWINS))
def test_float64_input_of_float32_values_equals_twin(name):
    """A float32 value widened to float64 rounds the same (no double rounding is possible)."""
    fmt = as_format(name)
    x = structured_float32(fmt, seed=99)
    x = x[~np.isnan(x)]
    ours = lowprec.round(x.astype(np.float64), fmt)
    assert ours.dtype == np.float64
    assert_same(ours, twin_cast(x, TWINS[name]), x)


def test_e8m0_against_ml_dtypes():
    """ml_dtypes >= 0.5.1 rounds E8M0 ties up (our nearest_away), 0.5.0 to the even code (our
    nearest, as gfloat); lowprec's nearest ties to the even code.

    One more difference before ml_dtypes 0.7: float32 subnormal inputs in (2**-127, 1.5 * 2**-127]
    went to 2**-126 although 2**-127 is nearer (or, at the tie, has the even code); 0.7 gives
    2**-127 below the tie.
    """
    x = structured_float32(lowprec.E8M0)
    x = x[~np.isnan(x)]
    # near 2**-127
    subnormals = (np.arange(0x00380000, 0x00680000, 997, dtype=np.uint32)).view(np.float32)
    x = np.concatenate([x, subnormals])
    theirs = twin_cast(x, ml_dtypes.float8_e8m0fnu)
    ours = lowprec.round(x, "e8m0", ML_DTYPES_E8M0_TIES)
    below_tie = (x > 2.0**-127) & (x < 1.5 * 2.0**-127)
    assert below_tie.sum() > 100 and np.all(ours[below_tie] == 2.0**-127)
    if ML_DTYPES_E8M0_SUBNORMAL_QUIRK:  # ml_dtypes < 0.7
        quirk = (x > 2.0**-127) & (x <= 1.5 * 2.0**-127)
        assert np.all(theirs[quirk] == 2.0**-126)
        x, ours, theirs = x[~quirk], ours[~quirk], theirs[~quirk]
    assert_same(ours, theirs, x)
    even = lowprec.round(np.array([3.0, 6.0, 12.0, 0.75, 1.5]), "e8m0")
    np.testing.assert_array_equal(even, [2.0, 8.0, 8.0, 0.5, 2.0])  # the exponent field even
    gfloat = pytest.importorskip("gfloat")
    from gfloat.formats import format_info_ocp_e8m0
    v = x[(x >= 2.0**-127) & (x <= 2.0**127)].astype(np.float64)[::50]
    theirs_gfloat = [gfloat.round_float(format_info_ocp_e8m0, float(t)) for t in v]
    assert_same(lowprec.round(v, "e8m0"), theirs_gfloat, v)


def round_with_words(x, fmt, mode, words=None, *, overflow=None, random_bits=None, general=False,
                     tie_seed=0):
    """Round one chunk by the path lowprec.round would take (or the general path), feeding the
    stochastic modes the 64-bit words ``words`` (one per element) instead of a generator's."""
    policy = rounding._overflow_policy(fmt, overflow)
    tie_rng = np.random.default_rng(tie_seed)
    path, work = (None, None) if general else _fastpaths.choose(x.dtype, fmt, mode, random_bits)
    if path is None:
        return rounding._round_float64(x.astype(np.float64), fmt, RoundingMode(mode), policy,
                                       words, tie_rng, random_bits)
    random = RandomSource.from_words(words, tie_rng, random_bits) if mode == "stochastic" else None
    out = np.empty(x.shape, work)
    flagged = path(x.astype(work), out, fmt, mode, policy, random)
    if flagged is not None:  # what R's first 16 bits left open: the exact rule, as round() does
        rounding.settle(x[flagged], out, flagged, words[flagged], fmt, policy, tie_rng, random_bits)
    return out


@pytest.mark.parametrize("mode", DETERMINISTIC + ["stochastic"])
def test_fast_paths_equal_the_general_path_on_the_sample(mode):
    checked = 0
    for fmt in PRESETS + CUSTOM:
        for dtype in (np.float32, np.float64):
            x = structured_float32(fmt if fmt.fits_float32 else lowprec.FP32).astype(dtype)
            if not fmt.has_nan:
                x = x[~np.isnan(x)]
            if not fmt.fits_float32:
                x = x.astype(np.float64)
            if _fastpaths.choose(x.dtype, fmt, mode)[0] is None:
                continue
            words = seeded_words(21, x.size)
            policies = ["saturate"] + ["inf"] * fmt.has_inf + ["nan"] * fmt.has_nan
            for overflow in policies:
                for random_bits in ([None, 1, 13, 16, 17, 64] if mode == "stochastic" else [None]):
                    fast = round_with_words(x, fmt, mode, words, overflow=overflow,
                                            random_bits=random_bits)
                    general = round_with_words(x, fmt, mode, words, overflow=overflow,
                                               random_bits=random_bits, general=True)
                    assert_same(fast, general, x)
            checked += 1
    assert checked >= 10


# --- double rounding -------------------------------------------------------------------------
def test_double_rounding_trap_bf16():
    x = 1 + 2.0**-8 + 2.0**-30  # float32 rounds it to 1 + 2**-8, exactly a bf16 tie
    assert np.float32(x) == 1 + 2.0**-8
    assert lowprec.round(x, "bf16") == 1.0078125 == round_exact(x, lowprec.BF16)
    theirs = np.array([x]).astype(ml_dtypes.bfloat16).astype(np.float64)[0]
    # ml_dtypes < 0.7 goes through float32 and lands on the tie's even side; 0.7 rounds once
    assert theirs == (1.0 if ML_DTYPES_ROUNDS_FLOAT64_TWICE else 1.0078125)


def test_double_rounding_trap_e4m3():
    y = 1 + 2.0**-4 + 2.0**-30
    assert lowprec.round(y, "e4m3") == 1.125 == round_exact(y, lowprec.E4M3)
    theirs = np.array([y]).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)[0]  # array path
    assert theirs == (1.0 if ML_DTYPES_ROUNDS_FLOAT64_TWICE else 1.125)


@pytest.mark.parametrize("name", ["bf16", "e4m3", "e5m2", "fp16"])
def test_float64_just_off_a_tie_is_rounded_once(name):
    """Ties nudged by far less than a float32 ulp: float32 erases the nudge, we do not."""
    fmt = as_format(name)
    v = format_values(fmt)
    ties = ((v[:-1] + v[1:]) / 2)[(v[1:] <= fmt.max) & (v[:-1] > fmt.tiny)]
    x = np.concatenate([ties * (1 + 2.0**-40), ties * (1 - 2.0**-40)])
    ours = lowprec.round(x, fmt)
    np.testing.assert_array_equal(ours[: ties.size], lowprec.round(ties, fmt, "up"))
    np.testing.assert_array_equal(ours[ties.size:], lowprec.round(ties, fmt, "down"))
    via_float32 = twin_cast(x.astype(np.float32), TWINS[name])
    assert (via_float32 != ours).sum() == ties.size  # half of them land on the wrong side


def test_float64_to_fp16_equals_numpys_direct_cast():
    """NumPy casts float64 to float16 directly (one rounding): an outside reference for float64."""
    rng = np.random.default_rng(5)
    v = format_values(lowprec.FP16)
    ties = (v[:-1] + v[1:]) / 2
    x = np.concatenate([rng.standard_normal(50000) * np.exp2(rng.integers(-30, 18, 50000)),
                        ties, np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf)])
    x = np.concatenate([x, -x])
    with np.errstate(over="ignore"):
        theirs = x.astype(np.float16).astype(np.float64)
    assert_same(lowprec.round(x, "fp16"), theirs, x)


# --- every mode against the exact rational reference ----------------------------------------
def to32(x):
    with np.errstate(over="ignore"):
        return x.astype(np.float32)


@np.errstate(over="ignore")
def float64_sample(fmt, n=160, seed=7):
    """Values of fmt, ties, float64 neighbours of both, random values across the range, specials."""
    rng = np.random.default_rng(seed)
    v = format_values(fmt)
    v = v[rng.integers(0, v.size, n // 4)]
    quantum = np.asarray(lowprec.ulp(v, fmt))
    ties = v + quantum / 2
    exponents = rng.integers(fmt.emin - fmt.mantissa_bits - 3, fmt.emax + 3, n // 2)
    spread = np.ldexp(rng.uniform(1, 2, n // 2), exponents)
    boundaries = [fmt.max, fmt.max * (1 + 2.0**-fmt.mantissa_bits / 4), fmt.max * 2,
                  fmt.smallest_subnormal / 2,
                  fmt.smallest_subnormal / 3, fmt.tiny * 0.99, 0.0, np.inf, 1 + 2.0**-8 + 2.0**-30]
    x = np.concatenate([v, ties, with_neighbours(ties, np.float64), spread, boundaries])
    x = np.concatenate([x, -x])
    return x if fmt.has_nan else x[~np.isnan(x)]


def exact_array(x, fmt, mode, **kwargs):
    return np.array([round_exact(float(t), fmt, mode, **kwargs) for t in np.ravel(x)])


@pytest.mark.parametrize("fmt", PRESETS + CUSTOM, ids=str)
@pytest.mark.parametrize("mode", DETERMINISTIC)
def test_every_mode_equals_exact_reference(fmt, mode):
    x = float64_sample(fmt)
    for overflow in [None, "saturate"]:
        ours = lowprec.round(x, fmt, mode, overflow=overflow)
        assert_same(ours, exact_array(x, fmt, mode, overflow=overflow), x)
    if fmt.fits_float32:  # float32 input: the fast paths for nearest, the general path otherwise
        x32 = to32(x)
        assert_same(lowprec.round(x32, fmt, mode), exact_array(x32, fmt, mode), x32)


@pytest.mark.parametrize("fmt", [f for f in PRESETS if f.signed] + CUSTOM[:3], ids=str)
def test_flush_subnormals_equals_exact_reference(fmt):
    x = float64_sample(fmt, seed=8)
    for mode in ["nearest", "up", "toward_zero"]:
        assert_same(lowprec.round(x, fmt, mode, subnormals=False),
                    exact_array(x, fmt, mode, subnormals=False), x)
        if fmt.fits_float32:
            x32 = to32(x)
            assert_same(lowprec.round(x32, fmt, mode, subnormals=False),
                        exact_array(x32, fmt, mode, subnormals=False), x32)


@pytest.mark.parametrize("name, overflow", [("fp16", "nan"), ("fp16", "inf"), ("e5m2", "saturate"),
                                            ("e4m3", "nan"), ("bf16", "nan"), ("bf16", "saturate")])
def test_other_overflow_policies_equal_exact_reference(name, overflow):
    fmt = as_format(name)
    x = float64_sample(fmt, seed=9)
    for mode in ["nearest", "up", "down", "stochastic"][:3]:
        for dtype in (np.float64, np.float32):
            xd = x.astype(dtype) if dtype == np.float64 else to32(x)
            assert_same(lowprec.round(xd, fmt, mode, overflow=overflow),
                        exact_array(xd, fmt, mode, overflow=overflow), xd)


# --- gfloat, the other emulator that rounds float64 directly ---------------------------------
GFLOAT_MODES = {"nearest": "TiesToEven", "nearest_away": "TiesToAway", "toward_zero": "TowardZero",
                "up": "TowardPositive", "down": "TowardNegative"}


@pytest.mark.parametrize("fmt", [f for f in CUSTOM + list(PRESETS) if f.signed and f.bits <= 16],
                         ids=str)
def test_custom_and_preset_formats_equal_gfloat(fmt):
    gfloat = pytest.importorskip("gfloat")
    m = fmt.mantissa_bits
    info = gfloat.FormatInfo(
        name=fmt.name, k=fmt.bits, precision=m + 1, bias=fmt.bias, is_signed=True,
        domain=gfloat.Domain.Extended if fmt.specials == "ieee" else gfloat.Domain.Finite,
        has_nz=fmt.specials != "fnuz",
        num_high_nans={"ieee": 2**m - 1, "fn": 1}.get(fmt.specials, 0),
        has_subnormals=True, is_twos_complement=False)
    x = float64_sample(fmt, seed=10)
    x = x[np.isfinite(x) & (np.abs(x) <= fmt.max)]  # gfloat raises beyond max in finite formats
    for mode, theirs_mode in GFLOAT_MODES.items():
        theirs = gfloat.round_ndarray(info, x, getattr(gfloat.RoundMode, theirs_mode), sat=True)
        assert_same(lowprec.round(x, fmt, mode), theirs, x)


# --- stochastic rounding ------------------------------------------------------------------------
def seeded_words(seed, n):
    return np.random.default_rng(seed).integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)


def exact_stochastic(x, fmt, words, random_bits=None, overflow=None):
    """The exact reference with U = R / 2**64, or the k-bit adder fed R's top k bits."""
    if random_bits is None:
        return [round_exact(float(t), fmt, "stochastic", overflow=overflow,
                            uniform=Fraction(int(w), 2**64))
                for t, w in zip(x, words)]
    return [round_exact(float(t), fmt, "stochastic", overflow=overflow, random_bits=random_bits,
                        random_int=int(w) >> (64 - random_bits)) for t, w in zip(x, words)]


@pytest.mark.parametrize("fmt", [f for f in PRESETS if f.signed] + CUSTOM[:4] + RANGE_EDGES,
                         ids=str)
@pytest.mark.parametrize("random_bits", [None, 1, 3, 8, 13, 16, 17, 30, 64])
def test_stochastic_equals_exact_reference_given_the_words(fmt, random_bits):
    """Element i rounds away iff U < f, U = R_i / 2**64 (or, k bits: the carry of a k-bit adder)."""
    x = float64_sample(fmt, n=120, seed=11)
    words = seeded_words(3, x.size)
    theirs = exact_stochastic(x, fmt, words, random_bits)
    for general in (False, True):
        ours = round_with_words(x, fmt, "stochastic", words, random_bits=random_bits,
                                general=general)
        assert_same(ours, theirs, x)
    if fmt.fits_float32:
        x32 = to32(x)
        assert_same(round_with_words(x32, fmt, "stochastic", words, random_bits=random_bits),
                    exact_stochastic(x32, fmt, words, random_bits), x32)


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.PCG64DXSM, np.random.Philox,
                                           np.random.SFC64, np.random.MT19937])
def test_random_words_are_the_generators_integers(bit_generator):
    """The raw output lowprec reads for speed is the stream rng.integers gives (MT19937's raw
    output is 32 bits wide, so lowprec asks it for integers)."""
    ours = _bitwords.random_uint64(np.random.Generator(bit_generator(5)), 1001)
    theirs = np.random.Generator(bit_generator(5)).integers(0, 2**64 - 1, 1001, np.uint64,
                                                            endpoint=True)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", ["fp16", "bf16", "e4m3", "e2m1"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("random_bits", [None, 4, 16])
def test_stochastic_reproduces_exact_reference_from_the_seed(name, dtype, random_bits):
    """Through lowprec.round: element i's first 16 random bits are the i-th uint16 of the
    generator's 64-bit words (little-endian quarters); they decide unless they equal f's first 16.
    """
    fmt = as_format(name)
    x = float64_sample(fmt, n=400, seed=15)
    x = x if dtype == np.float64 else to32(x)
    ours = lowprec.round(x, fmt, "stochastic", rng=np.random.default_rng(4),
                         random_bits=random_bits)
    top16 = seeded_words(4, -(-x.size // 4)).view(np.uint16)[:x.size]
    decided = np.ones(x.size, bool)
    for i, (t, u) in enumerate(zip(x, top16)):
        if random_bits is not None:  # a k-bit adder sees R's top k bits only
            expected = round_exact(float(t), fmt, "stochastic", random_bits=random_bits,
                                   random_int=int(u) >> (16 - random_bits))
        else:
            f = (abs(Fraction(float(t))) / Fraction(float(lowprec.ulp(t, fmt))) % 1
                 if np.isfinite(t) else Fraction(0))
            decided[i] = int(u) != int(f * 2**16)  # else the next bits decide
            expected = round_exact(float(t), fmt, "stochastic", uniform=Fraction(int(u), 2**16))
        if decided[i]:
            assert_same(ours[i], expected, t)
    assert decided.mean() > 0.95


@pytest.mark.parametrize("name", ["fp16", "e4m3", "e5m2", "e2m1"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stochastic_ties_of_the_first_16_bits(name, dtype):
    """Words whose top 16 bits equal f's first 16 bits: the rest of the word must decide."""
    fmt = as_format(name)
    q = 2.0 ** (fmt.emin - fmt.mantissa_bits)
    f = np.array([0.3, 0.7, 2.0**-20 * 3, 0.5 + 2.0**-30, 2.0**-17 + 2.0**-40])  # fractions of q
    x = ((1 + f) * q).astype(dtype)  # below tiny, where f keeps its low bits
    f_exact = x.astype(np.float64) / q - 1
    head = np.floor(f_exact * 2**16).astype(np.uint64)
    low = np.floor((f_exact * 2**16 - head) * 2**48).astype(np.uint64)  # f's bits 17..64
    for delta in (-1, 0, 1):  # R just below, at and just above f's first 64 bits
        nudged = low + np.uint64(1) if delta > 0 else low - np.uint64(delta < 0)
        words = (head << np.uint64(48)) | nudged
        exact = exact_stochastic(x, fmt, words)
        assert_same(round_with_words(x, fmt, "stochastic", words), exact, x)
        assert_same(round_with_words(x, fmt, "stochastic", words, general=True), exact, x)


@pytest.mark.parametrize("name, dtype", [("fp16", np.float32), ("fp16", np.float64)])
def test_round_settles_undecided_elements_once_per_call(name, dtype):
    """Below FP16's smallest normal, f has more bits than the fast path's b random bits (13 in
    float32, 16 in float64), so some elements come back undecided (about 2 * 2**-b of them).
    round() draws 16 bits per element chunk by chunk, then the rest of those elements' words,
    in index order, and rounds them by the exact rule: checked against the Fraction reference."""
    fmt = as_format(name)
    n = 3 * rounding._CHUNK + 1000  # several chunks
    rng = np.random.default_rng(8)
    exponents = rng.integers(fmt.emin - fmt.mantissa_bits - 3, fmt.emin, n)
    x = (rng.uniform(1, 2, n) * 2.0**exponents).astype(dtype)
    ours = lowprec.round(x, fmt, "stochastic", rng=np.random.default_rng(9))
    replay = np.random.default_rng(9)
    path, work = _fastpaths.choose(x.dtype, fmt, "stochastic")
    assert path is _fastpaths.stochastic_by_pattern and work == x.dtype
    undecided, tops = [], []
    for start in range(0, n, rounding._CHUNK):
        part = x[start:start + rounding._CHUNK]
        random = RandomSource.draw(replay, part.size, None)
        flagged = path(part, np.empty_like(part), fmt, "stochastic", fmt.default_overflow, random)
        if flagged is not None:
            undecided.append(start + flagged)
            tops.append(random.top16[flagged])
    idx, top16 = np.concatenate(undecided), np.concatenate(tops)
    b = 13 if dtype == np.float32 else 16
    assert 0 < idx.size < 4 * n * 2.0 ** (1 - b)
    rest = replay.integers(0, 2**64 - 1, idx.size, np.uint64, True) >> np.uint64(16)
    words = (top16.astype(np.uint64) << np.uint64(48)) | rest
    assert_same(ours[idx], exact_stochastic(x[idx], fmt, words), x[idx])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stochastic_needs_more_than_64_bits(dtype):
    """f with bits beyond 2**-64 and R equal to its first 64 (here 0): the next words decide."""
    # f = 1.5 * 2**-76, 3 * 2**-96 of fp16's quantum
    x = np.array([2.0**-100 * 1.5, 2.0**-120 * 3], dtype)
    words = np.zeros(2, np.uint64)
    for seed in range(5):
        fast = round_with_words(x, lowprec.FP16, "stochastic", words, tie_seed=seed)
        general = round_with_words(x, lowprec.FP16, "stochastic", words, tie_seed=seed,
                                   general=True)
        assert_same(fast, general, x)
    # U's next 64 bits must fall below f's: 1.5 * 2**-12 and 0 for the seeds here
    follow = seeded_words(0, 2)  # the tie words of seed 0, one per element in order
    expected = [float(follow[0]) < 1.5 * 2.0**52, False]
    ours = round_with_words(x, lowprec.FP16, "stochastic", words)
    np.testing.assert_array_equal(ours > 0, expected)


def binomial_ok(count, n, p, sigmas=5.0):
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p)) + 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value, name, p_up", [
    (1 + 2.0**-12, "fp16", 0.25),  # fp16 quantum at 1 is 2**-10 (reference (d): 0.25)
    (-(1 + 2.0**-12), "fp16", 0.25),  # away from zero, same probability
    (2.0**-24 * 0.3, "fp16", 0.3),  # below fp16's smallest subnormal
    (1 + 3 * 2.0**-9, "bf16", 0.75),
    (448 + 8.0, "e4m3", 0.25),  # 456: up to the next code, 480, is overflow -> NaN
    (5.3, "e2m1", 0.65),
    (2.0**-20 * 1.375, "e4m3", 2.0**-11 * 1.375),  # deep below tiny (d > 16): the 64-bit rule
])
def test_stochastic_frequencies(value, name, p_up, dtype):
    fmt = as_format(name)
    x = np.full(400_000, value, dtype)
    r = lowprec.round(x, fmt, "stochastic", rng=np.random.default_rng(12))
    down = lowprec.round(x[:1], fmt, "toward_zero")[0]
    away = r != down
    exact_p = float(abs(Fraction(float(x[0]))) / Fraction(float(lowprec.ulp(x[0], fmt))) % 1)
    assert abs(exact_p - p_up) < 1e-3  # (p_up is the rounded-off table value)
    assert binomial_ok(int(away.sum()), x.size, exact_p)
    away_value = float(lowprec.round(x[:1], fmt, "up" if value > 0 else "down")[0])
    assert set(np.unique(r[~np.isnan(r)]).tolist()) <= {float(down), away_value}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("random_bits, p_up", [(1, 0.0), (2, 0.25), (3, 0.25), (4, 0.25),
                                                (5, 0.28125), (None, 0.3)])
def test_random_bits_probability_is_floor_f_2k(random_bits, p_up, dtype):
    """k random bits see only floor(f * 2**k): P(up) = floor(f * 2**k) / 2**k (f = 0.3 here)."""
    f = 0.3
    x = np.full(400_000, 1 + f * 2.0**-10, dtype)  # fp16 quantum at 1: 2**-10
    f_exact = (Fraction(float(x[0])) - 1) * 2**10
    expected = (f_exact if random_bits is None
                else Fraction(int(f_exact * 2**random_bits), 2**random_bits))
    assert abs(float(expected) - p_up) < 1e-3  # float32 holds 0.3 * 2**-10 inexactly
    r = lowprec.round(x, "fp16", "stochastic", rng=np.random.default_rng(13),
                      random_bits=random_bits)
    assert binomial_ok(int((r > 1).sum()), x.size, float(expected))


@pytest.mark.parametrize("name", ["fp16", "bf16", "e4m3", "e2m1"])
def test_stochastic_is_unbiased(name):
    rng = np.random.default_rng(14)
    fmt = as_format(name)
    x = rng.uniform(-fmt.max / 4, fmt.max / 4, 16).astype(np.float32)
    reps = np.repeat(x[None, :], 40_000, axis=0)
    mean = lowprec.round(reps, fmt, "stochastic", rng=rng).astype(np.float64).mean(axis=0)
    spread = np.asarray(lowprec.ulp(x, fmt)) / 2 / np.sqrt(40_000)  # <= std of one draw / sqrt(n)
    assert np.all(np.abs(mean - x) <= 6 * spread)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stochastic_reproducible_per_seed(dtype):
    x = np.random.default_rng(0).standard_normal(300_000).astype(dtype)
    a = lowprec.round(x, "e4m3", "stochastic", rng=np.random.default_rng(42))
    b = lowprec.round(x, "e4m3", "stochastic", rng=np.random.default_rng(42))
    c = lowprec.round(x, "e4m3", "stochastic", rng=np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.2
    g = np.random.default_rng(42)
    first = lowprec.round(x, "e4m3", "stochastic", rng=g)
    second = lowprec.round(x, "e4m3", "stochastic", rng=g)
    assert (first != second).mean() > 0.2  # the generator advances


# --- overflow, flushing, signs, NaN --------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_overflow_policies(dtype):
    x = np.array([70000.0, -70000.0, np.inf, -np.inf], dtype)
    np.testing.assert_array_equal(lowprec.round(x, "fp16"), [np.inf, -np.inf, np.inf, -np.inf])
    np.testing.assert_array_equal(lowprec.round(x, "fp16", overflow="saturate"),
                                  [65504, -65504, np.inf, -np.inf])
    assert np.all(np.isnan(lowprec.round(x[:2], "fp16", overflow="nan")))
    e4 = np.array([464.0, 464.0001, 480.0, 1e6, np.inf, -np.inf], dtype)  # reference (d)
    assert_same(lowprec.round(e4, "e4m3"), [448, np.nan, np.nan, np.nan, np.nan, -np.nan])
    assert_same(lowprec.round(e4, "e4m3", overflow="saturate"), [448, 448, 448, 448, 448, -448])
    assert_same(lowprec.round(np.array([57344, 61439, 61440, 1e6], dtype), "e5m2"),
                [57344, 57344, np.inf, np.inf])
    assert np.isnan(lowprec.round(dtype(248), "e4m3fnuz"))
    assert lowprec.round(np.array([np.inf, 1e6], dtype), "e2m1")[0] == 6.0  # MX elements saturate
    with pytest.raises(ValueError,
                       match="overflow='inf' is impossible: format e4m3 has no infinity"):
        lowprec.round(1.0, "e4m3", overflow="inf")
    with pytest.raises(ValueError, match="overflow='nan' is impossible: format e2m1 has no NaN"):
        lowprec.round(1.0, "e2m1", overflow="nan")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_directed_modes_overflow_the_ieee_way(dtype):
    x = np.array([1e6, -1e6], dtype)
    np.testing.assert_array_equal(lowprec.round(x, "fp16", "toward_zero"), [65504, -65504])
    np.testing.assert_array_equal(lowprec.round(x, "fp16", "odd"), [65504, -65504])
    np.testing.assert_array_equal(lowprec.round(x, "fp16", "up"), [np.inf, -65504])
    np.testing.assert_array_equal(lowprec.round(x, "fp16", "down"), [65504, -np.inf])
    assert_same(lowprec.round(x, "e4m3", "up"), [np.nan, -448])
    assert_same(lowprec.round(x, "e4m3", "up", overflow="saturate"), [448, -448])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flush_subnormals(dtype):
    x = np.array([2.0**-20, -(2.0**-20), 2.0**-14, 2.0**-14 * (1 - 2.0**-12), 1.0], dtype)
    ours = lowprec.round(x, "fp16", subnormals=False)
    assert_same(ours, [0.0, -0.0, 2.0**-14, 2.0**-14, 1.0])  # the 4th rounds up to tiny first
    # no -0
    assert_same(lowprec.round(np.array([-(2.0**-9)], dtype), "e4m3fnuz", subnormals=False), [0.0])


@pytest.mark.parametrize("mode", DETERMINISTIC + ["stochastic"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_signed_zero_and_nan_survive(mode, dtype):
    rng = np.random.default_rng(0) if mode == "stochastic" else None
    x = np.array([0.0, -0.0, np.nan, -np.nan, -1e-45], dtype)  # the last is nonzero in float32 too
    for name in ["fp16", "bf16", "e4m3", "e5m2"]:
        r = lowprec.round(x, name, mode, rng=rng)
        assert_same(r[:4], [0.0, -0.0, np.nan, np.nan])
        # a tiny negative goes to -0, or to -smallest_subnormal where the mode moves it away from 0
        moved = mode in ("down", "odd")
        assert_same(r[4], -as_format(name).smallest_subnormal if moved else -0.0)
    r = lowprec.round(x, "e4m3fnuz", mode, rng=rng)
    assert_same(r[:2], [0.0, 0.0]) and np.isnan(r[2])  # fnuz: -0 -> +0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_emin_above_one(dtype):
    g = RANGE_EDGES[0]  # tiny = 4, quantum 0.5 in [4, 8), max 61440
    x = np.array([5, 12, 0.3, 5.25, 1e5, -7.9], dtype)
    for mode in DETERMINISTIC:
        assert_same(lowprec.round(x, g, mode), exact_array(x, g, mode), x)
    assert lowprec.next_up(5.0, g) == 5.5 and lowprec.next_down(4.0, g) == 3.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_below_one_overflows_to_nan(dtype):
    h = RANGE_EDGES[2]  # max 0.875
    x = np.array([0.5, 0.875, 0.9, 1.0, -3.0], dtype)
    # 0.9375 ties to even 0.875
    assert_same(lowprec.round(x, h), [0.5, 0.875, 0.875, np.nan, np.nan])


@pytest.mark.parametrize("random_bits", [np.int64(3), np.uint8(3), np.int32(64)])
def test_random_bits_takes_numpy_integers(random_bits):
    x = np.linspace(1, 2, 1001)
    ours = lowprec.round(x, "fp16", "stochastic", rng=np.random.default_rng(1),
                         random_bits=random_bits)
    plain = lowprec.round(x, "fp16", "stochastic", rng=np.random.default_rng(1),
                          random_bits=int(random_bits))
    assert_same(ours, plain)


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">f2"])
def test_big_endian_input_is_rounded_like_native(dtype):
    x = np.array([1.5, 0.1, -3e-5, 1 + 2.0**-11 + 2.0**-20], dtype)
    native = x.astype(x.dtype.newbyteorder("="))
    ours = lowprec.round(x, "fp16", "up")
    assert ours.dtype == (native.dtype if native.dtype != np.float16 else np.float64)
    assert_same(ours, lowprec.round(native, "fp16", "up"))


def test_longdouble_input_is_exact_or_refused():
    x = np.longdouble(1) + np.longdouble(2) ** -11 + np.longdouble(2) ** -60  # just above a tie
    if np.finfo(np.longdouble).nmant > 52:  # x86 80-bit, double-double: more than float64 holds
        with pytest.raises(TypeError, match=f"dtype {np.dtype(np.longdouble)}.*astype"):
            lowprec.round(np.array([x, 1.0]), "fp16")
    else:  # longdouble is float64, so x is 1 + 2**-11: a tie, to even
        assert lowprec.round(x, "fp16") == 1.0


def test_nan_into_a_format_without_nan():
    with pytest.raises(ValueError,
                       match="input holds 2 NaN value.*format e2m1 has no NaN encoding"):
        lowprec.round(np.array([1.0, np.nan, np.nan], np.float32), "e2m1")


def test_e8m0_has_no_zero_and_no_negatives():
    assert_same(lowprec.round(np.array([0.0, -1.0, 2.0**-140, 2.0**130]), "e8m0"),
                [np.nan, np.nan, 2.0**-127, np.nan])


# --- inputs, dtypes, errors ---------------------------------------------------------------------
@pytest.mark.parametrize("mode, fmt, dtype", [("nearest", "fp16", np.float32),
                                              ("nearest", "bf16", np.float32),
                                              ("nearest", "e4m3", np.float64),
                                              ("up", "fp16", np.float32),
                                              ("stochastic", "fp16", np.float32),
                                              ("stochastic", "bf16", np.float32),
                                              ("stochastic", "e5m2", np.float64)])
def test_inputs_are_never_modified(mode, fmt, dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(300_000) * 1e3).astype(dtype)
    x[:3] = [np.nan, np.inf, -0.0]
    before = x.copy()
    x.flags.writeable = False  # a read-only input works too
    lowprec.round(x, fmt, mode, rng=rng if mode == "stochastic" else None, subnormals=False)
    assert_same(x, before)


def test_dtype_rules():
    f32, f64 = np.ones(3, np.float32), np.ones(3)
    assert lowprec.round(f32, "fp16").dtype == np.float32
    assert lowprec.round(f64, "fp16").dtype == np.float64
    # values beyond float32
    assert lowprec.round(f32, FloatFormat("e11m30", 11, 30)).dtype == np.float64
    assert isinstance(lowprec.round(0.1, "bf16"), np.float64)
    assert lowprec.round(0.1, "bf16") == 0.10009765625
    assert lowprec.round([1, 2, 3], "e4m3").dtype == np.float64
    assert lowprec.round(np.array([1, 2], np.int16), "fp16").dtype == np.float64
    assert lowprec.round(np.array([0.1], np.float16), "e5m2").dtype == np.float64
    bf = np.array([1.5, 3.0], ml_dtypes.bfloat16)  # ml_dtypes arrays are widened exactly
    np.testing.assert_array_equal(lowprec.round(bf, "e4m3"), [1.5, 3.0])
    m = np.arange(24, dtype=np.float32).reshape(2, 3, 4)[:, ::2, ::-1]  # shape and strides
    assert lowprec.round(m, "fp16").shape == (2, 2, 4)
    np.testing.assert_array_equal(lowprec.round(m, "fp16"), m)
    assert lowprec.round(np.empty((0, 3), np.float32), "fp16").shape == (0, 3)
    assert lowprec.round(np.float32(1.0), "fp16").dtype == np.float32  # 0-d: a scalar of x's dtype


def test_every_entry_point_takes_input_through_the_one_coercer():
    entry_points = {
        "round": lambda x: lowprec.round(x, "fp16"),
        "arith.add": lambda x: arith.add(x, 1.0, "fp16"),
        "bits.ulp": lambda x: bits.ulp(x, "fp16"),
        "tensorcore.dot": lambda x: tensorcore.dot(x, np.ones(1), tensorcore.V100_FP16),
        "scaling.quantize": lambda x: quantize(x, CurrentScaling().new_state()),
    }
    for call in entry_points.values():
        with pytest.raises(TypeError, match="is complex .*expected real numbers"):
            call(np.array([1 + 2j]))
        with pytest.raises(TypeError, match="is a boolean array"):
            call(np.array([True]))
    # ml_dtypes arrays widen exactly everywhere (tensorcore refused them before)
    half = np.array([1.5], ml_dtypes.bfloat16)
    assert tensorcore.dot(half, np.ones(1), tensorcore.A100_BF16) == 1.5


@pytest.mark.parametrize("x, error, message", [
    (np.array([1 + 2j]), TypeError, "x is complex .*expected real numbers"),
    (np.array([1.0, "a"], object), TypeError, "x has dtype object; expected real numbers"),
    (np.array(["1.0"]), TypeError, "x has dtype <U3; expected real numbers"),
    (np.array([True]), TypeError, "x is a boolean array; expected real numbers"),
    (np.array([2**60 + 1]), ValueError, "x holds integers too large"),
])
def test_bad_inputs(x, error, message):
    with pytest.raises(error, match=message):
        lowprec.round(x, "fp16")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(fmt="fp7"), ValueError, r"unknown format 'fp7'; valid names: .*bf16"),
    (dict(mode="nearest_even"), ValueError,
     r"unknown rounding mode 'nearest_even'; valid modes: 'nearest', 'nearest_away'"),
    (dict(random_bits=8), ValueError,
     "random_bits only applies to mode='stochastic', not 'nearest'"),
    (dict(mode="stochastic"), TypeError,
     "mode='stochastic' needs rng=np.random.Generator, got NoneType"),
    (dict(mode="stochastic", rng=np.random.RandomState(0)), TypeError,
     "needs rng=np.random.Generator, got RandomState"),
    (dict(mode="stochastic", rng=42), TypeError, "needs rng=np.random.Generator, got int"),
    (dict(rng=42), TypeError, "rng must be a np.random.Generator, got int"),
    (dict(mode="stochastic", rng=np.random.default_rng(), random_bits=0), ValueError,
     "random_bits must be an int in 1..64"),
    (dict(mode="stochastic", rng=np.random.default_rng(), random_bits=65), ValueError,
     "random_bits must be an int in 1..64"),
    (dict(mode="stochastic", rng=np.random.default_rng(), random_bits=True), ValueError,
     "random_bits must be an int"),
    (dict(mode="stochastic", rng=np.random.default_rng(), random_bits=2.5), ValueError,
     "random_bits must be an int"),
    (dict(overflow="clip"), ValueError,
     "unknown overflow policy 'clip'; valid: inf, nan, saturate"),
    (dict(subnormals="no"), TypeError, "subnormals must be True or False"),
])
def test_bad_arguments(kwargs, error, message):
    kwargs = {"fmt": "fp16", **kwargs}
    fmt = kwargs.pop("fmt")
    with pytest.raises(error, match=message):
        lowprec.round(np.ones(3), fmt, **kwargs)


def test_rounding_mode_enum_and_strings():
    assert lowprec.round(0.3, "fp16", RoundingMode.UP) == lowprec.round(0.3, "fp16", "up") \
        == 1229 / 4096
    assert [m.value for m in RoundingMode] == DETERMINISTIC + ["stochastic"]


# --- hypothesis properties ------------------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

PROPERTY_FORMATS = [f for f in PRESETS if f.signed] + CUSTOM[:3]
finite64 = st.floats(allow_nan=False, allow_infinity=False, width=64)
finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


def value_arrays(width):
    return arrays(np.float64 if width == 64 else np.float32, st.integers(1, 40),
                  elements=finite64 if width == 64 else finite32)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), width=st.sampled_from([32, 64]))
@pytest.mark.parametrize("fmt", PROPERTY_FORMATS, ids=str)
def test_properties(fmt, data, width):
    x = data.draw(value_arrays(width))
    if width == 32 and not fmt.fits_float32:
        return
    x = np.sort(x)
    kw = dict(overflow="saturate")
    down, up = lowprec.round(x, fmt, "down", **kw), lowprec.round(x, fmt, "up", **kw)
    inside = np.abs(x) <= fmt.max
    assert np.all((down <= x)[inside]) and np.all((x <= up)[inside])  # brackets
    assert np.all((up - down)[inside] <= np.asarray(lowprec.ulp(x, fmt))[inside])
    for mode in DETERMINISTIC:
        r = lowprec.round(x, fmt, mode, **kw)
        assert np.all(np.diff(r) >= 0), mode  # monotone (x is sorted)
        assert_same(lowprec.round(r, fmt, mode, **kw), r)  # idempotent
        assert np.all((r == down) | (r == up)), mode  # one of the two neighbours
        back = lowprec.decode(lowprec.encode(r, fmt, **kw), fmt)
        assert_same(back, r)  # representable
    # fnuz: no -0
    symmetric = assert_same if fmt.has_negative_zero else np.testing.assert_array_equal
    for mode in ["nearest", "nearest_away", "toward_zero", "odd"]:  # odd-symmetric
        symmetric(lowprec.round(-x, fmt, mode, **kw), -lowprec.round(x, fmt, mode, **kw))
    symmetric(lowprec.round(-x, fmt, "up", **kw), -down)  # up(-x) = -down(x)
    near = lowprec.round(x, fmt, **kw)
    ulp = np.asarray(lowprec.ulp(x, fmt))
    assert np.all((np.abs(near.astype(np.float64) - x) <= ulp / 2)[inside])  # within half an ulp
    sr = lowprec.round(x, fmt, "stochastic", rng=np.random.default_rng(0), **kw)
    assert np.all((sr == down) | (sr == up))


@pytest.mark.parametrize("specials", ["finite", "fn"])
def test_unsigned_formats_with_a_zero(specials):
    """An unsigned format with a zero holds 0 (and -0 is 0); negative numbers have no code:
    NaN where the format has one, a ValueError where it has none. (E8M0 has no zero at all.)"""
    fmt = FloatFormat("u3m2", 3, 2, specials=specials, signed=False)
    for dtype in (np.float32, np.float64):
        x = np.array([0.0, -0.0, 1.0, 0.3, 2.0**-6], dtype)
        got = lowprec.round(x, fmt)
        assert_same(got, [round_exact(float(v), fmt) for v in np.abs(x)])
        assert not np.signbit(got).any()
        assert lowprec.encode(0.0, fmt) == 0 and lowprec.decode(0, fmt) == 0.0
        if specials == "fn":
            assert np.isnan(lowprec.round(np.array([-1.0, -1e-9], dtype), fmt)).all()
        else:
            with pytest.raises(ValueError, match="2 negative value.*unsigned"):
                lowprec.round(np.array([-1.0, -1e-9, 1.0], dtype), fmt)
