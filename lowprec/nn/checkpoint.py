"""Checkpoints: save a run mid-way, resume it bit-identically, refuse anything else.

A checkpoint is one .npz file (no pickles) holding the trainer's ``state_dict()`` (the stored
weights -- the master copy, or the pure low-precision weights; the compute copy is re-rounded
from them --, the optimizer state, the Kahan compensation, the loss scaler's and every FP8
recipe state's ``state_dict()``, the stochastic-rounding RNG state, the step counters), the
History so far, the run's fingerprint (policy, model, config, data hash) and a sha256 over
all of it. The state's arrays are entries of their own (``state.stored.0.weight``, ...); the
rest of it is JSON. Loading checks the digest (corrupt file) and the fingerprint (a different
run), then hands the state to ``trainer.load_state_dict``, and raises :class:`CheckpointError`
naming what is wrong. The helpers that copy and check a state's arrays live here too.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from ..observe import History

if TYPE_CHECKING:  # train.py imports this module: the name only, for the hints
    from .train import Trainer

# 3: the trainer's state_dict; 2: FP8 recipe states, culprit kinds in the History
FORMAT_VERSION = 3
_ARRAY = "__array__"  # {_ARRAY: entry name} stands for an array in the JSON part of a state


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: unreadable, corrupt, or from a different run."""


def _to_json(value) -> str:
    def plain(v):
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
        raise TypeError(f"cannot store {type(v).__name__} in a checkpoint")
    return json.dumps(value, sort_keys=True, default=plain)


def _digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}:".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _split(tree, arrays: dict, name: str):
    """``tree`` (dicts and lists of arrays and plain values) with each array moved into
    ``arrays`` under a name from its path and replaced by ``{_ARRAY: name}``."""
    if isinstance(tree, np.ndarray):
        arrays[name] = tree
        return {_ARRAY: name}
    if isinstance(tree, dict):
        return {k: _split(v, arrays, f"{name}.{k}") for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_split(v, arrays, f"{name}.{i}") for i, v in enumerate(tree)]
    return tree


def _join(tree, arrays: dict):
    """The inverse of :func:`_split`."""
    if isinstance(tree, dict):
        if set(tree) == {_ARRAY}:
            return arrays[tree[_ARRAY]]
        return {k: _join(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, arrays) for v in tree]
    return tree


def save_checkpoint(path: str | os.PathLike, trainer: Trainer, history: History,
                    fingerprint: dict) -> None:
    """Write the trainer's state and the history to ``path`` (atomically: temp file, rename)."""
    arrays = {}
    state = _split(trainer.state_dict(), arrays, "state")
    for name, value in history.to_arrays().items():
        arrays[f"history.{name}"] = value
    meta = {"version": FORMAT_VERSION, "fingerprint": fingerprint, "trainer": state}
    arrays["meta"] = np.array(_to_json(meta))
    arrays["sha256"] = np.array(_digest(arrays))
    path = os.fspath(path)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _read(path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except Exception as err:  # zip, zlib and format errors all mean the same: unreadable
        raise CheckpointError(f"{path}: not a readable checkpoint "
                              f"({type(err).__name__}: {err})") from None
    if "meta" not in arrays or "sha256" not in arrays:
        raise CheckpointError(f"{path}: not a lowprec checkpoint (no meta/sha256 entries)")
    saved_digest = str(arrays.pop("sha256"))
    if _digest(arrays) != saved_digest:
        raise CheckpointError(f"{path}: corrupt checkpoint (sha256 of its contents does not match)")
    return arrays


# --- what a state holds and must match (Trainer.state_dict uses these) -----------------------
# per-layer lists of dicts of arrays, as a Trainer holds them
Tree = list | dict | np.ndarray | None


def host_copy(tree: Tree) -> Tree:
    """A copy of ``tree`` (lists and dicts of arrays, or None) with host NumPy arrays."""
    if tree is None:
        return None
    if isinstance(tree, list):
        return [host_copy(t) for t in tree]
    if isinstance(tree, dict):
        return {k: host_copy(v) for k, v in tree.items()}
    return np.array(tree.get() if hasattr(tree, "get") else tree)  # a copy, also of a CuPy array


def device_copy(tree: Tree, xp: ModuleType) -> Tree:
    """A copy of ``tree`` with ``xp`` arrays (the trainer's own, not the caller's)."""
    if tree is None:
        return None
    if isinstance(tree, (list, tuple)):
        return [device_copy(t, xp) for t in tree]
    if isinstance(tree, Mapping):
        return {k: device_copy(v, xp) for k, v in tree.items()}
    return xp.array(tree)


def check_like(saved: object, held: Tree, where: str) -> None:
    """Raise ValueError unless ``saved`` has the structure, shapes and dtypes of ``held``."""
    if held is None or saved is None:
        if (held is None) != (saved is None):
            raise ValueError(f"state[{where!r}] is {'None' if saved is None else 'set'}, "
                             f"this trainer {'keeps none' if held is None else 'keeps one'}")
    elif isinstance(held, list):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(held):
            raise ValueError(f"state[{where!r}] must hold {len(held)} layers, got {saved!r:.80}")
        for i, (s, h) in enumerate(zip(saved, held)):
            check_like(s, h, f"{where}.{i}")
    elif isinstance(held, dict):
        if not isinstance(saved, Mapping) or set(saved) != set(held):
            got = sorted(saved) if isinstance(saved, Mapping) else type(saved).__name__
            raise ValueError(f"state[{where!r}] must hold {sorted(held)}, got {got}")
        for k in held:
            check_like(saved[k], held[k], f"{where}.{k}")
    elif getattr(saved, "shape", None) != held.shape or getattr(saved, "dtype", None) != held.dtype:
        raise ValueError(f"state[{where!r}] is {getattr(saved, 'dtype', type(saved).__name__)} "
                         f"{getattr(saved, 'shape', '')}, this trainer holds "
                         f"{held.dtype} {held.shape}")


def fingerprint_differences(saved: object, now: object, prefix: str = "") -> list[str]:
    """Paths where two JSON-like values differ, e.g. ['policy.weight: saved ... now ...']."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(saved) | set(now)):
            out += fingerprint_differences(saved.get(key), now.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == now else [f"{prefix.rstrip('.')}: saved {saved!r}, now {now!r}"]


def load_checkpoint(path: str | os.PathLike, trainer: Trainer, fingerprint: dict) -> History:
    """Restore ``trainer`` from ``path``; return the saved History. Raises CheckpointError."""
    arrays = _read(path)
    meta = json.loads(str(arrays["meta"]))
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')}, "
                              f"this lowprec reads version {FORMAT_VERSION}")
    diffs = fingerprint_differences(meta["fingerprint"], json.loads(_to_json(fingerprint)))
    if diffs:
        raise CheckpointError(f"{path} comes from a different run; resuming would not "
                              "continue it:\n  " + "\n  ".join(diffs))
    try:
        trainer.load_state_dict(_join(meta["trainer"], arrays))
    except KeyError as missing:
        raise CheckpointError(f"{path}: not a complete checkpoint "
                              f"(entry {missing} is missing)") from None
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}") from None
    prefix = "history."
    return History.from_arrays({k[len(prefix):]: v for k, v in arrays.items()
                                if k.startswith(prefix)})
