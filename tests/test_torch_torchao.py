"""lowprec's block quantizer against torchao 0.18's CPU (emulated) paths, bit for bit.

* MX ``to_mx`` for every element format (e4m3, e5m2, e3m2, e2m3, e2m1) x every
  ``ScaleCalculationMode``: element codes and E8M0 scale codes equal lowprec's ``*_torchao``
  rules everywhere (special values included), and the plain rules on ordinary blocks.
* NVFP4 ``nvfp4_quantize`` with and without a per-tensor scale, against ``nvfp4_torchao``.
* float8 rowwise with power-of-two scales (``amax_to_scale`` + saturated cast), against
  ``pow2_floor_torchao``.

Each place where torchao departs from the rule it names is a test below that shows the
difference (and which lowprec rule gives which bits).
"""
import numpy as np
import pytest

from lowprec.bits import decode
from lowprec.formats import as_format
from lowprec.scaling import block_cast

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")
pytestmark = pytest.mark.torch

from torchao.float8.float8_utils import amax_to_scale  # noqa: E402
from torchao.prototype.mx_formats.config import ScaleCalculationMode  # noqa: E402
from torchao.prototype.mx_formats.constants import DTYPE_FP6_E2M3, DTYPE_FP6_E3M2  # noqa: E402
from torchao.prototype.mx_formats.kernels import unpack_uint4  # noqa: E402
from torchao.prototype.mx_formats.mx_tensor import to_mx  # noqa: E402
from torchao.prototype.mx_formats.nvfp4_tensor import (  # noqa: E402
    nvfp4_quantize, per_tensor_amax_to_scale)

ELEMENTS = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2, "e3m2": DTYPE_FP6_E3M2,
            "e2m3": DTYPE_FP6_E2M3, "e2m1": torch.float4_e2m1fn_x2}
MODES = {"floor": ScaleCalculationMode.FLOOR, "ceil": ScaleCalculationMode.CEIL,
         "even": ScaleCalculationMode.EVEN, "rceil": ScaleCalculationMode.RCEIL}
F32 = np.float32


def _next(x, direction):
    with np.errstate(over="ignore"):  # the float32 max steps up to inf
        return np.nextafter(F32(x), F32(direction * np.inf))


def adversarial_blocks(fmt_name, block=32, seed=0):
    """Rows of ``block`` float32 values, each row one block: the corners of every rule."""
    fmt = as_format(fmt_name)
    rng = np.random.default_rng(seed)
    amaxes = []
    for k in range(-140, 128, 7):
        p = F32(2.0**k) if k >= -149 else F32(0)
        amaxes += [p, _next(p, -1), _next(p, 1)]
    for k in range(-135, 120, 9):
        m = F32(min(fmt.max * 2.0**k, float(np.finfo(np.float32).max)))
        amaxes += [m, _next(m, -1), _next(m, 1)]
    for k in range(-130, 125, 5):  # significands near 2 - 2**-(m+1), the "even" threshold
        t = F32((2 - 2.0 ** -(fmt.mantissa_bits + 1)) * 2.0**k)
        amaxes += [t, _next(t, -1)]
    amaxes += [F32(150.0), F32(1e-40), F32(3e38), np.finfo(np.float32).max, F32(1e-45)]
    rows = []
    for a in amaxes:
        row = (rng.uniform(-1, 1, block) * a).astype(np.float32)
        row[rng.integers(block)] = a * (1 if rng.random() < 0.5 else -1)
        rows.append(row)
    rows.append(np.zeros(block, np.float32))
    for k in rng.integers(-130, 120, 60):  # Gaussian blocks over the whole range
        rows.append((rng.standard_normal(block) * 2.0**k).astype(np.float32))
    special = rng.standard_normal((4, block)).astype(np.float32)
    special[0, 3] = np.inf
    special[1, 5] = -np.inf
    special[2, 7] = np.nan
    special[3, :] = np.nan
    rows.extend(special)
    return np.array(rows, np.float32)


def torchao_mx(x, fmt_name, mode):
    """(scale codes, element codes, element is NaN) from torchao's to_mx."""
    scale, data = to_mx(torch.from_numpy(x), ELEMENTS[fmt_name], 32, MODES[mode])
    scale_codes = scale.view(torch.uint8).numpy()
    if fmt_name in ("e4m3", "e5m2"):
        nan = data.float().isnan().numpy()
        codes = data.view(torch.uint8).numpy()
    elif fmt_name == "e2m1":
        codes, nan = unpack_uint4(data).numpy().reshape(x.shape), np.zeros(x.shape, bool)
    else:
        codes, nan = data.numpy(), np.zeros(x.shape, bool)
    return scale_codes.reshape(x.shape[0], -1), codes, nan


def lowprec_mx(x, fmt_name, rule):
    tensor, record = block_cast(x, fmt_name, block=32, scale_format="e8m0", rule=rule)
    return record.scale_codes, record.element_codes, np.isnan(tensor.elements), tensor


def assert_codes_equal(theirs, ours, rows=slice(None)):
    t_scale, t_codes, t_nan = (a[rows] for a in theirs[:3])
    o_scale, o_codes, o_nan = (a[rows] for a in ours[:3])
    np.testing.assert_array_equal(o_scale, t_scale)
    if t_nan.any():  # a format with NaN: NaN where torchao has NaN (sign bits may differ)
        np.testing.assert_array_equal(o_nan, t_nan)
    keep = ~o_nan  # formats without NaN: torchao writes some code for a NaN, lowprec NaN
    np.testing.assert_array_equal(o_codes[keep], t_codes[keep].astype(o_codes.dtype))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt_name", ELEMENTS)
def test_to_mx_bit_equal_to_the_torchao_rules(fmt_name, mode):
    x = adversarial_blocks(fmt_name)
    assert_codes_equal(torchao_mx(x, fmt_name, mode), lowprec_mx(x, fmt_name, mode + "_torchao"))


def _ordinary_rows(x, fmt_name):
    """Blocks with a finite amax well inside the E8M0 range (no code 0, no specials)."""
    amax = np.abs(x).max(axis=1)
    return np.isfinite(amax) & (amax >= 2.0 ** (-120 + as_format(fmt_name).emax))


@pytest.mark.parametrize("mode", ["floor", "ceil", "even"])
@pytest.mark.parametrize("fmt_name", ELEMENTS)
def test_to_mx_equals_the_exact_rules_on_ordinary_blocks(fmt_name, mode):
    x = adversarial_blocks(fmt_name)
    rows = _ordinary_rows(x, fmt_name)
    assert rows.sum() > 100
    assert_codes_equal(torchao_mx(x, fmt_name, mode), lowprec_mx(x, fmt_name, mode), rows)


@pytest.mark.parametrize("fmt_name", ELEMENTS)
def test_to_mx_rceil_equals_the_exact_ceiling_except_one_ulp_above_a_power_of_two(fmt_name):
    """torchao's CPU RCEIL takes ceil(log2(amax / max)) in float32: for amax = max * 2**k + 1
    ulp the log rounds to the integer k and the code is one below the exact ceiling (TE's
    float_to_e8m0 and the GPU cvt.rp instruction give k + 1: lowprec "rceil")."""
    fmt = as_format(fmt_name)
    x = adversarial_blocks(fmt_name)
    rows = _ordinary_rows(x, fmt_name)
    theirs, ours = torchao_mx(x, fmt_name, "rceil"), lowprec_mx(x, fmt_name, "rceil")
    amax = np.abs(x).max(axis=1)
    with np.errstate(divide="ignore"):
        k = np.floor(np.log2(amax.astype(np.float64) / fmt.max))
    above = rows & (amax == _next(F32(fmt.max * 2.0**k), 1)) & (np.abs(k) >= 2)
    assert above.sum() >= 20  # (|k| < 2: log2 of 1 + 1 ulp is still above the integer)
    # exact ceiling: amax / max is just above 2**k, so the scale is 2**(k + 1)
    np.testing.assert_array_equal(ours[0][above, 0], k[above] + 1 + 127)
    np.testing.assert_array_equal(theirs[0][above, 0], k[above] + 127)
    same = rows & ~above
    assert_codes_equal(theirs, ours, same)


def test_pytorch_ao_2035_amax_150_rceil_126_ceil_127():
    """pytorch/ao #2035: amax 150 into E4M3: RCEIL ceil(log2(150 / 448)) = -2 + 1 -> code 126,
    the OCP-style CEIL ceil(log2 150) - floor(log2 448) = 0 -> code 127 (FLOOR: 7 - 8 -> 126)."""
    x = np.zeros((1, 32), np.float32)
    x[0, 0] = 150.0
    for mode, code in (("rceil", 126), ("ceil", 127), ("floor", 126), ("even", 126)):
        assert torchao_mx(x, "e4m3", mode)[0][0, 0] == code == lowprec_mx(x, "e4m3", mode)[0][0]


@pytest.mark.parametrize("mode", ["floor", "ceil", "even"])
def test_to_mx_code_zero_blocks_read_back_at_half(mode):
    """torchao stores code 0 (2**-127) but divides by 2**-126 (it clamps the float scale to the
    smallest normal): the elements, read with the stored code, are half the input. lowprec's
    exact rule divides by 2**-127 and reads back the input."""
    x = np.zeros((1, 32), np.float32)
    x[0, :4] = [2.0**-130, -(2.0**-131), 1.5 * 2.0**-132, 2.0**-133]  # amax 2**-130, E4M3
    theirs = torchao_mx(x, "e4m3", mode)
    assert theirs[0][0, 0] == 0
    their_values = decode(theirs[1], "e4m3") * 2.0**-127
    np.testing.assert_array_equal(their_values, x / 2)
    values = block_cast(x, "e4m3", block=32, scale_format="e8m0", rule=mode)[0].dequantize()
    np.testing.assert_array_equal(values, x)
    variant = block_cast(x, "e4m3", block=32, scale_format="e8m0", rule=mode + "_torchao")[0]
    np.testing.assert_array_equal(variant.dequantize(), x / 2)


def test_to_mx_rceil_code_zero_flushes_and_inf_saturates():
    x = np.zeros((3, 32), np.float32)
    x[0, 0] = 2.0**-140  # amax / 448 below 2**-127: code 0, multiplied by 1.0: flushed
    x[1, :2] = [np.inf, 3.0]  # code 254, multiplied by 2**-127: 3 -> 0, inf -> 448
    x[2, :2] = [np.nan, 3.0]  # torch.amax propagates NaN: code 255
    theirs = torchao_mx(x, "e4m3", "rceil")
    np.testing.assert_array_equal(theirs[0][:, 0], [0, 254, 255])
    assert theirs[1][0, 0] == 0 and theirs[1][1, 0] == 0x7E and theirs[1][1, 1] == 0
    assert_codes_equal(theirs, lowprec_mx(x, "e4m3", "rceil_torchao"))
    te = lowprec_mx(x, "e4m3", "rceil_te")  # TE: NaN-ignoring amax, the inf becomes NaN
    np.testing.assert_array_equal(te[0][:, 0], [0, 254, 120])  # 3 / 448 -> 2**-7
    assert te[2][1, 0] and te[1][1, 1] == 0


# --- NVFP4 -------------------------------------------------------------------------------------
def nvfp4_rows(seed=1):
    rng = np.random.default_rng(seed)
    rows = [(rng.standard_normal(64) * 2.0 ** rng.integers(-20, 20)).astype(np.float32)
            for _ in range(40)]
    rows += [np.zeros(64, np.float32), np.full(64, 1e-30, np.float32)]
    tie = np.zeros(64, np.float32)
    tie[:2] = [11.25, -4.6875]  # block scale 1.875: -4.6875 / 1.875 = -2.5 exactly
    rows.append(tie)
    return np.array(rows, np.float32)


def torchao_nvfp4(x, per_tensor_scale=None):
    s = None if per_tensor_scale is None else torch.tensor(per_tensor_scale, dtype=torch.float32)
    scales, data = nvfp4_quantize(torch.from_numpy(x), 16, s)
    return scales.view(torch.uint8).numpy(), unpack_uint4(data).numpy().reshape(x.shape)


@pytest.mark.parametrize("two_level", [False, True])
def test_nvfp4_quantize_bit_equal(two_level):
    x = nvfp4_rows()
    if two_level:
        s = float(per_tensor_amax_to_scale(torch.tensor(float(np.abs(x).max()))))
        tensor_scale = None  # lowprec computes amax / (448 * 6) itself
    else:
        s = tensor_scale = None
    scales, codes = torchao_nvfp4(x, s)
    t, rec = block_cast(x, "e2m1", block=16, scale_format="e4m3", rule="nvfp4_torchao",
                        tensor_scale=tensor_scale if two_level else 1.0)
    if two_level:
        assert rec.tensor_scale == s
    np.testing.assert_array_equal(rec.scale_codes, scales)
    np.testing.assert_array_equal(rec.element_codes, codes)


def test_nvfp4_reciprocal_product_departs_from_the_exact_quotient():
    """torchao (and TE's kernel) multiply by the float32 reciprocal of the block scale: for
    X = 1.875 and x = -4.6875 the exact quotient -2.5 is a tie that rounds to even, -2.0, but
    -4.6875 * float32(1 / 1.875) = -2.50000012 rounds to -3.0."""
    x = nvfp4_rows()[-1:]
    _, codes = torchao_nvfp4(x)
    assert decode(codes[0, 1], "e2m1") == -3.0
    assert F32(-4.6875) * (F32(1.0) / F32(1.875)) < -2.5  # the reciprocal product
    for rule in ("nvfp4", "nvfp4_torchao"):
        t, rec = block_cast(x, "e2m1", block=16, scale_format="e4m3", rule=rule, tensor_scale=1.0)
        assert t.block_scales[0, 0] == 1.875 and t.elements[0, 1] == -3.0


def test_nvfp4_differences_from_te():
    """torchao clamps block scales up to 2**-6 (TE keeps E4M3 subnormal scales), and a zero
    tensor gives a per-tensor scale of 0 and NaN (TE's S_enc falls back to 1: zeros)."""
    x = np.full((1, 16), 6 * 2.0**-8, np.float32)  # block amax / 6 = 2**-8, an E4M3 subnormal
    scales, _ = torchao_nvfp4(x)
    assert decode(scales[0, 0], "e4m3") == 2.0**-6
    te = block_cast(x, "e2m1", block=16, scale_format="e4m3", rule="nvfp4", tensor_scale=1.0)
    assert te[0].block_scales[0, 0] == 2.0**-8 and (te[0].dequantize() == x).all()
    ao = block_cast(x, "e2m1", block=16, scale_format="e4m3", rule="nvfp4_torchao",
                    tensor_scale=1.0)
    assert ao[0].block_scales[0, 0] == 2.0**-6
    zeros = np.zeros((1, 16), np.float32)
    scales, data = nvfp4_quantize(torch.from_numpy(zeros), 16,
                                  per_tensor_amax_to_scale(torch.tensor(0.0)))
    assert torch.isnan(scales.float()).all()
    ao = block_cast(zeros, "e2m1", block=16, scale_format="e4m3", rule="nvfp4_torchao")[0]
    assert np.isnan(ao.dequantize()).all()
    te = block_cast(zeros, "e2m1", block=16, scale_format="e4m3", rule="nvfp4")[0]
    assert (te.dequantize() == 0).all() and te.tensor_scale == 1.0


# --- float8 rowwise with power-of-two scales -----------------------------------------------------
def torchao_rowwise(x, dtype):
    xt = torch.from_numpy(x)
    amax = torch.amax(torch.abs(xt), dim=-1, keepdim=True)
    scale = amax_to_scale(amax, dtype, round_scales_to_power_of_2=True)
    max_pos = torch.finfo(dtype).max
    data = torch.clamp(xt * scale, -max_pos, max_pos).to(dtype)
    return scale.numpy()[:, 0], data


@pytest.mark.parametrize("fmt_name", ["e4m3", "e5m2"])
def test_float8_rowwise_pow2_bit_equal(fmt_name):
    x = adversarial_blocks(fmt_name, block=48)
    x = x[np.isfinite(np.abs(x).max(axis=1))]  # an inf row gives scale 0 and NaN: below
    scale, data = torchao_rowwise(x, ELEMENTS[fmt_name])
    t, rec = block_cast(x, fmt_name, block="row", scale_format="fp32", rule="pow2_floor_torchao")
    np.testing.assert_array_equal(rec.scale_codes[:, 0], 1 / scale.astype(np.float64))
    nan = data.float().isnan().numpy()
    np.testing.assert_array_equal(np.isnan(t.elements), nan)
    np.testing.assert_array_equal(rec.element_codes[~nan], data.view(torch.uint8).numpy()[~nan])


def test_float8_rowwise_pow2_takes_log2_in_float32():
    """448 / amax just below a power of two: torchao's float32 log2 rounds up to the integer and
    the scale lands a binade high (TE zeroes the mantissa: a binade lower). For E5M2 and
    amax = 1792.000244, 57344 / amax = 31.9999..., torchao 32, TE (lowprec "pow2_floor") 16."""
    x = np.zeros((1, 8), np.float32)
    x[0, 0] = _next(1792.0, 1)
    scale, _ = torchao_rowwise(x, torch.float8_e5m2)
    assert scale[0] == 32.0
    ao = block_cast(x, "e5m2", block="row", scale_format="fp32", rule="pow2_floor_torchao")[0]
    te = block_cast(x, "e5m2", block="row", scale_format="fp32", rule="pow2_floor")[0]
    assert ao.block_scales[0, 0] == 1 / 32 and te.block_scales[0, 0] == 1 / 16


def test_float8_rowwise_inf_row_is_nan_and_tiny_amax_clamped():
    x = np.ones((2, 4), np.float32)
    x[0, 0] = np.inf
    x[1] = 1e-20
    scale, data = torchao_rowwise(x, torch.float8_e4m3fn)
    assert scale[0] == 0 and data[0].float().isnan()[0]
    assert scale[1] == 2.0 ** np.floor(np.log2(448 / 1e-12))  # amax clamped to 1e-12
    t, rec = block_cast(x, "e4m3", block="row", scale_format="fp32", rule="pow2_floor_torchao")
    assert np.isnan(t.dequantize()[0]).all()
    assert rec.scale_codes[1, 0] == 1 / scale[1]
