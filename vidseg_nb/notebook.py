"""The teaching notebooks' shared set-up in one call: ``from vidseg_nb.notebook import setup; nb = setup()``.

:func:`setup` finds the data folder (``$VIDSEG_DATA``, else ``../shared/data`` beside the repository),
loads the backbone (``$VIDSEG_MODEL``; ``tiny`` in CI), prints where it runs and, for the random tiny
model, the note that its pictures and numbers mean nothing, and picks the clip: a sample clip of the
data folder when it is there (DAVIS 2016 ``blackswan`` or CamVid ``0016E5``), else a synthetic clip
with exact labels. No Jupyter imports: it prints, and returns a :class:`Notebook`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .backbone import Backbone
from .datasets import CamVidDataset, DavisDataset
from .loading import load_backbone
from .pipeline import device_info
from .synthetic import make_clip
from .toy import EVAL_SEEDS, TOY_NOTE, is_toy, make_toy_clip

NOTEBOOK_MODEL_ENV = "VIDSEG_NOTEBOOK_MODEL"
"""Environment variable: the notebooks' model, before ``$VIDSEG_MODEL`` (CI: ``toy``)."""
DATA_ENV = "VIDSEG_DATA"
"""Environment variable: the folder holding ``davis2016/`` and ``camvid/`` (default ``../shared/data``)."""
RANDOM_MODEL_NOTE = (
    "NOTE: this is the random tiny model (VIDSEG_MODEL=tiny). It exercises the code, but its features, "
    "maps and numbers are NOT meaningful. Set VIDSEG_MODEL to SD 2.1 weights for real results."
)
CAMVID_CLASSES = [
    "sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian", "bicyclist",
]  # fmt: skip

Dataset = Literal["davis", "camvid"]


@dataclass
class NotebookClip:
    """The clip a notebook works on: frames (N, H, W, 3) uint8, ground truth (N, H, W), its classes."""

    name: str
    frames: np.ndarray
    labels: np.ndarray
    num_classes: int
    ignore_index: int
    class_names: list[str] = field(default_factory=list)
    synthetic: bool = False


@dataclass
class Notebook:
    """What :func:`setup` found: the repository, data folder, backbone and clip."""

    repo: Path
    data: Path
    backbone: Backbone
    clip: NotebookClip

    @property
    def tiny(self) -> bool:
        """The backbone is a small CPU model, the random tiny one or the toy one (smaller settings)."""
        return self.backbone.is_random or is_toy(self.backbone)

    @property
    def caveat(self) -> str:
        """What the numbers of this backbone mean, in one line ("" for real weights)."""
        if self.backbone.is_random:
            return "(tiny random model: these numbers are NOT meaningful)"
        if is_toy(self.backbone):
            return "(toy model on a toy-world clip: meaningful for this toy world only, not for real video)"
        return ""


def repo_root() -> Path:
    """The checkout this ``vidseg_nb`` comes from (the folder above the package)."""
    return Path(__file__).resolve().parents[1]


def data_dir(repo: Path | None = None) -> Path:
    """``$VIDSEG_DATA``, else ``<repo>/../shared/data`` (it need not exist)."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else (repo or repo_root()).parent / "shared" / "data"


def pick_clip(
    data: Path,
    n_frames: int,
    dataset: Dataset = "davis",
    *,
    synthetic_size: tuple[int, int] = (256, 448),
    seed: int = 0,
    toy: bool = False,
) -> NotebookClip:
    """The first ``n_frames`` of DAVIS 2016 ``blackswan`` / CamVid ``0016E5`` under ``data`` when present,
    else a synthetic clip of ``synthetic_size`` (H, W) with 3 moving objects and exact labels. ``toy``: always
    a held-out toy-world clip (256 x 256, 3 named objects), the world the toy model knows."""
    if toy:
        t = make_toy_clip(EVAL_SEEDS[0], n_frames, 256, 3, speed=3.0)
        names = ["background"] + [o.phrase for o in t.objects]
        return NotebookClip("toy-world clip", t.frames, t.labels, t.n_labels, 255, names, synthetic=True)
    if dataset == "davis" and (data / "davis2016").is_dir():
        seq = "blackswan"
        s = DavisDataset(data / "davis2016", sequences=seq)[seq]
        return NotebookClip(
            f"DAVIS 2016 {seq}", s.load_frames(n_frames), s.load_labels(n_frames), s.num_classes,
            s.ignore_index, ["background", seq],
        )  # fmt: skip
    if dataset == "camvid" and (data / "camvid").is_dir():
        s = CamVidDataset(data / "camvid", sequence="0016E5")["0016E5"]
        return NotebookClip(
            "CamVid 0016E5", s.load_frames(n_frames), s.load_labels(n_frames), s.num_classes,
            s.ignore_index, list(CAMVID_CLASSES),
        )  # fmt: skip
    h, w = synthetic_size
    syn = make_clip(n_frames=n_frames, height=h, width=w, n_objects=3, seed=seed)
    names = ["background"] + [f"object {i}" for i in range(1, syn.n_labels)]
    return NotebookClip("synthetic clip", syn.frames, syn.labels, syn.n_labels, 255, names, synthetic=True)


def setup(
    frames: tuple[int, int] = (8, 24),
    dataset: Dataset = "davis",
    *,
    model: str | None = None,
    synthetic_size: tuple[int, int] = (256, 448),
    verbose: bool = True,
) -> Notebook:
    """Load the backbone (``model`` or ``$VIDSEG_MODEL``), print it (and the random-model note), pick the
    clip: ``frames[0]`` frames with the tiny model, ``frames[1]`` with a real one.

    The tiny model runs single-threaded: its tensors are too small for CPU threads to pay off (on a busy
    2-core box they cost 10x).
    """
    repo = repo_root()
    data = data_dir(repo)
    t0 = time.perf_counter()
    backbone = load_backbone(model or os.environ.get(NOTEBOOK_MODEL_ENV) or None)
    toy = is_toy(backbone)
    if backbone.is_random or toy:
        torch.set_num_threads(1)
    if verbose:
        took = time.perf_counter() - t0
        print(f"model {backbone.source!r} on {device_info(backbone)}, loaded in {took:.1f} s")
        if backbone.is_random:
            print(RANDOM_MODEL_NOTE)
        if toy:
            print(TOY_NOTE)
    n = frames[0] if backbone.is_random or toy else frames[1]
    clip = pick_clip(data, n, dataset, synthetic_size=synthetic_size, toy=toy)
    if verbose:
        f = clip.frames
        print(f"clip: {clip.name}, {len(f)} frames of {f.shape[1]}x{f.shape[2]}, {clip.num_classes} classes")
    return Notebook(repo=repo, data=data, backbone=backbone, clip=clip)


__all__ = ["Notebook", "NotebookClip", "data_dir", "pick_clip", "repo_root", "setup"]
