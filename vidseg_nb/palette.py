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
    rgb = PALETTE.take(labels & (len(PALETTE) - 1), axis=0)  # i mod 256 (two's complement), a new array
    negative = labels < 0
    if negative.any():
        rgb[negative] = 0
    return rgb


def _blend(frames: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """round((1 - alpha) x frame + alpha x colour) in float32 (numpy's round: halves to even), clipped to
    0..255, uint8: the definition of :func:`overlay`."""
    out = (1 - alpha) * frames.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _blend_table(alpha: float) -> np.ndarray:
    """(65536,) uint8: entry 256 f + c is :func:`_blend` of frame value f and colour value c, so a table
    look-up gives the float formula's bytes exactly (the same float operations on the same values)."""
    v = np.arange(256, dtype=np.uint8)
    return _blend(v[:, None], v[None, :], alpha).ravel()


def overlay(frames: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend palette colours of ``labels`` (N, H, W) over ``frames`` (N, H, W, 3) uint8 with weight ``alpha``:
    round((1 - alpha) x frame + alpha x colour) per channel in float32, halves rounded to even, clipped to
    0..255. uint8 frames go through a 256 x 256 table of that formula (identical bytes, a few times faster)."""
    frames = np.asarray(frames)
    labels = np.asarray(labels)
    if frames.shape[:-1] != labels.shape:
        raise ValueError(f"overlay: frames {frames.shape} and labels {labels.shape} differ in size")
    col = colorize(labels)
    if frames.dtype != np.uint8:
        return _blend(frames, col, alpha)
    index = frames.astype(np.uint16) << 8
    index |= col
    return _blend_table(alpha).take(index)
