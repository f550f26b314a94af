"""pca_view and xt_slice on hand-built arrays where the answer is known (paper Figures 2 and 15)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidseg_nb.features import pca_view, xt_slice


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
