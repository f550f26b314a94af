"""Pictures of every intermediate: arrays for the demo (uint8 RGB) and matplotlib figures for notebooks.

Array helpers return (H, W, 3) uint8 images so Gradio, PIL and matplotlib can all show them; figure
helpers import matplotlib lazily and return a ``Figure``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .palette import PALETTE, colorize, overlay


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (or uint8) -> uint8."""
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    return np.clip(np.round(a * 255), 0, 255).astype(np.uint8)


def upscale(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upscale of an (h, w[, 3]) image to (H, W) so feature-grid pictures look crisp."""
    h, w = img.shape[:2]
    rows = np.minimum((np.arange(size[0]) * h) // size[0], h - 1)
    cols = np.minimum((np.arange(size[1]) * w) // size[1], w - 1)
    return img[rows[:, None], cols[None, :]]


def heatmap(d: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """A map in [0, 1] (H, W) -> RGB uint8 with a matplotlib colormap (difference maps D_l, D~_l)."""
    from matplotlib import colormaps

    return to_uint8(colormaps[cmap](np.clip(np.asarray(d, dtype=np.float32), 0, 1))[..., :3])


def label_image(labels: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """A label map (h, w) -> palette RGB, optionally upscaled (nearest) to ``size``."""
    img = colorize(labels)
    return upscale(img, size) if size is not None else img


def tile(images: Sequence[np.ndarray], cols: int | None = None, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Images of equal size in a grid (row-major), ``pad`` pixels apart."""
    ims = [
        np.asarray(i) if np.asarray(i).ndim == 3 else np.repeat(np.asarray(i)[..., None], 3, -1)
        for i in images
    ]
    if not ims:
        raise ValueError("tile needs at least one image")
    h, w = ims[0].shape[:2]
    cols = cols or len(ims)
    rows = -(-len(ims) // cols)
    out = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, 3), fill, np.uint8)
    for k, im in enumerate(ims):
        r, c = divmod(k, cols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = to_uint8(im)
    return out


def legend_colors(ids: Sequence[int]) -> dict[int, str]:
    """Hex colour of each label id (for legends and tables)."""
    return {int(i): "#%02x%02x%02x" % tuple(PALETTE[int(i) % len(PALETTE)]) for i in ids}


def frame_panels(detail: Any, pca: np.ndarray | None = None) -> list[tuple[np.ndarray, str]]:
    """(image, caption) pairs for one :class:`~vidseg_nb.pipeline.FrameDetail`: frame, PCA of F~, M^j, M~^j,
    each D_l and D~_l, I+/I-, and Y, in the order of the method."""
    size = detail.frame.shape[:2]
    out: list[tuple[np.ndarray, str]] = [(detail.frame, f"frame {detail.index}")]
    if pca is not None:
        out.append((upscale(to_uint8(pca), size), "PCA of F~ (joint over frames)"))
    out.append(
        (
            overlay(detail.frame[None], upscale(detail.coarse_before, size)[None])[0],
            "coarse M^j (context model)",
        )
    )
    out.append(
        (overlay(detail.frame[None], upscale(detail.coarse_after, size)[None])[0], "refined M~^j (CBR)")
    )
    if detail.diff is not None:
        for k, lab in enumerate(detail.diff.labels):
            out.append((heatmap(detail.diff.raw[k]), f"D_{lab} (raw)"))
            if detail.filtered is not None:
                out.append((heatmap(detail.filtered[k]), f"D~_{lab} (filtered)"))
            if detail.diff.plus is not None:
                out.append((detail.diff.plus[k], f"I+ for label {lab}"))
                out.append((detail.diff.minus[k], f"I- for label {lab}"))
    out.append((overlay(detail.frame[None], detail.final[None])[0], "final Y"))
    return out
