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
# # 06 · Follow objects: a first-frame mask or two clicks (issue 22)
#
# The method segments a clip into *clusters* with no notion of "the object I care about". DAVIS-style
# video object segmentation gives frame 1's object mask and asks for that object in every frame. Because
# cluster ids are carried through the whole clip (the scene context model $\Omega$ predicts $M^j$ of later
# frames from earlier ones), following objects is a **look-up, no UNet work**:
#
# - **mask**: each cluster of $M^1$ (frame 1's coarse map, feature grid) takes the majority object of its
#   cells (the mask nearest-resized to the grid): the first-frame assignment of SPEC 8, the very function
#   `vidseg evaluate` scores with (`vidseg_nb.metrics.assign_labels`);
# - **clicks** `(frame, x, y, object_id, positive)`: the cluster of the final map $Y$ under the clicked pixel
#   joins (positive) or leaves (negative) the object;
# - then every frame's object mask is $Y$ through that cluster → object table.
#
# The clip: DAVIS 2016 `blackswan` from `../shared/data` with the tiny model or real weights when present,
# else a synthetic clip; with the toy model (`VIDSEG_NOTEBOOK_MODEL=toy`, as in CI) a toy-world clip with
# three objects, of which we follow object 1.

# %%
from vidseg_nb.notebook import setup

nb = setup(frames=(6, 24), dataset="davis", synthetic_size=(128, 128))

# %%
# ruff: noqa: E402  (imports after the set-up cell)
import tempfile
from pathlib import Path

import numpy as np

from vidseg_nb.config import preset
from vidseg_nb.pipeline import VideoSegmenter
from vidseg_nb.prompts import (
    davis_png,
    j_and_f,
    object_masks,
    object_overlay,
    objects_from_clicks,
    objects_from_mask,
    read_annotations,
)
from vidseg_nb.video import overlay_frames
from vidseg_nb.viz import show_images

backbone, TINY, clip = nb.backbone, nb.tiny, nb.clip
CAVEAT = f" {nb.caveat}" if nb.caveat else ""
frames = clip.frames
target = (clip.labels == 1).astype(np.uint8)  # the object we follow: id 1 (void pixels count as not it)
print(f"{clip.name}: {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]}, following object 1")

# %% [markdown]
# ## Segment once
#
# Small settings on a CPU model: the toy model at its own 256 px with $K = 8$ clusters (its objects are
# small: with fewer clusters they share one), the tiny random one at 128 px with $K = 6$; real weights get the paper's
# ($K = 20$, 512 px).

# %%
from vidseg_nb.toy import is_toy

if is_toy(backbone):
    config = preset("vidseg", max_side=256, n_clusters=8, kmeans_n_init=2, batch_size=3)
elif TINY:
    config = preset("vidseg", max_side=128, n_clusters=6, kmeans_n_init=2, batch_size=4)
else:
    config = preset("vidseg", max_side=512)
result = VideoSegmenter(backbone, config).segment(frames, keep=None, progress=False)
print(f"{len(result)} frames, clusters {result.label_ids.tolist()}, mode {result.mode}")

# %% [markdown]
# ## From frame 1's mask
#
# `objects_from_mask(result, mask)` returns `{object id: set of cluster ids}`; `object_masks` applies it to
# every frame; `j_and_f` is the DAVIS J&F (first and last frame dropped) of the evaluation itself.

# %%
objects = objects_from_mask(result, target[0])
masks = object_masks(result, objects)
score_mask = j_and_f(masks, target)
print(f"object 1 = clusters {sorted(objects[1])}")
print(f"mask:   J {score_mask['J']:.3f}  F {score_mask['F']:.3f}  J&F {score_mask['J&F']:.3f}{CAVEAT}")

# %%
last = len(frames) - 1
show_images(
    [overlay_frames(frames[0], target[0]), overlay_frames(frames[:1], result.labels[:1])[0]]
    + [object_overlay(frames[i : i + 1], masks[i : i + 1])[0] for i in (0, last // 2, last)],
    [
        "frame 1: the mask",
        "frame 1: clusters Y",
        "object, frame 1",
        f"frame {last // 2 + 1}",
        f"frame {last + 1}",
    ],
    suptitle=f"following object 1 from its first-frame mask{CAVEAT}",
)

# %% [markdown]
# ## From two clicks
#
# A user clicks where the object is. Click 1 (positive): the pixel of frame 1 inside the object whose
# cluster covers most of it. Click 2: the most helpful of, in every frame, a positive click on the
# largest missed part of the object and a negative click on the cluster that spills most outside it (a
# stand-in for a user looking at the result). Clicks are in input pixels `(frame, x, y, object_id, positive)`; later clicks override
# earlier ones.


# %%
def best_pixel(frame: int, where: np.ndarray) -> tuple[int, int, int]:
    """(x, y, cluster) of the cluster of Y[frame] with the most pixels in ``where`` (one of its pixels)."""
    lab = result.labels[frame]
    counts = np.bincount(lab[where].ravel(), minlength=256)
    c = int(counts.argmax())
    ys, xs = np.nonzero(where & (lab == c))
    k = len(ys) // 2
    return int(xs[k]), int(ys[k]), c


x1, y1, _ = best_pixel(0, target[0] == 1)
one = [(0, x1, y1, 1, True)]
after_one = object_masks(result, objects_from_clicks(result, one))
mid = len(frames) // 2
score_one = j_and_f(after_one, target)
candidates = []  # per frame: a positive click on the largest miss, a negative one on the largest spill
for f in range(len(frames)):
    for where, positive in (
        ((target[f] == 1) & (after_one[f] == 0), True),
        ((target[f] == 0) & (after_one[f] == 1), False),
    ):
        if where.any():
            x2, y2, _ = best_pixel(f, where)
            candidates.append((f, x2, y2, 1, positive))
tries = [
    (j_and_f(object_masks(result, objects_from_clicks(result, one + [c])), target)["J&F"], c)
    for c in candidates
]
best, second = max(tries) if tries else (score_one["J&F"], None)
two = one + [second] if second is not None else one
if best <= score_one["J&F"]:
    print(
        "note: even the best second click does not improve on the first here (no cluster separates the "
        "object better): a user would stop after one click"
    )
clicked = objects_from_clicks(result, two)
masks_clicks = object_masks(result, clicked)
score_two = j_and_f(masks_clicks, target)
for name, c in zip(("click 1", "click 2"), two):
    print(f"{name}: frame {c[0] + 1}, x={c[1]}, y={c[2]}, {'positive' if c[4] else 'negative'}")
print(f"object 1 = clusters {sorted(clicked[1])}")
print(f"1 click:  J&F {score_one['J&F']:.3f}")
print(f"2 clicks: J&F {score_two['J&F']:.3f}   (mask: {score_mask['J&F']:.3f}){CAVEAT}")

# %%
show_images(
    [object_overlay(frames[i : i + 1], after_one[i : i + 1])[0] for i in (0, mid)]
    + [object_overlay(frames[i : i + 1], masks_clicks[i : i + 1])[0] for i in (0, mid)],
    ["1 click, frame 1", f"1 click, frame {mid + 1}", "2 clicks, frame 1", f"2 clicks, frame {mid + 1}"],
    suptitle=f"following object 1 from clicks{CAVEAT}",
)

# %% [markdown]
# ## DAVIS PNGs and the command line
#
# `davis_png` writes palette PNGs `00000.png, ...` (the DAVIS palette, values = object ids) that the DAVIS
# tools and `j_and_f(masks, folder)` read back. The command line does the same on any clip, batch by batch
# (also with `--resume`):
#
# ```
# vidseg segment clip.mp4 -o out.mp4 --first-frame-mask 00000.png --gt Annotations/480p/blackswan
# ```
#
# writes `out_objects.mp4` and `out_objects/`, and prints J&F per object and the mean.

# %%
folder = Path(tempfile.mkdtemp()) / "objects"
paths = davis_png(masks, folder)
assert np.array_equal(read_annotations(folder), masks)
print(
    f"{len(paths)} PNGs in {folder}; J&F from the folder: {j_and_f(read_annotations(folder), target)['J&F']:.3f}"
)
