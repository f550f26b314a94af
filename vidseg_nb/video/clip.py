"""The clip and the frame convention: the constants, :class:`Clip`, and the conversion of any frame
(array or PIL image, any common layout and depth) to ``(H, W, 3)`` uint8 RGB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..errors import VideoError

MIN_SIDE = 64
"""Smallest accepted frame side in pixels (the UNet works on multiples of 64)."""
DEFAULT_FPS = 10.0
"""Frame rate assumed for folders of frames, single images and GIFs without frame durations."""
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_WHAT_TO_UPLOAD = "Upload an mp4/webm/mov/gif/avi file or a folder of PNG/JPG frames."


@dataclass
class Clip:
    """Decoded frames and where they came from.

    ``frames`` is ``(N, H, W, 3)`` uint8 RGB; ``fps`` is the rate of *these* frames (the source rate
    divided by the stride); ``original_size`` is ``(H, W)`` of the source frames (filled from ``frames``
    when not given); ``truncated`` says frames beyond ``max_frames`` were dropped.
    """

    frames: np.ndarray
    fps: float = DEFAULT_FPS
    source: str = "<array>"
    truncated: bool = False
    original_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        f = np.asarray(self.frames)
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise ValueError(f"Clip.frames must be (N, H, W, 3) uint8, got {f.shape} {f.dtype}")
        self.frames = f
        if self.original_size is None:
            self.original_size = (int(f.shape[1]), int(f.shape[2]))

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def duration(self) -> float:
        """Length in seconds at ``fps``."""
        return len(self) / self.fps if self.fps > 0 else 0.0


# --------------------------------------------------------------------------------------------------
# conversions to (H, W, 3) uint8


def _to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return np.round(a.astype(np.float32) / 257.0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        if a.size and a.max() > 255:  # 16-bit data in a wider integer type
            return np.round(np.clip(a, 0, 65535).astype(np.float32) / 257.0).astype(np.uint8)
        return np.clip(a, 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise VideoError(f"{name}: frame values contain NaN or infinity. Pass finite pixel values.")
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        return np.round(np.clip(a, 0, 255)).astype(np.uint8)
    raise VideoError(f"{name}: unsupported pixel type {a.dtype}. Pass uint8 RGB frames (H, W, 3).")


def _to_rgb(frame: Any, name: str) -> np.ndarray:
    """One frame (array or PIL image, any common layout/depth) -> (H, W, 3) uint8 RGB."""
    if isinstance(frame, Image.Image):
        frame = _pil_array(frame)
    a = np.asarray(frame)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 2, 3, 4):
        raise VideoError(
            f"{name}: frame of shape {a.shape} looks channel-first; frames are (H, W, 3) "
            "(use .transpose(1, 2, 0) / .permute(1, 2, 0))."
        )
    a = _to_uint8(a, name)
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise VideoError(f"{name}: a frame must be (H, W), (H, W, 3) or (H, W, 4); got shape {a.shape}.")
    c = a.shape[2]
    if c == 3:
        return np.ascontiguousarray(a)
    if c == 1:
        return np.repeat(a, 3, axis=2)
    rgb = np.repeat(a[:, :, :1], 3, axis=2) if c == 2 else a[:, :, :3]
    alpha = a[:, :, -1:].astype(np.uint16)
    return ((rgb.astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)  # over black


def _pil_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    elif mode == "I":
        return np.asarray(im).astype(np.int64)
    elif mode not in ("L", "RGB", "RGBA", "F"):
        im = im.convert("RGB")
    return np.asarray(im)


def _check_min_side(h: int, w: int, name: str) -> None:
    if h < MIN_SIDE or w < MIN_SIDE:
        raise VideoError(
            f"{name}: frames are {w}x{h} px (WxH); the minimum is {MIN_SIDE} px on each side. "
            "Use a larger video."
        )


def _frames_array(frames: Clip | np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    if isinstance(frames, Clip):
        return frames.frames
    return np.asarray(frames)
