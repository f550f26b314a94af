"""The toy model's quality table, measured on the held-out toy clips (:data:`~vidseg_nb.toy.world.EVAL_SEEDS`).

Per clip (``n_objects`` planted objects, exact labels; clusters assigned to classes on frame 1 as
``vidseg evaluate`` does, :func:`~vidseg_nb.evaluation.protocol.score_result`):

- ``preview_mIoU`` / ``full_mIoU``: mIoU of the coarse maps upsampled (preview) and of the full method
  (masked modulation, D~_l, argmax);
- ``full_mVC8``: video consistency over 8-frame windows of the full labels; ``preview_mVC8`` and
  ``norefine_mVC8`` the same for the preview with CBR on and off (M~ vs M);
- ``full_F`` / ``preview_F``: DAVIS boundary F of the planted objects (first and last frame dropped);
- ``s1_mIoU`` / ``s1_F``: the full method with the filter off (s = 1: D~_l = D_l), zero extra UNet work;
- ``ARI``: adjusted Rand index of the context model's coarse maps M (every frame) against the ground truth
  sampled at the cell centres (0 = chance, 1 = the same partition);
- ``colour_named`` / ``shape_named``: share of the planted objects whose cluster (the cluster holding most
  of the object's cells, over all frames) is named (issue 13's names) with its own colour word, resp. shape
  word (from the colour or shape vocabulary alone; ``*_best``: the top word even where the margin rule
  leaves the cluster unnamed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..config import SegConfig
from .world import COLOURS, EVAL_SEEDS, SHAPE_WORDS, make_toy_clip

__all__ = ["QualitySettings", "clip_quality", "measure", "summary", "table_markdown"]

METRICS = (
    "preview_mIoU",
    "full_mIoU",
    "s1_mIoU",
    "preview_F",
    "full_F",
    "s1_F",
    "preview_mVC8",
    "norefine_mVC8",
    "full_mVC8",
    "ARI",
    "colour_named",
    "shape_named",
    "colour_best",
    "shape_best",
)


@dataclass(frozen=True)
class QualitySettings:
    """The held-out clips and the setting they are segmented with."""

    seeds: tuple[int, ...] = EVAL_SEEDS
    n_frames: int = 12
    size: int = 256
    n_objects: int = 3
    n_clusters: int = 5
    batch_size: int = 6

    def config(self) -> SegConfig:
        return SegConfig(n_clusters=self.n_clusters, batch_size=self.batch_size, max_side=self.size, seed=0)


def _ari(coarse: np.ndarray, gt: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    n, h, w = coarse.shape
    ys = ((np.arange(h) + 0.5) * gt.shape[1] / h).astype(int)
    xs = ((np.arange(w) + 0.5) * gt.shape[2] / w).astype(int)
    return float(adjusted_rand_score(gt[:, ys][:, :, xs].ravel(), coarse.ravel()))


def _object_clusters(coarse: np.ndarray, gt: np.ndarray, n_objects: int) -> list[int]:
    """Per object (label 1..n): the cluster of M holding most of its cells, over all frames."""
    from ..video import resize_labels

    g = resize_labels(gt, coarse.shape[1:])
    out = []
    for o in range(1, n_objects + 1):
        vals = coarse[g == o]
        out.append(int(np.bincount(vals).argmax()) if vals.size else -1)
    return out


def _named_share(names: dict[int, Any], clusters: list[int], words: list[str]) -> tuple[float, float]:
    named = [names.get(c) is not None and names[c].name == w for c, w in zip(clusters, words)]
    best = [names.get(c) is not None and names[c].best == w for c, w in zip(clusters, words)]
    return float(np.mean(named)), float(np.mean(best))


def clip_quality(
    segmenter: Any,
    seed: int,
    qs: QualitySettings = QualitySettings(),
    config: SegConfig | None = None,
    *,
    names: bool = True,
    colour_words: Sequence[str] | None = None,
    shape_words: Sequence[str] | None = None,
) -> dict[str, float]:
    """The metrics of :mod:`this module <vidseg_nb.toy.quality>` on toy clip ``seed`` (one full run, the
    rest from the stage cache: preview, s = 1, CBR off and the second vocabulary cost no UNet sample)."""
    from ..evaluation.protocol import score_result

    cfg = config or qs.config()
    clip = make_toy_clip(seed, qs.n_frames, qs.size, qs.n_objects, speed=3.0)
    gt, c = clip.labels, qs.n_objects + 1
    colours = list(colour_words or COLOURS)
    shapes = list(shape_words or dict.fromkeys(SHAPE_WORDS.values()))
    t0 = time.perf_counter()
    full = segmenter.segment(
        clip.frames, cfg, mode="full", keep=None, progress=False, names=colours if names else None
    )
    seconds = time.perf_counter() - t0

    def score(res: Any) -> dict[str, Any]:
        return score_result(res.labels, res.coarse_before, gt, c, davis=True)

    row: dict[str, float] = dict(seed=seed, seconds=round(seconds, 1))
    sf = score(full)
    row.update(full_mIoU=sf["mIoU"], full_F=sf["F"], full_mVC8=sf["mVC8"])
    pre = score(segmenter.segment(clip.frames, cfg, mode="preview", keep=None, progress=False))
    row.update(preview_mIoU=pre["mIoU"], preview_F=pre["F"], preview_mVC8=pre["mVC8"])
    s1 = score(segmenter.segment(clip.frames, cfg.replace(s=1.0), mode="full", keep=None, progress=False))
    row.update(s1_mIoU=s1["mIoU"], s1_F=s1["F"])
    nr = segmenter.segment(clip.frames, cfg.replace(refine=False), mode="preview", keep=None, progress=False)
    row["norefine_mVC8"] = score(nr)["mVC8"]
    row["ARI"] = _ari(full.coarse_before, gt)
    if names:
        clusters = _object_clusters(full.coarse_before, gt, qs.n_objects)
        row["colour_named"], row["colour_best"] = _named_share(
            full.names, clusters, [o.colour for o in clip.objects]
        )
        by_shape = segmenter.rename(full, shapes)
        row["shape_named"], row["shape_best"] = _named_share(
            by_shape.names, clusters, [o.shape for o in clip.objects]
        )
    row["work"] = dict(full.work)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}


def measure(
    backbone: Any,
    qs: QualitySettings = QualitySettings(),
    config: SegConfig | None = None,
    *,
    names: bool = True,
    progress: bool = False,
    **kw: Any,
) -> list[dict[str, float]]:
    """:func:`clip_quality` on every held-out clip of ``qs`` with ``backbone``."""
    from ..pipeline import VideoSegmenter

    rows = []
    for seed in qs.seeds:
        seg = VideoSegmenter(backbone, config or qs.config())
        rows.append(
            clip_quality(
                seg,
                seed,
                qs,
                config,
                names=names and getattr(backbone, "text_encoder", None) is not None,
                **kw,
            )
        )
        if progress:
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "work"}), file=sys.stderr, flush=True)
    return rows


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the clips (``ARI_min``, ``full_mIoU_min``: the worst clip)."""
    out = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in METRICS if all(k in r for r in rows)}
    for k in ("ARI", "full_mIoU"):
        if all(k in r for r in rows):
            out[f"{k}_min"] = round(float(min(r[k] for r in rows)), 4)
    return out


def table_markdown(rows: list[dict[str, float]], metrics: Sequence[str] = METRICS) -> str:
    """Rows (one per clip, then the mean) as a Markdown table."""
    ms = [m for m in metrics if all(m in r for r in rows)]
    mean = summary(rows)
    lines = ["| clip | " + " | ".join(ms) + " |", "|---|" + "---|" * len(ms)]
    for r in rows:
        lines.append(f"| {r['seed']} | " + " | ".join(f"{r[m]:.3f}" for m in ms) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{mean[m]:.3f}**" for m in ms) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m vidseg_nb.toy.quality [--model toy] [--json F] [--manifest]``: the table on this machine."""
    import torch

    from ..loading import load_backbone
    from . import manifest, model_path
    from .train import write_manifest

    p = argparse.ArgumentParser(prog="python -m vidseg_nb.toy.quality")
    p.add_argument("--model", default="toy")
    p.add_argument("--json", default=None, help="write the rows and the summary here")
    p.add_argument("--manifest", action="store_true", help="write the summary into the model's MANIFEST.json")
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bb = load_backbone(a.model, device="cpu")
    t0 = time.time()
    rows = measure(bb, progress=True)
    summ = summary(rows)
    print(table_markdown(rows))
    print(json.dumps(summ))
    info = dict(
        settings=asdict(QualitySettings()), rows=rows, summary=summ, seconds=round(time.time() - t0, 1)
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(info, f, indent=1)
    if a.manifest:
        folder = model_path() if a.model == "toy" else a.model
        write_manifest(folder, None, quality=dict(summary=summ, settings=info["settings"]))
        print("quality written to", folder, manifest(folder)["files"].keys())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
