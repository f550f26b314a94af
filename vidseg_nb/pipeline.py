"""The whole method, batch by batch: :class:`VideoSegmenter` (paper Figure 3).

For each batch of B frames (:meth:`VideoSegmenter.stream`):

0. reference run: the features F~ (and F_c, and the q/k and latents stage 3 replays);
1. scene context model Omega: on the first batch K-Means gives M^1 and the KNN fitted on (F~^1, M^1)
   predicts M^2..M^B (``omega.fit_predict``); on later batches Omega predicts M^j (``omega.predict``);
2. correspondence-based refinement (CBR): M^j -> M~^j;
3. masked modulation: the difference maps D_l;
4. filtering and argmax: the label maps Y;

then the autoregressive update ``omega.fit(F~, M~)`` on this batch only, for the next batch. One loop
over a clip, :meth:`~VideoSegmenter.stream` (a clip read lazily, batch by batch, following
:func:`~vidseg_nb.authors.batch_plan`: memory does not grow with the clip; a short clip is read whole for
the stage cache; yields :class:`StreamBatch` with the labels at input resolution and a :class:`StreamState`
checkpoint to resume from), runs the loop body (``_Loop.step``) on each batch;
:meth:`~VideoSegmenter.segment` collects it and :meth:`~VideoSegmenter.iter_batches` (frames already at
the processing size) yields its batch results.

Caching (:mod:`vidseg_nb.cache`): a segmenter remembers, per clip, the features (keyed on the fields the
reference run reads), the coarse maps (plus the stage-1/2 fields) and the raw difference maps D_l (plus
the stage-3 fields), so a new s only re-filters, a new lambda reruns stage 3 only, and a new cluster count
reruns stages 1-3 but not the feature extraction. Stage 3 needs the reference run's q/k (about 180 MB
per 512x512 frame in fp16): ``self.qk_cache`` (:mod:`vidseg_nb.qkcache`) keeps them while they fit
(``SegConfig.keep_qk``; by default on CUDA only), else a stage-3 rerun repeats the reference run of each batch as
part of stage 3 (its samples are counted in ``work``). Clips longer than ``cache_frames`` are not
cached, and intermediates are kept only for the frames asked for, so memory stays bounded for long clips.

Names (issue 13, :mod:`vidseg_nb.names`): ``segment(clip, names=[...])`` also records the cross-attention
queries of the first batch's reference run (decoder blocks 3-8 at the feature step; ``name_blocks`` /
``name_step`` of the segmenter), names the clusters of M~ of the first batch and carries the names with
the cluster ids (``result.names``; :class:`ClipNamer`, from :meth:`VideoSegmenter.name_tracker`, does
this batch by batch, also for a caller of :meth:`~VideoSegmenter.stream`). The queries are kept on the
result and cached per clip, so :meth:`VideoSegmenter.rename` (another vocabulary) costs zero UNet samples.

The authors' code (issue 15, :mod:`vidseg_nb.authors`; each switch off by default) runs in the same loop:
their overlapping last batch (``shifted_last_batch``) is the stream's plan (a batch yields its frames up
to the next batch's start, the overlapped ones are held back for the next batch), their first-frame
ground truth (``gt_merge``) an input of the stream; both stream, checkpoint and resume as any setting.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .authors import (
    authors_coarse_batch,
    authors_refine,
    batch_plan,
    merge_first_batch,
    plan_overlaps,
    require_cv2,
)
from .backbone import Backbone
from .cache import ClipCache, StageCache, StageEntries, clip_key, diff_key, feature_key, stage_key
from .config import SegConfig
from .context import SceneContextModel
from .features import Features, reference_run
from .modulation import FrameDiff, final_labels, modulate
from .names import (
    DEFAULT_MARGIN,
    NAME_BLOCKS,
    ClusterName,
    NameTracker,
    Vocabulary,
    VocabularyError,
    encode_vocabulary,
    require_text_encoder,
    unet_word_attention,
)
from .qkcache import QKCache
from .refine import refine
from .video import Clip, VideoStream, open_video, read_video, resize_frames, resize_labels, target_size

__all__ = [
    "BatchResult",
    "ClipNamer",
    "FrameDetail",
    "SegmentationResult",
    "StreamBatch",
    "StreamState",
    "VideoSegmenter",
    "clip_key",
    "parse_vocabulary",
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
    final: np.ndarray  # Y (H, W) (the input size H0 x W0 with SegConfig.resize_decoded, issue 15 row 3)
    diff: FrameDiff | None = None  # D_l before filtering (+ I+/I-), at Y's size
    filtered: np.ndarray | None = None  # D~_l (L, H, W), at Y's size


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
    # open-vocabulary names (issue 13; empty unless ``segment(..., names=[...])``): label id -> ClusterName
    # (``.name``, ``.score``, ``.margin``, ``.best``), decided on the first batch, carried with the ids
    names: dict[int, ClusterName] = field(default_factory=dict)
    vocabulary: tuple[str, ...] = ()
    word_attention: torch.Tensor | None = None  # A (B_1, h, w, V) of the first batch's frames
    name_queries: dict[str, torch.Tensor] | None = None  # first batch's attn2 queries (float16): rename()

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

    ``before`` M^j and ``after`` M~^j (B, h, w) int64; ``final`` Y (B, H, W) int64 at the processing size
    (at the input frame size with ``SegConfig.resize_decoded`` and the ``original_size`` given, issue 15 row 3);
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
    name_queries: dict[str, torch.Tensor] | None = None  # first batch with ``record_names`` (issue 13)

    def __len__(self) -> int:
        return self.stop - self.start


class VideoSegmenter:
    """Zero-shot video semantic segmentation with a diffusion backbone (the paper's full method).

    ``VideoSegmenter(backbone, config).segment(clip)`` -> :class:`SegmentationResult`.
    ``cache_frames``: clips up to this many frames keep their stages cached in ``self.cache``
    (:class:`~vidseg_nb.cache.StageCache`; the demo keeps one segmenter per session); 0 disables caching.
    """

    def __init__(
        self,
        backbone: Backbone,
        config: SegConfig | None = None,
        *,
        cache_frames: int = 120,
        name_blocks: Sequence[int] = NAME_BLOCKS,
        name_step: int | None = None,
        name_margin: float = DEFAULT_MARGIN,
    ) -> None:
        self.backbone = backbone
        self.config = config or SegConfig()
        if self.config.resize_decoded:  # issue 15 row 3 needs the optional OpenCV: say so now, not mid-run
            require_cv2()
        self.cache = StageCache(cache_frames)
        # names (issue 13): decoder blocks and step whose attn2 queries are recorded (default 3-8 at the
        # feature step), the margin below which a cluster stays unnamed; one cached set of queries
        self.name_blocks, self.name_step, self.name_margin = tuple(name_blocks), name_step, name_margin
        self._name_queries: tuple[tuple, dict[str, torch.Tensor]] | None = None
        self.record_names = False  # default of segment(record_names=None) (the demo sets it: rename later)
        self.qk_cache = QKCache()  # kept reference runs for stage-3 reruns (SegConfig.keep_qk)

    @property
    def cache_frames(self) -> int:
        return self.cache.max_frames

    @cache_frames.setter
    def cache_frames(self, n: int) -> None:
        self.cache.max_frames = n

    def clear_cache(self) -> None:
        self.cache.clear()
        self._name_queries = None
        self.qk_cache.clear()

    def feature_key(self, config: SegConfig) -> tuple:
        """Cache key of the features: the fields the reference run reads, plus B for a backbone that
        denoises the frames of a batch jointly (SVD: a frame's features depend on its batch)."""
        joint = self.backbone is not None and self.backbone.frames_per_group(config.batch_size) > 1
        # issue 15 row 9: with one noise draw per batch a frame's features depend on its place in the batch
        return feature_key(config, joint_frames=joint or config.batch_noise)

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
        first_frame_gt: np.ndarray | None = None,
        names: Sequence[str] | str | None = None,
        record_names: bool | None = None,
    ) -> SegmentationResult:
        """Segment ``clip``; ``mode`` defaults to ``"full"`` (``"preview"`` when ``config.modulation`` is off).

        ``keep``: frames whose intermediates are kept (``"auto"``: all frames of clips up to 32 frames).
        Collects :meth:`stream` (short clips go through the stage cache); for long clips iterate
        :meth:`stream` instead, which does not hold the whole clip's labels (with the authors' overlapping
        last batch, ``config.shifted_last_batch``, the later batch wins the overlap).
        ``first_frame_gt``: frame 1's ground truth (H0, W0), read only with ``config.gt_merge`` (issue 15
        row 6, the authors' protocol): the labels are then ground-truth classes (see :meth:`stream`).
        ``names``: a vocabulary (words, or one comma-separated string) to name the segments with (issue 13:
        ``result.names``); ``record_names`` (default: ``names`` given, or ``self.record_names``) records the
        first batch's cross-attention queries so :meth:`rename` can name the result with any vocabulary
        later, with no UNet work. Without either, nothing changes (the default path's labels and work are the same).
        """
        config = config or self.config
        namer = self.name_tracker(names) if names is not None else None  # bad words fail before any UNet run
        record = namer is not None or bool(self.record_names if record_names is None else record_names)
        queries = None
        mode = mode or ("full" if config.modulation else "preview")
        details: dict[int, FrameDetail] = {}
        timings: dict[str, float] = {}
        computed: list[str] = []
        counters0 = self.backbone.counters.snapshot()

        def collect(batch: BatchResult) -> None:
            nonlocal queries
            if batch.name_queries is not None:
                queries = batch.name_queries
            if namer is not None:  # names decided on the first batch, carried with the cluster ids
                namer.update(batch)
            details.update(batch.details)
            for name, sec in batch.timings.items():
                timings[name] = timings.get(name, 0.0) + sec
            computed.extend(c for c in batch.computed if c not in computed)

        src = (
            clip
            if isinstance(clip, VideoStream)
            else open_video(_as_source(clip, config), max_frames=config.max_frames)
        )
        size = target_size(src.size[0], src.size[1], config.max_side)
        original_size = tuple(src.size)
        fps = float(src.fps)
        parts: list[np.ndarray] = []
        before_parts: list[np.ndarray] = []
        after_parts: list[np.ndarray] = []
        for sb in self.stream(
            src, config, mode=mode, keep=keep, progress=progress, record_names=record,
            first_frame_gt=first_frame_gt,
        ):  # fmt: skip
            parts.append(sb.labels)  # the frames this batch is final for (a later batch wins an overlap)
            before_parts.append(sb.before)
            after_parts.append(sb.after)
            collect(sb.result)
        labels = np.concatenate(parts)
        before, after = np.concatenate(before_parts), np.concatenate(after_parts)
        n = len(labels)
        cache = self.cache.current(n)
        return SegmentationResult(
            labels=labels,
            coarse_before=before,
            coarse_after=after,
            mode=mode,
            config=config,
            fps=fps,
            size=size,
            original_size=original_size,
            details=details,
            features=cache.features.get(self.feature_key(config)) if cache else None,
            timings=timings,
            work=self.backbone.counters.since(counters0),
            is_random_model=self.backbone.is_random,
            computed=tuple(computed),
            names=namer.names if namer is not None else {},
            vocabulary=namer.vocabulary if namer is not None else (),
            word_attention=namer.attention if namer is not None else None,
            name_queries=queries,
        )

    def iter_batches(
        self,
        frames: np.ndarray,
        config: SegConfig,
        *,
        mode: Mode = "full",
        keep: set[int] | None = None,
        progress: bool = True,
        first_frame_gt: np.ndarray | None = None,
        record_names: bool = False,
        original_size: tuple[int, int] | None = None,
    ) -> Iterator[BatchResult]:
        """Figure 3 over batches of B frames of ``frames`` (already at the processing size): the
        :class:`BatchResult` of each batch of :meth:`stream`'s plan, in order (whole batches, also where
        the authors' last batch overlaps the previous one: a consumer writing by frame index lets the later
        batch win). ``original_size``: the clip's input frame size (H0, W0); with
        ``config.resize_decoded`` (issue 15 row 3) D_l, the filtered maps and Y are computed there; None:
        the processing size. The other arguments are :meth:`stream`'s.
        """
        frames = np.asarray(frames)
        for sb in self._drive(
            frames, config, mode=mode, keep=keep or set(), progress=progress, first_frame_gt=first_frame_gt,
            record_names=record_names, size=tuple(frames.shape[1:3]), original_size=original_size,
        ):  # fmt: skip
            yield sb.result

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
        record_names: bool = False,
        first_frame_gt: np.ndarray | None = None,
    ) -> Iterator[StreamBatch]:
        """Figure 3 over a clip read lazily (:func:`~vidseg_nb.video.open_video`), batch by batch: the one
        loop over a clip (:meth:`segment` collects it, :meth:`iter_batches` yields its batch results).

        The batches follow :func:`~vidseg_nb.authors.batch_plan` (computed once from the frame count; a
        video file whose container gives no exact count is counted first when the plan needs N, else read
        in batches of B until it ends). Holds at most two batches of frames (original and processing
        size), Omega's fit data and the current outputs; yields one :class:`StreamBatch` per batch with the
        labels Y at input resolution (uint8) of the frames it is final for: with the authors' overlapping
        last batch (``config.shifted_last_batch``, issue 15 row 7) a batch yields its frames only up to the
        next batch's start (the later batch wins the overlap), so the frames yielded are the clip's, once.

        ``start_batch``/``state``: resume after ``start_batch`` finished batches, ``state`` being the
        :meth:`StreamBatch.state` of the last of them (Omega is refitted on its F~ and M~, or the authors'
        KNN reference restored, so the next prediction is bit-identical; frame noise is seeded by absolute
        frame index). The frames before are decoded but not processed. A clip whose length is known
        exactly and within ``cache_frames`` (and no resume) is read whole and goes through the stage cache
        (unless batches overlap or a ground truth is given).

        ``first_frame_gt``: frame 1's ground truth (H0, W0), read only with ``config.gt_merge`` (issue 15
        row 6, the authors' protocol): the first batch's clusters are merged by it, so the labels are
        ground-truth classes. ``record_names``: the first batch's result also carries its cross-attention
        queries (``name_queries``, issue 13). ``progress``: a tqdm bar in frames (total: the clip's frame
        count when known) with an ETA.
        """
        return self._drive(
            clip, config, mode=mode, keep=keep, progress=progress, start_batch=start_batch, state=state,
            record_names=record_names, first_frame_gt=first_frame_gt,
        )  # fmt: skip

    def _drive(
        self,
        clip: Clip | np.ndarray | str | VideoStream | Any,
        config: SegConfig | None,
        *,
        mode: Mode | None,
        keep: Sequence[int] | Literal["all", "auto"] | set[int] | None,
        progress: bool,
        start_batch: int = 0,
        state: StreamState | None = None,
        record_names: bool = False,
        first_frame_gt: np.ndarray | None = None,
        size: tuple[int, int] | None = None,
        original_size: tuple[int, int] | None | Literal["clip"] = "clip",
    ) -> Iterator[StreamBatch]:
        """:meth:`stream` (``size``: the processing size, default from the clip; ``original_size``: the
        size D_l and Y are computed at with ``resize_decoded``, default the clip's frame size)."""
        config = config or self.config
        mode = mode or ("full" if config.modulation else "preview")
        if (start_batch > 0) != (state is not None):
            raise ValueError("stream: pass start_batch > 0 together with the state of that batch")
        if state is not None and state.next_batch != start_batch:
            raise ValueError(f"stream: the state is of batch {state.next_batch}, not {start_batch}")
        src = (
            clip
            if isinstance(clip, VideoStream)
            else open_video(_as_source(clip, config), max_frames=config.max_frames)
        )
        size = size or target_size(src.size[0], src.size[1], config.max_side)
        out_size = tuple(src.size) if original_size == "clip" else original_size
        n = src.n_frames if src.n_frames_exact else None
        if n is None and config.shifted_last_batch:  # the authors' plan needs N: count the frames first
            n = sum(1 for _ in src.frames())
        plan = batch_plan(n, config) if n is not None else None  # None: batches of B until the clip ends
        if plan is not None and start_batch > len(plan):
            raise ValueError(
                f"stream: the clip has {len(plan)} batches, cannot resume at batch {start_batch}"
            )
        gt_first = first_frame_gt if config.gt_merge else None
        if plan is None:
            first = start_batch * config.batch_size
        else:  # frames done after start_batch batches: the next batch's start (the clip's end after the last)
            first = plan[start_batch][0] if start_batch < len(plan) else n
        if state is not None and state.frames_done != first:
            raise ValueError(f"stream: the state is at frame {state.frames_done}, the plan at {first}")
        cache = None
        if state is None and n is not None and self.cache.accepts(n):
            # a short clip: read whole (at most cache_frames frames) and go through the stage cache
            whole = src.read().frames
            proc = resize_frames(whole, size)
            cache = self.cache.for_clip(proc)  # (also makes this clip the current one)
            windows: Iterator[tuple[int, np.ndarray, np.ndarray | None, int]] = (
                (a, whole[a:b], proc[a:b], b - a) for a, b in plan
            )
            if plan_overlaps(plan) or gt_first is not None:
                cache = None  # a frame in two batches, or clusters merged by a GT: no per-frame cache
        else:
            windows = _FrameWindows(src, plan, config.batch_size, start_batch, first)
        loop = _Loop(
            self, config, mode, _stream_keep(keep, n), False, cache, gt_first=gt_first,
            record_names=record_names, original_size=out_size,
        )  # fmt: skip
        if state is not None:
            loop.restore(state)
        # (no Omega update with the authors' KNN: each batch's KNN is fitted on the previous batch's M~)
        update = not config.knn_first_frame
        bar = tqdm(
            total=n, initial=first, unit="frame", desc="segment", disable=not progress,
            dynamic_ncols=True, smoothing=0.1,
        )  # fmt: skip
        try:
            for k, (a, orig, frames, held) in enumerate(windows, start=start_batch):
                t0 = time.perf_counter()
                frames = resize_frames(orig, size) if frames is None else frames
                res = loop.step(a, frames, update=update, resize_s=time.perf_counter() - t0)
                del frames
                # the frames this batch is final for: up to the next batch's start (the later batch wins)
                stop = plan[k + 1][0] if plan is not None and k + 1 < len(plan) else res.stop
                yield self._stream_batch(k, orig[: stop - a], res, loop, stop, held)
                bar.update(stop - a)
            loop.finish()
        finally:
            bar.close()

    def _stream_batch(
        self, k: int, orig: np.ndarray, res: BatchResult, loop: _Loop, stop: int, held: int
    ) -> StreamBatch:
        t0 = time.perf_counter()
        m = stop - res.start
        labels = resize_labels(res.final[:m], orig.shape[1:3]).astype(np.uint8)  # Y at input size
        res.timings["resize"] = res.timings.get("resize", 0.0) + time.perf_counter() - t0
        return StreamBatch(
            index=k, frames=orig, labels=labels, result=res, stop=stop, held=held,
            _fit=loop.last_fit, _knn=loop.knn_ref,
        )  # fmt: skip

    # ------------------------------------------------------------------ stage entries
    def export_stages(
        self, frames: Clip | np.ndarray | str | Any, config: SegConfig | None = None, mode: Mode | None = None
    ) -> StageEntries:
        """The cached entries a run of ``segment(frames, config, mode=mode)`` reads, detached from this
        segmenter: the features F~ (feature key), the coarse maps (M^j, M~^j) (coarse key) and, in full
        mode, the raw D_l (diff key), each only when cached. ``frames``: what :meth:`segment` accepts.
        The feature key needs ``self.backbone`` (SVD adds B); the arrays are shared, not copied.
        """
        config = config or self.config
        mode = mode or ("full" if config.modulation else "preview")
        orig, proc, _ = self.prepare(frames, config)
        out = StageEntries(clip_key(proc), len(proc), (int(proc.shape[1]), int(proc.shape[2])))
        cache = self.cache.current(len(proc))
        if cache is None or cache.key != out.clip:
            return out
        fkey, ckey = self.feature_key(config), stage_key(config, "coarse")
        dkey = diff_key(config, tuple(orig.shape[1:3]))
        if fkey in cache.features:
            out.features[fkey] = cache.features[fkey]
        if ckey in cache.coarse:
            out.coarse[ckey] = cache.coarse[ckey]
        if mode == "full" and dkey in cache.diffs:
            out.diffs[dkey] = cache.diffs[dkey]
        return out

    def import_stages(self, frames: Clip | np.ndarray | str | Any, entries: StageEntries) -> int:
        """Add ``entries`` (from :meth:`export_stages`, maybe of another segmenter) to this segmenter's
        cache; existing entries are kept. ``frames``: the clip they belong to (what :meth:`segment`
        accepts; taken as ``entries`` processed them: first ``n_frames``, resized to ``size``). Another
        clip's cache is replaced, as a run would. Returns the number of entries added (0 for a clip too
        long to cache); raises ``ValueError`` when ``frames`` are not the entries' clip."""
        if len(entries) == 0:
            return 0
        if isinstance(frames, np.ndarray):
            arr = frames
        elif hasattr(frames, "frames"):
            arr = np.asarray(frames.frames)
        else:
            arr = read_video(frames, max_frames=entries.n_frames).frames
        arr = arr[: entries.n_frames]
        if tuple(arr.shape[1:3]) != tuple(entries.size):
            arr = resize_frames(arr, tuple(entries.size))
        if clip_key(arr) != entries.clip:
            raise ValueError("these stage entries belong to another clip")
        cache = self.cache.for_clip(arr)
        return 0 if cache is None else entries.merge_into(cache)

    # ------------------------------------------------------------------ names (issue 13)
    def vocabulary(self, words: Sequence[str] | str) -> Vocabulary:
        """Embed ``words`` (a list, or one comma-separated string) with the backbone's own tokenizer and
        text encoder (one prompt per word, :func:`~vidseg_nb.names.encode_vocabulary`); a backbone with
        none raises :class:`~vidseg_nb.names.TextEncoderError`, bad words :class:`VocabularyError`."""
        tokenizer, text_encoder = require_text_encoder(self.backbone)
        return encode_vocabulary(tokenizer, text_encoder, parse_vocabulary(words))

    def name_tracker(self, words: Sequence[str] | str, margin: float | None = None) -> ClipNamer:
        """A :class:`ClipNamer` for one clip: ``words`` embedded now (bad words fail before any UNet
        work), the names decided on the first batch it is given and carried with the cluster ids;
        ``margin`` defaults to ``self.name_margin``."""
        vocab = self.vocabulary(words)
        return ClipNamer(self, vocab, self.name_margin if margin is None else margin)

    def _cached_queries(self, key: tuple) -> dict[str, torch.Tensor] | None:
        """The cached first-batch queries of the clip/feature setting ``key`` (one entry), else None."""
        return self._name_queries[1] if self._name_queries and self._name_queries[0] == key else None

    def _word_attention(
        self, queries: dict[str, torch.Tensor] | None, vocab: Vocabulary, grid: tuple[int, int]
    ) -> torch.Tensor:
        """A (N, h, w, V) from recorded queries: text encoder + each site's ``to_k`` only, no UNet call."""
        if not queries:
            raise VocabularyError("no cross-attention queries were recorded: segment with names=[...] first")
        dev = self.backbone.device if self.backbone.device.type == "cuda" else None
        return unet_word_attention(queries, self.backbone.unet, vocab, grid, device=dev)

    def rename(
        self, result: SegmentationResult, words: Sequence[str] | str, margin: float | None = None
    ) -> SegmentationResult:
        """``result`` named with another vocabulary, from its cached first-batch queries: zero UNet samples
        (the text encoder embeds the words; each site's ``to_k`` projects them). Labels are unchanged."""
        namer = self.name_tracker(words, margin)
        if not result.name_queries:
            raise VocabularyError(
                "this result kept no cross-attention queries: segment with names=[...] (or record_names=True)"
            )
        after = result.coarse_after
        bsz = result.config.batch_size
        for a in range(0, len(after), bsz):
            namer.update_coarse(after[a : a + bsz], a, result.name_queries)
        return dataclasses.replace(
            result, names=namer.names, vocabulary=namer.vocabulary, word_attention=namer.attention
        )


class ClipNamer:
    """The segments of one clip named batch by batch (issue 13; from :meth:`VideoSegmenter.name_tracker`).

    The first batch given decides the names: the word attention A (N, h, w, V) from its recorded
    cross-attention queries (the text encoder and each site's ``to_k`` only, no UNet call) names the
    clusters of its M~; later batches carry the names with the cluster ids
    (:class:`~vidseg_nb.names.NameTracker`). ``names`` (label id -> ClusterName, sorted), ``vocabulary``
    and ``attention`` (A of the first batch) are what a :class:`SegmentationResult` holds.
    """

    def __init__(self, segmenter: VideoSegmenter, vocab: Vocabulary, margin: float) -> None:
        self.vocab = vocab
        self.vocabulary: tuple[str, ...] = tuple(vocab.words)
        self.tracker = NameTracker(list(vocab.words), margin)
        self.attention: torch.Tensor | None = None
        self._segmenter = segmenter

    @property
    def names(self) -> dict[int, ClusterName]:
        """Label id -> name of the clusters seen so far, sorted by id."""
        return dict(sorted(self.tracker.names.items()))

    def resume(self, names: Mapping[int, ClusterName]) -> None:
        """Continue a clip whose first batch decided ``names`` (a resumed run): later batches carry them."""
        self.tracker.names.update(names)
        self.tracker.decided = bool(names)

    def update_coarse(
        self, after: np.ndarray | torch.Tensor, start: int, queries: dict[str, torch.Tensor] | None = None
    ) -> dict[int, ClusterName]:
        """Names of the clusters of M~ ``after`` (B, h, w) of the batch at frame ``start``. The first batch
        needs its recorded ``queries`` (A is computed from them once); A also goes with a batch that
        starts at frame 0 again (the authors' overlapping plan, issue 15 row 7), to name an id new there."""
        first = not self.tracker.decided or start == 0
        if first and self.attention is None:
            self.attention = self._segmenter._word_attention(queries, self.vocab, tuple(after.shape[1:]))
        return self.tracker.update(after, self.attention if first else None)

    def update(self, batch: BatchResult) -> dict[int, ClusterName]:
        """:meth:`update_coarse` on a batch of :meth:`~VideoSegmenter.iter_batches` (or a
        :class:`StreamBatch`'s ``result``); its seconds are added to ``batch.timings["names"]``."""
        t0 = time.perf_counter()
        out = self.update_coarse(batch.after, batch.start, batch.name_queries)
        batch.timings["names"] = batch.timings.get("names", 0.0) + time.perf_counter() - t0
        return out


def parse_vocabulary(words: Sequence[str] | str) -> list[str]:
    """``"person, dog, grass"`` (commas or new lines) or a list -> the words, stripped (empties kept,
    so :func:`~vidseg_nb.names.encode_vocabulary` can say an empty word is there)."""
    if isinstance(words, str):
        parts = [w.strip() for w in words.replace("\n", ",").split(",")]
        return [] if not any(parts) else parts
    return [str(w).strip() for w in words]


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


class _Loop:
    """The body of Figure 3 for one batch (:meth:`step`), run by :meth:`VideoSegmenter.stream` (and so
    :meth:`~VideoSegmenter.segment` and :meth:`~VideoSegmenter.iter_batches`); Omega carries between steps."""

    def __init__(
        self,
        seg: VideoSegmenter,
        config: SegConfig,
        mode: Mode,
        keep: set[int] | Literal["all"] | None,
        progress: bool,
        cache: ClipCache | None,
        *,
        gt_first: np.ndarray | None = None,
        record_names: bool = False,
        original_size: tuple[int, int] | None = None,
    ) -> None:
        self.seg, self.config, self.keep, self.progress, self.cache = (
            seg,
            config,
            keep or set(),
            progress,
            cache,
        )
        self.full = mode == "full"
        if config.resize_decoded and self.full:  # issue 15 row 3 needs OpenCV: fail before any UNet run
            require_cv2()
        # issue 15 row 3 (resize_decoded): D_l, the filter and Y at the input frame size
        self.original_size = None if original_size is None else (int(original_size[0]), int(original_size[1]))
        self.fkey, self.ckey = seg.feature_key(config), stage_key(config, "coarse")
        self.dkey = diff_key(config, self.original_size)
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
        self.steps = 0  # batches stepped (or, after restore, finished): the first one fits Omega
        # issue 15: frame 1's GT (row 6, gt_merge) and the authors' KNN reference carried between batches
        self.gt_first = gt_first
        self.knn_ref: tuple[np.ndarray, np.ndarray] | None = None  # row 5
        self.record_names = record_names  # issue 13: the first batch records its attn2 queries

    def restore(self, state: StreamState) -> None:
        """Omega as after batch ``state.next_batch - 1``: the KNN refitted on that batch's (F~, M~)."""
        if state.features.size:
            f = torch.from_numpy(np.ascontiguousarray(state.features)).to(self.dev)
            self.omega.fit(f, state.labels)
            self.last_fit = (f, state.labels)
        if state.knn_features is not None:  # issue 15 row 5: the authors' KNN reference
            self.knn_ref = (state.knn_features, state.knn_labels)
        self.steps = state.next_batch

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
        # names (issue 13): the first batch's cross-attention queries, recorded once per clip
        cache, fkey = self.cache, self.fkey
        nkey = (cache.key if cache else None, fkey, seg.name_blocks, seg.name_step)
        names_now = self.record_names and a == 0
        queries = seg._cached_queries(nkey) if names_now else None
        rec = names_now and queries is None
        if need_diff or cached_feats is None or rec:
            # a kept reference run (QKCache, SegConfig.keep_qk) serves a stage-3 rerun, e.g. a new lambda
            bb_dev = seg.backbone.device
            ref = seg.qk_cache.get(frames, a, fkey, config, bb_dev) if need_diff and not rec else None
            if ref is None:
                ref = reference_run(
                    seg.backbone,
                    frames,
                    config,
                    frame_offset=a,
                    record_qk=need_diff,
                    progress=self.progress,
                    record_names=rec,
                    name_blocks=seg.name_blocks,
                    name_step=seg.name_step,
                )
                if need_diff:
                    seg.qk_cache.put(frames, a, fkey, ref, config, bb_dev)
            tick("reference run" if need_diff else "features", t0)
            if rec:
                queries = ref.name_queries
                seg._name_queries = (nkey, queries) if cache is not None else None
        feats = cached_feats[a:b] if cached_feats is not None else ref.features
        if self.cache is not None:
            self.new_feats.append(feats)

        t0 = time.perf_counter()
        f_tilde = None
        if cached_coarse is not None:
            m_before, m_after = cached_coarse[0][a:b], cached_coarse[1][a:b]
        else:
            f_tilde = feats.stage1(config.aggregate).to(dev)
            if config.knn_first_frame:  # issue 15 row 5 (and 6): the authors' K-Means + KNN
                f1 = feats.stage1(config.aggregate)
                m_before, _, self.knn_ref = authors_coarse_batch(
                    f1.reshape(b - a, -1, f1.shape[-1]), feats.grid, n_clusters=config.n_clusters,
                    seed=config.seed, gt_first=self.gt_first, ref=self.knn_ref,
                )  # fmt: skip
            else:
                # step 1: scene context model: K-Means + KNN on the first batch -> M^1..M^B, then Omega
                first = self.steps == 0
                m_before = omega.fit_predict(f_tilde) if first else omega.predict(f_tilde)
                if first and self.gt_first is not None:  # issue 15 row 6: merge clusters by frame 1's GT
                    m_before, _ = merge_first_batch(m_before, self.gt_first)
            # step 2: correspondence-based refinement M^j -> M~^j
            if config.refine and b - a > 1:
                if config.authors_cbr:  # issue 15 row 8
                    m_after = authors_refine(m_before, feats.corr)
                else:
                    m_after = refine(m_before, feats.corr.to(dev), radius2=config.radius2)
            else:
                m_after = m_before.copy()
            if self.knn_ref is not None:  # row 5: the next batch's KNN is fitted on this batch's M~
                self.knn_ref = (self.knn_ref[0], m_after.reshape(-1))
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
                    seg.backbone, ref, m_after, config, keep_images=rel_keep, progress=self.progress,
                    out_size=self.original_size,
                )  # fmt: skip
                batch_diffs = mo.frames
                tick("modulation (stage 3)", t0)
            if self.cache is not None:
                self.new_diffs.extend(batch_diffs)
            # step 4: filtering (s) and argmax -> Y
            t0 = time.perf_counter()
            fin = [
                final_labels(d, m, config.s_effective, lanczos=config.lanczos_filter)  # row 4
                for d, m in zip(batch_diffs, m_after)
            ]
            filtered = [f for f, _ in fin]
            final = np.stack([y for _, y in fin])
            tick("filter + argmax", t0)
        else:  # preview: Y = M~^j upsampled
            final = resize_labels(m_after, frames.shape[1:3])
        del ref

        # the autoregressive update: Omega <- (F~^j, M~^j) of this batch only, for the next batch
        # (the caller passes no update after the last batch, nor with the authors' KNN)
        if f_tilde is not None and update:
            t0 = time.perf_counter()
            omega.fit(f_tilde, m_after)
            self.last_fit = (f_tilde, m_after)
            tick("coarse maps (stages 1-2)", t0)

        self.steps += 1
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
            name_queries=queries if names_now else None,
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
