"""Streaming pieces of :meth:`~vidseg_nb.pipeline.VideoSegmenter.stream`: one batch as yielded
(:class:`StreamBatch`), the checkpoint to resume from (:class:`StreamState`, Omega's fit data and the
authors' KNN reference), and the lazy reader of a batch plan (:class:`_FrameWindows`: frames an
overlapping later batch shares are held back, so at most one batch of frames is held).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .config import SegConfig
from .stages import BatchResult
from .video import Clip, VideoStream

__all__ = ["StreamBatch", "StreamState"]


@dataclass
class StreamState:
    """What a resumed :meth:`VideoSegmenter.stream` needs after ``next_batch`` finished batches
    (``frames_done`` frames): Omega's fit data, the F~ (b, h, w, C) and M~ (b, h, w) int64 of the last
    finished batch (Omega is refitted on them: its KNN holds exactly that data)."""

    next_batch: int
    frames_done: int
    features: np.ndarray
    labels: np.ndarray
    # issue 15 row 5 (knn_first_frame): the authors' KNN reference, the last batch's tokens (n, C) and M~ (n,)
    knn_features: np.ndarray | None = None
    knn_labels: np.ndarray | None = None

    def save(self, path: str | Path, **meta: Any) -> Path:
        """Write to ``path`` (.npz) atomically, with JSON-able ``meta`` (identity of the run)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            next_batch=np.int64(self.next_batch),
            frames_done=np.int64(self.frames_done),
            features=self.features,
            labels=self.labels,
            meta=np.array(json.dumps(meta)),
            **(
                {}
                if self.knn_features is None
                else {"knn_features": self.knn_features, "knn_labels": self.knn_labels}
            ),
        )
        os.replace(tmp, path)
        return path

    @staticmethod
    def load(path: str | Path) -> tuple[StreamState, dict[str, Any]]:
        """(state, meta) written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            knn = (z["knn_features"], z["knn_labels"]) if "knn_features" in z.files else (None, None)
            st = StreamState(int(z["next_batch"]), int(z["frames_done"]), z["features"], z["labels"], *knn)
            return st, json.loads(str(z["meta"]))


@dataclass
class StreamBatch:
    """One batch of :meth:`VideoSegmenter.stream`: batch ``index`` (0-based) of the plan; ``start:stop`` the
    frames it is final for (``stop``: the next batch's start, which is before ``result.stop`` where the
    authors' last batch overlaps this one); ``frames`` their original frames (b, H0, W0, 3) uint8;
    ``labels`` their Y at input resolution (b, H0, W0) uint8; ``result`` the :class:`BatchResult` of the
    whole batch (M^j, M~^j, Y at processing size, details, timings); ``held``: frames the reader held in
    memory for this batch (the batch and the frames held back for the next one). :meth:`state` is the
    checkpoint after this batch."""

    index: int
    frames: np.ndarray
    labels: np.ndarray
    result: BatchResult
    stop: int
    held: int = 0
    _fit: tuple[Any, np.ndarray] | None = field(default=None, repr=False)
    _knn: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def start(self) -> int:
        return self.result.start

    @property
    def before(self) -> np.ndarray:
        """M^j (b, h, w) of the frames ``start:stop``."""
        return self.result.before[: len(self)]

    @property
    def after(self) -> np.ndarray:
        """M~^j (b, h, w) of the frames ``start:stop``."""
        return self.result.after[: len(self)]

    def __len__(self) -> int:
        return self.stop - self.start

    def state(self) -> StreamState:
        """The :class:`StreamState` after this batch (F~ kept float32, or float64 if it was: exact; the
        authors' KNN reference as it is)."""
        if self._fit is None and self._knn is None:
            raise RuntimeError("no checkpoint: this batch's coarse maps came from the stage cache")
        if self._fit is None:
            f, m = np.zeros((0,), np.float32), np.zeros((0,), np.int64)
        else:
            f, m = self._fit
            f = f.detach().cpu() if isinstance(f, torch.Tensor) else torch.as_tensor(f)
            f = (f if f.dtype == torch.float64 else f.float()).numpy().copy()
            m = np.asarray(m, np.int64).copy()
        kf, kl = (None, None) if self._knn is None else (np.array(self._knn[0]), np.array(self._knn[1]))
        return StreamState(self.index + 1, self.stop, f, m, kf, kl)


class _FrameWindows:
    """The frames of each batch of a plan, read lazily from a :class:`~vidseg_nb.video.VideoStream`:
    yields ``(start, frames (b, H0, W0, 3), None, held)`` per batch from ``start_batch`` on (``plan`` None:
    batches of B until the clip ends). Frames a later batch shares with this one (the authors' overlapping
    last batch) are held back, not decoded again, so at most two batches of frames are in memory;
    ``held`` counts the frames held when a batch is handed out, ``peak`` the most ever held."""

    def __init__(
        self, src: VideoStream, plan: Sequence[tuple[int, int]] | None, bsz: int, start_batch: int, first: int
    ) -> None:
        self.src, self.plan, self.bsz, self.start_batch, self.first = src, plan, bsz, start_batch, first
        self.peak = 0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, None, int]]:
        frames = self.src.frames(self.first)
        buf: list[np.ndarray] = []  # the frames hi - len(buf) .. hi - 1, read and maybe still needed
        hi = self.first  # the next frame's index
        ranges: Iterable[tuple[int, int]] = (
            self.plan[self.start_batch :]
            if self.plan is not None
            else ((a, a + self.bsz) for a in itertools.count(self.first, self.bsz))
        )
        for a, b in ranges:
            del buf[: max(0, a - (hi - len(buf)))]  # frames before this batch: no longer needed
            while hi < b:
                f = next(frames, None)
                if f is None:
                    break
                if hi >= a:
                    buf.append(f)
                hi += 1
            if hi <= a:  # the clip ended
                return
            self.peak = max(self.peak, len(buf))
            yield a, np.stack(buf), None, len(buf)


def _stream_keep(keep: Sequence[int] | str | None, n: int | None) -> set[int] | Literal["all"]:
    """The frames whose intermediates :meth:`VideoSegmenter.stream` keeps (``n``: the clip length if known;
    ``"auto"``: all frames of clips up to 32 frames, else frame 0)."""
    if keep == "all" or (keep == "auto" and n is not None and n <= 32):
        return "all"
    if keep == "auto":
        return {0}
    if keep is None:
        return set()
    return {int(i) % n if n else int(i) for i in keep}


def _as_source(clip: Any, config: SegConfig) -> Any:
    """What :func:`open_video` reads for ``clip``: a Clip or array cut to ``config.max_frames`` (no
    warning, as :meth:`VideoSegmenter.prepare`), an object with ``frames`` and ``fps`` (a SyntheticClip)
    as a Clip, a path as it is."""
    m = config.max_frames
    if not isinstance(clip, Clip) and hasattr(clip, "frames") and hasattr(clip, "fps"):
        clip = Clip(frames=np.asarray(clip.frames), fps=float(clip.fps), source="<clip>")
    if isinstance(clip, Clip):
        if m is not None and len(clip) > m:
            clip = Clip(
                frames=clip.frames[:m], fps=clip.fps, source=clip.source, original_size=clip.original_size
            )
        return clip
    if isinstance(clip, np.ndarray) and m is not None and clip.ndim == 4 and len(clip) > m:
        return clip[:m]
    return clip
