"""Stage 3, masked modulation (paper 3.2 and 4.3, SPEC section 7).

For every frame and every label l of its refined coarse map M~ (mask M_l on the feature grid), two
modulated runs (sign +1 and -1) start from the reference run's start latent:

- at step t_m only, +/- lambda * M_l is added to block 7's cross-attention output (both CFG halves);
- at every step >= t_m the q/k of ``attn1``/``attn2`` in ``up_blocks[1..3]`` are the reference run's;
- latent blending after every step t_m..t_f: x <- x_mod * M + x_ref_i * (1 - M) (M_l nearest-upsampled);
- I+ and I- are decoded (VAE fp32); D_l = blur(sum_RGB (I+ - I-)^2) / max (float, full resolution).

Filtering D~_l = D_l * M + s * D_l * (1 - M) (M bilinear-upsampled) and Y = argmax_l D~_l give the labels.
All (frame, label, sign) runs of a batch go through the UNet together, ``chunk`` runs per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .backbone import Backbone
from .config import SegConfig
from .features import Reference
from .probe import Probe


@dataclass
class FrameDiff:
    """Difference maps of one frame: ``labels`` (L,) ids and D_l ``raw`` (L, H, W) in [0, 1] (float32;
    float16 only with ``SegConfig.diff_fp16``)."""

    labels: np.ndarray
    raw: np.ndarray
    plus: np.ndarray | None = None  # (L, H, W, 3) uint8, I+ (kept frames only)
    minus: np.ndarray | None = None  # (L, H, W, 3) uint8, I-


@dataclass
class ModulationOutput:
    frames: list[FrameDiff]
    final_latents: torch.Tensor | None = None  # (R, 4, h8, w8) in run order, when asked
    runs: list[tuple[int, int, int]] = field(default_factory=list)  # (frame, label, sign) per run


def plan_runs(coarse: np.ndarray) -> list[tuple[int, int, int]]:
    """(frame, label, sign) of every modulated run for coarse maps (N, h, w): +1 then -1 per label.

    A frame whose map holds a single label needs no modulation (its argmax is that label) and gets none.
    """
    runs = []
    for f, m in enumerate(coarse):
        labs = np.unique(m)
        if len(labs) < 2:
            continue
        for lab in labs:
            runs += [(f, int(lab), +1), (f, int(lab), -1)]
    return runs


def default_chunk(backbone: Backbone) -> int:
    """Runs per UNet call (each run is 2 UNet samples with CFG): from free GPU memory, 8 on CPU."""
    if backbone.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(backbone.device)
        return int(max(2, min(64, free / 2**30)) // 2 * 2)
    return 8


def gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, size: int = 5, sigma: float = 3.0) -> torch.Tensor:
    """Separable Gaussian blur of (N, H, W) maps, reflect padding (as torchvision's ``gaussian_blur``)."""
    if size == 1:
        return x
    k = gaussian_kernel1d(size, sigma).to(x.device, x.dtype)
    p = size // 2
    y = x[:, None]
    y = F.conv2d(F.pad(y, (p, p, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, p, p), mode="reflect"), k.view(1, 1, -1, 1))
    return y[:, 0]


def difference_map(
    plus: torch.Tensor, minus: torch.Tensor, size: int = 5, sigma: float = 3.0
) -> torch.Tensor:
    """D_l = blur(sum_RGB (I+ - I-)^2) / max per map, for images (N, 3, H, W) in float; (N, H, W)."""
    d = ((plus.float() - minus.float()) ** 2).sum(1)
    d = gaussian_blur(d, size, sigma)
    return d / d.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]


def upsample_masks(
    masks: np.ndarray | torch.Tensor, size: tuple[int, int], mode: str = "bilinear"
) -> torch.Tensor:
    """Binary masks (L, h, w) -> (L, H, W) float: ``bilinear`` for filtering, ``nearest`` for blending."""
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks).float()[:, None]
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(m, size=size, mode=mode, **kw)[:, 0]


def filter_maps(raw: np.ndarray, labels: np.ndarray, coarse: np.ndarray, s: float) -> np.ndarray:
    """D~_l = D_l * M + s * D_l * (1 - M), M = bilinear-upsampled mask of label l of ``coarse`` (h, w)."""
    masks = (np.asarray(coarse)[None] == np.asarray(labels)[:, None, None]).astype(np.float32)
    m = upsample_masks(masks, raw.shape[-2:]).numpy()
    raw = raw.astype(np.float32, copy=False)
    return raw * m + s * raw * (1 - m)


def argmax_labels(filtered: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Y = argmax_l D~_l mapped back to label ids: (L, H, W) -> (H, W) int64."""
    return np.asarray(labels, dtype=np.int64)[np.asarray(filtered).argmax(0)]


def final_labels(diff: FrameDiff, coarse: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Filtered maps D~ (L, H, W) and the label map Y (H, W) of one frame; single-label frames are constant."""
    if len(diff.labels) == 1:
        shape = diff.raw.shape[-2:]
        return np.ones((1, *shape), np.float32), np.full(shape, diff.labels[0], np.int64)
    filt = filter_maps(diff.raw, diff.labels, coarse, s)
    return filt, argmax_labels(filt, diff.labels)


@torch.no_grad()
def modulate(
    backbone: Backbone,
    ref: Reference,
    coarse: np.ndarray,
    config: SegConfig,
    *,
    chunk: int | None = None,
    keep_images: set[int] | None = None,
    return_latents: bool = False,
    progress: bool = True,
) -> ModulationOutput:
    """Masked-modulation runs for every (frame, label, sign) of a batch and their difference maps D_l.

    ``ref`` is the batch's reference run with q/k recorded; ``coarse`` its refined maps M~ (N, h, w).
    ``chunk`` runs (2 UNet samples each) share one UNet call per step. I+/I- are kept for ``keep_images``.
    A backbone that denoises the frames of a batch jointly (SVD, ``joint_frames``) runs
    :func:`vidseg_nb.svd.modulate` instead: one run per (label, sign) for the whole batch.
    """
    if getattr(backbone, "joint_frames", False):
        from .svd import modulate as svd_modulate

        return svd_modulate(
            backbone,
            ref,
            coarse,
            config,
            chunk=chunk,
            keep_images=keep_images,
            return_latents=return_latents,
            progress=progress,
        )
    if ref.qk is None:
        raise ValueError("modulate needs a reference run with record_qk=True")
    coarse = np.asarray(coarse)
    n, h, w = coarse.shape
    runs = plan_runs(coarse)
    chunk = chunk or config.chunk_size or default_chunk(backbone)
    chunk = max(2, chunk - chunk % 2)  # keep the +/- pair of a label in one chunk
    keep_images = keep_images or set()
    lat_h, lat_w = ref.x_start.shape[-2:]
    last_blend = config.last_blend_step
    dev = backbone.device
    diffs: dict[tuple[int, int], torch.Tensor] = {}
    images: dict[tuple[int, int, int], np.ndarray] = {}
    finals = []
    for a in tqdm(range(0, len(runs), chunk), desc="modulation", disable=not progress, leave=False):
        part = runs[a : a + chunk]
        fidx = torch.tensor([r[0] for r in part])
        masks = torch.from_numpy(np.stack([coarse[f] == lab for f, lab, _ in part]).astype(np.float32))
        sign = torch.tensor([float(sg) for _, _, sg in part])
        mod = (sign[:, None, None] * config.lam * masks).reshape(len(part), h * w, 1)
        m_lat = upsample_masks(masks, (lat_h, lat_w), mode="nearest")[:, None].to(dev)
        probe = Probe(
            backbone.unet, layout=getattr(backbone, "layout", None), mod_step=config.t_m, inject_qk=ref.qk
        )
        probe.modulation = mod.to(dev)
        probe.inject_index = fidx.to(dev)

        def blend(
            i: int, x: torch.Tensor, fidx: torch.Tensor = fidx, m_lat: torch.Tensor = m_lat
        ) -> torch.Tensor | None:
            if not config.masked_modulation or i > last_blend:
                return None
            return x * m_lat + ref.latents[i][fidx].to(x.device) * (1 - m_lat)

        with probe:
            x = backbone.sample(
                ref.x_start[fidx], config.t_m, config.guidance_scale, listener=probe, callback=blend
            )
        if return_latents:
            finals.append(x.cpu())
        img = backbone.decode(x)
        for j in range(0, len(part), 2):
            f, lab, _ = part[j]
            diffs[(f, lab)] = difference_map(
                img[j : j + 1], img[j + 1 : j + 2], config.blur_kernel, config.blur_sigma
            )[0].cpu()
            if f in keep_images:
                for k, sg in ((j, 1), (j + 1, -1)):
                    images[(f, lab, sg)] = (
                        (img[k].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
                    )
    H, W = lat_h * backbone.vae_scale, lat_w * backbone.vae_scale
    out = []
    for f in range(n):
        labs = np.unique(coarse[f])
        if len(labs) < 2:
            out.append(FrameDiff(labels=labs.astype(np.int64), raw=np.ones((1, H, W), np.float32)))
            continue
        raw = torch.stack([diffs[(f, int(lab))] for lab in labs])
        raw = (raw.half() if config.diff_fp16 else raw.float()).numpy()  # SPEC 7: float (fp16 opt-in)
        fd = FrameDiff(labels=labs.astype(np.int64), raw=raw)
        if f in keep_images:
            fd.plus = np.stack([images[(f, int(lab), 1)] for lab in labs])
            fd.minus = np.stack([images[(f, int(lab), -1)] for lab in labs])
        out.append(fd)
    return ModulationOutput(frames=out, final_latents=torch.cat(finals) if finals else None, runs=runs)
