"""The Stable Video Diffusion backbone (paper 4.4, Table 3; SPEC 10) on the tiny random SVD model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vidseg_nb.backbone import Backbone, BackboneLoadError
from vidseg_nb.config import PRESETS, preset
from vidseg_nb.features import extract_features, reference_run
from vidseg_nb.loading import is_svd_source, load_backbone
from vidseg_nb.modulation import modulate, plan_runs, upsample_masks
from vidseg_nb.pipeline import VideoSegmenter
from vidseg_nb.probe import AddToOutput, InjectQK, Probe, RecordQK, count_hooks
from vidseg_nb.svd import (
    SVD_LAYOUT,
    SVDBackbone,
    build_tiny_svd_components,
    save_svd_components,
)
from vidseg_nb.synthetic import make_clip

FAST = dict(n_clusters=3, kmeans_n_init=2, t_m=23)  # 2 denoising steps


@pytest.fixture(scope="module")
def svd():
    return load_backbone("tiny-svd", device="cpu")


def _frames(n: int, h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    return make_clip(n_frames=n, height=h, width=w, n_objects=2, seed=seed).frames


def _planted(n: int, g: int, n_labels: int) -> np.ndarray:
    """(n, g, g) maps with ``n_labels`` vertical stripes (label ids 3, 4, ...)."""
    stripe = np.minimum(np.arange(g) * n_labels // g, n_labels - 1) + 3
    return np.broadcast_to(stripe[None, None, :], (n, g, g)).astype(np.int64).copy()


def _clip_latents(bb, n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------- model and sampler
def test_tiny_svd_has_the_real_layout_and_edm_sigmas(svd):
    assert isinstance(svd, SVDBackbone) and isinstance(svd, Backbone) and svd.is_random
    assert svd.frames_per_group(5) == 5
    assert type(svd.unet).__name__ == "UNetSpatioTemporalConditionModel" and svd.unet.config.in_channels == 8
    assert type(svd.vae).__name__ == "AutoencoderKLTemporalDecoder" and svd.vae_scale == 8
    mods = dict(svd.unet.named_modules())
    for b in (6, 7, 8):  # same module names as SD, plus the temporal transformer blocks
        assert f"{SVD_LAYOUT.block_path(b)}.attn1.to_q" in mods
        assert f"{SVD_LAYOUT.temporal_block_path(b)}.attn1" in mods
    assert SVD_LAYOUT.mod_sites() == [
        ("up_blocks.2.attentions.2.transformer_blocks.0.attn1", "spatial"),
        ("up_blocks.2.attentions.2.temporal_transformer_blocks.0.attn1", "temporal"),
    ]
    # Karras/EDM sigmas (sigma_max 700, sigma_min 0.002, rho 7), timestep 0.25 log sigma
    s = svd.sigmas
    assert len(s) == 26 and s[-1] == 0 and torch.all(s[:-1] > s[1:])
    ramp = torch.linspace(0, 1, 25, dtype=torch.float64)
    karras = (700 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 700 ** (1 / 7))) ** 7
    torch.testing.assert_close(s[:-1], karras.float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(svd.timesteps, 0.25 * torch.log(s[:-1]), rtol=1e-5, atol=1e-5)
    assert PRESETS["svd"]["t_m"] == 17 and PRESETS["svd"]["batch_size"] == 14


def test_euler_step_matches_hand_computation(svd):
    """One step: v-prediction with EDM preconditioning, conditioning latent on channels, CLIP embedding as
    the only token, zeros for the uncond half, per-frame guidance ramp 1 -> w."""
    f = 3
    frames = _frames(f)
    cond = svd.condition_on(frames[0], seed=0, index=0)
    assert cond.image_embeds.shape == (1, 1, 32) and cond.image_latent.shape == (1, 4, 8, 8)
    assert cond.added_time_ids.tolist() == [[14.0, 127.0, pytest.approx(0.02)]]
    x = _clip_latents(svd, f, 1)
    i = 22
    sigma, sigma_next = svd.sigmas[i].item(), svd.sigmas[i + 1].item()
    xin = x / (sigma**2 + 1) ** 0.5
    lat = cond.image_latent.expand(f, -1, -1, -1)
    ids = cond.added_time_ids
    t = torch.tensor(0.25 * math.log(sigma))
    with torch.no_grad():
        v_u = svd.unet(
            torch.cat([xin, torch.zeros_like(lat)], 1)[None], t,
            encoder_hidden_states=torch.zeros_like(cond.image_embeds), added_time_ids=ids,
        ).sample[0]  # fmt: skip
        v_c = svd.unet(
            torch.cat([xin, lat], 1)[None], t, encoder_hidden_states=cond.image_embeds, added_time_ids=ids
        ).sample[0]

    def deriv(v):
        x0 = x / (sigma**2 + 1) - sigma / (sigma**2 + 1) ** 0.5 * v
        return (x - x0) / sigma

    w = torch.linspace(1.0, 2.5, f).view(f, 1, 1, 1)
    expect = x + (sigma_next - sigma) * (deriv(v_u) + w * (deriv(v_c) - deriv(v_u)))
    before = svd.counters.snapshot()
    got = svd.sample(x, i, 2.5, stop=i + 1, cond=cond)
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-4)
    w_ = svd.counters.since(before)
    assert w_["unet_samples"] == 2 * f and w_["unet_calls"] == 1  # one clip x CFG, one call


def test_feature_grid_shapes_and_sites(svd):
    frames = _frames(4, 64, 128)
    mods = dict(svd.unet.named_modules())
    manual: dict[int, torch.Tensor] = {}

    def grab(block):
        def hook(_m, _i, out):
            manual[block] = out[out.shape[0] // 2 :].detach().clone()  # last call wins: the last step

        return hook

    hs = [mods[f"{SVD_LAYOUT.block_path(b)}.attn1.to_q"].register_forward_hook(grab(b)) for b in (6, 7, 8)]
    try:
        feats = extract_features(svd, frames, preset("svd", **FAST), progress=False)
    finally:
        for h in hs:
            h.remove()
    for b in (6, 7, 8):  # (N, H/16, W/16, C) per block
        assert feats.blocks[b].shape == (4, 4, 8, 64)
        torch.testing.assert_close(feats.blocks[b].reshape(4, 32, 64), manual[b])
    assert feats.aggregated.shape == (4, 4, 8, 64) and feats.grid == (4, 8)
    assert feats.single_block == 8 and torch.equal(feats.corr, feats.blocks[8])  # block 8: correspondence
    assert count_hooks(svd.unet) == 0
    # more frames than B: clips of B frames, each conditioned on its own first frame
    cfg2 = preset("svd", **FAST, batch_size=2)
    c0 = svd.counters.snapshot()
    feats2 = extract_features(svd, frames, cfg2, progress=False)
    assert svd.counters.since(c0)["image_encodes"] == 2 and feats2.blocks[8].shape == (4, 4, 8, 64)
    second = reference_run(svd, frames[2:], cfg2, frame_offset=2, progress=False).features
    torch.testing.assert_close(feats2.blocks[8][2:], second.blocks[8])
    assert not torch.allclose(feats2.blocks[8], feats.blocks[8])  # a frame's features depend on its clip


# ------------------------------------------------------------------------------- probe: modulation, q/k
def test_zero_modulation_changes_nothing_bit_for_bit(svd):
    f = 4
    cond = svd.condition_on(_frames(1)[0])
    x = _clip_latents(svd, f, 2)
    plain = svd.sample(x, 22, cond=cond)
    # (R * F, h * w, 1) with R = 1, 4x4 grid
    with Probe(svd.unet, AddToOutput(22, torch.zeros(f, 16, 1)), layout=svd.layout) as p:
        assert count_hooks(svd.unet) == 2  # spatial and temporal self-attention of block 8
        zero = svd.sample(x, 22, listener=p, cond=cond)
    assert torch.equal(plain, zero)
    mask = torch.zeros(f, 16, 1)
    mask[2, :8] = 50.0  # frame 2 only
    with Probe(svd.unet, AddToOutput(22, mask), layout=svd.layout) as p:
        modded = svd.sample(x, 22, listener=p, cond=cond)
    assert not torch.allclose(plain[2], modded[2])


def test_modulation_lands_on_the_frame_tokens_at_both_sites(svd):
    """The added tensor, read between a hook before and a hook after the probe's, is lambda exactly on
    (run, frame 2, cells 0-7) of the spatial rows (run, frame) and the temporal rows (run, cell)."""
    f, r = 4, 2
    cond = svd.condition_on(_frames(1)[0])
    x = torch.stack([_clip_latents(svd, f, 6), _clip_latents(svd, f, 7)])  # 2 runs of a 4-frame clip
    mods = dict(svd.unet.named_modules())
    add = torch.zeros(r * f, 16, 1)
    add[1 * f + 2, :8] = 50.0  # run 1, frame 2, cells 0..7
    seen: dict[tuple[str, str], torch.Tensor] = {}
    sites = svd.layout.mod_sites()

    def grab(tag):
        def hook(_m, _i, out):
            seen[tag] = out.detach().clone()

        return hook

    hs = [mods[p].register_forward_hook(grab((k, "before"))) for p, k in sites]
    try:
        with Probe(svd.unet, AddToOutput(22, add), layout=svd.layout) as p:
            hs += [mods[path].register_forward_hook(grab((k, "after"))) for path, k in sites]
            svd.unet_eps(x, 22, 2.5, listener=p, cond=cond)
    finally:
        for h in hs:
            h.remove()
    spatial = (seen[("spatial", "after")] - seen[("spatial", "before")]).reshape(2, r, f, 16, -1)
    temporal = (seen[("temporal", "after")] - seen[("temporal", "before")]).reshape(2, r, 16, f, -1)
    expect = torch.zeros(2, r, f, 16)
    expect[:, 1, 2, :8] = 50.0  # both CFG halves
    torch.testing.assert_close(spatial.amax(-1), expect)
    torch.testing.assert_close(spatial.amin(-1), expect)
    torch.testing.assert_close(temporal.permute(0, 1, 3, 2, 4).amax(-1), expect)
    torch.testing.assert_close(temporal.permute(0, 1, 3, 2, 4).amin(-1), expect)


def test_injecting_own_qk_reproduces_run_bit_for_bit(svd):
    f = 4
    cond = svd.condition_on(_frames(1)[0])
    x = _clip_latents(svd, f, 3)
    rec = RecordQK()
    with Probe(svd.unet, rec, layout=svd.layout) as p:
        ref = svd.sample(x, 22, listener=p, cond=cond)
    sites = svd.layout.injection_sites(svd.unet)
    # 9 attentions in up_blocks[1..3] x (spatial, temporal) x attn1: the attn2 attend to one token
    assert len(sites) == 18 and all(s.endswith("attn1") for s in sites)
    assert sum("temporal_transformer_blocks" in s for s in sites) == 9
    assert len(rec.qk) == 3 * len(sites) * 2  # 3 steps x sites x (q, k)
    with Probe(svd.unet, InjectQK(rec.qk, torch.tensor([0])), layout=svd.layout) as inj:
        again = svd.sample(x, 22, listener=inj, cond=cond)
    assert torch.equal(ref, again)
    # the hooks do act: another clip with these q/k differs from its own plain run
    y = _clip_latents(svd, f, 4)
    with Probe(svd.unet, InjectQK(rec.qk, torch.tensor([0])), layout=svd.layout) as inj:
        injected = svd.sample(y, 22, listener=inj, cond=cond)
    assert not torch.allclose(injected, svd.sample(y, 22, cond=cond))


def test_one_token_sites_are_svds_cross_attentions_and_never_injected(svd):
    """Issue 23 item 4: the layout lists the one-token sites (SVD's cross-attentions attend to one CLIP
    image token; SD's 77 text tokens: none), injection leaves them out up front, and InjectQK raises at
    a site without recorded q/k instead of passing it by."""
    from vidseg_nb.probe import SD_LAYOUT

    attn2 = [n for n, _ in svd.unet.named_modules() if n.endswith("attn2")]
    assert attn2 and svd.layout.one_token_sites(svd.unet) == attn2
    assert SD_LAYOUT.one_token_sites(svd.unet) == []
    assert not set(svd.layout.injection_sites(svd.unet)) & set(attn2)
    seen: dict[str, int] = {}  # the one-token contexts, as the UNet runs them
    handles = [
        m.register_forward_pre_hook(
            lambda _m, a, kw, n=n: seen.__setitem__(n, kw["encoder_hidden_states"].shape[1]), with_kwargs=True
        )
        for n, m in svd.unet.named_modules()
        if n in attn2
    ]
    cond = svd.condition_on(_frames(1)[0])
    x = _clip_latents(svd, 2, 3)
    rec = RecordQK()
    try:
        with Probe(svd.unet, rec, layout=svd.layout) as p:
            svd.sample(x, 22, listener=p, cond=cond)
    finally:
        for h in handles:
            h.remove()
    assert set(seen) == set(attn2) and set(seen.values()) == {1}
    assert not any(site.endswith("attn2") for _, site, _ in rec.qk.data)
    del rec.qk.data[next(iter(rec.qk.data))]  # a site without its q/k: refused, not passed by
    with pytest.raises(KeyError, match="no recorded"):
        with Probe(svd.unet, InjectQK(rec.qk, torch.tensor([0])), layout=svd.layout) as inj:
            svd.sample(x, 22, listener=inj, cond=cond)


# ------------------------------------------------------------------------------- stage 3
@pytest.fixture(scope="module")
def ref4(svd):
    frames = _frames(4, seed=1)
    cfg = preset("svd", **FAST)
    return frames, cfg, reference_run(svd, frames, cfg, record_qk=True, progress=False)


def test_plan_runs_one_pair_per_label_of_the_batch():
    coarse = np.array([[[1, 2], [2, 2]], [[5, 5], [5, 5]], [[1, 9], [9, 9]]])
    # 5 is only in a single-label frame: no run needed
    assert plan_runs(coarse, group=3) == [(0, 1, 1), (0, 1, -1), (0, 2, 1), (0, 2, -1), (0, 9, 1), (0, 9, -1)]


@pytest.mark.parametrize("n_labels", [2, 3])
def test_work_counters_and_unet_calls_do_not_grow_with_labels(svd, ref4, n_labels):
    frames, cfg, _ = ref4
    n, steps = len(frames), cfg.n_steps - cfg.t_m
    c0 = svd.counters.snapshot()
    ref = reference_run(svd, frames, cfg, record_qk=True, progress=False)
    out = modulate(svd, ref, _planted(n, 4, n_labels), cfg, chunk=64, progress=False)
    w = svd.counters.since(c0)
    assert w["unet_samples"] == steps * 2 * n * (1 + 2 * n_labels)  # (S x 2 x (1 + 2L)) per frame
    assert w["vae_decodes"] == 2 * n_labels * n  # every frame of every (label, sign) run
    assert w["vae_encodes"] == n + 1 and w["image_encodes"] == 1  # + the conditioning frame
    assert w["unet_calls"] == 2 * steps  # reference + all modulated runs in one call per step
    assert len(out.runs) == 2 * n_labels and all(k == 0 for k, _, _ in out.runs)  # one group: the clip
    c1 = svd.counters.snapshot()
    modulate(svd, ref, _planted(n, 4, n_labels), cfg, chunk=2, progress=False)
    assert svd.counters.since(c1)["unet_calls"] == steps * n_labels  # chunks of one +/- pair


def test_per_frame_masks_blending_and_difference_maps(svd, ref4):
    frames, cfg, ref = ref4
    coarse = _planted(4, 4, 2)
    coarse[3] = 3  # frame 3: one label only -> constant map, never modulated
    coarse[1, :, :] = np.array([3, 3, 5, 5])  # label 5 only in frame 1
    out = modulate(svd, ref, coarse, cfg, chunk=64, return_latents=True, keep_images={1}, progress=False)
    final_ref = ref.latents[cfg.n_steps - 1]
    assert out.final_latents.shape == (6, 4, 4, 8, 8)
    for (_, lab, _), x in zip(out.runs, out.final_latents):
        for f in range(4):
            m = upsample_masks((coarse[f] == lab)[None], (8, 8), mode="nearest")[0].bool()
            assert torch.equal(x[f][:, ~m], final_ref[f][:, ~m])  # reference outside frame f's own mask
            if m.any():
                assert not torch.allclose(x[f][:, m], final_ref[f][:, m])
    assert [fd.labels.tolist() for fd in out.frames] == [[3, 4], [3, 5], [3, 4], [3]]
    assert out.frames[3].raw.shape == (1, 64, 64)
    for fd in out.frames[:3]:
        assert fd.raw.shape == (2, 64, 64) and np.allclose(fd.raw.max((1, 2)), 1.0, atol=1e-3)
    assert out.frames[1].plus.shape == (2, 64, 64, 3) and out.frames[0].plus is None
    zero = modulate(svd, ref, coarse, cfg.replace(lam=0.0), chunk=64, progress=False)
    assert all(np.abs(fd.raw).max() == 0 for fd in zero.frames[:3])


# ------------------------------------------------------------------------------- end to end
def test_segmenter_end_to_end_with_preset_svd(svd):
    clip = make_clip(n_frames=6, height=64, width=72, n_objects=2, seed=2)
    cfg = preset("svd", **FAST, batch_size=4, max_side=64)
    res = VideoSegmenter(svd, cfg).segment(clip.frames, progress=False)
    assert res.labels.shape == clip.labels.shape and res.mode == "full"  # frames and size of the input
    assert res.size == (64, 64) and res.coarse_after.shape == (6, 4, 4)
    assert set(np.unique(res.labels)) <= set(np.unique(res.coarse_before[0]))
    # work: per batch of F frames with L labels (in its multi-label frames): 2 x F x S x (1 + 2L) samples
    expect_s = expect_d = 0
    for a in (0, 4):
        batch = res.coarse_after[a : a + 4]
        L = len(plan_runs(batch, group=len(batch))) // 2
        expect_s += 2 * len(batch) * 2 * (1 + 2 * L)
        expect_d += 2 * L * len(batch)
    assert res.work["unet_samples"] == expect_s and res.work["vae_decodes"] == expect_d
    assert res.work["vae_encodes"] == 6 + 2 and res.work["image_encodes"] == 2
    d = res.details[1]
    assert set(d.features) == {0, 6, 7, 8} and d.features[8].shape == (4, 4, 64)
    assert d.diff.raw.shape[0] == len(d.diff.labels) and d.final.shape == (64, 64)


def test_cli_segment_with_tiny_svd(tmp_path, capsys):
    from vidseg_nb.cli import main as cli_main
    from vidseg_nb.video import read_video

    src = tmp_path / "clip.mp4"
    assert cli_main(["example", str(src), "--frames", "3", "--height", "64", "--width", "64"]) == 0
    out = tmp_path / "seg.mp4"
    rc = cli_main([
        "segment", str(src), "-o", str(out), "--model", "tiny-svd", "--preset", "svd", "--max-side", "64",
        "--clusters", "3", "--t-m", "24", "--device", "cpu",
    ])  # fmt: skip
    assert rc == 0 and "random weights" in capsys.readouterr().err
    assert len(read_video(out)) == 3 and len(list((tmp_path / "seg_labels").glob("*.png"))) == 3


# ------------------------------------------------------------------------------- loading
def test_save_pretrained_round_trip(tmp_path):
    folder = save_svd_components(build_tiny_svd_components(seed=3), tmp_path / "tiny-svd")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableVideoDiffusionPipeline"
    assert is_svd_source(str(folder)) and is_svd_source("tiny-svd")
    loaded = load_backbone(folder, device="cpu")
    direct = load_backbone("tiny-svd", device="cpu", seed=3)
    assert isinstance(loaded, SVDBackbone) and loaded.source == str(folder) and not loaded.is_random
    for (n1, p1), (n2, p2) in zip(loaded.unet.named_parameters(), direct.unet.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert loaded.scheduler_config["prediction_type"] == "v_prediction"
    torch.testing.assert_close(loaded.sigmas, direct.sigmas)
    frame = _frames(1)[0]
    c1, c2 = loaded.condition_on(frame), direct.condition_on(frame)
    torch.testing.assert_close(c1.image_embeds, c2.image_embeds)
    torch.testing.assert_close(c1.image_latent, c2.image_latent)
    x = _clip_latents(loaded, 2, 5)
    # same weights; the fp32 kernels may differ in the last bit (weight memory layout after loading)
    got, expect = loaded.unet_eps(x, 17, 2.5, cond=c1), direct.unet_eps(x, 17, 2.5, cond=c2)
    torch.testing.assert_close(got, expect, rtol=1e-3, atol=1e-3)
    other = load_backbone("tiny-svd", device="cpu", seed=4)
    assert not torch.allclose(other.unet_eps(x, 17, 2.5, cond=c2), expect, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(loaded.decode(x), direct.decode(x))


def test_unloadable_svd_sources_give_the_same_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for src in (
        "stabilityai/stable-video-diffusion-img2vid",
        "stabilityai/stable-video-diffusion-img2vid-xt",
    ):
        assert is_svd_source(src)
        with pytest.raises(BackboneLoadError) as e:
            load_backbone(src, device="cpu")
        msg = str(e.value)
        assert src in msg and "VIDSEG_MODEL" in msg and "--model" in msg
    broken = tmp_path / "svd-without-weights"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "StableVideoDiffusionPipeline"}))
    assert is_svd_source(str(broken))
    with pytest.raises(BackboneLoadError, match="svd-without-weights"):
        load_backbone(broken, device="cpu")
    assert not is_svd_source("no-such-org/no-such-model") and not is_svd_source("tiny")
