"""Label pictures: palette PNGs of label ids (:func:`write_label_pngs`, :class:`LabelPNGWriter`,
:func:`read_label_png`) and label colours over frames (:func:`overlay_frames`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import palette
from ..errors import VideoError
from .clip import _frames_array
from .reading import _open_image
from .sizing import resize_labels
from .writing import _tmp_path


def _palette_bytes() -> list[int]:
    return palette.PALETTE.astype(np.uint8).reshape(-1).tolist()


def _check_label_ids(a: np.ndarray) -> None:
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        if not np.array_equal(a, np.round(a)):
            raise VideoError(f"label maps must hold integer ids; got non-integer values of type {a.dtype}.")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise VideoError(
            f"label ids must be in 0..255 to fit a palette PNG; got ids {int(a.min())}..{int(a.max())}. "
            "Map ignore/negative ids to a valid id first."
        )


def _save_label_png(path: Path, lab: np.ndarray, pal: list[int]) -> None:
    im = Image.fromarray(lab.astype(np.uint8), mode="L").convert("P")
    im.putpalette(pal)
    tmp = _tmp_path(path)
    try:  # a killed run never leaves a half-written PNG under the final name
        im.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_label_pngs(
    directory: str | os.PathLike, labels: Any, names: Sequence[str] | None = None, *, start: int = 0
) -> list[Path]:
    """One palette PNG (mode "P", colours ``palette.PALETTE``) per label map; pixel values are the ids.

    ``labels``: ``(N, h, w)`` (or one ``(h, w)``) integer ids in 0..255. ``names``: file names per frame
    (``.png`` appended if missing); default ``{start:05d}.png, {start+1:05d}.png, ...`` (``start``: index
    of the first map, for a clip written batch by batch). Returns the written paths.
    """
    a = np.asarray(labels)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise VideoError(f"label maps must be (N, h, w) or (h, w); got shape {a.shape}.")
    _check_label_ids(a)
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if names is None:
        names = [f"{start + i:05d}.png" for i in range(len(a))]
    if len(names) != len(a):
        raise VideoError(f"got {len(names)} names for {len(a)} label maps.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pal = _palette_bytes()
    out = []
    for lab, nm in zip(a, names):
        p = directory / (nm if str(nm).lower().endswith(".png") else f"{nm}.png")
        _save_label_png(p, lab, pal)
        out.append(p)
    return out


class LabelPNGWriter:
    """Label PNGs ``00000.png, 00001.png, ...`` written batch by batch: ``append(labels)`` writes maps
    ``(b, h, w)`` as frames ``n_written .. n_written + b - 1``. ``start``: index of the first frame (a
    resumed run passes the number of frames done, so no frame is written twice). Each file appears
    complete or not at all (written under a temporary name, then renamed)."""

    def __init__(self, directory: str | os.PathLike, *, start: int = 0) -> None:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.directory = Path(directory)
        self.start = self.n_written = int(start)

    def append(self, labels: Any) -> list[Path]:
        """Write ``(b, h, w)`` (or one ``(h, w)``) label maps; returns their paths."""
        paths = write_label_pngs(self.directory, labels, start=self.n_written)
        self.n_written += len(paths)
        return paths

    @staticmethod
    def frames_done(directory: str | os.PathLike) -> int:
        """How many leading frames ``00000.png, 00001.png, ...`` exist in ``directory`` (where a resumed
        run starts)."""
        d = Path(directory)
        n = 0
        while (d / f"{n:05d}.png").is_file():
            n += 1
        return n

    def __enter__(self) -> LabelPNGWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """The raw ids ``(h, w)`` int64 of a label PNG (palette indices of mode "P", or gray values)."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path.name}: no such label file ({path}).")
    with _open_image(path, path.name) as im:
        mode = im.mode
        if mode in ("P", "L", "1") or mode.startswith("I"):
            return np.asarray(im).astype(np.int64)
    raise VideoError(
        f"{path.name}: a {mode} picture, not a label PNG of ids (palette or grayscale). "
        "Colour-coded label images need a colour -> id table (see datasets.py)."
    )


def overlay_frames(frames: Any, labels: Any, alpha: float = 0.5) -> np.ndarray:
    """Palette colours of ``labels`` blended over ``frames`` (``(N, H, W, 3)`` uint8 or one frame).

    Labels of another size are first resized (nearest) to the frames.
    """
    f = _frames_array(frames)
    lab = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    if lab.ndim != f.ndim - 1:
        raise ValueError(f"overlay_frames: labels {lab.shape} do not match frames {f.shape}")
    if lab.shape[-2:] != f.shape[-3:-1]:
        lab = resize_labels(lab, f.shape[-3:-1])
    return palette.overlay(f, lab, alpha)
