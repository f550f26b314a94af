"""The toy world and the toy model: a tiny SD 2.x-layout model the project trains on its own synthetic
clips (:mod:`.world`), so that offline pictures and quality tests mean something.

``load_backbone("toy")`` loads the shipped folder (:func:`model_path`); ``vidseg train-toy`` makes a new
one (:func:`.train.train_toy`); :mod:`.quality` measures it on the held-out clips.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..backbone import TOY
from .world import EVAL_SEEDS, ToyClip, ToyObject, caption, make_toy_clip, vocabulary

__all__ = [
    "EVAL_SEEDS",
    "TOY",
    "ToyClip",
    "ToyObject",
    "caption",
    "make_toy_clip",
    "manifest",
    "model_path",
    "vocabulary",
]


def model_path() -> Path:
    """The shipped toy model's diffusers folder (inside the package)."""
    return Path(__file__).resolve().parent / "model"


def manifest(folder: str | Path | None = None) -> dict[str, Any]:
    """The toy model's ``MANIFEST.json`` (file SHA-256s, command, commit, training facts, quality)."""
    return json.loads((Path(folder or model_path()) / "MANIFEST.json").read_text())
