"""Old public names kept for one release: each module's ``__getattr__`` (PEP 562) hands them out
with a DeprecationWarning that names the replacement."""
from __future__ import annotations

import warnings
from typing import Any


def renamed(old: str, new: str, value: Any) -> Any:
    """Warn that ``old`` is deprecated in favour of ``new``; return ``value``."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new}",
                  DeprecationWarning, stacklevel=3)  # the caller of the module's __getattr__
    return value


def no_attribute(module: str, name: str) -> AttributeError:
    return AttributeError(f"module {module!r} has no attribute {name!r}")
