"""Labels of short clips pinned before the architecture refactor (issue 11): the same clip, config and seed
must give the same labels afterwards, for SD and SVD (tiny models).

Regenerate only on purpose (a change that is meant to change labels): ``python tests/pinned.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PIN_FILE = Path(__file__).with_name("data") / "pinned_labels.npz"
# 7 frames in batches of 3 (a short last batch), 128x128 processing size, 3 denoising steps (SD)
SD_CASE = dict(
    model="tiny",
    preset="vidseg",
    n_frames=7,
    over=dict(n_clusters=3, kmeans_n_init=2, max_side=256, batch_size=3),
)
SVD_CASE = dict(
    model="tiny-svd",
    preset="svd",
    n_frames=5,
    over=dict(n_clusters=3, kmeans_n_init=2, max_side=128, batch_size=3),
)


def compute(case: dict, backbone=None) -> dict[str, np.ndarray]:
    """Labels, coarse maps before/after refinement of the pinned case, and ``margin`` (N, H0, W0): the gap
    between the two largest filtered maps D~_l at each pixel of Y, relative to max |D~_l| (not pinned: the
    test uses it to tell a near-tie from a real change)."""
    from vidseg_nb.config import preset
    from vidseg_nb.loading import load_backbone
    from vidseg_nb.pipeline import VideoSegmenter
    from vidseg_nb.synthetic import make_clip
    from vidseg_nb.video import resize_labels

    bb = backbone if backbone is not None else load_backbone(case["model"], device="cpu")
    clip = make_clip(n_frames=case["n_frames"], height=130, width=140, n_objects=2, seed=5)
    res = VideoSegmenter(bb, preset(case["preset"], **case["over"]), cache_frames=0).segment(
        clip.frames, keep="all", progress=False
    )
    margins = []
    for i in range(len(res)):
        d = res.details[i].filtered  # (L, h, w) D~_l of frame i (L: the labels present in its coarse map)
        top = np.sort(d, axis=0)
        gap = top[-1] - top[-2] if len(d) > 1 else np.full(d.shape[1:], np.inf)
        rel = np.minimum(gap / max(float(np.abs(d).max()), 1e-12), 1.0)
        # Y is resized to the input size by nearest neighbour: carry each pixel's margin with it (1e-9 units)
        margins.append(resize_labels(np.round(rel * 1e9).astype(np.int64), res.labels.shape[1:3]) / 1e9)
    margin = np.stack(margins)
    return dict(labels=res.labels, before=res.coarse_before, after=res.coarse_after, margin=margin)


def main() -> None:
    out = {}
    for name, case in (("sd", SD_CASE), ("svd", SVD_CASE)):
        for k, v in compute(case).items():
            if k != "margin":
                out[f"{name}_{k}"] = v
    PIN_FILE.parent.mkdir(exist_ok=True)
    np.savez_compressed(PIN_FILE, **out)
    print({k: (v.shape, np.unique(v).tolist()) for k, v in out.items()})


if __name__ == "__main__":
    main()
