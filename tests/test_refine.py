"""Correspondence-based refinement (SPEC 6, paper eqs. 3-5) on inputs whose answer is known."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch

from vidseg_nb.refine import (
    correspondence,
    count_label_changes,
    neighbourhood_offsets,
    refine,
    trajectories,
)


def unit_field(rng: np.random.Generator, h: int, w: int, c: int = 16) -> np.ndarray:
    f = rng.standard_normal((h, w, c))
    return f / np.linalg.norm(f, axis=-1, keepdims=True)


def shifted_batch(rng, b, h, w, step, c=16):
    """Frame j = a wide random field seen through a window that moves so content goes ``step`` cells right
    per frame: F^{j+1}[y, x + step] = F^j[y, x]. Labels move the same way."""
    wide = b * step + w
    field = unit_field(rng, h, wide, c)
    lab_field = rng.integers(0, 6, (h, wide))
    feats = np.stack([field[:, b * step - j * step : b * step - j * step + w] for j in range(b)])
    labs = np.stack([lab_field[:, b * step - j * step : b * step - j * step + w] for j in range(b)])
    return feats, labs


# ---------------------------------------------------------------- offsets and correspondences


def test_offsets_order_and_radius():
    assert neighbourhood_offsets(0) == [(0, 0)]
    assert neighbourhood_offsets(1) == [(0, 0), (-1, 0), (0, -1), (0, 1), (1, 0)]
    assert len(neighbourhood_offsets(2)) == 9
    assert len(neighbourhood_offsets(4)) == 13
    assert (2, 0) in neighbourhood_offsets(4) and (2, 0) not in neighbourhood_offsets(3.9)
    with pytest.raises(ValueError):
        neighbourhood_offsets(-1)


def test_shift_by_one_cell_is_tracked():
    rng = np.random.default_rng(0)
    b, h, w = 5, 6, 9
    feats, labs = shifted_batch(rng, b, h, w, step=1)
    yy, xx = np.mgrid[0:h, 0:w]
    for j in range(b - 1):
        t = correspondence(feats[j], feats[j + 1], radius2=1.0, as_coords=True)
        inner = xx < w - 1
        assert (t[..., 0][inner] == yy[inner]).all()
        assert (t[..., 1][inner] == xx[inner] + 1).all()
        flat = correspondence(feats[j], feats[j + 1], radius2=1.0)
        assert (flat[inner] == (yy * w + xx + 1)[inner]).all()
    # A label pattern moving with the features is left unchanged wherever the trajectory stays inside.
    out = refine(labs, feats, radius2=1.0)
    for j in range(b):
        keep = xx + (b - 1 - j) <= w - 1
        np.testing.assert_array_equal(out[j][keep], labs[j][keep])
    # Static labels under the moving pattern would be changed: the test can fail.
    assert not np.array_equal(refine(np.repeat(labs[:1], b, 0), feats), np.repeat(labs[:1], b, 0))


def test_shift_by_two_needs_radius2_4():
    rng = np.random.default_rng(1)
    b, h, w = 4, 6, 10
    feats, labs = shifted_batch(rng, b, h, w, step=2)
    yy, xx = np.mgrid[0:h, 0:w]
    inner = xx < w - 2
    t1 = correspondence(feats[0], feats[1], radius2=1.0, as_coords=True)
    assert ((np.abs(t1[..., 0] - yy) + np.abs(t1[..., 1] - xx)) <= 1).all()  # stays within radius 1
    assert not (t1[..., 1][inner] == xx[inner] + 2).any()
    t4 = correspondence(feats[0], feats[1], radius2=4.0, as_coords=True)
    assert (t4[..., 1][inner] == xx[inner] + 2).all() and (t4[..., 0] == yy)[inner].all()
    out = refine(labs, feats, radius2=4.0)
    for j in range(b):
        keep = xx + 2 * (b - 1 - j) <= w - 1
        np.testing.assert_array_equal(out[j][keep], labs[j][keep])


def test_radius_zero_tracks_each_cell_to_itself():
    rng = np.random.default_rng(2)
    f = rng.standard_normal((3, 4, 5, 8))
    t = trajectories(f, radius2=0)
    np.testing.assert_array_equal(t, np.broadcast_to(np.arange(20).reshape(4, 5), (2, 4, 5)))


def test_targets_stay_inside_grid():
    # Frame j+1 has its best match for every cell just outside the grid (impossible): targets must be
    # valid cells within the radius.
    rng = np.random.default_rng(3)
    f = rng.standard_normal((2, 3, 3, 4))
    t = correspondence(f[0], f[1], radius2=2.0, as_coords=True)
    assert ((t >= 0) & (t < 3)).all()


# ---------------------------------------------------------------- tie rules of eq. 3


def _tie_frames(targets_equal_to_source: list[tuple[int, int]], *, h=5, w=5, c=8):
    """Frame 0: random unit vectors. Frame 1: different random vectors, except that the cells at
    ``(2, 2) + offset`` for each listed offset hold exactly F^0[2, 2]."""
    rng = np.random.default_rng(4)
    f0 = unit_field(rng, h, w, c)
    f1 = -unit_field(rng, h, w, c)
    for dy, dx in targets_equal_to_source:
        f1[2 + dy, 2 + dx] = f0[2, 2]
    return f0, f1


@pytest.mark.parametrize(
    "equal, expected",
    [
        ([(0, 0), (-1, 0), (1, 0)], (2, 2)),  # the cell itself wins on equal similarity
        ([(0, 0), (0, 1)], (2, 2)),
        ([(0, 1), (1, 0)], (2, 3)),  # then row-major: (0, 1) before (1, 0)
        ([(0, -1), (0, 1)], (2, 1)),  # (0, -1) before (0, 1)
        ([(1, 0), (-1, 0)], (1, 2)),  # (-1, 0) first of all
        ([(1, 0)], (3, 2)),  # no tie: the unique best match
    ],
)
def test_correspondence_ties(equal, expected):
    f0, f1 = _tie_frames(equal)
    t = correspondence(f0, f1, radius2=1.0, as_coords=True)
    assert tuple(t[2, 2]) == expected
    t32 = correspondence(
        torch.from_numpy(f0).float(), torch.from_numpy(f1).float(), radius2=1.0, as_coords=True
    )
    assert tuple(t32[2, 2]) == expected


def test_correspondence_ties_rows_before_columns_radius2():
    # radius2 = 2: (-1, -1) is the first offset in row-major order after the cell itself.
    f0, f1 = _tie_frames([(1, 1), (-1, 1), (-1, -1), (0, -1)])
    assert tuple(correspondence(f0, f1, radius2=2.0, as_coords=True)[2, 2]) == (1, 1)


# ---------------------------------------------------------------- votes (eq. 5) and its tie rules


def static_features(b, h, w, c=8, seed=5):
    rng = np.random.default_rng(seed)
    f = unit_field(rng, h, w, c)
    return np.repeat(f[None], b, axis=0)


def test_flipped_label_is_voted_back():
    b, h, w = 5, 6, 7
    feats = static_features(b, h, w)
    labs = np.full((b, h, w), 7)
    labs[:, :, :3] = 2
    flipped = labs.copy()
    flipped[2, 3, 5] = 2  # one frame of a stable region
    flipped[0, 1, 1] = 7
    out = refine(flipped, feats)
    np.testing.assert_array_equal(out, labs)
    assert count_label_changes(flipped) == 3 and count_label_changes(out) == 0


def test_vote_tie_keeps_own_label():
    feats = static_features(2, 3, 3)
    labs = np.stack([np.full((3, 3), 3), np.full((3, 3), 1)])
    out = refine(labs, feats)
    np.testing.assert_array_equal(out, labs)  # 3 vs 1 tied in frame 0: own label 3 (not the smaller 1)


def test_vote_tie_without_own_label_takes_smallest():
    feats = static_features(5, 2, 2)
    seq = [5, 3, 3, 1, 1]  # frame 0 sees 3 x2, 1 x2, 5 x1 -> smallest of {3, 1}
    labs = np.stack([np.full((2, 2), v) for v in seq])
    out = refine(labs, feats)
    assert (out[0] == 1).all()
    assert (out[1] == 3).all()  # frame 1 sees 3 x2, 1 x2 and owns 3
    assert (out[2] == 1).all()  # frame 2 sees 3, 1, 1
    np.testing.assert_array_equal(out[3:], labs[3:])


def test_negative_and_sparse_label_ids():
    feats = static_features(4, 2, 2)
    labs = np.stack([np.full((2, 2), v) for v in [-4, 1000, -4, -4]])
    np.testing.assert_array_equal(refine(labs, feats), np.full((4, 2, 2), -4))


# ---------------------------------------------------------------- brute-force reference


def brute_force_refine(labels: np.ndarray, feats: np.ndarray, radius2: float) -> np.ndarray:
    """Eqs. 3-5 with explicit loops, written independently of the library."""
    b, h, w, _ = feats.shape
    nrm = np.linalg.norm(feats, axis=-1)
    traj = {}
    for j in range(b - 1):
        for y, x in itertools.product(range(h), range(w)):
            cands = []
            for qy, qx in itertools.product(range(h), range(w)):
                d2 = (qy - y) ** 2 + (qx - x) ** 2
                if d2 > radius2:
                    continue
                cos = float(feats[j, y, x] @ feats[j + 1, qy, qx]) / (nrm[j, y, x] * nrm[j + 1, qy, qx])
                own = (qy, qx) != (y, x)  # False (0) for the cell itself: it sorts first
                cands.append((-cos, own, qy - y, qx - x, (qy, qx)))
            traj[j, y, x] = min(cands)[-1]

    def track(p, j, k):
        while j < k:
            p = traj[j, p[0], p[1]]
            j += 1
        return p

    out = np.empty_like(labels)
    for j in range(b):
        for y, x in itertools.product(range(h), range(w)):
            votes = Counter(int(labels[k][track((y, x), j, k)]) for k in range(j, b))
            top = max(votes.values())
            winners = [lab for lab, n in votes.items() if n == top]
            own = int(labels[j, y, x])
            out[j, y, x] = own if own in winners else min(winners)
    return out


@pytest.mark.parametrize("radius2", [0, 1, 2, 4])
def test_matches_brute_force(radius2):
    rng = np.random.default_rng(10 + radius2)
    b, h, w = 5, 5, 4
    feats = rng.standard_normal((b, h, w, 6))
    # smooth-ish features so that trajectories actually move, and few labels so votes tie often
    feats[1:] += 0.8 * feats[:-1]
    labels = rng.integers(0, 4, (b, h, w))
    ref = brute_force_refine(labels, feats, radius2)
    np.testing.assert_array_equal(refine(labels, feats, radius2=radius2), ref)
    np.testing.assert_array_equal(refine(torch.from_numpy(labels), torch.from_numpy(feats), radius2), ref)
    if radius2 > 0:
        assert not np.array_equal(ref, labels)  # the reference does something on this data


# ---------------------------------------------------------------- flicker, shapes, edge cases


def test_refinement_reduces_flicker_on_static_cells():
    rng = np.random.default_rng(6)
    b, h, w = 14, 12, 16
    feats = static_features(b, h, w, c=32) + 0.05 * rng.standard_normal((b, h, w, 32))
    truth = (np.arange(w)[None, :] // 4 + 2 * (np.arange(h)[:, None] // 6)) % 5
    labs = np.repeat(truth[None], b, 0)
    flip = rng.random(labs.shape) < 0.15
    noisy = np.where(flip, rng.integers(0, 5, labs.shape), labs)
    static = np.ones((h, w), bool)
    before = count_label_changes(noisy, static)
    out = refine(noisy, feats)
    after = count_label_changes(out, static)
    assert before > 50
    assert after < before / 2
    assert (out == labs).mean() > (noisy == labs).mean()


def test_single_frame_and_dtypes():
    rng = np.random.default_rng(7)
    labs = rng.integers(0, 3, (1, 4, 5)).astype(np.int32)
    out = refine(labs, rng.standard_normal((1, 4, 5, 3)))
    assert out.dtype == np.int64 and out.shape == (1, 4, 5)
    np.testing.assert_array_equal(out, labs)
    assert count_label_changes(out) == 0
    f16 = torch.from_numpy(rng.standard_normal((3, 4, 5, 3))).half()
    assert refine(rng.integers(0, 3, (3, 4, 5)), f16).dtype == np.int64


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        refine(np.zeros((2, 3, 3), int), np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError):
        refine(np.zeros((2, 3, 3)), np.zeros((2, 3, 3, 5)))
    with pytest.raises(ValueError):
        refine(np.zeros((2, 3, 3), int), np.zeros((2, 3, 3, 5)), radius2=-1)


def test_count_label_changes():
    labs = np.zeros((3, 2, 2), int)
    labs[1, 0, 0] = 1  # changes 0->1 and back 1->0
    labs[2, 1, 1] = 4
    assert count_label_changes(labs) == 3
    mask = np.zeros((2, 2), bool)
    mask[1, 1] = True
    assert count_label_changes(labs, mask) == 1
