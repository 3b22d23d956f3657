"""Throughput of lowprec's block quantizer against torchao's CPU MX and NVFP4 paths, same run.

    python benchmarks/bench_block_quantize.py [--n 4194304] [--repeat 5] [--threads 1]
                                              [--no-pin-malloc]

The array: float32 standard normal values, shape (n / 1024, 1024), blocks along the last axis.
Two comparisons per recipe, each with the same rule on both sides:

* cast: ``lowprec.scaling.block_cast`` (element codes, scale codes, a ScaledTensor) against
  torchao ``to_mx`` / ``nvfp4_quantize`` (FP8/FP4 data and scales);
* round trip: ``block_quantize`` (the values read back) against torchao's cast followed by its
  dequantization (``to_dtype`` / ``NVFP4Tensor.dequantize``).

torch runs on ``--threads`` threads (default 1, as NumPy does). Times are the process's CPU
time (``time.process_time``, best of ``--repeat``), so other load on a shared machine does not
enter the ratio; with more than one torch thread it sums the threads' time. The ratio is
torchao's time over lowprec's: above 1, lowprec is faster. Skips cleanly when torch or torchao
is missing.

On Linux (glibc) the allocator's mmap threshold is pinned before Python starts, as in
benchmarks/bench_training.py (the script re-executes itself once): with glibc's moving threshold
each fresh 16 MB output may come from new pages whose faults count as CPU time, and torchao's
cast measured anywhere between 165 and 830 M/s from one run to the next.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import logging
import os
import platform
import sys
import time
import warnings

PIN_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}

if __name__ == "__main__":
    if (sys.platform.startswith("linux") and "--no-pin-malloc" not in sys.argv
            and any(os.environ.get(k) != v for k, v in PIN_MALLOC.items())):
        os.environ.update(PIN_MALLOC)  # glibc reads these only at process start: start again
        os.execv(sys.executable, [sys.executable, *sys.argv])

import numpy as np  # noqa: E402

from lowprec.scaling import block_cast, block_quantize  # noqa: E402


def make_input(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n // 1024, 1024)).astype(np.float32)


def best_time(fn, repeat: int) -> float:
    fn()  # warm up
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def torchao_cases(x: np.ndarray):
    """(label, lowprec cast, torchao cast, lowprec round trip, torchao round trip) per recipe."""
    import torch
    from torchao.prototype.mx_formats.config import ScaleCalculationMode
    from torchao.prototype.mx_formats.mx_tensor import to_dtype, to_mx
    from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, nvfp4_quantize

    t = torch.from_numpy(x)
    e4m3 = torch.float8_e4m3fn

    def mx(mode):
        return functools.partial(to_mx, t, e4m3, 32, mode)

    def mx_round_trip(mode):
        def run():
            scale, data = to_mx(t, e4m3, 32, mode)
            return to_dtype(data, scale, e4m3, 32, torch.float32)
        return run

    per_tensor = torch.tensor(float(np.abs(x).max()) / (448.0 * 6.0), dtype=torch.float32)

    def nvfp4_round_trip():
        return NVFP4Tensor.to_nvfp4(t, per_tensor_scale=per_tensor).dequantize(torch.float32)

    def ours(fn, **kw):
        return functools.partial(fn, x, **kw)

    mxfp8 = dict(block=32, scale_format="e8m0")
    nvfp4 = dict(block=16, scale_format="e4m3", tensor_scale=float(per_tensor))
    floor, rceil = ScaleCalculationMode.FLOOR, ScaleCalculationMode.RCEIL
    return [
        ("MXFP8 E4M3, floor", ours(block_cast, fmt="e4m3", rule="floor", **mxfp8), mx(floor),
         ours(block_quantize, fmt="e4m3", rule="floor", **mxfp8), mx_round_trip(floor)),
        ("MXFP8 E4M3, floor_torchao", ours(block_cast, fmt="e4m3", rule="floor_torchao", **mxfp8),
         mx(floor), ours(block_quantize, fmt="e4m3", rule="floor_torchao", **mxfp8),
         mx_round_trip(floor)),
        ("MXFP8 E4M3, rceil", ours(block_cast, fmt="e4m3", rule="rceil", **mxfp8), mx(rceil),
         ours(block_quantize, fmt="e4m3", rule="rceil", **mxfp8), mx_round_trip(rceil)),
        ("NVFP4, tensor scale", ours(block_cast, fmt="e2m1", rule="nvfp4_torchao", **nvfp4),
         functools.partial(nvfp4_quantize, t, 16, per_tensor),
         ours(block_quantize, fmt="e2m1", rule="nvfp4_torchao", **nvfp4), nvfp4_round_trip),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-pin-malloc", action="store_true",
                        help="keep glibc's moving mmap threshold (timings vary widely)")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchao") is None:
        print("torch or torchao is not installed: nothing to compare against, skipped")
        return
    logging.disable(logging.WARNING)  # torchao logs the CUDA extensions it cannot load
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch
        import torchao
        cases = torchao_cases(make_input(args.n))
    torch.set_num_threads(args.threads)
    print(f"{args.n:,} float32 values, standard normal, blocks along the last of (n/1024, 1024); "
          f"{platform.processor() or platform.machine()}, NumPy {np.__version__}, "
          f"torch {torch.__version__} ({args.threads} thread(s)), torchao {torchao.__version__}; "
          f"CPU time, best of {args.repeat}; malloc mmap threshold "
          f"{os.environ.get('MALLOC_MMAP_THRESHOLD_', 'glibc default (moving)')}")
    print(f"{'recipe':28s} {'step':10s} {'lowprec M/s':>11s} {'torchao M/s':>11s} {'ratio':>7s}")
    for label, cast, ref_cast, round_trip, ref_round_trip in cases:
        for step, ours, ref in (("cast", cast, ref_cast), ("round trip", round_trip,
                                                           ref_round_trip)):
            t_ours, t_ref = best_time(ours, args.repeat), best_time(ref, args.repeat)
            print(f"{label:28s} {step:10s} {args.n / t_ours / 1e6:11.0f} "
                  f"{args.n / t_ref / 1e6:11.0f} {t_ref / t_ours:6.2f}x")


if __name__ == "__main__":
    main()
