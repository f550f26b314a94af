"""Synthetic clips with planted segments and exact ground truth, for tests, examples and notebooks.

A clip is a smooth, textured background with a few textured shapes (circle, rotated rectangle, triangle)
that move in straight lines and bounce off the frame border. Objects are drawn in order, so a later one
occludes an earlier one; the label map is written in the same order from the same masks, so labels match
the pixels exactly (no antialiasing). Label 0 is the background, 1..n the objects.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import video

__all__ = [
    "SHAPES",
    "SyntheticClip",
    "example_clips",
    "iter_clip",
    "make_clip",
    "save_clip",
    "save_long_clip",
]

SHAPES = ("circle", "rect", "triangle")
TEXTURE_RANGE = (0.7, 1.0)
"""An object pixel is its base colour times a texture factor in this range."""


@dataclass
class SyntheticClip:
    """Frames ``(N, H, W, 3)`` uint8, labels ``(N, H, W)`` int64 (0 = background, 1..n objects).

    ``colors[l]`` is the base colour of label ``l`` (uint8; row 0 is the background's mean colour);
    ``centers[i, t]`` is ``(y, x)`` of object ``i`` (label ``i + 1``) in frame ``t``.
    """

    frames: np.ndarray
    labels: np.ndarray
    fps: float = 10.0
    n_labels: int = 1
    colors: np.ndarray = field(default_factory=lambda: np.zeros((1, 3), np.uint8))
    centers: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 2)))
    shapes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def to_clip(self) -> video.Clip:
        """The frames as a :class:`vidseg_nb.video.Clip`."""
        return video.Clip(frames=self.frames, fps=self.fps, source="<synthetic>")


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _bounce(start: float, velocity: float, n: int, lo: float, hi: float) -> np.ndarray:
    """Positions ``start + velocity * t`` folded into ``[lo, hi]`` (mirror at the walls)."""
    x = start + velocity * np.arange(n, dtype=np.float64)
    span = hi - lo
    if span <= 0:
        return np.full(n, (lo + hi) / 2.0)
    u = np.mod(x - lo, 2 * span)
    return lo + np.where(u <= span, u, 2 * span - u)


@dataclass
class _Object:
    shape: str
    kind: int  # texture: 0 stripes, 1 checker, 2 rings
    color: np.ndarray
    radius: float
    cy: np.ndarray  # (N,) centre per frame
    cx: np.ndarray
    rot: float
    beta: float
    period: float


@dataclass
class _Plan:
    """Everything random about a clip, drawn once; frames ``a..b`` are rendered from it on demand."""

    n: int
    h: int
    w: int
    background: np.ndarray  # (H, W, 3) float32
    objects: list[_Object]


def _plan(
    n_frames: int, height: int, width: int, n_objects: int, seed: int, speed: float, shapes: Sequence[str]
) -> _Plan:
    if n_frames < 1 or height < 16 or width < 16 or n_objects < 0:
        raise ValueError("make_clip needs n_frames >= 1, height and width >= 16, n_objects >= 0")
    unknown = set(shapes) - set(SHAPES)
    if unknown or not shapes:
        raise ValueError(f"unknown shape(s) {sorted(unknown)}; choose from {SHAPES}")
    rng = np.random.default_rng(seed)
    n, h, w = int(n_frames), int(height), int(width)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # background: a few low-frequency plane waves blended between two muted colours, plus fine stripes
    wave = np.zeros((h, w), np.float32)
    for _ in range(4):
        th, ph = rng.uniform(0, 2 * np.pi, size=2)
        freq = rng.uniform(0.5, 2.0) * 2 * np.pi / max(h, w)
        wave += np.cos(freq * (xx * np.cos(th) + yy * np.sin(th)) + ph)
    wave = (wave - wave.min()) / max(float(np.ptp(wave)), 1e-6)
    th = rng.uniform(0, np.pi)
    wave = 0.85 * wave + 0.15 * (0.5 + 0.5 * np.cos(2 * np.pi * (xx * np.cos(th) + yy * np.sin(th)) / 5.0))
    hb = rng.uniform()
    c1 = _hsv(hb, rng.uniform(0.1, 0.3), rng.uniform(0.3, 0.45))
    c2 = _hsv(hb + rng.uniform(-0.1, 0.1), rng.uniform(0.1, 0.3), rng.uniform(0.55, 0.7))
    background = c1 * (1 - wave[..., None]) + c2 * wave[..., None]

    objects = []
    hue0 = rng.uniform()
    for i in range(n_objects):  # the order of the draws is part of the seed's meaning: keep it
        shape = shapes[i % len(shapes)]
        color = _hsv(hue0 + i / max(n_objects, 1) + rng.uniform(-0.04, 0.04), rng.uniform(0.7, 0.9), 1.0)
        radius = rng.uniform(0.12, 0.2) * min(h, w)  # bounding radius: the shape fits in this circle
        ylo, yhi, xlo, xhi = radius + 1, h - radius - 2, radius + 1, w - radius - 2
        y0, x0 = rng.uniform(ylo, max(ylo, yhi)), rng.uniform(xlo, max(xlo, xhi))
        ang = rng.uniform(0, 2 * np.pi)
        cy = _bounce(y0, speed * np.sin(ang), n, ylo, yhi)
        cx = _bounce(x0, speed * np.cos(ang), n, xlo, xhi)
        rot = rng.uniform(0, 2 * np.pi)
        beta = rng.uniform(0.45, 1.1) if shape == "rect" else 0.0  # aspect: half-diagonal == radius
        period = rng.uniform(6.0, 12.0)
        objects.append(_Object(shape, i % 3, color, radius, cy, cx, rot, beta, period))
    return _Plan(n, h, w, background, objects)


def _render(plan: _Plan, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(b-a, H, W, 3)`` uint8 and labels ``(b-a, H, W)`` int64 of frames ``a..b-1``."""
    h, w = plan.h, plan.w
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.broadcast_to(plan.background, (b - a, h, w, 3)).copy()
    labels = np.zeros((b - a, h, w), np.int64)
    lo_t, hi_t = TEXTURE_RANGE
    for i, ob in enumerate(plan.objects):
        radius, rot = ob.radius, ob.rot
        dy = yy[None] - ob.cy[a:b, None, None].astype(np.float32)  # (n, H, W) object coordinates
        dx = xx[None] - ob.cx[a:b, None, None].astype(np.float32)
        u = dx * np.cos(rot) + dy * np.sin(rot)
        v = -dx * np.sin(rot) + dy * np.cos(rot)
        if ob.shape == "circle":
            mask = dx * dx + dy * dy <= radius * radius
        elif ob.shape == "rect":
            mask = (np.abs(u) <= radius * np.cos(ob.beta)) & (np.abs(v) <= radius * np.sin(ob.beta))
        else:  # equilateral triangle, circumradius = radius, inradius = radius / 2
            mask = np.ones_like(u, dtype=bool)
            for k in range(3):
                phi = rot + 2 * np.pi * k / 3
                mask &= dx * np.cos(phi) + dy * np.sin(phi) >= -radius / 2
        if ob.kind == 0:  # stripes
            tex = 0.5 + 0.5 * np.cos(2 * np.pi * u / ob.period)
        elif ob.kind == 1:  # checker
            tex = (np.floor(u / ob.period) + np.floor(v / ob.period)) % 2
        else:  # rings
            tex = 0.5 + 0.5 * np.cos(2 * np.pi * np.sqrt(dx * dx + dy * dy) / ob.period)
        factor = lo_t + (hi_t - lo_t) * tex
        obj = factor[..., None] * ob.color
        frames = np.where(mask[..., None], obj, frames)
        labels[mask] = i + 1
    return np.clip(np.round(frames), 0, 255).astype(np.uint8), labels


def make_clip(
    n_frames: int = 16,
    height: int = 256,
    width: int = 256,
    n_objects: int = 3,
    seed: int = 0,
    speed: float = 2.0,
    shapes: Sequence[str] = SHAPES,
    fps: float = 10.0,
) -> SyntheticClip:
    """A seeded clip of ``n_objects`` textured shapes moving ``speed`` px per frame over a textured
    background. Object ``i`` (label ``i + 1``) has shape ``shapes[i % len(shapes)]``, its own colour and
    texture (stripes, checker or rings, moving with it), and stays fully inside the frame."""
    plan = _plan(n_frames, height, width, n_objects, seed, speed, shapes)
    frames, labels = _render(plan, 0, plan.n)
    colors = [plan.background.reshape(-1, 3).mean(0)] + [ob.color for ob in plan.objects]
    centers = np.zeros((n_objects, plan.n, 2))
    for i, ob in enumerate(plan.objects):
        centers[i, :, 0], centers[i, :, 1] = ob.cy, ob.cx
    return SyntheticClip(
        frames=frames,
        labels=labels,
        fps=float(fps),
        n_labels=n_objects + 1,
        colors=np.clip(np.round(np.stack(colors)), 0, 255).astype(np.uint8),
        centers=centers,
        shapes=tuple(ob.shape for ob in plan.objects),
    )


def iter_clip(
    n_frames: int = 16,
    height: int = 256,
    width: int = 256,
    n_objects: int = 3,
    seed: int = 0,
    speed: float = 2.0,
    shapes: Sequence[str] = SHAPES,
    *,
    batch: int = 16,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The clip of :func:`make_clip` (same arguments, same pixels and labels) as ``(frames, labels)``
    batches of at most ``batch`` frames, so long clips (thousands of frames) never sit in memory whole."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    plan = _plan(n_frames, height, width, n_objects, seed, speed, shapes)
    for a in range(0, plan.n, batch):
        yield _render(plan, a, min(plan.n, a + batch))


def save_clip(
    clip: SyntheticClip,
    path: str | os.PathLike,
    fps: float | None = None,
    *,
    labels_dir: str | os.PathLike | None = None,
) -> Path:
    """Write the frames by suffix: ``.mp4``/``.webm``/... (:func:`video.write_video`), ``.gif``, or no
    suffix: a folder of ``00000.png, ...``. ``labels_dir``: also write the label maps as palette PNGs."""
    path = Path(path)
    fps = clip.fps if fps is None else fps
    if path.suffix == "":
        path.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(clip.frames):
            Image.fromarray(f).save(path / f"{i:05d}.png")
    elif path.suffix.lower() == ".gif":
        video.write_gif(path, clip.frames, fps)
    else:
        video.write_video(path, clip.frames, fps)
    if labels_dir is not None:
        video.write_label_pngs(labels_dir, clip.labels)
    return path


def save_long_clip(
    path: str | os.PathLike,
    n_frames: int,
    height: int = 480,
    width: int = 856,
    *,
    n_objects: int = 3,
    seed: int = 0,
    speed: float = 2.0,
    fps: float = 10.0,
    batch: int = 16,
    labels_dir: str | os.PathLike | None = None,
) -> Path:
    """Write the clip of :func:`make_clip` batch by batch (:func:`iter_clip` + :class:`video.VideoWriter`),
    so a clip of thousands of frames costs one batch of memory. ``.mp4``/``.webm`` only;
    ``labels_dir``: also the ground-truth label PNGs."""
    path = Path(path)
    labels = video.LabelPNGWriter(labels_dir) if labels_dir is not None else None
    with video.VideoWriter(path, fps) as w:
        for frames, lab in iter_clip(n_frames, height, width, n_objects, seed, speed, batch=batch):
            w.append(frames)
            if labels is not None:
                labels.append(lab)
    return path


_EXAMPLES = (
    ("synthetic_shapes.mp4", dict(n_frames=24, height=256, width=256, n_objects=3, seed=0, speed=3.0)),
    ("synthetic_wide.mp4", dict(n_frames=24, height=256, width=448, n_objects=4, seed=1, speed=4.0)),
    ("synthetic_tall.mp4", dict(n_frames=24, height=448, width=256, n_objects=2, seed=2, speed=3.0)),
)


def example_clips(directory: str | os.PathLike) -> list[Path]:
    """Write the example clips (square, wide, tall mp4s) into ``directory`` if missing; return their paths."""
    directory = Path(directory)
    paths = []
    for name, kwargs in _EXAMPLES:
        p = directory / name
        if not p.is_file() or p.stat().st_size == 0:
            save_clip(make_clip(**kwargs), p)
        paths.append(p)
    return paths
