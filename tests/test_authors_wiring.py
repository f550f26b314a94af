"""Issue 15 wiring: each row's SegConfig switch changes exactly what it should, on the tiny model.

One test per row of the issue's table (the pure functions themselves are tested in test_authors.py):
with the switch off the pipeline computes the paper's equations (SPEC), with it on the authors' arithmetic
of :mod:`vidseg_nb.authors`; plus the ``authors`` preset end to end and ``vidseg evaluate --protocol``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_evaluate import write_camvid

from vidseg_nb import authors as A
from vidseg_nb import cli
from vidseg_nb.config import PRESETS, ConfigError, SegConfig, preset
from vidseg_nb.context import SceneContextModel
from vidseg_nb.evaluation import evaluate_clip, score_result
from vidseg_nb.features import frame_noise, reference_run
from vidseg_nb.modulation import (
    FrameDiff,
    difference_map,
    filter_maps,
    final_labels,
    modulate,
    plan_runs,
    upsample_masks,
)
from vidseg_nb.pipeline import VideoSegmenter
from vidseg_nb.refine import refine
from vidseg_nb.synthetic import make_clip
from vidseg_nb.video import resize_frames, resize_labels

# 64 x 64 frames: latents 8 x 8, feature grid 4 x 4; 3 sampler steps (t_m = 22 of 25)
FAST = dict(n_clusters=3, kmeans_n_init=2, max_side=64, batch_size=3)
ROW_FIELDS = {
    1: "vae_sample",
    2: "blend_two_steps",
    3: "uint8_diff",
    4: "lanczos_filter",
    5: "knn_first_frame",
    6: "gt_merge",
    7: "shifted_last_batch",
    8: "authors_cbr",
    9: "batch_noise",
}


@pytest.fixture(scope="module")
def clip():
    return make_clip(n_frames=5, height=64, width=64, n_objects=2, seed=3, speed=3.0)


def cfg(**over) -> SegConfig:
    return SegConfig(**{**FAST, **over})


def _posterior(tiny, frames):
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        dist = tiny.vae.encode(x).latent_dist
    return dist.mean.float(), dist.logvar.float()


# ---------------------------------------------------------------------------------------------- presets
def test_authors_preset_sets_every_row_and_vidseg_none():
    a, v = preset("authors"), preset("vidseg")
    for row, name in ROW_FIELDS.items():
        assert getattr(a, name) is True, (row, name)
        assert getattr(v, name) is False and getattr(SegConfig(), name) is False, (row, name)
    assert a.seed == 1 and not a.aggregate and a.preset == "authors" and "authors" in PRESETS
    assert a.resize_decoded and not v.resize_decoded and not SegConfig().resize_decoded  # row 3's resize
    assert A.authors_last_blend_step(a) == a.t_m + 1 and A.authors_last_blend_step(v) == v.n_steps - 1
    assert A.authors_last_blend_step(a, joint_frames=True) == a.n_steps - 1  # their SVD: every step
    with pytest.raises(ConfigError, match="t_f"):
        preset("authors", t_f=24)


# ---------------------------------------------------------------------------------------------- rows 1, 9
def test_row1_posterior_sample(tiny, clip):
    frames = clip.frames[:2]
    mean, logvar = _posterior(tiny, frames)
    ref = reference_run(tiny, frames, cfg(seed=4), progress=False)
    torch.testing.assert_close(ref.z0, mean * tiny.scaling_factor, rtol=0, atol=1e-6)  # paper: the mean
    on = reference_run(tiny, frames, cfg(seed=4, vae_sample=True), progress=False)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(4))
    by_hand = tiny.scaling_factor * (mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * eps)
    torch.testing.assert_close(on.z0, by_hand, rtol=0, atol=1e-6)
    assert (on.z0 - ref.z0).abs().max() > 1e-3
    # only z0 changed: the noise is still each frame's own
    sigma = tiny.sigmas[22].item()
    torch.testing.assert_close(on.x_start - on.z0, ref.x_start - ref.z0, rtol=0, atol=1e-5)
    torch.testing.assert_close((ref.x_start - ref.z0)[1] / sigma, frame_noise(tuple(mean.shape[1:]), 4, 1),
                               rtol=0, atol=1e-4)  # fmt: skip


def test_row9_same_noise_for_every_batch(tiny, clip):
    sigma = tiny.sigmas[22].item()

    def eps(config, a, b):
        r = reference_run(tiny, clip.frames[a:b], config, frame_offset=a, progress=False)
        return (r.x_start - r.z0) / sigma, r

    e0, r0 = eps(cfg(batch_noise=True), 0, 2)
    e1, _ = eps(cfg(batch_noise=True), 2, 4)
    torch.testing.assert_close(e0, e1, rtol=0, atol=1e-4)  # the same noise in both batches
    draw = torch.randn(tuple(r0.z0.shape), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(e0, draw, rtol=0, atol=1e-4)
    d0, _ = eps(cfg(), 0, 2)
    d1, _ = eps(cfg(), 2, 4)
    assert (d0 - d1).abs().max() > 0.1  # paper: per-frame noise, different for every frame
    torch.testing.assert_close(d1[0], frame_noise(tuple(r0.z0.shape[1:]), 0, 2), rtol=0, atol=1e-4)
    # rows 1 + 9: one generator per batch, the posterior draw first, then the noise
    both, rb = eps(cfg(batch_noise=True, vae_sample=True), 0, 2)
    g = torch.Generator().manual_seed(0)
    torch.randn(tuple(rb.z0.shape), generator=g)
    torch.testing.assert_close(both, torch.randn(tuple(rb.z0.shape), generator=g), rtol=0, atol=1e-4)
    # features now depend on the place in the batch: B enters the feature cache key
    seg = VideoSegmenter(tiny, cfg())
    assert seg.feature_key(cfg(batch_noise=True)) != seg.feature_key(cfg(batch_noise=True, batch_size=2))
    assert seg.feature_key(cfg()) == seg.feature_key(cfg(batch_size=2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: their add_noise draw is on the GPU")
def test_row9_noise_on_cuda_as_their_global_generators(clip):
    from vidseg_nb.loading import load_backbone

    gpu = load_backbone("tiny", device="cuda")
    frames = clip.frames[:3]
    config = cfg(seed=1, vae_sample=True, batch_noise=True)
    z0, eps = A.start_latents(gpu, frames, config)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().cuda() / 127.5 - 1.0
    with torch.no_grad(), torch.random.fork_rng(devices=[0]):
        dist = gpu.vae.encode(x.to(gpu.vae_dtype)).latent_dist
        torch.manual_seed(1)  # their seed_everything at the batch
        torch.cuda.manual_seed(1)
        std = torch.exp(0.5 * dist.logvar.float().clamp(-30, 20))
        post = dist.mean.float() + std * torch.randn(dist.mean.shape).to("cuda")  # CPU draw, moved
        noise = torch.randn_like(post)  # add_noise: the CUDA generator's first draw
    assert eps.device.type == "cuda"
    torch.testing.assert_close(eps, noise, rtol=0, atol=0)
    torch.testing.assert_close(z0, gpu.scaling_factor * post, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------------- rows 2, 3
@pytest.fixture(scope="module")
def mod_setup(tiny, clip):
    """A 1-frame reference run with q/k and a hand-made 2-label coarse map (left / right halves)."""
    coarse = np.zeros((1, 4, 4), np.int64)
    coarse[0, :, 2:] = 1
    ref = reference_run(tiny, clip.frames[:1], cfg(), record_qk=True, progress=False)
    return ref, coarse


def _run(tiny, mod_setup, **over):
    ref, coarse = mod_setup
    return modulate(tiny, ref, coarse, cfg(**over), return_latents=True, progress=False)


def test_row2_blending_ends_at_tm_plus_1(tiny, mod_setup):
    ref, coarse = mod_setup
    last = ref.latents[24]  # the reference latent after the last step
    for over, equal in (({}, True), ({"blend_two_steps": True}, False)):
        out = _run(tiny, mod_setup, **over)
        for (_, lab, _), x in zip(out.runs, out.final_latents):
            m = upsample_masks((coarse == lab).astype(np.float32), (8, 8), mode="nearest")[0] > 0
            outside = ~m.expand_as(x[0])
            diff = (x[0] - last[0])[outside].abs().max().item()
            assert (diff == 0.0) == equal, (over, lab, diff)


def test_row3_hand_made_pair_wraps_and_truncates():
    # I+ = 200.6 / 255, I- = 184.2 / 255 in every channel: truncation gives 200 - 184 = 16 and 16^2 wraps to
    # 0 in uint8 (rounding would give 201 - 184 = 17); I+ = 230.9, I- = 213.1: 230 - 213 = 17, 17^2 = 289
    # -> 33 per channel, sqrt(3 * 33) = 9.95, 8-bit 9, a constant grey JPEG is exact, 9 / (9 + 1e-5)
    plus = torch.full((2, 3, 16, 16), 0.0)
    minus = torch.full((2, 3, 16, 16), 0.0)
    plus[0], minus[0] = 200.6 / 255, 184.2 / 255
    plus[1], minus[1] = 230.9 / 255, 213.1 / 255
    d = A.authors_diff_maps(plus, minus).numpy()
    assert d.dtype == np.float64 and d.shape == (2, 16, 16)
    assert np.all(d[0] == 0.0)
    np.testing.assert_array_equal(d[1], np.full((16, 16), 9 / (9 + 1e-5)))
    u8 = A.authors_unit_to_uint8(plus)
    assert u8.shape == (2, 16, 16, 3) and u8[0, 0, 0, 0] == 200 and u8[1, 0, 0, 0] == 230
    np.testing.assert_array_equal(u8, A.authors_to_uint8(plus * 2 - 1))


def _capture_decodes(monkeypatch, backbone) -> list[torch.Tensor]:
    """Every image batch ``backbone.decode`` returns from now on (I+/I- of stage 3, in run order)."""
    seen: list[torch.Tensor] = []
    decode = backbone.decode

    def rec(z, *args, **kw):
        img = decode(z, *args, **kw)
        seen.append(img.detach().cpu().clone())
        return img

    monkeypatch.setattr(backbone, "decode", rec)
    return seen


def test_row3_modulation_d_l_is_the_authors_map(tiny, mod_setup, monkeypatch):
    seen = _capture_decodes(monkeypatch, tiny)
    out = _run(tiny, mod_setup, uint8_diff=True)
    img = torch.cat(seen)  # the decoded I+/I- of the runs, as the run saw them (a re-decode in another
    seen.clear()  # batch shape can round a last bit apart, which the uint8 truncation can expose)
    base = _run(tiny, mod_setup)
    torch.testing.assert_close(torch.cat(seen), img, rtol=0, atol=0)  # the same runs
    fd = out.frames[0]
    assert fd.raw.dtype == np.float64 and base.frames[0].raw.dtype == np.float32
    for li, lab in enumerate(fd.labels):
        j = out.runs.index((0, int(lab), 1))
        expect = A.authors_difference_map(A.authors_unit_to_uint8(img[j : j + 1])[0],
                                          A.authors_unit_to_uint8(img[j + 1 : j + 2])[0])  # fmt: skip
        np.testing.assert_array_equal(fd.raw[li], expect)
    # the runs themselves are unchanged (row 3 only changes D_l)
    torch.testing.assert_close(out.final_latents, base.final_latents, rtol=0, atol=0)
    assert not np.allclose(fd.raw, base.frames[0].raw)


# ------------------------------------------------------------------------------ row 3: resize to the input size
ODD = (70, 100)  # input frame size (H0, W0), not multiples of 64; processed at 64 x 64 (max_side 64)
RESIZE = dict(uint8_diff=True, resize_decoded=True)


@pytest.fixture(scope="module")
def odd_clip():
    return make_clip(n_frames=3, height=ODD[0], width=ODD[1], n_objects=2, seed=3, speed=3.0)


def _expected_from_decodes(res, imgs: torch.Tensor, size: tuple[int, int] | None, s: float = 0.7):
    """D_l and Y of a one-batch result recomputed from its decoded I+/I- (N runs, in run order): uint8
    truncation, with ``size`` their cv2 resize (BGR) to it, their D_l, the LANCZOS filter, the argmax."""
    cv2 = pytest.importorskip("cv2")
    runs = plan_runs(res.coarse_after)
    assert len(imgs) == len(runs)
    raws, labels = {}, []
    for f in range(len(res)):
        labs = np.unique(res.coarse_after[f])
        raw = []
        for lab in labs:
            j = runs.index((f, int(lab), 1))
            pair = A.authors_unit_to_uint8(imgs[j : j + 2])
            if size is not None:
                pair = [cv2.cvtColor(cv2.resize(cv2.cvtColor(u, cv2.COLOR_RGB2BGR), size[::-1]),
                                     cv2.COLOR_BGR2RGB) for u in pair]  # fmt: skip
            raw.append(A.authors_difference_map(pair[0], pair[1]))
        raws[f] = np.stack(raw)
        filt = np.stack(
            [A.authors_filter_map(raws[f][i], res.coarse_after[f] == lab, s) for i, lab in enumerate(labs)]
        )
        labels.append(A.authors_argmax_labels(filt, labs))
    return raws, np.stack(labels)


def test_row3_resize_decoded_d_l_and_labels_at_the_input_size(tiny, odd_clip, monkeypatch):
    pytest.importorskip("cv2", reason="the authors extra (opencv-python-headless) is not installed")
    seen = _capture_decodes(monkeypatch, tiny)
    config = cfg(**RESIZE, lanczos_filter=True)
    res = VideoSegmenter(tiny, config, cache_frames=0).segment(
        odd_clip.frames, config, keep="all", progress=False
    )
    imgs = torch.cat(seen)
    assert res.size == (64, 64) and res.original_size == ODD and res.labels.shape == (3, *ODD)
    assert any(len(np.unique(m)) > 1 for m in res.coarse_after)  # some frame is modulated
    raws, labels = _expected_from_decodes(res, imgs, ODD)
    for f, d in res.details.items():
        assert d.diff.raw.shape[1:] == ODD and d.final.shape == ODD and d.filtered.shape[1:] == ODD
        np.testing.assert_array_equal(d.diff.raw, raws[f])
        assert d.diff.plus.shape[1:3] == (64, 64)  # kept I+/I-: the decoded images at the processing size
    np.testing.assert_array_equal(res.labels, labels)
    # switch off: D_l at the processing size, Y nearest-resized to the input size, as before the switch
    seen.clear()
    off = cfg(uint8_diff=True, lanczos_filter=True)
    res0 = VideoSegmenter(tiny, off, cache_frames=0).segment(odd_clip.frames, off, keep="all", progress=False)
    torch.testing.assert_close(torch.cat(seen), imgs, rtol=0, atol=0)  # the same modulated runs
    raws0, _ = _expected_from_decodes(res0, imgs, None)
    for f, d in res0.details.items():
        assert d.diff.raw.shape[1:] == (64, 64) and d.final.shape == (64, 64)
        np.testing.assert_array_equal(d.diff.raw, raws0[f])
    np.testing.assert_array_equal(
        res0.labels, resize_labels(np.stack([res0.details[f].final for f in range(3)]), ODD)
    )
    assert not np.array_equal(res0.labels, res.labels)


def test_row3_resize_decoded_is_the_identity_at_multiples_of_64(tiny):
    pytest.importorskip("cv2", reason="the authors extra (opencv-python-headless) is not installed")
    c = make_clip(n_frames=3, height=64, width=128, n_objects=2, seed=4, speed=3.0)
    out = {}
    for name, over in (("off", {"uint8_diff": True}), ("on", RESIZE)):
        config = cfg(max_side=128, lanczos_filter=True, **over)
        out[name] = VideoSegmenter(tiny, config, cache_frames=0).segment(
            c.frames, config, keep="all", progress=False
        )
    assert out["on"].size == out["on"].original_size == (64, 128)
    np.testing.assert_array_equal(out["on"].labels, out["off"].labels)
    for f in range(3):
        np.testing.assert_array_equal(out["on"].details[f].diff.raw, out["off"].details[f].diff.raw)


def test_row3_resize_decoded_through_the_stage_cache(tiny, odd_clip):
    pytest.importorskip("cv2", reason="the authors extra (opencv-python-headless) is not installed")
    config = cfg(**RESIZE, lanczos_filter=True)
    seg = VideoSegmenter(tiny, config)
    first = seg.segment(odd_clip.frames, config, keep="all", progress=False)
    # a new s only re-filters the cached D_l, at the input size
    again = seg.segment(odd_clip.frames, config.replace(s=0.4), keep="all", progress=False)
    assert "stage 3" not in again.computed and "filter" in again.computed and again.labels.shape == (3, *ODD)
    for f in range(3):
        d = first.details[f].diff
        if len(d.labels) > 1:
            filt = np.stack([A.authors_filter_map(d.raw[i], first.coarse_after[f] == lab, 0.4)
                             for i, lab in enumerate(d.labels)])  # fmt: skip
            np.testing.assert_array_equal(again.labels[f], A.authors_argmax_labels(filt, d.labels))
    # the same processed frames from a 64 x 64 input: features cached, D_l recomputed at 64 x 64
    small = resize_frames(odd_clip.frames, (64, 64))
    res = seg.segment(small, config, keep="all", progress=False)
    assert "features" not in res.computed and "stage 3" in res.computed
    assert res.labels.shape == (3, 64, 64) and res.details[0].diff.raw.shape[1:] == (64, 64)
    from vidseg_nb.cache import diff_key

    assert diff_key(config, ODD) != diff_key(config, (64, 64)) and diff_key(cfg(), ODD) == diff_key(cfg())


def test_row3_resize_decoded_without_opencv_is_a_clear_error(tiny, odd_clip, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError
    msg = re.escape('pip install "vidseg_nb[authors]"')
    config = preset("authors", **FAST)  # a config alone needs no OpenCV
    assert config.resize_decoded
    with pytest.raises(ConfigError, match=msg):
        VideoSegmenter(tiny, config)
    seg = VideoSegmenter(tiny, cfg(), cache_frames=0)
    before = tiny.counters.snapshot()
    with pytest.raises(ConfigError, match=msg):  # a run with it fails before any UNet work
        seg.segment(odd_clip.frames, cfg(**RESIZE), progress=False)
    with pytest.raises(ConfigError, match=msg):
        next(seg.stream(odd_clip.frames, cfg(**RESIZE), progress=False))
    assert not any(tiny.counters.since(before).values())
    res = seg.segment(odd_clip.frames, cfg(**RESIZE), mode="preview", progress=False)  # no D_l: no cv2
    assert res.labels.shape == (3, *ODD)


def test_row3_resize_alone_is_the_papers_d_l_of_their_8bit_images(tiny, odd_clip, monkeypatch):
    pytest.importorskip("cv2", reason="the authors extra (opencv-python-headless) is not installed")
    seen = _capture_decodes(monkeypatch, tiny)
    config = cfg(resize_decoded=True)  # without uint8_diff: the resize's effect alone
    res = VideoSegmenter(tiny, config, cache_frames=0).segment(
        odd_clip.frames, config, keep="all", progress=False
    )
    imgs, runs = torch.cat(seen), plan_runs(res.coarse_after)
    for f, d in res.details.items():
        assert d.diff.raw.dtype == np.float32 and d.diff.raw.shape[1:] == ODD
        for li, lab in enumerate(d.diff.labels if len(d.diff.labels) > 1 else []):
            j = runs.index((f, int(lab), 1))
            big = torch.from_numpy(A.authors_resize_decoded(A.authors_unit_to_uint8(imgs[j : j + 2]), ODD))
            big = big.permute(0, 3, 1, 2) / 255
            np.testing.assert_array_equal(d.diff.raw[li], difference_map(big[:1], big[1:])[0].numpy())
        _, y = final_labels(d.diff, res.coarse_after[f], config.s)
        np.testing.assert_array_equal(res.labels[f], y)


# ---------------------------------------------------------------------------------------------- row 4
def test_row4_lanczos_filter_masks():
    rng = np.random.default_rng(0)
    raw = rng.random((2, 32, 32))
    coarse = np.zeros((4, 4), np.int64)
    coarse[1:3, 1:3] = 5
    labels = np.array([0, 5])
    filt, y = final_labels(FrameDiff(labels, raw), coarse, 0.7, lanczos=True)
    by_hand = np.stack([A.authors_filter_map(raw[i], coarse == lab, 0.7) for i, lab in enumerate(labels)])
    np.testing.assert_array_equal(filt, by_hand)
    np.testing.assert_array_equal(y, A.authors_argmax_labels(by_hand, labels))
    bil = filter_maps(raw.astype(np.float32), labels, coarse, 0.7)
    filt0, _ = final_labels(FrameDiff(labels, raw.astype(np.float32)), coarse, 0.7)
    np.testing.assert_array_equal(filt0, bil)  # default: bilinear
    assert np.abs(filt - bil).max() > 1e-3


# ---------------------------------------------------------------------------------------------- rows 5-8
@pytest.fixture(scope="module")
def preview(tiny, clip):
    """Preview-mode runs (stages 1-2 only) of the clip under several switches, and the features."""
    seg = VideoSegmenter(tiny, cfg(), cache_frames=0)
    out = {}
    for name, over in {
        "paper": {},
        "knn": {"knn_first_frame": True},
        "cbr": {"authors_cbr": True},
        "noref": {"refine": False},
    }.items():
        c = cfg(modulation=False, **over)
        out[name] = list(seg.iter_batches(seg.prepare(clip.frames, c)[1], c, mode="preview", progress=False))
    return out


def test_row5_knn_repredicts_frame_1(preview):
    paper, knn = preview["paper"][0], preview["knn"][0]
    f = paper.features.stage1(True)  # the default config aggregates
    km = SceneContextModel.from_config(cfg()).fit_predict(f)
    np.testing.assert_array_equal(paper.before, km)  # paper: M^1 is the K-Means map
    f_ = knn.features.stage1(True)
    maps, _, _ = A.authors_coarse_batch(f_.reshape(3, -1, f_.shape[-1]), (4, 4), n_clusters=3, seed=0)
    np.testing.assert_array_equal(knn.before, maps)  # authors: every frame (frame 1 too) from their KNN
    # the second batch: their KNN fitted on the first batch's refined maps
    nxt = preview["knn"][1]
    f2 = nxt.features.stage1(True)
    ref = (f_.reshape(-1, f_.shape[-1]).numpy(), knn.after.reshape(-1))
    np.testing.assert_array_equal(
        nxt.before.reshape(-1), A.authors_knn_predict(ref[0], ref[1], f2.reshape(-1, f2.shape[-1]).numpy())
    )


def test_row8_authors_cbr(preview):
    for p, a in zip(preview["paper"], preview["cbr"]):
        if len(p) > 1:  # default: the paper's eqs. 3-5; switch on: theirs, on the same kind of input
            np.testing.assert_array_equal(p.after, refine(p.before, p.features.corr, radius2=1.0))
            np.testing.assert_array_equal(a.after, A.authors_refine(a.before, a.features.corr))
    first = preview["cbr"][0]
    np.testing.assert_array_equal(first.after, A.authors_refine(first.before, first.features.corr))
    # the same coarse maps M^j go in (stage 1 unchanged)
    np.testing.assert_array_equal(first.before, preview["paper"][0].before)


def test_row6_gt_merges_clusters_after_stage1(tiny, clip):
    c = cfg(modulation=False, gt_merge=True)
    seg = VideoSegmenter(tiny, c, cache_frames=0)
    frames = seg.prepare(clip.frames, c)[1]
    gt0 = clip.labels[0]
    plain = list(seg.iter_batches(frames, c, mode="preview", progress=False))  # no GT given: no merge
    ref = list(seg.iter_batches(frames, cfg(modulation=False), mode="preview", progress=False))
    for p, r in zip(plain, ref):
        np.testing.assert_array_equal(p.before, r.before)
    merged = list(seg.iter_batches(frames, c, mode="preview", progress=False, first_frame_gt=gt0))
    expect, mapping = A.merge_first_batch(ref[0].before, gt0)
    np.testing.assert_array_equal(merged[0].before, expect)
    np.testing.assert_array_equal(merged[0].after, refine(expect, merged[0].features.corr, radius2=1.0))
    classes = set(mapping.values()) | {A.UNMERGED}
    for b in merged:  # the merged labels carry through CBR and the later batches
        assert set(np.unique(b.before)) <= classes and set(np.unique(b.after)) <= classes
    # gt_merge off: a GT given is ignored
    off = list(
        seg.iter_batches(frames, cfg(modulation=False), mode="preview", progress=False, first_frame_gt=gt0)
    )
    np.testing.assert_array_equal(off[0].before, ref[0].before)


def test_row7_shifted_last_batch(tiny, clip):
    assert A.batch_plan(5, cfg()) == [(0, 3), (3, 5)]
    assert A.batch_plan(5, cfg(shifted_last_batch=True)) == [(0, 3), (2, 5)]
    assert A.batch_plan(6, cfg(shifted_last_batch=True)) == [(0, 3), (3, 6), (3, 6)]  # N % B == 0: twice
    for n in range(1, 12):
        plan = A.batch_plan(n, cfg(shifted_last_batch=True))
        assert plan[-1] == (max(0, n - 3), n)  # the last batch: the clip's last B frames
        assert A.plan_overlaps(plan) == (n >= 3) and not A.plan_overlaps(A.batch_plan(n, cfg()))
    c = cfg(modulation=False, shifted_last_batch=True)
    seg = VideoSegmenter(tiny, c)
    batches = list(seg.iter_batches(seg.prepare(clip.frames, c)[1], c, mode="preview", progress=False))
    assert [(b.start, b.stop) for b in batches] == [(0, 3), (2, 5)]
    res = seg.segment(clip.frames, c, progress=False)
    np.testing.assert_array_equal(res.coarse_before[2:5], batches[1].before)  # the later batch wins
    np.testing.assert_array_equal(res.coarse_before[:2], batches[0].before[:2])
    assert res.features is None  # overlapping batches bypass the stage cache


# ---------------------------------------------------------------------------------------------- end to end
def test_authors_preset_end_to_end(tiny):
    c = make_clip(n_frames=4, height=64, width=64, n_objects=2, seed=5, speed=3.0)
    config = preset("authors", n_clusters=3, kmeans_n_init=2, max_side=64, batch_size=3)
    seg = VideoSegmenter(tiny, config, cache_frames=0)
    frames = seg.prepare(c.frames, config)[1]
    batches = list(seg.iter_batches(frames, config, progress=False, first_frame_gt=c.labels[0]))
    assert [(b.start, b.stop) for b in batches] == A.authors_batch_starts(4, 3) == [(0, 3), (1, 4)]
    f = batches[0].features.stage1(False)
    maps, _, _ = A.authors_coarse_batch(f.reshape(3, -1, f.shape[-1]), (4, 4), n_clusters=3, seed=1,
                                        gt_first=c.labels[0])  # fmt: skip
    np.testing.assert_array_equal(batches[0].before, maps)
    np.testing.assert_array_equal(batches[0].after, A.authors_refine(maps, batches[0].features.corr))
    for b in batches:
        for r, d in enumerate(b.diffs):
            assert d.raw.dtype == np.float64 or len(d.labels) == 1
            _, y = final_labels(d, b.after[r], 0.7, lanczos=True)
            np.testing.assert_array_equal(b.final[r], y)
    res = seg.segment(c.frames, config, progress=False, first_frame_gt=c.labels[0])
    assert set(np.unique(res.labels)) <= set(np.unique(c.labels[0])) | {255}  # GT classes (or void)


def test_evaluate_clip_authors_protocol_scores_labels_as_classes(tiny):
    c = make_clip(n_frames=4, height=64, width=64, n_objects=2, seed=5, speed=3.0)
    config = cfg(modulation=False)
    seg = VideoSegmenter(tiny, config, cache_frames=0)
    late = evaluate_clip(seg, c.frames, c.labels, config, c.n_labels, 255)
    auth = evaluate_clip(seg, c.frames, c.labels, config, c.n_labels, 255, protocol="authors")
    assert late["protocol"] == "late" and auth["protocol"] == "authors"
    res = seg.segment(c.frames, config.replace(gt_merge=True), progress=False, first_frame_gt=c.labels[0])
    expect = score_result(res.labels, res.coarse_before, c.labels, c.n_labels, 255, protocol="authors")
    np.testing.assert_array_equal(auth["conf"], expect["conf"])
    assert all(k == v for k, v in auth["mapping"].items() if v >= 0)  # identity: labels are classes
    with pytest.raises(ValueError, match="first frame"):
        evaluate_clip(seg, c.frames, c.labels, config, c.n_labels, 255, protocol="authors",
                      annotated=[False, True, True, True])  # fmt: skip


CLI_FAST = ["--model", "tiny", "--max-side", "64", "--clusters", "3", "--t-m", "24", "--batch-size", "4"]


def test_cli_evaluate_protocol_named_in_summary(tmp_path: Path, capsys) -> None:
    root = write_camvid(tmp_path / "camvid", n_videos=1, n_frames=5)
    for protocol in ("authors", "late"):
        out = tmp_path / protocol
        rc = cli.main(["evaluate", "--dataset", "camvid", "--root", str(root), "--out", str(out), "--preview",
                       "--quiet", "--protocol", protocol, *CLI_FAST])  # fmt: skip
        assert rc == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["protocol"] == protocol and summary["run"]["protocol"] == protocol
        assert summary["run"]["config"]["gt_merge"] == (protocol == "authors")
        assert f"protocol {protocol}" in capsys.readouterr().out
        line = json.loads((out / "per_video.jsonl").read_text().splitlines()[0])
        assert line["protocol"] == protocol
    # resuming a folder with the other protocol is refused (it is in run.json's config)
    assert cli.main(["evaluate", "--dataset", "camvid", "--root", str(root), "--out", str(tmp_path / "late"),
                     "--preview", "--quiet", "--protocol", "authors", *CLI_FAST]) == 2  # fmt: skip


def test_ablate_runs_either_protocol(tiny, monkeypatch, capsys) -> None:
    from vidseg_nb.evaluation import ablation, run_ablation

    c = make_clip(n_frames=3, height=64, width=64, n_objects=2, seed=5, speed=3.0)
    rows = [("B=14 +MM", dict(batch_size=14, masked_modulation=True, lam=50.0, s=0.7))]
    base = cfg(t_m=24)
    for protocol in ("late", "authors"):
        (r,) = run_ablation(tiny, [("c", c.frames, c.labels)], base, c.n_labels, rows=rows, progress=False,
                            protocol=protocol)  # fmt: skip
        assert r["protocol"] == protocol and r["per_clip"]["c"]["protocol"] == protocol
    (r,) = run_ablation(tiny, [("c", c.frames, c.labels)], preset("authors", **FAST, t_m=24), c.n_labels,
                        rows=rows, progress=False)  # fmt: skip
    assert r["protocol"] == "authors"  # the authors preset defaults to its protocol
    seen = {}

    def fake(bb, clips, config, num_classes, ignore_index=255, **kw):
        seen.update(kw)
        return []

    monkeypatch.setattr(ablation, "run_ablation", fake)
    assert (
        cli.main(["ablate", "--synthetic", "1", "--max-frames", "2", "--protocol", "authors", *CLI_FAST]) == 0
    )
    assert seen["protocol"] == "authors" and "protocol authors" in capsys.readouterr().out
