"""What the installed versions of other libraries do, for tests that state facts about them.

A test about another library must hold for every version pyproject.toml allows, so a quirk
that a release fixed is asserted where the installed version has it and its absence elsewhere.
"""
import re

import ml_dtypes


def version_tuple(text: str) -> tuple[int, ...]:
    """(0, 7, 0) from "0.7.0"; a suffix such as "rc1" or ".dev0" is dropped."""
    return tuple(int(n) for n in re.match(r"\d+(?:\.\d+)*", text).group(0).split(".")[:3])


ML_DTYPES = version_tuple(ml_dtypes.__version__)

# ml_dtypes before 0.7 cast float64 arrays through float32 and so round twice
# (1 + 2**-8 + 2**-30 -> bfloat16 gives 1.0, correct 1.0078125); 0.7.0 rounds once
# (measured with ml_dtypes 0.5.0, 0.6.0 and 0.7.0).
ML_DTYPES_ROUNDS_FLOAT64_TWICE = ML_DTYPES < (0, 7)

# ml_dtypes before 0.7 send float32 subnormals in (2**-127, 1.5 * 2**-127] to 2**-126 in
# float8_e8m0fnu, although 2**-127 is nearer (or, at the tie, has the even code); 0.7.0 gives
# 2**-127 below the tie.
ML_DTYPES_E8M0_SUBNORMAL_QUIRK = ML_DTYPES < (0, 7)

# How ml_dtypes' float8_e8m0fnu cast breaks a tie between two powers of two (3.0: 2 or 4?), in
# lowprec's words: 0.5.0 ties to the even exponent field (2.0, as lowprec's "nearest" and
# gfloat); 0.5.1 and later round ties up (4.0, lowprec's "nearest_away").
ML_DTYPES_E8M0_TIES = "nearest" if ML_DTYPES < (0, 5, 1) else "nearest_away"
