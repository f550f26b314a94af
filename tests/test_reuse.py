"""Stage-3 work reuse (issue 12): prefix replay at t_m, injected attention without q/k projections, shared
softmax(QK^T), kept reference runs for a lambda change. Same difference maps D_l and labels with and
without each reuse; the work saved is what the formula says.

Tolerances: skipping the q/k projections is bit-identical (the same SDPA call on the same q/k). The prefix
replay and the shared softmax are equal to float noise: the replayed tensors were computed in the
reference run's UNet batch, whose size differs from the modulated batch's (CPU matmul kernels depend on
the batch size, ~1e-6 relative), and the shared probabilities are an explicit softmax instead of the
fused SDPA kernel. D_l (normalised to max 1) then agrees to 1e-3 (measured: 4e-5) and the labels Y are
equal, on 128 px clips (at 64 px the tiny model's I+ and I- differ so little that the noise shows).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidseg_nb.bench import REUSE_OFF, REUSE_ON, stage3_unet_flops
from vidseg_nb.config import SegConfig, preset
from vidseg_nb.errors import ConfigError
from vidseg_nb.features import reference_run
from vidseg_nb.modulation import final_labels, modulate
from vidseg_nb.pipeline import VideoSegmenter
from vidseg_nb.probe import count_hooks
from vidseg_nb.synthetic import make_clip

ATOL_D = 1e-3


def _stripes(n: int, g: int, n_labels: int) -> np.ndarray:
    stripe = np.minimum(np.arange(g) * n_labels // g, n_labels - 1)
    return np.broadcast_to(stripe[None, None, :], (n, g, g)).copy()


def _run(bb, frames, coarse, cfg):
    ref = reference_run(bb, frames, cfg, record_qk=True, progress=False)
    mo = modulate(bb, ref, coarse, cfg, progress=False)
    raw = np.stack([f.raw for f in mo.frames])
    labels = np.stack([final_labels(d, m, cfg.s)[1] for d, m in zip(mo.frames, coarse)])
    return raw, labels


def _module_state(unet):
    return (
        [id(m) for m in unet.modules()],
        [id(m.processor) for m in unet.modules() if hasattr(m, "set_processor")],
        sum("forward" in m.__dict__ for m in unet.modules()),
    )


@pytest.fixture(scope="module")
def tiny_svd():
    from vidseg_nb.loading import load_backbone

    return load_backbone("tiny-svd", device="cpu")


@pytest.mark.parametrize("model", ["sd", "svd"])
def test_difference_maps_and_labels_equal_with_and_without_reuse(model, tiny, tiny_svd):
    bb = tiny if model == "sd" else tiny_svd
    # 128 px: at 64 px the tiny model's I+ and I- differ so little that float noise is visible in D_l
    frames = make_clip(n_frames=2, height=128, width=128, seed=1).frames
    base = SegConfig(t_m=22) if model == "sd" else preset("svd", batch_size=2)
    coarse = _stripes(len(frames), 8, 3 if model == "sd" else 2)
    state = _module_state(bb.unet)
    raw0, lab0 = _run(bb, frames, coarse, base.replace(**REUSE_OFF))
    assert raw0.max() == pytest.approx(1.0)  # not degenerate: the modulation changes the images
    # no q/k projections: bit-identical
    raw, lab = _run(bb, frames, coarse, base.replace(**{**REUSE_OFF, "skip_qk_projections": True}))
    np.testing.assert_array_equal(raw, raw0)
    np.testing.assert_array_equal(lab, lab0)
    # prefix replay + shared softmax(QK^T): float noise
    for over in ({**REUSE_OFF, "reuse_prefix": True}, {**REUSE_OFF, "one_key_attention": True}, REUSE_ON):
        raw, lab = _run(bb, frames, coarse, base.replace(**over))
        np.testing.assert_allclose(raw, raw0, atol=ATOL_D, rtol=0)
        np.testing.assert_array_equal(lab, lab0)
    # every patched forward and processor is restored, no hook is left
    assert count_hooks(bb.unet) == 0
    assert _module_state(bb.unet) == state


def test_replayed_modules_are_skipped_and_restored(tiny):
    """The prefix modules do not run at t_m in the modulated runs (their inner hooks do not fire)."""
    from vidseg_nb.probe import AddToOutput, Probe, RecordOutputs, ReplayOutputs

    frames = make_clip(n_frames=1, height=64, width=64, seed=2).frames
    cfg = SegConfig(t_m=22)
    ref = reference_run(tiny, frames, cfg, record_qk=True, progress=False)
    assert isinstance(ref.prefix, RecordOutputs) and ref.prefix.nbytes() > 0
    sites = tiny.layout.prefix_sites(tiny.unet)
    assert sites[0] == "down_blocks.0" and sites[-1].endswith("transformer_blocks.0.attn2")
    calls = []
    inner = dict(tiny.unet.named_modules())["down_blocks.0.resnets.0"]
    h = inner.register_forward_hook(lambda *a: calls.append(1))
    replay = ReplayOutputs(ref.prefix, torch.tensor([0, 0]))
    x = ref.x_start.repeat(2, 1, 1, 1)
    with Probe(tiny.unet, AddToOutput(22, torch.zeros(2, 16, 1)), replay, layout=tiny.layout) as p:
        tiny.unet_eps(x, 22, 5.0, listener=p)
        assert calls == [] and replay.replayed == len(sites)
        tiny.unet_eps(x, 23, 5.0, listener=p)  # other steps run the modules
        assert calls == [1]
    h.remove()
    assert count_hooks(tiny.unet) == 0 and not any("forward" in m.__dict__ for m in tiny.unet.modules())


def _meta_backbone(model: str):
    """The tiny SD / SVD UNet on the ``meta`` device (FLOP counts of every op, attention included)."""
    if model == "sd":
        from diffusers import UNet2DConditionModel

        from vidseg_nb.backbone import SDBackbone, tiny_configs

        cfg = tiny_configs()
        with torch.device("meta"):
            unet = UNet2DConditionModel(**cfg["unet"]).eval()
        bb = SDBackbone(
            unet=unet,
            vae=None,
            scheduler_config=cfg["scheduler"],
            cond_states=torch.empty(1, 77, 32, device="meta"),
        )
        return bb, None, SegConfig(t_m=22), 1
    from vidseg_nb.svd import SVDBackbone, SVDCondition, build_svd_components, tiny_svd_configs

    comps = build_svd_components(tiny_svd_configs(), device="meta")
    bb = SVDBackbone(
        unet=comps["unet"],
        vae=comps["vae"],
        image_encoder=comps["image_encoder"],
        scheduler_config=dict(comps["scheduler"].config),
    )
    meta = dict(device="meta")
    cond = SVDCondition(
        torch.empty(1, 1, 32, **meta), torch.empty(1, 4, 8, 8, **meta), torch.empty(1, 3, **meta)
    )
    return bb, cond, preset("svd"), 3


ON_BUT_ONE_KEY = {**REUSE_ON, "one_key_attention": False}  # its saving: test_one_key_attention_flops


def _flops(counts: dict, path: str, unet_name: str) -> int:
    return sum(counts.get(f"{unet_name}.{path}", {}).values())


@pytest.mark.parametrize("model", ["sd", "svd"])
def test_flop_drop_follows_the_formula(model):
    """UNet FLOPs after = before - (2L runs) x [prefix modules at t_m + to_q/to_k of the injected sites
    that still run + the QK^T half of their attention for all but one run], read off the per-module
    counts of the run without reuse (FlopCounterMode on the meta device)."""
    bb, cond, base, g = _meta_backbone(model)
    x = torch.empty(1, g, 4, 8, 8, device="meta")
    n_labels = 2
    r = 2 * n_labels
    before = stage3_unet_flops(bb, x, base.replace(**REUSE_OFF), n_labels, cond, detail=True)
    after = stage3_unet_flops(bb, x, base.replace(**ON_BUT_ONE_KEY), n_labels, cond)
    assert after["reference"] == before["reference"]
    name = type(bb.unet).__name__
    prefix = bb.layout.prefix_sites(bb.unet)
    sites = bb.layout.injection_sites(bb.unet)
    saved = 0
    for step, counts in enumerate(before["modules"]):
        if step == 0:
            saved += sum(_flops(counts, p, name) for p in prefix)
        for s in sites:
            if step == 0 and any(s == p or s.startswith(p + ".") for p in prefix):
                continue  # replayed: already counted in its prefix module
            proj = _flops(counts, f"{s}.to_q", name) + _flops(counts, f"{s}.to_k", name)
            attn = _flops(counts, s, name) - sum(
                _flops(counts, f"{s}.{m}", name) for m in ("to_q", "to_k", "to_v", "to_out.0")
            )
            assert proj > 0 and attn > 0
            saved += proj + attn // 2 * (r - 1) // r  # QK^T is half of the attention matmuls
    assert after["modulated"] * g == pytest.approx(before["modulated"] * g - saved, rel=1e-9)
    # the drop is large: the prefix is most of the UNet at t_m
    assert after["modulated_at_t_m"] < 0.6 * before["modulated_at_t_m"]


def _one_key_query_lengths(bb, x, cond, cfg) -> dict[str, int | None]:
    """Every ``attn2``'s query length, or None where its context has more than one token."""
    seen: dict[str, int | None] = {}
    handles = []
    for name, m in bb.unet.named_modules():
        if name.endswith("attn2"):

            def pre(_m, args, kwargs, name=name):
                hs, ctx = args[0], kwargs.get("encoder_hidden_states")
                seen[name] = hs.shape[1] if ctx is not None and ctx.shape[1] == 1 else None

            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
    with torch.no_grad():
        bb.unet_eps(x, cfg.t_m, cfg.guidance_scale, cond=cond)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("model", ["sd", "svd"])
def test_one_key_attention_flops(model):
    """A cross-attention over one token (SVD's image embedding) costs to_v plus to_out on one row per
    sample after the switch: saved = attn2 - to_v - to_out / n_queries at each such site, in the reference
    run and in the modulated runs; SD (77 text tokens) is unchanged."""
    bb, cond, base, g = _meta_backbone(model)
    x = torch.empty(1, g, 4, 8, 8, device="meta")
    off = stage3_unet_flops(bb, x, base.replace(**ON_BUT_ONE_KEY), 2, cond, detail=True)
    on = stage3_unet_flops(bb, x, base.replace(**REUSE_ON), 2, cond, detail=True)
    n_q = _one_key_query_lengths(bb, x, cond, base)
    name = type(bb.unet).__name__
    one_key = {site: nq for site, nq in n_q.items() if nq is not None}
    assert bool(one_key) == (model == "svd") and len(n_q) > 0
    for kind in ("reference_modules", "modules"):
        saved = 0
        for counts in off[kind]:
            for site, nq in one_key.items():
                out = _flops(counts, f"{site}.to_out.0", name)
                assert out % nq == 0
                saved += _flops(counts, site, name) - _flops(counts, f"{site}.to_v", name) - out // nq
        total_off = sum(sum(c["Global"].values()) for c in off[kind])
        total_on = sum(sum(c["Global"].values()) for c in on[kind])
        assert total_on == total_off - saved
        assert (saved > 0) == (model == "svd")


def test_reference_with_one_key_attention_serves_modulated_runs_without_it(tiny_svd):
    """A reference run recorded with ``one_key_attention`` holds no q/k of the one-token cross-attentions;
    modulated runs without the switch (hook injection or the injecting processor) leave those sites as
    they are, which is exact there: same D_l and labels as the path without any reuse."""
    frames = make_clip(n_frames=2, height=128, width=128, seed=1).frames
    base = preset("svd", batch_size=2)
    coarse = _stripes(len(frames), 8, 2)
    raw0, lab0 = _run(tiny_svd, frames, coarse, base.replace(**REUSE_OFF))
    ref = reference_run(tiny_svd, frames, base.replace(**REUSE_ON), record_qk=True, progress=False)
    assert ref.qk.data and not any(site.endswith("attn2") for _, site, _ in ref.qk.data)
    for over in (REUSE_OFF, {**REUSE_OFF, "skip_qk_projections": True}):
        cfg = base.replace(**over)
        mo = modulate(tiny_svd, ref, coarse, cfg, progress=False)
        raw = np.stack([f.raw for f in mo.frames])
        lab = np.stack([final_labels(d, m, cfg.s)[1] for d, m in zip(mo.frames, coarse)])
        np.testing.assert_allclose(raw, raw0, atol=ATOL_D, rtol=0)
        np.testing.assert_array_equal(lab, lab0)


def test_one_key_processor_equals_attention_and_skips_q_k():
    """OneKeyAttnProcessor = diffusers' attention when the context is one token (softmax over one key is
    1: float noise only from to_out's row count), without calling to_q/to_k; any other call is the
    processor it replaced, bit for bit."""
    from diffusers.models.attention_processor import Attention

    from vidseg_nb.probe import OneKeyAttnProcessor

    torch.manual_seed(0)
    attn = Attention(query_dim=32, cross_attention_dim=16, heads=2, dim_head=16).eval()
    calls = []
    for proj in (attn.to_q, attn.to_k):
        proj.register_forward_hook(lambda *a: calls.append(1))
    hs = torch.randn(3, 10, 32)
    with torch.no_grad():
        ctx1 = torch.randn(3, 1, 16)
        ref1 = attn(hs, encoder_hidden_states=ctx1)
        ctx5 = torch.randn(3, 5, 16)
        ref5 = attn(hs, encoder_hidden_states=ctx5)
        calls.clear()
        attn.set_processor(OneKeyAttnProcessor(attn.processor))
        got1 = attn(hs, encoder_hidden_states=ctx1)
        assert calls == []  # no q/k projection
        torch.testing.assert_close(got1, ref1, rtol=1e-6, atol=1e-6)
        assert got1.shape == ref1.shape and not torch.equal(got1[0, 0], got1[1, 0])  # per sample
        got5 = attn(hs, encoder_hidden_states=ctx5)
        assert torch.equal(got5, ref5) and calls == [1, 1]


# ------------------------------------------------------------------------ kept q/k on a lambda change
def _segment(seg, frames, cfg):
    c0 = seg.backbone.counters.snapshot()
    res = seg.segment(frames, cfg, keep=None, progress=False)
    return res, seg.backbone.counters.since(c0)


def _modulated_samples(res, cfg) -> int:
    """2 (n - t_m) x 2L UNet samples per frame: the modulated runs only (SD)."""
    steps = cfg.n_steps - cfg.t_m
    return sum(2 * steps * 2 * len(np.unique(m)) for m in res.coarse_after if len(np.unique(m)) > 1)


def test_lambda_change_with_kept_qk_runs_no_reference_sample(tiny):
    frames = make_clip(n_frames=4, height=64, width=64, n_objects=2, seed=3).frames
    cfg = SegConfig(n_clusters=3, kmeans_n_init=2, batch_size=2, keep_qk_budget_gb=1.0)
    seg = VideoSegmenter(tiny, cfg)
    _segment(seg, frames, cfg)
    assert len(seg.qk_cache) == 2 and seg.qk_cache.counters.fallbacks == 0
    new = cfg.replace(lam=20.0)
    res, work = _segment(seg, frames, new)
    assert "stage 3" in res.computed and seg.qk_cache.counters.hits == 2
    assert work["unet_samples"] == _modulated_samples(res, new) > 0  # zero reference-run samples
    assert work["vae_encodes"] == 0
    fresh, _ = _segment(VideoSegmenter(tiny, new.replace(keep_qk=False)), frames, new.replace(keep_qk=False))
    np.testing.assert_array_equal(res.labels, fresh.labels)


def test_kept_qk_over_budget_falls_back_and_counts(tiny):
    frames = make_clip(n_frames=2, height=64, width=64, n_objects=2, seed=3).frames
    cfg = SegConfig(n_clusters=3, kmeans_n_init=2, batch_size=2, keep_qk_budget_gb=1e-9)
    seg = VideoSegmenter(tiny, cfg)
    _segment(seg, frames, cfg)
    assert len(seg.qk_cache) == 0 and seg.qk_cache.counters.fallbacks == 1
    new = cfg.replace(lam=20.0)
    res, work = _segment(seg, frames, new)
    assert seg.qk_cache.counters.misses == 2 and seg.qk_cache.counters.hits == 0
    ref_samples = 2 * (new.n_steps - new.t_m) * len(frames)
    assert work["unet_samples"] == ref_samples + _modulated_samples(res, new)
    # the CPU default (no budget given) and keep_qk=False keep nothing and count no fallback
    for off in (dict(keep_qk_budget_gb=None), dict(keep_qk=False)):
        seg = VideoSegmenter(tiny, cfg.replace(**off))
        _segment(seg, frames, seg.config)
        assert len(seg.qk_cache) == 0 and seg.qk_cache.counters.fallbacks == 0


def test_reuse_switches_are_validated():
    with pytest.raises(ConfigError, match="keep_qk_budget_gb"):
        SegConfig(keep_qk_budget_gb=-1.0)


# ------------------------------------------------------------------------ the GPU benchmark, CPU-safe parts
def _bench_gpu():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = mod  # its dataclasses resolve their module
    spec.loader.exec_module(mod)
    return mod


def test_gpu_bench_arguments_and_table_without_gpu(tmp_path):
    bg = _bench_gpu()
    args = bg.parse_args(["--sizes", "512x512,832x448", "--compile", "--out", str(tmp_path / "p.md")])
    assert args.sizes == [(512, 512), (832, 448)] and args.labels == 10
    with pytest.raises(SystemExit):
        bg.parse_args(["--sizes", "500x512"])
    rows = bg.planned_rows(args)
    assert [r.variant for r in rows if r.model == "SD 2.1"] == list(bg.VARIANTS[:-1]) * 2 + ["compile"] * 2
    assert {r.model for r in rows} == {"SD 2.1", "SVD"}
    doc = tmp_path / "p.md"
    doc.write_text("# Perf\n\nbefore\n")
    assert bg.main(["--dry-run", "--out", str(doc)]) == 0
    text = doc.read_text()
    table = text[text.index(bg.START) : text.index(bg.END)]
    body = [ln for ln in table.splitlines() if ln.startswith("| SD") or ln.startswith("| SVD")]
    assert len(body) == len(bg.planned_rows(bg.parse_args([])))
    assert all(ln.count(bg.NOT_MEASURED) == len(bg.STAGES) + 5 for ln in body)
    assert text.startswith("# Perf\n\nbefore\n")
    bg.main(["--dry-run", "--out", str(doc)])  # rewriting replaces the block, no second copy
    assert doc.read_text().count(bg.START) == 1
    # a measured row: frames/s = 1 / sum of the stage seconds, MFU = TFLOP/frame x fps / peak
    r = bg.Row("SD 2.1", "base", (512, 512), seconds=dict.fromkeys(bg.STAGES, 0.25), tflop_per_frame=100.0)
    assert r.fps == pytest.approx(1.0) and r.mfu(400.0) == pytest.approx(0.25)
    assert "25.0%" in bg.render([r], "NVIDIA H200", 400.0, [])
