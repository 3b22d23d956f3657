"""``python -m lowprec gpu-check``: the whole GPU comparison, as a printed report and JSON.

1. The tensor-core probe: every ``mma.sync`` variant the device supports, one instruction and
   four chained, against every applicable preset of :mod:`lowprec.tensorcore`.
2. cuBLAS: ``cupy.matmul`` (FP16 in, FP16 out) and ``gemmEx`` (FP16 in, FP32 out) for growing K,
   against the preset the probe picked.
3. The MLP: the same model and data on the device and in the simulator (lowprec.gpu.mlp).
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
    report = {"device": backend.device_name, "instructions": {}, "cublas": None, "mlp": {}}
    for name, instr in INSTRUCTIONS.items():
        if not backend.supports(instr):
            report["instructions"][name] = {"skipped": "not supported by this device"}
            continue
        report["instructions"][name] = {
            f"chained_{c}": probe_instruction(backend, instr, chained=c, random_tiles=random_tiles)
            for c in (1, 4)}
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
    lines = [f"device: {report['device']}", "",
             "tensor-core probe (share of outputs bit-identical to each preset):"]
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
    lines.append(f"\n({report.get('seconds', '?')} s)")
    return "\n".join(lines)
