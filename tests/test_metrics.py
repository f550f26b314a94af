"""Metrics (SPEC 8): hand-computed cases, references written independently here, and real clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from vidseg_nb import metrics as M

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAMVID = DATA / "camvid" / "0016E5"
DAVIS = DATA / "davis2016"


# --------------------------------------------------------------------------------------------------
# confusion matrix and mIoU
# --------------------------------------------------------------------------------------------------
GT3 = np.array([[0, 0, 1], [0, 1, 1], [2, 2, 255]])
PR3 = np.array([[0, 1, 1], [0, 1, 1], [2, 0, 0]])
# non-ignored pixels (the 255 one is left out):
#   gt 0 at (0,0) (0,1) (1,0) -> pred 0, 1, 0   => C[0,0] = 2, C[0,1] = 1
#   gt 1 at (0,2) (1,1) (1,2) -> pred 1, 1, 1   => C[1,1] = 3
#   gt 2 at (2,0) (2,1)       -> pred 2, 0      => C[2,2] = 1, C[2,0] = 1
CONF3 = np.array([[2, 1, 0], [0, 3, 0], [1, 0, 1]])
# IoU_0 = 2 / (3 + 3 - 2) = 0.5 ; IoU_1 = 3 / (3 + 4 - 3) = 0.75 ; IoU_2 = 1 / (2 + 1 - 1) = 0.5
IOU3 = np.array([0.5, 0.75, 0.5])


def test_confusion_matrix_hand_computed() -> None:
    conf = M.confusion_matrix(GT3, PR3, 3)
    assert conf.dtype == np.int64 and conf.shape == (3, 3)
    np.testing.assert_array_equal(conf, CONF3)
    np.testing.assert_allclose(M.per_class_iou(conf), IOU3)
    assert M.mean_iou(conf) == pytest.approx(1.75 / 3)


def test_class_absent_from_gt_is_nan_and_left_out() -> None:
    conf = M.confusion_matrix(GT3, PR3, 4)  # class 3 occurs nowhere
    iou = M.per_class_iou(conf)
    assert np.isnan(iou[3])
    assert M.mean_iou(conf) == pytest.approx(1.75 / 3)
    # a class predicted but absent from gt: left out by default, IoU 0 in the Evaluator's "union" mode
    pred = PR3.copy()
    pred[0, 0] = 3  # gt 0 -> pred 3: C[0,0] = 1, C[0,3] = 1 ; IoU_0 = 1 / (3 + 2 - 1) = 0.25
    conf = M.confusion_matrix(GT3, pred, 4)
    assert np.isnan(M.per_class_iou(conf)[3])
    assert M.mean_iou(conf) == pytest.approx((0.25 + 0.75 + 0.5) / 3)
    assert M.mean_iou(conf, over="union") == pytest.approx((0.25 + 0.75 + 0.5 + 0.0) / 4)


def test_ignored_gt_pixels_do_not_count_even_with_invalid_prediction() -> None:
    gt = np.array([[0, 255], [-1, 1]])
    pred = np.array([[0, 77], [-5, 1]])  # invalid predictions only on ignored pixels
    conf = M.confusion_matrix(gt, pred, 2)
    np.testing.assert_array_equal(conf, [[1, 0], [0, 1]])
    assert M.mean_iou(conf) == 1.0


def test_prediction_out_of_range_raises() -> None:
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        M.confusion_matrix(GT3, np.where(PR3 == 2, 3, PR3), 3)
    with pytest.raises(ValueError, match="outside"):
        M.confusion_matrix(GT3, np.full_like(GT3, -1), 3)
    with pytest.raises(ValueError, match="shapes differ"):
        M.confusion_matrix(GT3, PR3[:2], 3)
    with pytest.raises(ValueError, match="integer"):
        M.confusion_matrix(GT3, PR3.astype(float), 3)


def test_confusion_matrix_accumulates_over_frames_and_perfect_is_one() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, size=(5, 7, 9))
    gt[0, 0, :] = 255
    pred = rng.integers(0, 5, size=gt.shape)
    whole = M.confusion_matrix(gt, pred, 5)
    summed = sum(M.confusion_matrix(gt[t], pred[t], 5) for t in range(5))
    np.testing.assert_array_equal(whole, summed)
    # label 5 is outside num_classes = 5, so it is ignored like 255
    assert whole.sum() == np.count_nonzero(gt < 5)
    assert M.mean_iou(M.confusion_matrix(gt, np.where(gt < 5, gt, 0), 5)) == 1.0
    assert np.isnan(M.mean_iou(np.zeros((3, 3), dtype=np.int64)))


# --------------------------------------------------------------------------------------------------
# mVC_n
# --------------------------------------------------------------------------------------------------
def _vc_reference(gt: np.ndarray, pred: np.ndarray, n: int) -> list[float]:
    """The official VSPW loop (window by window, frame i against frames i+1 .. i+n-1)."""
    out = []
    for i in range(len(gt) - n):
        g = np.ones(gt.shape[1:], bool)
        p = np.ones(gt.shape[1:], bool)
        for j in range(1, n):
            g &= gt[i] == gt[i + j]
            p &= pred[i] == pred[i + j]
        out.append((g & p).sum() / g.sum() if g.sum() else np.nan)
    return out


def test_video_consistency_hand_computed_and_window_range() -> None:
    # T = 4 frames of 1 x 3 pixels
    gt = np.array([[[0, 0, 1]], [[0, 1, 1]], [[0, 1, 1]], [[0, 1, 1]]])
    pred = np.array([[[0, 0, 0]], [[0, 0, 1]], [[0, 1, 1]], [[9, 9, 9]]])
    # n = 2, windows start 0 .. T-n-1 = 0, 1 (the official range(T - n) leaves out the window at 2)
    # window 0 (frames 0,1): G = {0, 2}, P = {0, 1}, G&P = {0}        -> 1/2
    # window 1 (frames 1,2): G = {0, 1, 2}, P = {0, 2}, G&P = {0, 2}  -> 2/3
    # (window 2 would be G = {0,1,2}, P = {} -> 0, and would change the mean)
    scores = M.video_consistency(gt, pred, 2)
    np.testing.assert_allclose(scores, [1 / 2, 2 / 3])
    assert M.mean_video_consistency([scores]) == pytest.approx((1 / 2 + 2 / 3) / 2)
    # n = 3: one window (frames 0,1,2): G = {0, 2}, P = {0} -> 1/2
    np.testing.assert_allclose(M.video_consistency(gt, pred, 3), [1 / 2])
    # T <= n: no window
    assert M.video_consistency(gt, pred, 4).size == 0
    assert M.video_consistency(gt, pred, 5).size == 0


def test_video_consistency_matches_official_loop_on_random_clips() -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 3, size=(1, 6, 7))
    flips = rng.random((20, 6, 7)) < 0.05
    gt = np.where(flips, rng.integers(0, 3, size=flips.shape), base)
    pred = np.where(rng.random(gt.shape) < 0.1, rng.integers(0, 3, size=gt.shape), gt)
    for n in (1, 2, 3, 8, 16):
        np.testing.assert_allclose(M.video_consistency(gt, pred, n), _vc_reference(gt, pred, n))


def test_video_consistency_constant_and_perfect_predictions_score_one() -> None:
    rng = np.random.default_rng(2)
    gt = np.repeat(rng.integers(0, 4, size=(1, 5, 5)), 12, axis=0)
    gt[6:, :2] = 3
    assert M.mean_video_consistency([M.video_consistency(gt, np.zeros_like(gt), 8)]) == 1.0
    assert M.mean_video_consistency([M.video_consistency(gt, gt, 8)]) == 1.0
    noisy = rng.integers(0, 4, size=gt.shape)
    assert M.mean_video_consistency([M.video_consistency(gt, noisy, 8)]) < 0.1


def test_video_consistency_nan_windows_and_mean_over_clips() -> None:
    gt = np.arange(6).reshape(6, 1, 1) * np.ones((1, 2, 2), int)  # changes every frame: |G| = 0
    scores = M.video_consistency(gt, gt, 2)
    assert scores.shape == (4,) and np.isnan(scores).all()
    assert np.isnan(M.mean_video_consistency([scores]))
    assert np.isnan(M.mean_video_consistency([]))
    # nanmean runs over all windows of all clips (not a mean of clip means)
    assert M.mean_video_consistency([scores, np.array([1.0, 0.0, 0.5]), np.array([1.0])]) == pytest.approx(
        0.625
    )


# --------------------------------------------------------------------------------------------------
# DAVIS J and F
# --------------------------------------------------------------------------------------------------
def test_region_similarity_hand_computed() -> None:
    gt = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], bool)
    pred = np.array([[0, 1, 1], [0, 1, 1], [0, 0, 0]], bool)
    # intersection {(0,1), (1,1)} = 2, union = 4 + 4 - 2 = 6
    assert M.region_similarity(gt, pred) == pytest.approx(1 / 3)
    assert M.region_similarity(gt, gt) == 1.0
    empty = np.zeros_like(gt)
    assert M.region_similarity(empty, empty) == 1.0
    assert M.region_similarity(gt, empty) == 0.0
    # void pixels leave both masks: with column 0 void, gt = {(0,1),(1,1)} = pred -> 1
    void = np.zeros_like(gt)
    void[:, 0] = True
    void[:, 2] = True
    assert M.region_similarity(gt, pred, void) == 1.0


def test_boundary_map_follows_seg2bmap() -> None:
    mask = np.zeros((5, 5), bool)
    mask[1:3, 1:3] = True
    # a pixel differing from its right, bottom or bottom-right neighbour: inside right/bottom edges and
    # outside top/left edges (the boundary is offset half a pixel towards the origin)
    expected = np.array(
        [
            [1, 1, 1, 0, 0],
            [1, 0, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ],
        bool,
    )
    np.testing.assert_array_equal(M.boundary_map(mask), expected)
    # last row compares only to the right, last column only below, the corner never
    full = np.ones((3, 3), bool)
    assert not M.boundary_map(full).any()


def _half(h: int, w: int, last_col: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[:, : last_col + 1] = True
    return m


def test_boundary_f_shift_and_tolerance() -> None:
    gt = _half(10, 10, 4)  # boundary = column 4
    assert M.boundary_f(gt, gt) == 1.0
    assert M.boundary_f(gt, _half(10, 10, 5), bound_th=1) == 1.0  # 1-pixel shift, 1-pixel tolerance
    assert M.boundary_f(gt, _half(10, 10, 6), bound_th=2) == 1.0
    assert M.boundary_f(gt, _half(10, 10, 7), bound_th=2) == 0.0  # 3 pixels away: nothing matched
    # 100 x 100: tolerance ceil(0.008 * sqrt(2) * 100) = ceil(1.13) = 2 pixels
    big = _half(100, 100, 49)
    assert M.boundary_f(big, _half(100, 100, 51)) == 1.0
    assert M.boundary_f(big, _half(100, 100, 52)) == 0.0


def test_boundary_f_partial_match_hand_computed() -> None:
    gt = _half(10, 10, 4)  # boundary: (0..9, 4), 10 pixels
    pred = np.zeros((10, 10), bool)
    pred[:5, :5] = True
    pred[5:, :8] = True
    # pred boundary: (0..3, 4), (4, 4..7), (5..9, 7): 13 pixels
    # within 1 pixel of gt: (0..3,4), (4,4), (4,5) -> precision 6/13
    # gt within 1 pixel of pred: (0..4,4), (5,4) [next to (4,4)] -> recall 6/10
    # F = 2PR / (P + R) = 12/23
    assert M.boundary_f(gt, pred, bound_th=1) == pytest.approx(12 / 23)


def test_boundary_f_empty_masks() -> None:
    empty = np.zeros((8, 8), bool)
    obj = np.zeros((8, 8), bool)
    obj[2:5, 2:5] = True
    assert M.boundary_f(empty, empty) == 1.0
    assert M.boundary_f(obj, empty) == 0.0
    assert M.boundary_f(empty, obj) == 0.0


def _f_reference(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> float:
    """DAVIS f_measure written with a dilation by a disk, as in the toolkit."""
    r = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(gt.shape))
    ri = int(r)
    y, x = np.ogrid[-ri : ri + 1, -ri : ri + 1]
    disk = y * y + x * x <= r * r
    gb, pb = M.boundary_map(gt), M.boundary_map(pred)
    n_g, n_p = gb.sum(), pb.sum()
    if n_g == 0 and n_p == 0:
        return 1.0
    if n_g == 0 or n_p == 0:
        return 0.0
    prec = (pb & ndimage.binary_dilation(gb, disk)).sum() / n_p
    rec = (gb & ndimage.binary_dilation(pb, disk)).sum() / n_g
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


@pytest.mark.parametrize("density", ["blobs", "noise"])
def test_boundary_f_matches_dilation_reference(density: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(4):
        if density == "blobs":  # sparse boundaries
            gt = ndimage.gaussian_filter(rng.random((60, 80)), 4) > 0.5
            pred = np.roll(gt, tuple(rng.integers(-3, 4, size=2)), axis=(0, 1))
            pred[rng.integers(0, 60), :] ^= True
        else:  # dense boundaries
            gt = rng.random((60, 80)) < 0.5
            pred = rng.random((60, 80)) < 0.5
        for th in (0.008, 0.02, 1, 2.5, 3, 9):
            assert M.boundary_f(gt, pred, th) == pytest.approx(_f_reference(gt, pred, th))
    # a tolerance larger than the image
    small_gt, small_pred = rng.random((2, 6, 9)) < 0.3
    assert M.boundary_f(small_gt, small_pred, 12) == pytest.approx(_f_reference(small_gt, small_pred, 12))


def test_davis_statistics_uses_davis_bins() -> None:
    v = np.array([1, 1, 0.4, 0.4, 0.4, 0.3, 0.2, 0.1])
    # DAVIS bins for N = 8: ids = round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7]
    # first bin v[0:3] -> mean 0.8 ; last bin v[5:8] -> mean 0.2 ; decay 0.6
    # (np.array_split would give bins of 2: 1.0 - 0.15 = 0.85)
    mean, recall, decay = M.davis_statistics(v)
    assert mean == pytest.approx(3.8 / 8)
    assert recall == pytest.approx(2 / 8)
    assert decay == pytest.approx(0.6)


def test_davis_scores_perfect_and_first_last_dropped() -> None:
    masks = np.zeros((6, 20, 30), bool)
    for t in range(6):
        masks[t, 5:12, 3 + 2 * t : 12 + 2 * t] = True
    perfect = M.davis_scores(masks, masks)
    assert perfect == {
        "J_mean": 1.0,
        "J_recall": 1.0,
        "J_decay": 0.0,
        "F_mean": 1.0,
        "F_recall": 1.0,
        "F_decay": 0.0,
        "JF_mean": 1.0,
    }
    wrong_ends = masks.copy()
    wrong_ends[0] = ~masks[0]
    wrong_ends[-1] = False
    assert M.davis_scores(masks, wrong_ends)["JF_mean"] == 1.0
    assert M.davis_scores(masks, wrong_ends, drop_first_last=False)["JF_mean"] < 1.0
    with pytest.raises(ValueError, match="T >= 3"):
        M.davis_scores(masks[:2], masks[:2])


# --------------------------------------------------------------------------------------------------
# first-frame label assignment
# --------------------------------------------------------------------------------------------------
def test_resize_nearest_matches_pil_nearest() -> None:
    rng = np.random.default_rng(4)
    lab = rng.integers(0, 200, size=(360, 480)).astype(np.uint8)
    ours = M.resize_nearest(lab, (23, 30))
    pil = np.asarray(Image.fromarray(lab).resize((30, 23), Image.NEAREST))
    np.testing.assert_array_equal(ours, pil)


def test_assign_labels_majority_merge_and_ignore() -> None:
    coarse = np.array([[0, 0, 0, 1], [2, 2, 1, 3], [4, 4, 4, 0]])
    small_gt = np.array([[3, 3, 4, 1], [3, 3, 1, 255], [255, 255, 6, 3]])
    gt = np.kron(small_gt, np.ones((2, 2), dtype=np.int64))  # (6, 8); nearest back to (3, 4) = small_gt
    mapping = M.assign_labels(coarse, gt, ignore_index=255)
    # cluster 0: 3, 3, 4, 3 -> 3 ; cluster 1: 1, 1, 1 -> 1 ; cluster 2: 3, 3 -> 3 (merges with 0)
    # cluster 3: only ignored -> -1 ; cluster 4: 255, 255, 6 -> 6 (ignored cells never win)
    assert mapping == {0: 3, 1: 1, 2: 3, 3: -1, 4: 6}
    # without ignore_index, 255 is a label like any other
    assert M.assign_labels(coarse, gt)[4] == 255
    # ties go to the smallest label
    assert M.assign_labels(np.array([[7, 7]]), np.array([[9, 2]])) == {7: 2}


def test_only_frame_one_labels_can_be_predicted() -> None:
    rng = np.random.default_rng(5)
    gt1 = np.zeros((8, 8), np.int64)
    gt1[:, 4:] = 2
    coarse1 = rng.integers(0, 5, size=(4, 4))
    mapping = M.assign_labels(coarse1, gt1)
    later = rng.integers(0, 8, size=(3, 4, 4))  # includes clusters 5..7 never seen in frame 1
    pred = M.apply_label_map(later, mapping)
    assert set(np.unique(pred)) <= {0, 2, -1}
    assert (pred[later >= 5] == -1).all()
    gt_later = np.full((3, 4, 4), 1)  # class 1 appears only after frame 1: never predicted
    conf = M.confusion_matrix(gt_later, np.where(pred < 0, 0, pred), 3)
    assert conf[:, 1].sum() == 0


def test_apply_label_map() -> None:
    labels = np.array([[0, 1, 2], [5, -1, 1]])
    out = M.apply_label_map(labels, {0: 10, 1: 11, 5: 3})
    assert out.dtype == np.int64 and out.shape == labels.shape
    np.testing.assert_array_equal(out, [[10, 11, -1], [3, -1, 11]])
    np.testing.assert_array_equal(M.apply_label_map(labels, {}, default=7), np.full((2, 3), 7))
    huge = np.array([0, 1 << 30])
    np.testing.assert_array_equal(M.apply_label_map(huge, {1 << 30: 4}), [-1, 4])


# --------------------------------------------------------------------------------------------------
# real clips (../shared/data)
# --------------------------------------------------------------------------------------------------
def _load_labels(paths: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in paths]).astype(np.int64)


@pytest.mark.data
@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"real CamVid sample not found at {CAMVID}")
def test_camvid_previous_frame_prediction() -> None:
    gt = _load_labels(sorted((CAMVID / "labels").glob("*.png"))[:24])  # 0..10, 11 = void
    assert gt.max() == 11
    prev = np.concatenate([gt[:1], gt[:-1]])
    prev = np.where(prev == 11, 0, prev)  # void is not a prediction: call it sky
    const = np.zeros_like(gt)

    miou = M.mean_iou(M.confusion_matrix(gt, prev, 11))
    miou_const = M.mean_iou(M.confusion_matrix(gt, const, 11))
    assert M.mean_iou(M.confusion_matrix(gt, gt, 11)) == 1.0
    assert miou_const < miou < 1.0

    for n in (8, 16):
        vc = M.mean_video_consistency([M.video_consistency(gt, prev, n)])
        noise = np.random.default_rng(n).integers(0, 11, size=gt.shape)
        vc_noise = M.mean_video_consistency([M.video_consistency(gt, noise, n)])
        # a constant prediction is perfectly consistent, so the lower baseline here is noise
        assert M.mean_video_consistency([M.video_consistency(gt, const, n)]) == 1.0
        assert M.mean_video_consistency([M.video_consistency(gt, gt, n)]) == 1.0
        assert vc_noise < vc < 1.0


@pytest.mark.data
@pytest.mark.skipif(not DAVIS.is_dir(), reason=f"real DAVIS 2016 sample not found at {DAVIS}")
def test_davis2016_previous_frame_prediction() -> None:
    seqs = sorted(p.name for p in (DAVIS / "Annotations" / "480p").iterdir() if p.is_dir())
    assert len(seqs) >= 1
    js, fs = [], []
    for seq in seqs:
        raw = _load_labels(sorted((DAVIS / "Annotations" / "480p" / seq).glob("*.png"))[:12])
        gt = raw == 255  # the object (255 is the object in DAVIS 2016, not void)
        assert gt.any() and (gt | (raw == 0)).all()
        prev = np.concatenate([gt[:1], gt[:-1]])
        if seq == seqs[0]:
            perfect = M.davis_scores(gt, gt)
            assert perfect["JF_mean"] == 1.0 and perfect["J_mean"] == 1.0 and perfect["F_mean"] == 1.0
        const = M.davis_scores(gt, np.zeros_like(gt))
        s = M.davis_scores(gt, prev)
        assert const["J_mean"] < s["J_mean"] < 1.0, seq
        assert const["JF_mean"] < s["JF_mean"] < 1.0, seq
        js.append(s["J_mean"])
        fs.append(s["F_mean"])
    assert 0.0 < np.mean(js) < 1.0
    assert 0.0 < np.mean(fs) < 1.0
