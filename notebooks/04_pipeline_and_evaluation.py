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
# # 04 · The whole pipeline, its scores, the Table 2 ablation and the cost per frame
#
# `VideoSegmenter` chains the stages of notebooks 01-03 batch by batch (the paper's Figure 3):
# features $\tilde F^j$ (reference run) → $M^j$ (scene context model $\Omega$) → $\tilde M^j$ (CBR) →
# $D_l$ (masked modulation, $\pm\lambda$) → $\tilde D_l$ (filtering with $s$) → $Y = \arg\max_l \tilde D_l$,
# resized back to the input size. Its labels are cluster ids; to score them against a dataset's classes
# the paper assigns each cluster the majority ground-truth class of its cells in frame 1 (clusters with
# the same class merge; classes absent from frame 1 cannot be predicted), then computes
#
# * **mIoU** from one confusion matrix over all frames (void pixels left out), averaged over the classes
#   present in the ground truth;
# * **mVC$_n$** (VSPW's video consistency): over windows of $n$ consecutive frames, the share of the
#   pixels whose ground truth stays the same over the window that also keep one prediction; $n = 8, 16$
#   (a clip of $n$ frames or fewer has no window: "—").
#
# **Cost with the real model (estimate, not measured):** the paper's full method runs at 0.41 frames/s
# on one A100 (SD 2.1). This notebook segments 28 frames 9 times (once, twice more for the authors'
# evaluation protocol, then the 6 rows of Table 2), about 28 × 9 / 0.41 ≈ 615 s, so **about 10-13 minutes
# of A100 time** plus loading the weights; lower
# the frame count in `setup(frames=...)` to go faster. On a CPU the real model is impractical here (hours).

# %% [markdown]
# ## Set-up: the backbone and the clip
#
# `setup()` (`vidseg_nb.notebook`) loads the backbone from `$VIDSEG_MODEL` (a Hub id, a diffusers folder or a
# single checkpoint file; default SD 2.1-base) and picks the clip: CamVid `0016E5` from `../shared/data` (or
# `$VIDSEG_DATA`) when that folder exists, otherwise a synthetic clip with exact labels.
# `VIDSEG_MODEL=tiny` builds a random model with the same block layout: it runs everything in seconds on a
# CPU (with fewer frames), but its pictures and numbers mean nothing. Install the package first
# (`pip install -e .` in the repository).

# %%
from vidseg_nb.notebook import setup

nb = setup(frames=(9, 28), dataset="camvid", synthetic_size=(192, 256))

# %%
# ruff: noqa: E402  (imports after the set-up cell)
import time

import numpy as np
from IPython.display import Markdown, display

from vidseg_nb.bench import PAPER_FPS_A100, flops_per_call, tflop_per_frame, work_formula
from vidseg_nb.config import preset
from vidseg_nb.evaluate import evaluate_clip, format_table, run_ablation
from vidseg_nb.metrics import apply_label_map, per_class_iou
from vidseg_nb.pipeline import VideoSegmenter, device_info
from vidseg_nb.viz import show_filtering, show_label_rows

backbone, TINY = nb.backbone, nb.tiny

# %% [markdown]
# ## A clip with ground truth
#
# CamVid's validation sequence 0016E5 (11 classes, void = 11) from `../shared/data` when present,
# otherwise a synthetic clip with exact labels. The real model uses 28 frames at 512 px with the
# paper's settings ($K = 20$, $B = 14$, $\lambda = 50$, $s = 0.7$); the tiny model 9 frames at 128 px
# and $K = 3$ (the ablation below segments the clip 6 more times). (CamVid here has SegNet's 11 classes; the paper's CamVid numbers use 32, so they are not
# comparable.)

# %%
MAX_SIDE = 128 if TINY else 512
small = dict(n_clusters=3, kmeans_n_init=2) if TINY else {}
config = preset("vidseg", max_side=MAX_SIDE, **small)

clip = nb.clip  # the clip setup() picked (9 frames with the tiny model, else 28)
raw, gt, clip_name, class_names = clip.frames, clip.labels, clip.name, clip.class_names
num_classes, ignore = clip.num_classes, clip.ignore_index
print(
    f"{clip_name}: {len(raw)} frames of {raw.shape[1]}x{raw.shape[2]}, {num_classes} classes, void = {ignore}"
)

# %% [markdown]
# ## The whole pipeline
#
# `segment` returns a `SegmentationResult`: `labels` $Y$ at the input size, the coarse maps $M^j$ and
# $\tilde M^j$ of every frame, `details` (every intermediate) for the frames in `keep`, timings and the
# backbone's work counters. The segmenter caches each stage per clip, so scoring the same clip again
# below, or a new $s$, costs no UNet call.

# %%
segmenter = VideoSegmenter(backbone, config)
result = segmenter.segment(raw, keep=[0], progress=False)
print(f"processing size {result.size}, feature grid {result.coarse_after.shape[1:]}, mode {result.mode}")
print("seconds:", {k: round(v, 2) for k, v in result.timings.items()})
print("work per frame:", {k: round(v, 1) for k, v in result.work_per_frame().items()})
show_label_rows(raw, {"$\\tilde M^j$ (coarse)": result.coarse_after, "$Y$ (clusters)": result.labels})

# %% [markdown]
# Frame 0's stage 3, from `result.details[0]` (a `FrameDetail`): raw $D_l$, filtered $\tilde D_l$ and $Y$
# at the processing size.

# %%
d = result.details[0]
show_filtering(d.frame, d.diff.labels, d.diff.raw, d.filtered, d.final, title="frame 0")

# %% [markdown]
# ## Scores with first-frame label assignment
#
# `evaluate_clip(segmenter, frames, gt, config, num_classes, ignore_index)` segments (from the cache
# here) and scores: `mapping` is the cluster → class assignment from frame 1, `conf` the confusion
# matrix (one extra last row/column for pixels of unassigned clusters, scored as errors).

# %%
before = backbone.counters.snapshot()
scores = evaluate_clip(segmenter, raw, gt, config, num_classes, ignore)
print("UNet samples for scoring (stages cached):", backbone.counters.since(before)["unet_samples"])
named = {c: (class_names[k] if k >= 0 else "unassigned") for c, k in scores["mapping"].items()}
print("cluster -> class:", named)


def pct(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{100 * x:.1f}"


print(f"mIoU {pct(scores['mIoU'])}   mVC8 {pct(scores['mVC8'])}   mVC16 {pct(scores['mVC16'])}  (in %)")
iou = per_class_iou(scores["conf"])[:num_classes]
print("per-class IoU:", ", ".join(f"{class_names[c]} {pct(v)}" for c, v in enumerate(iou) if np.isfinite(v)))
if nb.caveat:
    print(nb.caveat)

pred = apply_label_map(result.labels, scores["mapping"])  # class ids, -1 = unassigned (drawn black)
show_label_rows(raw, {"ground truth": np.where(gt == ignore, -1, gt), "$Y$ as classes": pred})

# %% [markdown]
# ## Two evaluation protocols: the paper's ("late") and the authors' code's ("authors")
#
# Above, the ground truth is used only at scoring (`protocol="late"`, SPEC 8). The authors' code
# (QianWangX/VidSeg_diffusion), whose numbers Table 1 reports, uses frame 1's ground truth earlier: right
# after stage 1 of the first batch each cluster takes the majority class of its cells in frame 1
# (clusters of one class merge), and these merged labels go through the KNN, CBR and modulation; the
# labels then are classes and are scored as they are. `evaluate_clip(..., protocol="authors")` runs that
# (one more segmentation: the ground truth changes stage 1, so the cache is not used). The `authors`
# preset also switches on the other eight places where their code differs from the paper's equations
# (`docs/authors.md`); with it the protocol defaults to `"authors"`. On the command line:
# `vidseg evaluate --protocol authors|late` and `vidseg ablate --protocol authors|late`.

# %%
authors_cfg = preset("authors", max_side=MAX_SIDE, **small)
runs = {
    "paper's method, late": evaluate_clip(segmenter, raw, gt, config, num_classes, ignore, protocol="late"),
    "paper's method, authors": evaluate_clip(
        segmenter, raw, gt, config, num_classes, ignore, protocol="authors"
    ),
    "authors preset, authors": evaluate_clip(segmenter, raw, gt, authors_cfg, num_classes, ignore),
}
for name, sc in runs.items():
    print(
        f"{name:<26} protocol {sc['protocol']:<8} mIoU {pct(sc['mIoU'])}  mVC8 {pct(sc['mVC8'])}  "
        f"mVC16 {pct(sc['mVC16'])}"
    )
if nb.caveat:
    print(nb.caveat)

# %% [markdown]
# ## The Table 2 ablation on this clip
#
# `run_ablation` runs the six rows of the paper's Table 2 (frames per batch $B$, masked modulation,
# feature aggregation, CBR) on a list of clips, each row a full segmentation, and `format_table` prints
# them in the paper's layout next to the paper's SD 2.1 numbers. Those were computed on 30 VSPW videos:
# one short clip is a sanity check, not a reproduction. `PROTOCOL = "authors"` runs the rows under the
# authors' protocol instead.

# %%
PROTOCOL = "late"
t0 = time.perf_counter()
rows = run_ablation(
    backbone, [(clip_name, raw, gt)], config, num_classes, ignore, progress=False, protocol=PROTOCOL
)
print(f"{len(rows)} rows in {time.perf_counter() - t0:.1f} s")
display(Markdown(format_table(rows, paper=True)))
if nb.caveat:
    print(f"{nb.caveat}; {len(raw)} frames < B = 14 is one batch")

# %% [markdown]
# ## Table 2 on the toy world (measured)
#
# One short clip cannot rank the components. The toy model (notebook 07) has held-out clips with exact
# labels, so the rows were run there on 5 clips of 16 frames at 256 px, $K = 5$, plus three rows of our
# own (the preview, $s = 1$, and neither blending nor filtering):
# `python -m vidseg_nb.toy.ablation --clips 5 --frames 16 --json docs/toy/ablation_toy.json`
# (about 90 minutes on 2 CPU cores). The cell reads that file: the numbers are the measured ones, and the
# deltas below are computed from them. Where the toy world disagrees with the paper, it says so.

# %%
import json

import matplotlib.pyplot as plt

from vidseg_nb.toy.ablation import ablation_markdown

toy_table = json.loads((nb.repo / "docs" / "toy" / "ablation_toy.json").read_text())
toy_rows = {r["row"]: r for r in toy_table["rows"]}
print(f"model {toy_table['model']}, clips {toy_table['clips']}, {toy_table['frames']} frames each")
display(Markdown(ablation_markdown(toy_table["rows"])))


def delta(a: str, b: str, key: str) -> float:
    """Score of row b minus row a, in points."""
    return 100 * (toy_rows[b][key] - toy_rows[a][key])


FULL, PREVIEW, S1 = (
    "B=14 +MM +agg +CBR",
    "full method, preview (no modulation)",
    "full method, s = 1 (no filtering)",
)
steps = [
    ("B = 1 -> B = 14 (scene context model)", "B=1", "B=14", "mVC8"),
    ("+ masked modulation", "B=14", "B=14 +MM", "mIoU"),
    ("+ feature aggregation", "B=14 +MM", "B=14 +MM +agg", "mIoU"),
    ("+ CBR (mIoU)", "B=14 +MM", "B=14 +MM +CBR", "mIoU"),
    ("+ CBR (mVC8)", "B=14 +MM", "B=14 +MM +CBR", "mVC8"),
    ("full method over the preview (mIoU)", PREVIEW, FULL, "mIoU"),
    ("full method over the preview (F)", PREVIEW, FULL, "F"),
    ("filter s = 0.7 over s = 1", S1, FULL, "mIoU"),
]
for label, a, b, key in steps:
    d = delta(a, b, key)
    print(f"{label:<40} {key:<5} {d:+5.1f} points  ({'helps' if d > 0 else 'does not help'} here)")

fig, ax = plt.subplots(figsize=(9, 3))
names = list(toy_rows)
short = [n.replace("full method, ", "").split(" (")[0] for n in names]
x = np.arange(len(names))
ax.bar(x - 0.2, [100 * toy_rows[n]["mIoU"] for n in names], 0.4, label="mIoU")
ax.bar(x + 0.2, [100 * toy_rows[n]["mVC8"] for n in names], 0.4, label="mVC8")
ax.set_xticks(x, short, rotation=30, ha="right")
ax.set_ylabel("%")
ax.legend()
ax.set_title("Table 2's rows on 5 held-out toy clips")
plt.show()

# %% [markdown]
# Read with the paper's Table 2 beside it: on the toy world, the masked modulation helps as in the paper
# (the largest gain in mIoU), and the scene context model (larger $B$) raises temporal consistency. Feature
# aggregation and CBR do **not** help mIoU here, unlike the paper: the toy clips have flat textured shapes
# whose features are already smooth within an object (a likely reason, not a measured one), so averaging
# with coarser layers and voting along trajectories mostly blur object borders. And the preview beats the full method on
# mIoU while the full method wins boundary F: the full-resolution maps draw sharper outlines but give
# some cells to the wrong object. `docs/toy.md` holds the per-clip rows.

# %% [markdown]
# ## Cost per frame
#
# Work is counted by the backbone while it runs; per frame with $L$ labels in its coarse map and
# $t_m = 22$ (3 denoising steps, CFG doubling each UNet batch) the method needs
# $3 \cdot 2 \cdot (1 + 2L)$ UNet samples (the reference run and $2L$ modulated runs), 1 VAE encode and
# $2L$ VAE decodes (`bench.work_formula`). `bench.flops_per_call` counts the FLOPs of one UNet sample,
# encode and decode of the real SD 2.1 architecture at 512 × 512 (built on torch's `meta` device: no
# weights, no memory), so the TFLOP per frame below hold for SD 2.1 whatever model ran here.

# %%
per_call = flops_per_call(512)
labels_per_frame = float(np.mean([len(np.unique(m)) for m in result.coarse_after]))
measured = result.work_per_frame()
formula = work_formula(round(labels_per_frame), config.t_m, config.n_steps)
print(f"labels per frame L = {labels_per_frame:.2f}")
print(f"{'per frame':<16}{'measured':>10}{'formula':>10}")
for key in ("unet_samples", "vae_encodes", "vae_decodes"):
    print(f"{key:<16}{measured[key]:>10.1f}{formula[key]:>10}")
print(
    f"TFLOP per frame at SD 2.1 size (512 px) for this clip's work: {tflop_per_frame(measured, per_call):.0f}"
)
print(f"  for L = 10 (a typical VSPW frame): {tflop_per_frame(work_formula(10), per_call):.0f}")
seconds = sum(result.timings.values()) / len(result)
print(
    f"here ({device_info(backbone)}, {backbone.source}): {seconds:.2f} s per frame; paper, SD 2.1 on one "
    f"A100: {1 / PAPER_FPS_A100:.1f} s per frame ({PAPER_FPS_A100} frames/s)"
)
