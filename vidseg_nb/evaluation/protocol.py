"""The evaluation protocol (SPEC 8): label assignment, scoring one segmented clip, pooling clips.

- :func:`evaluate_clip`: segment one clip, assign labels to clusters from the first annotated frame
  (frame 1 everywhere except Cityscapes snippets), score it: confusion matrix, window scores of VC_8 and
  VC_16, optionally DAVIS J / F per object.
- :func:`score_result`: the scoring half of :func:`evaluate_clip`, on cluster maps already computed.
- :func:`summarize`: pool per-clip results the way the paper does: mIoU from the SUM of the confusion
  matrices, mVC_n = nanmean over all windows of all clips, DAVIS J / F = means over all objects of all
  sequences (the DAVIS 2017 toolkit's J-Mean / F-Mean, the paper's Table 5).

Scores are fractions in [0, 1] (the tables print percentages).

Unassigned clusters. Label assignment gives each cluster of the first annotated frame the majority
ground-truth label of its cells. A cluster can stay without a label: it is absent from that frame (it
only appears later), or all its cells there are void. Its pixels are scored as errors: the confusion
matrices have one extra last row/column, "unassigned" (index ``num_classes``), so such a pixel is a false
negative of its true class and a false positive of no class; the extra row is always empty, so the mean
over ground-truth classes never includes it. For mVC the unassigned pixels form one more predicted label.

Two protocols (issue 15, :data:`PROTOCOLS`): ``"late"`` (the paper's SPEC 8, the default) uses the ground
truth only at scoring, as above; ``"authors"`` is the official protocol of the authors' code: the first
frame's ground truth merges the clusters right after stage 1 of the first batch (``SegConfig.gt_merge``,
:func:`vidseg_nb.authors.merge_clusters_by_first_frame`: majority on the feature grid, void and 0 counting
as labels), the merged labels go through KNN, CBR and modulation, and the labels come out as ground-truth
classes, scored as they are (a label outside ``[0, C)``, e.g. a cluster merged into void, is unassigned).
Assignment by names (issue 13, ``assign="names"``): each cluster gets the dataset class whose name
scores highest in the cross-attention of the first batch (:mod:`vidseg_nb.names`; the dataset's class
list is the vocabulary, :func:`dataset_vocabulary`). The *assignment* reads no ground-truth frame: the
mapping is decided from the segmentation alone, before the ground truth is even loaded
(:func:`evaluate_clip` takes it as a loader and calls it after). *Scoring* (mIoU, mVC) of course compares
with the ground truth of every frame. ``assign="both"`` scores both assignments: the first-frame one
(today's protocol, the default) at the top level of the record, the names one under ``"by_names"``.

Pure numpy on top of :mod:`vidseg_nb.metrics`; the segmenter is passed in (no model import here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..config import SegConfig
from ..errors import ConfigError
from ..metrics import (
    apply_label_map,
    assign_labels,
    confusion_matrix,
    davis_frame_scores,
    davis_scores,
    davis_statistics,
    mean_iou,
    mean_video_consistency,
    per_class_iou,
    video_consistency,
)

__all__ = [
    "ASSIGN_MODES",
    "PROTOCOLS",
    "VC_WINDOWS",
    "check_assign",
    "dataset_vocabulary",
    "name_mapping",
    "resolve_protocol",
    "resolve_mode",
    "evaluate_clip",
    "evaluate_stream",
    "score_result",
    "StreamScorer",
    "davis_objects",
    "summarize",
]

VC_WINDOWS = (8, 16)
"""The window lengths n of mVC_n reported by the paper."""


PROTOCOLS = ("late", "authors")
"""Evaluation protocols: ``late`` (labels assigned from the first annotated frame at scoring, SPEC 8) and
``authors`` (the first frame's ground truth merges clusters before KNN, CBR and modulation; issue 15 row 6)."""


def resolve_protocol(config: SegConfig, protocol: str | None = None) -> str:
    """``protocol`` or, when None, ``"authors"`` if ``config.gt_merge`` is on (the ``authors`` preset) else
    ``"late"``; raises ``ValueError`` for another name."""
    protocol = protocol or ("authors" if config.gt_merge else "late")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; choose one of {PROTOCOLS}")
    return protocol


ASSIGN_MODES = ("first-frame", "names", "both")
"""How clusters get classes: from the first annotated frame's ground truth (SPEC 8, the default), from
their names (issue 13: no ground truth), or both (both scored)."""

_DATASET_VOCABULARIES = {"camvid": "camvid", "vspw": "vspw", "cityscapes": "cityscapes"}


def check_assign(assign: str) -> str:
    """``assign`` if it is one of :data:`ASSIGN_MODES`, else a :class:`ConfigError`."""
    if assign not in ASSIGN_MODES:
        raise ConfigError(f"--assign must be one of {', '.join(ASSIGN_MODES)}, not {assign!r}")
    return assign


def dataset_vocabulary(dataset: Any) -> list[str]:
    """The class names of a dataset reader in class-id order, as prompt words: its ``class_names`` when it
    has them, else the list shipped in :mod:`vidseg_nb.names` for CamVid (11), VSPW (124) and Cityscapes
    (19). DAVIS objects have no class names: a :class:`ConfigError` says so."""
    from ..names import vocabulary_for_dataset

    names = getattr(dataset, "class_names", None)
    if names:
        return [str(n) for n in names]
    kind = type(dataset).__name__.lower()
    for key, vocab in _DATASET_VOCABULARIES.items():
        if kind.startswith(key):
            return vocabulary_for_dataset(vocab)
    raise ConfigError(
        f"{type(dataset).__name__} has no class names to assign clusters by name (DAVIS objects are ids, "
        "not classes): use --assign first-frame, or a dataset with a class list (camvid, vspw, cityscapes)"
    )


def name_mapping(names: Mapping[int, Any], vocabulary: Sequence[str]) -> dict[int, int]:
    """cluster -> class id from the clusters' names alone (no ground truth): the class whose name scored
    highest (``ClusterName.best``, whatever its margin); a cluster with no scored word gets -1."""
    index = {w: k for k, w in enumerate(vocabulary)}
    return {int(c): index.get(n.best, -1) for c, n in names.items()}


def resolve_mode(config: SegConfig, mode: str | None) -> str:
    """``mode`` or, when None, "full" with modulation and "preview" without."""
    return mode or ("full" if config.modulation else "preview")


def evaluate_clip(
    segmenter: Any,
    frames: np.ndarray,
    gt: np.ndarray,
    config: SegConfig,
    num_classes: int,
    ignore_index: int = 255,
    mode: str | None = None,
    davis: bool = False,
    annotated: Sequence[bool] | None = None,
    protocol: str | None = None,
    *,
    assign: str = "first-frame",
    vocabulary: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Segment ``frames`` (N, H, W, 3) with ``segmenter`` (a :class:`~vidseg_nb.pipeline.VideoSegmenter`)
    and score the result against ``gt`` (N, H, W) integer labels (``ignore_index`` = void), or a
    zero-argument loader of them, called only after the segmentation and its assignment.

    ``assign`` (:data:`ASSIGN_MODES`): ``"first-frame"`` (below); ``"names"``: the segmenter names the
    clusters with ``vocabulary`` (the dataset's class names, in class-id order) and :func:`name_mapping`
    assigns them, with no ground truth (``names`` in the record: cluster -> word); ``"both"``: the
    first-frame record plus the names one under ``"by_names"``.

    Label assignment (SPEC 8): ``assign_labels(result.coarse_before[f], gt[f])`` on the feature grid (M^f,
    the context model's map: refinement can drop a cluster from M~^1 that later frames still carry), with
    f the first annotated frame (frame 0 unless ``annotated`` says otherwise, e.g. Cityscapes snippets);
    the cluster -> class map is applied to ``result.labels`` of every frame; unassigned clusters score as
    errors (see the module docstring). ``annotated`` (per frame, default all True) also leaves windows
    that contain an unannotated frame out of mVC. With ``davis=True``: DAVIS J, F per object id
    1 .. num_classes-1 (void = ``ignore_index`` pixels), first and last frame dropped when the clip has at
    least 3 frames; ``J_objects`` / ``F_objects`` list them, ``J`` / ``F`` / ``J&F`` are this clip's means.

    Returns a dict: ``conf`` ((C+1, C+1) int64, last row/column = unassigned), ``mIoU``, ``vc8``/``vc16``
    (window scores), ``mVC8``/``mVC16`` (this clip alone), the DAVIS fields (with ``davis``),
    ``mapping`` (cluster -> class, -1 = unassigned), ``assign_frame``, ``unassigned_pixels``,
    ``seconds`` (segmentation wall time), ``frames``, ``work`` (the backbone's work counters), ``mode``,
    ``protocol``.

    ``protocol`` (:func:`resolve_protocol`; default from ``config.gt_merge``): ``"late"`` as above;
    ``"authors"`` segments with ``gt_merge`` on and frame 1's ground truth passed in (frame 1 must be
    annotated), then scores the labels as the classes they are (see the module docstring).
    """
    config = config or segmenter.config
    mode = resolve_mode(config, mode)
    protocol = resolve_protocol(config, protocol)
    config = config.replace(gt_merge=protocol == "authors")
    check_assign(assign)
    kw: dict[str, Any] = {}
    if protocol == "authors":
        if assign != "first-frame":
            raise ConfigError(
                "the authors' protocol merges clusters by the first frame's ground truth: "
                "use it with --assign first-frame"
            )
        gt = gt() if callable(gt) else gt
        if annotated is not None and not list(annotated)[:1] == [True]:
            raise ValueError(
                "the authors' protocol needs the first frame's ground truth (frame 1 unannotated)"
            )
        kw["first_frame_gt"] = np.asarray(gt[0])
    if assign != "first-frame":
        if not vocabulary:
            raise ConfigError("assigning clusters by names needs the dataset's class names (vocabulary)")
        if len(vocabulary) != num_classes:
            raise ConfigError(f"{len(vocabulary)} class names for {num_classes} classes")
        kw["names"] = list(vocabulary)
    t0 = time.perf_counter()
    result = segmenter.segment(frames, config, mode=mode, keep=None, progress=False, **kw)
    seconds = time.perf_counter() - t0
    # the assignment by names is decided here, from the segmentation alone: no ground truth read yet
    by_names = name_mapping(result.names, vocabulary) if assign != "first-frame" else None
    gt = gt() if callable(gt) else gt
    score = dict(davis=davis, annotated=annotated, protocol=protocol)
    if assign == "names":
        out = score_result(result.labels, None, gt, num_classes, ignore_index, mapping=by_names, **score)
    else:
        out = score_result(result.labels, result.coarse_before, gt, num_classes, ignore_index, **score)
    if by_names is not None:
        named = {int(c): n.best for c, n in result.names.items()}
        if assign == "both":
            out["by_names"] = score_result(
                result.labels, None, gt, num_classes, ignore_index, mapping=by_names, **score
            )
            out["by_names"]["names"] = named
        else:
            out["names"] = named
    out["assign"] = assign
    out.update(
        seconds=seconds,
        frames=int(len(result.labels)),
        work=dict(getattr(result, "work", {}) or {}),
        mode=getattr(result, "mode", mode),
    )
    return out


def score_result(
    labels: np.ndarray,
    coarse: np.ndarray | None,
    gt: np.ndarray,
    num_classes: int,
    ignore_index: int = 255,
    *,
    davis: bool = False,
    annotated: Sequence[bool] | None = None,
    protocol: str = "late",
    mapping: Mapping[int, int] | None = None,
) -> dict[str, Any]:
    """The scoring half of :func:`evaluate_clip`, on cluster maps ``labels`` (N, H, W) and coarse maps
    ``coarse`` (N, h, w) already computed (the clusters are assigned on ``coarse[first annotated]``), or
    with a given cluster -> class ``mapping`` (e.g. :func:`name_mapping`; ``assign_frame`` is then None and
    ``coarse`` unused). ``protocol="authors"``: the labels already are classes (merged by the first
    frame's ground truth): the mapping is the identity, a label outside ``[0, C)`` is unassigned."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; choose one of {PROTOCOLS}")
    labels = np.asarray(labels)
    gt = np.asarray(gt)
    n = len(labels)
    if len(gt) < n:
        raise ValueError(f"{len(gt)} ground-truth maps for {n} segmented frames")
    gt = gt[:n]
    if gt.shape != labels.shape:
        raise ValueError(f"ground truth {gt.shape} and labels {labels.shape} differ in size")
    c = int(num_classes)
    ann = np.ones(n, bool) if annotated is None else np.asarray(list(annotated)[:n], bool)
    if not ann.any():
        raise ValueError("no annotated frame to assign labels from")
    first: int | None = int(np.flatnonzero(ann)[0])
    if mapping is not None:
        first = None
    elif protocol == "authors":
        first = 0
        mapping = {int(k): int(k) for k in np.union1d(np.unique(labels), np.unique(coarse))}
    else:
        mapping = assign_labels(np.asarray(coarse)[first], gt[first], ignore_index=ignore_index)
    # clusters that were assigned a class outside [0, C) (never for a void-free ignore index) are unassigned
    mapping = {k: (v if 0 <= v < c else -1) for k, v in mapping.items()}
    pred = apply_label_map(labels, mapping, default=-1)
    unassigned = pred < 0
    pred[unassigned] = c
    g = np.where((gt >= 0) & (gt < c), gt, -1)  # void -> -1: never counted, even if it equals C
    conf = confusion_matrix(g, pred, c + 1)
    out: dict[str, Any] = {
        "conf": conf,
        "mIoU": mean_iou(conf),
        "mapping": {int(k): int(v) for k, v in sorted(mapping.items())},
        "assign_frame": first,
        "unassigned_pixels": int(conf[:, c].sum()),
        "num_classes": c,
        "ignore_index": int(ignore_index),
        "protocol": protocol,
    }
    for w in VC_WINDOWS:
        vc = video_consistency(gt, pred, w)
        if not ann.all() and vc.size:
            bad = np.convolve(~ann, np.ones(w, int), mode="valid")[: vc.size] > 0
            vc = np.where(bad, np.nan, vc)
        out[f"vc{w}"] = vc
        out[f"mVC{w}"] = mean_video_consistency([vc])
    if davis:
        out.update(davis_objects(gt, pred, c, ignore_index))
    return out


class StreamScorer:
    """:func:`score_result` batch by batch, for long videos: the same numbers, in memory that does not
    grow with the clip (the paper's long-video setting).

    ``add(labels, coarse, gt, annotated)`` per batch, in order (cluster maps (b, H, W), coarse maps M^j
    (b, h, w), ground truth (b, H, W), per-frame annotation flags); :meth:`result` at the end. The clusters
    are assigned on the first annotated frame, as in :func:`score_result`: batches before it wait (their
    uint8 labels and ground truth only). Then each batch adds to the confusion matrix, the VC_n windows
    are scored on the batch plus the last 16 frames kept from before (a window's score reads only its own
    n frames; like :func:`~vidseg_nb.metrics.video_consistency`, the last possible window of the clip is
    left out) and, with ``davis``, the per-frame J and F of each object are kept (two floats per frame
    and object; the first and last frame are dropped at the end). Kept: one (C+1)^2 matrix, the window
    scores, the last max(n) frames of ground truth and prediction.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, *, davis: bool = False) -> None:
        self.c, self.ignore_index, self.davis = int(num_classes), int(ignore_index), davis
        self.conf = np.zeros((self.c + 1, self.c + 1), np.int64)
        self.mapping: dict[int, int] | None = None
        self.assign_frame = -1
        self.t = 0  # frames scored
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.tail: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # last frames: gt, pred, ann
        self.next_start = dict.fromkeys(VC_WINDOWS, 0)
        self.vc: dict[int, list[np.ndarray]] = {w: [] for w in VC_WINDOWS}
        self.jf: list[tuple[list[np.ndarray], list[np.ndarray]]] = [([], []) for _ in range(1, self.c)]
        self.any_void = False

    def add(
        self, labels: np.ndarray, coarse: np.ndarray, gt: np.ndarray, annotated: Sequence[bool] | None = None
    ) -> None:
        """Score frames ``t .. t + b - 1`` (``annotated`` default: all True)."""
        labels, gt = np.asarray(labels), np.asarray(gt)
        if gt.shape != labels.shape:
            raise ValueError(f"ground truth {gt.shape} and labels {labels.shape} differ in size")
        ann = np.ones(len(labels), bool) if annotated is None else np.asarray(list(annotated), bool)
        if self.mapping is None:
            if not ann.any():
                self.pending.append((labels.astype(np.uint8), gt, ann))
                return
            r = int(np.flatnonzero(ann)[0])
            self.assign_frame = self.t + sum(len(p[0]) for p in self.pending) + r
            mapping = assign_labels(np.asarray(coarse)[r], gt[r], ignore_index=self.ignore_index)
            self.mapping = {k: (v if 0 <= v < self.c else -1) for k, v in mapping.items()}
            pending, self.pending = self.pending, []
            for lab, g, a in pending:
                self._score(lab, g, a)
        self._score(labels, gt, ann)

    def _score(self, labels: np.ndarray, gt: np.ndarray, ann: np.ndarray) -> None:
        c = self.c
        pred = apply_label_map(labels, self.mapping, default=-1)
        pred[pred < 0] = c
        g = np.where((gt >= 0) & (gt < c), gt, -1)
        self.conf += confusion_matrix(g, pred, c + 1)
        if self.tail is not None:
            tg, tp, ta = self.tail
            gt_all, pred_all, ann_all = (np.concatenate(x) for x in ((tg, gt), (tp, pred), (ta, ann)))
        else:
            gt_all, pred_all, ann_all = gt, pred, ann
        first = self.t + len(labels) - len(gt_all)  # clip index of gt_all[0]
        end = self.t + len(labels)
        for w in VC_WINDOWS:
            s = self.next_start[w] - first
            vc = video_consistency(gt_all[s:], pred_all[s:], w)
            if vc.size and not ann_all[s:].all():
                bad = np.convolve(~ann_all[s:], np.ones(w, int), mode="valid")[: vc.size] > 0
                vc = np.where(bad, np.nan, vc)
            self.vc[w].append(vc)
            self.next_start[w] = max(self.next_start[w], end - w)
        keep = max(VC_WINDOWS)
        self.tail = (gt_all[-keep:].copy(), pred_all[-keep:].copy(), ann_all[-keep:].copy())
        if self.davis:
            void = gt == self.ignore_index
            self.any_void = self.any_void or bool(void.any())
            for k, (js, fs) in zip(range(1, c), self.jf):
                j, f = davis_frame_scores(gt == k, pred == k, void=void)
                js.append(j)
                fs.append(f)
        self.t = end

    def result(self) -> dict[str, Any]:
        """What :func:`score_result` returns for the frames added so far."""
        if self.mapping is None:
            raise ValueError("no annotated frame to assign labels from")
        c = self.c
        out: dict[str, Any] = {
            "conf": self.conf.copy(),
            "mIoU": mean_iou(self.conf),
            "mapping": {int(k): int(v) for k, v in sorted(self.mapping.items())},
            "assign_frame": self.assign_frame,
            "unassigned_pixels": int(self.conf[:, c].sum()),
            "num_classes": c,
            "ignore_index": self.ignore_index,
            "protocol": "late",  # the streamed path: ground truth only at scoring (SPEC 8)
        }
        for w in VC_WINDOWS:
            vc = np.concatenate(self.vc[w]) if self.vc[w] else np.empty(0)
            out[f"vc{w}"] = vc
            out[f"mVC{w}"] = mean_video_consistency([vc])
        if self.davis:
            drop = self.t >= 3
            js, fs = [], []
            for jl, fl in self.jf:
                j, f = np.concatenate(jl), np.concatenate(fl)
                if drop:
                    j, f = j[1:-1], f[1:-1]
                js.append(float(davis_statistics(j)[0]))
                fs.append(float(davis_statistics(f)[0]))
            jm, fm = _nanmean(js), _nanmean(fs)
            out.update({"J_objects": js, "F_objects": fs, "J": jm, "F": fm, "J&F": (jm + fm) / 2})
        return out


def evaluate_stream(
    segmenter: Any,
    frames: Any,
    gt_batch: Any,
    config: SegConfig,
    num_classes: int,
    ignore_index: int = 255,
    mode: str | None = None,
    davis: bool = False,
    annotated: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_clip` for a long video, batch by batch (``segmenter.stream``): ``frames`` is any
    source of :meth:`~vidseg_nb.pipeline.VideoSegmenter.stream` (read lazily), ``gt_batch(a, b)`` returns
    the ground truth (b - a, H, W) of frames a .. b-1. Scored by :class:`StreamScorer`: the same record as
    :func:`evaluate_clip`, without holding the clip, its labels or its ground truth."""
    config = config or segmenter.config
    mode = resolve_mode(config, mode)
    scorer = StreamScorer(num_classes, ignore_index, davis=davis)
    counters0 = segmenter.backbone.counters.snapshot()
    t0 = time.perf_counter()
    seconds = 0.0
    for sb in segmenter.stream(frames, config, mode=mode, keep=None, progress=False):
        seconds += time.perf_counter() - t0
        ann = None if annotated is None else list(annotated)[sb.start : sb.stop]
        scorer.add(sb.labels, sb.result.before, gt_batch(sb.start, sb.stop), ann)
        t0 = time.perf_counter()
    out = scorer.result()
    out.update(
        seconds=seconds,
        frames=int(scorer.t),
        work=dict(segmenter.backbone.counters.since(counters0)),
        mode=mode,
        assign="first-frame",
    )
    return out


def davis_objects(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int) -> dict[str, Any]:
    """DAVIS J (region IoU) and F (boundary F-measure) of each object id 1 .. num_classes-1 of one
    sequence: ``J_objects`` / ``F_objects`` (one mean over frames per object) and the sequence's own
    ``J`` / ``F`` / ``J&F`` (means over its objects). :func:`summarize` pools the per-object lists."""
    void = gt == ignore_index
    void = void if void.any() else None
    drop = len(gt) >= 3
    per_obj = [
        davis_scores(gt == k, pred == k, drop_first_last=drop, void=void) for k in range(1, num_classes)
    ]
    js = [float(s["J_mean"]) for s in per_obj]
    fs = [float(s["F_mean"]) for s in per_obj]
    j, f = _nanmean(js), _nanmean(fs)
    return {"J_objects": js, "F_objects": fs, "J": j, "F": f, "J&F": (j + f) / 2}


# --------------------------------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------------------------------
def _pad_conf(conf: np.ndarray, c_max: int) -> np.ndarray:
    """A (C+1)^2 matrix (last = unassigned) embedded in a (c_max+1)^2 one, unassigned kept last."""
    conf = np.asarray(conf, dtype=np.int64)
    c = conf.shape[0] - 1
    if c == c_max:
        return conf
    out = np.zeros((c_max + 1, c_max + 1), np.int64)
    out[:c, :c] = conf[:c, :c]
    out[:c, c_max] = conf[:c, c]
    return out


def _nanmean(values: Iterable[float | None]) -> float:
    v = np.asarray([math.nan if x is None else float(x) for x in values], dtype=np.float64)
    if not np.isfinite(v).any():
        return math.nan
    return float(np.nanmean(v))


def _objects(r: Mapping[str, Any], key: str) -> list[float | None]:
    """Per-object DAVIS scores of one record; a record without the list (written before per-object
    pooling) counts as one object with its sequence mean."""
    if f"{key}_objects" in r:
        return list(r[f"{key}_objects"])
    return [r.get(key)] if key in r else []


def summarize(per_clip: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pool per-clip results (of :func:`evaluate_clip`, or read back from ``per_video.jsonl``).

    ``mIoU`` from the SUM of the confusion matrices (one matrix for the dataset, SPEC 8); ``mVC8`` /
    ``mVC16`` = nanmean over all windows of all clips; with DAVIS scores, ``J`` and ``F`` are means over
    ALL OBJECTS of all sequences (the DAVIS 2017 toolkit: a sequence of 4 objects weighs 4 times a
    sequence of 1) and ``J&F = (J + F) / 2``. Records with an ``error`` field (a video that failed) are
    counted in ``failed`` / ``failed_videos`` and left out of every score. Also ``per_class_iou`` (nan
    for classes absent from the ground truth), ``unassigned_fraction`` (scored pixels predicted by
    unassigned clusters), ``videos`` (scored), ``frames``, ``seconds``, summed ``work`` and the
    ``protocol`` of the clips (``"late"`` or ``"authors"``; records without one are ``"late"``). Clips with
    different class counts (DAVIS 2017) are padded. ``assign``: the records' assignment; records with a
    ``by_names`` part (``assign="both"``) also get it pooled under ``by_names``.
    """
    per_clip = list(per_clip)
    failed = [r for r in per_clip if r.get("error")]
    per_clip = [r for r in per_clip if not r.get("error")]
    out: dict[str, Any] = {"videos": len(per_clip), "failed": len(failed)}
    if failed:
        out["failed_videos"] = [str(r.get("video", "?")) for r in failed]
    if not per_clip:
        out.update(mIoU=math.nan, **{f"mVC{w}": math.nan for w in VC_WINDOWS})
        return out
    confs = [np.asarray(r["conf"], dtype=np.int64) for r in per_clip]
    c_max = max(x.shape[0] for x in confs) - 1
    conf = sum((_pad_conf(x, c_max) for x in confs), np.zeros((c_max + 1, c_max + 1), np.int64))
    total = int(conf.sum())
    out["num_classes"] = c_max
    out["mIoU"] = mean_iou(conf)
    for w in VC_WINDOWS:
        out[f"mVC{w}"] = mean_video_consistency(
            [
                np.asarray([math.nan if x is None else x for x in r[f"vc{w}"]], dtype=np.float64)
                for r in per_clip
            ]
        )
    if any("J" in r or "J_objects" in r for r in per_clip):
        js = [x for r in per_clip for x in _objects(r, "J")]
        fs = [x for r in per_clip for x in _objects(r, "F")]
        out["J"], out["F"] = _nanmean(js), _nanmean(fs)
        out["J&F"] = (out["J"] + out["F"]) / 2
        out["objects"] = len(js)
    out["per_class_iou"] = [float(x) for x in per_class_iou(conf)[:c_max]]
    out["unassigned_fraction"] = float(conf[:, c_max].sum() / total) if total else math.nan
    out["frames"] = int(sum(int(r.get("frames", 0)) for r in per_clip))
    out["seconds"] = float(sum(float(r.get("seconds", 0.0)) for r in per_clip))
    work: dict[str, int] = {}
    for r in per_clip:
        for k, v in (r.get("work") or {}).items():
            work[k] = work.get(k, 0) + int(v)
    out["work"] = work
    protocols = sorted({str(r.get("protocol", "late")) for r in per_clip})
    out["protocol"] = protocols[0] if len(protocols) == 1 else "+".join(protocols)
    assigns = {r.get("assign", "first-frame") for r in per_clip}
    if len(assigns) == 1:
        out["assign"] = assigns.pop()
    named = [r["by_names"] for r in per_clip if r.get("by_names")]
    if named:  # assign="both": the names assignment, pooled the same way
        out["by_names"] = {
            k: v for k, v in summarize(named).items() if k not in ("frames", "seconds", "work")
        }
    return out
