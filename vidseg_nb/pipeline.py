"""The whole method, batch by batch: :class:`VideoSegmenter` (paper Figure 3).

For each batch of B frames: the reference run gives the features F~ (stage 0), the scene context model
Omega gives M^j (stage 1), correspondence-based refinement gives M~^j (stage 2), masked modulation gives
the difference maps D_l (stage 3), filtering and argmax give the label maps Y at input resolution.

Caching: a segmenter remembers, per clip, the features (keyed on the fields the reference run reads),
the coarse maps (plus the stage-1/2 fields) and the raw difference maps D_l (plus the stage-3 fields),
so a new s only re-filters, a new lambda reruns stage 3 only, and a new cluster count reruns stages 1-3
but not the feature extraction. Stage 3 needs the reference run's q/k, which are too large to cache
(about 180 MB per 512x512 frame), so a stage-3 rerun repeats the reference run of each frame as part
of stage 3 (its samples are counted in ``work``). Clips longer than ``cache_frames`` are not cached, and
intermediates are kept only for the frames asked for, so memory stays bounded for long clips.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbone import Backbone
from .config import COARSE_FIELDS, DIFF_FIELDS, FEATURE_FIELDS, SegConfig
from .context import SceneContextModel, coarse_batch
from .features import Features, reference_run
from .modulation import FrameDiff, final_labels, modulate
from .video import Clip, read_video, resize_frames, resize_labels, target_size

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
class _ClipCache:
    key: str
    features: dict[tuple, Features] = field(default_factory=dict)
    coarse: dict[tuple, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    diffs: dict[tuple, list[FrameDiff]] = field(default_factory=dict)


def clip_key(frames: np.ndarray) -> str:
    """Content hash of processed frames (the cache key of a clip)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(frames.shape).encode())
    h.update(np.ascontiguousarray(frames).data)
    return h.hexdigest()


class VideoSegmenter:
    """Zero-shot video semantic segmentation with a diffusion backbone (the paper's full method).

    ``VideoSegmenter(backbone, config).segment(clip)`` -> :class:`SegmentationResult`.
    ``cache_frames``: clips up to this many frames keep their stages cached in this object (the demo
    keeps one segmenter per session); 0 disables caching.
    """

    def __init__(
        self, backbone: Backbone, config: SegConfig | None = None, *, cache_frames: int = 120
    ) -> None:
        self.backbone = backbone
        self.config = config or SegConfig()
        self.cache_frames = cache_frames
        self._cache: _ClipCache | None = None

    def clear_cache(self) -> None:
        self._cache = None

    def feature_key(self, config: SegConfig) -> tuple:
        """Cache key of the features: the fields the reference run reads, plus B for a backbone that
        denoises the frames of a batch jointly (SVD: a frame's features depend on its batch)."""
        key = config.key(FEATURE_FIELDS)
        if self.backbone.frames_per_group(config.batch_size) > 1:
            key += config.key(("batch_size",))
        return key

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
        keep_set = _keep_set(keep, n)
        labels = np.zeros((n, *orig.shape[1:3]), np.uint8)
        before = np.zeros((n, frames.shape[1] // 16, frames.shape[2] // 16), np.int64)
        after = before.copy()
        details: dict[int, FrameDetail] = {}
        timings: dict[str, float] = {}
        counters0 = self.backbone.counters.snapshot()
        computed: list[str] = []
        batches = self.iter_batches(
            frames, config, mode=mode, keep=keep_set, progress=progress, timings=timings, computed=computed
        )
        for out in batches:
            a, b = out["start"], out["stop"]
            t0 = time.perf_counter()
            labels[a:b] = resize_labels(out["final"], orig.shape[1:3]).astype(np.uint8)
            timings["resize"] = timings.get("resize", 0.0) + time.perf_counter() - t0
            before[a:b], after[a:b] = out["before"], out["after"]
            details.update(out["details"])
        cache = self._cache if self._cache is not None and n <= self.cache_frames else None
        feats = cache.features.get(self.feature_key(config)) if cache else None
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
            features=feats,
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
        timings: dict[str, float] | None = None,
        computed: list[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Run the stages over batches of B frames of ``frames`` (already at the processing size).

        Yields per batch a dict with ``start``, ``stop``, ``before`` (M^j), ``after`` (M~^j), ``final``
        (Y at processing size) and ``details`` for the kept frames. Memory is bounded by one batch plus
        the cache (clips up to ``cache_frames`` frames).
        """
        keep = keep or set()
        timings = timings if timings is not None else {}
        n = len(frames)
        use_cache = 0 < n <= self.cache_frames
        cache = None
        if use_cache:
            key = clip_key(frames)
            if self._cache is None or self._cache.key != key:
                self._cache = _ClipCache(key)
            cache = self._cache
        fkey, ckey, dkey = self.feature_key(config), config.key(COARSE_FIELDS), config.key(DIFF_FIELDS)
        all_feats = cache.features.get(fkey) if cache else None
        coarse = cache.coarse.get(ckey) if cache else None
        diffs = cache.diffs.get(dkey) if cache and mode == "full" else None
        new_feats: list[Features] = []
        new_before: list[np.ndarray] = []
        new_after: list[np.ndarray] = []
        new_diffs: list[FrameDiff] = []
        computed = computed if computed is not None else []
        computed += [name for name, hit in (("features", all_feats), ("coarse maps", coarse)) if hit is None]
        if mode == "full":
            computed += ["stage 3"] if diffs is None else []
            computed.append("filter")
        model = SceneContextModel.from_config(config)
        bsz = config.batch_size
        starts = range(0, n, bsz)

        def tick(name: str, t0: float) -> None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0

        for a in tqdm(starts, desc="batches", disable=not progress or len(starts) == 1):
            b = min(n, a + bsz)
            need_diff = mode == "full" and diffs is None
            ref = None
            t0 = time.perf_counter()
            if need_diff or all_feats is None:
                ref = reference_run(
                    self.backbone, frames[a:b], config, frame_offset=a, record_qk=need_diff, progress=progress
                )
                tick("reference run" if need_diff else "features", t0)
            feats = all_feats[a:b] if all_feats is not None else ref.features
            new_feats.append(feats)
            t0 = time.perf_counter()
            if coarse is not None:
                m_before, m_after = coarse[0][a:b], coarse[1][a:b]
            else:
                dev = self.backbone.device if self.backbone.device.type == "cuda" else "cpu"
                cb = coarse_batch(  # on a GPU the KNN and the refinement run there (torch backend)
                    model,
                    feats.stage1(config.aggregate).to(dev),
                    feats.corr.to(dev),
                    refine=config.refine,
                    radius2=config.radius2,
                )
                m_before, m_after = cb.before, cb.after
                tick("coarse maps (stages 1-2)", t0)
            new_before.append(m_before)
            new_after.append(m_after)
            rel_keep = {i - a for i in keep if a <= i < b}
            t0 = time.perf_counter()
            if mode == "full":
                if diffs is not None:
                    batch_diffs = diffs[a:b]
                else:
                    mo = modulate(
                        self.backbone, ref, m_after, config, keep_images=rel_keep, progress=progress
                    )
                    batch_diffs = mo.frames
                    tick("modulation (stage 3)", t0)
                new_diffs.extend(batch_diffs)
                t0 = time.perf_counter()
                fin = [final_labels(d, m, config.s_effective) for d, m in zip(batch_diffs, m_after)]
                final = np.stack([y for _, y in fin])
                tick("filter + argmax", t0)
            else:
                batch_diffs, fin = [None] * (b - a), [(None, None)] * (b - a)
                final = resize_labels(m_after, frames.shape[1:3])
            details = {}
            for r in sorted(rel_keep):
                f = feats[r : r + 1]
                fd = {blk: t[0].numpy() for blk, t in f.blocks.items()}
                fd[0] = f.stage1(config.aggregate)[0].numpy()
                details[a + r] = FrameDetail(
                    index=a + r,
                    frame=frames[a + r],
                    features=fd,
                    coarse_before=m_before[r],
                    coarse_after=m_after[r],
                    final=final[r],
                    diff=batch_diffs[r],
                    filtered=fin[r][0],
                )
            del ref
            yield dict(start=a, stop=b, before=m_before, after=m_after, final=final, details=details)
        if cache is not None:
            cache.features.setdefault(fkey, Features.concat(new_feats) if all_feats is None else all_feats)
            cache.coarse.setdefault(ckey, (np.concatenate(new_before), np.concatenate(new_after)))
            if mode == "full":
                cache.diffs.setdefault(dkey, new_diffs)


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
