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
# # 02 · Coarse maps: scene context model and correspondence-based refinement
#
# Stages 1 and 2 of the method (paper sections 4.1 and 4.2, Figure 4) work on the feature grid
# ($H/16 \times W/16$) and turn the aggregated features $\tilde F^j$ of notebook 01 into coarse label
# maps that are consistent over time.
#
# **Stage 1, the scene context model $\Omega$.** The video is cut into batches of $B$ frames
# ($B = 14$ in the paper). On the first batch, K-Means with $K$ clusters is fitted on every vector of
# $\tilde F^1 \dots \tilde F^B$; its prediction for frame 1 is $M^1$. A KNN classifier
# $\Omega(M^1, \tilde F^1)$ ($k = 4$) then predicts $M^2 \dots M^B$. After refinement, $\Omega$ is refitted
# on all $(\tilde M^j, \tilde F^j)$ of the batch and predicts the next batch: an autoregressive update.
#
# **Stage 2, correspondence-based refinement (CBR).** With the block-7 features $F_c$,
# $$T^j[p] = \arg\max_q \cos\big(F_c^j[p], F_c^{j+1}[q]\big),\quad \|p - q\|^2 \le \mathcal T \quad (3)$$
# links each cell to its match in the next frame, TRACK (eq. 4) follows these links to the end of the
# batch, and a majority vote along the trajectory gives the refined map
# $$\tilde M^j[p] = \arg\max_l \sum_{k=j}^{B} \mathbf 1\big(M^k[\mathrm{TRACK}(p, j, k)] = l\big). \quad (5)$$
#
# **Cost with the real model (estimate, not measured):** the same feature extraction as notebook 01
# (well under a minute for 28 frames on an A100-class GPU, from the paper's 0.41 frames/s for the
# *whole* method, of which features are a small part) plus a few seconds of K-Means and KNN on the CPU.

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

nb = setup(frames=(8, 28), dataset="davis")

# %%
# ruff: noqa: E402  (imports after the set-up cell)
import time

import numpy as np
from IPython.display import display

from vidseg_nb.config import preset
from vidseg_nb.context import SceneContextModel, coarse_maps
from vidseg_nb.features import extract_features
from vidseg_nb.metrics import apply_label_map, assign_labels, confusion_matrix, mean_iou, resize_nearest
from vidseg_nb.refine import correspondence, count_label_changes, refine
from vidseg_nb.video import prepare_frames
from vidseg_nb.viz import show_coarse_before_after, show_correspondence, show_label_rows

backbone, TINY = nb.backbone, nb.tiny

# %% [markdown]
# ## Clip, settings and features
#
# With the real model: 28 frames at 512 px, $B = 14$, $K = 20$ (the paper's settings), so the clip is
# two batches. The tiny model uses 8 frames, $B = 4$ and $K = 4$ to stay fast (still two batches).

# %%
MAX_SIDE = 256 if TINY else 512
BATCH = 4 if TINY else 14
small = dict(n_clusters=4, kmeans_n_init=2) if TINY else {}
config = preset("vidseg", max_side=MAX_SIDE, batch_size=BATCH, **small)
print(f"B = {config.batch_size}, K = {config.n_clusters}, k = {config.n_neighbors}, T = {config.radius2}")

raw, gt, clip_name = nb.clip.frames, nb.clip.labels, nb.clip.name  # the clip setup() picked
num_classes, ignore = nb.clip.num_classes, nb.clip.ignore_index
frames = prepare_frames(raw, MAX_SIDE)

t0 = time.perf_counter()
features = extract_features(backbone, frames, config, progress=False)
h, w = features.grid
print(
    f"{clip_name}: {len(frames)} frames at {frames.shape[1]}x{frames.shape[2]}, grid {h}x{w}, "
    f"features in {time.perf_counter() - t0:.1f} s"
)

# %% [markdown]
# ## Stage 1 on the first batch: K-Means gives $M^1$, $\Omega$ predicts $M^2 \dots M^B$
#
# `SceneContextModel` has a scikit-learn shape: `start(F~ of the batch)` fits K-Means on every vector
# of the batch and returns $M^1$ (and fits $\Omega$ on $(\tilde F^1, M^1)$); `predict` is $\Omega$.

# %%
F1 = features[:BATCH]  # the first batch
omega = SceneContextModel.from_config(config)
M1 = omega.start(F1.stage1(config.aggregate))  # K-Means on F~^1..F~^B, prediction for frame 1
M_rest = omega.predict(F1.stage1(config.aggregate)[1:])  # Omega(M^1, F~^1) predicts M^2..M^B
M_batch = np.concatenate([M1[None], M_rest])
print(f"K-Means found {omega.kmeans_.n_clusters} clusters; frame 1 uses labels {np.unique(M1).tolist()}")
print(f"Omega: {omega.backend_} KNN, k = {omega.k_}, fitted on {len(omega.fit_labels_)} cells of frame 1")
show_label_rows(frames[:BATCH], {"$M^j$ (stage 1)": M_batch}, frame_ids=range(BATCH))

# %% [markdown]
# ## Stage 2: correspondences $T^j$ (eq. 3) and the refined maps $\tilde M^j$ (eq. 5)
#
# `correspondence(F_c^j, F_c^{j+1})` is eq. 3 for one pair of frames (arrows: cells whose best match
# in the next frame is a neighbour; dots: cells matched to themselves). `refine` follows the
# trajectories to the end of the batch and takes the majority vote. A *label flip* is a cell whose
# label differs from the previous frame (`count_label_changes`); refinement should remove the flips
# that are noise and keep those that follow motion. The vote runs forward only: the last frame of a
# batch votes alone and the one before it can only tie (a tie keeps its own label), so those two frames
# never change. CBR needs long batches, one more reason for $B = 14$.

# %%
Fc = F1.corr  # F_c: block-7 features, compared by cosine similarity
T0 = correspondence(Fc[0], Fc[1], radius2=config.radius2, as_coords=True)
display(show_correspondence(frames[0], frames[1], T0, labels=M_batch[0]))

M_refined = refine(M_batch, Fc, radius2=config.radius2)  # M~^1..M~^B
print(
    f"label flips in the first batch: {count_label_changes(M_batch)} before CBR, "
    f"{count_label_changes(M_refined)} after; CBR changed {(M_batch != M_refined).mean():.1%} of the cells"
)
show_coarse_before_after(frames[:BATCH], M_batch, M_refined, frame_ids=range(BATCH))

# %% [markdown]
# ## Batch after batch: the autoregressive context model
#
# `coarse_maps` runs stage 1 and 2 over consecutive batches with one `SceneContextModel`: after each
# batch it refits $\Omega$ on $(\tilde F^j, \tilde M^j)$ of that batch only (memory stays bounded) and
# uses it for the next. A cluster keeps its id, and so its colour, over the whole clip. Its first batch
# is exactly what we computed by hand above.

# %%
starts = range(0, len(features), BATCH)
model = SceneContextModel.from_config(config)
batches = list(
    coarse_maps(
        (features[a : a + BATCH].stage1(config.aggregate) for a in starts),
        model,
        (features[a : a + BATCH].corr for a in starts),
        refine=config.refine,
        radius2=config.radius2,
    )
)
before = np.concatenate([b.before for b in batches])  # M^j
after = np.concatenate([b.after for b in batches])  # M~^j
assert np.array_equal(batches[0].before, M_batch) and np.array_equal(batches[0].after, M_refined)
for i, b in enumerate(batches):
    print(
        f"batch {i + 1}: flips {count_label_changes(b.before)} -> {count_label_changes(b.after)}, "
        f"labels {np.unique(b.after).tolist()}"
    )
show_coarse_before_after(frames, before, after)

# %% [markdown]
# ## Batch size 1 versus $B$
#
# $B = 1$ is the frame-by-frame baseline of Table 2's first row: K-Means on frame 1 alone, then each
# frame is predicted by $\Omega$ fitted on the previous frame only, and there is nothing to refine.
# We compare, on the same features, the label flips (all cells, and static cells where the picture
# does not change) and a coarse mIoU: each cluster takes the majority ground-truth label of frame 1
# (the paper's first-frame label assignment), scored on the feature grid.

# %%
n, big_h, big_w = frames.shape[:3]
change = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(-1)
static = change.reshape(n - 1, h, big_h // h, w, big_w // w).mean((2, 4)) < 8.0  # (N-1, h, w)
gt_grid = np.stack([resize_nearest(g, (h, w)) for g in gt])


def coarse_scores(maps: np.ndarray) -> dict[str, float]:
    """Flips and first-frame-assignment mIoU of coarse maps (N, h, w) against the ground truth."""
    mapping = assign_labels(maps[0], gt[0], ignore_index=ignore)
    pred = apply_label_map(maps, mapping)
    pred[pred < 0] = 0  # a cluster with no valid ground truth in frame 1 (rare): call it background
    flips_static = int(((maps[1:] != maps[:-1]) & static).sum())
    return dict(
        flips=count_label_changes(maps),
        flips_static=flips_static,
        miou=mean_iou(confusion_matrix(gt_grid, pred, num_classes)),
    )


rows = {}
for bsz in (1, BATCH):
    cfg = config.replace(batch_size=bsz)
    starts = range(0, len(features), bsz)
    out = list(
        coarse_maps(
            (features[a : a + bsz].stage1(cfg.aggregate) for a in starts),
            SceneContextModel.from_config(cfg),
            (features[a : a + bsz].corr for a in starts),
            refine=cfg.refine,
            radius2=cfg.radius2,
        )
    )
    rows[f"B = {bsz}"] = np.concatenate([o.after for o in out])

print(f"{'':<8}{'flips':>8}{'flips at static cells':>24}{'coarse mIoU':>14}")
for name, maps in rows.items():
    sc = coarse_scores(maps)
    print(f"{name:<8}{sc['flips']:>8}{sc['flips_static']:>24}{sc['miou']:>14.3f}")
if nb.caveat:
    print(nb.caveat)
show_label_rows(frames, {f"$\\tilde M^j$, {k}": v for k, v in rows.items()})

# %% [markdown]
# **What to look for with the real model.** With $B = 1$ every frame's context model has seen one
# frame only, so clusters drift and swap from frame to frame (many flips, also at static cells).
# With $B = 14$ K-Means sees the whole batch, $\Omega$ is refitted on refined maps, and CBR removes
# isolated flips along the trajectories: the paper's Table 2 reports that more frames per batch
# improve both mIoU and mVC. With the tiny random model the maps are noise.
