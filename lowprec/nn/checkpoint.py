"""Checkpoints: save a run mid-way, resume it bit-identically, refuse anything else.

A checkpoint is one .npz file (no pickles) holding the stored weights (the master copy, or
the pure low-precision weights; the compute copy is re-rounded from them), the optimizer
state, the Kahan compensation, the loss scaler's ``state_dict()``, every FP8 recipe state's
``state_dict()`` (scale, scale_inv, amax history), the stochastic-rounding RNG state, the
History so far, the run's fingerprint (policy, model, config, data hash) and a sha256 over
all of it. Loading checks the digest (corrupt file) and the fingerprint (a
different run) and raises :class:`CheckpointError` naming what is wrong.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from ..observe import History

FORMAT_VERSION = 2  # 2: FP8 recipe states, scaler records and culprit kinds in the History


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


def _host(a) -> np.ndarray:
    return np.asarray(a.get() if hasattr(a, "get") else a)


def save_checkpoint(path, trainer, history: History, fingerprint: dict):
    """Write the trainer's state and the history to ``path`` (atomically: temp file, rename)."""
    arrays = {}
    for l, layer in enumerate(trainer.stored):
        for name, value in layer.items():
            arrays[f"stored.{l}.{name}"] = _host(value)
            for buf, state in trainer.opt_state[l][name].items():
                arrays[f"optimizer.{l}.{name}.{buf}"] = _host(state)
            if trainer.compensation is not None:
                arrays[f"kahan.{l}.{name}"] = _host(trainer.compensation[l][name])
    for (l, point), state in trainer.fp8_states.items():
        for key, value in state.state_dict().items():  # floats and lists of float32 values
            arrays[f"fp8.{l}.{point}.{key}"] = np.asarray(value, np.float64)
    for name, value in history.to_arrays().items():
        arrays[f"history.{name}"] = value
    meta = {"version": FORMAT_VERSION, "fingerprint": fingerprint, "steps_done": trainer.steps_done,
            "updates_done": trainer.updates_done,
            "rng": trainer.rounding_rng.bit_generator.state,
            "scaler": None if trainer.scaler is None else trainer.scaler.state_dict(),
            "fp8_states": [[l, point] for l, point in trainer.fp8_states]}
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
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if "meta" not in arrays or "sha256" not in arrays:
        raise CheckpointError(f"{path}: not a lowprec checkpoint (no meta/sha256 entries)")
    saved_digest = str(arrays.pop("sha256"))
    if _digest(arrays) != saved_digest:
        raise CheckpointError(f"{path}: corrupt checkpoint (sha256 of its contents does not match)")
    return arrays


def _differences(saved, now, prefix="") -> list:
    """Paths where two JSON-like values differ, e.g. ['policy.weight: saved ... now ...']."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(saved) | set(now)):
            out += _differences(saved.get(key), now.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == now else [f"{prefix.rstrip('.')}: saved {saved!r}, now {now!r}"]


def load_checkpoint(path, trainer, fingerprint: dict) -> History:
    """Restore ``trainer`` from ``path``; return the saved History. Raises CheckpointError."""
    arrays = _read(path)
    meta = json.loads(str(arrays["meta"]))
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')}, "
                              f"this lowprec reads version {FORMAT_VERSION}")
    diffs = _differences(meta["fingerprint"], json.loads(_to_json(fingerprint)))
    if diffs:
        raise CheckpointError(f"{path} comes from a different run; resuming would not continue it:\n  "
                              + "\n  ".join(diffs))
    if (meta["scaler"] is None) != (trainer.scaler is None):
        raise CheckpointError(f"{path}: saved {'without' if meta['scaler'] is None else 'with'} "
                              "a loss scaler, but this run is the opposite")
    xp = trainer.xp
    for l, layer in enumerate(trainer.stored):
        for name in layer:
            layer[name] = xp.asarray(arrays[f"stored.{l}.{name}"])
            state = trainer.opt_state[l][name]
            for buf in state:
                state[buf] = xp.asarray(arrays[f"optimizer.{l}.{name}.{buf}"])
            if trainer.compensation is not None:
                trainer.compensation[l][name] = xp.asarray(arrays[f"kahan.{l}.{name}"])
    trainer.steps_done = int(meta["steps_done"])
    trainer.updates_done = int(meta["updates_done"])
    trainer.rounding_rng.bit_generator.state = meta["rng"]
    if trainer.scaler is not None:
        trainer.scaler.load_state_dict(meta["scaler"])
    for l, point in meta["fp8_states"]:
        prefix = f"fp8.{l}.{point}."
        state = trainer.caster.recipes.state(point, int(l))
        state.load_state_dict({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
    prefix = "history."
    return History.from_arrays({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
