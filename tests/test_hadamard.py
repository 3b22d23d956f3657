"""The random Hadamard transform against references written here.

References: the Hadamard matrix from its closed form ``H[i, j] = (-1)**popcount(i & j)`` and from
the Kronecker construction (NumPy, no scipy); orthogonality checked in exact rational arithmetic
(fractions.Fraction); the transform against a NumPy matrix product with the matrix built as
Transformer Engine builds it (``diag(s) @ H_16 * 0.25``,
transformer_engine/pytorch/tensor/nvfp4_tensor.py ``get_rht_matrix``); the working-dtype path
against a scalar twin that rounds each exact Fraction result with lowprec.reference.round_exact.
"""
from fractions import Fraction

import numpy as np
import pytest

from lowprec.reference import round_exact
from lowprec.scaling.hadamard import (TE_WGRAD_SIGNS, hadamard_matrix, inverse_rht,
                                      random_signs, rht)

EPS64 = np.finfo(np.float64).eps


def popcount_hadamard(d):
    i = np.arange(d)
    bits = np.bitwise_and(i[:, None], i[None, :])
    parity = np.array([[bin(int(v)).count("1") % 2 for v in row] for row in bits])
    return np.where(parity == 1, -1.0, 1.0)


def kron_hadamard(d):
    h = np.ones((1, 1))
    while h.shape[0] < d:
        h = np.kron(np.array([[1.0, 1.0], [1.0, -1.0]]), h)
    return h


def tile_matmul(x, m):
    """x @ m on tiles of len(m) along the last axis (NumPy's float64 matmul)."""
    d = m.shape[0]
    return (x.reshape(x.shape[:-1] + (-1, d)) @ m).reshape(x.shape)


# --- the matrix ---------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2, 4, 8, 16, 32, 64])
def test_hadamard_matrix_is_sylvester(d):
    h = hadamard_matrix(d)
    assert h.shape == (d, d) and h.dtype == np.float64
    np.testing.assert_array_equal(h, popcount_hadamard(d))
    np.testing.assert_array_equal(h, kron_hadamard(d))
    np.testing.assert_array_equal(h @ h.T, d * np.eye(d))  # integers: exact in float64


@pytest.mark.parametrize("d", [2, 4, 8, 16])
def test_rht_matrix_orthogonal_in_exact_arithmetic(d):
    # M = diag(s) H / sqrt(d); M M^T = diag(s) H H^T diag(s) / d = I. Checked as
    # (diag(s) H)(diag(s) H)^T = d I in Fractions, and M M^T = I itself where sqrt(d) is rational.
    s = [Fraction(int(v)) for v in random_signs(d, seed=d)]
    h = [[Fraction(int(v)) for v in row] for row in popcount_hadamard(d)]
    sh = [[s[i] * h[i][j] for j in range(d)] for i in range(d)]
    gram = [[sum(sh[i][k] * sh[j][k] for k in range(d)) for j in range(d)] for i in range(d)]
    assert gram == [[Fraction(d) if i == j else Fraction(0) for j in range(d)] for i in range(d)]
    if d in (4, 16):
        root = Fraction(2) if d == 4 else Fraction(4)
        m = [[v / root for v in row] for row in sh]
        mmt = [[sum(m[i][k] * m[j][k] for k in range(d)) for j in range(d)] for i in range(d)]
        assert mmt == [[Fraction(int(i == j)) for j in range(d)] for i in range(d)]


# --- the float64 transform ----------------------------------------------------------------------
def test_rht_matches_te_matrix_product():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 64))
    m = np.diag(TE_WGRAD_SIGNS) @ popcount_hadamard(16) * 0.25  # TE's get_rht_matrix, float64
    np.testing.assert_allclose(rht(x, TE_WGRAD_SIGNS), tile_matmul(x, m), rtol=0,
                               atol=16 * EPS64 * np.abs(x).max())
    np.testing.assert_allclose(inverse_rht(x, TE_WGRAD_SIGNS), tile_matmul(x, m.T), rtol=0,
                               atol=16 * EPS64 * np.abs(x).max())


def test_rht_exact_on_integers_against_fractions():
    # Small integers: every butterfly sum is exact in float64, so the result must equal the
    # exact rational transform bit for bit.
    rng = np.random.default_rng(1)
    s = random_signs(16, seed=5)
    x = rng.integers(-1000, 1000, size=(3, 32)).astype(np.float64)
    h = popcount_hadamard(16)
    y = rht(x, s)
    for r in range(3):
        for tile in range(2):
            xt = [Fraction(int(v)) for v in x[r, 16 * tile:16 * tile + 16]]
            for j in range(16):
                exact = sum(xt[i] * int(s[i]) * int(h[i, j]) for i in range(16)) / 4
                assert y[r, 16 * tile + j] == float(exact)


@pytest.mark.parametrize("d", [2, 4, 8, 16, 32])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_inverse_recovers_input_to_an_ulp(d, axis):
    rng = np.random.default_rng(d)
    x = rng.standard_normal((64, 64, 2)) * np.exp(rng.uniform(-5, 5, (64, 64, 2)))
    if axis == -1:
        x = x.reshape(64, 128)
    s = random_signs(d, seed=3)
    x_before = x.copy()
    z = inverse_rht(rht(x, s, axis=axis), s, axis=axis)
    np.testing.assert_array_equal(x, x_before)  # input not modified
    # error a few float64 ulps of the tile's largest value: log2(d) butterfly stages each way,
    # plus the rounded 1/sqrt(d) when d is not a power of 4 (measured: at most 2.3 eps)
    tiles = np.moveaxis(np.abs(x), axis, -1)
    tile_max = np.repeat(tiles.reshape(tiles.shape[:-1] + (-1, d)).max(-1), d, -1)
    err = np.moveaxis(np.abs(z - x), axis, -1).reshape(tile_max.shape)
    assert np.all(err <= (np.log2(d) + 2) * EPS64 * tile_max)
    assert np.max(err / tile_max) > 0 or d <= 2  # rounding errors exist: the bound is not vacuous


def test_norm_preserved_per_tile():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((100, 48))
    y = rht(x, random_signs(16, seed=1))
    nx = np.linalg.norm(x.reshape(100, 3, 16), axis=-1)
    ny = np.linalg.norm(y.reshape(100, 3, 16), axis=-1)
    np.testing.assert_allclose(ny, nx, rtol=8 * EPS64)


def test_gemm_invariance():
    # Transforming both operands along K leaves the product unchanged: (A M)(B M)^T = A B^T.
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((8, 64)), rng.standard_normal((5, 64))
    s = random_signs(16, seed=7)
    np.testing.assert_allclose(rht(a, s) @ rht(b, s).T, a @ b.T, rtol=0, atol=1e-12)


def test_rht_spreads_an_outlier():
    s = TE_WGRAD_SIGNS
    # One spike: M's row k has all entries +-1/4, so the tile becomes perfectly flat.
    spike = np.zeros(16)
    spike[5] = 100.0
    np.testing.assert_array_equal(np.abs(rht(spike, s)), np.full(16, 25.0))
    # Gaussian tiles with one outlier each: the block amax/rms ratio (crest factor) drops from
    # near its ceiling sqrt(16) = 4 to close to that of a Gaussian tile.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2000, 16))
    x[np.arange(2000), rng.integers(0, 16, 2000)] = 50.0 * rng.choice([-1, 1], 2000)

    def crest(t):
        return np.abs(t).max(-1) / np.sqrt((t**2).mean(-1))

    before, after = crest(x).mean(), crest(rht(x, s)).mean()
    assert before > 3.8 and after < 1.5, (before, after)


def test_non_finite_values_propagate():
    x = np.zeros(16)
    x[3] = np.inf
    y = rht(x, TE_WGRAD_SIGNS)
    assert np.all(np.isinf(y))
    x[4] = np.nan
    assert np.all(np.isnan(rht(x, TE_WGRAD_SIGNS)))


# --- the working dtype --------------------------------------------------------------------------
def sequential_reference(x_tile, m, fmt):
    """Scalar twin of the working-dtype path: exact products and sums, each rounded by
    lowprec.reference.round_exact, in index order."""
    d = len(x_tile)
    xr = [round_exact(Fraction(float(v)), fmt) for v in x_tile]
    mr = [[round_exact(Fraction(float(v)), fmt) for v in row] for row in m]
    out = []
    for j in range(d):
        acc = round_exact(Fraction(xr[0]) * Fraction(mr[0][j]), fmt)
        for i in range(1, d):
            prod = round_exact(Fraction(xr[i]) * Fraction(mr[i][j]), fmt)
            acc = round_exact(Fraction(acc) + Fraction(prod), fmt)
        out.append(acc)
    return out


@pytest.mark.parametrize("fmt", ["fp32", "bf16", "fp16", "e4m3"])
@pytest.mark.parametrize("d", [8, 16])
def test_working_dtype_matches_scalar_twin(fmt, d):
    rng = np.random.default_rng(d)
    spread = 4 if fmt == "e4m3" else 12  # binades of input magnitude; no sum may overflow
    x = (rng.standard_normal((3, 2 * d)) * np.exp2(rng.integers(-spread, spread, (3, 2 * d)))
         ).astype(np.float32)
    s = random_signs(d, seed=11)
    m = np.diag(s) @ popcount_hadamard(d) / np.sqrt(d)
    for inverse in (False, True):
        fn = inverse_rht if inverse else rht
        y = fn(x, s, dtype=fmt)
        assert y.dtype == np.float32
        mm = m.T if inverse else m
        for r in range(3):
            for t in range(2):
                ref = sequential_reference(x[r, t * d:(t + 1) * d], mm, fmt)
                np.testing.assert_array_equal(y[r, t * d:(t + 1) * d], np.float32(ref))


def test_working_dtype_close_to_float64_and_fp32_rounds():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 64)).astype(np.float32)
    s = random_signs(16, seed=2)
    exact = rht(x, s)
    y32 = rht(x, s, dtype="fp32")
    y16 = rht(x, s, dtype="bf16")
    err32, err16 = np.abs(y32 - exact).max(), np.abs(y16 - exact).max()
    assert 0 < err32 < 1e-5  # a few FP32 ulps; nonzero: the path does round
    assert 1e-3 < err16 < 0.1  # BF16 (8-bit significand) rounding of each sum
    assert not np.array_equal(y16, y32)


# --- random signs ---------------------------------------------------------------------------------
def test_random_signs():
    s = random_signs(1024, seed=0)
    assert s.dtype == np.float64 and set(np.unique(s)) == {-1.0, 1.0}
    assert 400 < (s > 0).sum() < 624  # fair coin, 7 sigma
    np.testing.assert_array_equal(random_signs(16, seed=3), random_signs(16, seed=3))
    assert not np.array_equal(random_signs(64, seed=3), random_signs(64, seed=4))
    rng = np.random.default_rng(9)
    first, second = random_signs(32, rng), random_signs(32, rng)
    assert not np.array_equal(first, second)  # the generator's state advances
    assert random_signs().shape == (16,)


def test_te_signs():
    assert TE_WGRAD_SIGNS.shape == (16,) and not TE_WGRAD_SIGNS.flags.writeable
    assert set(np.unique(TE_WGRAD_SIGNS)) == {-1.0, 1.0}


# --- errors ---------------------------------------------------------------------------------------
def test_errors():
    s = random_signs(16)
    with pytest.raises(ValueError, match="multiple of the Hadamard size"):
        rht(np.zeros((4, 24)), s)
    with pytest.raises(ValueError, match="multiple of the Hadamard size"):
        inverse_rht(np.zeros((24, 16)), s, axis=0)
    with pytest.raises(ValueError, match="power of two"):
        rht(np.zeros(12), np.ones(12))
    with pytest.raises(ValueError, match="power of two"):
        hadamard_matrix(12)
    with pytest.raises(ValueError, match="power of two"):
        random_signs(0)
    with pytest.raises(TypeError, match="int"):
        hadamard_matrix(16.0)
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        rht(np.zeros(16), np.r_[np.ones(15), 0.5])
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        rht(np.zeros(16), np.r_[np.ones(15), np.nan])
    with pytest.raises(ValueError, match="1-D"):
        rht(np.zeros(16), np.ones((4, 4)))
    with pytest.raises(ValueError, match="out of range"):
        rht(np.zeros((16, 16)), s, axis=2)
    with pytest.raises(ValueError, match="at least one dimension"):
        rht(np.float64(1.0), s)
    with pytest.raises(TypeError):
        rht(np.zeros(16, complex), s)
    with pytest.raises(TypeError, match="seed"):
        random_signs(16, seed=1.5)
    with pytest.raises(ValueError, match="unknown|format"):
        rht(np.zeros(16), s, dtype="fp17")
