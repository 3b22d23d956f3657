"""The tensor-core presets against MMA-Sim itself (Xie et al., arXiv:2511.10909; the bit-accurate
simulator microsoft/MMA-Sim, run unmodified from a checkout): whole instruction tiles of random
and adversarial operands, every output element compared bit for bit.

Needs torch and a checkout of microsoft/MMA-Sim (tested at commit c785138) named by the
environment variable LOWPREC_MMASIM; skipped otherwise:

    git clone https://github.com/microsoft/MMA-Sim /tmp/MMA-Sim
    LOWPREC_MMASIM=/tmp/MMA-Sim python -m pytest tests/test_torch_mmasim.py
"""
from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import pytest

import lowprec
from lowprec import E2M1, E4M3, E5M2, tensorcore as tc

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
_ROOT = os.environ.get("LOWPREC_MMASIM")
if not (_ROOT and os.path.isdir(os.path.join(_ROOT, "mmasim"))):
    pytest.skip("set LOWPREC_MMASIM to a checkout of microsoft/MMA-Sim", allow_module_level=True)
sys.path.insert(0, _ROOT)
nv_ptx = pytest.importorskip("mmasim.simulator.nv_ptx")

from test_tensorcore_blackwell import random_instruction, random_scales  # noqa: E402

_FP8 = {"e4m3": E4M3, "e5m2": E5M2}
_TORCH = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32,
          "tf32": torch.float32, "e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2,
          "e8m0": torch.float8_e8m0fnu}


def _pairs(prefix, suffix=""):
    return [(f"{prefix}.{x}.{y}{suffix}", (_FP8[x], _FP8[y])) for x in _FP8 for y in _FP8]


# (MMA-Sim class, architecture, qualifier, lowprec preset, operand formats or None)
CASES = (
    [(nv_ptx.tcgen05mma, "Blackwell", "m64n8k16.f32.f16.f16", tc.B200_FP16, None),
     (nv_ptx.tcgen05mma, "Blackwell", "m64n8k16.f16.f16.f16", tc.B200_FP16_OUT16, None),
     (nv_ptx.tcgen05mma, "Blackwell", "m64n8k16.f32.bf16.bf16", tc.B200_BF16, None),
     (nv_ptx.tcgen05mma, "Blackwell", "m64n8k8.f32.tf32.tf32", tc.B200_TF32, None),
     (nv_ptx.tcgen05mma, "Blackwell", "m64n8k32.f16.e4m3.e5m2", tc.B200_FP8_OUT16,
      (E4M3, E5M2)),
     (nv_ptx.mma, "Ada Lovelace", "m16n8k32.f16.e5m2.e4m3.f16", tc.ADA_FP8_OUT16,
      (E5M2, E4M3)),
     (nv_ptx.wgmma, "Hopper", "m64n8k32.f16.e5m2.e5m2", tc.H100_FP8_OUT16, (E5M2, E5M2)),
     (nv_ptx.wgmma, "Hopper", "m64n8k16.f16.f16.f16", tc.H100_FP16_OUT16, None),
     (nv_ptx.mma, "Ampere", "m16n8k16.f16.f16.f16.f16", tc.A100_FP16_OUT16, None),
     (nv_ptx.mma, "Volta", "m8n8k4.f16.f16.f16.f16", tc.V100_FP16_OUT16, None)]
    + [(nv_ptx.tcgen05mma, "Blackwell", q, tc.B200_FP8, p)
       for q, p in _pairs("m64n8k32.f32")]
    + [(nv_ptx.mma, "Ada Lovelace", q, tc.ADA_FP8, p)
       for q, p in _pairs("m16n8k32.f32", ".f32")]
    + [(nv_ptx.wgmma, "Hopper", q, tc.H100_FP8, p) for q, p in _pairs("m64n8k32.f32")]
    + [(nv_ptx.tcgen05mma_block_scale, "Blackwell", q, tc.B200_MXF8F6F4, p)
       for q, p in _pairs("m128n8k32.block32.f32", ".ue8m0")]
    + [(nv_ptx.tcgen05mma_block_scale, "Blackwell", "m128n8k64.block16.f32.e2m1.e2m1.ue4m3",
        tc.B200_MXF4NVF4, None),
       (nv_ptx.tcgen05mma_block_scale, "Blackwell", "m128n8k64.block32.f32.e2m1.e2m1.ue8m0",
        tc.B200_MXF4NVF4_E8M0, None),
       (nv_ptx.tcgen05mma_block_scale, "Blackwell", "m128n8k64.block16.f32.e2m1.e2m1.ue8m0",
        dataclasses.replace(tc.B200_MXF4NVF4_E8M0, scale_block=16), None)])


def _tensor(x, fmt):
    """A float64 array of fmt's values as the torch dtype MMA-Sim wants (bits, not a cast)."""
    if fmt.name in ("e4m3", "e5m2", "e8m0"):
        codes = lowprec.encode(x, fmt).astype(np.uint8)
        return torch.from_numpy(codes).view(_TORCH[fmt.name])
    return torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(_TORCH[fmt.name])


def _fp4_packed(x):
    """E2M1 values, two to a byte, the first in the low nibble (MMA-Sim's unpack_fp4_tensor)."""
    codes = lowprec.encode(x, E2M1).astype(np.uint8)
    return torch.from_numpy(codes[..., 0::2] | (codes[..., 1::2] << 4))


@pytest.mark.parametrize("cls,arch,qualifier,preset,pair", CASES,
                         ids=[f"{c[0].__name__}:{c[2]}" for c in CASES])
def test_preset_matches_mmasim_bit_for_bit(cls, arch, qualifier, preset, pair):
    sim = cls(arch, qualifier)
    model = preset.reading(*pair) if pair else preset
    m, n, k = sim.m, sim.n, sim.k
    rng = np.random.default_rng(sum(map(ord, qualifier)))
    a, bt, c = random_instruction(rng, model, m * n, k)  # rows: output elements
    a, bt = a[:m], bt[:n]  # an m x k and an n x k tile; c for the m x n outputs
    if model.truncate_inputs:  # TF32 operands are FP32 numbers, truncated by both models
        a, bt = (x.astype(np.float32).astype(np.float64) for x in (a, bt))
    c = c.reshape(m, n)
    if model.sub_block:  # MMA-Sim's nvf4 path cannot take an infinite c (math.trunc(inf))
        c[np.isinf(c)] = 0.0
    scales = {}
    if model.block_scaled_mma:
        sa, sbt = random_scales(rng, model, (m, k))[0], random_scales(rng, model, (n, k))[1]
        scales = {"scale_a": sa, "scale_b": sbt.T}
    got = tc.matmul(a, bt.T, model, c=c, **scales)

    fa, fb, acc = model.inputs, model.b_format, model.accumulator
    if model.sub_block:
        A, B = _fp4_packed(a), _fp4_packed(bt).T
    else:
        A, B = _tensor(a, fa), _tensor(bt, fb).T
    C = _tensor(c, acc if acc.name != "fp32_e8m13" else lowprec.FP32)
    if model.block_scaled_mma:
        s_fmt = model.scale_format
        SA, SB = _tensor(scales["scale_a"], s_fmt), _tensor(sbt, s_fmt).T
        D = sim(A, B, C, SA, SB)
    else:
        D = sim(A, B, C)
    want = D.to(torch.float64).numpy()
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    same &= (np.signbit(got) == np.signbit(want)) | np.isnan(want)
    bad = np.argwhere(~same)
    assert not bad.size, (f"{len(bad)} of {m * n} differ, first at {tuple(bad[0])}: "
                          f"lowprec {got[tuple(bad[0])]!r}, MMA-Sim {want[tuple(bad[0])]!r}")
