"""Answer checks for the lab notebooks: right or wrong with a hint, never the answer.

``check("02.3", answer_3_pytorch, answer_3_deepspeed)`` prints one line: ``correct``, ``not
right yet`` with a hint, or ``not answered yet`` while an answer is still the placeholder ``...``
(or None). It returns nothing and never raises on a wrong answer, so neither a message, nor a
traceback, nor a repr can show the expected value.

The expected answers are not stored here. Each check recomputes what the exercise asks from
its definition with a tool other than the code the lab teaches where one exists (NumPy's
float16, ml_dtypes, fractions.Fraction, the scalers' update rules) and tests the student's answer
against it; a student who reads this file learns how to work the answer out, which is the
exercise itself. Hints say what to reconsider, never the value.

Lab 6's hidden accumulator lives here too: :func:`hidden_accumulator` draws a tensor-core model
from a seed and hands out only a black-box ``dot``, which the student fingerprints with the
probes of Fasi, Higham, Mikaitis & Pranesh ("Numerical behavior of NVIDIA tensor cores", PeerJ
Computer Science 7:e330, 2021); :func:`gpu_dot` is the same black box on a real tensor core.
"""
from __future__ import annotations

import ast
import copy
import functools
import inspect
import itertools
import json
import math
import os
from fractions import Fraction
from pathlib import Path

import ml_dtypes
import numpy as np
from numpy.typing import ArrayLike

from . import accumulate, tensorcore
from .formats import FP16
from .gpu import gpu_status  # CuPy itself is imported only when gpu_status is called
from .gpu.kernels import INSTRUCTIONS
from .gpu.probe import CupyBackend, tile
from .scaling import (DeepSpeedConfig, DelayedScaling, DynamicLossScaler, DynamicScalingConfig,
                      HysteresisLossScaler, quantize)

NOT_ANSWERED = "not answered yet"
CORRECT = "correct"
WRONG = "not right yet"


class _Unreadable(Exception):
    """The answer has the wrong shape or type; the message says what was expected."""


def _number(x, what="a number") -> float:
    if isinstance(x, (str, bytes)):
        raise _Unreadable(f"expected {what}, not text")
    try:
        return float(x)
    except (TypeError, ValueError):
        raise _Unreadable(f"expected {what}") from None


def _integer(x) -> int:
    value = _number(x, "a whole number")
    if not value.is_integer():
        raise _Unreadable("expected a whole number")
    return int(value)


def _pair(x, what) -> tuple:
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        raise _Unreadable(f"expected a pair {what}")
    return _number(x[0]), _number(x[1])


def _is_power_of_two(v: float) -> bool:
    return v > 0 and math.frexp(v)[0] == 0.5


# --- lab 1: formats and rounding ---------------------------------------------------------------
def _01_1(answer):
    if _number(answer) != float(np.finfo(np.float16).smallest_subnormal):
        return ("think emin - mantissa_bits: the smallest subnormal has only its last mantissa "
                "bit set")


def _01_2(answer):
    n = _integer(answer)
    bf16 = ml_dtypes.bfloat16
    first_missed = next(i for i in itertools.count(1) if float(bf16(i)) != i)
    if n < first_missed:
        return "BF16 holds that integer exactly: look higher"
    if n > first_missed:
        return "BF16 misses a smaller integer already: count its significant bits"


def _01_3(value, code):
    e4m3 = ml_dtypes.float8_e4m3fn
    if _number(value) != float(e4m3(300.0)):
        return ("the value is not the nearest E4M3 number to 300: list the E4M3 numbers in "
                "[256, 512)")
    if _integer(code) != int(np.array(e4m3(300.0)).view(np.uint8)):
        return ("the value is right, the bit pattern is not: sign, 4 exponent bits (bias 7), "
                "3 mantissa bits")


# --- lab 2: underflow and loss scaling ----------------------------------------------------------
def _02_1(scale):
    s = _number(scale)
    if not _is_power_of_two(s):
        return "give a power of two"
    if np.float16(2.0**-30 * s) == 0:
        return "that scale still flushes the gradient to zero (mind the tie at 2^-25)"
    if np.float16(2.0**-30 * s / 2) != 0:
        return "a smaller power of two also works: look lower"


def _02_2(scale):
    s = _number(scale)
    if not _is_power_of_two(s):
        return "give a power of two"
    with np.errstate(over="ignore"):
        if not np.isfinite(np.float16(3.0 * s)):
            return "3.0 times that scale overflows FP16"
        if np.isfinite(np.float16(3.0 * s * 2)):
            return "twice that scale still fits: look higher"


def _replay(scaler, pattern):
    for c in pattern:
        scaler.update(c == "X")
    return scaler.scale


def _02_3(pytorch, deepspeed):
    pattern = "XXX.....X......."
    hints = []
    if _number(pytorch) != _replay(DynamicLossScaler(
            DynamicScalingConfig(init_scale=2.0**16, growth_interval=3)), pattern):
        hints.append("PyTorch's scale is off: halve on every overflow, double after 3 clean "
                     "steps in a row")
    if _number(deepspeed) != _replay(HysteresisLossScaler(
            DeepSpeedConfig(init_scale=2.0**16, scale_window=3, hysteresis=2)), pattern):
        hints.append("DeepSpeed's scale is off: follow the hysteresis counter, and grow one "
                     "step later")
    return "; ".join(hints) or None


# --- lab 3: master weights and stochastic rounding ---------------------------------------------
def _03_1(up, down):
    w, u, d = np.float16(4), np.float16(_number(up)), np.float16(_number(down))   # NumPy's float16
    hints = []
    if not (w + u != w and w + np.float16(u / 2) == w):
        hints.append("upward: not the smallest power of two that moves 4 (ties go to even)")
    if not (w - d != w and w - np.float16(d / 2) == w):
        hints.append("downward: not the smallest power of two that moves 4 (the spacing "
                     "below 4 is finer)")
    return "; ".join(hints) or None


def _03_2(probability):
    x = Fraction(1) + Fraction(1, 2**13)
    lower = Fraction(float(np.float16(1)))
    upper = Fraction(float(np.nextafter(np.float16(1), np.float16(2))))
    try:
        given = Fraction(probability)
    except (TypeError, ValueError):
        raise _Unreadable("expected a number or a Fraction") from None
    if given != (x - lower) / (upper - lower):
        return "not the exact probability: distance to the lower neighbour over the gap"


def _03_3(w):
    weight = _number(w)
    if not _is_power_of_two(weight):
        return "give a power of two"

    def survives(v):  # ml_dtypes' bfloat16, an independent implementation of BF16
        return float(ml_dtypes.bfloat16(v + 0.001)) != v

    if not survives(weight):
        return "at that weight the update is lost: look lower"
    if survives(2 * weight):
        return "the update still survives at twice that weight: look higher"


# --- lab 4: FP8 scaling ----------------------------------------------------------------------
def _04_1(limits):
    if not isinstance(limits, dict) or set(limits) != {"e2m3", "e3m2"}:
        raise _Unreadable('expected a dict {"e2m3": (max, smallest subnormal), "e3m2": (...)}')
    wrong = []
    for name, dtype in (("e2m3", ml_dtypes.float6_e2m3fn), ("e3m2", ml_dtypes.float6_e3m2fn)):
        info = ml_dtypes.finfo(dtype)
        largest, smallest = _pair(limits[name], "(max, smallest subnormal)")
        if largest != float(info.max):
            wrong.append(f"{name} max")
        if smallest != float(info.smallest_subnormal):
            wrong.append(f"{name} smallest subnormal")
    if wrong:
        return "check " + ", ".join(wrong) + " against the bit layout"


def _04_2(scale):
    state = DelayedScaling(margin=1, amax_history_len=4).new_state("forward")
    for a in (2.0, 3.5, 1.0, 0.5):
        quantize(np.array([a, -a / 3], np.float32), state)
    rule = Fraction(448, 2**1) / max(Fraction(a) for a in (2.0, 3.5, 1.0, 0.5))
    if not _number(scale) == float(rule) == float(state.scale):
        return "not (fp8_max / 2**margin) / max(amax history)"


AMAX_04_3 = 30.4   # 1.9 x 2^4: a significand above 1.75, where the two rules differ


def _04_3(ocp, te):
    e4m3 = ml_dtypes.float8_e4m3fn  # ml_dtypes rounds, math picks the exponent
    ocp_scale = 2.0 ** (math.floor(math.log2(AMAX_04_3)) - 8)
    ocp_value = float(e4m3(min(AMAX_04_3 / ocp_scale, 448.0))) * ocp_scale  # saturate, then round
    te_scale = 2.0 ** math.ceil(math.log2(AMAX_04_3 / 448))
    te_value = float(e4m3(AMAX_04_3 / te_scale)) * te_scale
    hints = []
    o, t = _pair(ocp, "(scale, value)"), _pair(te, "(scale, value)")
    if o[0] != ocp_scale:
        hints.append("OCP scale: floor(log2 amax) - emax(E4M3)")
    elif o[1] != ocp_value:
        hints.append("OCP value: scale, saturate at 448, round, scale back")
    if t[0] != te_scale:
        hints.append("TE scale: amax / 448 rounded up to a power of two")
    elif t[1] != te_value:
        hints.append("TE value: scale, round to E4M3, scale back")
    return "; ".join(hints) or None


# --- lab 5: accumulation and tensor cores -----------------------------------------------------
def _stalls(dtype, step, limit):
    """(where ``0 + step + step + ...`` in ``dtype`` stops, within ``limit`` additions, and the
    number of additions that reach it)."""
    s, step, reached = dtype(0), dtype(step), 0
    for i in range(1, limit + 1):
        total = dtype(s + step)
        if total != s:
            s, reached = total, i
    return float(s), reached


def _05_1(value):
    if _number(value) != _stalls(np.float16, 1.0, 5000)[0]:   # NumPy's float16 arithmetic
        return "count FP16's significant bits, and mind the tie"


def _05_2(value):
    if _number(value) != _stalls(ml_dtypes.bfloat16, 0.01, 3000)[0]:   # ml_dtypes' bfloat16
        return "the sum stops where 0.01 is less than half the spacing: find that binade"


def _truncated_sum(terms, fraction_bits, largest_exponent=0):
    unit = Fraction(2) ** (largest_exponent - fraction_bits)
    return float(sum(math.trunc(Fraction(t) / unit) for t in terms) * unit)   # exact rationals


def _05_3(v100, a100):
    c = -(1 - 3 * 2.0**-24)
    hints = []
    if _number(v100) != _truncated_sum([1.0, c], 23):
        hints.append("V100: truncate c toward zero (its magnitude shrinks) to a multiple of "
                     "2^-23 first")
    if _number(a100) != _truncated_sum([1.0, c], 24):
        hints.append("A100: with F = 24, is anything of c lost?")
    return "; ".join(hints) or None


# --- lab 6: fingerprinting a tensor core -------------------------------------------------------
BLOCKS = (4, 8, 16, 32)           # products fused per block (V100 4, A100 8, H100 16 for FP16)
FRACTION_BITS = (24, 25, 26, 27)  # bits kept below the largest exponent: 23 + 1..4 extra bits
OUTPUT_ROUNDINGS = ("toward_zero", "nearest")
SPLITS = (1, 2)   # K computed as one chain of blocks, or as two halves added in FP32 (split-K)


def _draw(seed: int):
    """The hidden model of ``hidden_accumulator(seed)``: FP16 inputs, FP32 accumulator."""
    rng = np.random.default_rng([seed, 2021])   # 2021: a fixed salt, so seed 0 is no preset
    return tensorcore.TensorCoreModel(f"hidden_{seed}", FP16, block=int(rng.choice(BLOCKS)),
                                      fraction_bits=int(rng.choice(FRACTION_BITS)),
                                      output_rounding=str(rng.choice(OUTPUT_ROUNDINGS)),
                                      split_k=int(rng.choice(SPLITS)))


class HiddenAccumulator:
    """A black-box tensor core: ``acc.dot(a, b, c=0.0)`` is ``c + sum_k a[k] * b[k]`` with FP16
    a and b, an FP32 c and an FP32 result, computed by a tensor-core model drawn from ``seed``.
    Its block size, fraction bits, output rounding and split are what Lab 6 asks you to find."""

    def __init__(self, seed: int):
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)

    def __repr__(self):
        return f"HiddenAccumulator(seed={self.seed})"

    def dot(self, a: ArrayLike, b: ArrayLike, c: float = 0.0) -> float:
        a, b = _vectors(a, b)
        return float(tensorcore.dot(a, b, _draw(self.seed), c=np.float64(c)))


def _vectors(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a and b must be vectors of one length, got shapes {a.shape} "
                         f"and {b.shape}")
    return a, b


def hidden_accumulator(seed: int) -> HiddenAccumulator:
    """The black box of Lab 6 for ``seed`` (any non-negative integer: a student number will do)."""
    return HiddenAccumulator(seed)


def gpu_dot(a: ArrayLike, b: ArrayLike, c: float = 0.0) -> float:
    """``c + sum_k a[k] * b[k]`` on this machine's tensor core (one FP16 ``mma.sync`` with an FP32
    accumulator per 16 products, chained along K). Raises RuntimeError, with the reason, when no
    usable CUDA GPU and CuPy are present."""
    backend = _gpu_backend()
    instr = INSTRUCTIONS["f16.f32"]
    a, b = _vectors(a, b)
    k = -(-len(a) // instr.k) * instr.k        # zero-padded to whole instructions
    tile_a, tile_b, tile_c = (t[None] for t in tile(instr, k, dict(enumerate(zip(a, b))), c))
    return float(backend.run(instr, tile_a, tile_b, tile_c)[0, 0, 0])


@functools.lru_cache(maxsize=1)
def _gpu_backend():
    """One CuPy backend per session, so its compiled kernel is reused across probes."""
    usable, reason = gpu_status()
    if not usable:
        raise RuntimeError(f"no tensor core to probe: {reason}")
    return CupyBackend()


def _hidden(accumulator):
    if not isinstance(accumulator, HiddenAccumulator):
        raise _Unreadable("pass the accumulator as the last argument: check(id, answer, acc)")
    return _draw(accumulator.seed)


def _06_1(block, accumulator):
    if _integer(block) != _hidden(accumulator).block:
        return "probe 1*1 + (-1)*1 + a tiny product at position j: from which j does it survive?"


def _06_2(fraction_bits, accumulator):
    if _integer(fraction_bits) != _hidden(accumulator).fraction_bits:
        return ("cancel 1*1 against (-1)*1 in one block and find the smallest term 2^-m that "
                "survives")


def _06_3(rounding, accumulator):
    if rounding not in OUTPUT_ROUNDINGS:
        raise _Unreadable(f"expected one of {', '.join(map(repr, OUTPUT_ROUNDINGS))}")
    if rounding != _hidden(accumulator).output_rounding:
        return "add 1 and 1.5 ulp of FP32 at 1 in one block: which FP32 neighbour comes back?"


def _06_4(slices, accumulator):
    if _integer(slices) != _hidden(accumulator).split_k:
        return "put 2^-30 in the first half and a cancelling pair 1, -1 at the start of the second"


# --- lab 7: summation (CS336) -------------------------------------------------------------
def _07_1(spacing):
    if _number(spacing) != float(np.spacing(np.float16(100))):   # NumPy's float16
        return "in [2^e, 2^(e+1)) FP16's spacing is 2^(e-10): which e holds 100?"


def _07_2(value, additions):
    stuck, reached = _stalls(np.float16, 0.01, 20_000)   # NumPy's float16, one addition at a time
    if _number(value) != stuck:
        return "not where the sum stops: compare 0.01 with half the spacing binade by binade"
    if _integer(additions) != reached:
        return "right value, wrong count: add up the additions each binade takes"


def _pairwise16(values):            # textbook recursive pairwise summation in NumPy's float16
    if len(values) == 1:
        return values[0]
    half = len(values) // 2
    return np.float16(_pairwise16(values[:half]) + _pairwise16(values[half:]))


def _07_3(value):
    addends = [np.float16(0.01)] * 1000
    ours = float(accumulate.sum(np.full(1000, float(np.float16(0.01))), FP16, order="pairwise"))
    if not _number(value) == float(_pairwise16(addends)) == ours:
        return "run the pairwise order (or reason about the FP16 number nearest the exact sum)"


# --- lab 8: stagnation -------------------------------------------------------------------
def _stagnation(dtype, n_max=100_000):
    s = dtype(0)
    for n in range(1, n_max + 1):
        new = dtype(float(s) + float(dtype(1.0 / n)))   # exact float64 sum, rounded once
        if new == s:
            return float(s), n
        s = new
    raise AssertionError("no stagnation")


def _08_1(value, term):
    stuck, first = _stagnation(ml_dtypes.float8_e4m3fn)   # ml_dtypes' E4M3
    if _number(value) != stuck:
        return "not where the E4M3 sum stops: E4M3 has 3 fraction bits"
    if _integer(term) != first:
        return "right value; the term is the first 1/n that no longer changes it"


def _08_2(half_ulp, largest_n):
    stuck, _ = _stagnation(np.float16)
    half = float(np.spacing(np.float16(stuck))) / 2   # NumPy's spacing of float16
    hints = []
    if _number(half_ulp) != half:
        hints.append("half an ulp: find the binade [2^e, 2^(e+1)) of the stuck sum, ulp 2^(e-10)")
    n = _integer(largest_n)
    if not (n > 0 and 1 / n >= half > 1 / (n + 1)):
        hints.append("n: 1/n must be at least half an ulp and 1/(n+1) below it")
    return "; ".join(hints) or None


GAMMA = 0.5772156649015329   # Euler's constant


def _08_3(n_estimate):
    n = 1.0   # the smallest n with 1/n below half an FP32 ulp of the estimated H_n
    while 1 / n >= float(np.spacing(np.float32(math.log(n) + GAMMA))) / 2:
        n *= 1.01
    guess = _number(n_estimate)
    if not n / 2 < guess < 2 * n:
        return "not within a factor 2: " + ("too small" if guess <= n / 2 else "too large")


# --- lab 9: choosing a loss scale ---------------------------------------------------------------
def _histogram(counts, exponents):
    counts, exponents = np.asarray(counts), np.asarray(exponents)
    if counts.shape != exponents.shape or counts.ndim != 1:
        raise _Unreadable("pass the histogram too: check(id, answer, counts, exponents)")
    return counts, exponents


def _09_1(share, counts, exponents):
    counts, exponents = _histogram(counts, exponents)
    # one value per bin (1.5 x its lower edge), rounded by NumPy's float16, weighted by its count
    flushed = np.float16(1.5 * np.exp2(exponents.astype(float))) == 0
    expected = float(np.dot(counts, flushed)) / float(counts.sum())
    if abs(_number(share) - expected) > 1e-9:
        return "which bins lie entirely at or below 2^-25? give a share between 0 and 1"


def _09_2(k, counts, exponents):
    counts, exponents = _histogram(counts, exponents)

    def share_below(k):                  # share of values with floor(log2(|g| * 2^k)) < -24
        return counts[exponents + k < -24].sum() / counts.sum()

    k = _integer(k)
    if share_below(k) > 0.01:
        return "more than 1% still lies below 2^-24: look higher"
    if share_below(k - 1) <= 0.01:
        return "a smaller scale would also do: look lower"


def _09_3(k, amax):
    k, amax = _integer(k), _number(amax)
    with np.errstate(over="ignore"):
        if not np.isfinite(np.float16(amax * 2.0**k)):
            return "amax times that scale overflows FP16: look lower"
        if np.isfinite(np.float16(amax * 2.0 ** (k + 1))):
            return "twice that scale still fits: look higher"


def _09_4(k, found_inf):
    flags = np.asarray(found_inf, dtype=bool)
    scaler = HysteresisLossScaler(DeepSpeedConfig(init_scale=2.0**16, scale_window=20,
                                                  hysteresis=2))
    for overflow in flags:
        scaler.update(bool(overflow))
    if 2.0 ** _integer(k) != scaler.scale:
        return "replay the rule step by step: the hysteresis counter absorbs an overflow first"


# --- lab 10: block scaling, MXFP4 against NVFP4 ---------------------------------------------------
AMAX_10_1 = 3.5   # the largest value of the block of Exercise 10.1


def _10_1(mxfp4, nvfp4):
    e2m1, e4m3 = ml_dtypes.float4_e2m1fn, ml_dtypes.float8_e4m3fn  # ml_dtypes rounds
    mx_scale = 2.0 ** (math.floor(math.log2(AMAX_10_1)) - 2)  # OCP MX: floor(log2 amax) - emax
    mx_value = float(e2m1(min(AMAX_10_1 / mx_scale, 6.0))) * mx_scale
    nv_scale = float(e4m3(AMAX_10_1 / 6.0))  # NVFP4, one level: amax / 6 rounded to E4M3
    nv_value = float(e2m1(min(AMAX_10_1 / nv_scale, 6.0))) * nv_scale
    hints = []
    if _number(mxfp4) != mx_value:
        hints.append("MXFP4: scale 2^(floor(log2 amax) - 2), divide, saturate at 6, round to "
                     "E2M1, multiply back")
    if _number(nvfp4) != nv_value:
        hints.append("NVFP4: scale = amax / 6 rounded to E4M3, divide, saturate at 6, round to "
                     "E2M1, multiply back")
    return "; ".join(hints) or None


def _10_2(amax, nonzero):
    i = np.arange(16)  # H_16[k, j] = (-1)**popcount(k & j); a spike at k picks row k of M (k = 5)
    row = np.array([(-1.0) ** bin(int(k) & 5).count("1") for k in i]) * 8.0 / math.sqrt(16)
    hints = []
    if _number(amax) != float(np.abs(row).max()):
        hints.append("amax: every entry of M is +-1/sqrt(d)")
    if _integer(nonzero) != int(np.count_nonzero(row)):
        hints.append("count: a row of a Hadamard matrix has no zero")
    return "; ".join(hints) or None


_CHECKS = {name[1:].replace("_", "."): f for name, f in list(globals().items())
           if name[:1] == "_" and name[1:3].isdigit() and callable(f)}
EXERCISES = tuple(sorted(_CHECKS))


def check(exercise: str, *answers: object) -> None:
    """Print whether ``answers`` solve ``exercise`` ("02.3"): correct, not right yet with a hint,
    or not answered yet while an answer is still ``...`` or None. Never prints the answer."""
    if exercise not in _CHECKS:
        raise ValueError(f"unknown exercise {exercise!r}; the exercises are {', '.join(EXERCISES)}")
    if not answers or any(a is Ellipsis or a is None for a in answers):
        print(f"Exercise {exercise}: {NOT_ANSWERED} "
              "(replace the ... with your answer and run the cell)")
        return
    verify = _CHECKS[exercise]
    try:
        inspect.signature(verify).bind(*answers)
    except TypeError:
        hint = "wrong number of answers: pass every answer_... of the exercise, in order"
    else:
        try:
            hint = verify(*answers)
        except _Unreadable as problem:
            hint = str(problem)
    print(f"Exercise {exercise}: {CORRECT}" if hint is None
          else f"Exercise {exercise}: {WRONG}. Hint: {hint}")


# --- the student build ------------------------------------------------------------------------
# The notebooks in notebooks/ are the solutions. Cells tagged "solution" hold answers (code) or
# derivations that give them away (markdown); the build replaces each answer cell by a
# placeholder that assigns `...` to the same names, drops the markdown ones, clears every output,
# and writes the pip requirement of the setup cell. One source, so the two cannot drift.
SOLUTION_TAG = "solution"
SETUP_TAG = "setup"
_SOURCE_LINE = 'LAB_SOURCE = ""'


def _placeholder(source: str) -> str:
    """The student's version of an answer cell: every name it assigns, set to ``...``; every
    function it defines, as a stub with the same signature."""
    lines = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            doc = ast.get_docstring(node)
            lines += [f"def {node.name}({ast.unparse(node.args)}):",
                      *([f'    """{doc}"""'] if doc else []), "    ...  # your code", ""]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names = [target] if isinstance(target, ast.Name) else getattr(target, "elts", [])
                lines += [f"{name.id} = ...  # your answer" for name in names]
    if not any(line.endswith("# your answer") for line in lines):
        raise ValueError(f"a solution cell must assign an answer_... name:\n{source}")
    return "\n".join(lines)


def student_notebook(notebook: dict, source: str = "") -> dict:
    """The student version of a solution notebook (a dict as json.load returns it)."""
    cells = []
    for cell in copy.deepcopy(notebook["cells"]):
        tags = cell.get("metadata", {}).get("tags", [])
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if SOLUTION_TAG in tags:
            if cell["cell_type"] != "code":
                continue
            text = _placeholder(text)
            cell["metadata"]["tags"] = [t for t in tags if t != SOLUTION_TAG] + ["answer"]
        if SETUP_TAG in tags:
            if _SOURCE_LINE not in text:
                raise ValueError(f"the setup cell must contain {_SOURCE_LINE!r}")
            text = text.replace(_SOURCE_LINE, f"LAB_SOURCE = {json.dumps(source)}")
        cell["source"] = text.splitlines(keepends=True)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
    return {**notebook, "cells": cells}


def default_notebooks() -> Path:
    """notebooks/ of the checkout this package was imported from."""
    return Path(__file__).resolve().parent.parent / "notebooks"


def build(out: str | os.PathLike, notebooks: str | os.PathLike | None = None,
          source: str = "") -> list:
    """Write the student version of every ``notebooks/*.ipynb`` into ``out``; return the paths.
    ``source`` is the pip requirement the setup cell installs where lowprec is missing (Colab)."""
    notebooks = Path(notebooks) if notebooks is not None else default_notebooks()
    paths = sorted(notebooks.glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no notebooks in {notebooks}: pass --notebooks with the "
                                "solution notebooks")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        student = student_notebook(json.loads(path.read_text(encoding="utf-8")), source)
        target = out / path.name
        # the layout nbformat writes (sorted keys, indent 1), so a rebuild is byte-identical
        target.write_text(json.dumps(student, sort_keys=True, indent=1, ensure_ascii=False) + "\n",
                          encoding="utf-8")
        written.append(target)
    return written
