"""The per-clip stage cache of :class:`vidseg_nb.pipeline.VideoSegmenter`.

One clip at a time (keyed on a content hash of its frames at the processing size) keeps:

- ``features``: the reference run's features F~ (all blocks + F_c), keyed on :func:`feature_key`;
- ``coarse``: the coarse maps (M^j, M~^j), keyed on :func:`stage_key` ``(config, "coarse")``;
- ``diffs``: the raw difference maps D_l, keyed on :func:`diff_key` (:func:`stage_key` ``(config,
  "diff")``, plus the input frame size when D_l is computed there, ``SegConfig.resize_decoded``);
- ``queries``: the names' attn2 queries of the first batch (issue 13), keyed on the feature key plus the
  recorded blocks and step.

The reference runs kept for stage-3 reruns are per batch and within a memory budget
(:mod:`vidseg_nb.qkcache`); :class:`vidseg_nb.stages._Slot` looks all five up and stores them the same way.

The keys are the values of exactly the :class:`~vidseg_nb.config.SegConfig` fields each stage reads,
cumulatively (:func:`vidseg_nb.config.stage_fields`, from the fields' ``stage`` metadata): a new s only
re-filters, a new lambda reruns stage 3, a new K reruns stages 1-3 but not the features.

:class:`StageEntries` is a detached, picklable subset of one :class:`ClipCache` (what one run reads, or
what it added): :meth:`VideoSegmenter.export_stages` / :meth:`VideoSegmenter.import_stages` move it
between segmenters, e.g. between the demo's process and a ZeroGPU worker, without the segmenter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import SegConfig, stage_fields
from .features import Features
from .modulation import FrameDiff

__all__ = ["ClipCache", "StageCache", "StageEntries", "clip_key", "diff_key", "feature_key", "stage_key"]

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


def diff_key(config: SegConfig, original_size: tuple[int, int] | None = None) -> Key:
    """Key of the raw D_l: the ``"diff"`` fields, plus ``original_size`` (the clip's input frame size)
    with ``config.resize_decoded`` (issue 15 row 3), where D_l is computed at that size: the clip key
    hashes the frames at the processing size only, which two input sizes can share."""
    key = stage_key(config, "diff")
    if config.resize_decoded:
        key += (("original_size", None if original_size is None else tuple(int(v) for v in original_size)),)
    return key


@dataclass
class ClipCache:
    """What is cached for one clip (``key``: :func:`clip_key` of its processed frames)."""

    key: str
    features: dict[Key, Features] = field(default_factory=dict)
    coarse: dict[Key, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (M^j, M~^j), (N, h, w)
    diffs: dict[Key, list[FrameDiff]] = field(default_factory=dict)  # D_l per frame
    queries: dict[Key, dict[str, torch.Tensor]] = field(default_factory=dict)  # first batch's, issue 13


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


@dataclass
class StageEntries:
    """Some stage-cache entries of one clip: features F~, coarse maps (M^j, M~^j) and raw D_l by stage key.

    ``clip``: the :func:`clip_key` of the processed frames; ``n_frames`` and ``size`` (H, W): those frames'
    count and processing size (so a receiver can rebuild them from the input frames). Plain CPU tensors,
    numpy arrays and tuples: small to pickle (no segmenter, no backbone, no q/k).
    """

    clip: str
    n_frames: int
    size: tuple[int, int]
    features: dict[Key, Features] = field(default_factory=dict)
    coarse: dict[Key, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    diffs: dict[Key, list[FrameDiff]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features) + len(self.coarse) + len(self.diffs)

    def keys(self) -> set[tuple[str, Key]]:
        """``(stage, key)`` of every entry, stage one of ``"features"``, ``"coarse"``, ``"diffs"``."""
        return {(stage, k) for stage in ("features", "coarse", "diffs") for k in getattr(self, stage)}

    def without(self, other: StageEntries | None) -> StageEntries:
        """These entries minus the keys ``other`` holds (what a run added to what it was handed)."""
        have = other.keys() if other is not None and other.clip == self.clip else set()
        out = StageEntries(self.clip, self.n_frames, self.size)
        for stage in ("features", "coarse", "diffs"):
            mine, theirs = getattr(self, stage), getattr(out, stage)
            theirs.update({k: v for k, v in mine.items() if (stage, k) not in have})
        return out

    def merge_into(self, entry: ClipCache) -> int:
        """Add these entries to ``entry`` (same clip) without replacing any; returns how many were new."""
        if entry.key != self.clip:
            raise ValueError("stage entries of another clip")
        added = 0
        for stage in ("features", "coarse", "diffs"):
            target = getattr(entry, stage)
            for k, v in getattr(self, stage).items():
                if k not in target:
                    target[k] = v
                    added += 1
        return added
