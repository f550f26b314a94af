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
    "example_clips",
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


EXAMPLES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("toy_three_shapes.mp4", dict(seed=9101, n_frames=16, size=256, n_objects=3, speed=3.0)),
    ("toy_two_shapes.mp4", dict(seed=9102, n_frames=16, size=256, n_objects=2, speed=4.0)),
    ("toy_four_shapes.mp4", dict(seed=9103, n_frames=16, size=256, n_objects=4, speed=2.5)),
)
"""The demo's example clips on the toy model: toy-world clips (16 frames, 256 px, the demo's case of
docs/perf.md) whose seeds are neither training (:data:`.world.TRAIN_SEEDS`) nor evaluation seeds."""


def example_clips(directory: str | Path) -> list[Path]:
    """Write the toy-world example clips (:data:`EXAMPLES`) into ``directory`` if missing; their paths."""
    from ..synthetic import save_clip

    directory = Path(directory)
    paths = []
    for name, kwargs in EXAMPLES:
        p = directory / name
        if not p.is_file() or p.stat().st_size == 0:
            kw = dict(kwargs)
            save_clip(make_toy_clip(kw.pop("seed"), **kw), p)
        paths.append(p)
    return paths


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
