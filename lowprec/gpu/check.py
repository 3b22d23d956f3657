"""``python -m lowprec gpu-check``: the whole GPU comparison, as a printed report and JSON.

1. The tensor-core probe: every ``mma.sync`` variant the device supports, one instruction and
   four chained, against every applicable preset of :mod:`lowprec.tensorcore`.
2. cuBLAS: ``cupy.matmul`` (FP16 in, FP16 out) and ``gemmEx`` (FP16 in, FP32 out) for growing K,
   against the preset the probe picked.
3. The MLP: the same model and data on the device and in the simulator (lowprec.gpu.mlp).
4. ``cvt.rs`` (sm_100a/sm_103a): the device's stochastic rounding against lowprec.cvt_rs, bit
   for bit, given the same random words (lowprec.gpu.hwsr).

What applies is chosen by the device's compute capability (lowprec.gpu.arch): the report names
the architecture, the preset each instruction is expected to match (and says whether it does),
and for each part it cannot run, the capability it needs and the one found.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from .. import accumulate, data
from ..formats import FP16, FP32
from ..rounding import round as lp_round
from ..tensorcore import TensorCoreModel
from .arch import expected_presets, tcgen05_support
from .hwsr import cvt_rs_check
from .kernels import INSTRUCTIONS
from .mlp import CupyOps, compare_training
from .probe import (CupyBackend, SimulatedBackend, bit_agreement, presets_for,
                    probe_instruction)


def cublas_comparison(backend: CupyBackend, model: TensorCoreModel,
                      ks: tuple[int, ...] = (16, 64, 256, 1024, 4096), m: int = 64, n: int = 64,
                      seed: int = 0) -> list:
    """Share of cuBLAS outputs bit-identical to ``model``'s prediction, for growing K."""

    cp = backend.cp
    ops = CupyOps()
    rng = np.random.default_rng(seed)
    rows = []
    for k in ks:
        a = lp_round(rng.standard_normal((m, k)).astype(np.float32), FP16)
        b = lp_round(rng.standard_normal((k, n)).astype(np.float32), FP16)
        fp16_out = cp.asnumpy(cp.matmul(cp.asarray(a, cp.float16), cp.asarray(b, cp.float16)))
        fp32_out = cp.asnumpy(ops.matmul16(cp.asarray(a), cp.asarray(b), FP16))
        predicted32 = accumulate.matmul(a.astype(np.float64), b.astype(np.float64),
                                        accumulate=model)
        predicted16 = lp_round(np.asarray(predicted32, np.float64), FP16)
        rows.append({"k": k,
                     "fp16_out": bit_agreement(fp16_out.astype(np.float64), predicted16, FP16),
                     "fp32_out": bit_agreement(fp32_out.astype(np.float64),
                                               np.asarray(predicted32), FP32)})
    return rows


def run_gpu_check(out_path: str | os.PathLike | None = None, *,
                  backend: SimulatedBackend | CupyBackend | None = None, random_tiles: int = 64,
                  mlp_steps: int = 10, cublas: bool = True, mlp: bool = True) -> dict:
    """Run every part the device supports; return the report (and write it as JSON)."""
    backend = backend or CupyBackend()
    start = time.perf_counter()
    report = {"device": backend.device_name, "architecture": None, "instructions": {},
              "cublas": None, "mlp": {}, "cvt_rs": None, "tcgen05": None}
    cc = getattr(backend, "compute_capability", None)
    if cc is not None:
        report["architecture"] = {"compute_capability": f"{cc // 10}.{cc % 10}",
                                  **expected_presets(cc)}
        report["tcgen05"] = tcgen05_support(cc)[1]
    for name, instr in INSTRUCTIONS.items():
        if not backend.supports(instr):
            need = instr.min_compute_capability
            why = ("not supported by this device" if cc is None or cc >= need else
                   f"needs compute capability {need // 10}.{need % 10} or later; this device "
                   f"has {cc // 10}.{cc % 10}")
            report["instructions"][name] = {"skipped": why}
            continue
        report["instructions"][name] = {
            f"chained_{c}": probe_instruction(backend, instr, chained=c, random_tiles=random_tiles)
            for c in (1, 4)}
    if report["architecture"]:
        report["architecture"]["as_expected"] = {
            name: all(r.get("best_match") == preset
                      for r in report["instructions"].get(name, {}).values()
                      if isinstance(r, dict))
            for name, preset in report["architecture"]["expected"].items()
            if "skipped" not in report["instructions"].get(name, {"skipped": ""})}
    if hasattr(backend, "cvt_rs_support"):
        report["cvt_rs"] = cvt_rs_check(backend)
    if cublas and hasattr(backend, "cp"):
        single = report["instructions"].get("f16.f32", {}).get("chained_1", {})
        best = single.get("best_match")
        if best is not None:
            model = presets_for(INSTRUCTIONS["f16.f32"])[best]
            report["cublas"] = {"model": best, "rows": cublas_comparison(backend, model)}
    if mlp and hasattr(backend, "cp"):
        digits = data.digits(np.random.default_rng(0))
        for policy in ("fp16_mixed", "bf16_mixed"):
            try:
                report["mlp"][policy] = compare_training(policy, digits, steps=mlp_steps)
            except Exception as exc:  # report it and go on with the rest
                report["mlp"][policy] = {"error": f"{type(exc).__name__}: {exc}"}
    report["seconds"] = round(time.perf_counter() - start, 1)
    if out_path is not None:
        with open(out_path, "w") as f:
            json.dump(report, f, indent=1, default=str)
    return report


def format_report(report: dict) -> str:
    """The printed form of a gpu-check report."""
    lines = [f"device: {report['device']}"]
    arch = report.get("architecture")
    if arch:
        lines.append(f"compute capability {arch['compute_capability']}: {arch['note']}")
        for name, preset in arch["expected"].items():
            verdict = arch.get("as_expected", {}).get(name)
            lines.append(f"  expected {name}: {preset}" + {True: " (matches)",
                                                          False: " (DOES NOT match)",
                                                          None: ""}[verdict])
        for reason in arch["missing"].values():
            lines.append(f"  {reason}")
    lines += ["", "tensor-core probe (share of outputs bit-identical to each preset):"]
    for name, entry in report["instructions"].items():
        if "skipped" in entry:
            lines.append(f"  {name:9s} skipped: {entry['skipped']}")
            continue
        for result in entry.values():  # one per chain length
            shares = ", ".join(f"{p} {r['bit_identical_share']:.1%}"
                               + (" (probe vectors match)" if r["probe_vectors_match"] else "")
                               for p, r in result["presets"].items())
            check = ("ok" if result["selfcheck_ok"]
                     else "FAILED (layout or kernel error: verdicts void)")
            lines.append(f"  {name:9s} K={result['k']:3d}  self-check {check}; "
                         f"best: {result['best_match']}; {shares}")
        if name.startswith(("e4m3", "e5m2")):
            lines.append("            note: sm_90 has no FP8 mma.sync of its own (ptxas lowers it "
                         "to FP16 HMMAs plus an FADD of C:\n            see cuobjdump -sass); the "
                         "FP8 presets model wgmma, so they need not match mma.sync there")
    if report.get("cublas"):
        lines += ["", f"cuBLAS against {report['cublas']['model']} (share bit-identical):"]
        for row in report["cublas"]["rows"]:
            fp16_out, fp32_out = row["fp16_out"], row["fp32_out"]
            lines.append(f"  K={row['k']:5d}  fp16 out {fp16_out['bit_identical_share']:.1%} "
                         f"(max {fp16_out['max_ulp']} ulp)   fp32 out "
                         f"{fp32_out['bit_identical_share']:.1%} (max {fp32_out['max_ulp']} ulp)")
    for policy, result in report.get("mlp", {}).items():
        lines += ["", f"MLP {policy}: device vs simulator, per cast point "
                      "(mean share bit-identical, worst ulp):"]
        if "error" in result:
            lines.append(f"  error: {result['error']}")
            continue
        for key, entry in result["summary"].items():
            lines.append(f"  layer {key:22s} {entry['bit_identical_share']:.1%}  "
                         f"{entry['max_ulp']} ulp")
        final = result["final"]
        lines.append(f"  final: simulator {final['simulator']}, device {final['device']}")
    if report.get("tcgen05"):
        lines += ["", f"tcgen05.mma: {report['tcgen05']}"]
    lines += _cvt_rs_lines(report.get("cvt_rs"))
    lines.append(f"\n({report.get('seconds', '?')} s)")
    return "\n".join(lines)


def _cvt_rs_lines(result: dict | None) -> list:
    if result is None:
        return []
    lines = ["", "cvt.rs stochastic rounding, device vs lowprec.cvt_rs (same random words):"]
    if "skipped" in result:
        return lines + [f"  skipped: {result['skipped']}"]
    for dtype, entry in result.items():
        if "error" in entry:
            lines.append(f"  {dtype:7s} error: {entry['error']}")
            continue
        others = ", ".join(f"{k} {v:.1%}" for k, v in entry["layouts"].items() if k != "model")
        lines.append(f"  {dtype:7s} {entry['bit_identical_share']:.1%} bit-identical "
                     f"({entry['mismatched_lanes']} lanes differ, "
                     f"{entry['mismatched_subnormal_lanes']} of them subnormal)"
                     + (f"; other rbits layouts: {others}" if others else ""))
    return lines
