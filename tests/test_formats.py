"""FloatFormat: every derived property against numpy.finfo / ml_dtypes.finfo / gfloat."""
import dataclasses
import math

import ml_dtypes
import numpy as np
import pytest

import lowprec
from lowprec.formats import FORMATS, FloatFormat, as_format

# Every preset with a NumPy or ml_dtypes twin, and how finfo is asked about it.
TWINS = {
    "fp32": np.float32, "fp16": np.float16, "bf16": ml_dtypes.bfloat16,
    "e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2,
    "e4m3fnuz": ml_dtypes.float8_e4m3fnuz, "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "e3m2": ml_dtypes.float6_e3m2fn, "e2m3": ml_dtypes.float6_e2m3fn,
    "e2m1": ml_dtypes.float4_e2m1fn, "e8m0": ml_dtypes.float8_e8m0fnu,
}
FINFO_NAMES = ["bits", "max", "min", "tiny", "smallest_normal", "smallest_subnormal", "eps",
               "epsneg", "machep", "negep", "minexp", "maxexp", "nexp", "nmant"]
# ml_dtypes writes `precision` by hand and gives 1 for the FP8 types and E8M0, where NumPy's
# own definition, int(-log10(eps)), gives 0; we follow NumPy's definition.
PRECISION_HAND_WRITTEN = {"e4m3", "e5m2", "e4m3fnuz", "e5m2fnuz", "e8m0"}


def finfo(dtype):
    return np.finfo(dtype) if dtype in (np.float32, np.float16) else ml_dtypes.finfo(dtype)


@pytest.mark.parametrize("name", sorted(TWINS))
@pytest.mark.parametrize("prop", FINFO_NAMES)
def test_property_equals_finfo(name, prop):
    ours, theirs = getattr(as_format(name), prop), getattr(finfo(TWINS[name]), prop)
    assert float(ours) == float(theirs), f"{name}.{prop}: {ours} != {theirs}"


@pytest.mark.parametrize("name", sorted(set(TWINS) - PRECISION_HAND_WRITTEN))
def test_precision_equals_finfo(name):
    assert as_format(name).precision == finfo(TWINS[name]).precision


@pytest.mark.parametrize("name", sorted(PRECISION_HAND_WRITTEN))
def test_precision_is_numpys_definition(name):
    fmt = as_format(name)
    assert fmt.precision == int(-math.log10(fmt.eps))


def test_tf32_against_its_definition():
    # NVIDIA TF32: float32's 8 exponent bits and FP16's 10 mantissa bits, stored in 19 bits
    f32, f16 = np.finfo(np.float32), np.finfo(np.float16)
    tf32 = lowprec.TF32
    assert (tf32.bits, tf32.nexp, tf32.nmant) == (19, 8, 10)
    assert tf32.eps == f16.eps and tf32.tiny == f32.tiny and tf32.minexp == f32.minexp
    assert tf32.max == float(np.float32(f32.max)) - (2.0**-10 - 2.0**-23) * 2.0**127
    assert tf32.smallest_subnormal == 2.0**-136


# --- custom formats against gfloat's FormatInfo ------------------------------------------------
gfloat = pytest.importorskip("gfloat")


def gfloat_info(fmt: FloatFormat):
    """gfloat's description of one of our (signed, has_zero) formats."""
    m = fmt.mantissa_bits
    high_nans = {"ieee": 2**m - 1, "fn": 1, "fnuz": 0, "finite": 0}[fmt.specials]
    domain = gfloat.Domain.Extended if fmt.specials == "ieee" else gfloat.Domain.Finite
    return gfloat.FormatInfo(name=fmt.name, k=fmt.bits, precision=m + 1, bias=fmt.bias,
                             is_signed=True,
                             domain=domain, has_nz=fmt.specials != "fnuz", num_high_nans=high_nans,
                             has_subnormals=True, is_twos_complement=False)


CUSTOM = [FloatFormat("e3m4", 3, 4), FloatFormat("e6m9", 6, 9),
          FloatFormat("e5m7", 5, 7, specials="fn"),
          FloatFormat("e4m3b11", 4, 3, bias=11, specials="fnuz"),
          FloatFormat("e3m3", 3, 3, specials="finite"),
          FloatFormat("e2m0", 2, 0)]


@pytest.mark.parametrize("fmt", CUSTOM + [f for f in FORMATS.values() if f.signed and f.bits <= 16],
                         ids=str)
def test_properties_equal_gfloat(fmt):
    gi = gfloat_info(fmt)
    assert fmt.max == gi.max and fmt.smallest_normal == gi.smallest_normal
    assert fmt.smallest_subnormal == gi.smallest_subnormal and fmt.eps == gi.eps
    assert fmt.emax == gi.emax and fmt.bits == gi.bits
    assert fmt.has_negative_zero == gi.has_nz and fmt.has_inf == (gi.num_posinfs > 0)


@pytest.mark.parametrize("fmt", CUSTOM, ids=str)
def test_custom_format_values_equal_gfloat(fmt):
    gi = gfloat_info(fmt)
    theirs = np.array([gfloat.decode_float(gi, code).fval for code in range(2**fmt.bits)])
    np.testing.assert_array_equal(lowprec.all_values(fmt), theirs)


# --- look-up and validation --------------------------------------------------------------------
@pytest.mark.parametrize("alias, name", [
    ("fp16", "fp16"), ("float16", "fp16"), ("HALF", "fp16"), (" bf16 ", "bf16"),
    ("bfloat16", "bf16"),
    ("e4m3", "e4m3"), ("float8_e4m3fn", "e4m3"), ("e5m2", "e5m2"), ("float8_e5m2", "e5m2"),
    ("float8_e4m3fnuz", "e4m3fnuz"), ("fp4", "e2m1"), ("float6_e3m2fn", "e3m2"),
    ("float8_e8m0fnu", "e8m0"),
    ("tf32", "tf32"), ("float32", "fp32"),
])
def test_aliases(alias, name):
    assert as_format(alias).name == name


@pytest.mark.parametrize("dtype, name", [(np.float16, "fp16"), (np.float32, "fp32"),
                                         (ml_dtypes.bfloat16, "bf16"),
                                         (np.dtype(ml_dtypes.float8_e4m3fn), "e4m3")])
def test_dtypes_name_formats(dtype, name):
    assert as_format(dtype).name == name


def test_public_presets_are_the_named_formats():
    assert lowprec.E4M3 is as_format("float8_e4m3fn") and lowprec.E4M3.max == 448
    assert lowprec.E5M2.max == 57344 and lowprec.FP16.max == 65504


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown format 'fp7'.*valid names:.*bf16.*e4m3"):
        as_format("fp7")


def test_non_format_is_a_type_error():
    with pytest.raises(TypeError, match="expected a FloatFormat, a format name or a dtype"):
        as_format(3.5)
    with pytest.raises(ValueError, match="unknown format"):
        as_format(np.int8)  # a dtype, but not a float format


@pytest.mark.parametrize("kwargs, message", [
    (dict(exponent_bits=0, mantissa_bits=3), "exponent_bits must be an int in 1..11"),
    (dict(exponent_bits=4, mantissa_bits=53), "mantissa_bits must be an int in 0..52"),
    (dict(exponent_bits=4, mantissa_bits=3, specials="ocp"), "specials must be one of"),
    (dict(exponent_bits=4, mantissa_bits=3, bias=7.5), "bias must be an int"),
    (dict(exponent_bits=4, mantissa_bits=3, specials="fnuz", signed=False),
     "fnuz format needs a sign bit"),
    (dict(exponent_bits=4, mantissa_bits=3, has_zero=False), "has_zero=False is only meaningful"),
    (dict(exponent_bits=11, mantissa_bits=52, bias=0), "outside float64's range"),
])
def test_bad_definitions_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FloatFormat("bad", **kwargs)


def test_formats_are_frozen_and_hashable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        lowprec.FP16.mantissa_bits = 7
    assert {lowprec.FP16: 1}[FloatFormat("fp16", 5, 10)] == 1  # equality by defining fields


def test_default_overflow_policies():
    names = ("fp16", "bf16", "e5m2", "e4m3", "e4m3fnuz", "e2m1")
    assert [as_format(n).default_overflow for n in names] == \
        ["inf", "inf", "inf", "nan", "nan", "saturate"]


def test_fits_float32():
    assert all(f.fits_float32 for f in FORMATS.values())
    assert not FloatFormat("e11m52", 11, 52).fits_float32
    assert not FloatFormat("e9m3", 9, 3).fits_float32
