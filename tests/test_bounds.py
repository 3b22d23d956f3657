"""lowprec.bounds: the formulas against hand-computed values (exact rationals), and every bound
against the errors of simulated dot products (lowprec.dot, lowprec.tensorcore) measured
against an exact reference: math.fsum of the exact float64 products and the negated result,
which is the error correctly rounded, and fractions.Fraction where a case is tight.

Tightness, the largest observed error over the bound, as these tests measured it (they print
it: run with ``-s``); 64 trials per K for format accumulators (magnitudes in [0.25, 1)), 32 for
tensor and matrix cores (nonzero normal operands, log-uniform over 12 binades, 6 for an FP16
output; block scales over 2**-20..2**20 for E8M0, 2**-6..2**8 for UE4M3). Tensor-core
columns give the range over presets of the largest ratio over K = 16..2048 (at K = 1 the one
product is exact):

| accumulation | K | random, one sign | random, both signs | adversarial (tensor cores: one block) |
|---|---|---|---|---|
| FP16/BF16 accumulators, any order | 1 | 0.84-0.99 | 0.86-0.90 | |
| FP16 sequential, to nearest | 64-1024 | 0.02-0.08 | 0.001-0.02 | 0.92 (K = 16, 64) |
| FP16 pairwise | 64-1024 | 0.17-0.34 | 0.02-0.06 | |
| FP32 sequential (FP16 inputs) | 64-1024 | 0.02-0.08 | 0.001-0.01 | |
| NVIDIA, FP32 output | 16-2048 | 0.07 (B200_FP8)-0.77 (MXF4NVF4) | 0.04-0.25 | 0.50 (V100)-0.89 |
| NVIDIA, FP16 output | 16-2048 | 0.12-0.85 | 0.07-0.62 | 0.80 (ADA_FP8_OUT16)-1.00 |
| AMD CDNA3 (fused groups) | 16-2048 | 0.03-0.20 | 0.04-0.06 | 0.26 (CDNA3_BF8)-0.70 (FP16) |
| AMD CDNA1/2 (pairwise FP32) | 16-2048 | 0.31-0.37 | 0.17-0.29 | 0.92-0.97 (K = 16 groups) |
| Higham & Mary, FP16/BF16, P >= 0.5 | 256 | 0.20-0.23 | | exceeded (Model 2.1 fails) |

"""
import inspect
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import lowprec
from lowprec import accumulate, bounds, cdna, tensorcore
from lowprec.accumulate import FormatAccumulation

KS = (1, 7, 64, 300, 1024)
TRIALS = 64


# --- the formulas, by hand ------------------------------------------------------------------
def test_unit_roundoff_is_half_an_ulp_at_1_to_nearest_and_one_ulp_otherwise():
    assert bounds.unit_roundoff("fp32") == 2.0**-24
    assert bounds.unit_roundoff("fp16", "nearest") == 2.0**-11
    assert bounds.unit_roundoff(lowprec.BF16, lowprec.RoundingMode.TOWARD_ZERO) == 2.0**-7
    assert bounds.unit_roundoff("e4m3", "stochastic") == 2.0**-3
    with pytest.raises(ValueError, match="mode"):
        bounds.unit_roundoff("fp16", "sideways")


def test_gamma_by_hand():
    u = 2.0**-11
    assert bounds.gamma(10, u) == pytest.approx(float(Fraction(10, 2048) / Fraction(2038, 2048)),
                                                rel=1e-15)
    assert bounds.gamma(0, u) == 0.0
    assert bounds.gamma(2048, u) == math.inf and bounds.gamma(4000, u) == math.inf
    with pytest.raises(ValueError, match="n must be"):
        bounds.gamma(-1, u)
    with pytest.raises(ValueError, match="u must be"):
        bounds.gamma(3, 1.5)


def test_roundings_by_hand():
    pairwise = FormatAccumulation("fp16", "pairwise")
    # the tree of lowprec.accumulate: K = 5 is ((t1 + t2) + (t3 + t4)) + t5, depth 3
    assert [bounds.roundings(pairwise, k) for k in range(1, 10)] == [1, 1, 2, 2, 3, 3, 3, 3, 4]
    assert bounds.roundings(FormatAccumulation("fp16"), 100) == 100
    assert bounds.roundings(FormatAccumulation("fp16"), 0) == 0
    # blocks of 4: 4 in the first block, then 2 more additions of block sums (3 blocks)
    assert bounds.roundings(FormatAccumulation("fp16", block=4), 10) == 6
    assert bounds.roundings(FormatAccumulation("fp16", block=4), 3) == 3
    # 5 blocks combined pairwise: depth 3
    assert bounds.roundings(FormatAccumulation("fp16", "pairwise", block=4), 20) == 7
    with pytest.raises(TypeError, match="FormatAccumulation"):
        bounds.roundings(tensorcore.H100_FP16, 16)


def _depths(terms, order):
    """The roundings on each term's path through accumulate's summation tree: each addend is a
    list of depths, each addition adds one to all of them."""
    return accumulate._reduce(([0] for _ in range(terms)), lambda x, y: [d + 1 for d in x + y],
                              order, lambda: [])


@pytest.mark.parametrize("order", ["sequential", "pairwise"])
def test_roundings_is_the_depth_of_accumulates_tree(order):
    """roundings() counts what lowprec.accumulate's order does (the code that sums)."""
    for k in range(1, 300):
        assert bounds.roundings(FormatAccumulation("fp32", order), k) == max(_depths(k, order))


def test_block_fma_bound_by_hand():
    # V100: n = 4, F = 23, FP32 output toward zero (u = 2**-23). One block:
    # alpha = u + 5 * 2**-23 * (1 + u)
    u = Fraction(1, 2**23)
    alpha = u + 5 * Fraction(1, 2**23) * (1 + u)
    assert Fraction(bounds.block_fma_bound(tensorcore.V100_FP16, 4)) == alpha
    # 10 products: three blocks
    assert bounds.block_fma_bound(tensorcore.V100_FP16, 10) == pytest.approx(
        float((1 + alpha) ** 3 - 1), rel=1e-12)
    # H100 FP8 with promotion every 128: chunks of 4 blocks of 32 (F = 13, output 13 bits
    # toward zero), then 2 chunks added in FP32 to nearest (gamma_2 with u = 2**-24)
    u13 = Fraction(1, 2**13)
    beta = (1 + u13 + 33 * u13 * (1 + u13)) ** 4 - 1
    g2 = 2 * Fraction(1, 2**24) / (1 - 2 * Fraction(1, 2**24))
    assert bounds.block_fma_bound(tensorcore.H100_FP8_PROMOTED, 256) == pytest.approx(
        float((1 + beta) * (1 + g2) - 1), rel=1e-12)
    assert bounds.deterministic_bound("H100_FP16", 16) == bounds.block_fma_bound(
        tensorcore.H100_FP16, 16)


def test_block_fma_bound_takes_any_model_with_the_fields():
    class Duck:  # a model of another vendor, not a TensorCoreModel
        block, fraction_bits, output, output_rounding = 8, 24, "fp32", "nearest"
    u = Fraction(1, 2**24)
    assert Fraction(bounds.deterministic_bound(Duck(), 8)) == u + 9 * u * (1 + u)
    with pytest.raises(TypeError, match="fraction_bits"):
        bounds.block_fma_bound(object(), 8)


def test_block_scaled_and_sub_block_bounds_by_hand():
    # kind::mxf8f6f4: as a block FMA of 32 with F = 25 (the scales only move exponents)
    u = Fraction(1, 2**23)  # FP32 toward zero
    assert Fraction(bounds.block_fma_bound(tensorcore.B200_MXF8F6F4, 32)) == \
        u + 33 * Fraction(1, 2**25) * (1 + u)
    # kind::mxf4nvf4: c and 64 / 16 = 4 exact run sums are aligned, F = 35
    alpha = u + 5 * Fraction(1, 2**35) * (1 + u)
    for name in ("B200_MXF4NVF4", "B200_MXF4NVF4_E8M0"):
        assert Fraction(bounds.deterministic_bound(name, 64)) == alpha
        assert bounds.deterministic_bound(name, 128) == pytest.approx(
            float((1 + alpha) ** 2 - 1), rel=1e-12)
    # an FP16 output rounds to nearest: u_out = 2**-11
    u16 = Fraction(1, 2**11)
    assert Fraction(bounds.block_fma_bound(tensorcore.H100_FP16_OUT16, 16)) == \
        u16 + 17 * Fraction(1, 2**25) * (1 + u16)


def test_mfma_bound_by_hand():
    u = Fraction(1, 2**24)  # one rounding to nearest into FP32 per group
    # CDNA3 FP16: 8 truncated products and c (9 units of 2**(M-24)), the sum floored (2**-31)
    alpha = u + (9 * u + Fraction(1, 2**31)) * (1 + u)
    assert Fraction(bounds.mfma_bound(lowprec.cdna.CDNA3_FP16, 8)) == alpha
    assert bounds.deterministic_bound("CDNA3_FP16", 20) == pytest.approx(
        float((1 + alpha) ** 3 - 1), rel=1e-12)
    # XF32: groups of 4; FP8: 16 products, two half-sum floors and c: 19 units
    assert Fraction(bounds.mfma_bound(lowprec.cdna.CDNA3_XF32, 4)) == \
        u + (5 * u + Fraction(1, 2**31)) * (1 + u)
    assert Fraction(bounds.mfma_bound(lowprec.cdna.CDNA3_FP8, 16)) == \
        u + (19 * u + Fraction(1, 2**31)) * (1 + u)
    # CDNA1/2: exact FP16/BF16 products, a tree of depth 2 (groups of 4), then one rounding
    # per later group: K = 64 is 16 groups, 2 + 15 roundings
    assert bounds.deterministic_bound("CDNA2_FP16", 64) == bounds.gamma(17, 2.0**-24)
    assert bounds.deterministic_bound("CDNA1_BF16", 2) == bounds.gamma(1, 2.0**-24)
    assert bounds.deterministic_bound("CDNA1_BF16", 0) == 0.0
    with pytest.raises(TypeError, match="group"):
        bounds.mfma_bound(tensorcore.H100_FP16, 16)
    with pytest.raises(ValueError, match="mean zero"):
        bounds.probabilistic_bound("CDNA3_FP16", 64)


def test_b200_fp8_is_exact_on_narrow_inputs():
    """Why B200_FP8 showed no error at all on operands in [2**-6, 1) of both signs: every
    product is a multiple of 2**-18 (two 4-bit significands, exponents >= -6), F = 25 bits below
    any exponent >= -12 keeps all of them, and while every partial sum stays below 2**6 in
    magnitude each block's result has at most 24 significant bits: FP32 holds it exactly. The
    bound is not wrong there; the inputs cannot exercise it (hence PRESET_SPREAD)."""
    rng = np.random.default_rng(3)
    for k in (16, 100, 512):
        a, b = _operands(rng, (32, k), lowprec.E4M3, True, spread=6)
        partial = np.cumsum(a * b, axis=-1)  # exact: multiples of 2**-18 below 2**11
        keep = (np.abs(partial) < 2.0**6).all(axis=-1)
        assert keep.sum() > 16
        errors = _errors(a[keep], b[keep], tensorcore.dot(a[keep], b[keep], tensorcore.B200_FP8))
        assert (errors == 0).all()


def test_probabilistic_bound_by_hand():
    u = 2.0**-24
    got = bounds.probabilistic_bound("fp32", 100, lam=3.0)
    assert got.bound == pytest.approx(math.expm1(3 * 10 * u + 100 * u * u / (1 - u)), rel=1e-14)
    assert got.probability == pytest.approx(1 - 100 * 2 * math.exp(-4.5 * (1 - u) ** 2))
    assert got.lam == 3.0
    # lambda from the probability, and back
    lam = bounds.probabilistic_lambda(100, 0.99, u)
    assert 1 - 200 * math.exp(-lam**2 * (1 - u) ** 2 / 2) == pytest.approx(0.99, abs=1e-12)
    assert bounds.probabilistic_bound("fp32", 100, probability=0.99).lam == lam
    assert bounds.probabilistic_bound("fp32", 100).probability == pytest.approx(0.99)
    # first order: lam sqrt(n) u, n the roundings (pairwise: ceil(log2 K))
    pw = bounds.probabilistic_bound(FormatAccumulation("fp16", "pairwise"), 1024, lam=4.0)
    assert pw.bound == pytest.approx(math.expm1(4 * math.sqrt(10) * 2.0**-11
                                                + 10 * 2.0**-22 / (1 - 2.0**-11)), rel=1e-14)
    assert pw.bound == pytest.approx(4 * math.sqrt(10) * 2.0**-11, rel=5e-3)


def test_probabilistic_bound_refuses_what_its_model_excludes():
    with pytest.raises(ValueError, match="mean zero"):
        bounds.probabilistic_bound(tensorcore.H100_FP16, 64)
    with pytest.raises(ValueError, match="not both"):
        bounds.probabilistic_bound("fp16", 64, lam=3.0, probability=0.9)
    with pytest.raises(ValueError, match="lam must be"):
        bounds.probabilistic_bound("fp16", 64, lam=-1.0)
    with pytest.raises(ValueError, match="K must be"):
        bounds.deterministic_bound("fp16", -3)
    with pytest.raises(TypeError, match="K must be an int"):
        bounds.deterministic_bound("fp16", 3.0)
    assert bounds.deterministic_bound("fp16", np.int64(3)) == bounds.deterministic_bound("fp16", 3)
    # a mode as a RoundingMode or its string; truncation's unit roundoff is twice nearest's
    assert bounds.deterministic_bound("fp16", 3, mode=lowprec.RoundingMode.TOWARD_ZERO) == \
        bounds.deterministic_bound("fp16", 3, mode="toward_zero") == bounds.gamma(3, 2.0**-10)
    with pytest.raises(ValueError, match="unknown accumulation"):
        bounds.deterministic_bound("fp17", 3)


def test_public_functions_have_full_type_hints():
    for name in bounds.__all__:
        obj = getattr(bounds, name)
        if inspect.isfunction(obj):
            sig = inspect.signature(obj)
            assert sig.return_annotation is not inspect.Signature.empty, name
            for p in sig.parameters.values():
                assert p.annotation is not inspect.Parameter.empty, (name, p.name)
            assert obj.__doc__, name


# --- the bounds against simulated errors -----------------------------------------------------
def _operands(rng, shape, fmt, signed: bool, fmt_b=None, spread: int = 2):
    """Values of magnitude in [2**-spread, 1), log-uniform, in fmt (products and one-sign
    partial sums far from underflow)."""
    def one(f):
        x = lowprec.round(2.0 ** rng.uniform(-spread, 0, shape), f)
        return x * rng.choice([-1.0, 1.0], shape) if signed else x
    return one(fmt), one(fmt_b or fmt)


def _errors(a, b, got):
    """|s_hat - s| / sum |a_i b_i| per row: products exact in float64 (at most 24-bit
    significands), math.fsum rounds the exact error once."""
    products = a * b
    return np.array([abs(math.fsum([*row, -float(s)])) / math.fsum(np.abs(row))
                     for row, s in zip(products, np.atleast_1d(got))])


FORMAT_ACCUMULATORS = {
    "fp16 sequential": (FormatAccumulation("fp16"), "fp16", "nearest"),
    "fp16 sequential toward zero": (FormatAccumulation("fp16"), "fp16", "toward_zero"),
    "fp16 pairwise": (FormatAccumulation("fp16", "pairwise"), "fp16", "nearest"),
    "fp16 blocked 32": (FormatAccumulation("fp16", block=32), "fp16", "nearest"),
    "bf16 pairwise blocked 16": (FormatAccumulation("bf16", "pairwise", block=16), "bf16",
                                 "nearest"),
    "fp32 sequential": (FormatAccumulation("fp32"), "fp16", "nearest"),
    "blas": (accumulate.BLAS, "fp16", "nearest"),
}


@pytest.mark.parametrize("signed", [False, True], ids=["one sign", "both signs"])
@pytest.mark.parametrize("name", FORMAT_ACCUMULATORS)
def test_deterministic_bound_holds_for_format_accumulators(name, signed):
    acc, fmt, mode = FORMAT_ACCUMULATORS[name]
    rng = np.random.default_rng(1)
    ratios = []
    for k in KS:
        a, b = _operands(rng, (TRIALS, k), fmt, signed)
        if acc is accumulate.BLAS:
            got = acc.dot(a.astype(np.float32), b.astype(np.float32))
        else:
            got = acc.dot(a, b, held=fmt, mode=mode)
        bound = bounds.deterministic_bound(acc, k, mode=mode)
        errors = _errors(a, b, got)
        assert (errors <= bound).all(), (k, errors.max(), bound)
        ratios.append(errors.max() / bound)
    print(f"\n{name}, {'both signs' if signed else 'one sign'}: largest error / bound per K "
          f"{dict(zip(KS, np.round(ratios, 3)))}")
    assert max(ratios) > 1e-3  # the errors are measured, not all zero


def test_deterministic_bound_is_nearly_reached_by_adversarial_inputs():
    """1 then K - 1 products just below half an ulp of 1 (FP16: (1 - 2**-11) 2**-11): each
    addition rounds back to 1, losing almost u. The error is (K - 1)(1 - 2**-11) u, against
    gamma_K (1 + (K - 1) ...): the bound is nearly attained (exact rationals here)."""
    for k in (2, 16, 64):
        a = np.array([1.0] + [(1 - 2.0**-11) * 2.0**-11] * (k - 1))
        b = np.ones(k)
        got = lowprec.dot(a, b, inputs="fp16", accumulate="fp16")
        assert got == 1.0
        exact = sum(Fraction(x) for x in a)
        error = abs(Fraction(float(got)) - exact) / exact
        bound = Fraction(bounds.deterministic_bound("fp16", k))
        assert error <= bound
        print(f"\nFP16 sequential, adversarial, K = {k}: "
              f"error / bound = {float(error / bound):.3f}")
        assert error / bound > 0.9 * (k - 1) / k


@pytest.mark.parametrize("probability", [0.5, 0.9])
@pytest.mark.parametrize("acc", [FormatAccumulation("fp16"), FormatAccumulation("bf16"),
                                 FormatAccumulation("bf16", "pairwise")], ids=lambda a: a.name)
def test_probabilistic_bound_holds_at_its_stated_rate(acc, probability):
    """Random inputs, K = 256: the share of dot products above Higham & Mary's bound is at most
    1 - probability (here, none is: the bound's union over K terms is generous)."""
    rng = np.random.default_rng(2)
    k, trials = 256, 200
    fmt = acc.format if acc.format != lowprec.FP32 else lowprec.FP16
    a, b = _operands(rng, (trials, k), fmt, signed=False)
    errors = _errors(a, b, acc.dot(a, b, held=fmt))
    stated = bounds.probabilistic_bound(acc, k, probability=probability)
    failures = np.mean(errors > stated.bound)
    assert failures <= 1 - stated.probability
    deterministic = bounds.deterministic_bound(acc, k)
    print(f"\n{acc.name}, K = {k}, P >= {probability}: largest error / probabilistic bound "
          f"{errors.max() / stated.bound:.3f}, / deterministic bound "
          f"{errors.max() / deterministic:.3g}; {failures:.1%} above")
    assert errors.max() > 0.05 * stated.bound  # the bound is not vacuous either


@pytest.mark.parametrize("name", ["CDNA1_BF16", "CDNA2_FP16"])
def test_probabilistic_bound_holds_for_amd_pairwise_trees(name):
    """CDNA1/2 add in FP32 to nearest: Higham & Mary's bound with n = ceil(log2 g) + K/g - 1
    roundings (u = 2**-24), at P >= 0.9, on random one-sign inputs (K = 256)."""
    model = tensorcore.TENSOR_CORES[name]
    rng = np.random.default_rng(6)
    k = 256
    a, b = (_normal_operand(rng, (200, k), model.inputs, False, 2) for _ in "ab")
    errors = _errors(a, b, _simulate(model, a, b))
    stated = bounds.probabilistic_bound(model, k, probability=0.9)
    n = (model.group - 1).bit_length() + k // model.group - 1
    assert stated.bound == pytest.approx(math.expm1(stated.lam * math.sqrt(n) * 2.0**-24
                                                    + n * 2.0**-48 / (1 - 2.0**-24)), rel=1e-14)
    assert np.mean(errors > stated.bound) <= 1 - stated.probability
    print(f"\n{name}, K = {k}: largest error / probabilistic bound "
          f"{errors.max() / stated.bound:.3f}")
    assert errors.max() > 0.05 * stated.bound


def test_probabilistic_bound_is_a_model_not_a_guarantee():
    """Inputs whose rounding errors all have one sign break Model 2.1: the error grows like
    K u, above lam sqrt(K) u, while the deterministic bound still holds."""
    k = 512
    a = np.array([1.0] + [(1 - 2.0**-11) * 2.0**-11] * (k - 1))
    got = float(lowprec.dot(a, np.ones(k), inputs="fp16", accumulate="fp16"))
    error = abs(math.fsum([*a, -got])) / math.fsum(a)
    assert error > bounds.probabilistic_bound("fp16", k, probability=0.99).bound
    assert error <= bounds.deterministic_bound("fp16", k)


PRESET_KS = (1, 16, 100, 512, 2048)
PRESET_SPREAD = 12  # binades of each operand: products over 24, enough for F = 25 to truncate


def _normal_operand(rng, shape, fmt, signed: bool, spread: int = PRESET_SPREAD):
    """Nonzero normal values of fmt (what the tensor-core bounds assume), log-uniform over
    ``spread`` binades from the format's smallest normal or 2**-spread, whichever is larger,
    up to the format's largest value."""
    lo = max(2.0**-spread, fmt.tiny)
    hi = min(lo * 2.0**spread, fmt.max)
    x = lowprec.round(2.0 ** rng.uniform(np.log2(lo), np.log2(hi), shape), fmt)
    assert (np.abs(x) >= fmt.tiny).all()
    return x * rng.choice([-1.0, 1.0], shape) if signed else x


def _preset_operands(model, rng, shape, signed):
    """a, b (nonzero normal) and, for a block-scaled model, scale_a, scale_b (normal), one per
    model.scale_block elements along K."""
    fa = model.inputs
    fb = getattr(model, "b_format", None) or fa
    # an FP16 output (_OUT16) must hold every product and partial result as a normal number
    spread = 6 if model.output == lowprec.FP16 else PRESET_SPREAD
    a, b = (_normal_operand(rng, shape, f, signed, spread) for f in (fa, fb))
    if not getattr(model, "block_scaled_mma", False):
        return a, b, None, None
    blocks = shape[:-1] + (-(-shape[-1] // model.scale_block),)
    # E8M0 scales over 2**-20..2**20, so that F = 35 truncates run sums; UE4M3 over its range
    scale_range = (-20, 20) if model.scale_format == lowprec.E8M0 else (-6, 8)
    scales = [lowprec.round(2.0 ** rng.uniform(*scale_range, blocks), model.scale_format)
              for _ in "ab"]
    return a, b, *scales


def _scaled(x, scale, model):
    """x times its block scale, element by element (exact: at most 4 + 4 significant bits)."""
    if scale is None:
        return x
    return x * np.repeat(scale, model.scale_block, axis=-1)[..., :x.shape[-1]]


def _simulate(model, a, b, scale_a=None, scale_b=None):
    """The model's dot product along the last axis: lowprec.cdna for AMD's matrix cores,
    lowprec.tensorcore (with the block scales) for NVIDIA's."""
    if isinstance(model, cdna.MFMAModel):
        return cdna.dot(a, b, model)
    if scale_a is None:
        return tensorcore.dot(a, b, model)
    return tensorcore.dot(a, b, model, scale_a=scale_a, scale_b=scale_b)


@pytest.mark.parametrize("signed", [False, True], ids=["one sign", "both signs"])
@pytest.mark.parametrize("name", list(tensorcore.TENSOR_CORES))
def test_block_fma_bound_holds_for_every_tensor_core_preset(name, signed):
    """Every preset, AMD's included; a block-scaled model's errors relative to the sum of
    |products times scales|. (With operands over 6 binades only, B200_FP8's F = 25 truncates
    nothing and its FP32 blocks are exact for these K: errors of exactly 0, hence 12.)"""
    model = tensorcore.TENSOR_CORES[name]
    rng = np.random.default_rng(3)
    ratios = []
    for k in PRESET_KS:
        a, b, sa, sb = _preset_operands(model, rng, (32, k), signed)
        got = _simulate(model, a, b, sa, sb)
        bound = bounds.deterministic_bound(model, k)
        errors = _errors(_scaled(a, sa, model), _scaled(b, sb, model), got)
        assert (errors <= bound).all(), (k, errors.max(), bound)
        ratios.append(errors.max() / bound)
    print(f"\n{name}, {'both signs' if signed else 'one sign'}: largest error / bound per K "
          f"{dict(zip(PRESET_KS, np.round(ratios, 3)))}")
    assert max(ratios) > 1e-3


def _largest_product_below(t: float, fa, fb):
    """Normal a of fa and b of fb (b a power of two) with a * b the largest product below the
    power of two t, or None."""
    best = None
    for eb in range(fb.emin, fb.emax + 1):
        q = t / 2.0**eb
        if not fa.tiny < q <= 2.0**fa.emax:
            continue
        a = float(lowprec.next_down(q, fa))
        if a >= fa.tiny and (best is None or a * 2.0**eb > best[0] * best[1]):
            best = (a, 2.0**eb)
    return best


def _power_of_two(t: float, fa, fb):
    """Normal a of fa, b of fb, powers of two, with a * b = t, or None."""
    e = round(math.log2(t))
    for eb in range(fb.emin, fb.emax + 1):
        if fa.emin <= e - eb <= fa.emax:
            return 2.0 ** (e - eb), 2.0**eb
    return None


def _adversary(model):
    """One block (group) of n products: 2**E, then x just below a rounding threshold of the
    output at 2**E (u_out 2**E: half an ulp to nearest, an ulp toward zero), then n - 2 just
    below 2**(E - F), which the alignment truncates away; E the smallest >= 0 where all are
    normal products. The block's result is 2**E: the error is x + (n - 2) s."""
    fa = model.inputs
    fb = getattr(model, "b_format", None) or fa
    if isinstance(model, cdna.MFMAModel):
        n, F, u_out = model.group, cdna.PRODUCT_BITS, 2.0**-24
    else:
        n, F = model.block, model.fraction_bits
        u_out = bounds.unit_roundoff(model.output, model.output_rounding)
    for E in range(0, 16):
        big = _power_of_two(2.0**E, fa, fb)
        x = _largest_product_below(u_out * 2.0**E, fa, fb)
        s = _largest_product_below(2.0 ** (E - F), fa, fb)
        if big and x and s:
            pairs = [big, x] + [s] * (n - 2)
            return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    raise AssertionError(f"no adversary for {model.name}")


def _sub_block_adversary(model):
    """kind::mxf4nvf4, one instruction (K = 64): sub-block 0 is 16 products 6 * 6 times scales
    2**8 * 2**8 (576 * 2**16, 1.125 * 2**25: an ulp of 4), sub-blocks 2 and 3 sum 511 each
    (14 * 36 + 6 + 1) times 2**-4 * 2**-4: together 3.99, just below that ulp, so the result,
    rounded toward zero, is 576 * 2**16; sub-block 1 is zero."""
    a, b = np.zeros(64), np.zeros(64)
    a[:16] = b[:16] = 6.0
    for start in (32, 48):
        a[start:start + 16], b[start:start + 16] = 6.0, 6.0
        b[start + 14], a[start + 15], b[start + 15] = 1.0, 1.0, 1.0
    scales = np.array([2.0**8] * (32 // model.scale_block) + [2.0**-4] * (32 // model.scale_block))
    return a, b, scales, scales


@pytest.mark.parametrize("name", list(tensorcore.TENSOR_CORES))
def test_block_fma_bound_is_reached_within_a_small_factor(name):
    """One block (one instruction; for CDNA1/2, 16 groups), inputs chosen to lose what the
    bound counts (exact rationals): the error is at least a quarter of the bound.

    * block FMA and CDNA3: 2**E, x just below the output's rounding threshold and n - 2 products
      just below 2**(E - F): error x + (n - 2) s against ``u_out + (n + 1) 2**-F`` (CDNA3:
      F = 24; x is truncated too);
    * block-scaled: the same with scales 1 (kind::mxf8f6f4), :func:`_sub_block_adversary`
      (kind::mxf4nvf4);
    * CDNA1/2: 1, then K - 1 products x with g x below half an ulp of 1: every group's sum is
      rounded away, an error (K - 1) x against gamma_(d + q - 1)(2**-24)."""
    model = tensorcore.TENSOR_CORES[name]
    sa = sb = None
    if isinstance(model, cdna.MFMAModel) and not model.fused:
        k = 16 * model.group
        xa, xb = _largest_product_below(2.0**-24 / model.group, model.inputs, model.b_format)
        a, b = np.array([1.0] + [xa] * (k - 1)), np.array([1.0] + [xb] * (k - 1))
    elif getattr(model, "sub_block", None):
        a, b, sa, sb = _sub_block_adversary(model)
    else:
        a, b = _adversary(model)
        if getattr(model, "block_scaled_mma", False):
            sa = sb = np.ones(-(-len(a) // model.scale_block))
    fa = model.inputs
    fb = getattr(model, "b_format", None) or fa
    assert (lowprec.round(a, fa) == a).all() and (lowprec.round(b, fb) == b).all()
    got = float(_simulate(model, a, b, sa, sb))
    a, b = _scaled(a, sa, model), _scaled(b, sb, model)
    exact = sum(Fraction(x) * Fraction(y) for x, y in zip(a, b))
    error = abs(Fraction(got) - exact) / sum(abs(Fraction(x) * Fraction(y)) for x, y in zip(a, b))
    ratio = float(error / Fraction(bounds.deterministic_bound(model, len(a))))
    print(f"\n{name}, one adversarial block: error / bound = {ratio:.3f}")
    assert ratio <= 1
    assert ratio > 0.25


def test_bounds_grow_as_the_analysis_says():
    """gamma_K grows linearly, the pairwise bound like log2 K, the probabilistic like sqrt(K);
    promotion to FP32 caps the FP8 bound (DeepSeek-V3 sec. 3.3.2)."""
    seq = [bounds.deterministic_bound("fp32", k) for k in (1024, 4096)]
    assert seq[1] / seq[0] == pytest.approx(4, rel=1e-3)
    pw = FormatAccumulation("fp32", "pairwise")
    assert bounds.deterministic_bound(pw, 4096) / bounds.deterministic_bound(pw, 1024) == \
        pytest.approx(12 / 10, rel=1e-6)
    prob = [bounds.probabilistic_bound("fp32", k, lam=5.0).bound for k in (1024, 4096)]
    assert prob[1] / prob[0] == pytest.approx(2, rel=1e-3)
    promoted = [bounds.deterministic_bound(tensorcore.H100_FP8_PROMOTED, k)
                for k in (128, 4096, 65536)]
    assert promoted[2] < 1.01 * promoted[0]
    assert bounds.deterministic_bound(tensorcore.H100_FP8, 65536) == math.inf or \
        bounds.deterministic_bound(tensorcore.H100_FP8, 65536) > 100 * promoted[2]


# --- the figure -----------------------------------------------------------------------------
def test_figure_data_stay_within_their_bounds():
    """Fig. 09's data (lowprec.demo.accumulation_bounds), small: every observed error is under
    its model's deterministic bound, and the FP32 accumulator's also under the probabilistic
    one; presets missing from TENSOR_CORES are left out, present ones drawn."""
    from lowprec import demo

    ks, panels = demo.accumulation_bounds(ks=(16, 256), trials=4)
    assert ks == [16, 256]
    labels = {name for lines in panels.values() for label in lines
              for name in label.split(" = ")}  # identical lines share one: "A = B"
    for names in demo.BOUND_PANELS.values():
        for name in names:
            assert (name in labels) == (name in tensorcore.TENSOR_CORES)
    for lines in panels.values():
        for label, line in lines.items():
            assert all(0 < o <= b for o, b in zip(line["observed"], line["bound"])), label
            if line["probabilistic"]:
                assert all(o <= p for o, p in zip(line["observed"], line["probabilistic"]))


def test_figure_is_labelled():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lowprec import plots

    ks = [16, 64]
    panels = {"FP16 inputs": {"A": {"observed": [1e-7, 2e-7], "bound": [1e-6, math.inf],
                                    "probabilistic": [5e-7, 6e-7]}},
              "FP8 inputs": {"B": {"observed": [1e-3, 2e-3], "bound": [1e-2, 2e-2],
                                   "probabilistic": None}}}
    fig = plots.plot_accumulation_bounds(ks, panels, "test")
    left, right = fig.axes
    for ax in (left, right):
        assert ax.get_xscale() == ax.get_yscale() == "log"
        assert ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in left.get_legend().get_texts()][0] == "A"
    assert any("probabilistic" in t.get_text() for t in left.get_legend().get_texts())
    assert not any("probabilistic" in t.get_text() for t in right.get_legend().get_texts())
    # the infinite bound is left out: one finite point of the dashed line
    dashed = [line for line in left.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [16]
    plt.close(fig)


def test_committed_figure_is_what_the_code_draws(tmp_path):
    """figures/09_accumulation_bounds.png is today's drawing, compared coarsely (25-pixel
    squares, as tests/test_demo.py compares Fig. 01: text rendering differs between matplotlib
    versions): a changed layout or a missing panel fails it, one line more or less does not
    (measured: 0.11 at most in a square, 0.003 on average). After adding a preset to
    TENSOR_CORES, run `make figures`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    from lowprec import demo

    committed = Path(__file__).resolve().parent.parent / "figures" / "09_accumulation_bounds.png"
    fig = demo.accumulation_bounds_figure()
    fig.savefig(tmp_path / "today.png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    published, today = mpimg.imread(committed), mpimg.imread(tmp_path / "today.png")
    assert published.shape == today.shape, "figure size changed: run `make figures`"

    def coarse(image, block=25):
        grey = image[..., :3].mean(axis=-1)
        h, w = (grey.shape[0] // block) * block, (grey.shape[1] // block) * block
        return grey[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3))
    difference = np.abs(coarse(published) - coarse(today))
    assert difference.max() < 0.15 and difference.mean() < 0.012, (
        "figures/09_accumulation_bounds.png is stale: run `make figures`")


@pytest.mark.exhaustive  # every K up to 128, every rounding mode: about 25 s of CPU
@pytest.mark.parametrize("mode", ["nearest", "toward_zero", "up", "down", "stochastic"])
def test_deterministic_bound_holds_for_every_k_and_mode(mode):
    rng = np.random.default_rng(4)
    accumulators = [FormatAccumulation("fp16"), FormatAccumulation("fp16", "pairwise"),
                    FormatAccumulation("fp16", block=8),
                    FormatAccumulation("bf16", "pairwise", block=5), FormatAccumulation("bf16")]
    for acc in accumulators:
        for k in range(1, 129):
            for signed in (False, True):
                a, b = _operands(rng, (8, k), acc.format, signed)
                got = acc.dot(a, b, held=acc.format, mode=mode, rng=rng)
                bound = bounds.deterministic_bound(acc, k, mode=lowprec.RoundingMode(mode))
                assert (_errors(a, b, got) <= bound).all(), (acc.name, k, signed)


@pytest.mark.exhaustive  # every K up to 299, every preset: about 60 s of CPU
@pytest.mark.parametrize("name", list(tensorcore.TENSOR_CORES))
def test_block_fma_bound_holds_for_every_k(name):
    model = tensorcore.TENSOR_CORES[name]
    rng = np.random.default_rng(5)
    for k in range(1, 300):
        for signed in (False, True):
            a, b, sa, sb = _preset_operands(model, rng, (8, k), signed)
            got = _simulate(model, a, b, sa, sb)
            errors = _errors(_scaled(a, sa, model), _scaled(b, sb, model), got)
            assert (errors <= bounds.deterministic_bound(model, k)).all(), (k, signed)
