"""Floating-point formats: a frozen dataclass of defining fields, everything else derived.

A format is fully described by its exponent and mantissa widths, its exponent bias, how it
encodes the special values, whether it has a sign bit and whether exponent field 0 holds zero
and subnormals. The derived quantities are properties named like ``numpy.finfo`` (``max``,
``tiny``, ``smallest_subnormal``, ``eps`` ...) and are tested equal to ``ml_dtypes.finfo``.

Special-value styles (``specials``):

* ``"ieee"``   all-ones exponent holds inf (mantissa 0) and NaN (anything else): FP32, FP16, E5M2.
               Without mantissa bits (E5M0) that is inf alone: no NaN.
* ``"fn"``     finite, NaN only: all-ones exponent *and* all-ones mantissa is NaN, no inf
               (OCP E4M3 = ml_dtypes ``float8_e4m3fn``: ``0x7F  # S.1111.111 = NaN``).
* ``"fnuz"``   finite, NaN at the negative-zero code ``0x80``, no -0 (``float8_e4m3fnuz``).
* ``"finite"`` every code is a number: the OCP MX element formats E3M2, E2M3, E2M1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from ._deprecation import no_attribute, renamed

__all__ = ["FloatFormat", "FormatLike", "as_format", "FORMATS", "SPECIALS", "FP32", "TF32", "FP16",
           "BF16", "E4M3", "E5M2", "E4M3FNUZ", "E5M2FNUZ", "E3M2", "E2M3", "E2M1", "E8M0"]

SPECIALS = ("ieee", "fn", "fnuz", "finite")

# The overflow policy a format uses unless the caller asks for another. IEEE-like formats go to
# infinity; fn/fnuz formats to NaN, as ml_dtypes does (its converter, ConvertImpl in
# ml_dtypes/include/float8.h, sends overflow to infinity(), which in e4m3fn is the NaN 0x7F);
# the MX element formats saturate (OCP MX v1.0, sec. 5.3, and ml_dtypes' fp4/fp6 types).
_DEFAULT_OVERFLOW = {"ieee": "inf", "fn": "nan", "fnuz": "nan", "finite": "saturate"}


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format. Only defining fields; see the properties for the rest."""

    name: str
    exponent_bits: int  # width of the exponent field
    mantissa_bits: int  # stored fraction bits (the leading 1 of normals is implicit)
    bias: int | None = None  # exponent bias; None means the IEEE default 2**(exponent_bits-1) - 1
    specials: str = "ieee"  # how inf/NaN are encoded: one of SPECIALS (module docstring)
    signed: bool = True  # False for unsigned formats such as the MX scale E8M0
    has_zero: bool = True  # False: exponent field 0 is a normal power of two (E8M0), no subnormals
    description: str = field(default="", compare=False)  # one line for tables and docs

    def __post_init__(self):
        if not isinstance(self.exponent_bits, int) or not 1 <= self.exponent_bits <= 11:
            raise ValueError(f"exponent_bits must be an int in 1..11, got {self.exponent_bits!r}")
        if not isinstance(self.mantissa_bits, int) or not 0 <= self.mantissa_bits <= 52:
            raise ValueError(f"mantissa_bits must be an int in 0..52, got {self.mantissa_bits!r}")
        if self.specials not in SPECIALS:
            raise ValueError(f"specials must be one of {SPECIALS}, got {self.specials!r}")
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (self.exponent_bits - 1) - 1)
        if not isinstance(self.bias, int):
            raise ValueError(f"bias must be an int, got {self.bias!r}")
        if self.specials == "fnuz" and not self.signed:
            raise ValueError("an fnuz format needs a sign bit: its NaN is the negative-zero code")
        if not self.has_zero and self.mantissa_bits != 0:
            raise ValueError("has_zero=False is only meaningful for formats without mantissa bits")
        # Every value must be a float64 so that rounding results can be returned exactly.
        if self.emin - self.mantissa_bits < -1074 or self.emax > 1023:
            raise ValueError(f"format {self.name!r} has values outside float64's range")

    # --- sizes -------------------------------------------------------------------------
    @property
    def bits(self) -> int:
        """Total storage width in bits."""
        return int(self.signed) + self.exponent_bits + self.mantissa_bits

    @property
    def nexp(self) -> int:
        return self.exponent_bits

    @property
    def nmant(self) -> int:
        return self.mantissa_bits

    # --- special values ------------------------------------------------------------------
    @property
    def has_inf(self) -> bool:
        return self.specials == "ieee"

    @property
    def has_nan(self) -> bool:
        # IEEE tells NaN from inf by a nonzero mantissa: without mantissa bits there is no NaN
        return self.specials != "finite" and not (self.specials == "ieee"
                                                  and self.mantissa_bits == 0)

    @property
    def has_negative_zero(self) -> bool:
        return self.signed and self.has_zero and self.specials != "fnuz"

    @property
    def default_overflow(self) -> str:
        """What an overflowing result becomes unless ``overflow=`` says otherwise."""
        return _DEFAULT_OVERFLOW[self.specials]

    # --- exponent range ------------------------------------------------------------------
    @property
    def _max_field(self) -> int:
        """Largest exponent field that holds finite numbers."""
        top = 2**self.exponent_bits - 1
        # IEEE reserves the top field for inf/NaN; fn reserves only its all-ones mantissa,
        # which with no mantissa bits (E8M0) is the whole field.
        if self.specials == "ieee" or (self.specials == "fn" and self.mantissa_bits == 0):
            return top - 1
        return top

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite binade."""
        return self._max_field - self.bias

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal binade."""
        return (1 if self.has_zero else 0) - self.bias

    @property
    def minexp(self) -> int:
        return self.emin

    @property
    def maxexp(self) -> int:
        return self.emax + 1

    # --- values (float64) ----------------------------------------------------------------
    @property
    def max(self) -> float:
        """Largest finite value."""
        m = self.mantissa_bits
        top_fraction = 2**m - 1
        if self.specials == "fn" and m > 0:
            top_fraction -= 1  # S.1111.111 is NaN, so the largest is S.1111.110
        return math.ldexp(1 + top_fraction / 2**m, self.emax)

    @property
    def min(self) -> float:
        """Most negative finite value (smallest positive for unsigned formats, as ml_dtypes)."""
        return -self.max if self.signed else self.smallest_subnormal

    @property
    def tiny(self) -> float:
        """Smallest positive normal value."""
        return math.ldexp(1.0, self.emin)

    @property
    def smallest_normal(self) -> float:
        return self.tiny

    @property
    def smallest_subnormal(self) -> float:
        """Smallest positive value (equal to ``tiny`` in formats without subnormals)."""
        return math.ldexp(1.0, self.emin - self.mantissa_bits) if self.has_zero else self.tiny

    @property
    def eps(self) -> float:
        """Distance from 1 to the next larger value."""
        return math.ldexp(1.0, -self.mantissa_bits)

    @property
    def epsneg(self) -> float:
        """Distance from 1 to the next smaller value (1.0 when 0 is the next smaller value)."""
        if self.emin < 0:  # the binade below 1 is normal: spacing 2**(-1 - m)
            return math.ldexp(1.0, -self.mantissa_bits - 1)
        # 1 <= tiny: below 1 are subnormals with the fixed spacing 2**(emin - m) (E2M1: 0.5)
        return min(math.ldexp(1.0, self.emin - self.mantissa_bits), 1.0)

    @property
    def machep(self) -> int:
        return -self.mantissa_bits

    @property
    def negep(self) -> int:
        return int(math.log2(self.epsneg))

    @property
    def precision(self) -> int:
        """Approximate number of decimal digits (numpy.finfo's definition)."""
        return int(-math.log10(self.eps))

    @property
    def fits_float32(self) -> bool:
        """True when every value of the format is a float32 (so float32 results stay exact)."""
        return (self.mantissa_bits <= 23 and self.emax <= 127
                and self.emin - self.mantissa_bits >= -149)

    def __str__(self) -> str:
        return self.name


def _ieee(name, e, m, description):
    return FloatFormat(name, e, m, description=description)


FP32 = _ieee("fp32", 8, 23, "IEEE binary32")
TF32 = _ieee("tf32", 8, 10, "NVIDIA TensorFloat-32: FP32 range, FP16 precision")
FP16 = _ieee("fp16", 5, 10, "IEEE binary16")
BF16 = _ieee("bf16", 8, 7, "bfloat16: FP32 range, 8-bit precision")
E4M3 = FloatFormat("e4m3", 4, 3, specials="fn",
                   description="OCP FP8 E4M3 (ml_dtypes float8_e4m3fn)")
E5M2 = _ieee("e5m2", 5, 2, "OCP FP8 E5M2 (ml_dtypes float8_e5m2)")
E4M3FNUZ = FloatFormat("e4m3fnuz", 4, 3, bias=8, specials="fnuz",
                       description="FP8 E4M3 with bias 8, NaN at 0x80, no -0 (Graphcore/AMD)")
E5M2FNUZ = FloatFormat("e5m2fnuz", 5, 2, bias=16, specials="fnuz",
                       description="FP8 E5M2 with bias 16, NaN at 0x80, no -0 (Graphcore/AMD)")
E3M2 = FloatFormat("e3m2", 3, 2, specials="finite", description="OCP MX FP6 E3M2 element")
E2M3 = FloatFormat("e2m3", 2, 3, specials="finite", description="OCP MX FP6 E2M3 element")
E2M1 = FloatFormat("e2m1", 2, 1, specials="finite", description="OCP MX FP4 E2M1 element")
E8M0 = FloatFormat("e8m0", 8, 0, specials="fn", signed=False, has_zero=False,
                   description="OCP MX shared scale: powers of two 2^-127..2^127, NaN 0xFF")

# Every preset format by name (read-only).
FORMATS = MappingProxyType({f.name: f for f in (FP32, TF32, FP16, BF16, E4M3, E5M2, E4M3FNUZ,
                                                 E5M2FNUZ, E3M2, E2M3, E2M1, E8M0)})

# What a function taking a format accepts: a FloatFormat, a name, or a NumPy/ml_dtypes dtype.
FormatLike = FloatFormat | str | np.dtype | type

# Names accepted wherever a format is: our own, ml_dtypes/NumPy dtype names and common aliases.
_ALIASES = {
    "fp32": FP32, "float32": FP32, "single": FP32, "binary32": FP32,
    "tf32": TF32, "tensorfloat32": TF32,
    "fp16": FP16, "float16": FP16, "half": FP16, "binary16": FP16,
    "bf16": BF16, "bfloat16": BF16,
    "e4m3": E4M3, "e4m3fn": E4M3, "fp8_e4m3": E4M3, "float8_e4m3fn": E4M3,
    "e5m2": E5M2, "fp8_e5m2": E5M2, "float8_e5m2": E5M2,
    "e4m3fnuz": E4M3FNUZ, "float8_e4m3fnuz": E4M3FNUZ,
    "e5m2fnuz": E5M2FNUZ, "float8_e5m2fnuz": E5M2FNUZ,
    "e3m2": E3M2, "fp6_e3m2": E3M2, "e3m2fn": E3M2, "float6_e3m2fn": E3M2,
    "e2m3": E2M3, "fp6_e2m3": E2M3, "e2m3fn": E2M3, "float6_e2m3fn": E2M3,
    "e2m1": E2M1, "fp4": E2M1, "fp4_e2m1": E2M1, "e2m1fn": E2M1, "float4_e2m1fn": E2M1,
    "e8m0": E8M0, "e8m0fnu": E8M0, "float8_e8m0fnu": E8M0,
}


def as_format(fmt: FormatLike) -> FloatFormat:
    """Return the FloatFormat named by ``fmt``: a FloatFormat, a name, or a NumPy/ml_dtypes
    dtype."""
    if isinstance(fmt, FloatFormat):
        return fmt
    key = fmt
    if not isinstance(fmt, str):
        try:
            key = np.dtype(fmt).name
        except TypeError:
            raise TypeError(f"expected a FloatFormat, a format name or a dtype, got {fmt!r}"
                            ) from None
    found = _ALIASES.get(key.strip().lower())
    if found is None:
        raise ValueError(f"unknown format {fmt!r}; valid names: {', '.join(sorted(_ALIASES))}")
    return found


def __getattr__(name: str):
    if name == "PRESETS":  # the 0.1 name: a tuple of the formats, not keyed by name
        return renamed("lowprec.formats.PRESETS", "lowprec.FORMATS (name -> FloatFormat)",
                       tuple(FORMATS.values()))
    raise no_attribute(__name__, name)
