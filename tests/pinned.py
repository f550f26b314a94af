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
    """Labels, coarse maps before/after refinement of the pinned case."""
    from vidseg_nb.config import preset
    from vidseg_nb.loading import load_backbone
    from vidseg_nb.pipeline import VideoSegmenter
    from vidseg_nb.synthetic import make_clip

    bb = backbone if backbone is not None else load_backbone(case["model"], device="cpu")
    clip = make_clip(n_frames=case["n_frames"], height=130, width=140, n_objects=2, seed=5)
    res = VideoSegmenter(bb, preset(case["preset"], **case["over"]), cache_frames=0).segment(
        clip.frames, keep=None, progress=False
    )
    return dict(labels=res.labels, before=res.coarse_before, after=res.coarse_after)


def main() -> None:
    out = {}
    for name, case in (("sd", SD_CASE), ("svd", SVD_CASE)):
        for k, v in compute(case).items():
            out[f"{name}_{k}"] = v
    PIN_FILE.parent.mkdir(exist_ok=True)
    np.savez_compressed(PIN_FILE, **out)
    print({k: (v.shape, np.unique(v).tolist()) for k, v in out.items()})


if __name__ == "__main__":
    main()
