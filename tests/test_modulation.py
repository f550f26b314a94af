"""Stage 3, masked modulation (SPEC section 7): formulas on hand-built maps, plumbing on planted maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vidseg_nb.config import SegConfig
from vidseg_nb.features import reference_run
from vidseg_nb.modulation import (
    argmax_labels,
    difference_map,
    filter_maps,
    final_labels,
    gaussian_blur,
    modulate,
    plan_runs,
    upsample_masks,
)
from vidseg_nb.synthetic import make_clip
from vidseg_nb.video import resize_labels


def _planted(n: int, g: int, n_labels: int) -> np.ndarray:
    """(n, g, g) maps with ``n_labels`` vertical stripes (label ids 3, 4, ...)."""
    stripe = np.minimum(np.arange(g) * n_labels // g, n_labels - 1) + 3
    return np.broadcast_to(stripe[None, None, :], (n, g, g)).astype(np.int64).copy()


# ------------------------------------------------------------------------------ formulas, hand-built
def test_filter_formula_on_hand_built_maps():
    coarse = np.array([[1, 1], [2, 2]])
    raw = np.stack([np.full((4, 4), 0.5), np.full((4, 4), 1.0)]).astype(np.float32)
    labels = np.array([1, 2])
    out = filter_maps(raw, labels, coarse, s=0.25)
    m1 = upsample_masks((coarse == 1)[None], (4, 4))[0].numpy()
    np.testing.assert_allclose(out[0], 0.5 * m1 + 0.25 * 0.5 * (1 - m1), rtol=1e-6)
    # top rows lie fully inside label 1 (bilinear mask 1), bottom rows fully inside label 2
    assert out[0][0, 0] == pytest.approx(0.5) and out[0][3, 0] == pytest.approx(0.125)
    assert out[1][0, 0] == pytest.approx(0.25) and out[1][3, 0] == pytest.approx(1.0)
    np.testing.assert_allclose(filter_maps(raw, labels, coarse, s=1.0), raw)  # s = 1: no filtering


def test_argmax_maps_back_to_label_ids():
    filt = np.zeros((3, 2, 2), np.float32)
    filt[0, 0, 0] = filt[1, 0, 1] = filt[2, 1, :] = 1.0
    y = argmax_labels(filt, np.array([7, 2, 11]))
    np.testing.assert_array_equal(y, [[7, 2], [11, 11]])
    assert y.dtype == np.int64


def test_difference_map_is_blurred_squared_rgb_difference_normalised():
    plus = torch.zeros(1, 3, 9, 9)
    minus = torch.zeros(1, 3, 9, 9)
    plus[0, :, 4, 4] = 0.5  # one pixel differs by 0.5 in R, G, B: sum of squares 0.75
    d = difference_map(plus, minus, 5, 3.0)[0]
    assert d.max() == pytest.approx(1.0) and d.argmax().item() == 4 * 9 + 4
    k = torch.exp(-((torch.arange(5) - 2.0) ** 2) / 18)
    k = k / k.sum()
    # normalised blur of a delta is the outer product of the kernel divided by its centre value
    np.testing.assert_allclose(d[2:7, 2:7].numpy(), (torch.outer(k, k) / k[2] ** 2).numpy(), rtol=1e-5)
    assert d[0, 0] == 0  # outside the 5x5 support
    # float, not uint8: a difference of 255 levels is not wrapped around
    big = difference_map(torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), 1, 1.0)
    assert torch.all(big == 1)


def test_gaussian_blur_preserves_constants_and_mass_centre():
    x = torch.full((1, 8, 8), 3.0)
    torch.testing.assert_close(gaussian_blur(x, 5, 3.0), x)


def test_plan_runs_pairs_signs_and_skips_single_label_frames():
    coarse = np.array([[[1, 2], [2, 2]], [[5, 5], [5, 5]], [[0, 9], [4, 4]]])
    runs = plan_runs(coarse)
    assert runs == [(0, 1, 1), (0, 1, -1), (0, 2, 1), (0, 2, -1),
                    (2, 0, 1), (2, 0, -1), (2, 4, 1), (2, 4, -1), (2, 9, 1), (2, 9, -1)]  # fmt: skip


def test_single_label_frame_is_constant():
    from vidseg_nb.modulation import FrameDiff

    fd = FrameDiff(labels=np.array([4]), raw=np.ones((1, 8, 8), np.float32))
    _, y = final_labels(fd, np.full((2, 2), 4), 0.7)
    assert np.all(y == 4) and y.shape == (8, 8)


# ------------------------------------------------------------------------------ runs on the tiny model
@pytest.fixture(scope="module")
def ref2(tiny):
    frames = make_clip(n_frames=2, height=128, width=128, seed=1).frames
    cfg = SegConfig(t_m=22)
    return frames, cfg, reference_run(tiny, frames, cfg, record_qk=True, progress=False)


def test_lambda_zero_gives_zero_difference_maps(tiny, ref2):
    frames, cfg, ref = ref2
    out = modulate(tiny, ref, _planted(2, 8, 3), cfg.replace(lam=0.0), progress=False)
    for fd in out.frames:
        assert fd.raw.shape == (3, 128, 128)
        assert np.abs(fd.raw).max() == 0
    nonzero = modulate(tiny, ref, _planted(2, 8, 3), cfg, progress=False)
    assert all(fd.raw.max() == pytest.approx(1.0) for fd in nonzero.frames)


def test_blending_keeps_reference_latent_outside_mask(tiny, ref2):
    frames, cfg, ref = ref2
    coarse = _planted(2, 8, 2)
    out = modulate(tiny, ref, coarse, cfg, return_latents=True, progress=False)
    final_ref = ref.latents[cfg.n_steps - 1]
    assert out.final_latents is not None and out.final_latents.shape[:2] == (len(out.runs), 1) == (8, 1)
    for (f, lab, _), x in zip(out.runs, out.final_latents[:, 0]):  # groups of one frame: group = frame
        m = upsample_masks((coarse[f] == lab)[None], x.shape[-2:], mode="nearest")[0].bool()
        assert torch.equal(x[:, ~m], final_ref[f][:, ~m])  # exactly the reference outside M_l
        assert not torch.allclose(x[:, m], final_ref[f][:, m])  # modulated inside
    # without blending the modulation leaks outside the mask
    loose = modulate(
        tiny, ref, coarse, cfg.replace(masked_modulation=False), return_latents=True, progress=False
    )
    f, lab, _ = loose.runs[0]
    m = upsample_masks((coarse[f] == lab)[None], final_ref.shape[-2:], mode="nearest")[0].bool()
    assert not torch.equal(loose.final_latents[0, 0][:, ~m], final_ref[f][:, ~m])


@pytest.mark.parametrize("n_labels", [2, 3])
@pytest.mark.parametrize("chunk", [64, 4])
def test_work_counters_and_batched_calls(tiny, ref2, n_labels, chunk):
    frames, cfg, _ = ref2
    n, t_m = 2, 22
    steps = cfg.n_steps - t_m
    c0 = tiny.counters.snapshot()
    ref = reference_run(tiny, frames, cfg, record_qk=True, progress=False, chunk=n)
    modulate(tiny, ref, _planted(n, 8, n_labels), cfg, chunk=chunk, progress=False)
    w = tiny.counters.since(c0)
    assert w["unet_samples"] == steps * 2 * (1 + 2 * n_labels) * n
    assert w["vae_decodes"] == 2 * n_labels * n and w["vae_encodes"] == n
    runs = 2 * n_labels * n
    assert w["unet_calls"] == steps * (1 + math.ceil(runs / chunk))
    if chunk >= runs:  # one UNet call per step for all masks: independent of L
        assert w["unet_calls"] == 2 * steps


def test_stage3_plumbing_on_planted_maps(tiny):
    """Planted coarse maps straight into stage 3 with s = 0: every pixel whose surrounding 3x3 feature
    cells carry one label gets that label, whatever the (random) model's quality."""
    clip = make_clip(n_frames=2, height=128, width=128, n_objects=2, seed=4)
    g = 8
    coarse = resize_labels(clip.labels, (g, g))
    cfg = SegConfig(t_m=22, s=0.0)
    ref = reference_run(tiny, clip.frames, cfg, record_qk=True, progress=False)
    out = modulate(tiny, ref, coarse, cfg, progress=False)
    checked = 0
    for f in range(2):
        _, y = final_labels(out.frames[f], coarse[f], cfg.s)
        pad = np.pad(coarse[f], 1, mode="edge")
        win = np.lib.stride_tricks.sliding_window_view(pad, (3, 3))  # (g, g, 3, 3)
        uniform = (win == coarse[f][:, :, None, None]).all((2, 3))
        cell_of = np.arange(128) * g // 128
        sure = uniform[cell_of[:, None], cell_of[None, :]]
        np.testing.assert_array_equal(y[sure], coarse[f][cell_of[:, None], cell_of[None, :]][sure])
        checked += sure.sum()
    assert checked > 0.3 * 2 * 128 * 128


def _blur_reference(x: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """An independent 2D Gaussian blur: full (size x size) kernel, numpy reflect padding, float64."""
    t = np.arange(size) - (size - 1) / 2
    k1 = np.exp(-(t**2) / (2 * sigma**2))
    k = np.outer(k1, k1) / np.outer(k1, k1).sum()
    p = size // 2
    pad = np.pad(x.astype(np.float64), ((0, 0), (p, p), (p, p)), mode="reflect")
    win = np.lib.stride_tricks.sliding_window_view(pad, (size, size), axis=(1, 2))
    return (win * k).sum((-2, -1))


@pytest.mark.parametrize("size,sigma", [(5, 3.0), (3, 1.0), (7, 2.0)])
def test_gaussian_blur_matches_a_reference_blur_on_random_input(size, sigma):
    x = torch.rand(2, 13, 17, generator=torch.Generator().manual_seed(size))
    got = gaussian_blur(x, size, sigma).numpy()
    np.testing.assert_allclose(got, _blur_reference(x.numpy(), size, sigma), rtol=1e-5, atol=1e-6)


def test_lambda_zero_runs_equal_the_reference_run(tiny, ref2):
    """lambda = 0: the modulated runs (own q/k injected, blended with the reference) are the reference run;
    tolerance 1e-5 because the UNet batch differs (runs of several frames share a call)."""
    frames, cfg, ref = ref2
    out = modulate(tiny, ref, _planted(2, 8, 2), cfg.replace(lam=0.0), return_latents=True, progress=False)
    final_ref = ref.latents[cfg.n_steps - 1]
    for (f, _, _), x in zip(out.runs, out.final_latents[:, 0]):
        torch.testing.assert_close(x, final_ref[f], rtol=1e-5, atol=1e-5)


def test_chunk_size_does_not_change_the_difference_maps(tiny, ref2):
    """D_l with 2 runs per UNet call equals D_l with 8 within 1e-4 (the batch only reorders float sums);
    the labels are equal."""
    frames, cfg, ref = ref2
    coarse = _planted(2, 8, 2)
    a = modulate(tiny, ref, coarse, cfg, chunk=2, progress=False)
    b = modulate(tiny, ref, coarse, cfg, chunk=8, progress=False)
    for f, (da, db) in enumerate(zip(a.frames, b.frames)):
        np.testing.assert_allclose(da.raw, db.raw, atol=1e-4)
        np.testing.assert_array_equal(
            final_labels(da, coarse[f], cfg.s)[1], final_labels(db, coarse[f], cfg.s)[1]
        )


def test_kept_difference_maps_are_float32_from_the_decoded_images(tiny, ref2):
    """SPEC 7: D_l = blur(sum_RGB (I+ - I-)^2) / max, computed in float32 from the decoded I+/I- (here
    decoded again from the runs' final latents), stored float32; float16 only with ``diff_fp16``."""
    frames, cfg, ref = ref2
    coarse = _planted(2, 8, 2)
    out = modulate(tiny, ref, coarse, cfg, return_latents=True, progress=False)
    img = tiny.decode(out.final_latents).numpy().astype(np.float32)
    for j in range(0, len(out.runs), 2):
        f, lab, sign = out.runs[j]
        assert sign == 1 and out.runs[j + 1] == (f, lab, -1)
        d = ((img[j] - img[j + 1]) ** 2).sum(0)[None]
        d = _blur_reference(d, cfg.blur_kernel, cfg.blur_sigma)[0]
        d = d / d.max()
        fd = out.frames[f]
        assert fd.raw.dtype == np.float32
        # the reference blurs in float64: 5e-5 covers the float32 rounding of D_l in [0, 1]
        np.testing.assert_allclose(fd.raw[list(fd.labels).index(lab)], d, atol=5e-5)
    half = modulate(tiny, ref, coarse, cfg.replace(diff_fp16=True), progress=False)
    assert all(fd.raw.dtype == np.float16 for fd in half.frames)
    np.testing.assert_allclose(half.frames[0].raw, out.frames[0].raw, atol=1e-3)
