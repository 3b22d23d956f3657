"""The GPU module's pure-Python parts, on the CPU: kernel layout, sources, status, report logic."""
import shutil
import subprocess

import numpy as np
import pytest

from lowprec.gpu import GpuUnavailable, gpu_status, require_cupy
from lowprec.gpu.kernels import INSTRUCTIONS, fragment_layout, kernel_source


@pytest.mark.parametrize("w", [1, 2, 4])
def test_fragment_layout_is_a_bijection(w):
    """Every element of A (16 x 8w), B (8w x 8) and C (16 x 8) is held by exactly one
    lane/register."""
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
    assert tuple(a[5, 0, 0]) == (1, 2) and tuple(a[5, 1, 0]) == (9,
                                                                 2) and tuple(a[5, 2, 0]) == (1, 10)
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


@pytest.mark.skipif(shutil.which("nvcc") is None,
                    reason="nvcc not installed: cannot compile CUDA here")
@pytest.mark.parametrize("name", sorted(INSTRUCTIONS))
def test_kernels_compile_for_hopper(name, tmp_path):
    """ptxas accepts each kernel for sm_90 (the H100): syntax, register constraints, types."""
    instr = INSTRUCTIONS[name]
    src = tmp_path / "k.cu"
    src.write_text(kernel_source(instr))
    done = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-o",
                           str(tmp_path / "k.cubin"), str(src)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_status_without_gpu_explains_itself():
    usable, reason = gpu_status()
    if usable:
        pytest.skip("a GPU is present: this test is for machines without one")
    assert "CuPy" in reason or "CUDA" in reason
    with pytest.raises(GpuUnavailable):
        require_cupy()


def test_training_comparison_logic_with_numpy_stand_in():
    """The lock-step comparison, run with NumPy doing the device's part: every point agrees."""
    from lowprec import data
    from lowprec.gpu.mlp import NumpyOps, compare_training

    spirals = data.spirals(np.random.default_rng(0))
    report = compare_training("fp16_mixed", spirals, steps=3, ops=NumpyOps(), final_steps=20)
    assert len(report["steps"]) == 3
    assert report["summary"], "no cast point was compared"
    for key, entry in report["summary"].items():
        assert entry["bit_identical_share"] == 1.0 and entry["max_ulp"] == 0, key
    assert report["final"]["device"] == report["final"]["simulator"]


def test_bit_agreement_counts_ulps_across_zero():
    from lowprec import FP16
    from lowprec.gpu.probe import bit_agreement

    x = np.array([1.0, -0.0, 2.0**-24, 1.0])
    y = np.array([1.0, 0.0, -(2.0**-24), 1.0 + 2.0**-10])
    result = bit_agreement(x, y, FP16)
    # -0 vs +0: different bits, 0 ulps apart; 2^-24 vs -2^-24: two steps; 1 vs next: one
    assert result["bit_identical_share"] == 0.25
    assert result["max_ulp"] == 2


def test_probe_report_names_the_model_a_stand_in_device_runs():
    """With a simulated device running a known preset, the probe must pick that preset."""
    from lowprec.gpu.check import format_report, run_gpu_check
    from lowprec.gpu.probe import SimulatedBackend, presets_for

    truth = {name: presets_for(INSTRUCTIONS[name])[preset] for name, preset in
             [("f16.f32", "A100_FP16"), ("f16.f16", "H100_FP16"), ("bf16.f32", "H100_BF16"),
              ("tf32.f32", "A100_TF32"), ("e4m3.f32", "H100_FP8")]}

    class Device(SimulatedBackend):
        pass

    report = run_gpu_check(backend=Device(truth), random_tiles=8)
    for name, model in truth.items():
        for chain in ("chained_1", "chained_4"):
            result = report["instructions"][name][chain]
            assert result["selfcheck_ok"]
            assert result["best_match"] == model.name, (name, chain, result["best_match"])
            assert result["presets"][model.name]["bit_identical_share"] == 1.0
            assert result["presets"][model.name]["probe_vectors_match"]
    assert report["instructions"]["e5m2.f32"] == {"skipped": "not supported by this device"}
    text = format_report(report)
    assert "A100_FP16 100.0%" in text and "self-check ok" in text


def test_published_probe_results_in_the_models():
    """1*1 - (1 - 2^-24): 2^-23 on V100, 2^-24 on A100 and H100, 2^-13 on H100 FP8
    (Fasi et al. 2021, sec. 4; MMA-Sim, arXiv:2511.10909, mmasim/simulator/nv_ptx.py)."""
    from lowprec.gpu.probe import SimulatedBackend, presets_for, probe_instruction

    expected = {("f16.f32", "V100_FP16"): 2.0**-23, ("f16.f32", "A100_FP16"): 2.0**-24,
                ("f16.f32", "H100_FP16"): 2.0**-24, ("e4m3.f32", "H100_FP8"): 2.0**-13}
    for (name, preset), value in expected.items():
        instr = INSTRUCTIONS[name]
        result = probe_instruction(SimulatedBackend({name: presets_for(instr)[preset]}), instr,
                                   random_tiles=1)
        outputs = result["device_probe_outputs"]
        assert float.fromhex(outputs["d1_extra_bit"]) == value, (name, preset)
