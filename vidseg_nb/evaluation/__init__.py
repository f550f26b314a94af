"""Evaluation (SPEC 8), split by concern; none of these modules imports the command line.

- :mod:`.protocol`: label assignment, scoring one clip, pooling clips (:func:`evaluate_clip`,
  :func:`score_result`, :func:`summarize`); pure numpy on top of :mod:`vidseg_nb.metrics`.
- :mod:`.store`: the resumable ``per_video.jsonl`` + ``run.json`` + ``summary.json`` of a dataset run.
- :mod:`.runner`: :func:`evaluate_dataset`, locally or on Ray (one model per actor).
- :mod:`.ablation`: the paper's Table 2 rows, :func:`run_ablation`, the Markdown tables.
"""

from __future__ import annotations

from .ablation import (
    PAPER_TABLE2_NOTE,
    PAPER_TABLE2_SD,
    RANDOM_NOTE,
    TABLE2_ROWS,
    dataset_clips,
    format_summary,
    format_table,
    run_ablation,
    synthetic_clips,
)
from .protocol import (
    PROTOCOLS,
    VC_WINDOWS,
    davis_objects,
    evaluate_clip,
    resolve_mode,
    resolve_protocol,
    score_result,
    summarize,
)
from .runner import (
    RAY_HINT,
    VideoWorker,
    eval_sample,
    eval_sample_safely,
    evaluate_dataset,
    import_ray,
    is_davis,
    is_random_source,
    ray_plan,
)
from .store import PER_VIDEO, RUN_INFO, SUMMARY, json_value, read_per_video

__all__ = [
    "PAPER_TABLE2_NOTE",
    "PAPER_TABLE2_SD",
    "PER_VIDEO",
    "PROTOCOLS",
    "RANDOM_NOTE",
    "RAY_HINT",
    "RUN_INFO",
    "SUMMARY",
    "TABLE2_ROWS",
    "VC_WINDOWS",
    "VideoWorker",
    "dataset_clips",
    "davis_objects",
    "eval_sample",
    "eval_sample_safely",
    "evaluate_clip",
    "evaluate_dataset",
    "format_summary",
    "format_table",
    "import_ray",
    "is_davis",
    "is_random_source",
    "json_value",
    "ray_plan",
    "read_per_video",
    "resolve_mode",
    "resolve_protocol",
    "run_ablation",
    "score_result",
    "summarize",
    "synthetic_clips",
]
