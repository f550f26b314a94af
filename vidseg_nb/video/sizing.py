"""Sizing: the model's frame size (:func:`target_size`, multiples of 64), frame resizing, and the one
nearest-neighbour label resize (:func:`resize_labels`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .clip import MIN_SIDE, Clip, _check_min_side, _frames_array


def target_size(height: int, width: int, max_side: int = 512) -> tuple[int, int]:
    """``(H, W)`` the model works at: aspect kept, long side <= ``max_side``, each side floored to a
    multiple of 64 (at least 64). E.g. 480x853 -> (448, 832) when ``max_side >= 853``; (256, 512) at 512.
    """
    if max_side < MIN_SIDE:
        raise ValueError(f"max_side must be at least {MIN_SIDE}, got {max_side}")
    h, w = int(height), int(width)
    _check_min_side(h, w, "clip")
    m = max(h, w)
    if m > max_side:  # integer arithmetic: no 511.999 -> 448 surprises
        h, w = h * max_side // m, w * max_side // m
    return max(MIN_SIDE, h // 64 * 64), max(MIN_SIDE, w // 64 * 64)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(N, H, W, 3)`` (or one ``(H, W, 3)``) uint8 frames to ``size`` = (H, W) with Pillow's
    antialiased bicubic filter (area-like when shrinking). Returns the input itself if already that size."""
    a = np.asarray(frames)
    single = a.ndim == 3
    if single:
        a = a[None]
    if a.ndim != 4 or a.dtype != np.uint8:
        raise ValueError(f"resize_frames wants (N, H, W, 3) uint8 frames, got {a.shape} {a.dtype}")
    h, w = int(size[0]), int(size[1])
    if a.shape[1:3] == (h, w):
        return a[0] if single else a
    out = np.stack(
        [np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BICUBIC)) for f in a]
    ).astype(np.uint8)
    return out[0] if single else out


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Input index of each of ``n_out`` output pixels: ``floor((i + 0.5) * n_in / n_out)``.

    The centre of output pixel i is sampled (PIL ``NEAREST``, torch ``"nearest-exact"``), in exact integer
    arithmetic (PIL, in floating point, can land one pixel lower when the product is an integer).
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got {n_in} -> {n_out}")
    return np.minimum((2 * np.arange(n_out) + 1) * n_in // (2 * n_out), n_in - 1)


def resize_labels(labels: Any, size: tuple[int, int], *, keep_dtype: bool = False) -> Any:
    """Nearest-neighbour resize of label maps ``(..., h, w)`` to ``size`` = (H, W): the one label resize.

    Output pixel (i, j) takes input pixel ``(floor((i + 0.5) * h / H), floor((j + 0.5) * w / W))``
    (:func:`_nearest_index`). numpy in -> int64 numpy out; a torch tensor in -> long tensor out (same
    device); ``keep_dtype=True`` keeps the input dtype (masks, images moved to channels-first).
    """
    h, w = int(size[0]), int(size[1])
    if type(labels).__module__.startswith("torch"):
        import torch

        rows = torch.from_numpy(_nearest_index(labels.shape[-2], h)).to(labels.device)
        cols = torch.from_numpy(_nearest_index(labels.shape[-1], w)).to(labels.device)
        t = labels if keep_dtype else labels.long()
        return t[..., rows[:, None], cols[None, :]]
    a = np.asarray(labels)
    if a.ndim < 2:
        raise ValueError(f"resize_labels wants (..., h, w) label maps, got shape {a.shape}")
    rows = _nearest_index(a.shape[-2], h)
    cols = _nearest_index(a.shape[-1], w)
    out = a[..., rows[:, None], cols[None, :]]
    return out if keep_dtype else out.astype(np.int64)


def prepare_frames(clip_or_frames: Clip | np.ndarray, max_side: int = 512) -> np.ndarray:
    """Frames resized to :func:`target_size` (multiples of 64, long side <= ``max_side``)."""
    a = _frames_array(clip_or_frames)
    if a.ndim != 4:
        raise ValueError(f"prepare_frames wants (N, H, W, 3) frames, got shape {a.shape}")
    return resize_frames(a, target_size(a.shape[1], a.shape[2], max_side))
