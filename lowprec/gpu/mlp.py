"""The lowprec MLP on a GPU, step by step beside the simulator.

A :class:`DeviceCaster` replaces the training step's :class:`~lowprec.nn.cast.Caster`: its
roundings use the GPU's own conversions where one exists (``float32 -> float16`` is
``cvt.rn.f16.f32``, round to nearest even) and its matrix products run on tensor cores through
cuBLAS ``gemmEx`` with 16-bit inputs, FP32 output and ``CUBLAS_COMPUTE_32F``
(CuPy's ``cupy/_core/_routines_linalg.pyx``: 2-D float16 matmul calls ``cublasGemmEx`` with
``CUBLAS_COMPUTE_32F``). Everything else is the same model code, run on
CuPy arrays.

:func:`compare_training` runs the simulator and the device in lock step: before each step the
device loads the simulator's ``Trainer.state_dict()`` (weights, optimizer state, loss scaler,
random state), so each step's differences are that step's own; every cast point's tensor is
compared (bit-identical share, largest distance in ulps of the cast point's format). Two
independent runs then give each side's final accuracy.

The device operations sit behind a small *ops* object so that the CPU tests can run the whole
comparison with :class:`NumpyOps`, a stand-in that does what the GPU would with NumPy.
"""
from __future__ import annotations

from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from ..data import Dataset
from ..formats import FP32, FloatFormat
from ..accumulate import BLAS
from ..nn.cast import Caster
from ..nn.model import MLPConfig
from ..nn.policy import CAST_POINTS, Cast, PrecisionPolicy
from ..nn.train import DEFAULT_HIDDEN, TrainConfig, Trainer, batch_indices, train
from ..observe import History, Observer
from ..rounding import round as lp_round
from . import require_cupy
from .probe import bit_agreement

DeviceArray = Any  # a cupy.ndarray on the device (CuPy is optional), or a NumPy array

CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF = 0, 2, 14  # cudaDataType_t (library_types.h)
CUBLAS_COMPUTE_32F = 68  # cublasComputeType_t
CUBLAS_GEMM_DEFAULT_TENSOR_OP = 99  # cublasGemmAlgo_t


class NumpyOps:
    """What the device does, done with NumPy: for testing the comparison on a CPU."""

    xp = np
    name = "numpy stand-in"

    def to_host(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def round(self, x: np.ndarray, spec: Cast, rng: np.random.Generator | None) -> np.ndarray:
        return lp_round(x, spec.format, spec.mode, overflow=spec.overflow,
                        subnormals=spec.subnormals, rng=rng)

    def matmul16(self, a: np.ndarray, b: np.ndarray, fmt: FloatFormat) -> np.ndarray:
        return a @ b  # exact 16-bit products, FP32 sums in the BLAS library's order


class CupyOps:
    """Device operations on CuPy arrays: native conversions and cuBLAS tensor-core GEMMs."""

    def __init__(self) -> None:
        self.xp = require_cupy()
        self.name = "cupy"

    def to_host(self, x: DeviceArray) -> np.ndarray:
        return self.xp.asnumpy(x)

    def round(self, x: DeviceArray, spec: Cast, rng: np.random.Generator | None) -> DeviceArray:
        cp = self.xp
        native = (spec.mode == "nearest" and spec.overflow is None and spec.subnormals
                  and spec.format.name == "fp16" and x.dtype == cp.float32)
        if native:  # the GPU's own conversion: cvt.rn.f16.f32
            return x.astype(cp.float16).astype(cp.float32)
        # No native conversion for this format or mode: round on the host, exactly.
        host = lp_round(cp.asnumpy(x), spec.format, spec.mode, overflow=spec.overflow,
                        subnormals=spec.subnormals, rng=rng)
        return cp.asarray(host)

    def matmul16(self, a: DeviceArray, b: DeviceArray, fmt: FloatFormat) -> DeviceArray:
        """a @ b on tensor cores: 16-bit inputs (values of ``fmt``), FP32 output and compute."""
        cp = self.xp
        # CuPy is optional: imported only where the device works, never at module import
        from cupy.cuda import cublas, device

        m, k = a.shape
        n = b.shape[1]
        if fmt.name == "fp16":
            a16, b16, dtype = a.astype(cp.float16), b.astype(cp.float16), CUDA_R_16F
        else:  # bf16 as raw bits: the top half of each float32 (exact, the values are bf16)
            a16 = (cp.ascontiguousarray(a).view(cp.uint32) >> 16).astype(cp.uint16)
            b16 = (cp.ascontiguousarray(b).view(cp.uint32) >> 16).astype(cp.uint16)
            dtype = CUDA_R_16BF
        a16, b16 = cp.ascontiguousarray(a16), cp.ascontiguousarray(b16)
        c = cp.empty((m, n), cp.float32)
        one, zero = np.array(1.0, np.float32), np.array(0.0, np.float32)
        # Row-major C = A B is column-major C^T = B^T A^T: pass B first.
        cublas.gemmEx(device.get_cublas_handle(), cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_N, n, m, k,
                      one.ctypes.data, b16.data.ptr, dtype, n, a16.data.ptr, dtype, k,
                      zero.ctypes.data, c.data.ptr, CUDA_R_32F, n,
                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT_TENSOR_OP)
        return c


class TracingCaster(Caster):
    """A Caster that keeps each step's trace (layer, point, tensor) after the step, to compare."""

    last_trace: tuple = ()

    def end_step(self) -> None:
        self.last_trace = tuple(self.trace)
        super().end_step()


class DeviceCaster(TracingCaster):
    """A Caster whose roundings and matmuls run on the device (``ops``); keeps each step's trace.
    A Trainer makes one from ``caster=functools.partial(DeviceCaster, ops=ops)``."""

    def __init__(self, policy: PrecisionPolicy, ops: NumpyOps | CupyOps, *,
                 rng: np.random.Generator | None = None, observer: Observer | None = None,
                 xp: ModuleType | None = None) -> None:
        if xp is not None and xp is not ops.xp:
            raise ValueError(f"DeviceCaster works in its ops' array namespace {ops.xp.__name__}, "
                             f"got xp={getattr(xp, '__name__', xp)}")
        super().__init__(policy, rng=rng, observer=observer, xp=ops.xp)
        self.ops = ops

    def round(self, x: DeviceArray, spec: Cast, point: str, layer: int) -> DeviceArray:
        return self.ops.round(x, spec, self.rng if spec.mode == "stochastic" else None)

    def matmul(self, a: DeviceArray, b: DeviceArray, gemm: str | None = None) -> DeviceArray:
        """Tensor cores when both operands hold 16-bit values of the policy's weight format and
        the policy's accumulator is BLAS (cuBLAS's own FP32 sums); otherwise an FP32 GEMM."""
        weight = self.policy.weight
        fmt = weight.format if weight is not None else None
        if (fmt is not None and fmt.name in ("fp16", "bf16") and self.policy.accumulate is BLAS
                and _holds(a, fmt, self.xp) and _holds(b, fmt, self.xp)):
            return self.ops.matmul16(a, b, fmt)
        # FP32 inputs: cuBLAS's FP32 GEMM (as the simulator's BLAS order). The device has no
        # exact accumulation models: under one, this is still cuBLAS, as before.
        return BLAS.matmul(a, b)

    def frozen_copy(self, rng: np.random.Generator | None = None) -> DeviceCaster:
        """The evaluation caster: the same device operations (no FP8 states in these policies)."""
        return DeviceCaster(self.policy, self.ops, rng=rng)


def _holds(x, fmt, xp) -> bool:
    """True when every value of the float32 array ``x`` is a value of the 16-bit ``fmt``."""
    if fmt.name == "fp16":
        return bool((x.astype(xp.float16).astype(xp.float32) == x).all())
    # bf16: the low half of each float32 is zero
    return bool(((xp.ascontiguousarray(x).view(xp.uint32) & 0xFFFF) == 0).all())


def compare_training(policy: PrecisionPolicy | str, data: Dataset, *, steps: int = 20,
                     ops: NumpyOps | CupyOps | None = None, model: MLPConfig | None = None,
                     batch_size: int = 128, seed: int = 0, final_steps: int = 200) -> dict:
    """Per step and per cast point: how the device's tensors differ from the simulator's.

    Returns {"policy", "device", "steps": [{"step", "points": {"layer/point": agreement}}],
    "summary": {"layer/point": mean share, worst ulp}, "final": {"simulator", "device"}}.
    """
    ops = ops or CupyOps()
    xp = ops.xp
    model = model or MLPConfig(sizes=(data.n_features, *DEFAULT_HIDDEN, data.n_outputs))
    sim = Trainer(policy, model, seed=seed, caster=TracingCaster)
    dev = Trainer(policy, model, seed=seed, caster=partial(DeviceCaster, ops=ops), xp=xp)
    records = []
    for s in range(steps):
        idx = batch_indices(len(data.x_train), batch_size, seed, s)
        x, y = data.x_train[idx], data.y_train[idx]
        dev.load_state_dict(sim.state_dict())  # weights, optimizer, scaler, RNG: the simulator's
        sim.step(x, y)
        dev.step(xp.asarray(x), y)
        points = {}
        for (layer, point, a), (_, _, b) in zip(sim.caster.last_trace, dev.caster.last_trace):
            spec = sim.policy.cast(point)
            fmt = spec.format if spec is not None else FP32
            key = f"{layer}/{point}"
            if key not in points:  # a point met twice in a step (e.g. a weight's two uses): first
                points[key] = bit_agreement(np.asarray(a, np.float64),
                                            np.asarray(ops.to_host(b), np.float64), fmt)
        records.append({"step": s + 1, "points": points})
    summary = {}
    for key in records[0]["points"]:
        entries = [r["points"][key] for r in records if key in r["points"]]
        shares = [e["bit_identical_share"] for e in entries]
        summary[key] = {"bit_identical_share": float(np.mean(shares)),
                        "max_ulp": int(max(e["max_ulp"] for e in entries))}
    config = TrainConfig(steps=final_steps, batch_size=batch_size, seed=seed, eval_every=0)
    final = {"simulator": _final(train(policy, data, model, config, progress=False))}
    try:  # an independent run on the device (same seed and batches)
        final["device"] = _final(train(policy, data, model, config, progress=False,
                                       caster=partial(DeviceCaster, ops=ops), xp=xp))
    except Exception as exc:  # report, do not hide: the per-step comparison above still stands
        final["device"] = {"error": f"{type(exc).__name__}: {exc}"}
    return {"policy": str(policy), "device": ops.name, "steps": records, "summary": summary,
            "final": final, "cast_points": list(CAST_POINTS)}


def _final(result: History) -> dict:
    """Test loss and accuracy of a run's last evaluation."""
    return {"test_loss": float(result.test_loss[-1]),
            "test_accuracy": float(result.test_accuracy[-1])}
