"""pca_view and xt_slice on hand-built arrays where the answer is known (paper Figures 2 and 15); the one
nearest-neighbour label resize shared by the pipeline, the metrics and the pictures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidseg_nb import metrics, viz
from vidseg_nb.features import pca_view, xt_slice
from vidseg_nb.palette import colorize
from vidseg_nb.video import resize_labels


def test_pca_view_first_component_is_the_dominant_direction():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (3, 4, 5))  # (T, h, w): strong variation along e0
    b = rng.uniform(-1, 1, (3, 4, 5))  # weaker variation along e1, made uncorrelated with a
    ac, bc = a - a.mean(), b - b.mean()
    b = bc - (ac * bc).sum() / (ac * ac).sum() * ac
    f = np.zeros((3, 4, 5, 6), np.float32)
    f[..., 0] = 10 * a
    f[..., 1] = 2 * b
    f[..., 2] = 7.0  # a constant offset: removed by centring
    view = pca_view(f)
    assert view.shape == (3, 4, 5, 3) and view.min() >= 0 and view.max() <= 1
    # joint min-max scaling over all frames; the sign makes the largest loading positive
    np.testing.assert_allclose(view[..., 0], (a - a.min()) / (a.max() - a.min()), atol=1e-5)
    np.testing.assert_allclose(view[..., 1], (b - b.min()) / (b.max() - b.min()), atol=1e-5)
    np.testing.assert_allclose(view[..., 2], 0, atol=1e-5)  # no third direction of variance


def test_pca_view_is_joint_over_frames():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(4, 3, 3, 8)).astype(np.float32)
    f[3, 1, 1] = f[0, 2, 2]  # the same vector in two frames
    view = pca_view(torch.from_numpy(f))
    np.testing.assert_allclose(view[3, 1, 1], view[0, 2, 2], atol=1e-6)
    # one frame alone gets its own PCA: colours differ from the joint view
    alone = pca_view(f[:1])
    assert not np.allclose(alone[0], view[0], atol=1e-3)


def test_pca_view_fewer_channels_than_components():
    f = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)
    view = pca_view(f)
    np.testing.assert_allclose(view[..., 0].ravel(), np.linspace(0, 1, 12), atol=1e-6)
    assert np.all(view[..., 1:] == 0)


def test_xt_slice_stacks_one_row_over_time():
    vol = np.arange(4 * 3 * 5 * 2).reshape(4, 3, 5, 2)
    s = xt_slice(vol, 1)
    assert s.shape == (4, 5, 2)
    for t in range(4):
        np.testing.assert_array_equal(s[t], vol[t, 1])
    labels = np.arange(4 * 3 * 5).reshape(4, 3, 5)
    np.testing.assert_array_equal(xt_slice(torch.from_numpy(labels), -1), labels[:, 2])
    with pytest.raises(ValueError, match="row 3"):
        xt_slice(vol, 3)
    with pytest.raises(ValueError, match="volume"):
        xt_slice(np.zeros((3, 4)), 0)


@pytest.mark.parametrize("src, size", [((7, 9), (16, 20)), ((13, 29), (7, 11)), ((8, 8), (130, 140))])
def test_one_nearest_label_resize_everywhere(src, size):
    """video.resize_labels, metrics.resize_nearest, viz.upscale and viz.label_image sample the same pixel
    centres, floor((i + 0.5) * n_in / n_out), on non-integer scales."""
    rng = np.random.default_rng(2)
    lab = rng.integers(0, 20, src)
    rows = [int((i + 0.5) * src[0] / size[0]) for i in range(size[0])]
    cols = [int((j + 0.5) * src[1] / size[1]) for j in range(size[1])]
    want = lab[np.ix_(rows, cols)]
    np.testing.assert_array_equal(resize_labels(lab, size), want)
    np.testing.assert_array_equal(resize_labels(torch.from_numpy(lab), size).numpy(), want)
    got = metrics.resize_nearest(lab.astype(np.uint8), size)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(viz.upscale(lab, size), want)
    mask = (lab == lab[0, 0]).astype(np.float32)  # a float mask keeps its dtype
    assert viz.upscale(mask, size).dtype == np.float32
    np.testing.assert_array_equal(viz.upscale(mask, size), mask[np.ix_(rows, cols)])
    rgb = colorize(lab)
    np.testing.assert_array_equal(viz.upscale(rgb, size), rgb[np.ix_(rows, cols)])  # (h, w, 3) images
    np.testing.assert_array_equal(viz.label_image(lab, size), colorize(want))
