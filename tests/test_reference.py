"""lowprec.reference: the exact scalar references stay independent of what they check."""
import ast
import math
from fractions import Fraction
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import lowprec
from lowprec import reference, tensorcore


def test_reference_imports_nothing_of_the_rounding_engine():
    tree = ast.parse(Path(reference.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert imported <= {"__future__", "math", "collections.abc", "fractions", "typing", "formats",
                        "tensorcore"}, imported


def test_round_exact_takes_a_mode_or_its_name_and_refuses_others():
    x = Fraction(1) + Fraction(1, 2**11)  # a tie between 1 and 1 + 2**-10 in FP16
    want = float(np.float16(float(x)))  # NumPy rounds ties to even: 1.0
    assert reference.round_exact(x, "fp16", lowprec.RoundingMode.NEAREST) == want == 1.0
    assert reference.round_exact(x, "fp16", "nearest_away") == 1 + 2.0**-10
    with pytest.raises(ValueError, match="unknown rounding mode 'nearst'.*nearest_away"):
        reference.round_exact(x, "fp16", "nearst")


def test_round_exact_agrees_with_ml_dtypes_on_a_saturating_fp8_edge():
    # 464 is halfway between 448 (E4M3's max, 0x7E, even) and 480: the tie goes to 448;
    # above it ml_dtypes gives NaN (E4M3 has no infinity), saturation gives 448
    for value in (464, 470):
        want = float(np.float64(value).astype(ml_dtypes.float8_e4m3fn))
        got = reference.round_exact(value, "e4m3")
        assert got == want or (math.isnan(got) and math.isnan(want))
    assert math.isnan(reference.round_exact(470, "e4m3"))
    assert reference.round_exact(470, "e4m3", overflow="saturate") == 448.0


def test_block_fma_scalar_stays_importable_from_tensorcore():
    assert tensorcore.block_fma_scalar is reference.block_fma_scalar
    with pytest.raises(ValueError, match="toward_zero' or 'nearest'"):
        reference._round_output(Fraction(1), lowprec.FP32, "up")
