"""Built-in datasets, each made from an explicit ``np.random.Generator`` (same seed, same data).

* :func:`spirals` -- points on interleaved spiral arms, one class per arm (2 features).
* :func:`teacher` -- regression onto a fixed random "teacher" network's outputs.
* :func:`digits` -- 1797 real 8x8 images of handwritten digits, shipped with lowprec.
* :func:`load_mnist` -- MNIST from a file you already have (no download).

The digits are the test part of "Optical Recognition of Handwritten Digits" (E. Alpaydin and
C. Kaynak, 1998; UCI Machine Learning Repository, https://doi.org/10.24432/C50P49), licensed
CC BY 4.0; the same 1797 images scikit-learn ships as ``load_digits``. lowprec keeps them in
``digits8x8.npz`` (uint8 pixels 0..16, labels 0..9, and this attribution in ``source``).
"""
from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np

__all__ = ["Dataset", "TASKS", "spirals", "teacher", "digits", "load_mnist"]

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class Dataset:
    """A train/test split. Arrays are read-only."""

    name: str  # short description, e.g. "spirals(3 classes, 600 points)"
    x_train: np.ndarray  # (n_train, features) float32
    y_train: np.ndarray  # (n_train,) int64 class labels, or (n_train, outputs) float32 targets
    x_test: np.ndarray  # (n_test, features) float32
    y_test: np.ndarray  # like y_train
    task: str  # "classification" or "regression"

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for name in ("x_train", "y_train", "x_test", "y_test"):
            a = np.asarray(getattr(self, name)).view()  # a read-only view; no copy of big data
            a.setflags(write=False)
            object.__setattr__(self, name, a)
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise ValueError("x and y of a split must have the same number of rows")

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_outputs(self) -> int:
        """Number of classes (classification) or target dimensions (regression)."""
        if self.task == "classification":
            return int(max(self.y_train.max(), self.y_test.max())) + 1
        return self.y_train.shape[1]

    def fingerprint(self) -> str:
        """sha256 of the arrays: identifies the data in checkpoints."""
        h = hashlib.sha256(self.task.encode())
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a np.random.Generator (e.g. np.random.default_rng(0)), "
                        f"got {type(rng).__name__}")


def _split(name, x, y, task, rng, test_fraction):
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = rng.permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    return Dataset(name, x[train], y[train], x[test], y[test], task)


def spirals(rng: np.random.Generator, points_per_class: int = 300, classes: int = 3,
            noise: float = 0.2, turns: float = 0.75, test_fraction: float = 0.25) -> Dataset:
    """Interleaved spiral arms in the plane; the class is the arm. Not linearly separable."""
    _check_rng(rng)
    radius = np.tile(np.linspace(0.05, 1.0, points_per_class), classes)  # (n,)
    label = np.repeat(np.arange(classes), points_per_class)  # (n,)
    angle = (2 * np.pi * (turns * radius + label / classes)
             + noise * rng.standard_normal(radius.size))
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32)
    return _split(f"spirals({classes} classes, {x.shape[0]} points)", x, label.astype(np.int64),
                  "classification", rng, test_fraction)


def teacher(rng: np.random.Generator, n: int = 2000, features: int = 16, hidden: int = 32,
            outputs: int = 4, noise: float = 0.01, test_fraction: float = 0.25,
            target_scale: float = 1.0) -> Dataset:
    """Regression: targets are a random one-hidden-layer tanh network's outputs, plus noise.

    A student MLP can fit them exactly in principle, so the remaining loss shows precision.
    ``target_scale`` multiplies the targets: small targets mean small losses and gradients,
    the regime where FP16 and FP8 gradients underflow without scaling.
    """
    _check_rng(rng)
    x = rng.standard_normal((n, features))
    w1 = rng.standard_normal((features, hidden)) / np.sqrt(features)
    w2 = rng.standard_normal((hidden, outputs)) / np.sqrt(hidden)
    if not np.isfinite(target_scale) or target_scale <= 0:
        raise ValueError(f"target_scale must be a positive finite number, got {target_scale!r}")
    y = target_scale * (np.tanh(x @ w1) @ w2 + noise * rng.standard_normal((n, outputs)))
    name = f"teacher({features}-{hidden}-{outputs}, {n} points" + (
        f", targets x {target_scale:g})" if target_scale != 1.0 else ")")
    return _split(name, x.astype(np.float32),
                  y.astype(np.float32), "regression", rng, test_fraction)


def digits(rng: np.random.Generator, test_fraction: float = 0.25) -> Dataset:
    """The 1797 8x8 handwritten digits (pixels scaled to [0, 1], 64 features, 10 classes)."""
    _check_rng(rng)
    with resources.files("lowprec").joinpath("digits8x8.npz").open("rb") as f:
        with np.load(f, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    x = images.reshape(len(images), 64).astype(np.float32) / np.float32(16)
    return _split("digits(8x8, 1797 images)", x, labels.astype(np.int64), "classification", rng,
                  test_fraction)


def _read_idx(path) -> np.ndarray:
    """An IDX file (MNIST's own format: magic, dims, big-endian sizes, uint8 data), maybe
    gzipped."""
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, file holds {data.size} bytes of data")
    return data.reshape(dims)


_MNIST_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def load_mnist(path: str | os.PathLike) -> Dataset:
    """MNIST from a local copy: a Keras-style ``mnist.npz`` (x_train, y_train, x_test, y_test)
    or a directory with the four original IDX files (optionally ``.gz``). Pixels scaled to
    [0, 1]."""
    path = os.fspath(path)
    if os.path.isdir(path):
        arrays = []
        for stem in _MNIST_IDX:
            candidates = [os.path.join(path, stem + ext) for ext in ("", ".gz")]
            found = [c for c in candidates if os.path.exists(c)]
            if not found:
                raise FileNotFoundError(f"{path}: no {stem}[.gz] (need {', '.join(_MNIST_IDX)})")
            arrays.append(_read_idx(found[0]))
        x_train, y_train, x_test, y_test = arrays
    else:
        with np.load(path, allow_pickle=False) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise ValueError(f"{path}: missing arrays {sorted(missing)}")
            x_train, y_train, x_test, y_test = (f[k] for k in ("x_train", "y_train", "x_test",
                                                                "y_test"))

    def flat(images):
        return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
    return Dataset(f"mnist({len(x_train)}+{len(x_test)})", flat(x_train), y_train.astype(np.int64),
                   flat(x_test), y_test.astype(np.int64), "classification")
