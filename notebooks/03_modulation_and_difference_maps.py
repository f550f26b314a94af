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
# # 03 · Masked modulation and difference maps
#
# Stage 3 (paper sections 3.2 and 4.3, Figures 7 and 12) turns the coarse map $\tilde M^j$ of a frame
# ($H/16$ grid) into a full-resolution label map. For each label $l$ with mask $M_l$:
#
# 1. **modulate** block 7's cross-attention at step $t_m$ by $\pm\lambda$ inside the mask (eq. 2):
#    $f\big(\sigma(QK^T/\sqrt d)\,V \pm \lambda M_l\big)$, keeping every $Q, K$ of the reference run
#    (EmerDiff's fixed $QK^T$), and denoise to the end twice, once per sign;
# 2. **blend** the latents after every step from $t_m$ to $t_f$ (eq. 6):
#    $\tilde z_t = z_t (1 - M_l) + \hat z_t M_l$, with $z_t$ the reference (unmodulated) run;
# 3. decode $I^+_l, I^-_l$ and take the **difference map** $D_l = \|I^+_l - I^-_l\|^2$ (summed over RGB,
#    blurred, divided by its max);
# 4. **filter** (eq. 7): $\tilde D_l = D_l M_l + s\, D_l (1 - M_l)$, and label every pixel with
#    $Y = \arg\max_l \tilde D_l$.
#
# Paper settings: $\lambda = 50$ with blending ($10$ without, as in EmerDiff), $s = 0.7$, $t_m = 22$.
#
# **Cost with the real model (estimate, not measured):** stage 3 is where the time goes: 2 runs per
# label, each 3 UNet steps (with CFG) and one VAE decode; with ~10 labels about 150 TFLOP per frame.
# The paper's 0.41 frames/s on an A100 means roughly 2-3 s per frame, so this notebook (features of 14
# frames, stage 3 of one frame twice, a few slider moves) takes one to two minutes of GPU time plus
# loading the weights. Each $\lambda$ slider move reruns stage 3 of one frame (a few seconds); an $s$
# move only re-filters (milliseconds).

# %% [markdown]
# ## Set-up: the backbone and the clip
#
# `setup()` (`vidseg_nb.notebook`) loads the backbone from `$VIDSEG_MODEL` (a Hub id, a diffusers folder or a
# single checkpoint file; default SD 2.1-base) and picks the clip: DAVIS 2016 `blackswan` from `../shared/data` (or
# `$VIDSEG_DATA`) when that folder exists, otherwise a synthetic clip with exact labels.
# `VIDSEG_MODEL=tiny` builds a random model with the same block layout: it runs everything in seconds on a
# CPU (with fewer frames), but its pictures and numbers mean nothing. Install the package first
# (`pip install -e .` in the repository).

# %%
from vidseg_nb.notebook import setup

nb = setup(frames=(4, 14), dataset="davis")

# %%
# ruff: noqa: E402  (imports after the set-up cell)

import ipywidgets as widgets
import numpy as np
from IPython.display import display

from vidseg_nb.config import preset
from vidseg_nb.context import SceneContextModel, coarse_batch
from vidseg_nb.features import extract_features, reference_run
from vidseg_nb.metrics import resize_nearest
from vidseg_nb.modulation import final_labels, modulate, plan_runs, upsample_masks
from vidseg_nb.video import prepare_frames
from vidseg_nb.viz import show_difference_maps, show_filtering, show_images, show_masking_comparison

backbone, TINY = nb.backbone, nb.tiny

# %% [markdown]
# ## Coarse map of one frame (stages 0-2, as in notebooks 01 and 02)
#
# One batch of frames gives the context model enough to work with; we then look at frame `J` only.

# %%
N_FRAMES = len(nb.clip.frames)  # 4 with the tiny model, else 14: one batch
MAX_SIDE = 256 if TINY else 512
J = 1  # the frame we modulate
small = dict(n_clusters=4, kmeans_n_init=2) if TINY else {}
config = preset("vidseg", max_side=MAX_SIDE, batch_size=N_FRAMES, **small)

raw, gt, clip_name = nb.clip.frames, nb.clip.labels, nb.clip.name  # the clip setup() picked
frames = prepare_frames(raw, MAX_SIDE)

features = extract_features(backbone, frames, config, progress=False)
cb = coarse_batch(
    SceneContextModel.from_config(config),
    features.stage1(config.aggregate),
    features.corr,
    refine=config.refine,
    radius2=config.radius2,
)
coarse = cb.after[J]  # M~^j on the (h, w) grid
frame = frames[J]
h, w = coarse.shape
print(
    f"{clip_name}: frame {J} at {frame.shape[0]}x{frame.shape[1]}, coarse grid {h}x{w}, "
    f"labels {np.unique(coarse).tolist()}, {len(plan_runs(coarse[None]))} modulated runs"
)

# %% [markdown]
# ## The reference run of frame $j$
#
# `reference_run(..., record_qk=True)` noises the frame to $t_m$ with the frame's own seeded
# $\varepsilon$ (the same one as during feature extraction), denoises it unmodulated, and keeps every
# latent $z_t$ (for blending) and the $Q, K$ of every attention layer in `up_blocks[1..3]` (to inject
# into the modulated runs). Decoding its last latent gives the model's reconstruction of the frame.

# %%
ref = reference_run(backbone, frames[J : J + 1], config, frame_offset=J, record_qk=True, progress=False)
recon = backbone.decode(ref.latents[config.n_steps - 1])[0].permute(1, 2, 0).numpy()
print(
    f"latents kept for steps {sorted(ref.latents)}; q/k of {len(ref.qk)} (step, layer, q|k) entries, "
    f"{ref.qk.nbytes() / 2**20:.1f} MiB"
)

# %% [markdown]
# ## One mask: $I^+_l$, $I^-_l$ and $D_l$
#
# `modulate` runs every (label, sign) of the frame through the UNet in batches and returns the raw
# difference maps $D_l$ (and, for the frames in `keep_images`, the images $I^\pm_l$). We pick the label
# that covers most of the annotated object (or the largest one).

# %%
mod = modulate(backbone, ref, coarse[None], config, keep_images={0}, progress=False)
diff = mod.frames[0]  # FrameDiff: labels, raw = D_l (L, H, W), plus = I+, minus = I-
labels = diff.labels

gt_grid = resize_nearest(gt[J], (h, w))
on_object = (gt_grid != 0) & (gt_grid != 255)
overlap = [((coarse == lab) & on_object).sum() / max(1, (coarse == lab).sum()) for lab in labels]
k = int(np.argmax(overlap)) if on_object.any() else int(np.argmax([(coarse == lab).sum() for lab in labels]))
L0 = int(labels[k])
mask = coarse == L0  # M_l

show_images(
    [frame, recon, diff.plus[k], diff.minus[k], diff.raw[k]],
    [
        f"frame {J}",
        "reference run (decoded)",
        f"$I^+_{{{L0}}}$ ($+\\lambda$)",
        f"$I^-_{{{L0}}}$ ($-\\lambda$)",
        f"$D_{{{L0}}}$",
    ],
    suptitle=f"label {L0}, $\\lambda$ = {config.lam:g}, with latent blending",
)

# %% [markdown]
# ## Every label: $D_l$, $\tilde D_l$ and $Y$
#
# `final_labels(diff, coarse, s)` applies eq. 7 with the bilinearly upsampled masks and takes the
# argmax, mapping back to label ids.

# %%
filtered, Y = final_labels(diff, coarse, config.s)  # D~_l (L, H, W) and Y (H, W)
show_difference_maps(frame, coarse, labels, diff.raw, filtered, Y, diff.plus, diff.minus)

# %% [markdown]
# ## What goes wrong without masking (Figures 7 and 12)
#
# The same frame, the same $\lambda$, with `masked_modulation=False`: no latent blending and no
# filtering ($s = 1$), which is EmerDiff's procedure. The perturbation of one region then changes
# pixels elsewhere too, $D_l$ lights up outside its mask (the cyan contour), and those stray
# activations win the argmax in the wrong places. Two numbers per variant: the share of the
# difference-map energy outside its own mask, $\sum D_l (1 - M_l) / \sum D_l$ averaged over labels,
# and the share of pixels whose label $Y$ differs from the nearest-upsampled coarse map.

# %%
mod_plain = modulate(backbone, ref, coarse[None], config.replace(masked_modulation=False), progress=False)
diff_plain = mod_plain.frames[0]
_, Y_plain = final_labels(diff_plain, coarse, 1.0)  # no blending, no filtering
_, Y_blend = final_labels(diff, coarse, 1.0)  # blending only

big = frame.shape[:2]
masks_up = upsample_masks(np.stack([coarse == lab for lab in labels]), big, mode="nearest").numpy()
coarse_up = labels[np.argmax(masks_up, axis=0)]


def outside_energy(raw: np.ndarray) -> float:
    """Mean over labels of the share of D_l outside M_l."""
    raw = raw.astype(np.float32)  # D_l may be stored as float16
    return float(np.mean((raw * (1 - masks_up)).sum((1, 2)) / raw.sum((1, 2)).clip(1e-12)))


variants = {
    "no blending, no filter": (diff_plain.raw, Y_plain),
    "blending": (diff.raw, Y_blend),
    f"blending + filter (s={config.s:g})": (filtered, Y),
}
print(f"{'variant':<28}{'D outside mask':>16}{'Y != coarse':>14}")
for name, (d, y) in variants.items():
    print(f"{name:<28}{outside_energy(d):>16.1%}{(y != coarse_up).mean():>14.1%}")
if nb.caveat:
    print(nb.caveat)
show_masking_comparison(
    frame, mask, {n: d[k] for n, (d, _) in variants.items()}, {n: y for n, (_, y) in variants.items()}
)

# %% [markdown]
# ## Sliders: $\lambda$ and $s$
#
# `redraw(lam, s)` is the callback of both sliders (a plain function, so it also runs without a
# browser). It keeps the raw $D_l$ of the last $\lambda$ in `view`:
#
# * a new $s$ only re-filters the stored $D_l$ (eq. 7) and takes the argmax again: no UNet call;
# * a new $\lambda$ reruns stage 3 of this one frame (`modulate` from the stored reference run).
#
# Larger $\lambda$ makes stronger, but eventually less local, differences; smaller $s$ trusts the coarse
# mask more ($s = 0$: a pixel can only take a label whose bilinearly upsampled mask reaches it).

# %%
view = {"lam": config.lam, "diff": diff}


def redraw(lam: float = config.lam, s: float = config.s):
    """Slider callback: D_l for lambda (rerun stage 3 if it changed), D~_l and Y for s; returns the figure."""
    before = backbone.counters.unet_samples
    if lam != view["lam"]:
        cfg = config.replace(lam=float(lam))
        view["diff"] = modulate(backbone, ref, coarse[None], cfg, progress=False).frames[0]
        view["lam"] = lam
    view["filtered"], view["Y"] = final_labels(view["diff"], coarse, s)
    view["s"] = s
    ran = backbone.counters.unet_samples - before
    d = view["diff"]
    return show_filtering(
        frame,
        d.labels,
        d.raw,
        view["filtered"],
        view["Y"],
        title=f"$\\lambda$ = {lam:g}, s = {s:g}: {ran} UNet samples for this redraw",
    )


lam_slider = widgets.FloatSlider(
    value=config.lam, min=5, max=100, step=5, description="lambda", continuous_update=False
)
s_slider = widgets.FloatSlider(
    value=config.s, min=0, max=1, step=0.05, description="s", continuous_update=False
)
ui = widgets.interactive(redraw, lam=lam_slider, s=s_slider)
display(ui)
