"""Error bounds for a dot product under an accumulation model: what tolerance to expect.

For ``s = a_1 b_1 + ... + a_K b_K`` computed as ``s_hat`` by an accumulator
(:mod:`lowprec.accumulate`), every bound here has the form

    |s_hat - s| <= bound * (|a_1 b_1| + ... + |a_K b_K|)

so ``bound`` is the relative error when no product cancels another (all of one sign), and the
error relative to ``sum |a_i b_i|`` otherwise. What every bound assumes:

* the operands are exact in the accumulator's input format (round them first: an input
  rounding is not an accumulation error), and every product is exact, as it is in all the
  accumulators of :mod:`lowprec.accumulate` (fused into the addition that takes it);
* nothing overflows, and nothing underflows: every partial sum is 0 or normal in the format
  it is rounded to (a subnormal result's relative error can exceed the unit roundoff);
* the dot product's result is the accumulator's own (no ``output=`` rounding on top; that adds
  one more rounding, ``(1 + bound)(1 + u_out) - 1``).

The bounds:

* :func:`deterministic_bound` -- the worst case over all inputs.
  A format accumulator (:class:`~lowprec.accumulate.FormatAccumulation`) rounds each product
  at most :func:`roundings` times on its way to the result; with ``|delta| <= u`` per rounding
  the result is ``sum a_i b_i (1 + theta_i)`` with ``|theta_i| <= gamma_n = n u / (1 - n u)``
  (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., 2002, Lemma 3.1 and the
  inner-product bound (3.5) of sec. 3.1; pairwise summation, depth ``ceil(log2 K)``: sec. 4.2;
  blocked summation, ``b + K/b - 1`` roundings: Blanchard, Higham & Mary, "A class of fast and
  accurate summation algorithms", SIAM J. Sci. Comput. 42(3), 2020, sec. 2, plus the rounding
  of the first product). Sequential order rounds the first product ``K`` times
  (``0 + a_1 b_1`` is a rounding too, unless the product is in the format).
* :func:`block_fma_bound` -- a tensor core, modelled as a chain of block FMAs
  (:mod:`lowprec.tensorcore`). The chained analysis follows Blanchard, Higham, Lopez, Mary &
  Pranesh, "Mixed precision block fused multiply-add: error analysis and application to GPU
  tensor cores", SIAM J. Sci. Comput. 42(3), 2020, sec. 3 (matrix multiplication as a chain of
  ``K/b`` block FMAs, each adding its ``b`` exact products to the previous result). The error
  of one block FMA is derived here (in the function's docstring) for the rule the hardware
  follows, which Fasi et al. 2021 measured and :mod:`lowprec.tensorcore` models: terms aligned
  to the largest exponent and truncated to F fraction bits, one rounding of the sum, toward
  zero for FP32 (a unit roundoff of 2u, twice round to nearest's). Block-scaled MMA
  (Blackwell ``kind::mxf8f6f4``, ``kind::mxf4nvf4``) is bounded relative to the sum of the
  scaled products ``|a_i sa_i b_i sb_i|``.
* :func:`mfma_bound` -- an AMD matrix core (:mod:`lowprec.cdna`): CDNA3's fused groups
  (products truncated, group sum and c floored, one rounding to nearest per group) bounded
  the same way with their own widths, CDNA1/2's pairwise FP32 trees with ``gamma_n``.

The tensor-core and matrix-core bounds also assume that every operand is a nonzero normal
number of its format: the hardware reads a product's exponent from its operands' exponent
fields, so a subnormal or zero operand breaks the relative argument (and CDNA2 flushes
subnormals to zero); the functions' docstrings say what to add where it fails.
* :func:`probabilistic_bound` -- Higham & Mary, "A new approach to probabilistic rounding error
  analysis", SIAM J. Sci. Comput. 41(5), 2019, Theorem 3.1 (inner products; Theorem 2.4 for one
  product of ``1 + delta`` factors): if the rounding errors are independent random variables of
  mean zero with ``|delta| <= u`` (their Model 2.1, an assumption about round to nearest), then
  for any ``lam > 0`` each term's ``|theta_i| <= gamma~_n(lam) = exp(lam sqrt(n) u + n u**2 /
  (1 - u)) - 1`` with probability at least ``P(lam) = 1 - 2 exp(-lam**2 (1 - u)**2 / 2)``, and
  the dot product's bound ``gamma~_n(lam) sum |a_i b_i|`` holds with probability at least
  ``Q = 1 - K (1 - P(lam))`` (one failure chance per term). To first order it is
  ``lam sqrt(n) u``: sqrt(K) growth instead of K.

Tensor cores truncate (round toward zero), and CDNA3 truncates and floors, so their errors have
a sign: Model 2.1 does not hold and :func:`probabilistic_bound` refuses them; CDNA1/2's pairwise
FP32 trees round to nearest and are accepted. The tests (tests/test_bounds.py) check every bound
against the errors of simulated dot products, exact references computed with math.fsum and
fractions.Fraction, and report how close the errors come.
"""
from __future__ import annotations

import math
import operator
from typing import NamedTuple

from .accumulate import Accumulator, AccumulatorLike, Blas, FormatAccumulation, as_accumulator
from .formats import FP32, FloatFormat, FormatLike, as_format
from .rounding import ModeLike, RoundingMode, as_mode

__all__ = ["ProbabilisticBound", "unit_roundoff", "gamma", "roundings", "deterministic_bound",
           "block_fma_bound", "mfma_bound", "probabilistic_bound", "probabilistic_lambda"]

# Round to nearest is within half a unit in the last place; every other mode within one.
_HALF_ULP_MODES = (RoundingMode.NEAREST, RoundingMode.NEAREST_AWAY)
# The attributes a block-FMA model exposes (lowprec.tensorcore.TensorCoreModel has them all).
_BLOCK_FMA_FIELDS = ("block", "fraction_bits", "output", "output_rounding")


class ProbabilisticBound(NamedTuple):
    """A bound that holds with at least the stated probability (Higham & Mary 2019)."""

    bound: float  # gamma~_n(lam): relative to sum |a_i b_i|
    probability: float  # Q = 1 - K (1 - P(lam)), the chance that the bound holds (at least)
    lam: float  # lambda, the number of "standard deviations" the bound allows


def unit_roundoff(fmt: FormatLike, mode: ModeLike = "nearest") -> float:
    """The largest relative error of one rounding into ``fmt`` in the normal range: ``2**-p``
    for round to nearest (p significant bits, ``fmt.eps / 2``), ``2**(1-p)`` (``fmt.eps``, twice
    that) for the directed modes (a tensor core's truncation), round to odd and stochastic
    rounding, which may move a value by up to one unit in the last place (Higham 2002, sec. 2.1
    and eq. (2.4))."""
    fmt = as_format(fmt)
    return fmt.eps / 2 if as_mode(mode) in _HALF_ULP_MODES else fmt.eps


def gamma(n: int, u: float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)`` (2002, Lemma 3.1): ``|prod (1 + delta_i) - 1|``
    for n factors with ``|delta_i| <= u``. ``math.inf`` where ``n u >= 1``: no bound."""
    n = _count(n, "n")
    if not (isinstance(u, (int, float)) and not isinstance(u, bool) and 0 <= u < 1):
        raise ValueError(f"u must be a number in [0, 1), got {u!r}")
    return n * u / (1 - n * u) if n * u < 1 else math.inf


def roundings(accumulator: FormatAccumulation, K: int) -> int:
    """The most roundings any product goes through on its way to the result, for a format
    accumulator of K products (what the bounds count; the code is lowprec.accumulate._reduce):

    * sequential: K (``0 + a_1 b_1`` rounds the first product, then K - 1 additions);
    * pairwise: ``ceil(log2 K)`` for K >= 2 (the depth of the tree; with the binary counter's
      last merges, groups of 2**e terms meet at most one more addition than a full tree of the
      largest group), 1 for K = 1;
    * blocked with block b: ``min(b, K)`` in the first block, then the ``nb = ceil(K / b)``
      block sums in ``order``: ``nb - 1`` more sequentially (``0 + s_1`` is exact: s_1 is in
      the format already), ``ceil(log2 nb)`` pairwise.
    """
    if not isinstance(accumulator, FormatAccumulation):
        raise TypeError(f"roundings counts the additions of a FormatAccumulation, "
                        f"got {accumulator!r}")
    K = _count(K, "K")
    if K == 0:
        return 0
    if accumulator.block is None:
        return K if accumulator.order == "sequential" else _tree_depth(K)
    blocks = -(-K // accumulator.block)
    combine = blocks - 1 if accumulator.order == "sequential" else (
        _tree_depth(blocks) if blocks > 1 else 0)
    return min(accumulator.block, K) + combine


def deterministic_bound(accumulator: AccumulatorLike, K: int, *,
                        mode: ModeLike = "nearest") -> float:
    """The worst-case bound on ``|s_hat - s| / sum |a_i b_i|`` for a dot product of length K
    (module docstring for the assumptions). ``math.inf`` where the bound says nothing.

    accumulator, one of:

    * a :class:`~lowprec.accumulate.FormatAccumulation` (or a format name): every rounding is
      within ``unit_roundoff(format, mode)``; ``gamma_n`` with n = :func:`roundings`;
    * :data:`~lowprec.accumulate.BLAS`: FP32 sums in an unknown order, the products rounded too
      (float32 operands): ``gamma_K`` with ``u = 2**-24``, whatever the order (a float64 BLAS is
      more accurate: the bound still holds); ``mode`` does not apply;
    * a tensor-core model (or its preset name), or any object with the block-FMA fields
      ``block``, ``fraction_bits``, ``output``, ``output_rounding``: :func:`block_fma_bound`
      (``mode`` does not apply: the model fixes its roundings);
    * an AMD matrix-core model (:class:`lowprec.cdna.MFMAModel`, or its preset name, or any
      object with ``group`` and ``fused``): :func:`mfma_bound`.
    """
    acc = _accumulator(accumulator)
    K = _count(K, "K")
    if isinstance(acc, FormatAccumulation):
        return gamma(roundings(acc, K), unit_roundoff(acc.format, mode))
    if isinstance(acc, Blas):  # its sums round to nearest (mode rounds only an output= format)
        return gamma(K, unit_roundoff(FP32, "nearest"))
    if hasattr(acc, "group") and hasattr(acc, "fused"):
        return mfma_bound(acc, K)
    return block_fma_bound(acc, K)


def block_fma_bound(model: object, K: int) -> float:
    """The worst-case bound on ``|s_hat - s| / sum |a_i b_i|`` for a tensor-core model's dot
    product of length K, from the model's ``block`` (n), ``fraction_bits`` (F), ``output`` and
    ``output_rounding`` (and, if present, ``promote_every``, ``split_k`` and ``sub_block``).

    Assumed (beyond the module's assumptions): every operand is a nonzero *normal* number of its
    format (block scales too). The model reads a product's exponent from its operands' exponent
    fields, subnormals clamped to emin and a zero counted as 2**-126 (lowprec.tensorcore), so a
    subnormal operand makes a product smaller than its exponent says and the alignment below
    cuts it more coarsely than the bound allows.

    One block FMA ``d = c + p_1 + ... + p_n`` aligns the n + 1 terms to the largest exponent
    emax and truncates each to a multiple of ``2**(emax - F)``: each loses less than
    ``2**(emax - F)`` and, since the term of exponent emax is at least ``2**emax`` in magnitude
    (normal operands: a product of significands in [1, 2) is at least 1),
    ``2**emax <= |c| + sum |p_i|``. The exact sum of the truncated terms is then rounded into
    ``output`` (relative error at most ``u_out``, :func:`unit_roundoff`):
    ``|d_hat - d| <= u_out |d_trunc| + |d_trunc - d| (1 + u_out)``. So

        |d_hat - d| <= alpha (|c| + sum |p_i|),   alpha = u_out + t 2**-F (1 + u_out)

    with t = n + 1 aligned terms. Chaining ``q = ceil(K / n)`` blocks, each block's result the
    next block's c: by induction on the blocks (``|e_j| <= (1 + alpha) |e_(j-1)| + alpha T_j``,
    T_j the sum of |p_i| so far) the result is within ``(1 + alpha)**q - 1`` (at most
    ``q alpha / (1 - q alpha)``) of s, relative to sum |a_i b_i|: Blanchard et al. 2020's chain
    of block FMAs (sec. 3), with this alpha for one block. The t 2**-F term is nearly reached
    when n - 1 terms just below ``2**(emax - F)`` are truncated away beside one large term, and
    u_out when the surviving sum lies just below a rounding threshold (tests/test_bounds.py).
    Nothing here depends on F against the input precision: with F = 25 and FP8 inputs
    (B200_FP8) the alignment cuts nothing off a product whose exponent is within 19 of emax
    (E4M3 products have 6 fraction bits), so on operands of a narrow range only the FP32
    rounding of each block's result can err, and not at all while the partial sums need at
    most 24 bits (tests/test_bounds.py, test_b200_fp8_is_exact_on_narrow_inputs).

    Block-scaled MMA (``block_scaled_mma``: B200_MXF8F6F4, B200_MXF4NVF4; PTX ISA tcgen05.mma
    ``kind::mxf8f6f4`` / ``kind::mxf4nvf4``, the model of lowprec.tensorcore after MMA-Sim): the
    bound is relative to ``sum |a_i sa_i b_i sb_i|``, each product times its block's two decoded
    scales, which is what the instruction sums. kind::mxf8f6f4 aligns the scaled products, whose
    exponents include the scales' (E8M0 scales are powers of two: the argument above holds as
    is). kind::mxf4nvf4 (``sub_block`` = 16) first sums each run of 16 products exactly and
    aligns those sums times their scales, reading each such term's exponent from the two
    scales alone; with normal elements every product of a run is at least 1 times the scales,
    so the run's sum of |products| is at least 2**(its exponent) even when the run cancels,
    and the argument holds with ``t = ceil(n / sub_block) + 1`` aligned terms (c and n / 16
    run sums). Its E2M1 elements are normal when nonzero and not +-0.5 (0.5 is E2M1's only
    subnormal).

    Promotion every N_C products (DeepSeek-V3 sec. 3.3.2; ``promote_every``) and split-K
    (``split_k``) add partial results in FP32 to nearest (lowprec.tensorcore): r such partials,
    each within beta, give ``(1 + beta)(1 + gamma_r(2**-24)) - 1``.

    Any model that aligns and truncates (or floors) every term to at least F fraction bits below
    the largest exponent before one exact sum and one rounding per block fits this bound with
    F the fewest bits kept, duck-typed: no need to be a TensorCoreModel. AMD's matrix cores
    (lowprec.cdna.MFMAModel) differ in their widths and order: :func:`mfma_bound`.
    """
    missing = [f for f in _BLOCK_FMA_FIELDS if not hasattr(model, f)]
    if missing:
        raise TypeError(f"block_fma_bound takes a block-FMA model (such as a "
                        f"lowprec.TensorCoreModel); {model!r} has no {', '.join(missing)}")
    K = _count(K, "K")
    n, F = _count(model.block, "model.block"), _count(model.fraction_bits, "model.fraction_bits")
    if n == 0:
        raise ValueError("model.block must be a positive int")
    output = model.output if isinstance(model.output, FloatFormat) else as_format(model.output)
    u_out = unit_roundoff(output, model.output_rounding)
    sub = getattr(model, "sub_block", None)
    sub = _count(sub, "model.sub_block") if sub is not None else 1
    if sub == 0:
        raise ValueError("model.sub_block must be None or a positive int")
    truncation = (-(-n // sub) + 1) * 2.0**-F  # the aligned terms: c and the (sub-)sums
    alpha = u_out + truncation * (1 + u_out)

    def chain(k):  # k products in ceil(k / n) chained blocks, starting from c = 0
        return _chain(-(-k // n), alpha)

    u32 = unit_roundoff(FP32, "nearest")  # promotion and split-K add in FP32 to nearest
    promote = getattr(model, "promote_every", None)
    split = _count(getattr(model, "split_k", 1), "model.split_k")
    if split == 0:
        raise ValueError("model.split_k must be a positive int")
    per_slice = -(-K // split)  # the longest slice
    if promote:
        promote = _count(promote, "model.promote_every")
        chunks = -(-per_slice // promote)
        bound = _compose(chain(min(promote, per_slice)), gamma(chunks, u32))
    else:
        bound = chain(per_slice)
    if split > 1:
        bound = _compose(bound, gamma(split, u32))
    return bound


def mfma_bound(model: object, K: int) -> float:
    """The worst-case bound on ``|s_hat - s| / sum |a_i b_i|`` for an AMD matrix core's
    (:class:`lowprec.cdna.MFMAModel`) dot product of length K, derived from the stages that
    lowprec.cdna models after MMA-Sim (arXiv:2511.10909; mmasim/simulator/arithmetic.py,
    ``amd_fused_dot_rd_add`` and ``pairwise_dot``). Duck-typed on the fields ``group`` (g),
    ``fused``, ``even_odd`` and ``inputs`` / ``b_format``.

    Assumed (beyond the module's assumptions): every operand is a nonzero normal number, and
    every product, partial sum and group result is 0 or at least 2**-126 in magnitude (FP32's
    normal range). CDNA3 reads a zero operand's exponent as -126 and clamps a subnormal's to
    emin (a product then counts larger than it is), and CDNA2 flushes subnormals to zero,
    errors that sum |a_i b_i| does not scale. Where CDNA2's assumption fails, add on top of
    this bound: |a_i b_i| for every product with a flushed (subnormal) operand, and 2**-126
    for every other flush (at most 2 g per group: g products, g - 1 tree sums, the
    accumulator), each such absolute term times (1 + this bound) for the later roundings.

    CDNA3, fused (``fused=True``), one group ``d = c + p_1 + ... + p_g`` with c in FP32:

    1. the products are aligned to their largest exponent E and each is truncated toward zero
       to a multiple of ``2**(E - 24)``: each loses less than ``2**(E - 24)``;
    2. (FP8, ``even_odd``) the even- and odd-indexed products are step 1 apart, each half to its
       own largest exponent (at most E, so the products' loss is still below g 2**(E - 24)),
       and the two half sums are floored to a multiple of ``2**(E - 24)``: two more losses
       below ``2**(E - 24)`` each;
    3. with M = max(E, exponent of c), the group sum is floored to a multiple of
       ``2**(M - 31)`` and c to one of ``2**(M - 24)``: losses below ``2**(M - 31)`` and
       ``2**(M - 24)`` (FP8 drops a c below ``2**(M - 25)`` instead: a loss below
       ``2**(M - 25)``, inside the same bound);
    4. one rounding to nearest into FP32: relative error at most ``u = 2**-24``.

    The term of exponent M (c, or the product of exponent E = M) is at least ``2**M``, so
    ``2**M <= |c| + sum |p_i|`` = T, and the exact result of steps 1-3 is within
    ``(h 2**-24 + 2**-31) T`` of d, with h = g + 1 (the products and c) or g + 3 for FP8 (the
    two half-sum floors). Step 4 adds ``u (1 + ...)`` as for a block FMA
    (:func:`block_fma_bound`):

        alpha = u + (h 2**-24 + 2**-31)(1 + u),

    and ``q = ceil(K / g)`` chained groups give ``(1 + alpha)**q - 1``. (Flooring is not
    truncation toward zero: for a negative value it moves away from zero, but by less than one
    unit either way, which is all the bound uses.)

    CDNA1/CDNA2, pairwise (``fused=False``): each product is ``fmaf(a, b, 0)``, rounded to
    nearest into FP32 (exact when the two significands hold at most 24 bits together, as for
    FP16 and BF16), the g products are added as a balanced tree of depth ``ceil(log2 g)`` of
    FP32 additions and the group sum is added to the accumulator (exact for the first group,
    whose accumulator is 0). A product of group j then goes through at most
    ``r + ceil(log2 g) + (q - 1)`` roundings to nearest (r = 1 when the product is inexact, else
    0): the result is within ``gamma_n(2**-24)`` (Higham 2002, Lemma 3.1) with that n.
    """
    missing = [f for f in ("group", "fused", "inputs") if not hasattr(model, f)]
    if missing:
        raise TypeError(f"mfma_bound takes an AMD matrix-core model (such as "
                        f"lowprec.cdna.CDNA3_FP16); {model!r} has no {', '.join(missing)}")
    K = _count(K, "K")
    g = _count(model.group, "model.group")
    if g == 0:
        raise ValueError("model.group must be a positive int")
    groups = -(-K // g)
    u = unit_roundoff(FP32, "nearest")
    if model.fused:
        h = g + (3 if getattr(model, "even_odd", False) else 1)
        alpha = u + (h * 2.0**-24 + 2.0**-31) * (1 + u)
        return _chain(groups, alpha)
    return gamma(_pairwise_roundings(model, K), u)


def _pairwise_roundings(model, K: int) -> int:
    """The most roundings to nearest on a product's way through CDNA1/2's pairwise groups
    (:func:`mfma_bound`): the product's own (when inexact), the tree's, one per later group."""
    groups = -(-K // model.group)
    if groups == 0:
        return 0
    fa = as_format(model.inputs)
    fb = as_format(getattr(model, "b_format", None) or fa)
    inexact = (fa.mantissa_bits + 1) + (fb.mantissa_bits + 1) > FP32.mantissa_bits + 1
    return int(inexact) + (_tree_depth(model.group) if model.group > 1 else 0) + groups - 1


def probabilistic_lambda(K: int, probability: float, u: float) -> float:
    """The lambda for which Higham & Mary's dot-product bound holds with at least
    ``probability``: ``K * 2 exp(-lam**2 (1 - u)**2 / 2) = 1 - probability``."""
    K = _count(K, "K")
    if not (isinstance(probability, (int, float)) and 0 < probability < 1):
        raise ValueError(f"probability must be in (0, 1), got {probability!r}")
    if not (isinstance(u, (int, float)) and 0 < u < 1):
        raise ValueError(f"u must be in (0, 1), got {u!r}")
    return math.sqrt(2 * math.log(2 * max(K, 1) / (1 - probability))) / (1 - u)


def probabilistic_bound(accumulator: AccumulatorLike, K: int, *, lam: float | None = None,
                        probability: float | None = None) -> ProbabilisticBound:
    """Higham & Mary 2019, Theorem 3.1, for a round-to-nearest accumulator (a
    :class:`~lowprec.accumulate.FormatAccumulation` or format name, or
    :data:`~lowprec.accumulate.BLAS` as FP32, or an AMD CDNA1/2 matrix core, whose pairwise
    FP32 trees round to nearest): with n = :func:`roundings` (K for BLAS; for CDNA1/2 the
    count of :func:`mfma_bound`),
    ``|s_hat - s| <= gamma~_n(lam) sum |a_i b_i|`` with probability at least
    ``1 - 2 K exp(-lam**2 (1 - u)**2 / 2)``, if the rounding errors are independent and of mean
    zero (their Model 2.1; module docstring).

    Give ``lam`` or the ``probability`` wanted (default 0.99); a lam too small for K gives a
    probability at or below 0 (no guarantee), reported as is.
    Raises ValueError for a tensor-core model and for CDNA3: truncation's errors are not of mean
    zero.
    """
    acc = _accumulator(accumulator)
    K = _count(K, "K")
    if isinstance(acc, FormatAccumulation):
        n, u = roundings(acc, K), unit_roundoff(acc.format, "nearest")
    elif isinstance(acc, Blas):
        n, u = K, unit_roundoff(FP32, "nearest")
    elif hasattr(acc, "group") and getattr(acc, "fused", True) is False:
        n, u = _pairwise_roundings(acc, K), unit_roundoff(FP32, "nearest")
    else:
        raise ValueError(f"{getattr(acc, 'name', acc)!r} truncates (toward zero, or floors "
                         "toward minus infinity): its rounding errors are not of mean zero, so "
                         "Higham & Mary's probabilistic model does not apply; use "
                         "deterministic_bound")
    if lam is not None and probability is not None:
        raise ValueError("give lam or probability, not both")
    if lam is None:
        lam = probabilistic_lambda(K, 0.99 if probability is None else probability, u)
    elif not (isinstance(lam, (int, float)) and not isinstance(lam, bool) and lam > 0):
        raise ValueError(f"lam must be a positive number, got {lam!r}")
    bound = math.expm1(lam * math.sqrt(n) * u + n * u * u / (1 - u))
    failure = 2 * math.exp(-lam * lam * (1 - u) ** 2 / 2)  # 1 - P(lam), per term
    return ProbabilisticBound(bound, 1 - K * failure, float(lam))


# --- helpers -----------------------------------------------------------------------------
def _accumulator(spec) -> Accumulator | object:
    """An accumulator from a name or format (as lowprec.dot takes them); other objects (block-FMA
    models of any class) pass through to the block-FMA bound, which checks their fields."""
    if isinstance(spec, (str, FloatFormat)):
        return as_accumulator(spec)
    return spec


def _count(k, name: str) -> int:
    """k as a non-negative int (Python or NumPy integers; not bool)."""
    if isinstance(k, bool) or not hasattr(k, "__index__"):
        raise TypeError(f"{name} must be an int, got {k!r}")
    if operator.index(k) < 0:
        raise ValueError(f"{name} must be a non-negative int, got {k!r}")
    return operator.index(k)


def _tree_depth(k: int) -> int:
    """Roundings on the deepest path of lowprec.accumulate's pairwise tree of k >= 1 addends."""
    return 1 if k == 1 else (k - 1).bit_length()  # (k - 1).bit_length() == ceil(log2 k)


def _chain(blocks: int, alpha: float) -> float:
    """``(1 + alpha)**blocks - 1``: chained steps, each within alpha (math.inf where the bound
    says nothing)."""
    try:
        return math.expm1(blocks * math.log1p(alpha))
    except OverflowError:
        return math.inf


def _compose(x: float, y: float) -> float:
    """Relative bounds x then y: (1 + x)(1 + y) - 1."""
    return x + y + x * y
