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
checkpoint to resume from; :mod:`vidseg_nb.streaming`), runs the loop body (``_Loop.step``,
:mod:`vidseg_nb.stages`: Figure 3's five steps, each stage chosen once from the config) on each batch;
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
their overlapping last batch (row 7) is the stream's plan (a batch yields its frames up
to the next batch's start, the overlapped ones are held back for the next batch), their first-frame
ground truth (row 6) an input of the stream; both stream, checkpoint and resume as any setting.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .authors import batch_plan, plan_overlaps, require_cv2
from .backbone import Backbone
from .cache import StageCache, StageEntries, clip_key, diff_key, feature_key, stage_key
from .config import SegConfig
from .features import Features
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
from .stages import BatchResult, FrameDetail, Mode, _choose_stages, _Loop
from .streaming import StreamBatch, StreamState, _as_source, _FrameWindows, _stream_keep
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
        if _choose_stages(self.config).needs_cv2:  # issue 15 row 3 needs OpenCV: say so now, not mid-run
            require_cv2()
        self.cache = StageCache(cache_frames)
        # names (issue 13): decoder blocks and step whose attn2 queries are recorded (default 3-8 at the
        # feature step), the margin below which a cluster stays unnamed (their queries: the clip's cache)
        self.name_blocks, self.name_step, self.name_margin = tuple(name_blocks), name_step, name_margin
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
        self.qk_cache.clear()

    def feature_key(self, config: SegConfig) -> tuple:
        """Cache key of the features: the fields the reference run reads, plus B for a backbone that
        denoises the frames of a batch jointly (SVD: a frame's features depend on its batch)."""
        joint = self.backbone is not None and self.backbone.frames_per_group(config.batch_size) > 1
        # issue 15 row 9: with one noise draw per batch a frame's features depend on its place in the batch
        return feature_key(config, joint_frames=joint or _choose_stages(config).joint_noise)

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
        last batch, issue 15 row 7, the later batch wins the overlap).
        ``first_frame_gt``: frame 1's ground truth (H0, W0), read only with the authors' first-frame merge
        (issue 15 row 6, their protocol): the labels are then ground-truth classes (see :meth:`stream`).
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
        batch win). ``original_size``: the clip's input frame size (H0, W0); with the authors' resize of
        the decoded images (issue 15 row 3) D_l, the filtered maps and Y are computed there; None: the
        processing size. The other arguments are :meth:`stream`'s.
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
        last batch (issue 15 row 7) a batch yields its frames only up to the
        next batch's start (the later batch wins the overlap), so the frames yielded are the clip's, once.

        ``start_batch``/``state``: resume after ``start_batch`` finished batches, ``state`` being the
        :meth:`StreamBatch.state` of the last of them (Omega is refitted on its F~ and M~, or the authors'
        KNN reference restored, so the next prediction is bit-identical; frame noise is seeded by absolute
        frame index). The frames before are decoded but not processed. A clip whose length is known
        exactly and within ``cache_frames`` (and no resume) is read whole and goes through the stage cache
        (unless batches overlap or a ground truth is given).

        ``first_frame_gt``: frame 1's ground truth (H0, W0), read only with the authors' first-frame merge
        (issue 15 row 6, their protocol): the first batch's clusters are merged by it, so the labels are
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
        size D_l and Y are computed at with issue 15 row 3's resize, default the clip's frame size)."""
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
        stages = _choose_stages(config)
        if n is None and stages.count_frames:  # the authors' plan needs N: count the frames first
            n = sum(1 for _ in src.frames())
        plan = batch_plan(n, config) if n is not None else None  # None: batches of B until the clip ends
        if plan is not None and start_batch > len(plan):
            raise ValueError(
                f"stream: the clip has {len(plan)} batches, cannot resume at batch {start_batch}"
            )
        gt_first = first_frame_gt if stages.merge_gt else None
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
        bar = tqdm(
            total=n, initial=first, unit="frame", desc="segment", disable=not progress,
            dynamic_ncols=True, smoothing=0.1,
        )  # fmt: skip
        try:
            for k, (a, orig, frames, held) in enumerate(windows, start=start_batch):
                t0 = time.perf_counter()
                frames = resize_frames(orig, size) if frames is None else frames
                res = loop.step(a, frames, update=True, resize_s=time.perf_counter() - t0)
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
