"""The paper's Table 2 ablation (B, masked modulation, feature aggregation, CBR): its rows as
:class:`~vidseg_nb.config.SegConfig` overrides, running them on clips, and the Markdown tables.

Scores are fractions in [0, 1]; the tables print percentages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from ..config import SegConfig
from .protocol import evaluate_clip, resolve_protocol, summarize

__all__ = [
    "TABLE2_ROWS",
    "PAPER_TABLE2_SD",
    "PAPER_TABLE2_NOTE",
    "RANDOM_NOTE",
    "run_ablation",
    "format_table",
    "format_summary",
    "synthetic_clips",
    "dataset_clips",
]

_MM_OFF = dict(masked_modulation=False, lam=10.0, s=1.0)  # EmerDiff's modulation: no blending, lambda 10
_MM_ON = dict(masked_modulation=True, lam=50.0, s=0.7)  # the paper's masked modulation, lambda 50

TABLE2_ROWS: list[tuple[str, dict[str, Any]]] = [
    ("B=1", dict(batch_size=1, **_MM_OFF, aggregate=False, refine=False)),
    ("B=14", dict(batch_size=14, **_MM_OFF, aggregate=False, refine=False)),
    ("B=14 +MM", dict(batch_size=14, **_MM_ON, aggregate=False, refine=False)),
    ("B=14 +MM +agg", dict(batch_size=14, **_MM_ON, aggregate=True, refine=False)),
    ("B=14 +MM +CBR", dict(batch_size=14, **_MM_ON, aggregate=False, refine=True)),
    ("B=14 +MM +agg +CBR", dict(batch_size=14, **_MM_ON, aggregate=True, refine=True)),
]
"""The rows of the paper's Table 2 (ablation), in its order, as :class:`SegConfig` overrides:
(B, masked modulation, feature aggregation, CBR). Masked modulation off means EmerDiff's modulation
(no latent blending, no filtering, lambda 10); on means blending + filtering with lambda 50, s 0.7."""

PAPER_TABLE2_SD: list[tuple[float, float, float]] = [
    (33.4, 70.6, 60.2),
    (43.4, 76.9, 73.8),
    (45.6, 87.5, 85.5),
    (46.6, 87.6, 85.7),
    (47.4, 89.2, 87.5),
    (46.5, 89.8, 88.4),
]
"""The paper's SD 2.1 numbers (mIoU, mVC_8, mVC_16 in %) for :data:`TABLE2_ROWS`, on the first 30 VSPW
validation videos. For reference next to ours, never as our results."""

PAPER_TABLE2_NOTE = "paper: SD 2.1 on the first 30 VSPW validation videos (Table 2), not computed here"
RANDOM_NOTE = "random-weight 'tiny' model: these are smoke-test figures, not quality claims"


def run_ablation(
    backbone: Any,
    clips: Sequence[tuple],
    base_config: SegConfig,
    num_classes: int,
    ignore_index: int = 255,
    rows: Sequence[tuple[str, Mapping[str, Any]]] = TABLE2_ROWS,
    progress: bool = True,
    protocol: str | None = None,
) -> list[dict[str, Any]]:
    """Run every row of ``rows`` (default: the paper's Table 2) on ``clips`` = [(name, frames, gt), ...]
    (optionally (name, frames, gt, num_classes, ignore_index) per clip) in full mode, and pool each row
    with :func:`~.protocol.summarize`.

    Returns one dict per row: ``row`` (name), ``overrides``, ``config``, ``batch_size``,
    ``masked_modulation``, ``aggregate``, ``refine``, ``mIoU``, ``mVC8``, ``mVC16``, ``seconds``,
    ``summary``, ``per_clip`` (name -> :func:`~.protocol.evaluate_clip` result) and ``protocol``.
    ``protocol``: ``"late"`` or ``"authors"`` (issue 15; default from ``base_config.gt_merge``), see
    :func:`~.protocol.evaluate_clip`.
    """
    protocol = resolve_protocol(base_config, protocol)
    from ..pipeline import VideoSegmenter

    configs = [(name, dict(over), base_config.replace(**over)) for name, over in rows]
    per_row: list[dict[str, dict[str, Any]]] = [{} for _ in configs]
    bar = tqdm(total=len(configs) * len(clips), desc="ablation", disable=not progress)
    try:
        for clip in clips:
            cname, frames, gt = clip[:3]
            nc = int(clip[3]) if len(clip) > 3 else num_classes
            ig = int(clip[4]) if len(clip) > 4 else ignore_index
            seg = VideoSegmenter(backbone, base_config, cache_frames=0)
            for i, (rname, _, cfg) in enumerate(configs):
                bar.set_postfix_str(f"{cname} {rname}")
                per_row[i][cname] = evaluate_clip(
                    seg, frames, gt, cfg, nc, ig, mode="full", protocol=protocol
                )
                bar.update(1)
    finally:
        bar.close()
    results = []
    for (rname, over, cfg), clips_res in zip(configs, per_row):
        s = summarize(list(clips_res.values()))
        results.append(
            {
                "row": rname,
                "overrides": over,
                "config": cfg,
                "batch_size": cfg.batch_size,
                "masked_modulation": cfg.masked_modulation,
                "aggregate": cfg.aggregate,
                "refine": cfg.refine,
                "mIoU": s["mIoU"],
                "mVC8": s["mVC8"],
                "mVC16": s["mVC16"],
                "seconds": s.get("seconds", 0.0),
                "summary": s,
                "per_clip": clips_res,
                "protocol": protocol,
            }
        )
    return results


def _pct(x: Any) -> str:
    if x is None or not math.isfinite(float(x)):
        return "—"
    return f"{100 * float(x):.1f}"


def _mark(b: bool) -> str:
    return "✓" if b else "✗"


def format_table(results: Sequence[Mapping[str, Any]], paper: bool = True) -> str:
    """Markdown table in the layout of the paper's Table 2 (scores in %; "—" = undefined, e.g. mVC_16 of
    clips of 16 frames or fewer). With ``paper=True`` the paper's SD 2.1 numbers for the same rows follow
    in extra columns, with a note saying where they come from."""
    head = ["B", "Masked Modulation", "Feature Aggregation", "CBR", "mIoU", "mVC8", "mVC16"]
    paper_rows = {name: vals for (name, _), vals in zip(TABLE2_ROWS, PAPER_TABLE2_SD)}
    if paper:
        head += ["paper mIoU", "paper mVC8", "paper mVC16"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in results:
        cells = [
            str(r["batch_size"]),
            _mark(r["masked_modulation"]),
            _mark(r["aggregate"]),
            _mark(r["refine"]),
            _pct(r["mIoU"]),
            _pct(r["mVC8"]),
            _pct(r["mVC16"]),
        ]
        if paper:
            vals = paper_rows.get(r.get("row"))
            cells += [f"{v:.1f}" for v in vals] if vals else ["—"] * 3
        lines.append("| " + " | ".join(cells) + " |")
    if paper:
        lines.append("")
        lines.append(f"({PAPER_TABLE2_NOTE})")
    return "\n".join(lines)


def format_summary(summary: Mapping[str, Any], davis: bool | None = None) -> str:
    """A one-row markdown table of a :func:`~.protocol.summarize` result: mIoU, mVC8, mVC16 (and J, F,
    J&F for DAVIS), in %; a ``failed`` column when videos failed."""
    davis = ("J" in summary) if davis is None else davis
    keys = ["J", "F", "J&F"] if davis else ["mIoU", "mVC8", "mVC16"]
    if davis:
        keys += ["mIoU"]
    head = ["videos", "frames", *keys]
    cells = [
        str(summary.get("videos", 0)),
        str(summary.get("frames", 0)),
        *(_pct(summary.get(k)) for k in keys),
    ]
    if summary.get("failed"):
        head.append("failed")
        cells.append(str(summary["failed"]))
    return (
        "| " + " | ".join(head) + " |\n|" + "|".join("---" for _ in head) + "|\n| " + " | ".join(cells) + " |"
    )


def synthetic_clips(n: int, n_frames: int = 8, size: int = 128, n_objects: int = 3) -> list[tuple]:
    """``n`` seeded synthetic clips as (name, frames, gt, num_classes, ignore_index) for :func:`run_ablation`."""
    from ..synthetic import make_clip

    out = []
    for i in range(n):
        c = make_clip(n_frames=n_frames, height=size, width=size, n_objects=n_objects, seed=i, speed=3.0)
        out.append((f"synthetic{i}", c.frames, c.labels, c.n_labels, 255))
    return out


def dataset_clips(dataset: Any, videos: int | None, max_frames: int | None) -> list[tuple]:
    """The first ``videos`` videos of a dataset as (name, frames, gt, num_classes, ignore_index)."""
    ds = dataset.select(videos) if videos is not None else dataset
    return [
        (s.name, s.load_frames(max_frames), s.load_labels(max_frames), s.num_classes, s.ignore_index)
        for s in ds
    ]
