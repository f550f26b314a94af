# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Diffusion features of a video
#
# The method reads its features out of a pre-trained Stable Diffusion 2.1 UNet (paper section 3.1,
# SPEC section 3). For every frame $X^n$:
#
# 1. encode it with the VAE, $z_0 = 0.18215\,\mathcal{E}(X^n)$, and noise it to step $t_m$:
#    $x = z_0 + \sigma_{t_m}\,\varepsilon$ (one fixed $\varepsilon$ per frame);
# 2. denoise from $t_m$ to the last of the 25 Euler steps with the empty prompt (CFG scale 5);
# 3. at the last step record the self-attention query $Q$ of decoder blocks 6, 7 and 8
#    (`up_blocks[2].attentions[0..2]`, grid $H/16 \times W/16$, 640 channels): $F^n_6, F^n_7, F^n_8$;
# 4. aggregate: $\tilde F^n = \mathrm{mean}(F^n_6, F^n_7, F^n_8)$, each vector divided by its max $|\cdot|$.
#
# This notebook draws those features as PCA images (the paper's Figure 2, and Figure 15 for a
# different block), stacks one row of them over time into x-t slices, and puts a number on which
# block is the most stable over time.
#
# **Cost with the real model (estimate, not measured):** feature extraction is the cheap part of the
# method: per frame 1 VAE encode and 3 denoising steps (6 UNet samples with CFG), about 6 TFLOP at
# 512 px versus about 150 TFLOP per frame for the whole method. The paper's full method runs at
# 0.41 frames/s on one A100, so 24 frames of features take well under a minute on such a GPU,
# plus a minute or so to load the weights. On a CPU expect several minutes.

# %% [markdown]
# ## Set-up: the backbone and the clip
#
# `setup()` (`vidseg_nb.notebook`) loads the backbone from `$VIDSEG_MODEL` (a Hub id, a diffusers folder or a
# single checkpoint file; default SD 2.1-base) and picks the clip: DAVIS 2016 `blackswan` from `../shared/data` (or
# `$VIDSEG_DATA`) when that folder exists, otherwise a synthetic clip (textured shapes on a textured background).
# `VIDSEG_MODEL=tiny` builds a random model with the same block layout: it runs everything in seconds on a
# CPU (with fewer frames), but its pictures and numbers mean nothing. Install the package first
# (`pip install -e .` in the repository).

# %%
from vidseg_nb.notebook import setup

nb = setup(frames=(8, 24), dataset="davis")

# %%
# ruff: noqa: E402  (imports after the set-up cell)
import time

import numpy as np
import torch

from vidseg_nb.config import preset
from vidseg_nb.features import extract_features, pca_view, xt_slice
from vidseg_nb.loading import load_backbone
from vidseg_nb.metrics import resize_nearest
from vidseg_nb.video import prepare_frames
from vidseg_nb.viz import show_pca_blocks, show_xt

backbone, TINY = nb.backbone, nb.tiny

# %% [markdown]
# ## A clip
#
# The clip `setup()` picked. Frames are resized so both sides are multiples of 64
# with the long side at most `MAX_SIDE` (small on the tiny model, 512 with the real one).

# %%
MAX_SIDE = 256 if TINY else 512
config = preset("vidseg", max_side=MAX_SIDE)

raw, gt, clip_name = nb.clip.frames, nb.clip.labels, nb.clip.name
frames = prepare_frames(raw, MAX_SIDE)
print(
    f"{clip_name}: {len(frames)} frames, {raw.shape[1]}x{raw.shape[2]} -> {frames.shape[1]}x{frames.shape[2]}"
)

# %% [markdown]
# ## Features $F^n_6, F^n_7, F^n_8$ and $\tilde F^n$
#
# `extract_features` runs the reference run of every frame (steps $t_m = 22, 23, 24$) and stops the
# last UNet forward right after block 8. It returns a `Features` object: `blocks[b]` is $F_b$ with
# shape $(N, h, w, C)$, `aggregated` is $\tilde F$.

# %%
before = backbone.counters.snapshot()
t0 = time.perf_counter()
features = extract_features(backbone, frames, config, progress=False)
h, w = features.grid
print(f"features of {len(features)} frames in {time.perf_counter() - t0:.1f} s; grid h x w = {h} x {w}")
for b, f in features.blocks.items():
    print(f"  F_{b}: {tuple(f.shape)}")
print(f"  F~ : {tuple(features.aggregated.shape)}")
print("work:", backbone.counters.since(before))

# %% [markdown]
# ## PCA views (Figure 2)
#
# `pca_view` fits **one** PCA per block jointly over all frames and maps the first three components to
# RGB with one min-max scaling for the whole clip, so a colour means the same thing in every frame.
# The red line is the grid row used for the x-t slices below (the row crossing most of the object).

# %%
pcas = {f"block {b}": pca_view(features.blocks[b]) for b in (6, 7, 8)}
pcas["aggregate F~"] = pca_view(features.aggregated)

gt_grid = resize_nearest(gt[0], (h, w))
foreground = (gt_grid != 0) & (gt_grid != 255)
ROW = int(foreground.sum(1).argmax()) if foreground.any() else h // 2

show_pca_blocks(frames, pcas, frame_ids=(0, -1), row=ROW)

# %% [markdown]
# ## x-t slices (Figures 2 and 15, bottom row)
#
# `xt_slice(volume, row)` takes grid row `ROW` of every frame and stacks them top to bottom in time.
# Features that stay attached to the scene draw straight vertical streaks (or smoothly slanted ones
# where the camera or object moves); features that flicker draw a jagged, noisy slice. (The paper's
# Figure 15 shows block 9; the library records blocks 6-8, the ones the method uses.)

# %%
slices = {name: xt_slice(p, ROW) for name, p in pcas.items()}
show_xt(slices, frame=frames[0], row=ROW, grid_h=h)

# %% [markdown]
# ## Which block is temporally stable? A number
#
# At cells where the picture does not change, a stable feature should not change either. Let the
# static cells $S$ be those whose mean absolute RGB change between frames $j$ and $j+1$, averaged over
# the cell's $16 \times 16$ pixels, is below 8 (of 255). For each block the stability is
#
# $$\mathrm{stab}_b = \operatorname{mean}_{j,\; p \in S_j} \cos\!\big(F_b^j[p],\, F_b^{j+1}[p]\big),$$
#
# next to the same mean over the moving cells for contrast (there the feature *should* change).

# %%
n, big_h, big_w = frames.shape[:3]
change = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(-1)  # (N-1, H, W)
change = change.reshape(n - 1, h, big_h // h, w, big_w // w).mean((2, 4))  # pooled to the grid
static = change < 8.0
print(f"static cells: {static.mean():.0%} of {static.size} (cell, frame pair)s")


def consecutive_cosine(f: torch.Tensor) -> np.ndarray:
    """cos(F^j[p], F^{j+1}[p]) for every frame pair j and cell p: (N-1, h, w)."""
    f = torch.nn.functional.normalize(f.float(), dim=-1)
    return (f[1:] * f[:-1]).sum(-1).numpy()


stability = {}
print(f"{'feature':<14}{'static cells':>14}{'moving cells':>14}")
for name, f in [
    *((f"block {b}", features.blocks[b]) for b in (6, 7, 8)),
    ("aggregate F~", features.aggregated),
]:
    cos = consecutive_cosine(f)
    stability[name] = float(cos[static].mean()) if static.any() else float("nan")
    moving = float(cos[~static].mean()) if (~static).any() else float("nan")
    print(f"{name:<14}{stability[name]:>14.3f}{moving:>14.3f}")
print(f"most stable at static cells: {max(stability, key=stability.get)}")
if nb.caveat:
    print(nb.caveat)

# %% [markdown]
# **What to look for with the real model.** The PCA colours follow semantic parts (the swan, the
# water, the bank) rather than texture, and keep their colour from frame to frame; the x-t slices are
# made of clean vertical or gently slanted bands. The paper reports that these spatial SD features are
# temporally more consistent than the temporal-layer features of Stable Video Diffusion, which is why
# the method builds on them and then enforces consistency itself (notebook 02). With the tiny random
# model the pictures are noise and the cosine similarities are low everywhere.

# %% [markdown]
# ## SD vs SVD features (when an SVD model is available)
#
# The paper's "Ours (SVD)" reads the same kind of features out of Stable Video Diffusion, whose UNet
# denoises the 14 frames of a batch jointly (spatial and temporal attention), and uses block 8 where
# SD uses block 7 (SPEC section 10). Set `VIDSEG_SVD_MODEL` to an SVD folder or Hub id
# (`stabilityai/stable-video-diffusion-img2vid`, gated) to compare; on the tiny model the random
# `tiny-svd` stands in so this cell runs everywhere (again: not meaningful). The table repeats the
# stability measure above for both backbones.

# %%
import os

SVD_SOURCE = os.environ.get("VIDSEG_SVD_MODEL") or ("tiny-svd" if TINY else None)
if SVD_SOURCE is None:
    print("No SVD model: set VIDSEG_SVD_MODEL to a local copy of stable-video-diffusion-img2vid to compare.")
else:
    svd = load_backbone(SVD_SOURCE)
    svd_config = preset("svd", max_side=MAX_SIDE, batch_size=min(14, len(frames)))
    svd_features = extract_features(svd, frames, svd_config, progress=False)
    compare = {"SD block 7": features.blocks[7], "SVD block 8": svd_features.blocks[8]}
    compare_pca = {name: pca_view(f) for name, f in compare.items()}
    show_pca_blocks(frames, compare_pca, frame_ids=(0, -1), row=ROW)
    show_xt({name: xt_slice(p, ROW) for name, p in compare_pca.items()}, frame=frames[0], row=ROW, grid_h=h)
    print(f"{'feature':<14}{'static cells':>14}{'moving cells':>14}")
    for name, f in compare.items():
        cos = consecutive_cosine(f)
        st = float(cos[static].mean()) if static.any() else float("nan")
        mv = float(cos[~static].mean()) if (~static).any() else float("nan")
        print(f"{name:<14}{st:>14.3f}{mv:>14.3f}")
    if svd.is_random:
        print("(random tiny-svd: these numbers are NOT meaningful)")
