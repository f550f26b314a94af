"""The whole method, batch by batch: :class:`VideoSegmenter` (paper Figure 3).

For each batch of B frames (:meth:`VideoSegmenter.iter_batches`):

0. reference run: the features F~ (and F_c, and the q/k and latents stage 3 replays);
1. scene context model Omega: on the first batch K-Means gives M^1 and the KNN fitted on (F~^1, M^1)
   predicts M^2..M^B (``omega.fit_predict``); on later batches Omega predicts M^j (``omega.predict``);
2. correspondence-based refinement (CBR): M^j -> M~^j;
3. masked modulation: the difference maps D_l;
4. filtering and argmax: the label maps Y;

then the autoregressive update ``omega.fit(F~, M~)`` on this batch only, for the next batch.

Caching (:mod:`vidseg_nb.cache`): a segmenter remembers, per clip, the features (keyed on the fields the
reference run reads), the coarse maps (plus the stage-1/2 fields) and the raw difference maps D_l (plus
the stage-3 fields), so a new s only re-filters, a new lambda reruns stage 3 only, and a new cluster count
reruns stages 1-3 but not the feature extraction. Stage 3 needs the reference run's q/k (about 180 MB
per 512x512 frame in fp16): ``self.qk_cache`` (:mod:`vidseg_nb.qkcache`) keeps them while they fit
(``SegConfig.keep_qk``; by default on CUDA only), else a stage-3 rerun repeats the reference run of each batch as
part of stage 3 (its samples are counted in ``work``). Clips longer than ``cache_frames`` are not
cached, and intermediates are kept only for the frames asked for, so memory stays bounded for long clips.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
from .qkcache import QKCache
from .refine import refine
from .video import Clip, read_video, resize_frames, resize_labels, target_size

__all__ = ["BatchResult", "FrameDetail", "SegmentationResult", "VideoSegmenter", "clip_key", "segment_clip"]

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
        """
        config = config or self.config
        orig, frames, fps = self.prepare(clip, config)
        n = len(frames)
        mode = mode or ("full" if config.modulation else "preview")
        labels = np.zeros((n, *orig.shape[1:3]), np.uint8)
        before = np.zeros((n, frames.shape[1] // 16, frames.shape[2] // 16), np.int64)
        after = before.copy()
        details: dict[int, FrameDetail] = {}
        timings: dict[str, float] = {}
        computed: list[str] = []
        counters0 = self.backbone.counters.snapshot()
        for batch in self.iter_batches(frames, config, mode=mode, keep=_keep_set(keep, n), progress=progress):
            a, b = batch.start, batch.stop
            t0 = time.perf_counter()
            labels[a:b] = resize_labels(batch.final, orig.shape[1:3]).astype(np.uint8)  # Y at input size
            batch.timings["resize"] = time.perf_counter() - t0
            before[a:b], after[a:b] = batch.before, batch.after
            details.update(batch.details)
            for name, sec in batch.timings.items():
                timings[name] = timings.get(name, 0.0) + sec
            computed += [c for c in batch.computed if c not in computed]
        cache = self.cache.current(n)
        return SegmentationResult(
            labels=labels,
            coarse_before=before,
            coarse_after=after,
            mode=mode,
            config=config,
            fps=fps,
            size=tuple(frames.shape[1:3]),
            original_size=tuple(orig.shape[1:3]),
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
        keep = keep or set()
        n = len(frames)
        full = mode == "full"
        cache: ClipCache | None = self.cache.for_clip(frames)
        fkey, ckey, dkey = self.feature_key(config), stage_key(config, "coarse"), stage_key(config, "diff")
        cached_feats = cache.features.get(fkey) if cache else None
        cached_coarse = cache.coarse.get(ckey) if cache else None
        cached_diffs = cache.diffs.get(dkey) if cache and full else None
        computed = tuple(
            name
            for name, todo in (
                ("features", cached_feats is None),
                ("coarse maps", cached_coarse is None),
                ("stage 3", full and cached_diffs is None),
                ("filter", full),
            )
            if todo
        )
        new_feats: list[Features] = []
        new_coarse: list[tuple[np.ndarray, np.ndarray]] = []
        new_diffs: list[FrameDiff] = []
        # on a GPU the KNN and the refinement run there (torch backend of Omega)
        dev = self.backbone.device if self.backbone.device.type == "cuda" else torch.device("cpu")
        omega = SceneContextModel.from_config(config)
        starts = range(0, n, config.batch_size)

        for a in tqdm(starts, desc="batches", disable=not progress or len(starts) == 1):
            b = min(n, a + config.batch_size)
            timings: dict[str, float] = {}

            def tick(name: str, t0: float) -> None:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0  # noqa: B023

            # step 0: reference run -> F~ (and, when stage 3 follows, the q/k and latents it replays)
            need_diff = full and cached_diffs is None
            ref = None
            t0 = time.perf_counter()
            if need_diff or cached_feats is None:
                # a kept reference run (QKCache, SegConfig.keep_qk) serves a stage-3 rerun, e.g. a new lambda
                bb_dev = self.backbone.device
                ref = self.qk_cache.get(frames[a:b], a, fkey, config, bb_dev) if need_diff else None
                if ref is None:
                    ref = reference_run(
                        self.backbone,
                        frames[a:b],
                        config,
                        frame_offset=a,
                        record_qk=need_diff,
                        progress=progress,
                    )
                    if need_diff:
                        self.qk_cache.put(frames[a:b], a, fkey, ref, config, bb_dev)
                tick("reference run" if need_diff else "features", t0)
            feats = cached_feats[a:b] if cached_feats is not None else ref.features
            new_feats.append(feats)

            t0 = time.perf_counter()
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
            new_coarse.append((m_before, m_after))

            rel_keep = {i - a for i in keep if a <= i < b}
            filtered: list[np.ndarray | None] = [None] * (b - a)
            batch_diffs: list[FrameDiff] | None = None
            if full:
                # step 3: masked modulation -> the difference maps D_l
                t0 = time.perf_counter()
                if cached_diffs is not None:
                    batch_diffs = cached_diffs[a:b]
                else:
                    mo = modulate(
                        self.backbone, ref, m_after, config, keep_images=rel_keep, progress=progress
                    )
                    batch_diffs = mo.frames
                    tick("modulation (stage 3)", t0)
                new_diffs.extend(batch_diffs)
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
            # (none after the last batch: nothing is left to predict)
            if cached_coarse is None and b < n:
                t0 = time.perf_counter()
                omega.fit(f_tilde, m_after)
                tick("coarse maps (stages 1-2)", t0)

            details = {
                a + r: _detail(a + r, frames[a + r], feats[r : r + 1], config, m_before[r], m_after[r],
                               final[r], None if batch_diffs is None else batch_diffs[r], filtered[r])
                for r in sorted(rel_keep)
            }  # fmt: skip
            yield BatchResult(
                start=a,
                stop=b,
                before=m_before,
                after=m_after,
                final=final,
                details=details,
                features=feats,
                diffs=batch_diffs,
                timings=timings,
                computed=computed,
            )
        if cache is not None:
            if cached_feats is None:
                cache.features.setdefault(fkey, Features.concat(new_feats))
            cache.coarse.setdefault(
                ckey, (np.concatenate([m for m, _ in new_coarse]), np.concatenate([m for _, m in new_coarse]))
            )
            if full:
                cache.diffs.setdefault(dkey, new_diffs)


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
