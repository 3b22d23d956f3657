"""Tensor cores beyond Hopper: Ada FP8, Blackwell tcgen05 (with block-scaled MMA), FP16 outputs
and mixed FP8 operands.

Expected values are worked out by hand below from the instruction parameters MMA-Sim gives
(Xie et al., arXiv:2511.10909; microsoft/MMA-Sim, mmasim/simulator/nv_ptx.py and
arithmetic.py): probes in the style of Fasi, Higham, Mikaitis & Pranesh (PeerJ CS 2021), and
the vectorised model against the exact one-term-at-a-time reference
(lowprec.reference.block_fma_scalar, in fractions.Fraction) on random and adversarial inputs.
tests/test_torch_mmasim.py runs MMA-Sim itself where it is available.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import lowprec
from lowprec import E2M1, E2M3, E3M2, E4M3, E5M2, tensorcore as tc

SCALED = [m for m in tc.TENSOR_CORES.values() if m.block_scaled_mma]
NEW = [tc.ADA_FP8, tc.B200_FP16, tc.B200_BF16, tc.B200_TF32, tc.B200_FP8, tc.V100_FP16_OUT16,
       tc.A100_FP16_OUT16, tc.H100_FP16_OUT16, tc.H100_FP8_OUT16, tc.ADA_FP8_OUT16,
       tc.B200_FP16_OUT16, tc.B200_FP8_OUT16]
PAIRS = [(E4M3, E4M3), (E4M3, E5M2), (E5M2, E4M3), (E5M2, E5M2)]


def unit(n, at, value=1.0):
    x = np.zeros(n)
    x[at] = value
    return x


# --- probes: unscaled instructions -------------------------------------------------------------
@pytest.mark.parametrize("model,want", [
    (tc.ADA_FP8, 2.0**-13), (tc.B200_FP16, 2.0**-24), (tc.B200_BF16, 2.0**-24),
    (tc.B200_TF32, 2.0**-24), (tc.B200_FP8, 2.0**-24), (tc.H100_FP8, 2.0**-13)])
def test_fasi_probe(model, want):
    # 1*1 - (1 - 2**-24): c is truncated to F fraction bits below 2**0. F = 25 keeps all of
    # 1 - 2**-24 (2**-24 left); F = 13 keeps 1 - 2**-13 (2**-13 left). MMA-Sim: F = 25 on
    # Blackwell for every kind, 13 for FP8 on Ada and Hopper.
    k = 32 if model in (tc.ADA_FP8, tc.H100_FP8) else model.block  # the instruction's K
    got = tc.dot(unit(k, 0), np.ones(k), model, c=-(1 - 2.0**-24))
    assert got == want
    assert tc.block_fma_scalar(unit(model.block, 0), np.ones(model.block), -(1 - 2.0**-24),
                               model) == want


@pytest.mark.parametrize("model,pair", [
    (tc.B200_FP16, None), (tc.B200_BF16, None), (tc.B200_TF32, None),
    (tc.B200_FP8, (E4M3, E5M2)), (tc.B200_FP8, (E5M2, E5M2))])
def test_two_small_products_at_both_ends_of_k(model, pair):
    # c = 1 and two products 2**-24 at the first and last index of the instruction's K: whole K
    # fused with F = 25 keeps both, 1 + 2**-23 (the A100's split 2 x 8 gives 1; MMA-Sim).
    k = model.block
    if pair is None:
        a = unit(k, [0, k - 1], 2.0**-12)
        b = a
    elif pair[0] == E4M3:  # an E4M3 subnormal times an E5M2 subnormal: 2**-8 * 2**-16
        model = model.reading(*pair)
        a, b = unit(k, [0, k - 1], 2.0**-8), unit(k, [0, k - 1], 2.0**-16)
    else:
        model = model.reading(*pair)
        a = b = unit(k, [0, k - 1], 2.0**-12)
    assert tc.dot(a, b, model, c=1.0) == 1 + 2.0**-23
    assert tc.block_fma_scalar(a, b, 1.0, model) == 1 + 2.0**-23


def test_ada_fp8_runs_k32_as_two_halves():
    # products 2**-14 at k = 0 and 1 (first half), 1 at k = 16 (second half), c = 0.
    # Ada: the first half alone sums to 2**-13 exactly (its largest exponent is -12, the
    # clamped field of the E4M3 subnormals 2**-7), then 1 + 2**-13 keeps it (13 bits): 1 + 2**-13.
    # H100 wgmma (whole K32, F = 13): aligned to 2**0 each 2**-14 is truncated away: 1.
    # B200 (whole K32, F = 25): 1 + 2**-13.
    a = unit(32, [0, 1, 16], 2.0**-7)
    a[16] = 1.0
    b = a.copy()
    assert tc.dot(a, b, tc.ADA_FP8) == 1 + 2.0**-13
    assert tc.dot(a, b, tc.H100_FP8) == 1.0
    assert tc.dot(a, b, tc.B200_FP8) == 1 + 2.0**-13
    half = tc.block_fma_scalar(a[:16], b[:16], 0.0, tc.ADA_FP8)
    assert half == 2.0**-13
    assert tc.block_fma_scalar(a[16:], b[16:], half, tc.ADA_FP8) == 1 + 2.0**-13
    assert tc.block_fma_scalar(a, b, 0.0, tc.H100_FP8) == 1.0
    # the result keeps 13 fraction bits (toward zero): 1 + 2**-13 + 2**-14 -> 1 + 2**-13
    c = 1 + 2.0**-13 + 2.0**-14
    assert tc.dot(np.zeros(32), np.zeros(32), tc.ADA_FP8, c=c) == 1 + 2.0**-13


def test_fp16_output_rounds_to_nearest_even():
    # 1 + 3 * 2**-12 is 1 + 0.75 ulp of FP16: the FP32-output model truncates it, the _OUT16
    # model rounds it to nearest, 1 + 2**-10; a tie (1 + 2**-11, half an ulp) goes to even (1).
    for fp32, fp16 in [(tc.H100_FP16, tc.H100_FP16_OUT16), (tc.B200_FP16, tc.B200_FP16_OUT16),
                       (tc.A100_FP16, tc.A100_FP16_OUT16), (tc.V100_FP16, tc.V100_FP16_OUT16)]:
        a = unit(fp32.block, 1, 2.0**-6)
        b = unit(fp32.block, 1, 3 * 2.0**-6)
        assert tc.block_fma(a, b, 1.0, fp32) == 1 + 3 * 2.0**-12
        assert tc.block_fma(a, b, 1.0, fp16) == 1 + 2.0**-10
        assert tc.block_fma(a, unit(fp32.block, 1, 2.0**-5), 1.0, fp16) == 1.0
        assert fp16.output == lowprec.FP16 and fp16.accumulator == lowprec.FP16
    # FP8 with FP16 output keeps F = 13 (MMA-Sim wgmma / Ada mma): sixteen products 2**-14
    # next to c = 1 are truncated away while aligning (2**-14 < 2**-13) although together they
    # make one FP16 ulp; with F = 25 (B200) they are kept and D = 1 + 2**-10.
    small = np.full(16, 2.0**-7)  # E4M3 subnormal; 2**-7 * 2**-7 = 2**-14
    for model in (tc.H100_FP8_OUT16, tc.ADA_FP8_OUT16):
        assert model.fraction_bits == 13
        assert tc.block_fma(small, small, 1.0, model) == 1.0
    assert tc.block_fma(small, small, 1.0, tc.B200_FP8_OUT16) == 1 + 2.0**-10
    # 57344 + 8192 - 16 = 65520 is exact at F = 13 (grid 4) and a tie in FP16 between 65504
    # (odd) and 2**16 (even): it rounds to 2**16, which overflows to infinity
    e5 = tc.H100_FP8_OUT16.reading(E5M2, E5M2)
    assert tc.block_fma([57344.0, 8192.0, -16.0], [1.0, 1.0, 1.0], 0.0, e5) == np.inf
    assert tc.block_fma([57344.0, 8192.0, -32.0], [1.0, 1.0, 1.0], 0.0, e5) == 65504.0
    assert tc.block_fma([57344.0, 8192.0, -16.0], [1.0, 1.0, 1.0], 0.0,
                        tc.H100_FP8.reading(E5M2, E5M2)) == 65520.0  # FP32 output


def test_fp16_output_presets_exist_only_where_the_isa_allows():
    names = set(tc.TENSOR_CORES)
    assert {"V100_FP16_OUT16", "A100_FP16_OUT16", "H100_FP16_OUT16", "H100_FP8_OUT16",
            "ADA_FP8_OUT16", "B200_FP16_OUT16", "B200_FP8_OUT16"} <= names
    # BF16, TF32 and block-scaled kinds have an FP32 D only (PTX ISA; MMA-Sim's asserts)
    assert not any(n.endswith("_OUT16") and ("BF16" in n or "TF32" in n or "MX" in n)
                   for n in names)


# --- mixed FP8 operands: all four pairings -------------------------------------------------------
@pytest.mark.parametrize("base", [tc.H100_FP8, tc.ADA_FP8, tc.B200_FP8, tc.B200_MXF8F6F4],
                         ids=lambda m: m.name)
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0].name}x{p[1].name}")
def test_mixed_fp8_pairings_match_scalar(base, pair):
    model = base.reading(*pair)
    assert (model.inputs, model.b_format) == pair
    rng = np.random.default_rng(7)
    a, b, c = random_instruction(rng, model, 200)
    sa, sb = random_scales(rng, model, a.shape)
    check_block(model, a, b, c, sa, sb)


def test_each_operand_reads_its_own_formats_exponent_field():
    # E5M2 x E5M2 on H100 (F = 13): 2**-16 * 1 is an E5M2 subnormal, whose field says -14, so
    # the grid is 2**(-14-13) = 2**-27 and a second product 2**-14 * 2**-14 = 2**-28 is
    # truncated away (with the true exponent -16 the grid would be 2**-29 and keep it).
    model = tc.H100_FP8.reading(E5M2, E5M2)
    assert tc.block_fma([2.0**-16, 2.0**-14], [1.0, 2.0**-14], 0.0, model) == 2.0**-16
    # E4M3 x E5M2: 2**-9 (E4M3 subnormal, field -6) * 1: grid 2**-19; 2**-6 * 2**-14 = 2**-20
    # is dropped. Read as E5M2 (field -9 for 2**-9) the grid would be 2**-22 and keep it.
    model = tc.H100_FP8.reading(E4M3, E5M2)
    assert tc.block_fma([2.0**-9, 2.0**-6], [1.0, 2.0**-14], 0.0, model) == 2.0**-9
    assert tc.block_fma([2.0**-9, 2.0**-6], [1.0, 2.0**-14], 0.0,
                        tc.H100_FP8.reading(E5M2, E5M2)) == 2.0**-9 + 2.0**-20


def test_reading_keeps_formats_the_instruction_does_not_take():
    assert tc.H100_FP8.reading(E2M1, E4M3) is tc.H100_FP8  # wgmma takes no FP4
    model = tc.B200_FP8.reading(E2M1, E3M2)  # kind::f8f6f4 does
    assert (model.inputs, model.b_format) == (E2M1, E3M2)
    assert tc.B200_MXF4NVF4.reading(E4M3, E4M3) is tc.B200_MXF4NVF4


# --- probes: block-scaled MMA --------------------------------------------------------------------
def test_mxf8f6f4_scales_enter_each_products_exponent():
    model = tc.B200_MXF8F6F4
    # c = 1, elements 1 at both ends of K = 32, scales 2**-20 and 2**-4: two products 2**-24,
    # both kept by F = 25 -> 1 + 2**-23
    a = unit(32, [0, 31])
    assert tc.dot(a, np.ones(32), model, c=1.0, scale_a=[2.0**-20], scale_b=[2.0**-4]) \
        == 1 + 2.0**-23
    # 1*1 - (1 - 2**-24) with scales 2**100 * 2**-100: the product is 1, as unscaled: 2**-24
    assert tc.dot(unit(32, 0), np.ones(32), model, c=-(1 - 2.0**-24), scale_a=[2.0**100],
                  scale_b=[2.0**-100]) == 2.0**-24
    # A zero element's exponent reads as -126 (MMA-Sim, arithmetic.py,
    # extract_significand_exponent), plus its partner's and both scales': with b = 448 (2**8)
    # and scales 2**127 each, the zero products claim 2**(-126+8+254) = 2**136, and c = 1,
    # aligned to that, is truncated away: D = 0 although every product is zero.
    b = np.full(32, 448.0)
    assert tc.dot(np.zeros(32), b, model, c=1.0, scale_a=[2.0**127], scale_b=[2.0**127]) == 0
    assert tc.dot(np.zeros(32), b, model, c=1.0, scale_a=[2.0**-127], scale_b=[2.0**127]) == 1
    # overflow: 448 * 448 * 2**127 is past FP32's range: infinity even though D truncates
    assert tc.dot(unit(32, 0, 448.0), b, model, scale_a=[2.0**127], scale_b=[1.0]) == np.inf
    # a NaN scale (E8M0 0xFF) makes the products NaN
    assert math.isnan(tc.dot(a, np.ones(32), model, scale_a=[np.nan], scale_b=[1.0]))


def test_mxf8f6f4_with_fp6_and_fp4_elements():
    # E2M1 x E3M2 elements with their scales: 6 * 28 * 2**-3 * 2**2 + c; here exact
    model = tc.B200_MXF8F6F4.reading(E2M1, E3M2)
    got = tc.dot(unit(32, 5, 6.0), unit(32, 5, 28.0), model, c=0.5, scale_a=[2.0**-3],
                 scale_b=[4.0])
    assert got == 6 * 28 / 2 + 0.5
    with pytest.raises(ValueError, match="not e2m1 numbers"):
        tc.dot(unit(32, 0, 2.5), np.ones(32), model, scale_a=[1.0], scale_b=[1.0])


def test_mxf4nvf4_sub_sums_align_by_their_scales_alone():
    model = tc.B200_MXF4NVF4
    # group 0 sums to +576 (16 products 6*6), group 1 to -576, scales 1: the exact total is c.
    # Each group's exponent is its scales' (0), not its sum's (9), so c = 2**-34 sits on the
    # grid 2**(0-35) and survives: D = 2**-34 (with the sums' own exponents it would be 0).
    a = np.full(64, 6.0)
    a[16:32] = -6.0
    a[32:] = 0.0
    b = np.full(64, 6.0)
    ones = np.ones(4)
    assert tc.dot(a, b, model, c=2.0**-34, scale_a=ones, scale_b=ones) == 2.0**-34
    # F = 35: c = -(1 - 2**-24), a product 1 in group 0 and 0.25 * 2**-14 * 2**-14 = 2**-30 in
    # group 2 (UE8M0 scales per 32): 2**-24 + 2**-30 (F = 25 would drop the 2**-30)
    e8 = tc.B200_MXF4NVF4_E8M0
    a = unit(64, [0, 32])
    a[32] = 0.5
    b = a.copy()
    got = tc.dot(a, b, e8, c=-(1 - 2.0**-24), scale_a=[1.0, 2.0**-14], scale_b=[1.0, 2.0**-14])
    assert got == 2.0**-24 + 2.0**-30
    # NaN scale or NaN c: NaN; an infinite c stays (E2M1 elements are finite)
    assert math.isnan(tc.dot(a, b, e8, scale_a=[1.0, np.nan], scale_b=[1.0, 1.0]))
    assert math.isnan(tc.dot(a, b, e8, c=np.nan, scale_a=[1.0, 1.0], scale_b=[1.0, 1.0]))
    assert tc.dot(a, b, e8, c=-np.inf, scale_a=[1.0, 1.0], scale_b=[1.0, 1.0]) == -np.inf
    # a UE4M3 scale of zero silences its group; the result rounds toward zero into FP32
    a = np.full(64, 1.5)
    got = tc.dot(a, a, model, c=1.0, scale_a=[0.0, 1.0, 1.0, 0.0], scale_b=ones)
    assert got == 1 + 2 * 16 * 2.25
    # the result is rounded toward zero: c = 1 and one group 1.5 * 0.5 * 2**-12 * 2**-11
    # = 3 * 2**-25 give 1 + 3 * 2**-25 exactly, truncated to 1 (to nearest: 1 + 2**-23)
    got = tc.dot(unit(64, 0, 1.5), unit(64, 0, 0.5), e8, c=1.0, scale_a=[2.0**-12, 1.0],
                 scale_b=[2.0**-11, 1.0])
    assert got == 1.0
    assert lowprec.round(1 + 3 * 2.0**-25, "fp32") == 1 + 2.0**-23


# --- vectorised == exact scalar reference, every preset --------------------------------------
def random_values(rng, shape, fmt):
    """Values of fmt over its whole range (codes), with NaN and infinities where fmt has them."""
    if fmt.bits > 16:  # TF32: FP32 values of every size (the model truncates them)
        return rng.standard_normal(shape) * np.exp2(rng.integers(-90, 60, shape))
    return lowprec.decode(rng.integers(0, 1 << fmt.bits, shape), fmt)


def random_instruction(rng, model, rows, n=None):
    """a, b of shape (rows, n) and c (rows,): full-range codes, cancellation, spreads >= F,
    subnormals, overflow, NaN and infinities, mixed row by row."""
    n = model.block if n is None else n
    fa, fb, acc = model.inputs, model.b_format, model.accumulator
    a, b = random_values(rng, (rows, n), fa), random_values(rng, (rows, n), fb)
    finite = rng.random((rows, 1)) < 0.8  # most rows without NaN / inf
    a = np.where(finite & ~np.isfinite(a), 0.0, a)
    b = np.where(finite & ~np.isfinite(b), 0.0, b)
    kind = rng.integers(0, 4, rows)
    # cancellation: the second half repeats the first with a's sign flipped
    h = n // 2
    if h:
        cancel = kind == 1
        a[cancel, h:2 * h] = -a[cancel, :h]
        b[cancel, h:2 * h] = b[cancel, :h]
    # exponent spread >= F: one big product next to tiny ones (a's largest and smallest)
    spread = kind == 2
    big = float(fa.max) if fa.bits <= 16 else 2.0**60
    a[spread, 0] = big
    c = random_values(rng, rows, acc if acc.bits <= 16 else lowprec.FP16)
    if acc.bits > 16:
        c = c * np.exp2(rng.integers(-140, 110, rows))
        c = lowprec.round(np.where(np.isfinite(c), c, 0.0), acc, "toward_zero")
        c[kind == 3] = float(acc.max) * rng.choice([-1.0, 1.0], int((kind == 3).sum()))
        special = rng.random(rows) < 0.05
        c[special] = rng.choice([np.inf, -np.inf, np.nan], int(special.sum()))
    if h:
        near = (kind == 1) & np.isfinite(c)
        c[near] = lowprec.round(c[near] * 2.0**-30, acc, "toward_zero")
    # subnormal results: a subnormal c and one product at most
    tiny = rng.random(rows) < 0.1
    a[tiny, 1:] = 0.0
    a[tiny & (rng.random(rows) < 0.5), 0] = 0.0
    step = 2.0 ** (acc.emin - acc.mantissa_bits)
    c[tiny] = rng.integers(-(2**acc.mantissa_bits), 2**acc.mantissa_bits, int(tiny.sum())) * step
    return a, b, c


def random_scales(rng, model, shape):
    """Decoded scales for operands of shape (rows, n): every code of the scale format,
    NaN included, now and then."""
    if not model.block_scaled_mma:
        return None, None
    fmt = model.scale_format
    nb = -(-shape[-1] // model.scale_block)
    codes = 256 if fmt == lowprec.E8M0 else 128  # UE4M3: the sign bit is not a scale's
    out = []
    for _ in "ab":
        s = lowprec.decode(rng.integers(0, codes, shape[:-1] + (nb,)), fmt)
        mild = lowprec.decode(rng.integers(100, 150, shape[:-1] + (nb,)), lowprec.E8M0)
        mild = mild if fmt == lowprec.E8M0 else np.exp2(np.log2(mild).clip(-9, 8))
        pick = rng.random(shape[:-1] + (1,)) < 0.5
        out.append(np.where(pick, s, mild))
    return out


def same(x, y):
    return x == y or (math.isnan(x) and math.isnan(y))


def check_block(model, a, b, c, sa, sb):
    scales = {} if sa is None else {"scale_a": sa, "scale_b": sb}
    got = tc.block_fma(a, b, c, model, **scales)
    for i in range(len(a)):
        row = {} if sa is None else {"scale_a": sa[i], "scale_b": sb[i]}
        want = tc.block_fma_scalar(a[i], b[i], c[i], model, **row)
        assert same(got[i], want), (i, a[i], b[i], c[i], row, got[i], want)
        assert math.copysign(1, got[i]) == math.copysign(1, want) or math.isnan(want)


@pytest.mark.parametrize("model", NEW + SCALED, ids=lambda m: m.name)
def test_vectorised_matches_scalar_on_adversarial_inputs(model):
    rng = np.random.default_rng(sum(map(ord, model.name)))
    a, b, c = random_instruction(rng, model, 300)
    sa, sb = random_scales(rng, model, a.shape)
    check_block(model, a, b, c, sa, sb)


@pytest.mark.parametrize("pair", [(E2M1, E2M1), (E2M3, E3M2), (E3M2, E4M3), (E5M2, E2M1)],
                         ids=lambda p: f"{p[0].name}x{p[1].name}")
@pytest.mark.parametrize("base", [tc.B200_FP8, tc.B200_MXF8F6F4], ids=lambda m: m.name)
def test_f8f6f4_element_pairings_match_scalar(base, pair):
    model = base.reading(*pair)
    rng = np.random.default_rng(11)
    a, b, c = random_instruction(rng, model, 150)
    sa, sb = random_scales(rng, model, a.shape)
    check_block(model, a, b, c, sa, sb)


@pytest.mark.parametrize("model", [tc.ADA_FP8, tc.B200_FP8, tc.B200_MXF8F6F4, tc.B200_MXF4NVF4,
                                   tc.B200_MXF4NVF4_E8M0], ids=lambda m: m.name)
def test_long_k_is_instructions_chained(model):
    # K = 2.5 instructions: each instruction's result is the next one's c (the last one short)
    rng = np.random.default_rng(3)
    K = model.block * 5 // 2
    a, b, c = random_instruction(rng, model, 40, K)
    sa, sb = random_scales(rng, model, a.shape)
    scales = {} if sa is None else {"scale_a": sa, "scale_b": sb}
    got = tc.dot(a, b, model, c=c, **scales)
    nb = model.block // (model.scale_block or model.block)
    for i in range(len(a)):
        acc = c[i]
        for j, k0 in enumerate(range(0, K, model.block)):
            row = {} if sa is None else {"scale_a": sa[i, j * nb:(j + 1) * nb],
                                         "scale_b": sb[i, j * nb:(j + 1) * nb]}
            acc = tc.block_fma_scalar(a[i, k0:k0 + model.block], b[i, k0:k0 + model.block],
                                      acc, model, **row)
        assert same(got[i], acc), i
    # matmul agrees with dot, output element by output element
    bt = b[:5].T  # (K, 5)
    sbt = None if sb is None else sb[:5].T
    scales = {} if sa is None else {"scale_a": sa[:6], "scale_b": sbt}
    mm = tc.matmul(a[:6], bt, model, **scales)
    for i in range(6):
        for j in range(5):
            row = {} if sa is None else {"scale_a": sa[i], "scale_b": sb[j]}
            assert same(mm[i, j], tc.dot(a[i], b[j], model, **row))


# --- the interface -------------------------------------------------------------------------------
def test_scaled_matmul_shapes_and_the_accumulator_protocol():
    model = tc.B200_MXF8F6F4
    rng = np.random.default_rng(5)
    a = lowprec.round(rng.standard_normal((2, 3, 64)), "e4m3")
    b = lowprec.round(rng.standard_normal((64, 4)), "e5m2")
    sa = np.exp2(rng.integers(-5, 5, (2, 3, 2))).astype(float)
    sb = np.exp2(rng.integers(-5, 5, (2, 4))).astype(float)
    mixed = model.reading(E4M3, E5M2)
    got = tc.matmul(a, b, mixed, scale_a=sa, scale_b=sb)
    assert got.shape == (2, 3, 4)
    assert got[1, 2, 3] == tc.dot(a[1, 2], b[:, 3], mixed, scale_a=sa[1, 2], scale_b=sb[:, 3])
    # 1-D operands, numpy.matmul's rules
    assert tc.matmul(a[0, 0], b, mixed, scale_a=sa[0, 0], scale_b=sb).shape == (4,)
    assert tc.matmul(a[0], b[:, 0], mixed, scale_a=sa[0], scale_b=sb[:, 0]).shape == (3,)
    # the model's matmul method (lowprec.accumulate's protocol) takes the same scales
    via = model.matmul(a, b, held=(E4M3, E5M2), scale_a=sa, scale_b=sb)
    np.testing.assert_array_equal(via, got)
    np.testing.assert_array_equal(
        model.matmul(a[0, 0], b, held=(E4M3, E5M2), scale_a=sa[0, 0], scale_b=sb), got[0, 0])
    np.testing.assert_array_equal(
        model.dot(a[0], b[:, 1], held=(E4M3, E5M2), scale_a=sa[0], scale_b=sb[:, 1]),
        got[0, :, 1])
    # K not a multiple of 32: ceil(K / 32) scales, the last block short
    assert tc.matmul(a[0, :, :40], b[:40], mixed, scale_a=sa[0], scale_b=sb).shape == (3, 4)
    # the scaled product is a plain product when every scale is 1 and nothing is truncated
    e2 = lowprec.round(rng.standard_normal((3, 64)), "e2m1")
    one = tc.matmul(e2, e2.T, tc.B200_MXF4NVF4, scale_a=np.ones((3, 4)), scale_b=np.ones((4, 3)))
    np.testing.assert_array_equal(one, e2 @ e2.T)


def test_scale_errors_are_clear():
    model = tc.B200_MXF8F6F4
    a, b = np.ones((2, 32)), np.ones((32, 3))
    with pytest.raises(ValueError, match="pass scale_a and scale_b"):
        tc.matmul(a, b, model)
    with pytest.raises(ValueError, match="pass scale_a and scale_b"):
        model.matmul(a, b)
    with pytest.raises(ValueError, match=r"scale_a has shape \(2,\); .* needs \(2, 1\)"):
        tc.matmul(a, b, model, scale_a=np.ones(2), scale_b=np.ones((1, 3)))
    with pytest.raises(ValueError, match="scale_b has shape"):
        tc.matmul(a, b, model, scale_a=np.ones((2, 1)), scale_b=np.ones((3, 1)))
    with pytest.raises(ValueError, match="no block-scaled MMA"):
        tc.matmul(a, b, tc.B200_FP8, scale_a=np.ones((2, 1)), scale_b=np.ones((1, 3)))
    with pytest.raises(ValueError, match="no block-scaled MMA"):
        tc.H100_FP16.matmul(a, b, scale_a=np.ones((2, 1)), scale_b=np.ones((1, 3)))
    with pytest.raises(ValueError, match="not unsigned e8m0 scales"):
        tc.matmul(a, b, model, scale_a=np.full((2, 1), 3.0), scale_b=np.ones((1, 3)))
    with pytest.raises(ValueError, match="not unsigned e4m3 scales"):
        tc.dot(np.ones(64), np.ones(64), tc.B200_MXF4NVF4, scale_a=-np.ones(4),
               scale_b=np.ones(4))
    with pytest.raises(ValueError, match="not e2m1 numbers"):
        tc.dot(np.full(64, 5.0), np.ones(64), tc.B200_MXF4NVF4, scale_a=np.ones(4),
               scale_b=np.ones(4))
    with pytest.raises(ValueError, match="scale_block"):
        tc.TensorCoreModel("x", E4M3, block=32, fraction_bits=25, scale_block=24,
                           scale_format="e8m0")
    with pytest.raises(ValueError, match="scale_format"):
        tc.TensorCoreModel("x", E4M3, block=32, fraction_bits=25, scale_block=32)
    with pytest.raises(ValueError, match="E2M1 operands only"):
        tc.TensorCoreModel("x", E4M3, block=64, fraction_bits=35, scale_block=16,
                           scale_format="e4m3", sub_block=16)
    with pytest.raises(ValueError, match="fraction_bits"):
        tc.TensorCoreModel("x", E4M3, block=32, fraction_bits=35)
    # K = 0: no blocks, so no scales are needed; the empty sum is +0
    got = tc.matmul(np.zeros((2, 0)), np.zeros((0, 3)), model)
    assert got.shape == (2, 3) and not np.signbit(got).any() and (got == 0).all()


def test_block_scaled_attributes():
    assert tc.B200_MXF8F6F4.block_scaled_mma and tc.B200_MXF8F6F4.scale_block == 32
    assert tc.B200_MXF4NVF4.scale_block == 16 and tc.B200_MXF4NVF4.scale_format == E4M3
    assert tc.B200_MXF4NVF4_E8M0.scale_block == 32
    assert (tc.B200_MXF8F6F4.block, tc.B200_MXF4NVF4.block) == (32, 64)
    assert (tc.B200_MXF8F6F4.fraction_bits, tc.B200_MXF4NVF4.fraction_bits) == (25, 35)
    assert not any(m.block_scaled_mma for m in NEW)
