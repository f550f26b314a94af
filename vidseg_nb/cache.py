"""The per-clip stage cache of :class:`vidseg_nb.pipeline.VideoSegmenter`.

One clip at a time (keyed on a content hash of its frames at the processing size) keeps:

- ``features``: the reference run's features F~ (all blocks + F_c), keyed on :func:`feature_key`;
- ``coarse``: the coarse maps (M^j, M~^j), keyed on :func:`stage_key` ``(config, "coarse")``;
- ``diffs``: the raw difference maps D_l, keyed on :func:`stage_key` ``(config, "diff")``.

The keys are the values of exactly the :class:`~vidseg_nb.config.SegConfig` fields each stage reads,
cumulatively (:func:`vidseg_nb.config.stage_fields`, from the fields' ``stage`` metadata): a new s only
re-filters, a new lambda reruns stage 3, a new K reruns stages 1-3 but not the features.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .config import SegConfig, stage_fields
from .features import Features
from .modulation import FrameDiff

__all__ = ["ClipCache", "StageCache", "clip_key", "feature_key", "stage_key"]

Key = tuple


def clip_key(frames: np.ndarray) -> str:
    """Content hash of processed frames (the cache key of a clip)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(frames.shape).encode())
    h.update(np.ascontiguousarray(frames).data)
    return h.hexdigest()


def stage_key(config: SegConfig, stage: str) -> Key:
    """``((name, value), ...)`` of the fields ``stage`` reads (cumulative, see ``stage_fields``)."""
    return config.key(stage_fields(stage))


def feature_key(config: SegConfig, *, joint_frames: bool = False) -> Key:
    """Key of the features F~: the ``"features"`` fields, plus B when the backbone denoises the frames of a
    batch jointly (``joint_frames``: SVD, where a frame's features depend on its batch)."""
    key = stage_key(config, "features")
    if joint_frames:
        key += config.key(("batch_size",))
    return key


@dataclass
class ClipCache:
    """What is cached for one clip (``key``: :func:`clip_key` of its processed frames)."""

    key: str
    features: dict[Key, Features] = field(default_factory=dict)
    coarse: dict[Key, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (M^j, M~^j), (N, h, w)
    diffs: dict[Key, list[FrameDiff]] = field(default_factory=dict)  # D_l per frame


class StageCache:
    """Holds the :class:`ClipCache` of the last clip of at most ``max_frames`` frames (0: no caching)."""

    def __init__(self, max_frames: int = 120) -> None:
        self.max_frames = max_frames
        self.entry: ClipCache | None = None

    def clear(self) -> None:
        self.entry = None

    def accepts(self, n_frames: int) -> bool:
        """Whether a clip of ``n_frames`` frames is cached."""
        return 0 < n_frames <= self.max_frames

    def for_clip(self, frames: np.ndarray) -> ClipCache | None:
        """The entry of ``frames`` (a new, empty one replaces another clip's), or None for a long clip."""
        if not self.accepts(len(frames)):
            return None
        key = clip_key(frames)
        if self.entry is None or self.entry.key != key:
            self.entry = ClipCache(key)
        return self.entry

    def current(self, n_frames: int) -> ClipCache | None:
        """The entry of the last clip if a clip of ``n_frames`` frames would be cached, else None."""
        return self.entry if self.accepts(n_frames) else None
