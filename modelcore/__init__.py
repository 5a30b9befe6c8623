"""Runwright's training and evaluation engine.

Importing ``modelcore`` loads nothing heavy: the web process imports
``modelcore.config`` and ``modelcore.events`` and must never pull in torch.
Heavy entry points are resolved lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_checkpoint": "modelcore.checkpoint",
    "generate": "modelcore.generate",
    "export_checkpoint": "modelcore.export",
    "launch_command": "modelcore.launch",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'modelcore' has no attribute {name!r}")
