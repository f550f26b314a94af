"""The toy world: synthetic clips of named objects with exact labels and a caption per frame.

Every object has a colour, a texture and a shape from a small vocabulary (:data:`COLOURS`,
:data:`TEXTURES`, :data:`SHAPE_WORDS`), so a frame's caption ("a photo of a red striped circle and a blue
checkered triangle") names what is in it, word by word. Objects are drawn over the muted, textured
backgrounds of :mod:`vidseg_nb.synthetic` by the same renderer (labels match the pixels exactly). Seeds:
training clips use :data:`TRAIN_SEEDS`, the held-out evaluation clips :data:`EVAL_SEEDS` (disjoint).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from .. import synthetic

__all__ = [
    "COLOURS",
    "EVAL_SEEDS",
    "SHAPE_WORDS",
    "TEMPLATE",
    "TEXTURES",
    "TRAIN_SEEDS",
    "ToyClip",
    "ToyObject",
    "caption",
    "make_toy_clip",
    "vocabulary",
]

COLOURS: dict[str, float] = {
    "red": 0.0,
    "yellow": 1 / 6,
    "green": 2 / 6,
    "cyan": 3 / 6,
    "blue": 4 / 6,
    "purple": 5 / 6,
}
"""Colour word -> hue (HSV); six hues 60 degrees apart."""
TEXTURES: tuple[str, ...] = ("striped", "checkered", "ringed")
"""Texture words, in the order of :mod:`vidseg_nb.synthetic`'s texture kinds 0, 1, 2."""
SHAPE_WORDS: dict[str, str] = {"circle": "circle", "rect": "rectangle", "triangle": "triangle"}
"""Shape of :mod:`vidseg_nb.synthetic` -> its word."""
TEMPLATE = "a photo of"
"""Every caption starts so; :data:`vidseg_nb.names.DEFAULT_TEMPLATE` ("a photo of a {}") is its prefix."""
FILLER: tuple[str, ...] = ("a", "photo", "of", "and")

TRAIN_SEEDS = range(100_000, 110_000)
"""Seeds of training clips (a training run takes the first ``n_clips``)."""
EVAL_SEEDS: tuple[int, ...] = (9001, 9002, 9003, 9004, 9005)
"""Seeds of the held-out evaluation clips (never used in training)."""


def vocabulary() -> list[str]:
    """Every word of the toy world, each one token of the toy tokenizer."""
    return list(FILLER) + list(COLOURS) + list(TEXTURES) + list(SHAPE_WORDS.values())


@dataclass(frozen=True)
class ToyObject:
    """One planted object: its words (label ``i + 1`` in the clip is ``objects[i]``)."""

    colour: str
    texture: str
    shape: str  # a shape word: "circle", "rectangle", "triangle"

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.texture} {self.shape}"


@dataclass
class ToyClip(synthetic.SyntheticClip):
    """A :class:`~vidseg_nb.synthetic.SyntheticClip` whose objects have words; ``captions[t]`` names the
    objects visible in frame ``t`` (at least ``min_visible`` of the frame's pixels)."""

    objects: tuple[ToyObject, ...] = ()
    captions: tuple[str, ...] = ()


def caption(objects: list[ToyObject] | tuple[ToyObject, ...]) -> str:
    """``"a photo of a red striped circle and a blue ringed triangle"`` (in the given order)."""
    if not objects:
        return TEMPLATE.rsplit(" ", 1)[0]  # "a photo": nothing but background
    return TEMPLATE + " " + " and ".join(f"a {o.phrase}" for o in objects)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def make_toy_clip(
    seed: int,
    n_frames: int = 12,
    size: int = 256,
    n_objects: int | None = None,
    *,
    speed: float | None = None,
    min_visible: float = 0.003,
) -> ToyClip:
    """A seeded clip of ``size`` x ``size`` frames: ``n_objects`` (default 1-4 by seed) objects of distinct
    colours, each with a random texture and shape, radius 10-22% of the side, moving in straight lines at
    ``speed`` px/frame (default 0.5-6 px at 256 px, by seed) and bouncing off the border, over a background
    of :mod:`vidseg_nb.synthetic`. Later objects occlude earlier ones."""
    rng = np.random.default_rng([seed, 7])
    n_obj = int(rng.integers(1, 5)) if n_objects is None else int(n_objects)
    if not 0 <= n_obj <= len(COLOURS):
        raise ValueError(f"n_objects must be in 0..{len(COLOURS)}")
    v = float(rng.uniform(0.5, 6.0)) if speed is None else float(speed)
    v *= size / 256
    plan = synthetic._plan(n_frames, size, size, 0, seed, 0.0, synthetic.SHAPES)  # the background
    colours = rng.choice(list(COLOURS), size=n_obj, replace=False)
    words = []
    for c in colours:
        kind = int(rng.integers(0, len(TEXTURES)))
        shape = synthetic.SHAPES[int(rng.integers(0, len(synthetic.SHAPES)))]
        radius = float(rng.uniform(0.10, 0.22)) * size
        lo, hi = radius + 1, size - radius - 2
        y0, x0 = rng.uniform(lo, max(lo, hi), size=2)
        ang = rng.uniform(0, 2 * np.pi)
        plan.objects.append(
            synthetic._Object(
                shape=shape,
                kind=kind,
                color=_hsv(COLOURS[str(c)] + rng.uniform(-0.02, 0.02), rng.uniform(0.75, 0.95), 1.0),
                radius=radius,
                cy=synthetic._bounce(y0, v * np.sin(ang), n_frames, lo, hi),
                cx=synthetic._bounce(x0, v * np.cos(ang), n_frames, lo, hi),
                rot=float(rng.uniform(0, 2 * np.pi)),
                beta=float(rng.uniform(0.45, 1.1)) if shape == "rect" else 0.0,
                period=float(rng.uniform(6.0, 12.0)) * size / 256,
            )
        )
        words.append(ToyObject(str(c), TEXTURES[kind], SHAPE_WORDS[shape]))
    frames, labels = synthetic._render(plan, 0, n_frames)
    counts = np.stack([(labels == i + 1).sum((1, 2)) for i in range(n_obj)], 1) if n_obj else None
    caps = []
    for t in range(n_frames):
        seen = [words[i] for i in rng.permutation(n_obj) if counts[t, i] >= min_visible * size * size]
        caps.append(caption(seen))
    colors = [plan.background.reshape(-1, 3).mean(0)] + [ob.color for ob in plan.objects]
    centers = np.zeros((n_obj, n_frames, 2))
    for i, ob in enumerate(plan.objects):
        centers[i, :, 0], centers[i, :, 1] = ob.cy, ob.cx
    return ToyClip(
        frames=frames,
        labels=labels,
        n_labels=n_obj + 1,
        colors=np.clip(np.round(np.stack(colors)), 0, 255).astype(np.uint8),
        centers=centers,
        shapes=tuple(ob.shape for ob in plan.objects),
        objects=tuple(words),
        captions=tuple(caps),
    )
