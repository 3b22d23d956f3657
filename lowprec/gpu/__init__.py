"""Optional GPU backend: the same arithmetic on real tensor cores through CuPy.

Nothing here imports CuPy at module import time; :func:`require_cupy` does, with a message that
says what is missing. Install with ``pip install -e '.[gpu]'`` from a clone of the repository
(CuPy for CUDA 12) on a machine with an NVIDIA GPU. ``python -m lowprec gpu-check`` runs the
whole comparison; :mod:`lowprec.gpu.arch` says which parts apply to which compute capability,
and :mod:`lowprec.gpu.hwsr` checks the device's stochastic rounding (``cvt.rs``).
"""
from __future__ import annotations

from types import ModuleType


class GpuUnavailable(RuntimeError):
    """CuPy is not installed, or it finds no usable CUDA device."""


def require_cupy() -> ModuleType:
    """Import and return cupy, or raise GpuUnavailable saying why it cannot be used."""
    try:
        import cupy
    except ImportError as exc:
        raise GpuUnavailable(
            "lowprec.gpu needs CuPy: pip install -e '.[gpu]' in a clone of lowprec (or a "
            f"cupy-cudaXXx wheel matching your CUDA driver). Import failed with: {exc}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken: CuPy raises its own error types
        raise GpuUnavailable(f"CuPy is installed but no CUDA device can be used: {exc}") from None
    if count == 0:
        raise GpuUnavailable("CuPy is installed but there is no CUDA device on this machine")
    return cupy


def gpu_status() -> tuple[bool, str]:
    """(usable, reason): whether a GPU can be used here and, if not, why."""
    try:
        cupy = require_cupy()
    except GpuUnavailable as exc:
        return False, str(exc)
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return True, f"{name} (compute capability {props['major']}.{props['minor']})"
