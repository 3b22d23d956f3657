"""lowprec: a NumPy reference simulator of low-precision floating-point arithmetic.

Every value a mixed-precision training step would hold in FP16, BF16 or FP8 passes through
:func:`round`, which gives exactly the value the hardware format would hold.
"""
from . import _deprecation
from .formats import (BF16, E2M1, E2M3, E3M2, E4M3, E4M3FNUZ, E5M2, E5M2FNUZ, E8M0, FORMATS, FP16,
                      FP32, TF32, FloatFormat, as_format)
from .rounding import RoundingMode, round, round_with_bits
from .bits import (all_values, classify, decode, encode, from_ml_dtypes, next_down, next_up,
                   to_ml_dtypes, ulp)
from . import accumulate, arith, bounds, cdna, data, nn, observe, reference, scaling, tensorcore
from .accumulate import BLAS, FormatAccumulation, as_accumulator, dot, matmul, sum
from .nn.policy import POLICIES
from .tensorcore import TENSOR_CORES, TensorCoreModel

__version__ = "0.1.0"

__all__ = [
    "FloatFormat", "as_format", "FORMATS", "TENSOR_CORES", "POLICIES", "FP32", "TF32", "FP16",
    "BF16", "E4M3", "E5M2", "E4M3FNUZ", "E5M2FNUZ", "E3M2", "E2M3", "E2M1", "E8M0", "RoundingMode",
    "round", "round_with_bits", "encode", "decode", "to_ml_dtypes", "from_ml_dtypes",
    "all_values", "ulp", "next_up", "next_down", "classify", "arith", "accumulate", "matmul",
    "dot", "sum", "as_accumulator",
    "BLAS", "FormatAccumulation", "tensorcore", "TensorCoreModel", "reference", "nn", "observe",
    "scaling", "data", "bounds", "cdna",
]


def __getattr__(name: str):
    if name == "PRESETS":
        return _deprecation.renamed("lowprec.PRESETS", "lowprec.FORMATS (name -> FloatFormat)",
                                    tuple(FORMATS.values()))
    raise _deprecation.no_attribute(__name__, name)
