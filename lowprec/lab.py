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

import math
from fractions import Fraction

import ml_dtypes
import numpy as np

NOT_ANSWERED = "not answered yet"
CORRECT = "correct"
WRONG = "not right yet"


class _Unreadable(Exception):
    """The answer has the wrong shape or type; the message says what was expected."""


def _number(x, what="a number") -> float:
    try:
        value = float(x)
    except (TypeError, ValueError):
        raise _Unreadable(f"expected {what}") from None
    if isinstance(x, (str, bytes)):
        raise _Unreadable(f"expected {what}, not text")
    return value


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
        return "think emin - mantissa_bits: the smallest subnormal has only its last mantissa bit set"


def _01_2(answer):
    n = _integer(answer)
    bf16 = ml_dtypes.bfloat16
    if n < 1 or float(bf16(n)) == n:
        return "BF16 holds that integer exactly: look higher"
    held = np.arange(n, dtype=np.float64)
    if np.any(held.astype(bf16).astype(np.float64) != held):
        return "BF16 misses a smaller integer already: count its significant bits"


def _01_3(value, code):
    e4m3 = ml_dtypes.float8_e4m3fn
    if _number(value) != float(e4m3(300.0)):
        return "the value is not the nearest E4M3 number to 300: list the E4M3 numbers in [256, 512)"
    if _integer(code) != int(np.array(e4m3(300.0)).view(np.uint8)):
        return "the value is right, the bit pattern is not: sign, 4 exponent bits (bias 7), 3 mantissa bits"


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
    from .scaling import (DeepSpeedConfig, DynamicLossScaler, DynamicScalingConfig,
                          HysteresisLossScaler)

    pattern = "XXX.....X......."
    hints = []
    if _number(pytorch) != _replay(DynamicLossScaler(
            DynamicScalingConfig(init_scale=2.0**16, growth_interval=3)), pattern):
        hints.append("PyTorch's scale is off: halve on every overflow, double after 3 clean steps in a row")
    if _number(deepspeed) != _replay(HysteresisLossScaler(
            DeepSpeedConfig(init_scale=2.0**16, scale_window=3, hysteresis=2)), pattern):
        hints.append("DeepSpeed's scale is off: follow the hysteresis counter, and grow one step later")
    return "; ".join(hints) or None


# --- lab 3: master weights and stochastic rounding ---------------------------------------------
def _03_1(up, down):
    one, u, d = np.float16(1), np.float16(_number(up)), np.float16(_number(down))
    hints = []
    if not (one + u != one and one + np.float16(u / 2) == one):
        hints.append("upward: not the smallest power of two that moves 1 (ties go to even)")
    if not (one - d != one and one - np.float16(d / 2) == one):
        hints.append("downward: not the smallest power of two that moves 1 (the spacing below 1 is finer)")
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
    if not isinstance(limits, dict) or set(limits) != {"e4m3", "e5m2"}:
        raise _Unreadable('expected a dict {"e4m3": (max, smallest subnormal), "e5m2": (...)}')
    wrong = []
    for name, dtype in (("e4m3", ml_dtypes.float8_e4m3fn), ("e5m2", ml_dtypes.float8_e5m2)):
        info = ml_dtypes.finfo(dtype)
        largest, smallest = _pair(limits[name], "(max, smallest subnormal)")
        if largest != float(info.max):
            wrong.append(f"{name} max")
        if smallest != float(info.smallest_subnormal):
            wrong.append(f"{name} smallest subnormal")
    if wrong:
        return "check " + ", ".join(wrong) + " against the bit layout"


def _04_2(scale):
    from .scaling import DelayedScaling, quantize

    state = DelayedScaling(margin=1, amax_history_len=4).new_state("forward")
    for a in (2.0, 3.5, 1.0, 0.5):
        quantize(np.array([a, -a / 3], np.float32), state)
    rule = Fraction(448, 2**1) / max(Fraction(a) for a in (2.0, 3.5, 1.0, 0.5))
    if not _number(scale) == float(rule) == float(state.scale):
        return "not (fp8_max / 2**margin) / max(amax history)"


def _04_3(ocp, te):
    e4m3 = ml_dtypes.float8_e4m3fn  # ml_dtypes rounds, math picks the exponent
    ocp_scale = 2.0 ** (math.floor(math.log2(15.2)) - 8)
    ocp_value = float(e4m3(min(15.2 / ocp_scale, 448.0))) * ocp_scale  # saturate, then round
    te_scale = 2.0 ** math.ceil(math.log2(15.2 / 448))
    te_value = float(e4m3(15.2 / te_scale)) * te_scale
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
    s, step = dtype(0), dtype(step)
    for _ in range(limit):
        s = dtype(s + step)
    return float(s)


def _05_1(value):
    if _number(value) != _stalls(np.float16, 1.0, 5000):   # NumPy's float16 arithmetic
        return "count FP16's significant bits, and mind the tie"


def _05_2(value):
    if _number(value) != _stalls(ml_dtypes.bfloat16, 0.01, 3000):   # ml_dtypes' bfloat16
        return "the sum stops where 0.01 is less than half the spacing: find that binade"


def _truncated_sum(terms, fraction_bits, largest_exponent=0):
    unit = Fraction(2) ** (largest_exponent - fraction_bits)
    return float(sum(math.trunc(Fraction(t) / unit) for t in terms) * unit)   # exact rationals


def _05_3(v100, a100):
    c = -(1 - 2.0**-24)
    hints = []
    if _number(v100) != _truncated_sum([1.0, c], 23):
        hints.append("V100: truncate c toward zero to a multiple of 2^-23 first")
    if _number(a100) != _truncated_sum([1.0, c], 24):
        hints.append("A100: with F = 24, is anything of c lost?")
    return "; ".join(hints) or None


# --- lab 6: fingerprinting a tensor core -------------------------------------------------------
def _floor_log2(v: Fraction) -> int:
    e = v.numerator.bit_length() - v.denominator.bit_length()
    return e - 1 if Fraction(2) ** e > v else e


def _by_hand(products, c, K, block, fraction_bits):
    """Output (0, 0) of a probe tile under the block-FMA rule (Fasi et al. 2021): each block of
    ``block`` products, with the running sum as its c, aligned to the largest exponent, every
    term truncated to ``fraction_bits`` bits below it, added exactly, truncated to FP32."""
    acc = Fraction(c)
    for start in range(0, K, block):
        terms = [(Fraction(a) * Fraction(b), _floor_log2(Fraction(abs(a))) + _floor_log2(Fraction(abs(b))))
                 for k, (a, b) in products.items() if start <= k < start + block]
        terms.append((acc, _floor_log2(abs(acc)) if acc else -126))
        unit = Fraction(2) ** (max(e for _, e in terms) - fraction_bits)
        total = sum(math.trunc(value / unit) for value, _ in terms) * unit
        if total:
            quantum = Fraction(2) ** (_floor_log2(abs(total)) - 23)
            total = math.trunc(total / quantum) * quantum
        acc = total
    return float(acc)


_FP16_MODELS = {"V100_FP16": (4, 23), "A100_FP16": (8, 24), "H100_FP16": (16, 25)}  # (block, F)
_D1 = ({0: (1.0, 1.0)}, -(1 - 2.0**-24), 16)
_SPLIT = ({0: (2.0**-12, 2.0**-12), 15: (2.0**-12, 2.0**-12)}, 1.0, 16)
_CANCEL = ({0: (1.0, 1.0), 1: (-1.0, 1.0), 2: (2.0**-12, 2.0**-13)}, 0.0, 16)


def _predictions(answer, tile, what):
    if not isinstance(answer, dict) or not set(answer) <= set(_FP16_MODELS) or not answer:
        raise _Unreadable(f"expected a dict from preset names ({', '.join(_FP16_MODELS)}) to numbers")
    wrong = [p for p, v in answer.items() if _number(v) != _by_hand(*tile, *_FP16_MODELS[p])]
    if wrong:
        return f"{', '.join(wrong)}: work {what} through the rule block by block"


def _06_1(answer):
    return _predictions(answer, _D1, "1 x 1 - (1 - 2^-24)")


def _06_2(answer):
    return _predictions(answer, _SPLIT, "the two tiny products")


def _06_3(preset):
    observed = ((_D1, 2.0**-24), (_SPLIT, 1 + 2.0**-23), (_CANCEL, 2.0**-25))
    explains = [p for p, model in _FP16_MODELS.items()
                if all(_by_hand(*tile, *model) == value for tile, value in observed)]
    if preset not in _FP16_MODELS:
        raise _Unreadable(f"expected one of {', '.join(_FP16_MODELS)}")
    if [preset] != explains:
        return "that preset predicts a different output for at least one of the three probes"


BLOCKS = (4, 8, 16, 32)           # products fused per block (V100 4, A100 8, H100 16 for FP16)
FRACTION_BITS = (24, 25, 26, 27)  # bits kept below the largest exponent: 23 + 1..4 extra bits
OUTPUT_ROUNDINGS = ("toward_zero", "nearest")


def _draw(seed: int):
    """The hidden model of ``hidden_accumulator(seed)``: FP16 inputs, FP32 accumulator."""
    from .tensorcore import TensorCoreModel

    rng = np.random.default_rng([seed, 2021])   # 2021: a fixed salt, so seed 0 is no preset
    from .formats import FP16

    return TensorCoreModel(f"hidden_{seed}", FP16, block=int(rng.choice(BLOCKS)),
                           fraction_bits=int(rng.choice(FRACTION_BITS)),
                           output_rounding=str(rng.choice(OUTPUT_ROUNDINGS)))


class HiddenAccumulator:
    """A black-box tensor core: ``acc.dot(a, b, c=0.0)`` is ``c + sum_k a[k] * b[k]`` with FP16
    a and b, an FP32 c and an FP32 result, computed by a tensor-core model drawn from ``seed``.
    Its block size, fraction bits and output rounding are what Lab 6 asks you to find."""

    def __init__(self, seed: int):
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)

    def __repr__(self):
        return f"HiddenAccumulator(seed={self.seed})"

    def dot(self, a, b, c=0.0) -> float:
        from .tensorcore import dot

        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.ndim != 1 or a.shape != b.shape:
            raise ValueError(f"a and b must be vectors of one length, got shapes {a.shape} and {b.shape}")
        return float(dot(a, b, _draw(self.seed), c=np.float64(c)))


def hidden_accumulator(seed: int) -> HiddenAccumulator:
    """The black box of Lab 6 for ``seed`` (any non-negative integer: a student number will do)."""
    return HiddenAccumulator(seed)


def gpu_dot(a, b, c=0.0) -> float:
    """``c + sum_k a[k] * b[k]`` on this machine's tensor core (one FP16 ``mma.sync`` with an FP32
    accumulator per 16 products, chained along K). Raises RuntimeError, with the reason, when no
    usable CUDA GPU and CuPy are present."""
    from .gpu import gpu_status

    usable, reason = gpu_status()
    if not usable:
        raise RuntimeError(f"no tensor core to probe: {reason}")
    from .gpu.kernels import INSTRUCTIONS
    from .gpu.probe import CupyBackend

    instr = INSTRUCTIONS["f16.f32"]
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    k = -(-len(a) // instr.k) * instr.k        # zero-padded to whole instructions
    tile_a, tile_b, tile_c = np.zeros((1, 16, k)), np.zeros((1, k, 8)), np.zeros((1, 16, 8))
    tile_a[0, 0, :len(a)], tile_b[0, :len(b), 0], tile_c[0, 0, 0] = a, b, c
    return float(CupyBackend().run(instr, tile_a, tile_b, tile_c)[0, 0, 0])


def _hidden(accumulator):
    if not isinstance(accumulator, HiddenAccumulator):
        raise _Unreadable("pass the accumulator as the last argument: check(id, answer, acc)")
    return _draw(accumulator.seed)


def _06_4(block, accumulator):
    if _integer(block) != _hidden(accumulator).block:
        return "probe 1*1 + (-1)*1 + a tiny product at position j: from which j does it survive?"


def _06_5(fraction_bits, accumulator):
    if _integer(fraction_bits) != _hidden(accumulator).fraction_bits:
        return "cancel 1*1 against (-1)*1 in one block and find the smallest term 2^-m that survives"


def _06_6(rounding, accumulator):
    if rounding not in OUTPUT_ROUNDINGS:
        raise _Unreadable(f"expected one of {', '.join(map(repr, OUTPUT_ROUNDINGS))}")
    if rounding != _hidden(accumulator).output_rounding:
        return "add 1 and 1.5 ulp of FP32 at 1 in one block: which FP32 neighbour comes back?"


# --- lab 7: summation (CS336) -------------------------------------------------------------
def _07_1(spacing):
    if _number(spacing) != float(np.spacing(np.float16(10))):   # NumPy's float16
        return "in [2^e, 2^(e+1)) FP16's spacing is 2^(e-10): which e holds 10?"


def _07_2(value, additions):
    s, step, reached = np.float16(0), np.float16(0.01), None
    for i in range(1, 20_001):          # NumPy's float16, one addition at a time
        s = np.float16(s + step)
        if reached is None and float(s) == _number(value):
            reached = i
    if _number(value) != float(s):
        return "not where the sum stops: compare 0.01 with half the spacing binade by binade"
    if _integer(additions) != reached:
        return "right value, wrong count: add up the additions each binade takes"


def _pairwise16(values):            # textbook recursive pairwise summation in NumPy's float16
    if len(values) == 1:
        return values[0]
    half = len(values) // 2
    return np.float16(_pairwise16(values[:half]) + _pairwise16(values[half:]))


def _07_3(value):
    from . import arith
    from .formats import FP16

    addends = [np.float16(0.01)] * 1000
    ours = float(arith.sum(np.full(1000, float(np.float16(0.01))), FP16, order="pairwise"))
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
    from .scaling import DeepSpeedConfig, HysteresisLossScaler

    flags = np.asarray(found_inf, dtype=bool)
    scaler = HysteresisLossScaler(DeepSpeedConfig(init_scale=2.0**16, scale_window=20, hysteresis=2))
    for overflow in flags:
        scaler.update(bool(overflow))
    if 2.0 ** _integer(k) != scaler.scale:
        return "replay the rule step by step: the hysteresis counter absorbs an overflow first"


_CHECKS = {name[1:].replace("_", "."): f for name, f in list(globals().items())
           if name[:1] == "_" and name[1:3].isdigit() and callable(f)}
EXERCISES = tuple(sorted(_CHECKS))


def check(exercise: str, *answers, **context) -> None:
    """Print whether ``answers`` solve ``exercise`` ("02.3"): correct, not right yet with a hint,
    or not answered yet while an answer is still ``...`` or None. Never prints the answer."""
    if exercise not in _CHECKS:
        raise ValueError(f"unknown exercise {exercise!r}; the exercises are {', '.join(EXERCISES)}")
    if not answers or any(a is Ellipsis or a is None for a in answers):
        print(f"Exercise {exercise}: {NOT_ANSWERED} (replace the ... with your answer and run the cell)")
        return
    try:
        hint = _CHECKS[exercise](*answers, **context)
    except _Unreadable as problem:
        hint = str(problem)
    except TypeError:
        hint = "wrong number of answers: pass every answer_... of the exercise, in order"
    print(f"Exercise {exercise}: {CORRECT}" if hint is None else f"Exercise {exercise}: {WRONG}. Hint: {hint}")
