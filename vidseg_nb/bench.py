"""Cost and speed of the pipeline (``vidseg bench``; results go to docs/perf.md by hand, with the machine).

Three kinds of numbers, never mixed up:

- work per frame (machine independent): UNet samples, VAE encodes and decodes, counted by the backbone
  while the real pipeline runs on a synthetic clip with the tiny model;
- TFLOP per frame at the real SD 2.1 size: torch's FlopCounterMode over the real ``Backbone.unet_eps``,
  ``encode`` and ``decode`` of a full-size SD 2.1 built on the ``meta`` device (no weights, no memory),
  times the counted work;
- seconds: wall time of the tiny model on this machine, or of the full-size random-weight model on a GPU
  (``--full``), next to the paper's 0.41 frames/s on one A100.

The same three for the Stable Video Diffusion backbone (``vidseg_nb.svd``, the paper's "Ours (SVD)": t_m =
17, B = 14, L labels per batch): FLOPs of the real ``stable-video-diffusion-img2vid`` UNet (per frame through
the UNet, counted on a 14-frame clip), temporal VAE decoder (per frame, 14 decoded together), VAE encoder and
CLIP ViT-H/14 image encoder, at 512 x 512 and at SVD's native 576 x 1024; next to the paper's 0.12 frames/s
and 39 GB on one A100.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from typing import Any

import numpy as np
import torch

from .backbone import build_random_sd21
from .config import SegConfig
from .loading import load_backbone

PAPER_FPS_A100 = 0.41
PAPER_FPS_A100_SVD = 0.12
PAPER_GB_A100_SVD = 39
SVD_SIZES = ((512, 512), (576, 1024))


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU {platform.machine()} x{os.cpu_count()} ({platform.processor() or 'unknown'}), torch {torch.__version__}"


@torch.no_grad()
def flops_per_call(size: int = 512) -> dict[str, float]:
    """FLOPs of one UNet sample, one VAE encode and one VAE decode of SD 2.1 at ``size`` x ``size`` (meta)."""
    from torch.utils.flop_counter import FlopCounterMode

    bb = build_random_sd21("meta")
    lat = size // 8
    out = {}
    x = torch.empty(1, 4, lat, lat, device="meta")
    with FlopCounterMode(display=False) as fc:
        bb.unet_eps(x, 22, 5.0)  # one CFG pair = 2 samples
    out["unet_sample"] = fc.get_total_flops() / 2
    from .probe import Probe, RecordQuery, StopForward

    with FlopCounterMode(display=False) as fc, Probe(bb.unet, RecordQuery(24, stop_after=True)) as p:
        try:
            bb.unet_eps(x, 24, 5.0, listener=p)
        except StopForward:
            pass
    out["unet_partial_sample"] = fc.get_total_flops() / 2  # forward stopped after block 8 (features only)
    img = torch.empty(1, size, size, 3, dtype=torch.uint8, device="meta")
    with FlopCounterMode(display=False) as fc:
        bb.encode(img)
    out["vae_encode"] = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        bb.decode(x)
    out["vae_decode"] = fc.get_total_flops()
    return out


@torch.no_grad()
def flops_per_call_svd(height: int = 576, width: int = 1024, frames: int = 14) -> dict[str, float]:
    """FLOPs of SVD (img2vid) at ``height`` x ``width`` (meta device): one frame through the UNet (full and
    stopped after block 8), one VAE encode, one temporal-decoder frame (of ``frames`` decoded together),
    one CLIP image encode (224 x 224)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .probe import Probe, RecordQuery, StopForward
    from .svd import SVDCondition, build_random_svd

    bb = build_random_svd("meta")
    lh, lw = height // 8, width // 8
    meta = dict(device="meta")
    cond = SVDCondition(
        torch.empty(1, 1, 1024, **meta), torch.empty(1, 4, lh, lw, **meta), torch.empty(1, 3, **meta)
    )
    x = torch.empty(1, frames, 4, lh, lw, **meta)
    out = {}
    with FlopCounterMode(display=False) as fc:
        bb.unet_eps(x, 17, 2.5, cond=cond)  # one clip with CFG = 2 x frames samples
    out["unet_sample"] = fc.get_total_flops() / (2 * frames)
    with (
        FlopCounterMode(display=False) as fc,
        Probe(bb.unet, RecordQuery(24, stop_after=True), layout=bb.layout) as p,
    ):
        try:
            bb.unet_eps(x, 24, 2.5, listener=p, cond=cond)
        except StopForward:
            pass
    out["unet_partial_sample"] = fc.get_total_flops() / (2 * frames)
    with FlopCounterMode(display=False) as fc:
        bb.encode(torch.empty(1, height, width, 3, dtype=torch.uint8, **meta))
    out["vae_encode"] = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        bb.decode(x[0])
    out["vae_decode"] = fc.get_total_flops() / frames
    with FlopCounterMode(display=False) as fc:
        bb.image_encoder(pixel_values=torch.empty(1, 3, 224, 224, **meta))
    out["image_encode"] = fc.get_total_flops()
    return out


# ---------------------------------------------------------------------------------- stage-3 reuse (issue 12)
REUSE_OFF = dict(
    reuse_prefix=False, skip_qk_projections=False, shared_attention=False, one_key_attention=False
)
REUSE_ON = dict(
    reuse_prefix=True,
    skip_qk_projections=True,
    shared_attention=True,
    shared_attention_cpu=True,
    one_key_attention=True,
)


@torch.no_grad()
def stage3_unet_flops(
    bb: Any, x: torch.Tensor, config: SegConfig, n_labels: int, cond: Any = None, *, detail: bool = False
) -> dict[str, Any]:
    """UNet FLOPs of one group's reference run and its 2L modulated runs (all in one UNet call per step),
    through the real hooks of ``reference_run``/``modulate`` with the reuse switches of ``config``.

    ``x`` (1, G, 4, h, w) is the group's start latent (any device, ``meta`` included). The reference run
    records q/k at every step t_m..n-1 (and the prefix at t_m with ``config.reuse_prefix``); the modulated
    batch is 2L runs of that group with the modulation added at t_m. Returns FLOPs per frame (a group is
    G frames): ``reference``, ``modulated``, ``modulated_at_t_m``, ``unet`` (their sum); with ``detail``
    also ``modules`` / ``reference_modules``: FlopCounterMode's per-module counts of each modulated /
    reference step's call (whole group).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from .features import Reference
    from .modulation import reuse_hooks
    from .probe import AddToOutput, OneKeyAttention, Probe, RecordOutputs, RecordQK

    g = x.shape[1]
    steps = range(config.t_m, config.n_steps)
    qk = RecordQK()
    prefix = RecordOutputs(config.t_m, n_groups=1) if config.reuse_prefix else None
    ref_flops, ref_modules = 0, []
    one_key = [OneKeyAttention()] if config.one_key_attention else []
    with Probe(bb.unet, *one_key, qk, *([prefix] if prefix else []), layout=bb.layout) as p:
        for i in steps:
            with FlopCounterMode(display=False) as fc:
                bb.unet_eps(x, i, config.guidance_scale, listener=p, cond=cond)
            ref_flops += fc.get_total_flops()
            ref_modules.append(fc.get_flop_counts())
    ref = Reference(z0=x[0], x_start=x[0], features=None, qk=qk.qk, condition=cond, prefix=prefix)  # type: ignore[arg-type]
    r = 2 * n_labels
    gidx = torch.zeros(r, dtype=torch.long)
    mod = torch.zeros(r * g, (x.shape[-2] // 2) * (x.shape[-1] // 2), 1, device=x.device)
    xs = x.repeat(r, 1, 1, 1, 1)
    per_step, modules = [], []
    hooks = (AddToOutput(config.t_m, mod), *reuse_hooks(bb, ref, config, gidx))
    with Probe(bb.unet, *hooks, layout=bb.layout) as p:
        for i in steps:
            with FlopCounterMode(display=False) as fc:
                bb.unet_eps(xs, i, config.guidance_scale, listener=p, cond=cond)
            per_step.append(fc.get_total_flops())
            modules.append(fc.get_flop_counts())
    out: dict[str, Any] = dict(
        reference=ref_flops / g, modulated=sum(per_step) / g, modulated_at_t_m=per_step[0] / g
    )
    out["unet"] = out["reference"] + out["modulated"]
    if detail:
        out["modules"], out["reference_modules"] = modules, ref_modules
    return out


def reuse_flops(size: int = 512, n_labels: int = 10, svd: bool = False, frames: int = 14) -> dict[str, Any]:
    """UNet TFLOP per frame of the full method at ``size`` px with L = ``n_labels``, before (no reuse) and
    after (prefix replay + no q/k projections + shared softmax(QK^T)), full-size SD 2.1 or SVD on ``meta``."""
    from .config import preset

    lat = size // 8
    if svd:
        from .svd import SVDCondition, build_random_svd

        bb = build_random_svd("meta")
        meta = dict(device="meta")
        cond = SVDCondition(
            torch.empty(1, 1, 1024, **meta), torch.empty(1, 4, lat, lat, **meta), torch.empty(1, 3, **meta)
        )
        x = torch.empty(1, frames, 4, lat, lat, **meta)
        base = preset("svd")
    else:
        bb, cond, base = build_random_sd21("meta"), None, SegConfig()
        x = torch.empty(1, 1, 4, lat, lat, device="meta")
    res: dict[str, Any] = {"size": size, "labels": n_labels, "model": "svd" if svd else "sd21"}
    for name, over in (("before", REUSE_OFF), ("after", REUSE_ON)):
        f = stage3_unet_flops(bb, x, base.replace(**over), n_labels, cond)
        res[name] = {k: v / 1e12 for k, v in f.items() if not k.endswith("modules")}
    res["drop"] = 1 - res["after"]["unet"] / res["before"]["unet"]
    return res


def work_formula(n_labels: int, t_m: int = 22, n_steps: int = 25) -> dict[str, int]:
    """Work per frame of the full method: (n - t_m) x 2 x (1 + 2L) UNet samples, 1 encode, 2L decodes."""
    return {
        "unet_samples": (n_steps - t_m) * 2 * (1 + 2 * n_labels),
        "vae_encodes": 1,
        "vae_decodes": 2 * n_labels,
    }


def feature_work_formula(t_m: int = 22, n_steps: int = 25) -> dict[str, int]:
    """Work per frame of feature extraction alone: full samples up to the last step, which stops at block 8."""
    return {
        "unet_samples": (n_steps - t_m - 1) * 2,
        "unet_partial_samples": 2,
        "vae_encodes": 1,
        "vae_decodes": 0,
    }


def tflop_per_frame(work: dict[str, float], per_call: dict[str, float]) -> float:
    return (
        work.get("unet_partial_samples", 0) * per_call["unet_partial_sample"]
        + work["unet_samples"] * per_call["unet_sample"]
        + work["vae_encodes"] * per_call["vae_encode"]
        + work["vae_decodes"] * per_call["vae_decode"]
        + work.get("image_encodes", 0) * per_call.get("image_encode", 0)
    ) / 1e12


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_tiny(
    n_frames: int = 8, size: int = 256, n_clusters: int = 4, mode: str = "full", model: str = "tiny"
) -> dict[str, Any]:
    """The real pipeline with the tiny model (``tiny``, or ``tiny-svd`` with the ``svd`` preset) on a
    synthetic clip: counted work, seconds per frame."""
    from .config import preset
    from .pipeline import VideoSegmenter
    from .synthetic import make_clip

    clip = make_clip(n_frames=n_frames, height=size, width=size, n_objects=3, seed=0)
    bb = load_backbone(model, device="cpu")
    cfg = preset(bb.default_preset, n_clusters=n_clusters, max_side=size)
    seg = VideoSegmenter(bb, cfg, cache_frames=0)
    t0 = time.perf_counter()
    res = seg.segment(clip.frames, mode=mode, keep=None, progress=False)
    dt = time.perf_counter() - t0
    labels_per_frame = float(np.mean([len(np.unique(m)) for m in res.coarse_after]))
    from .metrics import apply_label_map, assign_labels, confusion_matrix, mean_iou

    mapping = assign_labels(res.coarse_after[0], clip.labels[0])  # first-frame label assignment (SPEC 8)
    pred = apply_label_map(res.labels.astype(np.int64), mapping, default=clip.n_labels)  # unassigned: wrong
    planted_miou = mean_iou(confusion_matrix(clip.labels, pred, clip.n_labels + 1))
    return dict(
        model=model,
        frames=len(res),
        size=size,
        mode=mode,
        labels_per_frame=labels_per_frame,
        planted_miou=planted_miou,
        seconds_per_frame=dt / len(res),
        timings=res.timings,
        work_per_frame=res.work_per_frame(),
        peak_rss_mb=peak_rss_mb(),
    )


@torch.no_grad()
def _time_stages_0_and_3(
    bb: Any, cfg: SegConfig, n_frames: int, size: int, n_labels: int, warm_frames: int
) -> dict[str, Any]:
    """Reference run + masked modulation of one batch of random frames with planted coarse maps (L vertical
    stripes per frame: random weights give no meaningful clusters), after a warm-up; frames per second."""
    from .features import reference_run
    from .modulation import final_labels, modulate

    device = str(bb.device)
    frames = np.random.default_rng(0).integers(0, 255, (n_frames, size, size, 3), dtype=np.uint8)
    g = size // 16
    stripe = np.minimum(np.arange(g) * n_labels // g, n_labels - 1)
    coarse = np.broadcast_to(stripe[None, None, :], (n_frames, g, g)).copy()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    ref = reference_run(bb, frames[:warm_frames], cfg, record_qk=True, progress=False)  # warm-up
    modulate(bb, ref, coarse[:warm_frames, :, : 2 * g // n_labels], cfg, progress=False)
    del ref
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    c0 = bb.counters.snapshot()
    t0 = time.perf_counter()
    ref = reference_run(bb, frames, cfg, record_qk=True, progress=False)
    mo = modulate(bb, ref, coarse, cfg, progress=False)
    _ = [final_labels(d, m, cfg.s) for d, m in zip(mo.frames, coarse)]
    sync()
    dt = time.perf_counter() - t0
    out = dict(
        device=machine(),
        model=bb.source,
        frames=n_frames,
        size=size,
        labels=n_labels,
        seconds=dt,
        frames_per_second=n_frames / dt,
        work_per_frame={k: v / n_frames for k, v in bb.counters.since(c0).items()},
        unet_dtype=str(bb.dtype),
        qk_store_gb=ref.qk.nbytes() / 2**30,
    )
    if device.startswith("cuda"):
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def run_full_size(
    device: str = "cuda", n_frames: int = 14, size: int = 512, n_labels: int = 10, chunk: int | None = None
) -> dict[str, Any]:
    """Full-size random-weight SD 2.1 at the paper's settings (B = 14, t_m = 22, L labels per frame):
    stages 0 and 3 through the real code, frames per second of the whole batch."""
    bb = load_backbone("random-sd21", device=device)
    return _time_stages_0_and_3(bb, SegConfig(max_side=size, chunk_size=chunk), n_frames, size, n_labels, 1)


def run_full_size_svd(
    device: str = "cuda",
    n_frames: int = 14,
    size: int = 512,
    n_labels: int = 10,
    chunk: int | None = None,
    model: str = "random-svd",
) -> dict[str, Any]:
    """Full-size random-weight SVD at the paper's settings (B = 14 frames jointly, t_m = 17, L labels)."""
    from .config import preset

    bb = load_backbone(model, device=device)
    cfg = preset("svd", max_side=size, chunk_size=chunk, batch_size=n_frames)
    return _time_stages_0_and_3(bb, cfg, n_frames, size, n_labels, 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidseg bench", description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=256, help="tiny-model clip size (pixels)")
    p.add_argument("--labels", type=int, default=10, help="L for the TFLOP figure")
    p.add_argument(
        "--full", action="store_true", help="also time full-size SD 2.1 (random weights) on --device"
    )
    p.add_argument(
        "--full-svd", action="store_true", help="also time full-size SVD (random weights) on --device"
    )
    p.add_argument("--no-svd", action="store_true", help="leave out the SVD figures")
    p.add_argument(
        "--no-reuse", action="store_true", help="leave out the stage-3 reuse FLOP counts (before/after)"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--chunk", type=int, default=None, help="runs per UNet call in stage 3 (full size)")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)

    res: dict[str, Any] = {"machine": machine()}
    per_call = {s: flops_per_call(s) for s in (512, 256)}
    res["flops_per_call"] = per_call
    formula = work_formula(args.labels)
    res["tflop_per_frame_sd21_512_L%d" % args.labels] = tflop_per_frame(formula, per_call[512])
    res["tflop_per_frame_features_only_512"] = tflop_per_frame(feature_work_formula(), per_call[512])
    res["tflop_per_frame_features_no_early_stop_512"] = tflop_per_frame(
        {**feature_work_formula(), "unet_samples": 6, "unet_partial_samples": 0}, per_call[512]
    )
    if not args.no_reuse:  # UNet TFLOP per frame without / with the stage-3 reuse (issue 12)
        res["reuse_sd21_512"] = reuse_flops(512, args.labels)
        if not args.no_svd:
            res["reuse_svd_512"] = reuse_flops(512, args.labels, svd=True)
    res["tiny_full"] = run_tiny(args.frames, args.size)
    res["tiny_preview"] = run_tiny(args.frames, args.size, mode="preview")
    if args.full:
        res["full_size"] = run_full_size(args.device, chunk=args.chunk)
    if not args.no_svd:
        from .svd import work_formula as svd_work_formula

        res["svd_flops_per_call"] = {f"{h}x{w}": flops_per_call_svd(h, w) for h, w in SVD_SIZES}
        res["svd_work_formula_L%d" % args.labels] = svd_work_formula(args.labels)
        for h, w in SVD_SIZES:
            res[f"tflop_per_frame_svd_{h}x{w}_L{args.labels}"] = tflop_per_frame(
                svd_work_formula(args.labels), res["svd_flops_per_call"][f"{h}x{w}"]
            )
        res["tiny_svd_full"] = run_tiny(args.frames, args.size, model="tiny-svd")
    if args.full_svd:
        res["full_size_svd"] = run_full_size_svd(args.device, chunk=args.chunk)

    print(f"# vidseg bench — {res['machine']}\n")
    print("| quantity | value |\n|---|---|")
    for s in (512, 256):
        pc = per_call[s]
        print(
            f"| SD 2.1 at {s}px: TFLOP per UNet sample / VAE encode / VAE decode | "
            f"{pc['unet_sample'] / 1e12:.3f} / {pc['vae_encode'] / 1e12:.3f} / {pc['vae_decode'] / 1e12:.3f} |"
        )
    print(
        f"| work per frame, formula (L = {args.labels}, t_m = 22) | {formula['unet_samples']} UNet samples, "
        f"{formula['vae_encodes']} encode, {formula['vae_decodes']} decodes |"
    )
    print(
        f"| SD 2.1 at 512px: TFLOP per UNet sample stopped after block 8 (features only) | "
        f"{per_call[512]['unet_partial_sample'] / 1e12:.3f} |"
    )
    print(
        f"| TFLOP per frame, feature extraction only (t_m = 22), with / without the block-8 stop | "
        f"{res['tflop_per_frame_features_only_512']:.2f} / {res['tflop_per_frame_features_no_early_stop_512']:.2f} |"
    )
    print(
        f"| TFLOP per frame, SD 2.1 512px, L = {args.labels} | {res['tflop_per_frame_sd21_512_L%d' % args.labels]:.1f} |"
    )
    for key in ("reuse_sd21_512", "reuse_svd_512"):
        if key in res:
            r = res[key]
            print(
                f"| UNet TFLOP per frame, {r['model']} 512px, L = {r['labels']}: no reuse / prefix replay + "
                f"no q/k projections + shared softmax(QK^T) | {r['before']['unet']:.1f} / "
                f"{r['after']['unet']:.1f} (-{100 * r['drop']:.1f}%) |"
            )
    for key in ("tiny_full", "tiny_preview"):
        t = res[key]
        w = t["work_per_frame"]
        print(
            f"| tiny model, {t['mode']}, {t['frames']} frames {t['size']}px, L = {t['labels_per_frame']:.1f}: "
            f"UNet samples / partial / encodes / decodes per frame | {w['unet_samples']:.1f} / "
            f"{w['unet_partial_samples']:.1f} / {w['vae_encodes']:.1f} / {w['vae_decodes']:.1f} |"
        )
        print(f"| tiny model, {t['mode']}: CPU seconds per frame | {t['seconds_per_frame']:.2f} |")
        print(
            f"| tiny model, {t['mode']}: planted-segment mIoU (smoke figure, random weights) | {t['planted_miou']:.3f} |"
        )
    if "svd_flops_per_call" in res:
        for key, pc in res["svd_flops_per_call"].items():
            print(
                f"| SVD at {key}px: TFLOP per frame through the UNet (full / stopped after block 8) / "
                f"VAE encode / temporal decode per frame / CLIP image encode | {pc['unet_sample'] / 1e12:.3f} / "
                f"{pc['unet_partial_sample'] / 1e12:.3f} / {pc['vae_encode'] / 1e12:.3f} / "
                f"{pc['vae_decode'] / 1e12:.3f} / {pc['image_encode'] / 1e12:.3f} |"
            )
        fs = res["svd_work_formula_L%d" % args.labels]
        print(
            f"| SVD work per frame, formula (L = {args.labels} labels per batch, t_m = 17, B = 14) | "
            f"{fs['unet_samples']} UNet samples, {fs['vae_encodes']:.2f} encodes, {fs['vae_decodes']} "
            f"decodes, {fs['image_encodes']:.3f} CLIP encodes |"
        )
        for h, w in SVD_SIZES:
            print(
                f"| TFLOP per frame, SVD {h}x{w}px, L = {args.labels} | "
                f"{res[f'tflop_per_frame_svd_{h}x{w}_L{args.labels}']:.1f} (paper: {PAPER_FPS_A100_SVD} "
                f"frames/s, {PAPER_GB_A100_SVD} GB on A100) |"
            )
        t = res["tiny_svd_full"]
        w = t["work_per_frame"]
        print(
            f"| tiny SVD, full, {t['frames']} frames {t['size']}px, L = {t['labels_per_frame']:.1f} per frame: "
            f"UNet samples / encodes / decodes / CLIP encodes per frame | {w['unet_samples']:.1f} / "
            f"{w['vae_encodes']:.2f} / {w['vae_decodes']:.1f} / {w.get('image_encodes', 0):.3f} |"
        )
        print(f"| tiny SVD, full: CPU seconds per frame | {t['seconds_per_frame']:.2f} |")
    if "full_size_svd" in res:
        f = res["full_size_svd"]
        print(
            f"| full-size SVD (random weights), {f['size']}px, B = {f['frames']}, L = {f['labels']}, "
            f"{f['device']} | {f['frames_per_second']:.3f} frames/s (paper: {PAPER_FPS_A100_SVD} on A100) |"
        )
        if "peak_gpu_gb" in f:
            print(f"| SVD peak GPU memory | {f['peak_gpu_gb']:.1f} GiB (paper: {PAPER_GB_A100_SVD} GB) |")
    print(f"| peak RSS (MB) | {peak_rss_mb():.0f} |")
    if "full_size" in res:
        f = res["full_size"]
        print(
            f"| full-size SD 2.1 (random weights), {f['size']}px, B = {f['frames']}, L = {f['labels']}, "
            f"{f['device']} | {f['frames_per_second']:.2f} frames/s (paper: {PAPER_FPS_A100} on A100) |"
        )
        if "peak_gpu_gb" in f:
            print(f"| peak GPU memory | {f['peak_gpu_gb']:.1f} GiB |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
