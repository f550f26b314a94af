"""Old import path of the evaluation (kept for existing imports, e.g. notebook 04): a re-export of
:mod:`vidseg_nb.evaluation` (protocol, store, runner, ablation). New code imports from there. The
``vidseg evaluate`` / ``vidseg ablate`` commands live in :mod:`vidseg_nb.cli`; nothing here imports it.
"""

from __future__ import annotations

from .evaluation import *  # noqa: F403
from .evaluation import __all__ as _all
from .evaluation.store import json_value as _json_value  # noqa: F401 - old private name (benchmarks)

__all__ = list(_all)
