"""Evaluation (SPEC section 8) of whole clips and datasets, the paper's Table 2 ablation, and the
``vidseg evaluate`` / ``vidseg ablate`` commands.

- :func:`evaluate_clip`: segment one clip, assign labels to clusters from the first annotated frame
  (frame 1 everywhere except Cityscapes snippets), score it: confusion matrix, window scores of VC_8 and
  VC_16, optionally DAVIS J / F.
- :func:`summarize`: pool per-clip results the way the paper does: mIoU from the SUM of the confusion
  matrices, mVC_n = nanmean over all windows of all clips, DAVIS means over sequences.
- :func:`evaluate_dataset`: a whole dataset with one JSON line per finished video (resumable after a
  crash: finished videos are never recomputed), locally or as one Ray task per video.
- :func:`run_ablation` / :func:`format_table`: the rows of the paper's Table 2 on a list of clips.

Scores are fractions in [0, 1] (the tables print percentages).

Unassigned clusters. Label assignment (SPEC 8) gives each cluster of the first annotated frame the
majority ground-truth label of its cells. A cluster can stay without a label: it is absent from that
frame (it only appears later), or all its cells there are void. Its pixels are scored as errors: the
confusion matrices have one extra last row/column, "unassigned" (index ``num_classes``), so such a pixel
is a false negative of its true class and a false positive of no class; the extra row is always empty,
so the mean over ground-truth classes never includes it. For mVC the unassigned pixels form one more
predicted label.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .backbone import Backbone
from .config import ConfigError, SegConfig
from .metrics import (
    apply_label_map,
    assign_labels,
    confusion_matrix,
    davis_scores,
    mean_iou,
    mean_video_consistency,
    per_class_iou,
    video_consistency,
)

__all__ = [
    "TABLE2_ROWS",
    "PAPER_TABLE2_SD",
    "VC_WINDOWS",
    "evaluate_clip",
    "score_result",
    "summarize",
    "read_per_video",
    "evaluate_dataset",
    "run_ablation",
    "format_table",
    "format_summary",
    "synthetic_clips",
    "dataset_clips",
    "add_parsers",
]

VC_WINDOWS = (8, 16)
"""The window lengths n of mVC_n reported by the paper."""

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

PER_VIDEO = "per_video.jsonl"
SUMMARY = "summary.json"
RUN_INFO = "run.json"
RAY_HINT = "pip install 'vidseg_nb[cluster]'"
RANDOM_NOTE = "random-weight 'tiny' model: these are smoke-test figures, not quality claims"


# --------------------------------------------------------------------------------------------------
# one clip
# --------------------------------------------------------------------------------------------------
def _resolve_mode(config: SegConfig, mode: str | None) -> str:
    return mode or ("full" if config.modulation else "preview")


def evaluate_clip(
    segmenter: Any,
    frames: np.ndarray,
    gt: np.ndarray,
    config: SegConfig,
    num_classes: int,
    ignore_index: int = 255,
    mode: str | None = None,
    davis: bool = False,
    annotated: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """Segment ``frames`` (N, H, W, 3) with ``segmenter`` (a :class:`~vidseg_nb.pipeline.VideoSegmenter`)
    and score the result against ``gt`` (N, H, W) integer labels (``ignore_index`` = void).

    Label assignment (SPEC 8): ``assign_labels(result.coarse_before[f], gt[f])`` on the feature grid (M^f,
    the context model's map: refinement can drop a cluster from M~^1 that later frames still carry), with
    f the first annotated frame (frame 0 unless ``annotated`` says otherwise, e.g. Cityscapes snippets);
    the cluster -> class map is applied to ``result.labels`` of every frame; unassigned clusters score as
    errors (see the module docstring). ``annotated`` (per frame, default all True) also leaves windows
    that contain an unannotated frame out of mVC. With ``davis=True``: DAVIS J, F and J&F per object id
    1 .. num_classes-1 (void = ``ignore_index`` pixels), averaged over objects, first and last frame
    dropped when the clip has at least 3 frames.

    Returns a dict: ``conf`` ((C+1, C+1) int64, last row/column = unassigned), ``mIoU``, ``vc8``/``vc16``
    (window scores), ``mVC8``/``mVC16`` (this clip alone), ``J``/``F``/``J&F`` (with ``davis``),
    ``mapping`` (cluster -> class, -1 = unassigned), ``assign_frame``, ``unassigned_pixels``,
    ``seconds`` (segmentation wall time), ``frames``, ``work`` (the backbone's work counters), ``mode``.
    """
    config = config or segmenter.config
    mode = _resolve_mode(config, mode)
    t0 = time.perf_counter()
    result = segmenter.segment(frames, config, mode=mode, keep=None, progress=False)
    seconds = time.perf_counter() - t0
    out = score_result(
        result.labels, result.coarse_before, gt, num_classes, ignore_index, davis=davis, annotated=annotated
    )
    out.update(
        seconds=seconds,
        frames=int(len(result.labels)),
        work=dict(getattr(result, "work", {}) or {}),
        mode=getattr(result, "mode", mode),
    )
    return out


def score_result(
    labels: np.ndarray,
    coarse: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    ignore_index: int = 255,
    *,
    davis: bool = False,
    annotated: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """The scoring half of :func:`evaluate_clip`, on cluster maps ``labels`` (N, H, W) and refined coarse
    maps ``coarse`` (N, h, w) already computed (the clusters are assigned on ``coarse[first annotated]``)."""
    labels = np.asarray(labels)
    gt = np.asarray(gt)
    n = len(labels)
    if len(gt) < n:
        raise ValueError(f"{len(gt)} ground-truth maps for {n} segmented frames")
    gt = gt[:n]
    if gt.shape != labels.shape:
        raise ValueError(f"ground truth {gt.shape} and labels {labels.shape} differ in size")
    c = int(num_classes)
    ann = np.ones(n, bool) if annotated is None else np.asarray(list(annotated)[:n], bool)
    if not ann.any():
        raise ValueError("no annotated frame to assign labels from")
    first = int(np.flatnonzero(ann)[0])
    mapping = assign_labels(np.asarray(coarse)[first], gt[first], ignore_index=ignore_index)
    # clusters that were assigned a class outside [0, C) (never for a void-free ignore index) are unassigned
    mapping = {k: (v if 0 <= v < c else -1) for k, v in mapping.items()}
    pred = apply_label_map(labels, mapping, default=-1)
    unassigned = pred < 0
    pred[unassigned] = c
    g = np.where((gt >= 0) & (gt < c), gt, -1)  # void -> -1: never counted, even if it equals C
    conf = confusion_matrix(g, pred, c + 1)
    out: dict[str, Any] = {
        "conf": conf,
        "mIoU": mean_iou(conf),
        "mapping": {int(k): int(v) for k, v in sorted(mapping.items())},
        "assign_frame": first,
        "unassigned_pixels": int(conf[:, c].sum()),
        "num_classes": c,
        "ignore_index": int(ignore_index),
    }
    for w in VC_WINDOWS:
        vc = video_consistency(gt, pred, w)
        if not ann.all() and vc.size:
            bad = np.convolve(~ann, np.ones(w, int), mode="valid")[: vc.size] > 0
            vc = np.where(bad, np.nan, vc)
        out[f"vc{w}"] = vc
        out[f"mVC{w}"] = mean_video_consistency([vc])
    if davis:
        out.update(_davis(gt, pred, c, ignore_index))
    return out


def _davis(gt: np.ndarray, pred: np.ndarray, c: int, ignore_index: int) -> dict[str, float]:
    void = gt == ignore_index
    void = void if void.any() else None
    drop = len(gt) >= 3
    per_obj = [davis_scores(gt == k, pred == k, drop_first_last=drop, void=void) for k in range(1, c)]
    if not per_obj:
        return {"J": math.nan, "F": math.nan, "J&F": math.nan}
    j = float(np.mean([s["J_mean"] for s in per_obj]))
    f = float(np.mean([s["F_mean"] for s in per_obj]))
    return {"J": j, "F": f, "J&F": (j + f) / 2}


# --------------------------------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------------------------------
def _pad_conf(conf: np.ndarray, c_max: int) -> np.ndarray:
    """A (C+1)^2 matrix (last = unassigned) embedded in a (c_max+1)^2 one, unassigned kept last."""
    conf = np.asarray(conf, dtype=np.int64)
    c = conf.shape[0] - 1
    if c == c_max:
        return conf
    out = np.zeros((c_max + 1, c_max + 1), np.int64)
    out[:c, :c] = conf[:c, :c]
    out[:c, c_max] = conf[:c, c]
    return out


def _nanmean(values: Iterable[float]) -> float:
    v = np.asarray([math.nan if x is None else float(x) for x in values], dtype=np.float64)
    if not np.isfinite(v).any():
        return math.nan
    return float(np.nanmean(v))


def summarize(per_clip: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pool per-clip results (of :func:`evaluate_clip`, or read back from ``per_video.jsonl``).

    ``mIoU`` from the SUM of the confusion matrices (one matrix for the dataset, SPEC 8); ``mVC8`` /
    ``mVC16`` = nanmean over all windows of all clips; with DAVIS scores, ``J``, ``F`` and ``J&F`` are
    means over sequences. Also ``per_class_iou`` (nan for classes absent from the ground truth),
    ``unassigned_fraction`` (scored pixels predicted by unassigned clusters), ``videos``, ``frames``,
    ``seconds`` and summed ``work``. Clips with different class counts (DAVIS 2017) are padded.
    """
    per_clip = list(per_clip)
    out: dict[str, Any] = {"videos": len(per_clip)}
    if not per_clip:
        out.update(mIoU=math.nan, **{f"mVC{w}": math.nan for w in VC_WINDOWS})
        return out
    confs = [np.asarray(r["conf"], dtype=np.int64) for r in per_clip]
    c_max = max(x.shape[0] for x in confs) - 1
    conf = sum((_pad_conf(x, c_max) for x in confs), np.zeros((c_max + 1, c_max + 1), np.int64))
    total = int(conf.sum())
    out["num_classes"] = c_max
    out["mIoU"] = mean_iou(conf)
    for w in VC_WINDOWS:
        out[f"mVC{w}"] = mean_video_consistency(
            [
                np.asarray([math.nan if x is None else x for x in r[f"vc{w}"]], dtype=np.float64)
                for r in per_clip
            ]
        )
    if any("J" in r for r in per_clip):
        for k in ("J", "F", "J&F"):
            out[k] = _nanmean(r.get(k) for r in per_clip)
    out["per_class_iou"] = [float(x) for x in per_class_iou(conf)[:c_max]]
    out["unassigned_fraction"] = float(conf[:, c_max].sum() / total) if total else math.nan
    out["frames"] = int(sum(int(r.get("frames", 0)) for r in per_clip))
    out["seconds"] = float(sum(float(r.get("seconds", 0.0)) for r in per_clip))
    work: dict[str, int] = {}
    for r in per_clip:
        for k, v in (r.get("work") or {}).items():
            work[k] = work.get(k, 0) + int(v)
    out["work"] = work
    return out


# --------------------------------------------------------------------------------------------------
# JSON lines
# --------------------------------------------------------------------------------------------------
def _json_value(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_json_value(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    return v


def _to_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A per-video record as strict JSON (arrays -> lists, nan -> null)."""
    return {k: _json_value(v) for k, v in record.items()}


_FLOATS = ("mIoU", "J", "F", "J&F", *(f"mVC{w}" for w in VC_WINDOWS))


def _from_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_to_json` for the fields the summary reads (null -> nan)."""
    out = dict(record)
    out["conf"] = np.asarray(record["conf"], dtype=np.int64)
    for w in VC_WINDOWS:
        out[f"vc{w}"] = np.asarray(
            [math.nan if x is None else x for x in record.get(f"vc{w}", [])], dtype=np.float64
        )
    for k in _FLOATS:
        if k in out and out[k] is None:
            out[k] = math.nan
    if "mapping" in out:
        out["mapping"] = {int(k): int(v) for k, v in out["mapping"].items()}
    return out


def _dumps(obj: Any) -> str:
    return json.dumps(obj, allow_nan=False, sort_keys=False)


def read_per_video(path: str | os.PathLike) -> tuple[dict[str, dict[str, Any]], bool]:
    """Finished videos of a ``per_video.jsonl`` (name -> JSON record) and whether the file needs
    repairing (a partial or corrupt line, e.g. the last one written when the process died)."""
    path = Path(path)
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done, False
    text = path.read_text(encoding="utf-8", errors="replace")
    dirty = bool(text) and not text.endswith("\n")
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            ok = isinstance(rec, dict) and isinstance(rec.get("video"), str) and "conf" in rec
            ok = ok and all(f"vc{w}" in rec for w in VC_WINDOWS)
        except json.JSONDecodeError:
            ok = False
        if ok:
            done[rec["video"]] = rec
        else:
            dirty = True
    return done, dirty


def _write_lines(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(_dumps(rec) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _append_line(fh: Any, record: Mapping[str, Any]) -> None:
    fh.write(_dumps(record) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


# --------------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------------
def _is_davis(dataset: Any) -> bool:
    return type(dataset).__name__.lower().startswith("davis")


def _video_record(sample: Any, result: Mapping[str, Any]) -> dict[str, Any]:
    return _to_json({"video": sample.name, **result})


def eval_sample(
    sample: Any,
    backbone: Backbone,
    config: SegConfig,
    mode: str | None = None,
    davis: bool = False,
) -> dict[str, Any]:
    """Evaluate one dataset video (a :class:`~vidseg_nb.datasets.VideoSample`); returns its JSON record."""
    from .pipeline import VideoSegmenter

    frames = sample.load_frames(config.max_frames)
    gt = sample.load_labels(config.max_frames)
    annotated = [p is not None for p in sample.label_paths[: len(frames)]]
    seg = VideoSegmenter(backbone, config, cache_frames=0)
    res = evaluate_clip(
        seg,
        frames,
        gt,
        config,
        sample.num_classes,
        sample.ignore_index,
        mode=mode,
        davis=davis,
        annotated=annotated,
    )
    return _video_record(sample, res)


def _run_info(dataset: Any, backbone: Backbone, config: SegConfig, mode: str) -> dict[str, Any]:
    cfg = config.to_dict()
    cfg.pop("extra", None)
    return {
        "dataset": type(dataset).__name__,
        "root": str(getattr(dataset, "root", "")),
        "model": str(backbone.source),
        "random_weights": bool(backbone.is_random),
        "mode": mode,
        "config": _json_value(cfg),
    }


def _check_run_info(path: Path, info: Mapping[str, Any]) -> None:
    """Refuse to resume into a folder that holds results of another setting."""
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return
    diffs = [
        f"{k}: {old.get(k)!r} -> {info[k]!r}" for k in ("dataset", "model", "mode") if old.get(k) != info[k]
    ]
    oc, nc = old.get("config", {}), info["config"]
    diffs += [f"config.{k}: {oc.get(k)!r} -> {nc.get(k)!r}" for k in nc if oc.get(k) != nc.get(k)]
    if diffs:
        raise ConfigError(
            f"{path.parent} holds results of another setting ({'; '.join(diffs[:4])}); "
            "pass another output folder or delete it"
        )


def evaluate_dataset(
    dataset: Any,
    backbone: Backbone,
    config: SegConfig,
    out_dir: str | os.PathLike,
    videos: int | Sequence[str] | None = None,
    mode: str | None = None,
    progress: bool = True,
    use_ray: bool = False,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Evaluate every video of ``dataset`` (a reader of :mod:`vidseg_nb.datasets`); resumable.

    ``videos``: the first N videos, or a list of names (default all). Each finished video appends one
    JSON line to ``out_dir/per_video.jsonl`` (confusion matrix, window scores, metrics, seconds, work),
    flushed and fsync'ed. A rerun reads that file first and skips the videos in it, so nothing is
    recomputed after a crash and the summary equals a clean run's; a partial or corrupt line (the one
    being written when the process died) is dropped. ``out_dir/run.json`` records the setting; resuming
    with another setting raises :class:`~vidseg_nb.config.ConfigError`. The pooled :func:`summarize`
    (in dataset order) plus the run info goes to ``out_dir/summary.json`` and is returned.

    ``use_ray``: one Ray task per video (``num_gpus=1`` when CUDA is available here, else
    ``num_cpus=1``), each loading the backbone from ``backbone.source`` in its worker; ``ray_address``
    joins a running cluster (default: a local instance, or the one this process already started). Ray
    is optional: ``pip install 'vidseg_nb[cluster]'``. DAVIS datasets also get J / F / J&F.
    """
    mode = _resolve_mode(config, mode)
    ds = dataset
    if videos is not None:
        ds = dataset.select(videos)
    names = list(ds.names)
    davis = _is_davis(dataset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = _run_info(dataset, backbone, config, mode)
    _check_run_info(out / RUN_INFO, info)
    (out / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    per_video = out / PER_VIDEO
    done, dirty = read_per_video(per_video)
    if dirty:
        warnings.warn(
            f"{per_video}: dropped a partial or corrupt line (kept {len(done)} videos)", stacklevel=2
        )
        _write_lines(per_video, done.values())
    todo = [n for n in names if n not in done]
    bar = tqdm(
        total=len(names), initial=len(names) - len(todo), desc="videos", unit="video", disable=not progress
    )
    try:
        with open(per_video, "a", encoding="utf-8") as fh:

            def finish(rec: dict[str, Any]) -> None:
                _append_line(fh, rec)
                done[rec["video"]] = rec
                bar.update(1)
                bar.set_postfix_str(rec["video"])

            if todo and use_ray:
                _run_ray(ds, todo, backbone, config, mode, davis, ray_address, finish)
            else:
                for name in todo:
                    finish(eval_sample(ds.sample(name), backbone, config, mode=mode, davis=davis))
    finally:
        bar.close()
    summary = summarize([_from_json(done[n]) for n in names])
    summary["run"] = {**info, "videos": names}
    (out / SUMMARY).write_text(
        json.dumps(_json_value(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    return summary


# --------------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------------
def import_ray() -> Any:
    """``ray``, or ``ModuleNotFoundError`` saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ModuleNotFoundError(
            f"Ray is not installed; scaling out needs it: {RAY_HINT}", name="ray"
        ) from e
    return ray


_WORKER_BACKBONES: dict[tuple, Backbone] = {}


def _worker_backbone(source: str, device: str, dtype: Any) -> Backbone:
    """The backbone of a Ray worker, loaded once per worker process and reused by its later tasks."""
    from .loading import load_backbone

    key = (source, device, str(dtype))
    if key not in _WORKER_BACKBONES:
        _WORKER_BACKBONES.clear()
        _WORKER_BACKBONES[key] = load_backbone(source, device=device, dtype=dtype)
    return _WORKER_BACKBONES[key]


def _ray_task(
    sample: Any, source: str, device: str, dtype: Any, config: SegConfig, mode: str, davis: bool
) -> dict:
    bb = _worker_backbone(source, device, dtype)
    return eval_sample(sample, bb, config, mode=mode, davis=davis)


def _package_env() -> dict[str, Any] | None:
    """A runtime_env putting this checkout on the workers' PYTHONPATH when the package is not installed
    (a source checkout); None when the workers can import it anyway."""
    parent = str(Path(__file__).resolve().parents[1])
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        distribution("vidseg_nb")
        return None
    except PackageNotFoundError:
        pass
    paths = [parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}}


def _run_ray(ds, todo, backbone, config, mode, davis, address, finish) -> None:
    import torch

    ray = import_ray()
    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"address": address}
        if address is None:
            kw["include_dashboard"] = False
        ray.init(**kw)
        started = True
    try:
        gpu = torch.cuda.is_available()
        device = "cuda" if gpu else "cpu"
        dtype = backbone.dtype if backbone.device.type == device else None
        opts: dict[str, Any] = {"num_gpus": 1} if gpu else {"num_cpus": 1}
        env = _package_env()
        if env:
            opts["runtime_env"] = env
        # max_calls=0: a worker keeps serving videos with the backbone it loaded (Ray's default for GPU
        # tasks declared in ray.remote is one task per worker process, i.e. one model load per video)
        task = ray.remote(max_calls=0, **opts)(_ray_task)
        cfg_ref = ray.put(config)
        pending = {
            task.remote(ds.sample(n), str(backbone.source), device, dtype, cfg_ref, mode, davis): n
            for n in todo
        }
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    pending.pop(ref)
                    finish(ray.get(ref))
        except BaseException:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            raise
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------------------------------
# Table 2 ablation
# --------------------------------------------------------------------------------------------------
def run_ablation(
    backbone: Backbone,
    clips: Sequence[tuple],
    base_config: SegConfig,
    num_classes: int,
    ignore_index: int = 255,
    rows: Sequence[tuple[str, Mapping[str, Any]]] = TABLE2_ROWS,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every row of ``rows`` (default: the paper's Table 2) on ``clips`` = [(name, frames, gt), ...]
    (optionally (name, frames, gt, num_classes, ignore_index) per clip) in full mode, and pool each row
    with :func:`summarize`.

    Returns one dict per row: ``row`` (name), ``overrides``, ``config``, ``batch_size``,
    ``masked_modulation``, ``aggregate``, ``refine``, ``mIoU``, ``mVC8``, ``mVC16``, ``seconds``,
    ``summary`` and ``per_clip`` (name -> :func:`evaluate_clip` result).
    """
    from .pipeline import VideoSegmenter

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
                per_row[i][cname] = evaluate_clip(seg, frames, gt, cfg, nc, ig, mode="full")
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
    """A one-row markdown table of a :func:`summarize` result: mIoU, mVC8, mVC16 (and J, F, J&F for
    DAVIS), in %."""
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
    return (
        "| " + " | ".join(head) + " |\n|" + "|".join("---" for _ in head) + "|\n| " + " | ".join(cells) + " |"
    )


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
DATASETS = ("davis", "vspw", "camvid", "cityscapes")


def _ray_missing() -> str | None:
    try:
        import_ray()
    except ModuleNotFoundError as e:
        return str(e)
    return None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import cli
    from .datasets import open_dataset

    config = cli.config_from_args(args)
    if args.ray:
        msg = _ray_missing()
        if msg:
            print(f"vidseg evaluate: error: {msg}", file=sys.stderr)
            return 2
    dataset = open_dataset(args.dataset, args.root)
    out = Path(args.out or f"eval_{args.dataset}")
    bb = cli._load(args)
    summary = evaluate_dataset(
        dataset,
        bb,
        config,
        out,
        videos=args.videos,
        progress=not args.quiet,
        use_ray=args.ray,
        ray_address=args.address,
    )
    run = summary["run"]
    print(
        f"{args.dataset}: {summary['videos']} videos, {summary.get('frames', 0)} frames, "
        f"{run['mode']} mode, model {run['model']}"
    )
    print(format_summary(summary, davis=_is_davis(dataset)))
    print(f"per-video results: {out / PER_VIDEO}\nsummary: {out / SUMMARY}")
    if bb.is_random:
        print(f"NOTE: {RANDOM_NOTE}.")
    return 0


def synthetic_clips(n: int, n_frames: int = 8, size: int = 128, n_objects: int = 3) -> list[tuple]:
    """``n`` seeded synthetic clips as (name, frames, gt, num_classes, ignore_index) for :func:`run_ablation`."""
    from .synthetic import make_clip

    out = []
    for i in range(n):
        c = make_clip(n_frames=n_frames, height=size, width=size, n_objects=n_objects, seed=i, speed=3.0)
        out.append((f"synthetic{i}", c.frames, c.labels, c.n_labels, 255))
    return out


def dataset_clips(dataset: Any, videos: int | None, max_frames: int | None) -> list[tuple]:
    """The first ``videos`` videos of a dataset as (name, frames, gt, num_classes, ignore_index)."""
    ds = dataset.select(videos) if videos is not None else dataset
    out = []
    for s in ds:
        out.append(
            (s.name, s.load_frames(max_frames), s.load_labels(max_frames), s.num_classes, s.ignore_index)
        )
    return out


def cmd_ablate(args: argparse.Namespace) -> int:
    from . import cli

    config = cli.config_from_args(args)
    if args.synthetic:
        clips = synthetic_clips(args.synthetic, n_frames=config.max_frames or 8)
        where = f"{args.synthetic} synthetic clips"
    else:
        if not args.dataset or not args.root:
            raise ConfigError("vidseg ablate needs --dataset and --root, or --synthetic N")
        from .datasets import open_dataset

        clips = dataset_clips(open_dataset(args.dataset, args.root), args.videos, config.max_frames)
        where = f"{len(clips)} {args.dataset} videos"
    bb = cli._load(args)
    results = run_ablation(bb, clips, config, clips[0][3], clips[0][4], progress=not args.quiet)
    print(f"Table 2 ablation on {where}, model {bb.source} (scores in %):\n")
    print(format_table(results, paper=not args.no_paper))
    if args.json:
        rows = [{k: v for k, v in r.items() if k not in ("config", "per_clip")} for r in results]
        Path(args.json).write_text(json.dumps(_json_value(rows), indent=2) + "\n", encoding="utf-8")
        print(f"\nresults: {args.json}")
    if bb.is_random:
        print(f"\nNOTE: {RANDOM_NOTE}.")
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``vidseg evaluate`` and ``vidseg ablate`` on the CLI's subparsers."""
    from .cli import add_config_args

    e = sub.add_parser(
        "evaluate",
        help="score a dataset (mIoU, mVC8, mVC16; J&F for DAVIS), resumable, optionally on Ray",
        description="Evaluate on a dataset folder (SPEC 8). Each finished video is appended to "
        "OUT/per_video.jsonl; rerunning with the same --out resumes. The pooled scores go to "
        "OUT/summary.json.",
    )
    e.add_argument("--dataset", required=True, choices=DATASETS)
    e.add_argument("--root", required=True, help="dataset folder")
    e.add_argument("--videos", type=int, default=None, help="only the first N videos")
    e.add_argument("--out", default=None, help="output folder (default: ./eval_DATASET)")
    e.add_argument("--preview", action="store_true", help="coarse maps only, no modulation (fast)")
    e.add_argument("--ray", action="store_true", help=f"one Ray task per video ({RAY_HINT})")
    e.add_argument("--address", default=None, help="Ray cluster address (default: a local instance)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_args(e)
    e.set_defaults(func=cmd_evaluate)

    a = sub.add_parser(
        "ablate",
        help="the paper's Table 2 ablation on dataset videos or synthetic clips",
        description="Run the six rows of the paper's Table 2 (B, masked modulation, feature aggregation, "
        "CBR) and print them in the paper's layout, next to the paper's SD 2.1 numbers.",
    )
    a.add_argument("--dataset", default=None, choices=DATASETS)
    a.add_argument("--root", default=None, help="dataset folder")
    a.add_argument("--videos", type=int, default=1, help="first N videos of the dataset (default 1)")
    a.add_argument("--synthetic", type=int, default=0, metavar="N", help="use N synthetic clips instead")
    a.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    a.add_argument("--no-paper", action="store_true", help="leave out the paper's columns")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_args(a)
    a.set_defaults(func=cmd_ablate)
