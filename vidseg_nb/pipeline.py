"""The whole method, batch by batch: :class:`VideoSegmenter` (paper Figure 3).

For each batch of B frames (:meth:`VideoSegmenter.iter_batches`):

0. reference run: the features F~ (and F_c, and the q/k and latents stage 3 replays);
1. scene context model Omega: on the first batch K-Means gives M^1 and the KNN fitted on (F~^1, M^1)
   predicts M^2..M^B (``omega.fit_predict``); on later batches Omega predicts M^j (``omega.predict``);
2. correspondence-based refinement (CBR): M^j -> M~^j;
3. masked modulation: the difference maps D_l;
4. filtering and argmax: the label maps Y;

then the autoregressive update ``omega.fit(F~, M~)`` on this batch only, for the next batch. One loop
body (``_Loop.step``) does this for :meth:`~VideoSegmenter.iter_batches` (frames in memory, the stage
cache) and :meth:`~VideoSegmenter.stream` (a clip read lazily, batch by batch: memory does not grow with
the clip; yields :class:`StreamBatch` with the labels at input resolution and a :class:`StreamState`
checkpoint to resume from); :meth:`~VideoSegmenter.segment` collects the stream.

Caching (:mod:`vidseg_nb.cache`): a segmenter remembers, per clip, the features (keyed on the fields the
reference run reads), the coarse maps (plus the stage-1/2 fields) and the raw difference maps D_l (plus
the stage-3 fields), so a new s only re-filters, a new lambda reruns stage 3 only, and a new cluster count
reruns stages 1-3 but not the feature extraction. Stage 3 needs the reference run's q/k, which are too
large to cache (about 180 MB per 512x512 frame), so a stage-3 rerun repeats the reference run of each
frame as part of stage 3 (its samples are counted in ``work``). Clips longer than ``cache_frames`` are not
cached, and intermediates are kept only for the frames asked for, so memory stays bounded for long clips.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbone import Backbone
from .cache import ClipCache, StageCache, clip_key, feature_key, stage_key
from .config import SegConfig
from .context import SceneContextModel
from .features import Features, reference_run
from .modulation import FrameDiff, final_labels, modulate
from .refine import refine
from .video import Clip, VideoStream, open_video, read_video, resize_frames, resize_labels, target_size

__all__ = [
    "BatchResult",
    "FrameDetail",
    "SegmentationResult",
    "StreamBatch",
    "StreamState",
    "VideoSegmenter",
    "clip_key",
    "segment_clip",
]

Mode = Literal["full", "preview"]


@dataclass
class FrameDetail:
    """Every intermediate of one frame (processing resolution H x W, feature grid h x w)."""

    index: int
    frame: np.ndarray  # (H, W, 3) uint8, as fed to the VAE
    features: dict[int, np.ndarray]  # block -> (h, w, C); key 0 is the stage-1 feature (F~ or block 7)
    coarse_before: np.ndarray  # M^j (h, w)
    coarse_after: np.ndarray  # M~^j (h, w)
    final: np.ndarray  # Y (H, W)
    diff: FrameDiff | None = None  # D_l before filtering (+ I+/I-)
    filtered: np.ndarray | None = None  # D~_l (L, H, W)


@dataclass
class SegmentationResult:
    """Label maps of a clip at input resolution, plus what the caller asked to keep.

    ``labels`` (N, H0, W0) uint8 label ids (cluster ids of the scene context model, < 256);
    ``coarse_before``/``coarse_after`` (N, h, w) int64 for every frame; ``details`` per kept frame;
    ``mode`` is ``"full"`` (masked modulation) or ``"preview"`` (coarse maps upsampled, no modulation).
    """

    labels: np.ndarray
    coarse_before: np.ndarray
    coarse_after: np.ndarray
    mode: Mode
    config: SegConfig
    fps: float
    size: tuple[int, int]  # processing (H, W)
    original_size: tuple[int, int]
    details: dict[int, FrameDetail] = field(default_factory=dict)
    features: Features | None = None  # all frames, when the clip was cached
    timings: dict[str, float] = field(default_factory=dict)
    work: dict[str, int] = field(default_factory=dict)
    is_random_model: bool = False
    computed: tuple[str, ...] = ()  # stages computed by this call, not served by the cache:
    # "features", "coarse maps", "stage 3" (reference run + modulated runs), "filter"

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def label_ids(self) -> np.ndarray:
        return np.unique(self.labels)

    def work_per_frame(self) -> dict[str, float]:
        n = max(1, len(self))
        return {k: v / n for k, v in self.work.items()}


@dataclass
class BatchResult:
    """What :meth:`VideoSegmenter.iter_batches` yields for frames ``start:stop`` of one batch.

    ``before`` M^j and ``after`` M~^j (B, h, w) int64; ``final`` Y (B, H, W) int64 at the processing size;
    ``details`` the kept frames' intermediates; ``features`` the batch's features F~ (served by the cache
    or computed); ``diffs`` the raw D_l per frame (``None`` in preview mode); ``timings`` seconds spent
    in this batch per stage; ``computed`` the stages this batch computed rather than took from the cache
    (``"features"``, ``"coarse maps"``, ``"stage 3"``, ``"filter"``).
    """

    start: int
    stop: int
    before: np.ndarray
    after: np.ndarray
    final: np.ndarray
    details: dict[int, FrameDetail]
    features: Features
    diffs: list[FrameDiff] | None
    timings: dict[str, float]
    computed: tuple[str, ...]

    def __len__(self) -> int:
        return self.stop - self.start


class VideoSegmenter:
    """Zero-shot video semantic segmentation with a diffusion backbone (the paper's full method).

    ``VideoSegmenter(backbone, config).segment(clip)`` -> :class:`SegmentationResult`.
    ``cache_frames``: clips up to this many frames keep their stages cached in ``self.cache``
    (:class:`~vidseg_nb.cache.StageCache`; the demo keeps one segmenter per session); 0 disables caching.
    """

    def __init__(
        self, backbone: Backbone, config: SegConfig | None = None, *, cache_frames: int = 120
    ) -> None:
        self.backbone = backbone
        self.config = config or SegConfig()
        self.cache = StageCache(cache_frames)

    @property
    def cache_frames(self) -> int:
        return self.cache.max_frames

    @cache_frames.setter
    def cache_frames(self, n: int) -> None:
        self.cache.max_frames = n

    def clear_cache(self) -> None:
        self.cache.clear()

    def feature_key(self, config: SegConfig) -> tuple:
        """Cache key of the features: the fields the reference run reads, plus B for a backbone that
        denoises the frames of a batch jointly (SVD: a frame's features depend on its batch)."""
        joint = self.backbone is not None and self.backbone.frames_per_group(config.batch_size) > 1
        return feature_key(config, joint_frames=joint)

    # ------------------------------------------------------------------ inputs
    def prepare(
        self, clip: Clip | np.ndarray | str | Any, config: SegConfig
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """(original frames, frames at the processing size, fps) of a clip, path or array."""
        if not isinstance(clip, Clip):
            if hasattr(clip, "frames") and hasattr(clip, "fps"):  # e.g. a SyntheticClip
                clip = Clip(frames=np.asarray(clip.frames), fps=float(clip.fps), source="<clip>")
            else:
                clip = read_video(clip, max_frames=config.max_frames)
        frames = clip.frames
        if config.max_frames is not None and len(frames) > config.max_frames:
            frames = frames[: config.max_frames]
        size = target_size(frames.shape[1], frames.shape[2], config.max_side)
        return frames, resize_frames(frames, size), float(clip.fps)

    # ------------------------------------------------------------------ main entry
    def segment(
        self,
        clip: Clip | np.ndarray | str | Any,
        config: SegConfig | None = None,
        *,
        mode: Mode | None = None,
        keep: Sequence[int] | Literal["all", "auto"] | None = "auto",
        progress: bool = True,
    ) -> SegmentationResult:
        """Segment ``clip``; ``mode`` defaults to ``"full"`` (``"preview"`` when ``config.modulation`` is off).

        ``keep``: frames whose intermediates are kept (``"auto"``: all frames of clips up to 32 frames).
        Collects :meth:`stream` (short clips go through the stage cache); for long clips iterate
        :meth:`stream` instead, which does not hold the whole clip's labels.
        """
        config = config or self.config
        mode = mode or ("full" if config.modulation else "preview")
        src = (
            clip
            if isinstance(clip, VideoStream)
            else open_video(_as_source(clip, config), max_frames=config.max_frames)
        )
        labels: list[np.ndarray] = []
        before: list[np.ndarray] = []
        after: list[np.ndarray] = []
        details: dict[int, FrameDetail] = {}
        timings: dict[str, float] = {}
        computed: list[str] = []
        size: tuple[int, int] = target_size(src.size[0], src.size[1], config.max_side)
        counters0 = self.backbone.counters.snapshot()
        for sb in self.stream(src, config, mode=mode, keep=keep, progress=progress):
            batch = sb.result
            labels.append(sb.labels)
            before.append(batch.before)
            after.append(batch.after)
            details.update(batch.details)
            for name, sec in batch.timings.items():
                timings[name] = timings.get(name, 0.0) + sec
            computed += [c for c in batch.computed if c not in computed]
        n = sum(len(x) for x in labels)
        cache = self.cache.current(n)
        return SegmentationResult(
            labels=np.concatenate(labels),
            coarse_before=np.concatenate(before),
            coarse_after=np.concatenate(after),
            mode=mode,
            config=config,
            fps=float(src.fps),
            size=size,
            original_size=tuple(src.size),
            details=details,
            features=cache.features.get(self.feature_key(config)) if cache else None,
            timings=timings,
            work=self.backbone.counters.since(counters0),
            is_random_model=self.backbone.is_random,
            computed=tuple(computed),
        )

    def iter_batches(
        self,
        frames: np.ndarray,
        config: SegConfig,
        *,
        mode: Mode = "full",
        keep: set[int] | None = None,
        progress: bool = True,
    ) -> Iterator[BatchResult]:
        """Figure 3 over batches of B frames of ``frames`` (already at the processing size).

        Yields one :class:`BatchResult` per batch, in order. Memory is bounded by one batch plus the cache
        (clips up to ``cache_frames`` frames). Omega's state carries from batch to batch (the
        autoregressive update), so the batches must be consumed in order.
        """
        n = len(frames)
        loop = _Loop(self, config, mode, keep, progress, self.cache.for_clip(frames))
        starts = range(0, n, config.batch_size)
        for a in tqdm(starts, desc="batches", disable=not progress or len(starts) == 1):
            b = min(n, a + config.batch_size)
            # (no update after the last batch: nothing is left to predict)
            yield loop.step(a, frames[a:b], update=b < n)
        loop.finish()

    def stream(
        self,
        clip: Clip | np.ndarray | str | VideoStream | Any,
        config: SegConfig | None = None,
        *,
        mode: Mode | None = None,
        keep: Sequence[int] | Literal["all", "auto"] | None = None,
        progress: bool = True,
        start_batch: int = 0,
        state: StreamState | None = None,
    ) -> Iterator[StreamBatch]:
        """Figure 3 over a clip read lazily (:func:`~vidseg_nb.video.open_video`), batch by batch.

        Holds one batch of frames (original and processing size), Omega's fit data (F~, M~ of the
        previous batch) and the current outputs; yields one :class:`StreamBatch` per batch, with the labels
        Y of the batch at input resolution (uint8) and the batch's original frames. The per-batch steps are
        those of :meth:`iter_batches` (one loop body), so the labels equal :meth:`segment`'s.

        ``start_batch``/``state``: resume after ``start_batch`` finished batches, ``state`` being the
        :meth:`StreamBatch.state` of the last of them (Omega is refitted on its F~ and M~, so the next
        prediction is bit-identical; frame noise is seeded by absolute frame index). The frames before
        are decoded but not processed. A clip whose length is known exactly and within ``cache_frames``
        (and no resume) goes through the stage cache, as :meth:`segment`.

        ``progress``: a tqdm bar in frames (total: the clip's frame count when known) with an ETA.
        """
        config = config or self.config
        mode = mode or ("full" if config.modulation else "preview")
        if (start_batch > 0) != (state is not None):
            raise ValueError("stream: pass start_batch > 0 together with the state of that batch")
        if state is not None and state.next_batch != start_batch:
            raise ValueError(f"stream: the state is of batch {state.next_batch}, not {start_batch}")
        if isinstance(clip, VideoStream):
            src = clip
        else:
            src = open_video(_as_source(clip, config), max_frames=config.max_frames)
        bsz = config.batch_size
        first = start_batch * bsz
        total = src.n_frames
        bar = tqdm(
            total=total, initial=first, unit="frame", desc="segment", disable=not progress,
            dynamic_ncols=True, smoothing=0.1,
        )  # fmt: skip
        try:
            if state is None and total is not None and self.cache.accepts(total):
                # a short clip: read whole (at most cache_frames frames) and go through the stage cache
                clip_frames = src.read().frames
                size = target_size(clip_frames.shape[1], clip_frames.shape[2], config.max_side)
                frames = resize_frames(clip_frames, size)
                n = len(frames)
                cache = self.cache.for_clip(frames)
                loop = _Loop(self, config, mode, _stream_keep(keep, n), False, cache)
                for k, a in enumerate(range(0, n, bsz)):
                    b = min(n, a + bsz)
                    yield self._stream_batch(
                        k, clip_frames[a:b], loop.step(a, frames[a:b], update=True), loop
                    )
                    bar.update(b - a)
                loop.finish()
                return
            size = target_size(src.size[0], src.size[1], config.max_side)
            loop = _Loop(
                self, config, mode, _stream_keep(keep, total if src.n_frames_exact else None), False, None
            )
            if state is not None:
                loop.restore(state)
            for k, orig in enumerate(src.batches(bsz, start=first), start=start_batch):
                t0 = time.perf_counter()
                frames = resize_frames(orig, size)
                res = loop.step(k * bsz, frames, update=True, resize_s=time.perf_counter() - t0)
                del frames
                yield self._stream_batch(k, orig, res, loop)
                bar.update(len(orig))
        finally:
            bar.close()

    def _stream_batch(
        self, k: int, orig: np.ndarray, res: BatchResult, loop: _Loop | None = None
    ) -> StreamBatch:
        t0 = time.perf_counter()
        labels = resize_labels(res.final, orig.shape[1:3]).astype(np.uint8)  # Y at input size
        res.timings["resize"] = res.timings.get("resize", 0.0) + time.perf_counter() - t0
        return StreamBatch(
            index=k, frames=orig, labels=labels, result=res, _fit=loop.last_fit if loop else None
        )


@dataclass
class StreamState:
    """What a resumed :meth:`VideoSegmenter.stream` needs after ``next_batch`` finished batches
    (``frames_done`` frames): Omega's fit data, the F~ (b, h, w, C) and M~ (b, h, w) int64 of the last
    finished batch (Omega is refitted on them: its KNN holds exactly that data)."""

    next_batch: int
    frames_done: int
    features: np.ndarray
    labels: np.ndarray

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
        )
        os.replace(tmp, path)
        return path

    @staticmethod
    def load(path: str | Path) -> tuple[StreamState, dict[str, Any]]:
        """(state, meta) written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            st = StreamState(int(z["next_batch"]), int(z["frames_done"]), z["features"], z["labels"])
            return st, json.loads(str(z["meta"]))


@dataclass
class StreamBatch:
    """One batch of :meth:`VideoSegmenter.stream`: batch ``index`` (0-based), frames ``start:stop`` of the
    clip; ``frames`` the original frames (b, H0, W0, 3) uint8; ``labels`` Y at input resolution
    (b, H0, W0) uint8; ``result`` the :class:`BatchResult` (M^j, M~^j, Y at processing size, details,
    timings). :meth:`state` is the checkpoint after this batch."""

    index: int
    frames: np.ndarray
    labels: np.ndarray
    result: BatchResult
    _fit: tuple[Any, np.ndarray] | None = field(default=None, repr=False)

    @property
    def start(self) -> int:
        return self.result.start

    @property
    def stop(self) -> int:
        return self.result.stop

    def __len__(self) -> int:
        return self.stop - self.start

    def state(self) -> StreamState:
        """The :class:`StreamState` after this batch (F~ kept float32, or float64 if it was: exact)."""
        if self._fit is None:
            raise RuntimeError("no checkpoint: this batch's coarse maps came from the stage cache")
        f, m = self._fit
        f = f.detach().cpu() if isinstance(f, torch.Tensor) else torch.as_tensor(f)
        f = f if f.dtype == torch.float64 else f.float()
        return StreamState(self.index + 1, self.stop, f.numpy().copy(), np.asarray(m, np.int64).copy())


class _Loop:
    """The body of Figure 3 for one batch (:meth:`step`), shared by :meth:`VideoSegmenter.iter_batches`,
    :meth:`VideoSegmenter.stream` and so :meth:`VideoSegmenter.segment`; Omega carries between steps."""

    def __init__(
        self,
        seg: VideoSegmenter,
        config: SegConfig,
        mode: Mode,
        keep: set[int] | Literal["all"] | None,
        progress: bool,
        cache: ClipCache | None,
    ) -> None:
        self.seg, self.config, self.keep, self.progress, self.cache = (
            seg,
            config,
            keep or set(),
            progress,
            cache,
        )
        self.full = mode == "full"
        self.fkey, self.ckey = seg.feature_key(config), stage_key(config, "coarse")
        self.dkey = stage_key(config, "diff")
        self.cached_feats = cache.features.get(self.fkey) if cache else None
        self.cached_coarse = cache.coarse.get(self.ckey) if cache else None
        self.cached_diffs = cache.diffs.get(self.dkey) if cache and self.full else None
        self.computed = tuple(
            name
            for name, todo in (
                ("features", self.cached_feats is None),
                ("coarse maps", self.cached_coarse is None),
                ("stage 3", self.full and self.cached_diffs is None),
                ("filter", self.full),
            )
            if todo
        )
        self.new_feats: list[Features] = []
        self.new_coarse: list[tuple[np.ndarray, np.ndarray]] = []
        self.new_diffs: list[FrameDiff] = []
        # on a GPU the KNN and the refinement run there (torch backend of Omega)
        bb = seg.backbone
        self.dev = bb.device if bb.device.type == "cuda" else torch.device("cpu")
        self.omega = SceneContextModel.from_config(config)
        self.last_fit: tuple[Any, np.ndarray] | None = None  # (F~, M~) Omega was last fitted on

    def restore(self, state: StreamState) -> None:
        """Omega as after batch ``state.next_batch - 1``: the KNN refitted on that batch's (F~, M~)."""
        f = torch.from_numpy(np.ascontiguousarray(state.features)).to(self.dev)
        self.omega.fit(f, state.labels)
        self.last_fit = (f, state.labels)

    def step(self, a: int, frames: np.ndarray, *, update: bool, resize_s: float = 0.0) -> BatchResult:
        """Steps 0-4 for the frames ``a:a+len(frames)`` (processing size), then, with ``update``, the
        autoregressive update ``omega.fit(F~, M~)`` of this batch for the next one."""
        config, seg, full, dev, omega = self.config, self.seg, self.full, self.dev, self.omega
        cached_feats, cached_coarse, cached_diffs = self.cached_feats, self.cached_coarse, self.cached_diffs
        b = a + len(frames)
        timings: dict[str, float] = {"resize": resize_s} if resize_s else {}

        def tick(name: str, t0: float) -> None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0

        # step 0: reference run -> F~ (and, when stage 3 follows, the q/k and latents it replays)
        need_diff = full and cached_diffs is None
        ref = None
        t0 = time.perf_counter()
        if need_diff or cached_feats is None:
            ref = reference_run(
                seg.backbone, frames, config, frame_offset=a, record_qk=need_diff, progress=self.progress
            )
            tick("reference run" if need_diff else "features", t0)
        feats = cached_feats[a:b] if cached_feats is not None else ref.features
        if self.cache is not None:
            self.new_feats.append(feats)

        t0 = time.perf_counter()
        f_tilde = None
        if cached_coarse is not None:
            m_before, m_after = cached_coarse[0][a:b], cached_coarse[1][a:b]
        else:
            f_tilde = feats.stage1(config.aggregate).to(dev)
            # step 1: scene context model: K-Means + KNN on the first batch -> M^1..M^B, then Omega
            m_before = omega.fit_predict(f_tilde) if a == 0 else omega.predict(f_tilde)
            # step 2: correspondence-based refinement M^j -> M~^j
            if config.refine and b - a > 1:
                m_after = refine(m_before, feats.corr.to(dev), radius2=config.radius2)
            else:
                m_after = m_before.copy()
            tick("coarse maps (stages 1-2)", t0)
        if self.cache is not None:
            self.new_coarse.append((m_before, m_after))

        rel_keep = set(range(b - a)) if self.keep == "all" else {i - a for i in self.keep if a <= i < b}
        filtered: list[np.ndarray | None] = [None] * (b - a)
        batch_diffs: list[FrameDiff] | None = None
        if full:
            # step 3: masked modulation -> the difference maps D_l
            t0 = time.perf_counter()
            if cached_diffs is not None:
                batch_diffs = cached_diffs[a:b]
            else:
                mo = modulate(
                    seg.backbone, ref, m_after, config, keep_images=rel_keep, progress=self.progress
                )
                batch_diffs = mo.frames
                tick("modulation (stage 3)", t0)
            if self.cache is not None:
                self.new_diffs.extend(batch_diffs)
            # step 4: filtering (s) and argmax -> Y
            t0 = time.perf_counter()
            fin = [final_labels(d, m, config.s_effective) for d, m in zip(batch_diffs, m_after)]
            filtered = [f for f, _ in fin]
            final = np.stack([y for _, y in fin])
            tick("filter + argmax", t0)
        else:  # preview: Y = M~^j upsampled
            final = resize_labels(m_after, frames.shape[1:3])
        del ref

        # the autoregressive update: Omega <- (F~^j, M~^j) of this batch only, for the next batch
        if f_tilde is not None and update:
            t0 = time.perf_counter()
            omega.fit(f_tilde, m_after)
            self.last_fit = (f_tilde, m_after)
            tick("coarse maps (stages 1-2)", t0)

        details = {
            a + r: _detail(a + r, frames[r], feats[r : r + 1], config, m_before[r], m_after[r],
                           final[r], None if batch_diffs is None else batch_diffs[r], filtered[r])
            for r in sorted(rel_keep)
        }  # fmt: skip
        return BatchResult(
            start=a,
            stop=b,
            before=m_before,
            after=m_after,
            final=final,
            details=details,
            features=feats,
            diffs=batch_diffs,
            timings=timings,
            computed=self.computed,
        )

    def finish(self) -> None:
        """Store what this run computed in the clip's cache entry (if the clip is cached)."""
        cache = self.cache
        if cache is None:
            return
        if self.cached_feats is None and self.new_feats:
            cache.features.setdefault(self.fkey, Features.concat(self.new_feats))
        if self.new_coarse:
            cache.coarse.setdefault(
                self.ckey,
                (
                    np.concatenate([m for m, _ in self.new_coarse]),
                    np.concatenate([m for _, m in self.new_coarse]),
                ),
            )
        if self.full:
            cache.diffs.setdefault(self.dkey, self.new_diffs)


def _detail(
    index: int,
    frame: np.ndarray,
    feats: Features,
    config: SegConfig,
    before: np.ndarray,
    after: np.ndarray,
    final: np.ndarray,
    diff: FrameDiff | None,
    filtered: np.ndarray | None,
) -> FrameDetail:
    """The :class:`FrameDetail` of one kept frame (``feats``: its features, a 1-frame slice)."""
    fd = {blk: t[0].numpy() for blk, t in feats.blocks.items()}
    fd[0] = feats.stage1(config.aggregate)[0].numpy()
    return FrameDetail(
        index=index,
        frame=frame,
        features=fd,
        coarse_before=before,
        coarse_after=after,
        final=final,
        diff=diff,
        filtered=filtered,
    )


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


def _keep_set(keep: Sequence[int] | str | None, n: int) -> set[int]:
    if keep is None:
        return set()
    if keep == "all":
        return set(range(n))
    if keep == "auto":
        return set(range(n)) if n <= 32 else {0}
    return {int(i) % n for i in keep}


def segment_clip(
    clip: Clip | np.ndarray | str,
    model: str | Backbone = "tiny",
    config: SegConfig | None = None,
    **kw: Any,
) -> SegmentationResult:
    """One call: load the backbone (``model``: a source for :func:`load_backbone` or a Backbone) and segment."""
    from .loading import load_backbone

    bb = model if isinstance(model, Backbone) else load_backbone(model)
    return VideoSegmenter(bb, config).segment(clip, **kw)


def device_info(backbone: Backbone) -> str:
    """A one-line description of where the backbone runs (for benchmarks and the demo)."""
    dev = backbone.device
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} ({backbone.dtype})"
    return f"CPU ({backbone.dtype})"
