"""Stage 3, masked modulation (paper 3.2 and 4.3, SPEC section 7).

For every frame and every label l of its refined coarse map M~ (mask M_l on the feature grid), two
modulated runs (sign +1 and -1) start from the reference run's start latent:

- at step t_m only, +/- lambda * M_l is added to block 7's cross-attention output (both CFG halves);
- at every step >= t_m the q/k of ``attn1``/``attn2`` in ``up_blocks[1..3]`` are the reference run's;
- latent blending after every step t_m..t_f: x <- x_mod * M + x_ref_i * (1 - M) (M_l nearest-upsampled);
- I+ and I- are decoded (VAE fp32); D_l = blur(sum_RGB (I+ - I-)^2) / max (float, full resolution; the
  authors' arithmetic, and their resize to the input frame size, behind issue 15's switches).

Filtering D~_l = D_l * M + s * D_l * (1 - M) (M bilinear-upsampled) and Y = argmax_l D~_l give the labels.
All (frame, label, sign) runs of a batch go through the UNet together, ``chunk`` runs per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import progress as _progress
from .authors import DiffChoice, authors_filter_masks, authors_last_blend_step, choose_diff
from .backbone import Backbone
from .config import SegConfig
from .features import Reference
from .probe import AddToOutput, InjectAttention, InjectQK, OneKeyAttention, Probe, ReplayOutputs


@dataclass
class FrameDiff:
    """Difference maps of one frame: ``labels`` (L,) ids and D_l ``raw`` (L, H, W) in [0, 1] (float32;
    float16 only with ``SegConfig.diff_fp16``; float64 for the authors' D_l, issue 15 row 3). (H, W) is
    the processing size, or the input frame size with row 3's resize (:class:`~vidseg_nb.authors.DiffChoice`)."""

    labels: np.ndarray
    raw: np.ndarray
    plus: np.ndarray | None = None  # (L, h, w, 3) uint8, I+ rounded, processing size (kept frames only)
    minus: np.ndarray | None = None  # (L, h, w, 3) uint8, I-


@dataclass
class ModulationOutput:
    frames: list[FrameDiff]
    final_latents: torch.Tensor | None = None  # (R, G, 4, h8, w8) in run order, when asked (G = 1 for SD)
    runs: list[tuple[int, int, int]] = field(default_factory=list)  # (group, label, sign); SD: group = frame


def plan_runs(coarse: np.ndarray, group: int = 1) -> list[tuple[int, int, int]]:
    """(group, label, sign) of every modulated run for coarse maps (N, h, w) in groups of ``group`` frames
    (1 for SD: a group is a frame; SVD: the batch): +1 then -1 per label present in a frame of the group
    that holds at least two labels. A frame whose map holds a single label needs no difference map."""
    coarse = np.asarray(coarse)
    runs = []
    for k in range(0, len(coarse), group):
        labels: set[int] = set()
        for m in coarse[k : k + group]:
            labs = np.unique(m)
            if len(labs) > 1:
                labels.update(int(v) for v in labs)
        runs += [(k // group, lab, sign) for lab in sorted(labels) for sign in (+1, -1)]
    return runs


def default_chunk(backbone: Backbone, n_frames: int = 1) -> int:
    """Modulated runs (groups) per UNet call for a batch of ``n_frames`` (each run is 2 UNet samples per
    frame with CFG): the backbone's choice from free GPU memory, or its CPU default."""
    return backbone.default_chunk(n_frames, modulated=True)


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


def filter_maps(
    raw: np.ndarray, labels: np.ndarray, coarse: np.ndarray, s: float, *, lanczos: bool = False
) -> np.ndarray:
    """D~_l = D_l * M + s * D_l * (1 - M), M = bilinear-upsampled mask of label l of ``coarse`` (h, w).

    ``lanczos`` (issue 15 row 4, chosen in ``stages._choose_stages``): M upsampled by Pillow LANCZOS from the
    0/255 mask, in float64, as the authors' ``filter_difference_map``."""
    masks = (np.asarray(coarse)[None] == np.asarray(labels)[:, None, None]).astype(np.float32)
    if lanczos:
        raw = np.asarray(raw, dtype=np.float64)
        m = authors_filter_masks(masks > 0, raw.shape[-2:])
        return raw * m + s * raw * (1 - m)
    m = upsample_masks(masks, raw.shape[-2:]).numpy()
    raw = raw.astype(np.float32, copy=False)
    return raw * m + s * raw * (1 - m)


def argmax_labels(filtered: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Y = argmax_l D~_l mapped back to label ids: (L, H, W) -> (H, W) int64."""
    return np.asarray(labels, dtype=np.int64)[np.asarray(filtered).argmax(0)]


def final_labels(
    diff: FrameDiff, coarse: np.ndarray, s: float, *, lanczos: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Filtered maps D~ (L, H, W) and the label map Y (H, W) of one frame; single-label frames are constant.
    ``lanczos``: the authors' LANCZOS filter masks (see :func:`filter_maps`)."""
    if len(diff.labels) == 1:
        shape = diff.raw.shape[-2:]
        return np.ones((1, *shape), np.float32), np.full(shape, diff.labels[0], np.int64)
    filt = filter_maps(diff.raw, diff.labels, coarse, s, lanczos=lanczos)
    return filt, argmax_labels(filt, diff.labels)


def reuse_hooks(backbone: Backbone, ref: Reference, config: SegConfig, gidx: torch.Tensor) -> list:
    """The q/k injection of the modulated runs ``gidx`` (reference groups) and the work reuse chosen in
    ``config`` (issue 12): :class:`~vidseg_nb.probe.ReplayOutputs` of the recorded prefix at t_m
    (``reuse_prefix``), :class:`~vidseg_nb.probe.OneKeyAttention` (``one_key_attention``),
    :class:`~vidseg_nb.probe.InjectAttention` (no ``to_q``/``to_k``,
    ``skip_qk_projections``; softmax(QK^T) once per group, ``shared_attention`` on CUDA, elsewhere with
    ``shared_attention_cpu``), else
    :class:`~vidseg_nb.probe.InjectQK`."""
    shared = config.shared_attention and (backbone.device.type == "cuda" or config.shared_attention_cpu)
    # OneKeyAttention first: InjectAttention's processors fall back to it
    hooks: list = [OneKeyAttention()] if config.one_key_attention else []
    if config.skip_qk_projections or shared:
        hooks.append(InjectAttention(ref.qk, gidx, shared=shared))
    else:
        hooks.append(InjectQK(ref.qk, gidx))
    if config.reuse_prefix and ref.prefix is not None:
        hooks.append(ReplayOutputs(ref.prefix, gidx))
    return hooks


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
    out_size: tuple[int, int] | None = None,
    diff: DiffChoice | None = None,
) -> ModulationOutput:
    """Stage 3: the masked-modulation runs of a batch and their difference maps D_l.

    ``ref`` is the batch's reference run with q/k recorded; ``coarse`` its refined maps M~ (N, h, w). The
    frames are in groups of ``backbone.frames_per_group(N)`` (SD: one frame; SVD: the batch, one clip);
    each (group, label, sign) of :func:`plan_runs` is one run of its group: at step t_m, sign * lambda *
    M_l^j is added at the modulation sites to frame j's tokens (zero where frame j has no label l); q/k
    of ``up_blocks[1..3]`` come from the group's reference run; after every step t_m..t_f each frame is
    blended with its reference latent through its own mask. Every frame of every run is decoded; D_l is
    computed for frame j only when label l is in frame j (and frame j holds two labels or more).
    ``chunk`` runs (even: a +/- pair stays together) share one UNet call per step. I+/I- are kept for
    ``keep_images``. ``ModulationOutput.runs`` holds (group, label, sign); ``final_latents`` (R, G, 4,
    h8, w8) when asked.

    ``diff``: how D_l is made of the decoded I+/I- (issue 15 row 3, chosen once from ``config`` by
    :func:`~vidseg_nb.authors.choose_diff` when not given). ``out_size``: the clip's input frame size (H0,
    W0). With ``diff.at_input_size`` the decoded, uint8-truncated I+ and I- are resized there by OpenCV
    (``cv2.resize``, as the authors' ``sample_video``) and D_l (so the filter and Y after it) lives at
    (H0, W0): their D_l with ``diff.maps``, else the paper's float D_l of those 8-bit images (/ 255).
    Otherwise, and without ``out_size``, D_l is at the processing size (so with sides that are multiples
    of 64 nothing changes).
    The kept I+/I- (``keep_images``) are the decoded images at the processing size either way.
    """
    if ref.qk is None:
        raise ValueError("modulate needs a reference run with record_qk=True")
    coarse = np.asarray(coarse)
    n, h, w = coarse.shape
    g = backbone.frames_per_group(n)
    runs = plan_runs(coarse, g)
    chunk = chunk or config.chunk_size or backbone.default_chunk(n, modulated=True)
    chunk = max(2, chunk - chunk % 2)  # keep the +/- pair of a label in one chunk
    keep_images = keep_images or set()
    lat_h, lat_w = ref.x_start.shape[-2:]
    last_blend = authors_last_blend_step(config, backbone.frames_per_group(2) > 1)  # t_f (row 2: t_m + 1)
    dev = backbone.device
    multi = [len(np.unique(m)) > 1 for m in coarse]
    x_start = ref.x_start.unflatten(0, (n // g, g))  # (groups, G, 4, h8, w8)
    diffs: dict[tuple[int, int], torch.Tensor] = {}
    images: dict[tuple[int, int, int], np.ndarray] = {}
    finals = []
    H, W = lat_h * backbone.vae_scale, lat_w * backbone.vae_scale
    diff = choose_diff(config) if diff is None else diff  # issue 15 row 3
    resize_to = None  # D_l at the input frame size (when that is another size)
    if diff.at_input_size and out_size is not None and (int(out_size[0]), int(out_size[1])) != (H, W):
        resize_to = H, W = int(out_size[0]), int(out_size[1])
    _progress.stage("stage 3, modulation", 2 * len(runs) * g * (config.n_steps - config.t_m))
    for a in tqdm(range(0, len(runs), chunk), desc="modulation", disable=not progress, leave=False):
        part = runs[a : a + chunk]
        r = len(part)
        gidx = torch.tensor([k for k, _, _ in part])
        masks = torch.from_numpy(
            np.stack([coarse[k * g : (k + 1) * g] == lab for k, lab, _ in part]).astype(np.float32)
        )  # (r, G, h, w)
        sign = torch.tensor([float(sg) for _, _, sg in part])
        mod = (sign[:, None, None, None] * config.lam * masks).reshape(r * g, h * w, 1)
        m_lat = upsample_masks(masks.reshape(r * g, h, w), (lat_h, lat_w), mode="nearest")
        m_lat = m_lat.reshape(r, g, 1, lat_h, lat_w).to(dev)

        def blend(
            i: int, x: torch.Tensor, gidx: torch.Tensor = gidx, m_lat: torch.Tensor = m_lat
        ) -> torch.Tensor | None:
            if not config.masked_modulation or i > last_blend:
                return None
            ref_i = ref.latents[i].unflatten(0, (n // g, g))[gidx]
            return x * m_lat + ref_i.to(x.device) * (1 - m_lat)

        hooks = (AddToOutput(config.t_m, mod.to(dev)), *reuse_hooks(backbone, ref, config, gidx.to(dev)))
        with Probe(backbone.unet, *hooks, layout=backbone.layout) as probe:
            x = backbone.sample(
                x_start[gidx],
                config.t_m,
                config.guidance_scale,
                listener=probe,
                callback=blend,
                cond=ref.condition,
            )
        if return_latents:
            finals.append(x.cpu())
        img = backbone.decode(x)
        img = img.reshape(r, g, *img.shape[1:])
        for j in range(0, r, 2):
            k, lab, _ = part[j]
            fr = [f for f in range(g) if multi[k * g + f] and bool((coarse[k * g + f] == lab).any())]
            if not fr:
                continue
            if diff.maps is not None:  # the authors' D_l (uint8 wrap, sqrt, 8-bit JPEG), float64
                # (their uint8 images cv2-resized to the input frame size first, with resize_to)
                d = diff.maps(
                    img[j, fr], img[j + 1, fr], config.blur_kernel, config.blur_sigma, size=resize_to
                )
            else:  # the paper's float D_l (of the authors' 8-bit images at resize_to, with row 3's resize)
                p, m = (diff.images(img[jj, fr], resize_to) for jj in (j, j + 1))
                d = difference_map(p, m, config.blur_kernel, config.blur_sigma).cpu()
            for i, f in enumerate(fr):
                diffs[(k * g + f, lab)] = d[i]
                if k * g + f in keep_images:
                    for jj, sg in ((j, 1), (j + 1, -1)):
                        images[(k * g + f, lab, sg)] = (
                            (img[jj, f].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
                        )
    out = []
    for f in range(n):
        labs = np.unique(coarse[f])
        if len(labs) < 2:
            out.append(FrameDiff(labels=labs.astype(np.int64), raw=np.ones((1, H, W), np.float32)))
            continue
        raw = torch.stack([diffs[(f, int(lab))] for lab in labs])
        # SPEC 7: float32 (fp16 opt-in); the authors' D_l (row 3) stays float64 as theirs
        raw = raw.to(diff.dtype).numpy()
        fd = FrameDiff(labels=labs.astype(np.int64), raw=raw)
        if f in keep_images:
            fd.plus = np.stack([images[(f, int(lab), 1)] for lab in labs])
            fd.minus = np.stack([images[(f, int(lab), -1)] for lab in labs])
        out.append(fd)
    return ModulationOutput(frames=out, final_latents=torch.cat(finals) if finals else None, runs=runs)
