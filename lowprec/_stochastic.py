"""The exact stochastic-rounding decision, shared by the general path and the fast paths.

An element whose magnitude lies a fraction ``f`` of a quantum above the value toward zero
rounds away with probability exactly ``f``. Its random input is a uniform number
``U = 0.b1 b2 b3 ...`` whose first 64 bits are the element's word ``R``; rounding away iff
``U < f`` needs only as many bits of U as it takes to tell U and f apart, so further words are
drawn only when R equals f's first 64 bits (probability 2**-64). ``random_bits=k`` models a
k-bit hardware adder instead: away iff ``floor(f * 2**k) + (R >> (64 - k)) >= 2**k``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

_ALL64 = 0xFFFFFFFFFFFFFFFF


def random_uint64(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniform 64-bit words."""
    return rng.integers(0, _ALL64, size=n, dtype=np.uint64, endpoint=True)


@dataclass(frozen=True)
class RandomSource:
    """The random words R of one chunk for the fast paths: top bits up front, the rest on demand."""

    top16: np.ndarray  # uint16, R >> 48 for every element: almost always all that is needed
    rest: Callable[[np.ndarray], np.ndarray]  # indices -> R << 16 (uint64) of those elements
    rng: np.random.Generator  # the words after R, for exact ties of f's first 64 bits
    random_bits: int | None  # None: exact (U < f); k: a k-bit adder (module docstring)

    def full_words(self, idx):
        """R itself for the elements ``idx``."""
        return (self.top16[idx].astype(np.uint64) << np.uint64(48)) | (self.rest(idx) >> np.uint64(16))

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, random_bits):
        """16 random bits per element now (a quarter of a 64-bit word each), the rest when asked."""
        top16 = random_uint64(rng, -(-n // 4)).view(np.uint16)[:n]
        return cls(top16, lambda idx: random_uint64(rng, idx.size), rng, random_bits)

    @classmethod
    def from_words(cls, words: np.ndarray, rng: np.random.Generator, random_bits):
        """Chosen 64-bit words R, one per element (tests feed the fast and general paths alike)."""
        return cls((words >> np.uint64(48)).astype(np.uint16), lambda idx: words[idx] << np.uint64(16),
                   rng, random_bits)


def significand(a):
    """``(sig, lb)`` with ``a = sig * 2**lb`` exactly, sig < 2**53, for finite float64 ``a >= 0``."""
    bits = a.view(np.uint64)
    field = (bits >> np.uint64(52)).astype(np.int64)
    mantissa = bits & np.uint64((1 << 52) - 1)
    sig = np.where(field > 0, mantissa | np.uint64(1 << 52), mantissa)
    return sig, np.maximum(field, 1) - 1075


def away(rem, shift, words, rng, random_bits):
    """True where the fraction ``f = rem / 2**shift`` (``rem < 2**shift``) rounds away.

    With ``T = floor(f * 2**64)`` (f's first 64 bits) and R = ``words``:
    full bits: away iff R < T, or R == T and the next words decide against f's next bits;
    ``random_bits=k``: away iff ``~R < T_k``, T_k = T with its low 64 - k bits cleared (the
    carry condition of the module docstring, rewritten: ``R >> (64-k) >= 2**k - floor(f*2**k)``).
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
