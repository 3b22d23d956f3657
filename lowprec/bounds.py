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
  zero for FP32 (a unit roundoff of 2u, twice round to nearest's).
* :func:`probabilistic_bound` -- Higham & Mary, "A new approach to probabilistic rounding error
  analysis", SIAM J. Sci. Comput. 41(5), 2019, Theorem 3.1 (inner products; Theorem 2.4 for one
  product of ``1 + delta`` factors): if the rounding errors are independent random variables of
  mean zero with ``|delta| <= u`` (their Model 2.1, an assumption about round to nearest), then
  for any ``lam > 0`` each term's ``|theta_i| <= gamma~_n(lam) = exp(lam sqrt(n) u + n u**2 /
  (1 - u)) - 1`` with probability at least ``P(lam) = 1 - 2 exp(-lam**2 (1 - u)**2 / 2)``, and
  the dot product's bound ``gamma~_n(lam) sum |a_i b_i|`` holds with probability at least
  ``Q = 1 - K (1 - P(lam))`` (one failure chance per term). To first order it is
  ``lam sqrt(n) u``: sqrt(K) growth instead of K.

Tensor cores truncate (round toward zero), so their errors have a sign: Model 2.1 does not hold
and :func:`probabilistic_bound` refuses them. The tests (tests/test_bounds.py) check every bound
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
           "block_fma_bound", "probabilistic_bound", "probabilistic_lambda"]

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
      (``mode`` does not apply: the model fixes its roundings).
    """
    acc = _accumulator(accumulator)
    K = _count(K, "K")
    if isinstance(acc, FormatAccumulation):
        return gamma(roundings(acc, K), unit_roundoff(acc.format, mode))
    if isinstance(acc, Blas):  # its sums round to nearest (mode rounds only an output= format)
        return gamma(K, unit_roundoff(FP32, "nearest"))
    return block_fma_bound(acc, K)


def block_fma_bound(model: object, K: int) -> float:
    """The worst-case bound on ``|s_hat - s| / sum |a_i b_i|`` for a tensor-core model's dot
    product of length K, from the model's ``block`` (n), ``fraction_bits`` (F), ``output`` and
    ``output_rounding`` (and, if present, ``promote_every`` and ``split_k``).

    One block FMA ``d = c + p_1 + ... + p_n`` aligns the n + 1 terms to the largest exponent
    emax and truncates each to a multiple of ``2**(emax - F)``: each loses less than
    ``2**(emax - F)`` and, since the largest term is at least ``2**emax`` (no subnormals),
    ``2**emax <= |c| + sum |p_i|``. The exact sum of the truncated terms is then rounded into
    ``output`` (relative error at most ``u_out``, :func:`unit_roundoff`). So

        |d_hat - d| <= alpha (|c| + sum |p_i|),   alpha = u_out + (n + 1) 2**-F (1 + u_out).

    Chaining ``q = ceil(K / n)`` blocks, each block's result the next block's c: by induction
    on the blocks (``|e_j| <= (1 + alpha) |e_(j-1)| + alpha T_j``, T_j the sum of |p_i| so far)
    the result is within ``(1 + alpha)**q - 1`` (at most ``q alpha / (1 - q alpha)``) of s,
    relative to sum |a_i b_i|: Blanchard et al. 2020's chain of block FMAs (sec. 3), with this
    alpha for one block. The (n + 1) 2**-F term is reached when n terms just below
    ``2**(emax - F)`` are truncated away beside one large term (tests/test_bounds.py).

    Promotion every N_C products (DeepSeek-V3 sec. 3.3.2; ``promote_every``) and split-K
    (``split_k``) add partial results in FP32 to nearest (lowprec.tensorcore): r such partials,
    each within beta, give ``(1 + beta)(1 + gamma_r(2**-24)) - 1``.

    Any model that aligns and truncates (or floors) every term to at least F fraction bits below
    the largest exponent before one exact sum and one rounding per block fits this bound with
    F the fewest bits kept, duck-typed: no need to be a TensorCoreModel.
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
    truncation = (n + 1) * 2.0**-F
    alpha = u_out + truncation * (1 + u_out)

    def chain(k):  # k products in ceil(k / n) chained blocks, starting from c = 0
        blocks = -(-k // n)
        return math.expm1(blocks * math.log1p(alpha))

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
    :data:`~lowprec.accumulate.BLAS` as FP32): with n = :func:`roundings` (K for BLAS),
    ``|s_hat - s| <= gamma~_n(lam) sum |a_i b_i|`` with probability at least
    ``1 - 2 K exp(-lam**2 (1 - u)**2 / 2)``, if the rounding errors are independent and of mean
    zero (their Model 2.1; module docstring).

    Give ``lam`` or the ``probability`` wanted (default 0.99); a lam too small for K gives a
    probability at or below 0 (no guarantee), reported as is.
    Raises ValueError for a tensor-core model: truncation's errors are not of mean zero.
    """
    acc = _accumulator(accumulator)
    K = _count(K, "K")
    if isinstance(acc, FormatAccumulation):
        n, u = roundings(acc, K), unit_roundoff(acc.format, "nearest")
    elif isinstance(acc, Blas):
        n, u = K, unit_roundoff(FP32, "nearest")
    else:
        raise ValueError(f"{getattr(acc, 'name', acc)!r} rounds toward zero (truncation): its "
                         "rounding errors are not of mean zero, so Higham & Mary's probabilistic "
                         "model does not apply; use deterministic_bound")
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


def _compose(x: float, y: float) -> float:
    """Relative bounds x then y: (1 + x)(1 + y) - 1."""
    return x + y + x * y
