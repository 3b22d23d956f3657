"""The GPU module's pure-Python parts, on the CPU: kernel layout, sources, status, report logic."""
import dataclasses
import shutil
import subprocess

import numpy as np
import pytest

from lowprec.cvt_rs import CVT_RS
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


# --- architecture selection, cvt.rs (stochastic rounding) and their explanations ---------------

def test_architecture_table_names_the_expected_presets():
    from lowprec.gpu.arch import architecture, expected_presets

    assert architecture(89).name.startswith("Ada") and architecture(86).name.startswith("Ampere")
    assert architecture(100) is architecture(103)
    assert architecture(120) is None and architecture(75) is None
    plan = expected_presets(90)
    assert plan["expected"]["f16.f32"] == "H100_FP16" and "e4m3.f32" not in plan["expected"]
    assert "no expectations for compute capability 12.0" in expected_presets(120)["note"]
    for bad in (8.9, "89", True, 5):
        with pytest.raises(ValueError, match="compute capability must be an int"):
            architecture(bad)


def test_presets_not_yet_in_the_registry_are_explained(monkeypatch):
    """Ada's FP8 and Blackwell's presets are looked up by name: absent, they are reported."""
    from lowprec import tensorcore
    from lowprec.gpu.arch import expected_presets

    without = {k: v for k, v in tensorcore.TENSOR_CORES.items()
               if not k.startswith(("ADA", "B200"))}
    monkeypatch.setattr(tensorcore, "TENSOR_CORES", without)
    plan = expected_presets(89)
    assert plan["expected"]["f16.f32"] == "A100_FP16"
    assert "e4m3.f32" not in plan["expected"]
    assert "preset ADA_FP8 is not in lowprec.TENSOR_CORES" in plan["missing"]["e4m3.f32"]
    assert set(expected_presets(100)["missing"]) == set(INSTRUCTIONS)
    fake = dataclasses.replace(tensorcore.TENSOR_CORES["H100_FP8"], name="ADA_FP8", block=16)
    monkeypatch.setattr(tensorcore, "TENSOR_CORES", {**without, "ADA_FP8": fake})
    assert expected_presets(89)["expected"]["e4m3.f32"] == "ADA_FP8"


def test_cvt_rs_and_tcgen05_support_explain_themselves():
    from lowprec.gpu.arch import cvt_rs_support, tcgen05_support

    assert cvt_rs_support(100)[0] and cvt_rs_support(103)[0]
    for cc, shown in ((90, "9.0"), (89, "8.9"), (120, "12.0"), (101, "10.1")):
        ok, why = cvt_rs_support(cc)
        assert not ok and "10.0 or 10.3" in why and f"has {shown}" in why
    ok, why = tcgen05_support(90)
    assert not ok and "10.0 or 10.3" in why and "9.0" in why
    ok, why = tcgen05_support(100)
    assert not ok and "not part of lowprec yet" in why


def test_cupy_backend_without_nvcc_says_so(monkeypatch):
    from lowprec.gpu import probe

    backend = object.__new__(probe.CupyBackend)  # no CuPy needed for the support check
    backend.compute_capability = 100
    monkeypatch.setattr(probe.shutil, "which", lambda name: None)
    ok, why = backend.cvt_rs_support()
    assert not ok and "needs nvcc" in why
    backend.compute_capability = 90
    ok, why = backend.cvt_rs_support()
    assert not ok and "has 9.0" in why


@pytest.mark.parametrize("dtype", ["f16x2", "bf16x2", "e4m3x4", "e5m2x4", "e2m3x4", "e3m2x4",
                                   "e2m1x4"])
def test_cvt_rs_kernel_source_names_the_instruction(dtype):
    from lowprec.gpu.kernels import cvt_rs_kernel_name, cvt_rs_kernel_source

    src = cvt_rs_kernel_source(dtype)
    assert f'"cvt.rs.satfinite.{dtype}.f32 %0, ' in src
    assert f"__global__ void {cvt_rs_kernel_name(dtype)}(" in src
    assert "@" not in src
    lanes = CVT_RS[dtype].lanes
    operands = "{%1, %2, %3, %4}" if lanes == 4 else "%1, %2"
    assert f"%0, {operands}, %{lanes + 1};" in src
    assert ('"=h"(out)' in src) == (dtype == "e2m1x4")
    if dtype in ("f16x2", "bf16x2"):
        assert f'"cvt.rs.{dtype}.f32 %0' in cvt_rs_kernel_source(dtype, satfinite=False)


def _nvcc(tmp_path, source: str, arch: str):
    path = tmp_path / f"{arch}.cu"
    path.write_text(source)
    return subprocess.run(["nvcc", f"-arch={arch}", "-cubin", "-o", str(tmp_path / "k.cubin"),
                           str(path)], capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("nvcc") is None,
                    reason="nvcc not installed: cannot compile CUDA here")
def test_cvt_rs_kernels_compile_only_for_sm_100a_and_sm_103a(tmp_path):
    """ptxas accepts every cvt.rs kernel for the capabilities arch.cvt_rs_support names, and
    refuses them for Hopper: the selection rests on the assembler, not on a guess."""
    from lowprec.gpu.arch import CVT_RS_CAPABILITIES
    from lowprec.gpu.kernels import cvt_rs_kernel_source

    source = "\n".join(cvt_rs_kernel_source(d) for d in CVT_RS)
    for cc in CVT_RS_CAPABILITIES:
        done = _nvcc(tmp_path, source, f"sm_{cc}a")
        assert done.returncode == 0, done.stderr
    refused = _nvcc(tmp_path, source, "sm_90a")
    assert refused.returncode != 0 and ".rs" in refused.stderr


@pytest.mark.skipif(shutil.which("nvcc") is None,
                    reason="nvcc not installed: cannot compile CUDA here")
@pytest.mark.parametrize("arch", ["sm_89", "sm_100a"])
def test_mma_kernels_compile_for_ada_and_blackwell(arch, tmp_path):
    """The FP8 m16n8k32 mma.sync exists from sm_89 on; every probe kernel builds for Ada and
    datacenter Blackwell."""
    source = "\n".join(kernel_source(i) for i in INSTRUCTIONS.values())
    done = _nvcc(tmp_path, source, arch)
    assert done.returncode == 0, done.stderr
    if arch == "sm_89":
        assert all(i.min_compute_capability <= 89 for i in INSTRUCTIONS.values())


def _fixed_position_fp16(dtype, operands, rbits):
    """A device that adds the 13 random bits at fixed float32 positions and truncates: the same
    as the model for normal FP16 results, biased toward zero for subnormal ones."""
    from lowprec import round as lp_round
    from lowprec.bits import encode
    from lowprec.cvt_rs import cvt_rs, element_rbits

    if dtype != "f16x2":
        return cvt_rs(dtype, operands, rbits)
    d = np.zeros(np.shape(rbits), np.uint32)
    for lane, (x, r) in enumerate(zip(operands, element_rbits(dtype, rbits))):
        u = np.asarray(x, np.float32).view(np.uint32)
        finite = np.isfinite(x)
        summed = np.where(finite, ((u & np.uint32(0x7FFFFFFF)) + r) & np.uint32(0xFFFFE000)
                          | (u & np.uint32(0x80000000)), u).view(np.float32)
        value = lp_round(np.clip(summed, -65504, 65504), "fp16", "toward_zero")
        codes = np.where(np.isnan(value), 0x7FFF, encode(value, "fp16")).astype(np.uint32)
        d |= codes << np.uint32(16 * (1 - lane))
    return d


def test_cvt_rs_check_finds_the_layout_and_the_alignment_a_device_uses():
    from lowprec.cvt_rs import RBITS_LAYOUT_CANDIDATES, cvt_rs
    from lowprec.gpu.check import format_report, run_gpu_check
    from lowprec.gpu.hwsr import cvt_rs_check
    from lowprec.gpu.probe import SimulatedBackend

    model = cvt_rs_check(SimulatedBackend({}, 100, cvt_rs), n=512)
    for dtype, entry in model.items():
        assert entry["bit_identical_share"] == 1.0 and entry["mismatched_lanes"] == 0, dtype

    def shared(dtype, operands, rbits):  # a device whose FP8 pairs share their 16 bits
        instr = CVT_RS[dtype]
        if dtype in ("e4m3x4", "e5m2x4"):
            instr = dataclasses.replace(instr, rbits_fields=RBITS_LAYOUT_CANDIDATES[
                "pair_shares_16"])
        return cvt_rs(instr, operands, rbits)

    other = cvt_rs_check(SimulatedBackend({}, 100, shared), n=512)
    assert other["e4m3x4"]["best_layout"] == "pair_shares_16"
    assert other["e4m3x4"]["bit_identical_share"] < 0.9
    assert other["bf16x2"]["bit_identical_share"] == 1.0

    fixed = cvt_rs_check(SimulatedBackend({}, 100, _fixed_position_fp16), n=2048)["f16x2"]
    assert fixed["mismatched_lanes"] > 0
    assert fixed["mismatched_subnormal_lanes"] == fixed["mismatched_lanes"]

    report = run_gpu_check(backend=SimulatedBackend({}, 100, cvt_rs), random_tiles=1)
    text = format_report(report)
    assert "cvt.rs stochastic rounding" in text and "e2m1x4  100.0% bit-identical" in text
    assert "tcgen05.mma: tcgen05.mma probe kernels" in text


def test_report_on_an_ada_stand_in_names_what_it_expects_and_skips(monkeypatch):
    from lowprec import tensorcore
    from lowprec.gpu.check import format_report, run_gpu_check
    from lowprec.gpu.probe import SimulatedBackend, presets_for

    fake = dataclasses.replace(tensorcore.TENSOR_CORES["H100_FP8"], name="ADA_FP8", block=16)
    registry = {k: v for k, v in tensorcore.TENSOR_CORES.items() if not k.startswith("ADA")}
    monkeypatch.setattr(tensorcore, "TENSOR_CORES", {**registry, "ADA_FP8": fake})
    models = {name: presets_for(INSTRUCTIONS[name])[preset] for name, preset in
              [("f16.f32", "A100_FP16"), ("e4m3.f32", "ADA_FP8"), ("bf16.f32", "H100_BF16")]}
    report = run_gpu_check(backend=SimulatedBackend(models, 89), random_tiles=4)
    arch = report["architecture"]
    assert arch["compute_capability"] == "8.9"
    assert arch["as_expected"] == {"f16.f32": True, "e4m3.f32": True, "bf16.f32": False}
    assert report["cvt_rs"] == {"skipped": "the simulated device was given no cvt.rs function"}
    text = format_report(report)
    assert "expected e4m3.f32: ADA_FP8 (matches)" in text
    assert "expected bf16.f32: A100_BF16 (DOES NOT match)" in text
    assert "tcgen05.mma (the B200_* presets) needs compute capability 10.0 or 10.3" in text
