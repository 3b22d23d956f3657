"""lowprec.scaling.block_cast / block_quantize against an exact rational reference.

The reference below restates every rule of lowprec/scaling/block.py in exact arithmetic
(fractions.Fraction, lowprec.reference.floor_log2 and round_exact), each from its source:
OCP MX v1.0 sec. 6.3 (floor), TE ptx.cuh float_to_e8m0 / exp2f_rcp (rceil), torchao
ScaleCalculationMode CEIL / EVEN, TE recipe_common.cuh compute_scale_from_amax (pow2_floor),
DeepSeek-V3 inference/kernel.py act_quant_kernel (fp32), TE core_nvfp4.cuh and
quantize_transpose_nvfp4.cuh (nvfp4). Where a reference kernel rounds an intermediate to
float32, the reference rounds it with round_exact(..., "fp32") at the same step.
"""
import math
from fractions import Fraction as Q

import numpy as np
import pytest

from lowprec.formats import as_format
from lowprec.reference import floor_log2, round_exact
from lowprec.scaling import (BlockRecord, CastRecord, ScaledTensor, block_cast, block_quantize,
                             mx_cast)

FLT_MAX = float(np.finfo(np.float32).max)
F32 = np.float32


def r32(q):
    """float32 rounding of an exact value (Fraction), as a Fraction (inf stays a float)."""
    v = round_exact(q, "fp32")
    return v if math.isinf(v) else Q(v)


def rnd(q, fmt):
    """Round to the element format, nearest-even, saturating (CUDA __NV_SATFINITE: an
    infinity too becomes +-max)."""
    if isinstance(q, float) and math.isinf(q):
        return math.copysign(as_format(fmt).max, q)
    return round_exact(q, fmt, overflow="saturate")


def ceil_log2(q):
    k = floor_log2(q)
    return k if q == Q(2) ** k else k + 1


# --- the reference ------------------------------------------------------------------------------
def ref_block(values, fmt_name, rule, s_enc=None, s_dec=None):
    """(decode scale X of the block, rounded elements) for one block of floats."""
    fmt = as_format(fmt_name)
    finite = [v for v in values if math.isfinite(v)]
    nan = [math.isnan(v) for v in values]
    all_finite = len(finite) == len(values)
    amax_nan_free = max((abs(v) for v in values if not math.isnan(v)), default=0.0)
    if rule in ("floor", "ceil", "even"):
        if not all_finite:
            return math.nan, [math.nan] * len(values)
        a = Q(max(abs(v) for v in values))
        if a == 0:
            e = -127
        else:
            k = floor_log2(a)
            if rule == "ceil" and a != Q(2) ** k:
                k += 1
            if rule == "even" and a / Q(2) ** k >= 2 - Q(1, 2 ** (fmt.mantissa_bits + 1)):
                k += 1
            e = max(k - fmt.emax, -127)
        x = Q(2) ** e
        return float(x), [rnd(Q(v) / x, fmt) for v in values]
    if rule == "rceil":  # the exact ceiling; inf/NaN: a NaN scale
        if not all_finite:
            return math.nan, [math.nan] * len(values)
        a = Q(max(abs(v) for v in values))
        e = -127 if a == 0 else min(max(ceil_log2(a / Q(fmt.max)), -127), 127)
        return 2.0**e, [rnd(Q(v) / Q(2) ** e, fmt) for v in values]
    if rule == "rceil_te":  # TE: NaN-free amax; code 0 multiplies by 1; inf: code 254, rcp 0
        if math.isinf(amax_nan_free):
            return 2.0**127, [math.nan if not math.isfinite(v) else 0.0 for v in values]
        a = Q(amax_nan_free)
        q = r32(a * Q(float(F32(1 / fmt.max))))  # the float32 product a * (1 / max)
        e = -127 if q == 0 else min(max(ceil_log2(q), -127), 127)
        recip = 1 if e == -127 else Q(2) ** -e
        return 2.0**e, [math.nan if n else rnd(Q(v) * recip, fmt) for v, n in zip(values, nan)]
    if rule == "pow2_floor":
        a = amax_nan_free
        if a == 0 or math.isinf(a):
            s = Q(1)
        else:
            s = r32(Q(fmt.max) / Q(a))
            s = Q(FLT_MAX) if isinstance(s, float) else s  # an infinite scale becomes FLT_MAX
            s = Q(2) ** floor_log2(s)
        return float(1 / s), [math.nan if n else rnd(Q(v) * s if math.isfinite(v) else v, fmt)
                              for v, n in zip(values, nan)]
    if rule == "fp32":
        if not all_finite:
            return math.nan, [math.nan] * len(values)
        a = Q(max(abs(v) for v in values))
        x = r32(a / Q(fmt.max))
        x = Q(1) if x == 0 else x  # a zero scale (0 / 0 in the kernel) becomes 1
        return float(x), [rnd(r32(Q(v) / x), fmt) for v in values]
    if rule == "nvfp4":
        a = amax_nan_free
        if math.isinf(a):
            t = Q(FLT_MAX)
        else:
            t = r32(r32(Q(a) / 6) * s_enc)
            t = Q(FLT_MAX) if isinstance(t, float) else min(t, Q(FLT_MAX))
        x_b = Q(round_exact(t, "e4m3", overflow="saturate"))
        d = r32(x_b * s_dec)
        inv = Q(FLT_MAX) if d == 0 else r32(1 / d)
        inv = Q(FLT_MAX) if isinstance(inv, float) else min(inv, Q(FLT_MAX))
        out = []
        for v in values:
            if math.isnan(v):
                out.append(math.nan)
            elif math.isinf(v):
                out.append(math.copysign(6.0, v))
            else:
                p = r32(Q(v) * inv)
                out.append(rnd(p, "e2m1") if not isinstance(p, float) else math.copysign(6.0, v))
        return float(x_b), out
    raise AssertionError(rule)


def nvfp4_tensor_levels(x):
    """TE's S_enc, S_dec from the global (NaN-free) amax."""
    finite = np.abs(x[~np.isnan(x)])
    g = float(finite.max()) if finite.size else 0.0
    if g == 0:
        return Q(1), Q(1)
    s_enc = r32(Q(448 * 6) / Q(g)) if math.isfinite(g) else Q(0)
    s_enc = Q(FLT_MAX) if isinstance(s_enc, float) else min(s_enc, Q(FLT_MAX))
    if s_enc == 0:
        s_enc = Q(1)
    s_dec = r32(Q(1.0 / float(s_enc)))  # `1.0 / S_enc`: a double division, then float
    return s_enc, s_dec


# --- adversarial blocks -------------------------------------------------------------------------
def nudge(x, direction):
    with np.errstate(over="ignore"):
        return float(np.nextafter(F32(x), F32(direction * np.inf)))


def adversarial(fmt_name, block=8, seed=0):
    """Blocks (rows) whose amax sits on every corner the rules have."""
    fmt = as_format(fmt_name)
    rng = np.random.default_rng(seed)
    amaxes = [150.0, 1e-40, 3e38, FLT_MAX, 1e-45, 2.0**-149]
    for k in (-140, -130, -127, -126, -120, -9, -1, 0, 1, 7, 8, 9, 60, 120, 127):
        p = 2.0**k
        amaxes += [p, nudge(p, -1), nudge(p, 1)]
    for k in (-135, -127, -126, -20, -1, 0, 3, 100, 118):
        m = min(fmt.max * 2.0**k, FLT_MAX)
        amaxes += [float(F32(m)), nudge(m, -1), nudge(m, 1)]
    for k in (-3, 0, 5):  # the "even" threshold 2 - 2**-(m+1)
        t = (2 - 2.0 ** -(fmt.mantissa_bits + 1)) * 2.0**k
        amaxes += [t, nudge(t, -1)]
    rows = []
    for a in amaxes:
        row = (rng.uniform(-1, 1, block) * F32(a)).astype(np.float32)
        row[rng.integers(block)] = -a if rng.random() < 0.5 else a
        rows.append(row)
    outlier = (rng.standard_normal(block) * 1e-3).astype(np.float32)
    outlier[2] = 1e3
    rows += [outlier, np.zeros(block, np.float32), -np.zeros(block, np.float32)]
    for k in rng.integers(-30, 30, 12):
        rows.append((rng.standard_normal(block) * 2.0**k).astype(np.float32))
    special = rng.standard_normal((4, block)).astype(np.float32)
    special[0, 1], special[1, 2], special[2, 3], special[3] = np.inf, -np.inf, np.nan, np.nan
    rows.extend(special)
    return np.array(rows, np.float32)


def check_against_reference(x, fmt_name, rule, block, scale_format, **kw):
    tensor, record = block_cast(x, fmt_name, block=block, scale_format=scale_format, rule=rule,
                                **kw)
    s_enc = s_dec = None
    if rule == "nvfp4":
        if kw.get("tensor_scale") is None:
            s_enc, s_dec = nvfp4_tensor_levels(x)
        else:
            s_dec = Q(float(F32(kw["tensor_scale"])))
            s_enc = r32(1 / s_dec)
        assert record.tensor_scale == float(s_dec) == tensor.tensor_scale
    for i, row in enumerate(x):
        for j in range(0, x.shape[1], block):
            vals = [float(v) for v in row[j:j + block]]
            want_x, want = ref_block(vals, fmt_name, rule, s_enc, s_dec)
            got_x = tensor.block_scales[i, j // block]
            assert got_x == want_x or (math.isnan(want_x) and np.isnan(got_x)), \
                (rule, fmt_name, i, vals, got_x, want_x)
            np.testing.assert_array_equal(tensor.elements[i, j:j + block], want,
                                          err_msg=f"{rule} {fmt_name} row {i}: {vals}")
    return tensor, record


MX_CASES = [(f, r) for f in ("e4m3", "e5m2", "e3m2", "e2m3", "e2m1")
            for r in ("floor", "ceil", "even", "rceil", "rceil_te")]


@pytest.mark.parametrize("fmt_name, rule", MX_CASES)
def test_e8m0_rules_match_the_exact_reference(fmt_name, rule):
    x = adversarial(fmt_name)
    tensor, record = check_against_reference(x, fmt_name, rule, 8, "e8m0")
    codes = record.scale_codes
    scales = tensor.block_scales
    finite = ~np.isnan(scales)
    np.testing.assert_array_equal(codes[finite], np.log2(scales[finite].astype(np.float64)) + 127)
    assert (codes[~finite] == 255).all()


@pytest.mark.parametrize("fmt_name", ["e4m3", "e5m2"])
@pytest.mark.parametrize("rule, scale_format", [("pow2_floor", "fp32"), ("pow2_floor", "e8m0"),
                                                ("fp32", "fp32")])
def test_fp8_block_rules_match_the_exact_reference(fmt_name, rule, scale_format):
    x = adversarial(fmt_name, block=16)
    tensor, record = check_against_reference(x, fmt_name, rule, 16, scale_format)
    if scale_format == "fp32":
        np.testing.assert_array_equal(record.scale_codes, tensor.block_scales)


@pytest.mark.parametrize("tensor_scale", [None, 1.0, 2.0**-10, 0.3])
def test_nvfp4_matches_the_exact_reference(tensor_scale):
    x = adversarial("e2m1", block=16)
    if tensor_scale is None:
        x = x[np.isfinite(x).all(axis=1)]  # one global amax for the whole tensor
        x = x[np.abs(x).max(axis=1) < 1e30]
    check_against_reference(x, "e2m1", "nvfp4", 16, "e4m3", tensor_scale=tensor_scale)


def test_known_corners_by_hand():
    # amax exactly 2**8 in E4M3: floor 2**0, rceil 2**ceil(log2(256/448)) = 2**0, ceil 2**0
    x = np.zeros((1, 32), np.float32)
    x[0, 0] = 256.0
    for rule in ("floor", "ceil", "rceil", "even"):
        assert block_cast(x, "e4m3", block=32, scale_format="e8m0", rule=rule)[1].scale_codes[0] \
            == 127
    # one ulp below 2**9: floor 2**0 (the element rounds to 448: clipped), ceil 2**1, even 2**1
    x[0, 0] = np.nextafter(F32(512), F32(0))
    codes = {r: int(block_cast(x, "e4m3", block=32, scale_format="e8m0", rule=r)[1]
                    .scale_codes[0, 0]) for r in ("floor", "ceil", "even", "rceil")}
    assert codes == {"floor": 127, "ceil": 128, "even": 128, "rceil": 128}
    values, rec = block_quantize(x, "e4m3", block=32, scale_format="e8m0", rule="floor")
    assert values[0, 0] == 448 and rec.clipped == 1 / 32
    # pytorch/ao #2035: amax 150 into E4M3, RCEIL code 126, OCP-style CEIL code 127
    x[0, 0] = 150.0
    assert block_cast(x, "e4m3", block=32, scale_format="e8m0", rule="rceil")[1].scale_codes[0] \
        == 126
    assert block_cast(x, "e4m3", block=32, scale_format="e8m0", rule="ceil")[1].scale_codes[0] \
        == 127


def test_torchao_variants_by_hand():
    """The torchao variants' departures, from the arithmetic torchao runs (tested bit for bit
    against torchao itself in test_torch_torchao.py)."""
    x = np.zeros((1, 32), np.float32)
    x[0, :2] = [2.0**-130, 2.0**-131]  # E4M3 code 0: torchao divides by 2**-126, reads half
    for rule in ("floor", "ceil", "even"):
        exact = block_cast(x, "e4m3", block=32, scale_format="e8m0", rule=rule)[0]
        ao = block_cast(x, "e4m3", block=32, scale_format="e8m0", rule=rule + "_torchao")[0]
        assert exact.block_scales[0, 0] == ao.block_scales[0, 0] == 2.0**-127
        np.testing.assert_array_equal(exact.dequantize(), x)
        np.testing.assert_array_equal(ao.dequantize(), x / 2)
    x[0, :2] = [nudge(448 * 2.0**10, 1), 1.0]  # rceil: float32 log2 lands on 10
    ao = block_cast(x, "e4m3", block=32, scale_format="e8m0", rule="rceil_torchao")[1]
    te = block_cast(x, "e4m3", block=32, scale_format="e8m0", rule="rceil")[1]
    assert ao.scale_codes[0, 0] == 137 and te.scale_codes[0, 0] == 138


def test_scale_limits_of_e8m0():
    x = np.zeros((3, 8), np.float32)
    x[0, 0] = FLT_MAX  # floor(log2) = 127: E4M3 code 127 - 8 + 127 = 246
    x[1, 0] = 2.0**-149  # the smallest float32: code 0 (2**-127), the element flushes
    x[2, 0] = 448 * 2.0**-127  # rceil: exactly 2**-127, code 0
    t, rec = block_cast(x, "e4m3", block=8, scale_format="e8m0", rule="floor")
    assert rec.scale_codes[:, 0].tolist() == [246, 0, 0]
    assert t.elements[1, 0] == 0 and rec.flushed == 1 / 24
    t, rec = block_cast(x, "e4m3", block=8, scale_format="e8m0", rule="rceil")
    assert rec.scale_codes[:, 0].tolist() == [254 - 8 + 1, 0, 0]


# --- layouts ------------------------------------------------------------------------------------
def test_tiles_rows_columns_and_tensor_use_the_right_values():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((37, 45)) * np.exp2(rng.integers(-8, 8, (37, 1)))).astype(np.float32)
    cases = [((16, 16), lambda i, j: x[16 * i:16 * i + 16, 16 * j:16 * j + 16]),
             ("tensor", lambda i, j: x),
             ("row", lambda i, j: x[i:i + 1, :]),
             ("column", lambda i, j: x[:, j:j + 1])]
    for block, tile in cases:
        t, rec = block_cast(x, "e4m3", block=block, scale_format="e8m0", rule="floor")
        rows, cols = rec.block_scales.shape
        assert (rows, cols) == {"tensor": (1, 1), "row": (37, 1), "column": (1, 45)}.get(
            block, (3, 3))
        for i in range(rows):
            for j in range(cols):
                vals = tile(i, j)
                want_x, _ = ref_block([float(v) for v in vals.ravel()], "e4m3", "floor")
                assert rec.block_scales[i, j] == want_x, (block, i, j)
        want = np.array([[rnd(Q(float(v)) / Q(float(s)), "e4m3") for v, s in zip(r, sr)]
                         for r, sr in zip(x, t.decode_scales())])
        np.testing.assert_array_equal(t.elements, want)


def test_partial_last_block_and_axis():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((37, 5)).astype(np.float32)
    x[36, 2] = 40.0  # the partial last block (rows 32..36) has amax 40
    t, rec = block_cast(x, "e4m3", block=32, scale_format="e8m0", rule="rceil", axis=0)
    assert rec.block_scales.shape == (2, 5) and t.axis == 0
    assert rec.block_scales[1, 2] == 2.0 ** ceil_log2(Q(40) / 448)
    for j in range(5):
        for b, rows in enumerate((slice(0, 32), slice(32, 37))):
            want_x, want = ref_block([float(v) for v in x[rows, j]], "e4m3", "rceil")
            assert rec.block_scales[b, j] == want_x
            np.testing.assert_array_equal(t.elements[rows, j], want)


def test_values_are_elements_times_scales_exactly():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((4, 48)) * 100).astype(np.float32)
    values, rec = block_quantize(x, "e2m1", block=16, scale_format="e4m3", rule="nvfp4")
    t, _ = block_cast(x, "e2m1", block=16, scale_format="e4m3", rule="nvfp4")
    for i in range(4):
        for j in range(48):
            exact = (Q(float(t.elements[i, j])) * Q(float(rec.block_scales[i, j // 16]))
                     * Q(rec.tensor_scale))
            assert values[i, j] == round_exact(exact, "fp32")
    assert isinstance(rec, BlockRecord) and isinstance(rec, CastRecord)
    assert rec.amax == float(np.abs(x).max())
    flushed = np.count_nonzero((values == 0) & (x != 0)) / x.size
    assert rec.flushed == flushed and rec.scale_format == "e4m3" and rec.rule == "nvfp4"


@pytest.mark.parametrize("shape, block", [((0, 32), 32), ((4, 0), 32), ((0,), "row"),
                                          ((3, 0), (2, 2)), ((0, 5), "column")])
def test_empty_arrays_give_empty_tensors(shape, block):
    t, rec = block_cast(np.zeros(shape, np.float32), "e4m3", block=block, scale_format="e8m0",
                        rule="floor")
    assert t.dequantize().shape == shape and rec.element_codes.shape == shape
    assert rec.clipped == rec.flushed == rec.amax == 0


def test_element_codes_are_the_formats_codes():
    x = np.float32([[0.5, -1.5, 3.0, -6.0, 0.0, 2.0, 1.0, 4.0]])
    _, rec = block_cast(x, "e2m1", block=8, scale_format="e8m0", rule="floor")
    # E2M1 (OCP MX v1.0 table): 0.5 = 0b0001, 1.5 = 0b0011, 3 = 0b0101, 6 = 0b0111, sign 0b1000
    assert rec.element_codes.tolist() == [[0x1, 0xB, 0x5, 0xF, 0x0, 0x4, 0x2, 0x6]]
    assert rec.scale_codes.tolist() == [[127]]


# --- stochastic rounding ------------------------------------------------------------------------
def test_stochastic_rounding_is_unbiased_and_lands_on_neighbours():
    base = np.float32([6.0, 0.3, -1.7, 2.2, 4.9, -0.05, 0.8, 1.25] * 2)  # amax 6: X = 1 (e2m1)
    x = np.tile(base, (20000, 1))
    values, _ = block_quantize(x, "e2m1", "stochastic", block=16, scale_format="e8m0",
                               rule="rceil", rng=np.random.default_rng(6))
    grid = np.float64([0, 0.5, 1, 1.5, 2, 3, 4, 6])
    for j, v in enumerate(base[:8]):
        a = abs(float(v))
        lo, hi = grid[grid <= a].max(), grid[grid >= a].min()
        got = np.abs(values[:, j].astype(np.float64))
        assert set(np.unique(got)) <= {lo, hi}
        p = 0 if hi == lo else (a - lo) / (hi - lo)
        sigma = np.sqrt(p * (1 - p) / len(got)) * (hi - lo)
        assert abs(got.mean() - a) <= 5 * sigma + 1e-12, (v, got.mean())
    again, _ = block_quantize(x[:10], "e2m1", "stochastic", block=16, scale_format="e8m0",
                              rule="rceil", rng=np.random.default_rng(6))
    np.testing.assert_array_equal(again, values[:10])  # same seed, same bits


# --- ScaledTensor -------------------------------------------------------------------------------
def test_scaled_tensor_tiles_transpose_and_k_scales():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((20, 33)).astype(np.float32)
    t, rec = block_cast(x, "e2m1", block=(16, 16), scale_format="e4m3", rule="nvfp4")
    assert t.block_size == (16, 16) and rec.block_scales.shape == (2, 3)
    np.testing.assert_array_equal(t.T.dequantize(), t.dequantize().T)
    np.testing.assert_array_equal(t.T.decode_scales(), t.decode_scales().T)
    s = np.float64(rec.tensor_scale)
    scales, kb = t.k_scales(1)  # a GEMM x @ w summing over axis 1: per row, per 16 of K
    assert kb == 16 and scales.shape == (20, 3)
    assert scales[17, 2] == np.float64(rec.block_scales[1, 2]) * s
    scales, kb = t.k_scales(0)
    assert kb == 16 and scales.shape == (2, 33) and scales[1, 32] == rec.block_scales[1, 2] * s
    one_d, _ = block_cast(x, "e4m3", block=8, scale_format="e8m0", rule="floor")
    scales, kb = one_d.k_scales(-1)
    assert kb == 8 and scales.shape == (20, 5)
    with pytest.raises(ValueError, match="blocks run along axis 1, not along k_axis 0"):
        one_d.k_scales(0)
    col = one_d.T
    assert col.axis == 0 and col.k_scales(0)[0].shape == (5, 20)


def test_scaled_tensor_rejects_inconsistent_fields():
    e = np.zeros((4, 8), np.float32)
    with pytest.raises(ValueError, match="block_scales has shape"):
        ScaledTensor(e, as_format("e4m3"), block_scales=np.ones((4, 3)), block_size=4, axis=1)
    with pytest.raises(ValueError, match="axis must be None"):
        ScaledTensor(e, as_format("e4m3"), block_scales=np.ones((1, 1)), block_size=(4, 8),
                     axis=1)
    with pytest.raises(ValueError, match="tile block_size must be two ints"):
        ScaledTensor(e, as_format("e4m3"), block_scales=np.ones((1, 1)), block_size=(4, 0))
    with pytest.raises(ValueError, match="tensor_scale is the second level"):
        ScaledTensor(e, as_format("e4m3"), 1.0, tensor_scale=2.0)
    with pytest.raises(ValueError, match="unknown scale_format 'e5m2'"):
        ScaledTensor(e, as_format("e4m3"), block_scales=np.ones((4, 2)), block_size=4, axis=1,
                     scale_format="e5m2")


def test_mx_cast_is_block_cast_with_the_matching_rule():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((6, 70)) * 30).astype(np.float32)
    for old, new in (("te", "rceil"), ("ocp", "floor")):
        a, ra = mx_cast(x, "e4m3", rule=old, block_size=32, axis=-1)
        b, rb = block_cast(x, "e4m3", block=32, scale_format="e8m0", rule=new)
        np.testing.assert_array_equal(a.elements, b.elements)
        np.testing.assert_array_equal(ra.block_scales, rb.block_scales)


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(rule="round"), ValueError, "unknown rule 'round'"),
    (dict(scale_format="e5m2"), ValueError, "unknown scale_format 'e5m2'"),
    (dict(rule="fp32"), ValueError, "rule 'fp32' gives fp32 scales, not 'e8m0'"),
    (dict(rule="nvfp4"), ValueError, "rule 'nvfp4' gives e4m3 scales"),
    (dict(rule="nvfp4", scale_format="e4m3"), ValueError, "NVFP4 rules take e2m1 elements"),
    (dict(tensor_scale=2.0), ValueError, "tensor_scale is NVFP4's second level"),
    (dict(block=0), ValueError, "block must be >= 1"),
    (dict(block=(4, 0)), ValueError, "a tile block must be two ints >= 1"),
    (dict(block=(2, 2, 2)), ValueError, "a tile block must be two ints"),
    (dict(block="diagonal"), ValueError, "unknown block 'diagonal'"),
    (dict(block=True), ValueError, "unknown block True"),
    (dict(block=(4, 4), axis=0), ValueError, "axis applies to int blocks only"),
    (dict(axis=2), ValueError, "axis 2 is out of range"),
    (dict(rng=np.random.default_rng(0)), ValueError, "rng is only used by mode='stochastic'"),
    (dict(mode="stochastic"), TypeError, "needs rng"),
    (dict(mode="sideways"), ValueError, "sideways"),
    (dict(rule="nvfp4", scale_format="e4m3", tensor_scale="1"), ValueError, "NVFP4 rules take"),
])
def test_bad_arguments_are_refused_clearly(kwargs, error, match):
    args = dict(block=4, scale_format="e8m0", rule="floor")
    args.update(kwargs)
    with pytest.raises(error, match=match):
        block_cast(np.ones((4, 8), np.float32), "e4m3", **args)


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="e2m1 elements, not e4m3|NVFP4 rules take e2m1"):
        block_cast(np.ones(16), "e4m3", block=16, scale_format="e4m3", rule="nvfp4")
    with pytest.raises(ValueError, match="fp16 is not a block-scaled element format"):
        block_cast(np.ones(16), "fp16", block=16, scale_format="e8m0", rule="floor")
    for bad in (0.0, -1.0, np.inf, "1", True, [1.0]):
        with pytest.raises(ValueError, match="tensor_scale must be a positive finite number"):
            block_cast(np.ones(16), "e2m1", block=16, scale_format="e4m3", rule="nvfp4",
                       tensor_scale=bad)
    with pytest.raises(ValueError, match="at least one dimension"):
        block_cast(np.float32(1), "e4m3", block=16, scale_format="e8m0", rule="floor")
    with pytest.raises(ValueError, match="block='tensor' takes a 1-D or 2-D array"):
        block_cast(np.ones((2, 2, 2)), "e4m3", block="tensor", scale_format="e8m0", rule="floor")
    with pytest.raises(ValueError, match="block='column' needs"):
        block_cast(np.ones(4), "e4m3", block="column", scale_format="e8m0", rule="floor")
    with pytest.raises(ValueError, match="tile needs an array with at least 2"):
        block_cast(np.ones(4), "e4m3", block=(2, 2), scale_format="e8m0", rule="floor")
    with pytest.raises(TypeError):
        block_cast(np.ones(4, complex), "e4m3", block=4, scale_format="e8m0", rule="floor")


# --- exhaustive ---------------------------------------------------------------------------------
@pytest.mark.exhaustive
@pytest.mark.parametrize("fmt_name", ["e4m3", "e5m2", "e3m2", "e2m3", "e2m1"])
def test_te_rceil_is_the_exact_ceiling_for_every_amax_of_a_binade(fmt_name):
    """TE computes amax * float32(1 / max) in float32 and rounds its exponent up; for every
    float32 amax in [1, 2) that equals the exact ceil(log2(amax / max)). A float32 product
    scales exactly by powers of two while it stays normal, so this covers every amax whose
    quotient is a normal float32. Reference: integers only. amax = m / 2**23, max = M / 2**t;
    2**c >= amax / max  <=>  M * 2**(23 + c) >= m * 2**t, and c is the least such integer."""
    fmt = as_format(fmt_name)
    amax = np.arange(0x3F800000, 0x40000000, dtype=np.uint32).view(np.float32)
    m = amax.view(np.uint32).astype(np.int64) & 0x7FFFFF | 0x800000
    big_m, t = Q(fmt.max).numerator, Q(fmt.max).denominator.bit_length() - 1
    want = np.full(m.shape, 1, np.int64)
    for c in range(0, -24, -1):  # descending: the last c that still holds is the least
        holds = (big_m << 23) >= (m << t) * (1 << -c)
        want = np.where(holds, c, want)
    _, record = block_cast(amax.reshape(-1, 1), fmt_name, block=1, scale_format="e8m0",
                           rule="rceil_te")
    np.testing.assert_array_equal(record.scale_codes[:, 0].astype(np.int64), want + 127)
