"""The paper's Table 2 on the toy world: its six rows, plus the rows that take masked modulation apart
(the preview without modulation, filtering off, blending and filtering off at the same lambda), on the
held-out toy clips, with mIoU, boundary F and mVC_8 of the full labels.

``python -m vidseg_nb.toy.ablation [--model toy] [--clips 5] [--frames 16] [--json F]``. Each clip goes
through one :class:`~vidseg_nb.pipeline.VideoSegmenter` with its stage cache, so rows that differ only in
a later stage reuse the earlier ones (the work counters per row say what each one cost).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import SegConfig
from ..evaluation.ablation import PAPER_TABLE2_SD, TABLE2_ROWS
from .world import EVAL_SEEDS, make_toy_clip

__all__ = ["TOY_ROWS", "run_toy_ablation", "ablation_markdown"]

_FULL = dict(batch_size=14, masked_modulation=True, lam=50.0, s=0.7, aggregate=True, refine=True)
TOY_ROWS: list[tuple[str, dict[str, Any], str]] = [
    *((name, dict(over), "full") for name, over in TABLE2_ROWS),
    ("full method, preview (no modulation)", dict(_FULL), "preview"),
    ("full method, s = 1 (no filtering)", {**_FULL, "s": 1.0}, "full"),
    ("full method, no blending, no filtering (lambda 50)", {**_FULL, "masked_modulation": False}, "full"),
]
"""(name, :class:`SegConfig` overrides, mode): the paper's Table 2 rows (:data:`TABLE2_ROWS`, in its
order), then three rows that separate what the masked modulation consists of."""


def run_toy_ablation(
    backbone: Any,
    seeds: Sequence[int] = EVAL_SEEDS,
    *,
    n_frames: int = 16,
    size: int = 256,
    n_objects: int = 3,
    n_clusters: int = 5,
    rows: Sequence[tuple[str, dict[str, Any], str]] = TOY_ROWS,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Every row of ``rows`` on the toy clips ``seeds``: one dict per row with the mean ``mIoU``, ``F``
    (DAVIS boundary F of the planted objects), ``mVC8``, the per-clip values and the ``work`` done."""
    from ..evaluation.protocol import score_result
    from ..pipeline import VideoSegmenter

    base = SegConfig(n_clusters=n_clusters, max_side=size, seed=0)
    per_row: list[list[dict[str, Any]]] = [[] for _ in rows]
    for seed in seeds:
        clip = make_toy_clip(seed, n_frames, size, n_objects, speed=3.0)
        seg = VideoSegmenter(backbone, base)
        for i, (name, over, mode) in enumerate(rows):
            t0 = time.perf_counter()
            res = seg.segment(clip.frames, base.replace(**over), mode=mode, keep=None, progress=False)
            sc = score_result(res.labels, res.coarse_before, clip.labels, n_objects + 1, davis=True)
            per_row[i].append(
                dict(seed=seed, mIoU=sc["mIoU"], F=sc["F"], mVC8=sc["mVC8"], work=dict(res.work),
                     seconds=round(time.perf_counter() - t0, 1))
            )  # fmt: skip
            if progress:
                print(f"clip {seed} | {name}: " + json.dumps(per_row[i][-1]), file=sys.stderr, flush=True)
    out = []
    for (name, over, mode), clips in zip(rows, per_row):
        out.append(
            dict(
                row=name,
                overrides=over,
                mode=mode,
                **{k: round(float(np.mean([c[k] for c in clips])), 4) for k in ("mIoU", "F", "mVC8")},
                unet_samples=int(sum(c["work"].get("unet_samples", 0) for c in clips)),
                seconds=round(sum(c["seconds"] for c in clips), 1),
                per_clip=clips,
            )
        )
    return out


def ablation_markdown(results: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (scores in %), the paper's SD 2.1 Table 2 numbers beside its rows."""
    paper = {name: vals for (name, _), vals in zip(TABLE2_ROWS, PAPER_TABLE2_SD)}
    lines = [
        "| row | mIoU | boundary F | mVC8 | UNet samples | paper mIoU | paper mVC8 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p = paper.get(r["row"])
        lines.append(
            f"| {r['row']} | {100 * r['mIoU']:.1f} | {100 * r['F']:.1f} | {100 * r['mVC8']:.1f} | "
            f"{r['unet_samples']} | " + (f"{p[0]:.1f} | {p[1]:.1f} |" if p else "— | — |")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m vidseg_nb.toy.ablation``: the table on this machine."""
    import torch

    from ..loading import load_backbone

    p = argparse.ArgumentParser(prog="python -m vidseg_nb.toy.ablation")
    p.add_argument("--model", default="toy")
    p.add_argument("--clips", type=int, default=5, help="the first N held-out toy clips")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    bb = load_backbone(a.model, device="cpu")
    t0 = time.time()
    res = run_toy_ablation(bb, EVAL_SEEDS[: a.clips], n_frames=a.frames, progress=True)
    print(ablation_markdown(res))
    if a.json:
        info = dict(model=a.model, clips=list(EVAL_SEEDS[: a.clips]), frames=a.frames, rows=res,
                    seconds=round(time.time() - t0, 1), threads=a.threads)  # fmt: skip
        with open(a.json, "w") as f:
            json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
