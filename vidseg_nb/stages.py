"""Figure 3's body for one batch of frames (:class:`_Loop`, run by
:meth:`~vidseg_nb.pipeline.VideoSegmenter.stream`): the reference run, the scene context model Omega, the
correspondence-based refinement, the masked modulation, filtering + argmax, then the autoregressive update.

Each step is a stage function chosen once per run from the :class:`~vidseg_nb.config.SegConfig`
(:func:`_choose_stages`: the paper's or the authors' version of its row, issue 15; rows independently
switchable), and each cached stage (features, coarse maps, difference maps, the names' queries;
:mod:`vidseg_nb.cache`; and the kept reference run, :mod:`vidseg_nb.qkcache`) goes through one mechanism
(:class:`_Slot`: look up by key before the stage runs, store after).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from . import progress as _progress
from .authors import (
    authors_coarse_batch,
    authors_refine,
    choose_diff,
    choose_start,
    merge_first_batch,
    require_cv2,
)
from .cache import ClipCache, diff_key, stage_key
from .config import SegConfig
from .context import SceneContextModel
from .features import Features, reference_run
from .modulation import FrameDiff, final_labels, modulate
from .refine import refine
from .video import resize_labels

__all__ = ["BatchResult", "FrameDetail"]

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


@dataclass(frozen=True)
class _Stages:
    """Figure 3's steps 1-4 for one run, each the paper's or the authors' version of its row (issue 15),
    chosen once by :func:`_choose_stages`: the only place in this module that reads an authors' switch.

    ``context(loop, F~ (B, h, w, C) on the device, feats)`` -> M^j (B, h, w) (step 1, Omega or rows 5/6);
    ``refinement(M^j, feats, dev)`` -> M~^j (step 2, CBR or row 8); ``filter(D_l, M~^j)`` -> (D~_l, Y)
    (step 4, row 4); ``update``: the autoregressive ``omega.fit(F~, M~)`` after each batch (not with row 5,
    whose KNN is fitted on the previous batch's M~ instead); ``merge_gt``: frame 1's ground truth is read
    (row 6); ``count_frames``: the batch plan needs the clip's length N up front (row 7, the overlapping
    last batch); ``needs_cv2``: D_l and Y at the input size need OpenCV (row 3); ``joint_noise``: one noise
    draw per batch, so a frame's features depend on its batch (row 9, in the feature cache key);
    ``start``: how the reference run draws z0 and its noise (rows 1, 9: :func:`~vidseg_nb.authors.choose_start`);
    ``diff``: how stage 3 makes D_l of the decoded images (row 3: :func:`~vidseg_nb.authors.choose_diff`).
    The stage functions (``reference_run``, ``modulate``) receive these and read no authors' switch."""

    context: Any
    refinement: Any
    filter: Any
    update: bool
    merge_gt: bool = False
    count_frames: bool = False
    needs_cv2: bool = False
    joint_noise: bool = False
    start: Any = None
    diff: Any = None


def _choose_stages(config: SegConfig) -> _Stages:
    """The stage functions of ``config``: rows 5 (``knn_first_frame``), 6 (``gt_merge``: the merge, given a
    ground truth), 8 (``authors_cbr``), 4 (``lanczos_filter``), 1 and 9 (``vae_sample``, ``batch_noise``)
    and 3 (``uint8_diff``, ``resize_decoded``) each swap one step, independently."""

    def paper_context(loop: _Loop, f_tilde: torch.Tensor, feats: Features) -> np.ndarray:
        # step 1: K-Means + KNN on the first batch -> M^1..M^B, then Omega's prediction
        first = loop.steps == 0
        m = loop.omega.fit_predict(f_tilde) if first else loop.omega.predict(f_tilde)
        if first and loop.gt_first is not None:  # row 6: the clusters merged by frame 1's GT
            m, _ = merge_first_batch(m, loop.gt_first)
        return m

    def authors_context(loop: _Loop, f_tilde: torch.Tensor, feats: Features) -> np.ndarray:
        # row 5 (and 6): their K-Means + KNN; the next batch's KNN reference is this batch's tokens
        f1 = feats.stage1(config.aggregate)
        m, _, loop.knn_ref = authors_coarse_batch(
            f1.reshape(len(f1), -1, f1.shape[-1]), feats.grid, n_clusters=config.n_clusters,
            seed=config.seed, gt_first=loop.gt_first, ref=loop.knn_ref,
        )  # fmt: skip
        return m

    def paper_refine(m: np.ndarray, feats: Features, dev: torch.device) -> np.ndarray:
        return refine(m, feats.corr.to(dev), radius2=config.radius2)

    def authors_cbr(m: np.ndarray, feats: Features, dev: torch.device) -> np.ndarray:  # row 8
        return authors_refine(m, feats.corr)

    def no_refine(m: np.ndarray, feats: Features, dev: torch.device) -> np.ndarray:
        return m.copy()

    def filter_argmax(diff: FrameDiff, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return final_labels(diff, m, config.s_effective, lanczos=config.lanczos_filter)  # row 4

    refinement = (authors_cbr if config.authors_cbr else paper_refine) if config.refine else no_refine
    return _Stages(
        context=authors_context if config.knn_first_frame else paper_context,
        refinement=refinement,
        filter=filter_argmax,
        update=not config.knn_first_frame,
        merge_gt=config.gt_merge,
        count_frames=config.shifted_last_batch,
        needs_cv2=config.resize_decoded,
        joint_noise=config.batch_noise,
        start=choose_start(config),
        diff=choose_diff(config),
    )


class _Slot:
    """One cached stage of a clip (:mod:`vidseg_nb.cache`): looked up by ``key`` in ``store`` before the run,
    served batch by batch from the hit, else computed and stored for the whole clip by :meth:`finish`.
    ``first``: the stage's output belongs to the first batch only (the names' queries), served as it is."""

    def __init__(self, store: dict | None, key: tuple, on: bool = True, *, first: bool = False) -> None:
        self.store, self.key, self.first = (store if on else None), key, first
        self.hit = self.store.get(key) if self.store is not None else None
        self.parts: list[Any] = []

    def get(self, a: int, b: int, compute: Any) -> Any:
        """Frames ``a:b`` of the hit, else ``compute()``; kept for :meth:`finish` when the clip is cached."""
        if self.hit is None:
            out = compute()
        elif self.first:
            out = self.hit
        elif isinstance(self.hit, tuple):
            out = tuple(x[a:b] for x in self.hit)
        else:
            out = self.hit[a:b]
        if self.store is not None:
            self.parts.append(out)
        return out

    def finish(self) -> None:
        if self.store is None or self.hit is not None or not self.parts:
            return
        first = self.parts[0]
        if self.first:
            whole: Any = first
        elif isinstance(first, Features):
            whole = Features.concat(self.parts)
        elif isinstance(first, tuple):
            whole = tuple(np.concatenate(p) for p in zip(*self.parts))
        else:
            whole = [d for p in self.parts for d in p]
        if whole is not None:
            self.store.setdefault(self.key, whole)


class _KeptRef(_Slot):
    """The kept reference run of each batch (stage 3's q/k and latents; ``seg.qk_cache``,
    :mod:`vidseg_nb.qkcache`): the same look-up-then-store as :class:`_Slot`, per batch (keyed on its
    frames and offset) and within the memory budget, so nothing waits for :meth:`finish`."""

    def __init__(self, qk: Any, fkey: tuple, config: SegConfig, device: torch.device) -> None:
        super().__init__(None, fkey)
        self.qk, self.config, self.device = qk, config, device

    def run(self, a: int, frames: np.ndarray, compute: Any, *, fresh: bool = False) -> Any:
        """The kept reference of frames ``a:a+len(frames)``, else ``compute()``, kept if it fits;
        ``fresh``: compute it anyway (a run that must record something the kept one lacks)."""
        ref = None if fresh else self.qk.get(frames, a, self.key, self.config, self.device)
        if ref is None:
            ref = compute()
            self.qk.put(frames, a, self.key, ref, self.config, self.device)
        return ref


class _Loop:
    """The body of Figure 3 for one batch (:meth:`step`), run by :meth:`VideoSegmenter.stream` (and so
    :meth:`~VideoSegmenter.segment` and :meth:`~VideoSegmenter.iter_batches`); Omega carries between steps."""

    def __init__(
        self,
        seg: Any,  # the VideoSegmenter (not imported: pipeline imports this module)
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
        self.stages = _choose_stages(config)
        if self.stages.needs_cv2 and self.full:  # issue 15 row 3 needs OpenCV: fail before any UNet run
            require_cv2()
        # issue 15 row 3 (resize_decoded): D_l, the filter and Y at the input frame size
        self.original_size = None if original_size is None else (int(original_size[0]), int(original_size[1]))
        self.fkey = seg.feature_key(config)
        c = cache
        self.feats = _Slot(c.features if c else None, self.fkey)
        self.coarse = _Slot(c.coarse if c else None, stage_key(config, "coarse"))
        self.diffs = _Slot(c.diffs if c else None, diff_key(config, self.original_size), on=self.full)
        # issue 13: the first batch records its attn2 queries, once per clip and feature setting
        nkey = self.fkey + (("name_blocks", tuple(seg.name_blocks)), ("name_step", seg.name_step))
        self.names = _Slot(c.queries if c else None, nkey, on=record_names, first=True)
        self.kept = _KeptRef(seg.qk_cache, self.fkey, config, seg.backbone.device)
        self.computed = tuple(
            name
            for name, todo in (
                ("features", self.feats.hit is None),
                ("coarse maps", self.coarse.hit is None),
                ("stage 3", self.full and self.diffs.hit is None),
                ("filter", self.full),
            )
            if todo
        )
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
        self.timings: dict[str, float] = {}

    def restore(self, state: Any) -> None:  # a streaming.StreamState
        """Omega as after batch ``state.next_batch - 1``: the KNN refitted on that batch's (F~, M~), or
        the authors' KNN reference (row 5) as it was."""
        if state.features.size:
            f = torch.from_numpy(np.ascontiguousarray(state.features)).to(self.dev)
            self.omega.fit(f, state.labels)
            self.last_fit = (f, state.labels)
        if state.knn_features is not None:
            self.knn_ref = (state.knn_features, state.knn_labels)
        self.steps = state.next_batch

    def _tick(self, name: str, t0: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    def step(self, a: int, frames: np.ndarray, *, update: bool, resize_s: float = 0.0) -> BatchResult:
        """Figure 3 for the frames ``a:a+len(frames)`` (processing size): the reference run, the scene
        context model, the refinement, the masked modulation, filtering + argmax; then, with ``update``,
        the autoregressive update ``omega.fit(F~, M~)`` of this batch for the next one. Each step is
        served by the clip's stage cache when it holds it."""
        b = a + len(frames)
        _progress.batch(a, b)  # the one progress source (vidseg_nb.progress): no-op unless tracked
        self.timings = {"resize": resize_s} if resize_s else {}
        keep = set(range(b - a)) if self.keep == "all" else {i - a for i in self.keep if a <= i < b}
        ref, feats, queries = self.reference_run(a, frames)  # step 0: F~ (q/k, latents for step 3)
        f_tilde = None if self.coarse.hit is not None else feats.stage1(self.config.aggregate).to(self.dev)
        m_before, m_after = self.coarse.get(a, b, lambda: self.coarse_maps(f_tilde, feats))  # steps 1-2
        diffs = self.diffs.get(a, b, lambda: self.modulation(ref, m_after, keep)) if self.full else None  # 3
        ref = None  # the q/k of the reference run go now (GBs for a batch of 512x512 frames)
        filtered, final = self.filter_argmax(diffs, m_after, frames.shape[1:3])  # step 4: D~_l, Y
        if f_tilde is not None and update and self.stages.update:  # Omega <- (F~^j, M~^j), this batch only
            t0 = time.perf_counter()
            self.omega.fit(f_tilde, m_after)
            self.last_fit = (f_tilde, m_after)
            self._tick("coarse maps (stages 1-2)", t0)
        self.steps += 1
        details = {
            a + r: _detail(a + r, frames[r], feats[r : r + 1], self.config, m_before[r], m_after[r],
                           final[r], None if diffs is None else diffs[r], filtered[r])
            for r in sorted(keep)
        }  # fmt: skip
        return BatchResult(
            start=a, stop=b, before=m_before, after=m_after, final=final, details=details, features=feats,
            diffs=diffs, timings=self.timings, computed=self.computed, name_queries=queries,
        )  # fmt: skip

    def reference_run(
        self, a: int, frames: np.ndarray
    ) -> tuple[Any, Features, dict[str, torch.Tensor] | None]:
        """Step 0: (the reference run or None, F~ of the batch, the first batch's attn2 queries with names).

        Runs only when something needs it: the features (not cached), stage 3 (its q/k and latents, kept
        by ``seg.qk_cache`` for a rerun with ``SegConfig.keep_qk``) or the names' queries (issue 13,
        recorded once per clip and cached with it)."""
        seg, config = self.seg, self.config
        need_diff = self.full and self.diffs.hit is None
        names_now = self.record_names and a == 0
        rec = names_now and self.names.hit is None
        ref = None
        if need_diff or self.feats.hit is None or rec:
            t0 = time.perf_counter()

            def run() -> Any:
                return reference_run(
                    seg.backbone, frames, config, frame_offset=a, record_qk=need_diff, progress=self.progress,
                    record_names=rec, name_blocks=seg.name_blocks, name_step=seg.name_step,
                    start=self.stages.start,
                )  # fmt: skip

            ref = self.kept.run(a, frames, run, fresh=rec) if need_diff else run()
            self._tick("reference run" if need_diff else "features", t0)
        feats = self.feats.get(a, a + len(frames), lambda: ref.features)
        queries = self.names.get(a, a + len(frames), lambda: ref.name_queries) if names_now else None
        return ref, feats, queries

    def coarse_maps(self, f_tilde: torch.Tensor, feats: Features) -> tuple[np.ndarray, np.ndarray]:
        """Steps 1-2: the scene context model's M^j, then the refinement M~^j (one frame: M~ = M)."""
        t0 = time.perf_counter()
        m_before = self.stages.context(self, f_tilde, feats)
        refine_fn = self.stages.refinement if len(m_before) > 1 else _no_refine
        m_after = refine_fn(m_before, feats, self.dev)
        if self.knn_ref is not None:  # row 5: the next batch's KNN is fitted on this batch's M~
            self.knn_ref = (self.knn_ref[0], m_after.reshape(-1))
        self._tick("coarse maps (stages 1-2)", t0)
        return m_before, m_after

    def modulation(self, ref: Any, m_after: np.ndarray, keep: set[int]) -> list[FrameDiff]:
        """Step 3: the masked modulation's difference maps D_l (at ``original_size`` with row 3)."""
        t0 = time.perf_counter()
        mo = modulate(
            self.seg.backbone, ref, m_after, self.config, keep_images=keep, progress=self.progress,
            out_size=self.original_size, diff=self.stages.diff,
        )  # fmt: skip
        self._tick("modulation (stage 3)", t0)
        return mo.frames

    def filter_argmax(
        self, diffs: list[FrameDiff] | None, m_after: np.ndarray, size: tuple[int, int]
    ) -> tuple[list[np.ndarray | None], np.ndarray]:
        """Step 4: (D~_l per frame, Y) by filtering (s) and argmax; preview (no D_l): Y = M~^j upsampled."""
        if diffs is None:
            return [None] * len(m_after), resize_labels(m_after, size)
        t0 = time.perf_counter()
        fin = [self.stages.filter(d, m) for d, m in zip(diffs, m_after)]
        self._tick("filter + argmax", t0)
        return [f for f, _ in fin], np.stack([y for _, y in fin])

    def finish(self) -> None:
        """Store what this run computed in the clip's cache entry (if the clip is cached)."""
        for slot in (self.feats, self.coarse, self.diffs, self.names):
            slot.finish()


def _no_refine(m: np.ndarray, feats: Features, dev: torch.device) -> np.ndarray:
    return m.copy()


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
