"""Bit words: the float32/float64 bit layout, random 64-bit words and the exact stochastic decision.

A leaf module (it imports only NumPy): the rounding specification (the general path of
rounding.py) and its fast paths (_fastpaths.py) both build on it, so the specification takes
its exact rule from here rather than from the code it is the reference for.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["LAYOUT", "masks", "float_bits", "random_uint64", "RandomSource", "significand",
           "stochastic_away"]

# Bit layout of the two working dtypes: unsigned twin, stored mantissa bits, exponent bias.
LAYOUT = {np.dtype(np.float32): (np.uint32, 23, 127), np.dtype(np.float64): (np.uint64, 52, 1023)}


def masks(dtype: DTypeLike) -> tuple:
    """``(uint, p, bias, sign mask, exponent mask)`` of float32 or float64 (IEEE 754-2019
    sec. 3.4)."""
    uint, p, bias = LAYOUT[np.dtype(dtype)]
    width = 8 * np.dtype(uint).itemsize
    sign = uint(1 << (width - 1))
    exponent = uint(((1 << (width - 1 - p)) - 1) << p)
    return uint, p, bias, sign, exponent


def float_bits(value: float, dtype: DTypeLike) -> int:
    """The bit pattern of ``value`` in ``dtype``, as a Python int."""
    return int(np.array(value, dtype).view(LAYOUT[np.dtype(dtype)][0]))



# --- the exact stochastic decision -------------------------------------------------------------
# An element whose magnitude lies a fraction ``f`` of a quantum above the value toward zero
# rounds away with probability exactly ``f``. Its random input is a uniform number
# ``U = 0.b1 b2 b3 ...`` whose first 64 bits are the element's word ``R``; rounding away iff
# ``U < f`` needs only as many bits of U as it takes to tell U and f apart, so further words are
# drawn only when R equals f's first 64 bits (probability 2**-64). ``random_bits=k`` models a
# k-bit hardware adder instead: away iff ``floor(f * 2**k) + (R >> (64 - k)) >= 2**k``.
_ALL64 = 0xFFFFFFFFFFFFFFFF


_RAW64 = (np.random.PCG64, np.random.PCG64DXSM, np.random.Philox, np.random.SFC64)


def random_uint64(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniform 64-bit words: the generator's raw output where it is 64 bits wide (the
    same words ``rng.integers`` gives, a sixth faster), else ``rng.integers``."""
    if type(rng.bit_generator) in _RAW64:
        return rng.bit_generator.random_raw(n)
    return rng.integers(0, _ALL64, size=n, dtype=np.uint64, endpoint=True)


@dataclass(frozen=True)
class RandomSource:
    """The random words R of one chunk for the fast paths: top bits up front, the rest on demand."""

    top16: np.ndarray  # uint16, R >> 48 for every element: almost always all that is needed
    rest: Callable[[np.ndarray], np.ndarray]  # indices -> R << 16 (uint64) of those elements
    rng: np.random.Generator  # the words after R, for exact ties of f's first 64 bits
    random_bits: int | None  # None: exact (U < f); k: a k-bit adder (section comment above)

    def full_words(self, idx: np.ndarray) -> np.ndarray:
        """R itself for the elements ``idx``."""
        return ((self.top16[idx].astype(np.uint64) << np.uint64(48))
                | (self.rest(idx) >> np.uint64(16)))

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, random_bits):
        """16 random bits per element now (a quarter of a 64-bit word each), the rest when asked."""
        top16 = random_uint64(rng, -(-n // 4)).view(np.uint16)[:n]
        return cls(top16, lambda idx: random_uint64(rng, idx.size), rng, random_bits)

    @classmethod
    def from_words(cls, words: np.ndarray, rng: np.random.Generator, random_bits):
        """Chosen 64-bit words R, one per element (tests feed the fast and general paths alike)."""
        return cls((words >> np.uint64(48)).astype(np.uint16),
                   lambda idx: words[idx] << np.uint64(16),
                   rng, random_bits)


def significand(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sig, lb)`` with ``a = sig * 2**lb`` exactly, sig < 2**53, for finite float64
    ``a >= 0``."""
    bits = a.view(np.uint64)
    field = (bits >> np.uint64(52)).astype(np.int64)
    mantissa = bits & np.uint64((1 << 52) - 1)
    sig = np.where(field > 0, mantissa | np.uint64(1 << 52), mantissa)
    return sig, np.maximum(field, 1) - 1075


def stochastic_away(rem: np.ndarray, shift: np.ndarray, words: np.ndarray,
                    rng: np.random.Generator, random_bits: int | None) -> np.ndarray:
    """True where the fraction ``f = rem / 2**shift`` (``rem < 2**shift``) rounds away.

    With ``T = floor(f * 2**64)`` (f's first 64 bits) and R = ``words``:
    full bits: away iff R < T, or R == T and the next words decide against f's next bits;
    ``random_bits=k``: away iff ``~R < T_k``, T_k = T with its low 64 - k bits cleared (the
    carry condition of the section comment, rewritten: ``R >> (64-k) >= 2**k - floor(f*2**k)``).
    """
    threshold, rest, rest_bits = _split_fraction(rem, shift)
    if random_bits is not None:
        if random_bits < 64:
            threshold &= np.uint64((_ALL64 << (64 - random_bits)) & _ALL64)
        return ~words < threshold
    result = words < threshold
    tied = (words == threshold) & (rest > 0)
    while tied.any():  # probability 2**-64 per element per round; ends as f runs out of bits
        idx = np.flatnonzero(tied)
        more = random_uint64(rng, idx.size)
        threshold, rest[idx], rest_bits[idx] = _split_fraction(rest[idx], rest_bits[idx])
        result[idx] = more < threshold
        tied[:] = False
        tied[idx] = (more == threshold) & (rest[idx] > 0)
    return result


def _split_fraction(v, nbits):
    """For the fraction ``v / 2**nbits`` (``v < 2**nbits``): its first 64 bits, and the bits
    after them as an integer with their count (``<= 0`` when nothing is left)."""
    short = nbits <= 64
    head = np.where(short, v << np.clip(64 - nbits, 0, 63).astype(np.uint64), _shr(v, nbits - 64))
    rest = np.where(short, np.uint64(0), v - _shl(_shr(v, nbits - 64), nbits - 64))
    return head, rest, nbits - 64


def _shr(v, s):
    """``v >> s`` for uint64 ``v`` and shifts ``s >= 0`` of any size."""
    return np.where(s >= 64, np.uint64(0), v >> np.clip(s, 0, 63).astype(np.uint64))


def _shl(v, s):
    """``v << s`` (mod 2**64) for uint64 ``v`` and shifts ``s >= 0`` of any size."""
    return np.where(s >= 64, np.uint64(0), v << np.clip(s, 0, 63).astype(np.uint64))
