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
    "TOY_NOTE",
    "is_toy",
    "ToyClip",
    "ToyObject",
    "caption",
    "make_toy_clip",
    "manifest",
    "model_path",
    "vocabulary",
]


TOY_NOTE = (
    "NOTE: this is the toy model (VIDSEG_MODEL=toy): the tiny SD 2.x layout that vidseg_nb trained itself, "
    "for 40 minutes on 2 CPU cores, on synthetic clips of coloured, textured shapes. On toy-world clips its "
    "features, maps and numbers mean something (see docs/toy.md for how much); on real video they do not: "
    "use Stable Diffusion 2.1 weights for that."
)


def is_toy(backbone: Any) -> bool:
    """``backbone`` is a toy model: loaded as ``"toy"``, or from a folder whose manifest says so."""
    src = str(getattr(backbone, "source", ""))
    if src == TOY:
        return True
    man = Path(src) / "MANIFEST.json"
    return man.is_file() and "toy model" in man.read_text()[:400]


def model_path() -> Path:
    """The shipped toy model's diffusers folder (inside the package)."""
    return Path(__file__).resolve().parent / "model"


def manifest(folder: str | Path | None = None) -> dict[str, Any]:
    """The toy model's ``MANIFEST.json`` (file SHA-256s, command, commit, training facts, quality)."""
    return json.loads((Path(folder or model_path()) / "MANIFEST.json").read_text())
