"""CUDA source for raw-bit ``mma.sync`` probe kernels, and the fragment layout they rely on.

Each kernel runs one warp per tile and computes ``D = A @ B + C`` for a 16 x K by K x 8 tile
with a chain of ``mma.sync`` instructions (K / k_instr of them), the accumulator staying in
registers between instructions, so both a single instruction (K = k_instr) and chained
accumulation can be probed. Inputs travel as raw bits (uint16 / uint8 / uint32), so no CUDA
half/bfloat16/fp8 headers are needed (header pitfalls: CuPy issues #8146, #8466, #9962).

Fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k8 / m16n8k16 / m16n8k32"): with
``g = lane >> 2`` and ``t = lane & 3``, and ``w`` elements per 32-bit register (1 for tf32, 2
for f16/bf16, 4 for e4m3/e5m2), so that the instruction's K is ``8 w``:

* A (16 x K, row major), register r in 0..3, element j in 0..w-1:
  row ``g + 8 (r & 1)``, column ``w t + j + 4 w (r >> 1)``;
* B (K x 8), register r in 0..1, element j: row (k) ``w t + j + 4 w r``, column ``g``;
* C and D (16 x 8, f32), element i in 0..3: row ``g + 8 (i >> 1)``, column ``2 t + (i & 1)``.
  With an f16 accumulator, elements 2i and 2i+1 share one register (low half first).

:func:`fragment_layout` returns the same maps as arrays; the tests check that each is a
bijection onto its matrix, and the GPU check multiplies exactly representable integer
matrices first, so a layout error shows up as a failed self-check, not as a wrong verdict.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MmaInstruction:
    """One ``mma.sync`` variant the probe can run."""

    name: str  # short name used in reports, e.g. "f16.f32"
    input_format: str  # lowprec format of A and B
    accumulator: str  # "fp32" or "fp16": the C/D register type
    per_register: int  # elements of A/B per 32-bit register (w): K of the instruction is 8 w
    ptx_types: str  # the type suffix of the PTX instruction
    min_compute_capability: int  # e.g. 80 for sm_80

    @property
    def k(self) -> int:
        return 8 * self.per_register

    @property
    def kernel_name(self) -> str:
        return "mma_" + self.name.replace(".", "_")


INSTRUCTIONS = {
    i.name: i
    for i in (
        MmaInstruction("f16.f32", "fp16", "fp32", 2, "m16n8k16.row.col.f32.f16.f16.f32", 80),
        MmaInstruction("f16.f16", "fp16", "fp16", 2, "m16n8k16.row.col.f16.f16.f16.f16", 80),
        MmaInstruction("bf16.f32", "bf16", "fp32", 2, "m16n8k16.row.col.f32.bf16.bf16.f32", 80),
        MmaInstruction("tf32.f32", "tf32", "fp32", 1, "m16n8k8.row.col.f32.tf32.tf32.f32", 80),
        MmaInstruction("e4m3.f32", "e4m3", "fp32", 4, "m16n8k32.row.col.f32.e4m3.e4m3.f32", 89),
        MmaInstruction("e5m2.f32", "e5m2", "fp32", 4, "m16n8k32.row.col.f32.e5m2.e5m2.f32", 89),
    )
}


def fragment_layout(per_register: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A map, B map, C map) as arrays of (row, col) per (lane, register, element)."""
    w = per_register
    lane = np.arange(32)
    g, t = lane >> 2, lane & 3
    a = np.zeros((32, 4, w, 2), int)
    for r in range(4):
        for j in range(w):
            a[:, r, j] = np.stack([g + 8 * (r & 1), w * t + j + 4 * w * (r >> 1)], axis=1)
    b = np.zeros((32, 2, w, 2), int)
    for r in range(2):
        for j in range(w):
            b[:, r, j] = np.stack([w * t + j + 4 * w * r, g], axis=1)
    c = np.zeros((32, 4, 2), int)
    for i in range(4):
        c[:, i] = np.stack([g + 8 * (i >> 1), 2 * t + (i & 1)], axis=1)
    return a, b, c


_STORAGE = {1: "unsigned int", 2: "unsigned short", 4: "unsigned char"}

_TEMPLATE = r"""
extern "C" __global__ void @KERNEL@(const @ELEM@* __restrict__ A, const @ELEM@* __restrict__ B,
                                  const @ACC_IO@* __restrict__ C, @ACC_IO@* __restrict__ D, int K)
{
    constexpr int W = @W@, BITS = @BITS@;  // elements per 32-bit register, bits per element
    // one warp per 16 x 8 tile; A is (tiles, 16, K), B (tiles, K, 8), C and D (tiles, 16, 8)
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    const size_t tile = blockIdx.x;
    A += tile * 16 * K;  B += tile * K * 8;  C += tile * 128;  D += tile * 128;
    @ACC_DECL@
    for (int k0 = 0; k0 < K; k0 += W * 8) {
        unsigned a[4], b[2];
        for (int r = 0; r < 4; ++r) {
            const int row = g + 8 * (r & 1), col = k0 + W * t + 4 * W * (r >> 1);
            unsigned packed = 0;
            for (int j = 0; j < W; ++j)
                packed |= (unsigned)A[row * K + col + j] << (BITS * j);
            a[r] = packed;
        }
        for (int r = 0; r < 2; ++r) {
            const int k = k0 + W * t + 4 * W * r;
            unsigned packed = 0;
            for (int j = 0; j < W; ++j)
                packed |= (unsigned)B[(k + j) * 8 + g] << (BITS * j);
            b[r] = packed;
        }
        @MMA@
    }
    @ACC_STORE@
}
"""

_ACC32_DECL = """float d[4];
    for (int i = 0; i < 4; ++i) d[i] = C[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];"""
_ACC32_MMA = """asm volatile("mma.sync.aligned.TYPES {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));"""  # noqa: E501 (one PTX operand list per line)
_ACC32_STORE = """for (int i = 0; i < 4; ++i) D[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = d[i];"""
# f16 accumulator: two registers, each holding elements (2i, 2i+1) of the C/D fragment.
_ACC16_DECL = """unsigned d[2];
    for (int i = 0; i < 2; ++i) {
        const int row = g + 8 * i;
        d[i] = (unsigned)C[row * 8 + 2 * t] | ((unsigned)C[row * 8 + 2 * t + 1] << 16);
    }"""
_ACC16_MMA = """asm volatile("mma.sync.aligned.TYPES {%0,%1}, {%2,%3,%4,%5}, {%6,%7}, {%0,%1};\\n"
            : "+r"(d[0]), "+r"(d[1])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));"""
_ACC16_STORE = """for (int i = 0; i < 2; ++i) {
        const int row = g + 8 * i;
        D[row * 8 + 2 * t] = (unsigned short)(d[i] & 0xFFFF);
        D[row * 8 + 2 * t + 1] = (unsigned short)(d[i] >> 16);
    }"""


def kernel_source(instr: MmaInstruction) -> str:
    """CUDA C source of the probe kernel for one instruction (compiled by CuPy's RawModule)."""
    w = instr.per_register
    fp32_acc = instr.accumulator == "fp32"
    parts = {
        "KERNEL": instr.kernel_name,
        "ELEM": _STORAGE[w],
        "ACC_IO": "float" if fp32_acc else "unsigned short",
        "W": str(w),
        "BITS": str(32 // w),
        "ACC_DECL": _ACC32_DECL if fp32_acc else _ACC16_DECL,
        "MMA": (_ACC32_MMA if fp32_acc else _ACC16_MMA).replace("TYPES", instr.ptx_types),
        "ACC_STORE": _ACC32_STORE if fp32_acc else _ACC16_STORE,
    }
    src = _TEMPLATE
    for key, value in parts.items():
        src = src.replace(f"@{key}@", value)
    return src


# --- cvt.rs: stochastic rounding with a random-bits operand (sm_100a / sm_103a only) -----------
# One thread per instruction: ``lanes`` float32 operands (as raw bits, so nothing is flushed on
# the way) and one 32-bit rbits word in, the packed d out. The PTX forms are those of
# lowprec.cvt_rs (PTX ISA, "Data Movement and Conversion Instructions: cvt"). ptxas accepts
# ``.rs`` only for the arch-specific targets sm_100a and sm_103a (CUDA 13.0 refuses sm_90,
# sm_100, sm_100f, sm_110a, sm_120a), so the kernel is built with nvcc for those targets.
_CVT_RS_TEMPLATE = r"""
extern "C" __global__ void @KERNEL@(const unsigned* __restrict__ x,
                                    const unsigned* __restrict__ rbits, @OUT@* __restrict__ d,
                                    int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v[@LANES@];
    for (int j = 0; j < @LANES@; ++j) v[j] = __uint_as_float(x[@LANES@ * i + j]);
    @OUT@ out;
    asm volatile("@PTX@ %0, @OPERANDS@, %@R@;\n" : "=@C@"(out) : @INPUTS@, "r"(rbits[i]));
    d[i] = out;
}
"""


def cvt_rs_kernel_name(dtype: str) -> str:
    """The kernel's name for a cvt.rs destination type, e.g. ``cvt_rs_e4m3x4``."""
    return f"cvt_rs_{dtype}"


def cvt_rs_kernel_source(dtype: str, satfinite: bool = True) -> str:
    """CUDA C source of the cvt.rs kernel for one destination type of lowprec.cvt_rs.CVT_RS."""
    from ..cvt_rs import CVT_RS

    instr = CVT_RS[dtype]
    lanes = instr.lanes
    ptx = instr.ptx if satfinite else instr.ptx.replace(".satfinite", "")
    narrow = instr.result_dtype.itemsize == 2  # e2m1x4 writes a .b16
    parts = {
        "KERNEL": cvt_rs_kernel_name(dtype),
        "OUT": "unsigned short" if narrow else "unsigned",
        "LANES": str(lanes),
        "PTX": ptx,
        # x2 forms list a, b; x4 forms take the vector {a, b, e, f}
        "OPERANDS": (", ".join(f"%{j + 1}" for j in range(lanes)) if lanes == 2
                     else "{" + ", ".join(f"%{j + 1}" for j in range(lanes)) + "}"),
        "R": str(lanes + 1),
        "C": "h" if narrow else "r",
        "INPUTS": ", ".join(f'"f"(v[{j}])' for j in range(lanes)),
    }
    src = _CVT_RS_TEMPLATE
    for key, value in parts.items():
        src = src.replace(f"@{key}@", value)
    return src
