"""Running an evaluation over a dataset: locally, or on Ray with one model per actor.

:func:`evaluate_dataset` evaluates every video of a dataset reader (:mod:`vidseg_nb.datasets`) with the
protocol of :mod:`.protocol`, one JSON line per video in the store of :mod:`.store` (resumable: finished
videos are never recomputed). A video that raises is retried, then recorded with an ``error`` field and
the run goes on; the summary counts it in ``failed``.

On Ray (``use_ray=True``): a pool of actors (``ray.util.ActorPool``), each loading the backbone ONCE in
its ``__init__`` and then evaluating the videos it is handed; one actor per GPU of the cluster
(``num_gpus=1``) when ``ray.cluster_resources()`` has GPUs, else one per CPU (``num_cpus=1``, on the CPU).
The driver never loads a model. When this function starts Ray (``ray.init(address)``), it ships this
package to the workers with the job's ``runtime_env={"py_modules": [<vidseg_nb folder>]}``, so a cluster
only needs the dependencies installed; when the caller started Ray, pass :func:`package_env` to its
``ray.init``. The dataset folder must be readable at the same path on every node (a shared file system).
"""

from __future__ import annotations

import os
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..config import SegConfig, default_model
from .protocol import (
    check_assign,
    dataset_vocabulary,
    evaluate_clip,
    evaluate_stream,
    resolve_mode,
    resolve_protocol,
    summarize,
)
from .store import (
    PER_VIDEO,
    RUN_INFO,
    SUMMARY,
    append_line,
    check_run_info,
    from_json,
    read_per_video,
    run_info,
    to_json,
    write_json,
    write_lines,
)

__all__ = [
    "RAY_HINT",
    "RANDOM_SOURCES",
    "is_random_source",
    "is_davis",
    "eval_sample",
    "eval_sample_safely",
    "evaluate_dataset",
    "import_ray",
    "VideoWorker",
    "ray_plan",
]

RAY_HINT = "pip install 'vidseg_nb[cluster]'"
RANDOM_SOURCES = ("tiny", "tiny-svd", "random-sd21", "random-svd")
"""Model sources with random weights (smoke tests only)."""


def is_random_source(source: str | None) -> bool:
    """Whether ``source`` names a random-weight model, without loading it."""
    return str(source if source is not None else default_model()) in RANDOM_SOURCES


def is_davis(dataset: Any) -> bool:
    """DAVIS readers get J / F / J&F."""
    return type(dataset).__name__.lower().startswith("davis")


# --------------------------------------------------------------------------------------------------
# one video
# --------------------------------------------------------------------------------------------------
STREAM_FRAMES = 120
"""Videos with more frames than this are evaluated batch by batch (:func:`~.protocol.evaluate_stream`):
frames and ground truth read per batch, scored incrementally, so memory does not grow with the video."""


class _LazyFrames(Sequence):
    """Frame files read one at a time (a source of :func:`~vidseg_nb.video.open_video`)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: Any) -> Any:
        from ..datasets import _read_rgb

        if isinstance(i, slice):
            return _LazyFrames(self.paths[i])
        return _read_rgb(self.paths[i])


def eval_sample(
    sample: Any,
    backbone: Any,
    config: SegConfig,
    mode: str | None = None,
    davis: bool = False,
    assign: str = "first-frame",
    vocabulary: Sequence[str] | None = None,
    stream_frames: int = STREAM_FRAMES,
) -> dict[str, Any]:
    """Evaluate one dataset video (a :class:`~vidseg_nb.datasets.VideoSample`); returns its JSON record.

    ``assign`` / ``vocabulary``: see :func:`~.protocol.evaluate_clip`; the ground truth is loaded only
    after the segmentation (and, with ``"names"``, its ground-truth-free assignment). Videos longer than
    ``stream_frames`` frames are streamed (:func:`~.protocol.evaluate_stream`, the same record) under the
    default protocol (``late``, first-frame assignment, consecutive batches); the authors' protocol, the
    assignment by names and overlapping batches take the whole-clip path."""
    from ..pipeline import VideoSegmenter

    n = (
        len(sample.frame_paths)
        if config.max_frames is None
        else min(len(sample.frame_paths), config.max_frames)
    )
    annotated = [p is not None for p in sample.label_paths[:n]]
    seg = VideoSegmenter(backbone, config, cache_frames=0)
    # what both paths score with; they differ in how frames and ground truth are read, and the assignment
    scoring: dict[str, Any] = dict(
        config=config,
        num_classes=sample.num_classes,
        ignore_index=sample.ignore_index,
        mode=mode,
        davis=davis,
        annotated=annotated,
    )
    streamable = assign == "first-frame" and not config.gt_merge and not config.shifted_last_batch
    if n > stream_frames and streamable:
        from ..video import open_video

        frames = open_video(_LazyFrames(sample.frame_paths[:n]))
        void = np.full(frames.size, sample.ignore_index, dtype=np.int64)

        def gt_batch(a: int, b: int) -> np.ndarray:
            return np.stack([void if p is None else sample.read_label(p) for p in sample.label_paths[a:b]])

        res = evaluate_stream(seg, frames, gt_batch, **scoring)
    else:
        frames = sample.load_frames(config.max_frames)

        def gt() -> Any:
            return sample.load_labels(config.max_frames)

        res = evaluate_clip(seg, frames, gt, **scoring, assign=assign, vocabulary=vocabulary)
    return to_json({"video": sample.name, **res})


def error_record(name: str, error: BaseException | str, attempts: int, tb: str = "") -> dict[str, Any]:
    """The JSON line of a video that failed: ``video``, ``error`` ("Type: message"), ``attempts`` and
    the end of the traceback."""
    msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {"video": name, "error": msg, "attempts": int(attempts), "traceback": tb[-4000:]}


def eval_sample_safely(
    sample: Any,
    backbone: Any,
    config: SegConfig,
    mode: str | None = None,
    davis: bool = False,
    retries: int = 1,
    evaluate: Callable[..., dict[str, Any]] | None = None,
    **assign: Any,
) -> dict[str, Any]:
    """:func:`eval_sample` tried up to ``1 + retries`` times; when every attempt raises an ``Exception``,
    the :func:`error_record` of the last one (a ``KeyboardInterrupt`` still stops the run). ``assign``:
    ``assign=`` / ``vocabulary=`` for :func:`eval_sample` (issue 13), passed only when given."""
    evaluate = evaluate or eval_sample
    attempts = max(1, 1 + int(retries))
    for i in range(attempts):
        try:
            return evaluate(sample, backbone, config, mode=mode, davis=davis, **assign)
        except Exception as e:  # noqa: BLE001 - recorded in the video's JSON line
            if i == attempts - 1:
                return error_record(sample.name, e, attempts, traceback.format_exc())
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------------------------------
# a dataset
# --------------------------------------------------------------------------------------------------
def evaluate_dataset(
    dataset: Any,
    backbone: Any,
    config: SegConfig,
    out_dir: str | os.PathLike,
    videos: int | Sequence[str] | None = None,
    mode: str | None = None,
    progress: bool = True,
    use_ray: bool = False,
    ray_address: str | None = None,
    *,
    retries: int = 1,
    workers: int | None = None,
    model_config: str | None = None,
    device: str | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    protocol: str | None = None,
    assign: str = "first-frame",
) -> dict[str, Any]:
    """Evaluate every video of ``dataset`` (a reader of :mod:`vidseg_nb.datasets`); resumable.

    ``backbone``: a loaded :class:`~vidseg_nb.backbone.Backbone`, or a model source (str, None = the
    default model) loaded here for a local run (with ``model_config`` / ``device``) and only in the
    workers for a Ray run. ``videos``: the first N videos, or a list of names (default all).

    Each video appends one JSON line to ``out_dir/per_video.jsonl`` (confusion matrix, window scores,
    metrics, seconds, work; or ``error`` / ``attempts`` for a video that raised on each of its
    ``1 + retries`` attempts), flushed and fsync'ed. A rerun reads that file first and skips the
    finished videos (failed ones are tried again), so nothing is recomputed after a crash and the
    summary equals a clean run's; a partial or corrupt line (the one being written when the process
    died) is dropped. ``out_dir/run.json`` records the setting (dataset, model, mode, every SegConfig
    field); resuming with another setting raises :class:`~vidseg_nb.errors.ConfigError`. The pooled
    :func:`~.protocol.summarize` (in dataset order) plus the run info goes to ``out_dir/summary.json``
    and is returned. DAVIS datasets also get J / F / J&F.

    ``use_ray``: actors of :class:`VideoWorker` (see the module docstring; ``workers`` caps their
    number, ``runtime_env`` is merged into the shipped one); ``ray_address`` joins a running cluster
    (default: the instance this process already started, else a new local one). Ray is optional:
    ``pip install 'vidseg_nb[cluster]'``.

    ``protocol`` (issue 15; :func:`~.protocol.resolve_protocol`, default from ``config.gt_merge``):
    ``"late"`` (SPEC 8) or ``"authors"`` (the first frame's ground truth merges clusters before KNN, CBR
    and modulation). It is carried by ``config.gt_merge`` (so ``run.json`` records it and a resume with
    the other protocol is refused) and named in the summary (``protocol``).
    ``assign`` (issue 13): ``"first-frame"`` (SPEC 8, default), ``"names"`` (each cluster gets the class
    whose name scores highest: the dataset's class list is the vocabulary; no ground truth is read to
    assign) or ``"both"`` (the summary also has ``by_names``). See :mod:`.protocol`.
    """
    mode = resolve_mode(config, mode)
    protocol = resolve_protocol(config, protocol)
    config = config.replace(gt_merge=protocol == "authors")
    check_assign(assign)
    akw: dict[str, Any] = {}
    if assign != "first-frame":
        akw = {"assign": assign, "vocabulary": dataset_vocabulary(dataset)}
    ds = dataset.select(videos) if videos is not None else dataset
    names = list(ds.names)
    davis = is_davis(dataset)
    if isinstance(backbone, (str, os.PathLike)) or backbone is None:
        source = str(backbone) if backbone is not None else default_model()
        random_weights = is_random_source(source)
        bb = None
    else:
        source, random_weights, bb = str(backbone.source), bool(backbone.is_random), backbone
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = run_info(dataset, source, random_weights, config, mode)
    info["protocol"] = protocol
    if assign != "first-frame":
        info["assign"] = assign
    if model_config:
        info["model_config"] = str(model_config)
    check_run_info(out / RUN_INFO, info)
    write_json(out / RUN_INFO, info)

    per_video = out / PER_VIDEO
    done, dirty = read_per_video(per_video)
    if dirty:
        warnings.warn(
            f"{per_video}: dropped a partial or corrupt line (kept {len(done)} videos)", stacklevel=2
        )
        write_lines(per_video, done.values())
    todo = [n for n in names if n not in done or done[n].get("error")]
    bar = tqdm(
        total=len(names), initial=len(names) - len(todo), desc="videos", unit="video", disable=not progress
    )
    try:
        with open(per_video, "a", encoding="utf-8") as fh:

            def finish(rec: dict[str, Any]) -> None:
                append_line(fh, rec)
                done[rec["video"]] = rec
                bar.update(1)
                bar.set_postfix_str(rec["video"] + (" (failed)" if rec.get("error") else ""))

            if todo and use_ray:
                _run_ray(
                    [ds.sample(n) for n in todo],
                    source,
                    model_config,
                    config,
                    mode,
                    davis,
                    retries,
                    workers,
                    ray_address,
                    runtime_env,
                    finish,
                    akw,
                )
            elif todo:
                if bb is None:
                    from ..loading import load_backbone

                    bb = load_backbone(source, device=device, config=model_config)
                for name in todo:
                    finish(
                        eval_sample_safely(
                            ds.sample(name), bb, config, mode, davis, retries, evaluate=eval_sample, **akw
                        )
                    )
    finally:
        bar.close()
    summary = summarize([from_json(done[n]) for n in names])
    summary["protocol"] = protocol
    summary["run"] = {**info, "videos": names}
    write_json(out / SUMMARY, summary)
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


class VideoWorker:
    """A Ray actor's state: the backbone, loaded once in ``__init__`` (on the actor's device), then
    used for every video the pool hands this actor (:meth:`evaluate`)."""

    def __init__(self, source: str, device: str, model_config: str | None = None) -> None:
        from ..loading import load_backbone

        self.t_load = time.perf_counter()
        self.backbone = load_backbone(source, device=device, config=model_config)
        self.t_load = time.perf_counter() - self.t_load

    def evaluate(
        self,
        sample: Any,
        config: SegConfig,
        mode: str,
        davis: bool,
        retries: int = 1,
        assign: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One video's JSON record (or error record, after ``1 + retries`` attempts); ``assign``: the
        ``assign=`` / ``vocabulary=`` keywords of :func:`eval_sample` (issue 13)."""
        rec = eval_sample_safely(sample, self.backbone, config, mode, davis, retries, **(assign or {}))
        rec["worker"] = {"pid": os.getpid(), "load_seconds": round(self.t_load, 3)}
        return rec


def ray_plan(resources: Mapping[str, float], n_videos: int, workers: int | None = None) -> dict[str, Any]:
    """Actor count, resources and device from ``ray.cluster_resources()``: one actor per GPU
    (``num_gpus=1``, CUDA) when the cluster has GPUs, else one per CPU (``num_cpus=1``, CPU); never
    more actors than videos or than ``workers``."""
    gpus = int(resources.get("GPU", 0))
    if gpus >= 1:
        n, opts, device = gpus, {"num_gpus": 1, "num_cpus": 1}, "cuda"
    else:
        n, opts, device = max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}, "cpu"
    n = max(1, min(n, n_videos, workers or n))
    return {"actors": n, "options": opts, "device": device}


def package_env(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The job ``runtime_env`` that ships this package to the workers (``py_modules``: the local
    ``vidseg_nb`` folder, uploaded by ``ray.init``), merged with ``extra``. Pass it to your own
    ``ray.init(runtime_env=...)`` when you start Ray before calling :func:`evaluate_dataset`."""
    pkg = str(Path(__file__).resolve().parents[1])
    env: dict[str, Any] = dict(extra or {})
    env["py_modules"] = [pkg, *env.get("py_modules", [])]
    return env


def _actor_env(ray: Any, extra: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The actors' runtime_env when Ray was started by the caller: ``extra``, plus (when the job did not
    ship the package) this checkout on PYTHONPATH, which works for a local Ray or a shared file system.
    Local folders in ``py_modules`` are only accepted by ``ray.init``, not per actor."""
    env: dict[str, Any] = dict(extra or {})
    try:
        job = dict(ray.get_runtime_context().runtime_env or {})
    except Exception:  # noqa: BLE001 - older Ray: assume nothing was shipped
        job = {}
    if not job.get("py_modules") and not env.get("py_modules"):
        parent = str(Path(__file__).resolve().parents[2])
        paths = [parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env_vars = dict(env.get("env_vars", {}))
        env_vars.setdefault("PYTHONPATH", os.pathsep.join(dict.fromkeys(paths)))
        env["env_vars"] = env_vars
    return env or None


def _run_ray(
    samples: list[Any],
    source: str,
    model_config: str | None,
    config: SegConfig,
    mode: str,
    davis: bool,
    retries: int,
    workers: int | None,
    address: str | None,
    runtime_env: Mapping[str, Any] | None,
    finish: Callable[[dict[str, Any]], None],
    assign: Mapping[str, Any] | None = None,
) -> None:
    ray = import_ray()
    from ray.util import ActorPool

    started = False
    actor_env: dict[str, Any] | None = None
    if not ray.is_initialized():
        kw: dict[str, Any] = {"address": address, "runtime_env": package_env(runtime_env)}
        if address is None:
            kw["include_dashboard"] = False
        ray.init(**kw)
        started = True
    else:
        actor_env = _actor_env(ray, runtime_env)
    actors: list[Any] = []
    try:
        plan = ray_plan(ray.cluster_resources(), len(samples), workers)
        # max_restarts / max_task_retries: a worker process that dies (out of memory, lost node) is
        # restarted and its video retried; exceptions inside a video are retried by eval_sample_safely
        opts: dict[str, Any] = dict(max_restarts=1, max_task_retries=max(0, int(retries)), **plan["options"])
        if actor_env:
            opts["runtime_env"] = actor_env
        cls = ray.remote(**opts)(VideoWorker)
        actors = [cls.remote(source, plan["device"], model_config) for _ in range(plan["actors"])]
        pool = ActorPool(actors)
        cfg_ref = ray.put(config)
        left = {s.name for s in samples}
        lost: list[str] = []

        def drain() -> Any:
            while pool.has_next():
                yield pool.get_next_unordered()

        results = pool.map_unordered(
            lambda a, s: a.evaluate.remote(s, cfg_ref, mode, davis, retries, *([assign] if assign else [])),
            samples,
        )
        while True:
            try:
                rec = next(results)
            except StopIteration:
                break
            except ray.exceptions.RayError as e:  # a worker died for good: its video is found below
                lost.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                results = drain()
                continue
            left.discard(rec["video"])
            finish(rec)
        for s in samples:
            if s.name in left:
                finish(error_record(s.name, lost[0] if lost else "lost by its Ray worker", 1 + int(retries)))
    finally:
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - best effort
                pass
        if started:
            ray.shutdown()
