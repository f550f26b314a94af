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
# # 05 · Names for segments: open-vocabulary labels from cross-attention (issue 13)
#
# The method's labels are cluster ids: colour 3 means "cluster 3", and the paper's scores need the first
# frame's ground truth to turn clusters into classes. Stable Diffusion's cross-attention layers (`attn2`)
# tie every cell of the UNet to text tokens, so the clusters can be *named*:
#
# 1. during the reference run (notebook 01), at the feature step, the cross-attention **queries**
#    (`attn2.to_q` output, conditional half) of decoder blocks 3-8 are recorded for the first batch
#    (float16 on the CPU, about 5.9 MB per 512 px frame);
# 2. each word $v$ of a vocabulary is embedded alone in "a photo of a {}" with the backbone's own text
#    encoder; its keys $k_{l,v} = $ `to_k`$_l(s_v)$ against the recorded queries give, per layer, the
#    softmax over the prompt's tokens; averaging over the word's sub-word tokens, the heads and the layers
#    (resized to the feature grid) gives the attention $A[n, y, x, v]$ of every cell to every word;
# 3. each cluster $c$ of $\tilde M$ (first batch) scores a word by the mean of $A / \mathrm{mean}_{y,x} A$
#    over its cells; its name is the best word (or "unnamed" when the margin over the second best is
#    under 0.1). Names are decided on the first batch and carried with the cluster ids.
#
# A new vocabulary costs **no UNet work**: only the text encoder and each layer's `to_k`.
#
# **Cost with the real model (estimate, not measured):** one segmentation of 16 frames at 512 px on an
# A100 (about 40 s at the paper's 0.41 frames/s) plus a second of text encoding per vocabulary. With the
# tiny random model (`VIDSEG_MODEL=tiny`, as in CI) everything runs on a CPU in about a minute, **but its
# names are random**: they show the plumbing, not what SD 2.1 would say.

# %%
from vidseg_nb.notebook import setup

nb = setup(frames=(6, 16), dataset="camvid", synthetic_size=(128, 128))

# %%
# ruff: noqa: E402  (imports after the set-up cell)
import numpy as np

from vidseg_nb.config import preset
from vidseg_nb.evaluation import evaluate_clip
from vidseg_nb.names import merge_same_names, vocabulary_for_dataset
from vidseg_nb.pipeline import VideoSegmenter
from vidseg_nb.video import overlay_frames
from vidseg_nb.viz import draw_legend, legend_entries, show_images, show_label_rows, word_attention_panels

backbone, TINY, clip = nb.backbone, nb.tiny, nb.clip
RANDOM = f" {nb.caveat}" if nb.caveat else ""

# %% [markdown]
# ## A named segmentation
#
# `segment(clip, names=[...])` records the queries, segments as usual (the labels are the same as without
# names) and fills `result.names`: label id → `ClusterName(name, score, margin, best)`.
# `result.word_attention` is $A$ of the first batch, (B, h, w, V).

# %%
real_camvid = clip.name.startswith("CamVid")
from vidseg_nb.toy import is_toy
from vidseg_nb.toy.world import COLOURS

if real_camvid:
    words = vocabulary_for_dataset("camvid")
elif is_toy(backbone):  # the toy model knows its own colour words (each one token of its tokenizer)
    words = list(COLOURS)
else:
    words = ["person", "car", "road", "tree", "sky"]
small = dict(n_clusters=3, kmeans_n_init=2, batch_size=3) if TINY else dict(batch_size=8)
config = preset("vidseg", max_side=128 if TINY else 512, **small)
segmenter = VideoSegmenter(backbone, config)
result = segmenter.segment(clip.frames, names=words, progress=False)
print("vocabulary:", ", ".join(result.vocabulary))
print("word attention A of the first batch:", tuple(result.word_attention.shape))
for i, n in result.names.items():
    print(
        f"  cluster {i}: {n.name:12s} score {n.score:.3f}  margin {n.margin:.3f}  best word {n.best!r}{RANDOM}"
    )

# %% [markdown]
# ## Per-word attention maps of frame 0
#
# One map per word ($A[0, :, :, v]$, min-max scaled per word, blended over the frame).

# %%
panels = word_attention_panels(result.word_attention, result.vocabulary, clip.frames[0], index=0)
show_images([p for p, _ in panels], [c for _, c in panels], cols=min(6, len(panels)),
            suptitle="frame 0: attention to each word" + RANDOM)  # fmt: skip

# %% [markdown]
# ## The named segmentation, with its legend

# %%
entries = legend_entries(result.names, ids=np.unique(result.labels).tolist())
last = len(result) - 1
shown = [draw_legend(f, entries) for f in overlay_frames(clip.frames[[0, last]], result.labels[[0, last]])]
show_images(shown, [f"frame 0{RANDOM}", f"frame {last}"], cols=2)

# %% [markdown]
# ## Another vocabulary: zero UNet samples
#
# `segmenter.rename(result, words)` names the same result from its cached queries.

# %%
before = backbone.counters.snapshot()
other = segmenter.rename(result, ["building", "sidewalk", "bicycle", "sky"])
print("UNet samples for the new vocabulary:", backbone.counters.since(before)["unet_samples"])
print({i: n.name for i, n in other.names.items()}, RANDOM)

# %% [markdown]
# Clusters that got the same name can be merged (`merge_same_names`): every member id maps to the
# smallest, ids are not renumbered; "unnamed" clusters are never merged. Here with margin 0, so that every
# cluster takes its best word (with the tiny model every margin is tiny, and every cluster would stay
# unnamed).

# %%
loose = segmenter.rename(result, ["building", "sidewalk", "sky"], margin=0.0)
merged, merged_names = merge_same_names(loose.labels, loose.names)
print("names:", {i: n.name for i, n in loose.names.items()}, RANDOM)
print(
    "clusters",
    len(np.unique(loose.labels)),
    "->",
    len(np.unique(merged)),
    {i: n.name for i, n in merged_names.items()},
)
show_label_rows(clip.frames, {"$Y$ (clusters)": loose.labels, "$Y$ merged by name": merged})

# %% [markdown]
# ## Scores with no ground truth for the assignment
#
# `evaluate_clip(..., assign="names", vocabulary=class_names)`: each cluster gets the class whose name
# scores highest; the assignment reads no ground-truth frame (the scores then compare with the ground
# truth, as always). `assign="both"` also gives today's first-frame assignment.

# %%
class_words = vocabulary_for_dataset("camvid") if real_camvid else clip.class_names
scores = evaluate_clip(segmenter, clip.frames, clip.labels, config, clip.num_classes, clip.ignore_index,
                       assign="both", vocabulary=class_words)  # fmt: skip


def pct(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{100 * x:.1f}"


print(f"first-frame assignment: mIoU {pct(scores['mIoU'])}  mVC8 {pct(scores['mVC8'])}{RANDOM}")
by = scores["by_names"]
print(f"assignment by names:    mIoU {pct(by['mIoU'])}  mVC8 {pct(by['mVC8'])}{RANDOM}")
print("cluster -> class by names:", by["names"])

# %% [markdown]
# The real-weight measurement (named mIoU on CamVid with SD 2.1) has not been made yet; `docs/perf.md`
# ("Names (issue 13)") gives the exact command to produce it on a GPU.
