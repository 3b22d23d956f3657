"""Every one of the 2**32 float32 inputs, for every 8- and 16-bit target (marker ``exhaustive``).

* lowprec.round equals ml_dtypes (and NumPy's float16) on every float32 input, given as float32
  and as float64 (the nearest-even fast paths of both dtypes);
* E8M0 equals ml_dtypes' rounding (ties: see versions.py), except a quirk of ml_dtypes < 0.7;
* each fast path equals the general path, the specification, bit for bit: nearest for TF32
  (no outside twin), and the other modes for a format per fast path, dtype and special-value
  style; stochastic rounding with both paths fed the same random words.

The inputs go in chunks of 2**20 to ``LOWPREC_TEST_WORKERS`` processes (default: 2), each using
well under 1 GB. Runtime on a 2-core AMD EPYC: see the report printed at the end of each test.
"""
import os
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context

import ml_dtypes
import numpy as np
import pytest
from versions import ML_DTYPES_E8M0_SUBNORMAL_QUIRK, ML_DTYPES_E8M0_TIES

import lowprec
from lowprec import _fastpaths, rounding
from lowprec._bitwords import RandomSource
from lowprec.formats import as_format
from lowprec.rounding import RoundingMode

pytestmark = pytest.mark.exhaustive

TWINS = {
    "fp16": np.float16, "bf16": ml_dtypes.bfloat16, "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2, "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "e5m2fnuz": ml_dtypes.float8_e5m2fnuz, "e3m2": ml_dtypes.float6_e3m2fn,
    "e2m3": ml_dtypes.float6_e2m3fn, "e2m1": ml_dtypes.float4_e2m1fn,
    "e8m0": ml_dtypes.float8_e8m0fnu,
}
CHUNK = 1 << 20  # temporaries of at most 8 MB: glibc reuses them instead of mapping fresh pages
CHUNKS_PER_TASK = 64
GENERAL_CHUNK = 1 << 16  # the general path is called directly: keep its temporaries small
WORKERS = int(os.environ.get("LOWPREC_TEST_WORKERS", "2"))


def float32_chunk(index):
    start = index * CHUNK
    return np.arange(start, start + CHUNK, dtype=np.uint32).view(np.float32)


def mismatches(ours, theirs, x):
    """Count and a few examples of results that differ (bit patterns; any NaN equals any NaN)."""
    ours, theirs = np.asarray(ours), np.asarray(theirs, ours.dtype)
    uint = np.uint32 if ours.dtype == np.float32 else np.uint64
    bad = (ours.view(uint) != theirs.view(uint)) & ~(np.isnan(ours) & np.isnan(theirs))
    i = np.flatnonzero(bad)[:3]
    return int(bad.sum()), [(float(x[j]), float(ours[j]), float(theirs[j])) for j in i]


def check_twin(name, x):
    """lowprec.round vs the twin, for float32 and float64 input; E8M0 with its quirk set aside."""
    fmt = as_format(name)
    if not fmt.has_nan:
        x = x[~np.isnan(x)]  # lowprec refuses NaN there (tested in test_rounding)
    with np.errstate(all="ignore"):
        theirs = x.astype(TWINS[name]).astype(np.float32)
    mode = ML_DTYPES_E8M0_TIES if name == "e8m0" else "nearest"
    if name == "e8m0" and ML_DTYPES_E8M0_SUBNORMAL_QUIRK:
        # ml_dtypes < 0.7: float32 subnormals in (2**-127, 1.5 * 2**-127] go to 2**-126
        quirk = (x > 2.0**-127) & (x <= 1.5 * 2.0**-127)
        assert np.all(theirs[quirk] == 2.0**-126)
        x, theirs = x[~quirk], theirs[~quirk]
    count32, examples32 = mismatches(lowprec.round(x, fmt, mode), theirs, x)
    with np.errstate(invalid="ignore"):  # (signalling NaNs warn as they widen)
        x64, theirs64 = x.astype(np.float64), theirs.astype(np.float64)
    count64, examples64 = mismatches(lowprec.round(x64, fmt, mode), theirs64, x)
    return count32 + count64, examples32 + examples64


def check_fast_equals_general(name, mode, x, seed):
    """The fast path and the general path on the same inputs and the same random words."""
    fmt = as_format(name)
    if not fmt.has_nan:
        x = x[~np.isnan(x)]
    policy = fmt.default_overflow
    path, work = _fastpaths.choose(x.dtype, fmt, mode)
    words = np.random.default_rng(seed).integers(0, 2**64 - 1, x.size, dtype=np.uint64,
                                                 endpoint=True)
    fast = np.empty(x.shape, work)
    general = np.empty(x.shape, np.float64)
    for s in range(0, x.size, GENERAL_CHUNK):
        part, w = x[s:s + GENERAL_CHUNK], words[s:s + GENERAL_CHUNK]
        random = (RandomSource.from_words(w, np.random.default_rng([seed, s]), None)
                  if mode == "stochastic" else None)
        dest = fast[s:s + GENERAL_CHUNK]
        flagged = path(part.astype(work), dest, fmt, mode, policy, random)
        if flagged is not None:  # settled by the exact rule, with the tie words drawn first
            rounding.settle(part[flagged], dest, flagged, w[flagged], fmt, policy,
                            np.random.default_rng([seed, s]), None)
        # the same tie words as the fast path
        general[s:s + GENERAL_CHUNK] = rounding._round_float64(
            part.astype(np.float64), fmt, RoundingMode(mode), policy, w,
            np.random.default_rng([seed, s]), None)
    return mismatches(fast.astype(np.float32), general.astype(np.float32), x)


def run_task(kind, name, mode_value, first_chunk):
    count, examples = 0, []
    for index in range(first_chunk, first_chunk + CHUNKS_PER_TASK):
        x = float32_chunk(index)
        if kind == "twin":
            c, e = check_twin(name, x)
        else:
            c, e = check_fast_equals_general(name, mode_value, x, seed=index)
        count, examples = count + c, (examples + e)[:5]
    return count, examples


# glibc hands freed temporaries back to the OS and faults them in again on the next chunk
# (a third of the CPU time went to the kernel); the workers keep their memory instead.
WORKER_ENV = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 28)}


@contextmanager
def worker_environment():
    saved = {key: os.environ.get(key) for key in WORKER_ENV}
    os.environ.update(WORKER_ENV)  # read by each spawned worker as it starts
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def run_everywhere(kind, name, mode_value="nearest"):
    """Run one check over all 2**32 inputs in worker processes; report the time taken."""
    started = time.perf_counter()
    firsts = range(0, (1 << 32) // CHUNK, CHUNKS_PER_TASK)
    spawn = get_context("spawn")
    with worker_environment(), ProcessPoolExecutor(WORKERS, mp_context=spawn) as pool:
        results = list(pool.map(run_task, [kind] * len(firsts), [name] * len(firsts),
                                [mode_value] * len(firsts), firsts))
    count = sum(c for c, _ in results)
    examples = [e for _, es in results for e in es][:5]
    print(f"\n{kind} {name} {mode_value}: 2**32 inputs in {time.perf_counter() - started:.0f} s "
          f"with {WORKERS} workers, {count} mismatches")
    assert count == 0, f"{count} mismatches, e.g. (x, ours, theirs): {examples}"


@pytest.mark.parametrize("name", sorted(TWINS))
def test_every_float32_equals_twin(name):
    run_everywhere("twin", name)


@pytest.mark.parametrize("name, mode", [
    ("tf32", "nearest"),  # nearest_same_range (BF16 is checked against ml_dtypes above)
    ("fp16", "stochastic"),  # stochastic_by_pattern, scaled, flagged elements settled
    ("e4m3", "stochastic"),  # the same, fn specials, 20 discarded bits > 16 random bits
    ("bf16", "stochastic"),  # stochastic_by_pattern unscaled: 16 random bits always decide
    ("fp16", "up"),  # directed_by_pattern, scaled, the policy's overflow
    ("e5m2", "toward_zero"),  # directed_by_pattern, overflow stopping at max
    ("bf16", "down"),  # directed_by_pattern unscaled
    ("e2m1", "nearest_away"),  # directed_by_pattern, saturating MX element
    ("e4m3", "odd"),  # by_scaling, the last bit's parity
    ("bf16", "odd"),  # by_scaling in float64 for float32 data
])
def test_every_float32_fast_path_equals_general_path(name, mode):
    assert _fastpaths.choose(np.float32, as_format(name), mode)[0] is not None
    run_everywhere("general", name, mode)
