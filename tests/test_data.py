"""Built-in datasets: made from an explicit Generator, read-only, and the shipped digits equal
to scikit-learn's copy of the same UCI data."""
import gzip

import numpy as np
import pytest

from lowprec import data


@pytest.mark.parametrize("make", [data.spirals, data.teacher, data.digits])
def test_same_generator_seed_same_data(make):
    a, b = make(np.random.default_rng(3)), make(np.random.default_rng(3))
    c = make(np.random.default_rng(4))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.x_train.dtype == np.float32 and not a.x_train.flags.writeable
    assert len(a.x_train) + len(a.x_test) == len(c.x_train) + len(c.x_test)


def test_shapes_and_tasks():
    s = data.spirals(np.random.default_rng(0), points_per_class=100, classes=4)
    assert s.n_features == 2 and s.n_outputs == 4 and s.task == "classification"
    assert len(s.x_train) + len(s.x_test) == 400
    t = data.teacher(np.random.default_rng(0), n=100, features=5, outputs=2)
    assert t.n_features == 5 and t.n_outputs == 2 and t.task == "regression"
    d = data.digits(np.random.default_rng(0))
    assert d.n_features == 64 and d.n_outputs == 10 and len(d.x_train) + len(d.x_test) == 1797
    assert d.x_train.min() == 0 and d.x_train.max() == 1


def test_generator_is_required():
    with pytest.raises(TypeError, match="np.random.Generator"):
        data.spirals(0)
    with pytest.raises(ValueError, match="test_fraction"):
        data.spirals(np.random.default_rng(0), test_fraction=1.5)


def test_shipped_digits_equal_scikit_learns():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    from importlib import resources
    reference = sklearn_datasets.load_digits()
    with resources.files("lowprec").joinpath("digits8x8.npz").open("rb") as f, np.load(f) as npz:
        assert np.array_equal(npz["images"].reshape(-1, 64), reference.data)
        assert np.array_equal(npz["labels"], reference.target)
        assert "CC BY 4.0" in str(npz["source"])


def _write_idx(path, array, compress):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_from_idx_files(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (6, 28, 28)), "t10k": rng.integers(0, 256, (4, 28, 28))}
    labels = {"train": rng.integers(0, 10, 6), "t10k": rng.integers(0, 10, 4)}
    ext = ".gz" if compress else ""
    for part in ("train", "t10k"):
        _write_idx(tmp_path / f"{part}-images-idx3-ubyte{ext}", images[part], compress)
        _write_idx(tmp_path / f"{part}-labels-idx1-ubyte{ext}", labels[part], compress)
    mnist = data.load_mnist(tmp_path)
    assert mnist.x_train.shape == (6, 784) and mnist.x_test.shape == (4, 784)
    np.testing.assert_array_equal(mnist.x_train * 255, images["train"].reshape(6, 784))
    np.testing.assert_array_equal(mnist.y_test, labels["t10k"])


def test_load_mnist_from_npz_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), "y_train": np.arange(5),
              "x_test": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), "y_test": np.arange(2)}
    np.savez(tmp_path / "mnist.npz", **arrays)
    mnist = data.load_mnist(tmp_path / "mnist.npz")
    assert mnist.x_test.shape == (2, 784) and list(mnist.y_train) == [0, 1, 2, 3, 4]
    np.savez(tmp_path / "bad.npz", x_train=arrays["x_train"])
    with pytest.raises(ValueError, match="missing arrays"):
        data.load_mnist(tmp_path / "bad.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="train-images"):
        data.load_mnist(tmp_path / "empty")
