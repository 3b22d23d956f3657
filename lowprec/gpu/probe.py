"""The tensor-core probe: run test tiles through real ``mma.sync`` and through each model.

A *backend* computes ``D = A @ B + C`` for a batch of tiles with one of the instructions in
:data:`lowprec.gpu.kernels.INSTRUCTIONS`: :class:`CupyBackend` on a real GPU, or
:class:`SimulatedBackend`, a NumPy stand-in driven by a :class:`lowprec.tensorcore` model
(used by the CPU tests, and to show what each model predicts). :func:`probe_instruction`
compares the device's bits with every preset that applies to the instruction.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from .. import tensorcore
from ..bits import decode, encode
from ..formats import FP16, FP32, FormatLike, as_format
from ..rounding import round as lp_round
from ..cvt_rs import CVT_RS
from .arch import cvt_rs_support
from .kernels import MmaInstruction, cvt_rs_kernel_name, cvt_rs_kernel_source, kernel_source


@dataclass
class ProbeSet:
    """A batch of named test tiles for one instruction (values exactly representable)."""

    instruction: MmaInstruction
    names: list  # one name per tile, e.g. "fasi_d1", "random_17"
    a: np.ndarray  # (tiles, 16, K) float64, values of the instruction's input format
    b: np.ndarray  # (tiles, K, 8)
    c: np.ndarray  # (tiles, 16, 8), values of the accumulator format
    # (tiles, 16, 8) exact a @ b + c for self-check tiles, else NaN
    exact: np.ndarray = field(default=None)


def _acc_format(instr: MmaInstruction):
    return FP32 if instr.accumulator == "fp32" else FP16


def tile(instr: MmaInstruction, k: int, products: dict[int, tuple[float, float]],
         c_value: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One tile whose output (0, 0) is sum(products) + c_value; every other output is 0 + 0."""
    a = np.zeros((16, k))
    b = np.zeros((k, 8))
    c = np.zeros((16, 8))
    for index, (x, y) in products.items():
        a[0, index], b[index, 0] = x, y
    c[0, 0] = c_value
    return a, b, c


def probe_set(instr: MmaInstruction, chained: int = 1, random_tiles: int = 64,
              seed: int = 0) -> ProbeSet:
    """Self-check tiles, the published probe vectors and random tiles, K = chained * instr.k."""
    fmt = as_format(instr.input_format)
    k = instr.k * chained
    rng = np.random.default_rng(seed)
    tiles, names, exact = [], [], []

    # Self-check: small integers, so every model and the device must give the exact product.
    for i in range(4):
        a = rng.integers(-3, 4, (16, k)).astype(float)
        b = rng.integers(-3, 4, (k, 8)).astype(float)
        c = rng.integers(-8, 9, (16, 8)).astype(float)
        tiles.append((a, b, c))
        names.append(f"selfcheck_{i}")
        exact.append(a @ b + c)  # integers far below 2**24: float64 is exact

    eps = 2.0 ** -24
    # Probe vectors after Fasi, Higham, Mikaitis & Pranesh, "Numerical behavior of NVIDIA tensor
    # cores", PeerJ CS 7:e330 (2021), sec. 4, and MMA-Sim (Xie et al., arXiv:2511.10909)
    # (values chosen representable in every input format).
    probes = {
        # 1*1 - (1 - 2^-24): 2^-23 with no extra alignment bit (V100), 2^-24 with one (A100, H100)
        "d1_extra_bit": ({0: (1.0, 1.0)}, -(1 - eps)),
        # c = 1 plus two tiny products at the first and last index of K: split blocks lose them
        "split_block": ({0: (2.0 ** -12, 2.0 ** -12), k - 1: (2.0 ** -12, 2.0 ** -12)}, 1.0),
        # truncation vs rounding of the aligned sum: 1 + 3/4 ulp rounds up to nearest, not toward
        # zero
        "truncation": ({0: (2.0 ** -12, 1.5 * 2.0 ** -12)}, 1.0),
        # cancellation leaves only the bits that survived alignment
        "cancellation": ({0: (1.0, 1.0), 1: (-1.0, 1.0), 2: (2.0 ** -12, 2.0 ** -13)}, 0.0),
        # an exact sum of -2^-40 that the alignment truncates to zero: +0 or -0?
        "negative_zero": ({0: (1.0, 1.0), 1: (-1.0, 1.0), 2: (-(2.0 ** -20), 2.0 ** -20)}, 0.0),
        # carries: many products just below a power of two
        "carry": ({i: (1 - 2.0 ** -3, 1.0) for i in range(k)}, 0.0),
    }
    for name, (products, c_value) in probes.items():
        products = {i: (float(lp_round(x, fmt)), float(lp_round(y, fmt)))
                    for i, (x, y) in products.items()}
        tiles.append(tile(instr, k, products, float(lp_round(c_value, _acc_format(instr)))))
        names.append(name)
        exact.append(np.full((16, 8), np.nan))

    # Random tiles with a wide spread of exponents, so alignment and truncation matter.
    spread = min(8, (fmt.emax - fmt.emin) // 2)
    for i in range(random_tiles):
        a = rng.standard_normal((16, k)) * np.exp2(rng.integers(-spread, spread + 1, (16, k)))
        b = rng.standard_normal((k, 8)) * np.exp2(rng.integers(-spread, spread + 1, (k, 8)))
        c = rng.standard_normal((16, 8)) * np.exp2(rng.integers(-spread, spread + 1, (16, 8)))
        tiles.append((lp_round(a, fmt), lp_round(b, fmt), lp_round(c, _acc_format(instr))))
        names.append(f"random_{i}")
        exact.append(np.full((16, 8), np.nan))

    a, b, c = (np.stack(parts) for parts in zip(*tiles))
    return ProbeSet(instr, names, a, b, c, np.stack(exact))


class SimulatedBackend:
    """A NumPy stand-in for the GPU: each instruction computed by a lowprec.tensorcore model.

    ``compute_capability`` (e.g. 89) makes the report name the architecture and the presets it
    expects; ``cvt_rs``, a function ``(dtype, operands, rbits) -> packed d`` (such as
    :func:`lowprec.cvt_rs.cvt_rs`), stands in for the device's stochastic-rounding instruction.
    """

    def __init__(self, models: dict, compute_capability: int | None = None,
                 cvt_rs: Callable | None = None):
        self.models = models  # instruction name -> TensorCoreModel
        self.compute_capability = compute_capability
        self.cvt_rs = cvt_rs
        self.device_name = "simulated: " + ", ".join(f"{k}={getattr(m, 'name', m)}"
                                                     for k, m in models.items())

    def supports(self, instr: MmaInstruction) -> bool:
        return instr.name in self.models

    def cvt_rs_support(self) -> tuple[bool, str]:
        """(runnable, why) for the cvt.rs check."""
        if self.cvt_rs is None:
            return False, "the simulated device was given no cvt.rs function"
        return True, "simulated cvt.rs"

    def run_cvt_rs(self, dtype: str, operands: np.ndarray, rbits: np.ndarray) -> np.ndarray:
        return self.cvt_rs(dtype, list(operands), rbits)

    def run(self, instr: MmaInstruction, a: np.ndarray, b: np.ndarray,
            c: np.ndarray) -> np.ndarray:
        return simulate(self.models[instr.name], instr, a, b, c)


def simulate(model: tensorcore.TensorCoreModel, instr: MmaInstruction, a: np.ndarray,
             b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """What ``model`` predicts for tiles (a, b, c), chaining instructions along K."""
    out = np.empty(c.shape)
    for t in range(a.shape[0]):
        out[t] = tensorcore.matmul(a[t], b[t], model, c=c[t])
    return out


class CupyBackend:
    """Runs the raw-bit mma.sync kernels of lowprec.gpu.kernels on the current CUDA device."""

    def __init__(self):
        from . import require_cupy

        self.cp = require_cupy()
        props = self.cp.cuda.runtime.getDeviceProperties(self.cp.cuda.Device().id)
        name = props["name"]
        self.device_name = name.decode() if isinstance(name, bytes) else name
        self.compute_capability = int(props["major"]) * 10 + int(props["minor"])
        self._kernels = {}

    def supports(self, instr: MmaInstruction) -> bool:
        return self.compute_capability >= instr.min_compute_capability

    def cvt_rs_support(self) -> tuple[bool, str]:
        """(runnable, why) for the cvt.rs check: the device and an nvcc to build for it."""
        ok, reason = cvt_rs_support(self.compute_capability)
        if ok and shutil.which("nvcc") is None:
            return False, (f"{reason}, but building it needs nvcc on PATH (CUDA 12.8 or "
                           "later; 12.9 for sm_103a): CuPy reads the architecture as a number, "
                           "so it cannot ask NVRTC for sm_100a")
        return ok, reason

    def run_cvt_rs(self, dtype: str, operands: np.ndarray, rbits: np.ndarray) -> np.ndarray:
        """The device's packed cvt.rs results for operands (lanes, n) and n rbits words."""
        cp = self.cp
        if dtype not in self._kernels:
            with tempfile.TemporaryDirectory() as tmp:
                source, cubin = os.path.join(tmp, "k.cu"), os.path.join(tmp, "k.cubin")
                with open(source, "w") as f:
                    f.write(cvt_rs_kernel_source(dtype))
                done = subprocess.run(["nvcc", f"-arch=sm_{self.compute_capability}a", "-cubin",
                                       "-o", cubin, source], capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"nvcc failed for cvt.rs.{dtype}: {done.stderr.strip()}")
                module = self.cp.RawModule(path=cubin)
                self._kernels[dtype] = module.get_function(cvt_rs_kernel_name(dtype))
        n = rbits.size
        x = cp.asarray(np.ascontiguousarray(np.asarray(operands, np.float32).T).view(np.uint32))
        narrow = CVT_RS[dtype].result_dtype
        d = cp.empty(n, narrow)
        self._kernels[dtype](((n + 255) // 256,), (256,),
                             (x, cp.asarray(rbits.astype(np.uint32)), d, np.int32(n)))
        return cp.asnumpy(d)

    def _kernel(self, instr: MmaInstruction):
        if instr.name not in self._kernels:
            module = self.cp.RawModule(code=kernel_source(instr), options=("-std=c++17",))
            self._kernels[instr.name] = module.get_function(instr.kernel_name)
        return self._kernels[instr.name]

    def run(self, instr: MmaInstruction, a: np.ndarray, b: np.ndarray,
            c: np.ndarray) -> np.ndarray:
        cp = self.cp
        fmt = as_format(instr.input_format)
        storage = {1: np.uint32, 2: np.uint16, 4: np.uint8}[instr.per_register]
        a_bits = cp.asarray(np.asarray(encode(a, fmt)).astype(storage))
        b_bits = cp.asarray(np.asarray(encode(b, fmt)).astype(storage))
        if instr.accumulator == "fp32":
            c_dev = cp.asarray(c.astype(np.float32))
            d_dev = cp.empty_like(c_dev)
        else:
            c_dev = cp.asarray(np.asarray(encode(c, FP16)).astype(np.uint16))
            d_dev = cp.empty_like(c_dev)
        tiles, _, k = a.shape
        self._kernel(instr)((tiles,), (32,), (a_bits, b_bits, c_dev, d_dev, np.int32(k)))
        d = cp.asnumpy(d_dev)
        return d.astype(np.float64) if instr.accumulator == "fp32" else decode(d, FP16)


def bit_agreement(x: ArrayLike, y: ArrayLike, fmt: FormatLike) -> dict:
    """Share of bit-identical values and the largest distance in units in the last place."""
    fmt = as_format(fmt)
    cx = np.asarray(encode(x, fmt)).astype(np.int64)
    cy = np.asarray(encode(y, fmt)).astype(np.int64)
    same = cx == cy
    # distance in ulps: map codes to a monotone integer line (sign-magnitude to two's complement)
    sign = 1 << (fmt.bits - 1)
    line_x = np.where(cx & sign, -(cx & (sign - 1)), cx)
    line_y = np.where(cy & sign, -(cy & (sign - 1)), cy)
    finite = np.isfinite(x) & np.isfinite(y)
    distance = np.abs(line_x - line_y)[finite]
    return {"bit_identical_share": float(same.mean()) if same.size else math.nan,
            "max_ulp": int(distance.max()) if distance.size else 0,
            "count": int(same.size)}


def _show(value) -> str:
    """A probe output for the report: the exact value in hex float notation (sign of zero kept)."""
    return float(value).hex()


def presets_for(instr: MmaInstruction) -> dict:
    """The tensorcore presets for the instruction's input format, with its accumulator.

    FP8 presets are given for E4M3; the E5M2 instruction gets the same models with E5M2 inputs.
    An FP16 accumulator rounds each block's sum to nearest (Fasi et al. 2021: RN for FP16 output).
    """
    found = {}
    for name, model in tensorcore.TENSOR_CORES.items():
        # NVIDIA's only (the probes run mma.sync); no block scales in these probes; FP16-output
        # presets (_OUT16) are derived below
        if (not isinstance(model, tensorcore.TensorCoreModel) or model.block_scaled_mma
                or model.output == FP16):
            continue
        fmt = model.inputs.name
        if instr.input_format == "e5m2" and fmt == "e4m3":
            model = dataclasses.replace(model, inputs=as_format("e5m2"))
        elif fmt != instr.input_format:
            continue
        if instr.accumulator == "fp16":
            model = dataclasses.replace(model, output=FP16, output_rounding="nearest",
                                        c_format=None, promote_every=None)
        found[name] = model
    return found


def probe_instruction(backend: SimulatedBackend | CupyBackend, instr: MmaInstruction,
                      chained: int = 1, random_tiles: int = 64) -> dict:
    """Run the probe set of one instruction on ``backend``; compare with every applicable preset."""
    ps = probe_set(instr, chained=chained, random_tiles=random_tiles)
    device = backend.run(instr, ps.a, ps.b, ps.c)
    acc = _acc_format(instr)
    check = ~np.isnan(ps.exact)
    selfcheck_ok = bool(np.array_equal(device[check], ps.exact[check]))
    named = [i for i, n in enumerate(ps.names) if not n.startswith(("selfcheck", "random"))]
    result = {"instruction": instr.name, "k": int(ps.a.shape[2]), "selfcheck_ok": selfcheck_ok,
              "device_probe_outputs": {ps.names[i]: _show(device[i, 0, 0]) for i in named},
              "presets": {}}
    for name, model in presets_for(instr).items():
        predicted = simulate(model, instr, ps.a, ps.b, ps.c)
        entry = bit_agreement(device, predicted, acc)
        entry["probe_outputs"] = {ps.names[i]: _show(predicted[i, 0, 0]) for i in named}
        entry["probe_vectors_match"] = all(
            encode(device[i, 0, 0], acc) == encode(predicted[i, 0, 0], acc) for i in named)
        result["presets"][name] = entry
    ranked = sorted(result["presets"].items(), key=lambda kv: -kv[1]["bit_identical_share"])
    result["best_match"] = ranked[0][0] if ranked else None
    return result
