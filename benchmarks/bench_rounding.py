"""Throughput of lowprec.round against NumPy, ml_dtypes and gfloat on the same array, same run.

    python benchmarks/bench_rounding.py [--n 4000000] [--repeat 5]

The array: float32, uniform significands, exponents -30..+20, both signs (so every target sees
normal, subnormal, underflowing and overflowing values). Prints elements per second of each
side, the ratio, the project's goal for it, and the peak memory of one lowprec.round call
in units of the input's size (tracemalloc; the output itself counts as one).
"""
from __future__ import annotations

import argparse
import functools
import platform
import time
import tracemalloc

import ml_dtypes
import numpy as np

import lowprec


def make_input(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(1, 2, n) * np.exp2(rng.integers(-30, 21, n)) * rng.choice([-1.0, 1.0], n)
    return x.astype(np.float32)


def best_time(fn, repeat: int) -> float:
    fn()  # warm up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def peak_in_inputs(fn, nbytes: int) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / nbytes


def cast(dtype):
    def run(x):
        with np.errstate(all="ignore"):
            return x.astype(dtype)
    return run


def gfloat_round(fmt_name, mode="TiesToEven"):
    import gfloat
    from gfloat import formats
    info = {"fp16": formats.format_info_binary16, "e4m3": formats.format_info_ocp_e4m3}[fmt_name]
    if mode == "Stochastic":  # gfloat takes the random bits as an array: drawn inside the timing
        rng = np.random.default_rng(2)
        return lambda x: gfloat.round_ndarray(info, x, gfloat.RoundMode.Stochastic, sat=True,
                                              srbits=rng.integers(0, 2**16, x.shape), srnumbits=16)
    return lambda x: gfloat.round_ndarray(info, x, getattr(gfloat.RoundMode, mode), sat=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    x = make_input(args.n)
    seed = np.random.default_rng(1)

    def ours(fmt, mode="nearest"):
        rng = seed if mode == "stochastic" else None
        return lambda x: lowprec.round(x, fmt, mode, rng=rng)

    # (label, lowprec call, reference label, reference call, goal ratio)
    cases = [
        ("fp16 nearest", ours("fp16"), "numpy astype(float16)", cast(np.float16), 4.0),
        ("e4m3 nearest", ours("e4m3"), "ml_dtypes astype(float8_e4m3fn)",
         cast(ml_dtypes.float8_e4m3fn), 1.5),
        ("e5m2 nearest", ours("e5m2"), "ml_dtypes astype(float8_e5m2)",
         cast(ml_dtypes.float8_e5m2), 1.5),
        ("bf16 nearest", ours("bf16"), "ml_dtypes astype(bfloat16)",
         cast(ml_dtypes.bfloat16), 0.25),
        ("fp16 stochastic", ours("fp16", "stochastic"), "lowprec fp16 nearest", ours("fp16"), 0.5),
        ("bf16 stochastic", ours("bf16", "stochastic"), "lowprec bf16 nearest", ours("bf16"), 0.5),
        ("e4m3 stochastic", ours("e4m3", "stochastic"), "lowprec e4m3 nearest", ours("e4m3"), 0.5),
        ("e5m2 stochastic", ours("e5m2", "stochastic"), "lowprec e5m2 nearest", ours("e5m2"), 0.5),
        ("fp16 nearest", ours("fp16"), "gfloat round_ndarray(binary16)",
         gfloat_round("fp16"), 20.0),
        ("e4m3 nearest", ours("e4m3"), "gfloat round_ndarray(ocp_e4m3)",
         gfloat_round("e4m3"), 20.0),
        ("fp16 nearest_away", ours("fp16", "nearest_away"), "gfloat TiesToAway",
         gfloat_round("fp16", "TiesToAway"), 20.0),
        ("fp16 toward_zero", ours("fp16", "toward_zero"), "gfloat TowardZero",
         gfloat_round("fp16", "TowardZero"), 20.0),
        ("fp16 up", ours("fp16", "up"), "gfloat TowardPositive",
         gfloat_round("fp16", "TowardPositive"), 20.0),
        ("e4m3 down", ours("e4m3", "down"), "gfloat TowardNegative",
         gfloat_round("e4m3", "TowardNegative"), 20.0),
        ("fp16 stochastic", ours("fp16", "stochastic"), "gfloat Stochastic (16 bits)",
         gfloat_round("fp16", "Stochastic"),
         20.0),
        # The same values as float64: the goals are set on the float32 array; these
        # rows are for users who round float64 data (no goal, no verdict).
        ("fp16 nearest, float64 in", ours("fp16"), "gfloat round_ndarray, float64 in",
         gfloat_round("fp16"), None),
        ("fp16 toward_zero, float64 in", ours("fp16", "toward_zero"),
         "gfloat TowardZero, float64 in",
         gfloat_round("fp16", "TowardZero"), None),
        ("fp16 up, float64 in", ours("fp16", "up"), "gfloat TowardPositive, float64 in",
         gfloat_round("fp16", "TowardPositive"), None),
        ("fp16 stochastic, float64 in", ours("fp16", "stochastic"),
         "gfloat Stochastic (16 bits), float64 in",
         gfloat_round("fp16", "Stochastic"), None),
        ("fp16 stochastic, float64 in", ours("fp16", "stochastic"),
         "lowprec fp16 nearest, float64 in", ours("fp16"), None),
    ]
    print(f"{args.n:,} float32 elements, exponents -30..20; "
          f"{platform.processor() or platform.machine()}, "
          f"NumPy {np.__version__}, ml_dtypes {ml_dtypes.__version__}; best of {args.repeat}")
    print(f"{'lowprec':32s} {'M/s':>7s}   {'reference':40s} {'M/s':>7s} {'ratio':>7s} {'goal':>6s}")
    x64 = x.astype(np.float64)
    for label, fn, ref_label, ref, goal in cases:
        data = x64 if "float64 in" in label else x
        repeat = 2 if ref_label.startswith("gfloat") else args.repeat
        t_ours = best_time(functools.partial(fn, data), args.repeat)
        t_ref = best_time(functools.partial(ref, data), repeat)
        ratio = t_ref / t_ours
        verdict = ("      -" if goal is None
                   else f"{goal:5.2f}x {'ok' if ratio >= goal else 'BELOW GOAL'}")
        print(f"{label:32s} {args.n / t_ours / 1e6:7.0f}   {ref_label:40s} "
              f"{args.n / t_ref / 1e6:7.0f} {ratio:6.2f}x {verdict}")

    print("\npeak memory of one call, in units of the input's size (the output is one):")
    for fmt, mode in [("fp16", "nearest"), ("bf16", "nearest"), ("e4m3", "nearest"),
                      ("fp16", "stochastic"), ("bf16", "stochastic"), ("fp16", "toward_zero"),
                      ("fp16", "up"), ("fp16", "nearest_away")]:
        for data in (x, x64):
            # peak_in_inputs calls the lambda at once, in this iteration
            peak = peak_in_inputs(lambda: ours(fmt, mode)(data), data.nbytes)  # noqa: B023
            print(f"  {fmt} {mode:12s} {data.dtype}: {peak:.2f}")


if __name__ == "__main__":
    main()
