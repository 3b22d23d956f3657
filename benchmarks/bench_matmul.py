"""Speed of lowprec.matmul against np.matmul, measured in the same run.

    python benchmarks/bench_matmul.py [size]

Prints, for a size x size x size product of FP16 inputs (default 256):
  * FP32 accumulation rounded at every step (sequential), against np.matmul on float32
    (goal: within 50x) and against a scalar reference loop, one element at a time, timed on a
    few elements and extrapolated to all of them (goal: at least 100x faster);
  * the H100 FP16 tensor-core block-FMA model against np.matmul (goal: within 100x);
  * the largest temporary either simulation allocates, as a multiple of the output's size
    (goal: a few times, never size**3).
Each time is the best of several runs; the machine's other load only ever adds time.
"""
from __future__ import annotations

import sys
import time
import tracemalloc

import numpy as np

import lowprec
from lowprec import accumulate, tensorcore


def best_time(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def scalar_reference(a, b, i, j):
    """One output element the plain way: acc = fp32(acc + a*b), one product at a time (the
    float64 product of FP16 values is exact; the float64 sum rounded to FP32 is the correctly
    rounded FP32 sum, see lowprec.accumulate._accumulate)."""
    acc = np.float32(0)
    for k in range(a.shape[1]):
        acc = np.float32(float(acc) + float(a[i, k]) * float(b[k, j]))
    return acc


def peak_temporary(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main(size=256):
    rng = np.random.default_rng(0)
    a = lowprec.round(rng.standard_normal((size, size)), "fp16")
    b = lowprec.round(rng.standard_normal((size, size)), "fp16")
    a32, b32 = a.astype(np.float32), b.astype(np.float32)

    numpy_time = best_time(lambda: np.matmul(a32, b32), 200)
    fp32_time = best_time(lambda: accumulate.matmul(a, b, inputs="fp16", accumulate="fp32"), 10)
    tc_time = best_time(lambda: tensorcore.matmul(a, b, tensorcore.H100_FP16), 7)
    few = 16
    start = time.perf_counter()
    for e in range(few):
        scalar_reference(a, b, e, e)
    scalar_time = (time.perf_counter() - start) / few * size * size

    got = accumulate.matmul(a, b, inputs="fp16", accumulate="fp32")
    assert all(got[e, e] == scalar_reference(a, b, e, e) for e in range(few))

    output_bytes = size * size * 8
    fp32_peak = peak_temporary(lambda: accumulate.matmul(a, b, inputs="fp16", accumulate="fp32"))
    tc_peak = peak_temporary(lambda: tensorcore.matmul(a, b, tensorcore.H100_FP16))

    print(f"{size}x{size}x{size} matmul, FP16 inputs")
    print(f"  np.matmul float32                 {numpy_time * 1e3:9.2f} ms")
    print(f"  lowprec.matmul, FP32 sequential   {fp32_time * 1e3:9.2f} ms   "
          f"{fp32_time / numpy_time:6.1f}x np.matmul (goal <= 50x)")
    print(f"  scalar reference (extrapolated)   {scalar_time * 1e3:9.0f} ms   "
          f"{scalar_time / fp32_time:6.0f}x slower than lowprec.matmul (goal >= 100x)")
    print(f"  tensorcore.matmul, H100_FP16      {tc_time * 1e3:9.2f} ms   "
          f"{tc_time / numpy_time:6.1f}x np.matmul (goal <= 100x)")
    print(f"  peak memory / output size: FP32 path {fp32_peak / output_bytes:.1f}, "
          f"tensor-core path {tc_peak / output_bytes:.1f} (an m x k x n array would be {size})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 256)
