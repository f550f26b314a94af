"""One fixed palette mapping label ids to colours, used by every picture, video and PNG.

Label id ``i`` always gets ``PALETTE[i % 256]``, so a cluster keeps its colour over the whole video and
across notebooks, the demo and the CLI. Id 0 is black-free (the palette has no pure black) so that an
overlay never hides a region.
"""

from __future__ import annotations

import numpy as np


def _make_palette(n: int = 256) -> np.ndarray:
    # 20 hand-picked, well-separated colours (tab20-like order), then golden-ratio hues.
    base = np.array(
        [
            [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
            [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
            [174, 199, 232], [255, 187, 120], [152, 223, 138], [255, 152, 150], [197, 176, 213],
            [196, 156, 148], [247, 182, 210], [199, 199, 199], [219, 219, 141], [158, 218, 229],
        ],
        dtype=np.uint8,
    )  # fmt: skip
    out = np.zeros((n, 3), dtype=np.uint8)
    out[: len(base)] = base
    import colorsys

    for i in range(len(base), n):
        h = (i * 0.6180339887) % 1.0
        s = 0.55 + 0.4 * ((i * 7) % 5) / 4
        v = 0.65 + 0.3 * ((i * 3) % 4) / 3
        out[i] = np.round(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255).astype(np.uint8)
    return out


PALETTE: np.ndarray = _make_palette()
"""(256, 3) uint8 colours; label id i -> PALETTE[i % 256]."""


def colorize(labels: np.ndarray) -> np.ndarray:
    """Label ids (..., h, w) int -> RGB (..., h, w, 3) uint8 with the fixed palette; negative ids are black."""
    labels = np.asarray(labels).astype(np.int64, copy=False)
    rgb = PALETTE[np.mod(labels, len(PALETTE))]
    if (labels < 0).any():
        rgb = rgb.copy()
        rgb[labels < 0] = 0
    return rgb


def overlay(frames: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend palette colours of ``labels`` (N, H, W) over ``frames`` (N, H, W, 3) uint8 with weight ``alpha``."""
    frames = np.asarray(frames)
    labels = np.asarray(labels)
    if frames.shape[:-1] != labels.shape:
        raise ValueError(f"overlay: frames {frames.shape} and labels {labels.shape} differ in size")
    col = colorize(labels).astype(np.float32)
    out = (1 - alpha) * frames.astype(np.float32) + alpha * col
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
