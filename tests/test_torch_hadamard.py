"""The random Hadamard transform against PyTorch: the Hadamard matrix built with torch.kron (the
Sylvester construction), the transform as a float64 torch matmul on tiles of 16, the way
Transformer Engine's reference applies its RHT matrix (``x.reshape(-1, 16) @ (diag(s) @ H / 4)``,
transformer_engine/jax/quantize/hadamard.py ``apply_rht``)."""
import numpy as np
import pytest

from lowprec.scaling.hadamard import TE_WGRAD_SIGNS, hadamard_matrix, inverse_rht, rht

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")


def torch_hadamard(d):
    h = torch.ones(1, 1, dtype=torch.float64)
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    while h.shape[0] < d:
        h = torch.kron(h2, h)
    return h


@pytest.mark.parametrize("d", [2, 4, 16, 32])
def test_matrix_matches_torch_kron(d):
    np.testing.assert_array_equal(hadamard_matrix(d), torch_hadamard(d).numpy())


def test_transform_matches_torch_matmul():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 128))
    s = torch.from_numpy(np.array(TE_WGRAD_SIGNS))
    m = torch.diag(s) @ torch_hadamard(16) / 4
    tx = torch.from_numpy(x)
    expected = (tx.reshape(-1, 16) @ m).reshape(x.shape).numpy()
    np.testing.assert_allclose(rht(x, TE_WGRAD_SIGNS), expected, rtol=0, atol=1e-14)
    back = (tx.reshape(-1, 16) @ m.T).reshape(x.shape).numpy()
    np.testing.assert_allclose(inverse_rht(x, TE_WGRAD_SIGNS), back, rtol=0, atol=1e-14)
    # in FP32 with exact +-1/4 entries, a float32 torch matmul agrees to FP32 rounding
    y32 = (tx.float().reshape(-1, 16) @ m.float()).reshape(x.shape).numpy()
    np.testing.assert_allclose(rht(x.astype(np.float32), TE_WGRAD_SIGNS, dtype="fp32"), y32,
                               rtol=0, atol=4e-6)
