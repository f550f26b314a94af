"""Evaluation metrics of the paper (SPEC section 8): mIoU, mVC_n, DAVIS J&F and first-frame label assignment.

Pure numpy (no torch; scipy is not needed either). Conventions:

- Label maps are integer arrays; a frame is (H, W), a clip is (T, H, W).
- Confusion matrices have rows = ground truth, columns = prediction, dtype int64; accumulate over
  frames and videos by adding them (one matrix for the whole dataset, as the VSPW evaluator does).
- Ground-truth pixels outside ``[0, num_classes)`` (void / ignore, e.g. 255) are left out of the
  confusion matrix. mVC follows the official VSPW code, which ignores nothing (see
  :func:`video_consistency`).
- DAVIS J and F follow the DAVIS 2017 evaluation toolkit (``davis2017/metrics.py``,
  ``davis2017/utils.py``), with the disk dilation of the boundaries computed exactly but faster (see
  :func:`boundary_f`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np

from .video import resize_labels

__all__ = [
    "confusion_matrix",
    "per_class_iou",
    "mean_iou",
    "video_consistency",
    "mean_video_consistency",
    "region_similarity",
    "boundary_f",
    "boundary_map",
    "davis_frame_scores",
    "davis_statistics",
    "davis_scores",
    "resize_nearest",
    "assign_labels",
    "apply_label_map",
]


# --------------------------------------------------------------------------------------------------
# mIoU
# --------------------------------------------------------------------------------------------------
def _check_integer(name: str, a: np.ndarray) -> None:
    if a.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix C (rows = ground truth, columns = prediction) of one frame, clip or dataset.

    ``gt`` and ``pred`` are integer arrays of the same shape (a frame (H, W), a clip (T, H, W), ...).
    Pixels whose ground truth lies outside ``[0, num_classes)`` (void / ignore labels such as 255) are
    left out, as in the official VSPW evaluator. A prediction outside ``[0, num_classes)`` on a
    non-ignored pixel raises ``ValueError`` (map unassigned clusters to a real label first).

    Returns a (num_classes, num_classes) int64 array; sum the matrices of several videos to evaluate a
    dataset with one matrix (SPEC 8).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred shapes differ: {gt.shape} vs {pred.shape}")
    _check_integer("gt", gt)
    _check_integer("pred", pred)
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    valid = gt < num_classes if gt.dtype.kind in "ub" else (gt >= 0) & (gt < num_classes)
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        bad = valid & ((pred < 0) | (pred >= num_classes))
        if bad.any():
            values = np.unique(pred[bad])
            raise ValueError(
                f"{int(bad.sum())} predicted pixels on non-ignored ground truth are outside "
                f"[0, {num_classes}): values {values[:10].tolist()}"
                + (" ..." if values.size > 10 else "")
                + "; map unassigned clusters (e.g. -1) to a class before scoring"
            )
    # one code per pixel, gt * C + pred; ignored pixels go to an extra bin that is dropped
    code = gt.astype(np.int64)
    code *= num_classes
    code += pred
    code[~valid] = num_classes * num_classes
    counts = np.bincount(code.ravel(), minlength=num_classes * num_classes + 1)[: num_classes * num_classes]
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def per_class_iou(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU_c = C[c, c] / (sum_j C[c, j] + sum_i C[i, c] - C[c, c]) from a confusion matrix.

    Classes absent from the ground truth (row sum 0) get ``nan``.
    """
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"conf must be a square matrix, got shape {conf.shape}")
    tp = np.diag(conf)
    rows = conf.sum(axis=1)
    union = rows + conf.sum(axis=0) - tp
    iou = np.full(conf.shape[0], np.nan)
    present = rows > 0
    iou[present] = tp[present] / union[present]
    return iou


def mean_iou(conf: np.ndarray, over: Literal["gt", "union"] = "gt") -> float:
    """mIoU (paper 5.1) from a confusion matrix: the mean of IoU_c over classes present in the ground truth.

    ``over="gt"`` (default, SPEC 8) averages over classes with a non-zero row. ``over="union"``
    reproduces the ``nanmean`` of the common VSPW/DeepLab ``Evaluator`` class, which also counts classes
    that were predicted but never occur in the ground truth (IoU 0 for them). Returns ``nan`` when no
    class qualifies.
    """
    conf = np.asarray(conf, dtype=np.float64)
    iou = per_class_iou(conf)
    if over == "union":
        tp = np.diag(conf)
        union = conf.sum(axis=1) + conf.sum(axis=0) - tp
        keep = union > 0
        iou = np.where(keep, tp / np.where(keep, union, 1.0), np.nan)
    elif over != "gt":
        raise ValueError(f"over must be 'gt' or 'union', got {over!r}")
    if not np.isfinite(iou).any():
        return float("nan")
    return float(np.nanmean(iou))


# --------------------------------------------------------------------------------------------------
# mVC_n
# --------------------------------------------------------------------------------------------------
def video_consistency(gt: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Window scores of VSPW's video consistency VC_n for one clip (paper 5.1, SPEC 8).

    ``gt`` and ``pred`` are (T, H, W). Windows start at 0 .. T-n-1 (the official code's
    ``for i in range(T - n)``, which leaves out the last possible window) and span frames i .. i+n-1.
    Per window, G = pixels whose ground truth is identical in all n frames and P = pixels whose
    prediction is identical in all n frames; the score is |G & P| / |G| (``nan`` when |G| = 0).
    Like the official code, nothing is ignored: void ground-truth pixels that stay void count in G.
    Clips with T <= n give an empty array.

    Runs in O(T * H * W) time and O(H * W) memory with a backward run length of "equal to the next
    frame" per pixel: a window starting at i is constant at a pixel iff that run length at i is >= n-1.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred shapes differ: {gt.shape} vs {pred.shape}")
    if gt.ndim < 2:
        raise ValueError(f"expected clips of shape (T, H, W), got {gt.shape}")
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    t_len = gt.shape[0]
    n_windows = t_len - n
    if n_windows <= 0:
        return np.empty(0, dtype=np.float64)
    g = gt.reshape(t_len, -1)
    p = pred.reshape(t_len, -1)
    need = n - 1  # equalities with the next frame needed inside a window
    cap = np.int32(max(need, 1))
    run_g = np.zeros(g.shape[1], dtype=np.int32)
    run_p = np.zeros(p.shape[1], dtype=np.int32)
    scores = np.empty(n_windows, dtype=np.float64)
    # run[t] = number of consecutive frames after t equal to their predecessor, capped at n - 1
    for t in range(t_len - 2, -1, -1):
        run_g = np.minimum(run_g + 1, cap) * (g[t] == g[t + 1])
        run_p = np.minimum(run_p + 1, cap) * (p[t] == p[t + 1])
        if t < n_windows:
            big_g = run_g >= need
            denom = np.count_nonzero(big_g)
            num = np.count_nonzero(big_g & (run_p >= need))
            scores[t] = num / denom if denom else np.nan
    return scores


def mean_video_consistency(window_scores: Iterable[np.ndarray]) -> float:
    """mVC_n: the ``nanmean`` of :func:`video_consistency` window scores over all windows of all clips.

    Returns ``nan`` when there is no window with a defined score.
    """
    arrays = [np.asarray(s, dtype=np.float64).ravel() for s in window_scores]
    allw = np.concatenate(arrays) if arrays else np.empty(0)
    if not np.isfinite(allw).any():
        return float("nan")
    return float(np.nanmean(allw))


# --------------------------------------------------------------------------------------------------
# DAVIS J & F
# --------------------------------------------------------------------------------------------------
def _as_mask(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask (H, W), got shape {a.shape}")
    return a.astype(bool, copy=False)


def _mask_pair(
    gt_mask: np.ndarray, pred_mask: np.ndarray, void: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The two boolean masks of J and F, checked to share a shape, with the ``void`` pixels cleared."""
    g = _as_mask("gt_mask", gt_mask)
    p = _as_mask("pred_mask", pred_mask)
    if g.shape != p.shape:
        raise ValueError(f"gt_mask and pred_mask shapes differ: {g.shape} vs {p.shape}")
    if void is not None:
        keep = ~_as_mask("void", void)
        g, p = g & keep, p & keep
    return g, p


def region_similarity(gt_mask: np.ndarray, pred_mask: np.ndarray, void: np.ndarray | None = None) -> float:
    """DAVIS region similarity J: the IoU of two boolean masks; 1.0 when both are empty.

    ``void`` (optional) marks pixels left out of both masks, as in ``db_eval_iou``.
    """
    g, p = _mask_pair(gt_mask, pred_mask, void)
    union = np.count_nonzero(g | p)
    if union == 0:
        return 1.0
    return np.count_nonzero(g & p) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """DAVIS ``seg2bmap``: 1-pixel-wide boundary of a binary mask (or a stack (..., H, W) of masks).

    A pixel is on the boundary if it differs from its right, bottom or bottom-right neighbour (outside
    the image counts as background); in the last row only the right neighbour and in the last column
    only the bottom neighbour are compared; the bottom-right corner pixel is never a boundary.
    """
    seg = np.asarray(mask).astype(bool, copy=False)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[..., :, :-1] = seg[..., :, 1:]
    s[..., :-1, :] = seg[..., 1:, :]
    se[..., :-1, :-1] = seg[..., 1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[..., -1, :] = seg[..., -1, :] ^ e[..., -1, :]
    b[..., :, -1] = seg[..., :, -1] ^ s[..., :, -1]
    b[..., -1, -1] = False
    return b


def _dilate_disk(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation of a 2-D mask by the disk {y^2 + x^2 <= radius^2}, outside the image = False.

    The same result as ``ndimage.binary_dilation`` with that disk (skimage's ``disk(r)`` for integer r),
    computed row by row of the disk: horizontal dilations of growing half-width w are built by OR-ing
    shifted copies (w -> w + 1 costs two ORs), and for each vertical offset dy the one of half-width
    floor(sqrt(r^2 - dy^2)) is shifted by dy and OR-ed in. About 4r + 1 boolean ORs over the image,
    much faster than a generic dilation with a (2r + 1)^2 structuring element.
    """
    h, w = mask.shape
    r_int = int(math.floor(radius))
    src = np.ascontiguousarray(mask, dtype=bool)
    dys = range(-min(r_int, h - 1), min(r_int, h - 1) + 1)
    halves = {dy: math.isqrt(int(math.floor(radius * radius - dy * dy))) for dy in dys}  # w^2 + dy^2 <= r^2
    rows = [src]
    for k in range(1, max(halves.values()) + 1):
        nxt = rows[-1].copy()
        if k < w:
            nxt[:, k:] |= src[:, :-k]
            nxt[:, :-k] |= src[:, k:]
        rows.append(nxt)
    out = np.zeros((h, w), dtype=bool)
    for dy, half in halves.items():
        row = rows[half]
        if dy >= 0:
            out[dy:] |= row[: h - dy]
        else:
            out[: h + dy] |= row[-dy:]
    return out


def boundary_f(
    gt_mask: np.ndarray,
    pred_mask: np.ndarray,
    bound_th: float = 0.008,
    void: np.ndarray | None = None,
) -> float:
    """DAVIS contour accuracy F: the boundary F-measure of two binary masks (``f_measure`` of DAVIS 2017).

    Boundaries come from :func:`boundary_map` (``seg2bmap``). The tolerance radius is
    ``ceil(bound_th * sqrt(H^2 + W^2))`` pixels when ``bound_th < 1``, else ``bound_th`` pixels. A
    predicted boundary pixel is matched when a ground-truth boundary pixel lies within the radius (the
    disk ``y^2 + x^2 <= r^2`` used by ``binary_dilation`` with skimage's ``disk(r)``), and vice versa;
    precision = matched predicted / predicted, recall = matched gt / gt, F = 2PR / (P + R).
    Edge cases as DAVIS: both boundaries empty -> F = 1; exactly one empty -> F = 0.
    ``void`` (optional) pixels are cleared from both masks before taking boundaries.
    """
    g, p = _mask_pair(gt_mask, pred_mask, void)
    radius = float(bound_th) if bound_th >= 1 else float(np.ceil(bound_th * np.linalg.norm(g.shape)))
    # Crop to the masks' bounding box plus one pixel: seg2bmap gives the same boundary pixels (the extra
    # row/column holds every boundary pixel outside the masks, and all comparisons beyond it are 0 vs 0),
    # and matching only depends on distances between boundary pixels.
    both = g | p
    rows = np.flatnonzero(both.any(axis=1))
    if rows.size == 0:
        return 1.0  # both masks empty: both boundaries empty
    cols = np.flatnonzero(both.any(axis=0))
    r0, r1 = max(int(rows[0]) - 1, 0), int(rows[-1]) + 2
    c0, c1 = max(int(cols[0]) - 1, 0), int(cols[-1]) + 2
    g, p = g[r0:r1, c0:c1], p[r0:r1, c0:c1]
    gb = boundary_map(g)
    pb = boundary_map(p)
    n_p = int(np.count_nonzero(pb))
    n_g = int(np.count_nonzero(gb))
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0  # DAVIS: precision/recall (1, 0) or (0, 1) -> F = 0
    p_match = int(np.count_nonzero(pb & _dilate_disk(gb, radius)))
    g_match = int(np.count_nonzero(gb & _dilate_disk(pb, radius)))
    precision = p_match / n_p
    recall = g_match / n_g
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def davis_frame_scores(
    gt_masks: np.ndarray,
    pred_masks: np.ndarray,
    bound_th: float = 0.008,
    void: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame DAVIS J and F of one object over a sequence (T, H, W) of binary masks (no frame dropped)."""
    g = np.asarray(gt_masks)
    p = np.asarray(pred_masks)
    if g.shape != p.shape or g.ndim != 3:
        raise ValueError(f"expected two (T, H, W) mask stacks of one shape, got {g.shape} and {p.shape}")
    if void is not None and np.asarray(void).shape != g.shape:
        raise ValueError(f"void shape {np.asarray(void).shape} differs from the masks' {g.shape}")
    vs = [None] * g.shape[0] if void is None else list(np.asarray(void))
    j = np.array([region_similarity(g[t], p[t], vs[t]) for t in range(g.shape[0])], dtype=np.float64)
    f = np.array([boundary_f(g[t], p[t], bound_th, vs[t]) for t in range(g.shape[0])], dtype=np.float64)
    return j, f


def davis_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """DAVIS (mean, recall, decay) of per-frame values, as ``db_statistics`` of the DAVIS 2017 toolkit.

    mean = nanmean; recall = fraction of frames with value > 0.5; decay = mean of the first quarter minus
    mean of the last quarter, with DAVIS's bins: ``ids = round(linspace(1, N, 5)) - 1`` and bin i =
    ``values[ids[i] : ids[i+1] + 1]`` (neighbouring bins share their edge frame; this is not
    ``np.array_split``).
    """
    v = np.asarray(per_frame, dtype=np.float64).ravel()
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(v))
        recall = float(np.nanmean(v > 0.5))
        ids = (np.round(np.linspace(1, v.size, 5) + 1e-10) - 1).astype(np.int64)
        first = v[ids[0] : ids[1] + 1]
        last = v[ids[3] : ids[4] + 1]
        decay = float(np.nanmean(first) - np.nanmean(last))
    return mean, recall, decay


def davis_scores(
    gt_masks: np.ndarray,
    pred_masks: np.ndarray,
    bound_th: float = 0.008,
    drop_first_last: bool = True,
    void: np.ndarray | None = None,
) -> dict[str, float]:
    """DAVIS J&F of one object in one sequence: masks (T, H, W) bool.

    The semi-supervised protocol drops the first and the last frame (``drop_first_last``; needs T >= 3).
    Returns ``J_mean, J_recall, J_decay, F_mean, F_recall, F_decay`` (see :func:`davis_statistics`) and
    ``JF_mean = (J_mean + F_mean) / 2``. For DAVIS 2017 call it once per object id and average the
    per-object means, as the toolkit does.
    """
    g = np.asarray(gt_masks)
    p = np.asarray(pred_masks)
    vd = None if void is None else np.asarray(void)
    if drop_first_last:
        if g.ndim != 3 or g.shape[0] < 3:
            raise ValueError(f"dropping the first and last frame needs (T >= 3, H, W) masks, got {g.shape}")
        g, p = g[1:-1], p[1:-1]
        vd = None if vd is None else vd[1:-1]
    j, f = davis_frame_scores(g, p, bound_th, vd)
    jm, jr, jd = davis_statistics(j)
    fm, fr, fd = davis_statistics(f)
    return {
        "J_mean": jm,
        "J_recall": jr,
        "J_decay": jd,
        "F_mean": fm,
        "F_recall": fr,
        "F_decay": fd,
        "JF_mean": (jm + fm) / 2,
    }


# --------------------------------------------------------------------------------------------------
# First-frame label assignment (SPEC 8)
# --------------------------------------------------------------------------------------------------
def resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map (H, W) to ``size = (h, w)``, keeping its dtype.

    A thin alias of :func:`vidseg_nb.video.resize_labels` (the one label resize: output cell (i, j) takes
    input pixel (floor((i + 0.5) * H / h), floor((j + 0.5) * W / w)), PIL's ``NEAREST`` convention).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a label map (H, W), got shape {labels.shape}")
    if int(size[0]) < 1 or int(size[1]) < 1:
        raise ValueError(f"size must be positive, got {size}")
    return resize_labels(labels, size, keep_dtype=True)


def assign_labels(
    coarse_first: np.ndarray,
    gt_first: np.ndarray,
    ignore_index: int | None = None,
) -> dict[int, int]:
    """First-frame label assignment (SPEC 8): each cluster of M^1 gets the majority ground-truth label.

    ``coarse_first`` is the coarse cluster map of frame 1 on the feature grid (h, w); ``gt_first`` the
    ground truth of frame 1 (H, W), nearest-resized to (h, w) with :func:`resize_nearest`. Each cluster
    id present in ``coarse_first`` maps to the most frequent label among its cells, cells equal to
    ``ignore_index`` left out; ties go to the smallest label. Clusters with the same label merge (the
    mapping is many-to-one), and only labels present in frame 1 can be predicted. A cluster whose cells
    are all ignored maps to -1 ("unassigned"; :func:`apply_label_map`'s default too) - score it only
    after deciding what -1 means, since :func:`confusion_matrix` rejects it on non-ignored pixels.
    This is not Hungarian matching.
    """
    coarse = np.asarray(coarse_first)
    if coarse.ndim != 2:
        raise ValueError(f"coarse_first must be (h, w), got shape {coarse.shape}")
    _check_integer("coarse_first", coarse)
    gt_small = resize_nearest(np.asarray(gt_first), coarse.shape)
    _check_integer("gt_first", gt_small)
    clusters, c_inv = np.unique(coarse.ravel(), return_inverse=True)
    g = gt_small.ravel()
    valid = np.ones(g.shape, dtype=bool) if ignore_index is None else g != ignore_index
    labels, l_inv = np.unique(g[valid], return_inverse=True)
    n_c, n_l = clusters.size, labels.size
    mapping = {int(c): -1 for c in clusters}
    if n_l == 0:
        return mapping
    counts = np.bincount(c_inv.ravel()[valid] * n_l + l_inv.ravel(), minlength=n_c * n_l).reshape(n_c, n_l)
    best = labels[counts.argmax(axis=1)]
    has = counts.sum(axis=1) > 0
    for c, lab, ok in zip(clusters.tolist(), best.tolist(), has.tolist()):
        if ok:
            mapping[int(c)] = int(lab)
    return mapping


def apply_label_map(labels: np.ndarray, mapping: Mapping[int, int], default: int = -1) -> np.ndarray:
    """Map cluster ids to class labels with a lookup table (ids not in ``mapping`` -> ``default``).

    Works on any shape (a frame, a clip); returns int64.
    """
    labels = np.asarray(labels)
    _check_integer("labels", labels)
    out_dtype = np.int64
    if labels.size == 0:
        return np.empty(labels.shape, dtype=out_dtype)
    keys = np.fromiter((int(k) for k in mapping), dtype=np.int64, count=len(mapping))
    vals = np.fromiter((int(mapping[k]) for k in mapping), dtype=np.int64, count=len(mapping))
    keep = keys >= 0
    keys, vals = keys[keep], vals[keep]
    lo, hi = int(labels.min()), int(labels.max())
    if hi < 0 or keys.size == 0:
        return np.full(labels.shape, default, dtype=out_dtype)
    size = max(hi, int(keys.max())) + 1
    if size <= 1 << 24:
        lut = np.full(size, default, dtype=out_dtype)
        lut[keys] = vals
        if lo >= 0:
            return lut[labels]
        out = np.full(labels.shape, default, dtype=out_dtype)
        pos = labels >= 0
        out[pos] = lut[labels[pos]]
        return out
    # huge ids: sorted search instead of a dense table
    order = np.argsort(keys)
    keys, vals = keys[order], vals[order]
    idx = np.clip(np.searchsorted(keys, labels), 0, keys.size - 1)
    hit = keys[idx] == labels
    return np.where(hit, vals[idx], default).astype(out_dtype, copy=False)
