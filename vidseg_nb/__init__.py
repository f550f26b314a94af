"""vidseg_nb: zero-shot video semantic segmentation from a pre-trained Stable Diffusion model (VidSeg).

The stages, one module each: ``backbone`` (SD 2.x, Euler loop), ``probe`` (hooks), ``features`` (F~),
``context`` (scene context model Omega), ``refine`` (CBR), ``modulation`` (D_l, D~_l), ``pipeline``
(VideoSegmenter), ``metrics``, ``datasets``, ``video``, ``viz``, ``synthetic``. Importing the package is
cheap: heavy modules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SegConfig": "config",
    "preset": "config",
    "load_backbone": "loading",
    "Backbone": "backbone",
    "extract_features": "features",
    "pca_view": "features",
    "xt_slice": "features",
    "SceneContextModel": "context",
    "coarse_batch": "context",
    "modulate": "modulation",
    "VideoSegmenter": "pipeline",
    "SegmentationResult": "pipeline",
    "read_video": "video",
    "write_video": "video",
    "make_clip": "synthetic",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        mod = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(mod, name)
    raise AttributeError(f"module 'vidseg_nb' has no attribute {name!r}")
