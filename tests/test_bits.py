"""Codes and values: every code of every format up to 16 bits, against NumPy and ml_dtypes."""
import ml_dtypes
import numpy as np
import pytest
from versions import ML_DTYPES_E8M0_TIES, ML_DTYPES_ROUNDS_FLOAT64_TWICE

from lowprec import (all_values, classify, decode, encode, from_ml_dtypes, next_down, next_up,
                     to_ml_dtypes, ulp)
from lowprec.bits import code_dtype
from lowprec.formats import FORMATS, FloatFormat, as_format

TWINS = {
    "fp16": np.float16, "bf16": ml_dtypes.bfloat16, "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2, "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "e5m2fnuz": ml_dtypes.float8_e5m2fnuz, "e3m2": ml_dtypes.float6_e3m2fn,
    "e2m3": ml_dtypes.float6_e2m3fn, "e2m1": ml_dtypes.float4_e2m1fn,
    "e8m0": ml_dtypes.float8_e8m0fnu,
}
SMALL = [f for f in FORMATS.values() if f.bits <= 16] + [
    FloatFormat("e3m4", 3, 4), FloatFormat("e5m7fn", 5, 7, specials="fn"),
    FloatFormat("e4m3b11", 4, 3, bias=11, specials="fnuz"), FloatFormat("e5m0", 5, 0),
    FloatFormat("g", 4, 3, bias=-1), FloatFormat("h", 4, 3, bias=16, specials="fn")]


@np.errstate(invalid="ignore")
def twin_values(name):
    """Value of every code, as the NumPy/ml_dtypes type decodes it (sub-byte types: low bits)."""
    dtype = np.dtype(TWINS[name])
    codes = np.arange(2 ** as_format(name).bits, dtype=f"u{dtype.itemsize}")
    return codes.view(dtype).astype(np.float64)


def same(a, b):
    """Equal values with equal signs (so -0 != +0), NaN equal to NaN."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return bool(np.all(((a == b) & (np.signbit(a) == np.signbit(b))) | (np.isnan(a) & np.isnan(b))))


@pytest.mark.parametrize("name", sorted(TWINS))
def test_every_code_decodes_like_the_twin(name):
    assert same(all_values(name), twin_values(name))


@pytest.mark.parametrize("fmt", SMALL, ids=str)
def test_every_code_round_trips(fmt):
    codes = np.arange(2**fmt.bits)
    values = decode(codes, fmt)
    back = encode(values, fmt).astype(np.int64)
    nan = np.isnan(values)
    np.testing.assert_array_equal(back[~nan], codes[~nan])
    # NaN codes come back as the canonical NaN of the same sign (one code per sign)
    assert np.all(np.isnan(decode(back[nan], fmt)))
    assert len(np.unique(back[nan])) <= 2


@pytest.mark.parametrize("name", sorted(TWINS))
def test_encode_equals_the_twins_bits(name):
    """Round-to-nearest codes of a float32 sample equal ml_dtypes' / NumPy's stored bits."""
    fmt = as_format(name)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(20000) * np.exp2(rng.integers(-20, 20, 20000))).astype(np.float32)
    if not fmt.signed:
        x = np.abs(x)
    x = x[np.abs(x) <= fmt.max]  # overflow and NaN codes are compared by value elsewhere
    dtype = np.dtype(TWINS[name])
    theirs = x.astype(dtype).view(f"u{dtype.itemsize}")
    ours = encode(x, fmt)
    assert ours.dtype == code_dtype(fmt)
    np.testing.assert_array_equal(ours.astype(np.int64), theirs.astype(np.int64))


def test_encode_specials():
    assert encode(np.float32(-0.0), "fp16") == 0x8000 and encode(-0.0, "e4m3fnuz") == 0
    assert encode(np.inf, "fp16") == 0x7C00 and encode(-np.inf, "e5m2") == 0xFC
    assert encode(np.nan, "e4m3") == 0x7F and encode(-np.nan, "e4m3") == 0xFF  # S.1111.111
    assert encode(np.nan, "e4m3fnuz") == 0x80 and encode(np.nan, "e8m0") == 0xFF
    assert encode(1e6, "e4m3") == 0x7F and encode(1e6, "e4m3", overflow="saturate") == 0x7E  # 448
    assert encode(0.3, "fp16", mode="toward_zero") == 0x34CC  # 0.2998046875


def test_code_dtypes():
    assert [code_dtype(f) for f in ("e2m1", "e4m3", "fp16", "tf32", "fp32")] == \
        [np.uint8, np.uint8, np.uint16, np.uint32, np.uint32]
    assert (code_dtype(FloatFormat("e8m24", 8, 24)) == code_dtype(FloatFormat("e11m52", 11, 52))
            == np.uint64)


def test_codes_wider_than_32_bits():
    e8m30 = FloatFormat("e8m30", 8, 30)
    assert encode(1.0, e8m30) == 0x1FC0000000  # 0.01111111.000... (30 zeros)
    assert encode(-1.0, FloatFormat("e8m24", 8, 24)) == 0x17F000000  # 1.01111111.000... (24 zeros)
    assert decode(np.uint64(0x1FC0000000), e8m30) == 1.0
    # IEEE binary64 itself: our codes are NumPy's float64 bit patterns, sign bit 63 included
    fp64 = FloatFormat("e11m52", 11, 52)
    x = np.array([1.0, -1.0, 0.1, -2.0**-1074, -0.0, np.inf, -np.inf, -1.5e308, np.nan])
    np.testing.assert_array_equal(encode(x, fp64), x.view(np.uint64))
    assert same(decode(x.view(np.uint64), fp64), x)


@pytest.mark.parametrize("exponent_bits", [2, 8, 11])
def test_codes_of_every_width(exponent_bits):
    """-(1 + 2**-m) * 2**(1 - bias) (the smallest normal binade) is 1.00..01.00..01 in every
    width."""
    for m in range(1, 53):
        fmt = FloatFormat(f"e{exponent_bits}m{m}", exponent_bits, m)
        x = -(1 + 2.0**-m) * fmt.tiny
        code = (1 << (exponent_bits + m)) | (1 << m) | 1
        assert encode(x, fmt) == code, fmt
        assert encode(x, fmt).dtype == code_dtype(fmt)
        assert np.dtype(code_dtype(fmt)).itemsize * 8 >= fmt.bits
        assert decode(code, fmt) == x and decode(np.array([code], np.uint64), fmt)[0] == x


@pytest.mark.parametrize("name", sorted(TWINS))
def test_to_and_from_ml_dtypes(name):
    fmt = as_format(name)
    x = np.array([0.1, 1.0, 3.0, 0.0078125, 5.5, 100.0], np.float32)
    if fmt.specials == "finite":
        x = x[x <= fmt.max]
    # float32 input: the same as the twin's own cast (E8M0 ties: see versions.py)
    arr = to_ml_dtypes(x, fmt, mode=ML_DTYPES_E8M0_TIES if name == "e8m0" else "nearest")
    assert arr.dtype == np.dtype(TWINS[name])
    assert same(arr.astype(np.float64), x.astype(TWINS[name]).astype(np.float64))
    assert same(from_ml_dtypes(arr), arr.astype(np.float64))


def test_to_ml_dtypes_rounds_float64_once():
    # ml_dtypes < 0.7 casts float64 through float32 and double-rounds; 0.7 and we round once
    x = np.array([1 + 2.0**-8 + 2.0**-30])
    assert to_ml_dtypes(x, "bf16").astype(np.float64)[0] == 1.0078125
    theirs = x.astype(ml_dtypes.bfloat16).astype(np.float64)[0]
    assert theirs == (1.0 if ML_DTYPES_ROUNDS_FLOAT64_TWICE else 1.0078125)


def test_to_ml_dtypes_without_a_twin():
    with pytest.raises(ValueError, match="tf32 has no NumPy/ml_dtypes dtype"):
        to_ml_dtypes([1.0], "tf32")
    # named like E4M3 but IEEE-style: max 240 and an infinity, which float8_e4m3fn does not have
    with pytest.raises(ValueError, match="e4m3 has no NumPy/ml_dtypes dtype"):
        to_ml_dtypes([np.inf], FloatFormat("e4m3", 4, 3))


def test_to_ml_dtypes_picks_the_twin_by_its_fields():
    arr = to_ml_dtypes([1.0, 65504.0], FloatFormat("half", 5, 10, description="mine"))
    assert arr.dtype == np.float16 and arr.tolist() == [1.0, 65504.0]


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">f2"])
def test_big_endian_input(dtype):
    x = np.array([1.5, 0.1, -3e-5, np.inf], dtype)
    native = x.astype(x.dtype.newbyteorder("="))
    np.testing.assert_array_equal(encode(x, "fp16"), native.astype(np.float16).view(np.uint16))
    if dtype != ">f8":  # (no preset is float64)
        assert same(from_ml_dtypes(x), native.astype(np.float64))
    assert same(ulp(x, "bf16"), ulp(native, "bf16"))
    assert same(next_up(x, "fp16"), next_up(native, "fp16"))


def test_longdouble_input_is_exact_or_refused():
    x = np.longdouble(1) + np.longdouble(2) ** -11 + np.longdouble(2) ** -60
    if np.finfo(np.longdouble).nmant > 52:  # x86 80-bit, double-double: more than float64 holds
        for f in (ulp, next_up, next_down, encode):
            with pytest.raises(TypeError, match=f"{np.dtype(np.longdouble)}.*astype"):
                f(x, "fp16")
    else:  # longdouble is float64 (x == 1 + 2**-11): a tie, to even
        assert encode(x, "fp16") == 0x3C00 and next_down(x, "fp16") == 1.0


def test_all_values_and_decode_errors():
    with pytest.raises(ValueError, match="formats of up to 16 bits"):
        all_values("fp32")
    with pytest.raises(TypeError, match="integer codes"):
        decode(np.array([1.0]), "fp16")
    with pytest.raises(ValueError, match="codes out of range for e4m3: must be in 0..255"):
        decode(np.array([256]), "e4m3")
    with pytest.raises(ValueError, match="codes out of range"):
        decode(-1, "e4m3")


# --- neighbours and spacing against NumPy / ml_dtypes ------------------------------------------
NEIGHBOUR_TWINS = ["fp16", "bf16", "e4m3", "e5m2", "e4m3fnuz", "e5m2fnuz"]


def finite_values(name):
    v = all_values(name)
    return np.unique(v[np.isfinite(v)])


@pytest.mark.parametrize("name", NEIGHBOUR_TWINS)
@np.errstate(over="ignore")
def test_next_up_down_equal_nextafter(name):
    fmt, dtype = as_format(name), TWINS[name]
    v = finite_values(name)
    if name == "bf16":
        v = v[::7]
    big = np.array(np.inf if fmt.has_inf else np.nan, dtype)
    up_theirs = np.nextafter(v.astype(dtype), np.full(v.shape, np.inf).astype(dtype) if fmt.has_inf
                             else np.full(v.shape, fmt.max).astype(dtype))
    down_theirs = np.nextafter(v.astype(dtype), np.full(v.shape, -np.inf).astype(dtype)
                               if fmt.has_inf
                               else np.full(v.shape, -fmt.max).astype(dtype))
    up, down = next_up(v, fmt), next_down(v, fmt)
    inner_up, inner_down = v < fmt.max, v > -fmt.max  # nextafter toward max stays at max
    assert same(up[inner_up], up_theirs.astype(np.float64)[inner_up])
    assert same(down[inner_down], down_theirs.astype(np.float64)[inner_down])
    # past max: infinity, or NaN without infinity
    assert same(next_up(fmt.max, fmt), big.astype(np.float64))
    del big


def test_next_up_down_specials():
    assert next_up(0.0, "fp16") == 2.0**-24 and next_down(0.0, "fp16") == -(2.0**-24)
    assert next_up(-np.inf, "fp16") == -65504 and next_up(-65504.0, "fp16") == -65472
    assert next_up(np.inf, "fp16") == np.inf
    assert next_down(np.inf, "fp16") == 65504 and np.isnan(next_up(np.nan, "fp16"))
    assert next_up(1.0, "fp16") == np.nextafter(np.float16(1), np.float16(2))
    # 0.3 is not on the grid; its neighbours are 1228/4096 and 1229/4096
    assert next_up(0.3, "fp16") == 1229 / 4096 and next_down(0.3, "fp16") == 1228 / 4096
    assert np.signbit(next_up(-(2.0**-24), "fp16"))  # -0, as IEEE nextUp and np.nextafter
    up_fnuz = next_up(-(2.0**-10), "e4m3fnuz")  # fnuz formats have no -0
    assert up_fnuz == 0 and not np.signbit(up_fnuz)
    assert np.isnan(next_up(448.0, "e4m3"))
    assert next_down(-448.0, "e4m3") != next_down(-448.0, "e4m3")


@pytest.mark.parametrize("name", ["fp16", "bf16"])
@np.errstate(over="ignore")
def test_ulp_equals_spacing(name):
    dtype = TWINS[name]
    v = finite_values(name)
    v = v[v >= 0]
    below_max = v < as_format(name).max  # at max NumPy gives inf: the next value up is inf
    # ulp is the spacing at |x|; np.spacing(-0.0) is negative in NumPy and in ml_dtypes < 0.7
    spacing = np.abs(np.spacing(v.astype(dtype)).astype(np.float64))
    np.testing.assert_array_equal(ulp(v, name)[below_max], spacing[below_max])
    assert ulp(as_format(name).max, name) == ulp(as_format(name).max / 1.5, name)


def test_ulp_specials_and_float32():
    x = np.array([0.0, 1.0, 3e-45, 1e30], np.float32)
    np.testing.assert_array_equal(ulp(x, "fp32"), np.spacing(x).astype(np.float64))
    assert ulp(np.inf, "fp16") == np.inf and np.isnan(ulp(np.nan, "fp16"))


@pytest.mark.parametrize("name", ["fp16", "bf16", "e4m3", "e5m2"])
def test_classify_equals_numpy_predicates(name):
    dtype = TWINS[name]
    v = all_values(name)
    t = v.astype(dtype).astype(np.float64)
    a = np.abs(t)
    finfo = np.finfo if dtype is np.float16 else ml_dtypes.finfo
    tiny = float(finfo(dtype).tiny)
    expected = np.select([np.isnan(t), np.isinf(t), t == 0, a < tiny],
                         ["nan", "inf", "zero", "subnormal"], "normal")
    np.testing.assert_array_equal(classify(v, name), expected)


def test_classify_rounds_first():
    np.testing.assert_array_equal(classify([1e-9, 1e-6, 1.0, 1e6, np.nan], "fp16"),
                                  ["zero", "subnormal", "normal", "inf", "nan"])
    assert classify(1e6, "e4m3", overflow="saturate") == "normal"


def test_ieee_format_without_mantissa_bits_has_inf_and_no_nan():
    # the all-ones exponent with mantissa 0 is inf; no mantissa bits are left to tell a NaN apart
    fmt = FloatFormat("e5m0", 5, 0)
    assert fmt.has_inf and not fmt.has_nan
    # 0.01111 = 2**0; 1.11111 = -inf
    assert encode(1.0, fmt) == 0x0F and encode(-np.inf, fmt) == 0x3F
    values = all_values(fmt)
    assert not np.isnan(values).any() and values[0x1F] == np.inf and values[0x0F] == 1.0
    # max is 0.11110 = 2**15; 2**16 overflows
    np.testing.assert_array_equal(classify([2.0**-14, 2.0**15, 2.0**16], fmt),
                                  ["normal", "normal", "inf"])
    with pytest.raises(ValueError, match="format e5m0 has no NaN encoding"):
        encode([np.nan], fmt)
    with pytest.raises(ValueError, match="overflow='nan' is impossible"):
        encode([1.0], fmt, overflow="nan")
