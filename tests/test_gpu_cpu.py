"""The GPU module's pure-Python parts, on the CPU: kernel layout, sources, status, report logic."""
import shutil
import subprocess

import numpy as np
import pytest

from lowprec.gpu import GpuUnavailable, gpu_status, require_cupy
from lowprec.gpu.kernels import INSTRUCTIONS, fragment_layout, kernel_source


@pytest.mark.parametrize("w", [1, 2, 4])
def test_fragment_layout_is_a_bijection(w):
    """Every element of A (16 x 8w), B (8w x 8) and C (16 x 8) is held by exactly one lane/register."""
    a, b, c = fragment_layout(w)
    k = 8 * w
    for layout, shape in ((a, (16, k)), (b, (k, 8)), (c, (16, 8))):
        flat = layout.reshape(-1, 2)
        assert len(flat) == shape[0] * shape[1]
        assert (flat.min(axis=0) >= 0).all() and (flat.max(axis=0) < shape).all()
        assert len({tuple(p) for p in flat}) == len(flat)


def test_fragment_layout_matches_ptx_isa_examples():
    # PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type": lane 5 has
    # groupID 1 and threadID_in_group 1; its a0 is A[1][2], a2 is A[9][2], a4 is A[1][10]
    a, b, c = fragment_layout(2)
    assert tuple(a[5, 0, 0]) == (1, 2) and tuple(a[5, 1, 0]) == (9, 2) and tuple(a[5, 2, 0]) == (1, 10)
    assert tuple(b[5, 0, 0]) == (2, 1) and tuple(b[5, 1, 1]) == (11, 1)
    assert tuple(c[5, 2]) == (9, 2)
    # m16n8k32 (e4m3): lane 6 (g=1, t=2) register 2 holds A[1][16+8 .. 16+11]
    a8, b8, _ = fragment_layout(4)
    assert [tuple(p) for p in a8[6, 2]] == [(1, 24), (1, 25), (1, 26), (1, 27)]
    assert [tuple(p) for p in b8[6, 1]] == [(24, 1), (25, 1), (26, 1), (27, 1)]


@pytest.mark.parametrize("name", sorted(INSTRUCTIONS))
def test_kernel_source_names_the_instruction(name):
    instr = INSTRUCTIONS[name]
    src = kernel_source(instr)
    assert f"mma.sync.aligned.{instr.ptx_types}" in src
    assert f'__global__ void {instr.kernel_name}(' in src
    assert "@" not in src  # every placeholder filled


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed: cannot compile CUDA here")
@pytest.mark.parametrize("name", sorted(INSTRUCTIONS))
def test_kernels_compile_for_hopper(name, tmp_path):
    """ptxas accepts each kernel for sm_90 (the H100): syntax, register constraints, types."""
    instr = INSTRUCTIONS[name]
    src = tmp_path / "k.cu"
    src.write_text(kernel_source(instr))
    done = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-o", str(tmp_path / "k.cubin"), str(src)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_status_without_gpu_explains_itself():
    usable, reason = gpu_status()
    if usable:
        pytest.skip("a GPU is present: this test is for machines without one")
    assert "CuPy" in reason or "CUDA" in reason
    with pytest.raises(GpuUnavailable):
        require_cupy()
