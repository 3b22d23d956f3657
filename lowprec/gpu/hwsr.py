"""The device's stochastic rounding (PTX ``cvt.rs``) against the CPU model, bit for bit.

For each destination type of :data:`lowprec.cvt_rs.CVT_RS`, random float32 operands (spread
over the format's range, its subnormals and past its largest value, plus the specials) and
random 32-bit ``rbits`` words go through the device's instruction and through
:func:`lowprec.cvt_rs.cvt_rs`; the report gives the share of bit-identical results for the
model's layout of ``rbits`` and for each alternative reading in
:data:`lowprec.cvt_rs.RBITS_LAYOUT_CANDIDATES`, and how many mismatched lanes hold a subnormal
result (where the model's alignment of the random bits is an assumption: see lowprec.cvt_rs).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..cvt_rs import CVT_RS, RBITS_LAYOUT_CANDIDATES, CvtRs, cvt_rs
from .probe import CupyBackend, SimulatedBackend

__all__ = ["cvt_rs_inputs", "cvt_rs_compare", "cvt_rs_check"]


def cvt_rs_inputs(dtype: str, n: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(operands, rbits)``: float32 operands of shape (lanes, n) and n uint32 words."""
    instr = CVT_RS[dtype]
    fmt = instr.fmt
    rng = np.random.default_rng(seed)
    lo, hi = math.log2(fmt.smallest_subnormal) - 2, math.log2(fmt.max) + 1
    mags = np.exp2(rng.uniform(lo, hi, (instr.lanes, n))) * rng.uniform(1, 2, (instr.lanes, n))
    ops = (np.minimum(mags, np.finfo(np.float32).max)
           * rng.choice([-1.0, 1.0], (instr.lanes, n))).astype(np.float32)
    specials = [0.0, -0.0, np.inf, -np.inf, fmt.max, -fmt.max, fmt.smallest_subnormal / 2]
    if fmt.has_nan:
        specials.append(np.nan)
    where = rng.random((instr.lanes, n)) < 0.05
    ops[where] = rng.choice(np.array(specials, np.float32), int(where.sum()))
    rbits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    return ops, rbits


def _lanes(instr: CvtRs, d: np.ndarray) -> np.ndarray:
    """The per-operand codes packed in d, shape (lanes, n)."""
    d = np.asarray(d).astype(np.uint32)
    mask = np.uint32((1 << instr.field_bits) - 1)
    return np.stack([(d >> np.uint32(instr.field_bits * (instr.lanes - 1 - j))) & mask
                     for j in range(instr.lanes)])


def cvt_rs_compare(dtype: str, operands: np.ndarray, rbits: np.ndarray,
                   device: np.ndarray) -> dict:
    """Compare a device's packed results with the model, for every candidate rbits layout."""
    instr = CVT_RS[dtype]
    layouts = {"model": instr.rbits_fields}
    if instr.lanes == 4:
        layouts.update(RBITS_LAYOUT_CANDIDATES)
    shares = {}
    for name, fields in layouts.items():
        predicted = cvt_rs(dataclasses.replace(instr, rbits_fields=fields), list(operands), rbits)
        shares[name] = float(np.mean(_lanes(instr, predicted) == _lanes(instr, device)))
    model = _lanes(instr, cvt_rs(instr, list(operands), rbits))
    wrong = model != _lanes(instr, device)
    subnormal = np.abs(operands) < instr.fmt.tiny
    return {"instruction": instr.ptx, "lanes_compared": int(wrong.size),
            "bit_identical_share": shares["model"], "layouts": shares,
            "best_layout": max(shares, key=shares.get),
            "mismatched_lanes": int(wrong.sum()),
            "mismatched_subnormal_lanes": int((wrong & subnormal).sum())}


def cvt_rs_check(backend: SimulatedBackend | CupyBackend, n: int = 4096, seed: int = 0) -> dict:
    """Every cvt.rs destination type on ``backend`` (a CupyBackend or a stand-in with
    ``cvt_rs_support()`` and ``run_cvt_rs(dtype, operands, rbits)``), or why not."""
    ok, reason = backend.cvt_rs_support()
    if not ok:
        return {"skipped": reason}
    report = {}
    for dtype in CVT_RS:
        ops, rbits = cvt_rs_inputs(dtype, n, seed)
        try:
            device = backend.run_cvt_rs(dtype, ops, rbits)
        except Exception as exc:  # report it (a build error, say) and go on with the rest
            report[dtype] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        report[dtype] = cvt_rs_compare(dtype, ops, rbits, device)
    return report
