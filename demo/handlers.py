"""The demo's event handlers, without Gradio: plain values in (one :class:`Settings`), plain values out.

``demo/app.py`` builds a :class:`Settings` from the widgets, calls a handler here and turns its answer
into widget updates (a missing output key means "leave that widget as it is") and its errors
(:class:`~vidseg_nb.errors.VidSegError`, ...) into ``gr.Error``. Tests call these functions directly.

State: each browser session holds a small, picklable :class:`SessionState` (ids, clip signature, config;
a few hundred bytes). The heavy part (decoded clip, :class:`VideoSegmenter` with its stage cache,
last :class:`SegmentationResult`) is a :class:`Work` held by the process in :class:`Runtime`, keyed by
the session id; only the most recently used few keep their stage caches.

The device step is one function, :func:`segment_on_device` (model id, frames, config, mode, kept frames,
stage entries -> :class:`DeviceOutput`); ``app.py`` wraps it with ``spaces.GPU(duration=gpu_duration)``
on a ZeroGPU Space, which runs it in a forked worker and pickles its arguments and results. Only what
the GPU step needs crosses: the uint8 frames, the config, and the cached stage entries the run reads
(:class:`~vidseg_nb.cache.StageEntries`, from ``VideoSegmenter.export_stages``); back come the result's
arrays and the entries the run added, which the parent merges into the session's own stage cache
(``import_stages``). The segmenter and its cache never leave the parent; models are loaded in the parent
before the call; runs whose stages are all cached (a new s, settings seen before) never enter it.
Elsewhere (no ZeroGPU) the same function runs in-process under one lock, :data:`_DEVICE_LOCK`, so a
single GPU (or the CPU) never runs two device steps at once; on ZeroGPU each call has its own worker and
GPU, no lock is taken, and ``app.py`` lets several run side by side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseg_nb import progress as _progress
from vidseg_nb.app_support import (
    CPU_MAX_FRAMES,
    GPU_MAX_FRAMES,
    Limits,
    ModelRegistry,
    clip_signature,
    config_from_ui,
    describe_clip,
    estimate_seconds,
    feature_pca,
    gallery_items,
    kept_frames,
    load_clip,
    model_config_default,
    nearest_kept,
    safe_name,
    stats_markdown,
    write_result_files,
    xt_images,
)
from vidseg_nb.backbone import Backbone
from vidseg_nb.cache import StageEntries
from vidseg_nb.config import (
    COARSE_FIELDS,
    DEFAULT_MODEL,
    DIFF_FIELDS,
    MODEL_ENV,
    PRESETS,
    SegConfig,
    default_model,
)
from vidseg_nb.errors import BackboneLoadError, ConfigError, VideoError, VidSegError
from vidseg_nb.features import Features
from vidseg_nb.modulation import final_labels
from vidseg_nb.names import DEFAULT_MARGIN, UNNAMED
from vidseg_nb.pipeline import FrameDetail, SegmentationResult, VideoSegmenter, device_info, parse_vocabulary
from vidseg_nb.synthetic import example_clips
from vidseg_nb.video import Clip, read_video, write_video
from vidseg_nb.viz import legend_entries, legend_html, word_attention_panels

log = logging.getLogger("vidseg_nb.demo")

MAX_CACHED_SESSIONS = 4
"""Sessions whose stage caches are kept (least recently used ones drop theirs and recompute on Segment)."""
OUTPUT_NAMES = (
    "state",
    "overlay",
    "labels",
    "frame",
    "gallery",
    "xt_features",
    "xt_labels",
    "zip",
    "stats",
    "status",
    "legend",  # names (issue 13): HTML swatches + names under the video
)
"""The outputs of :func:`segment` / :func:`preview` / :func:`refilter`, in the order of the widgets."""

Progress = Callable[[float, str], None]


class NoVideo(VideoError):
    """No clip was handed in."""


class NoResult(VidSegError, ValueError):
    """An event that reads the session's segmentation (Follow objects) came before any segmentation."""


def _no_progress(fraction: float, desc: str) -> None:
    pass


PROGRESS_EVERY_S = 0.25
"""Least seconds between two progress updates of a stage in the demo (its start and end always show)."""


def sample_progress(progress: Progress, every_s: float | None = None) -> _progress.Listener:
    """A reader of the one progress source (:mod:`vidseg_nb.progress`, which ``vidseg segment`` reads
    too): each stage's UNet samples done of those planned, with an ETA, as ``progress(fraction, line)``;
    at most every ``every_s`` seconds within a stage, and at each stage's start and end."""
    last: list[Any] = [None, 0.0]
    every_s = PROGRESS_EVERY_S if every_s is None else every_s

    def listen(s: _progress.Snapshot) -> None:
        now = time.perf_counter()
        key = (s.stage, s.frames)
        if key != last[0] or s.done >= s.planned or now - last[1] >= every_s:
            last[0], last[1] = key, now
            progress(s.fraction, s.line())

    return listen


# ------------------------------------------------------------------------------------------ errors
def error_toast(e: BaseException, what: str = "The request") -> tuple[str, str, bool]:
    """``(message, title, known)`` of the one toast for a failed event ``what``: the message escaped for
    HTML, a title that says what failed ("Upload refused: not a usable video"); ``known`` False for an
    unexpected error (the app logs its traceback)."""
    import html

    msg = html.escape(str(e), quote=False).replace("\n", "<br>")
    if isinstance(e, NoVideo):
        return msg, f"{what}: no video yet", True
    if isinstance(e, NoResult):
        return msg, f"{what}: no segmentation yet", True
    if isinstance(e, BackboneLoadError):
        return msg, f"{what} failed: the model could not be loaded", True
    if isinstance(e, (VideoError, ConfigError)):
        kind = "not a usable video" if isinstance(e, VideoError) else "invalid settings"
        return msg, f"{what} refused: {kind}", True
    if isinstance(e, ValueError):
        return msg, f"{what} refused: invalid input", True
    oom = "Lower the resolution cap, the batch size or the number of frames (Advanced) and try again."
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return f"The GPU ran out of memory. {oom}", f"{what} failed: out of GPU memory", True
    if isinstance(e, MemoryError):
        return f"Out of memory: use a shorter or smaller clip. {oom}", f"{what} failed: out of memory", True
    return (
        f"Unexpected error ({type(e).__name__}): {msg}. The app is still running; try another clip or "
        "other settings.",
        f"{what} failed: unexpected error",
        False,
    )


# ------------------------------------------------------------------------------------------ settings
@dataclass
class UIDefaults:
    """Initial widget values (tests use cheap ones)."""

    lam: float = 50.0
    s: float = 0.7
    n_clusters: int = 20
    preset: str = "vidseg"
    t_m: int = 22
    batch_size: int = 14
    max_side: int = 512


@dataclass(frozen=True)
class Settings:
    """The widget values of one event: the clip, the method's controls and the browsing position."""

    video: str | None = None
    lam: float = 50.0
    s: float = 0.7
    n_clusters: int = 20
    preset: str | None = "vidseg"
    t_m: int = 22
    batch_size: int = 14
    max_frames: int | None = None
    max_side: int = 512
    model_id: str | None = None
    frame: float | None = 0
    row: float | None = None
    names: str = ""  # vocabulary for segment names (issue 13), comma-separated; "" = no names

    @classmethod
    def from_defaults(cls, d: UIDefaults, video: str | None = None, **kw: Any) -> Settings:
        return cls(
            video=video, lam=d.lam, s=d.s, n_clusters=d.n_clusters, preset=d.preset, t_m=d.t_m,
            batch_size=d.batch_size, max_side=d.max_side, **kw,
        )  # fmt: skip

    @property
    def use_frames(self) -> int | None:
        return int(self.max_frames) if self.max_frames else None


def video_path(video: Any) -> str | None:
    """A file path from what a UI or caller hands in (path, FileData dict, object with ``.path``)."""
    if video is None or video == "":
        return None
    if isinstance(video, dict):
        return video_path(video.get("path") or video.get("video") or video.get("name"))
    if hasattr(video, "path"):
        return str(video.path)
    return str(video)


# ------------------------------------------------------------------------------------------ state
@dataclass
class SessionState:
    """What a browser session keeps between events (small and picklable): ids and signatures only."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    model_id: str | None = None
    clip_sig: tuple | None = None
    result_sig: tuple | None = None  # (clip_sig, model_id) of the last result
    config: SegConfig | None = None  # of the last result
    mode: str | None = None  # of the last result
    run: int = 0


class Work:
    """The process-held part of a session: decoded clip, segmenter (stage cache), last result, files."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.segmenter: VideoSegmenter | None = None
        self.clip: Clip | None = None
        self.result: SegmentationResult | None = None
        self.kept: list[int] = []
        self.cache_valid = False  # the segmenter's cache holds the stages of ``result``
        self.feature_keys: set[tuple] = set()  # stage keys in the segmenter's cache (this clip, model)
        self.coarse_keys: set[tuple] = set()
        self.diff_keys: set[tuple] = set()
        self.features_cached = False  # the last run found its features in the cache
        self.directory: Path | None = None
        self._pca: np.ndarray | None = None
        self._pca_of: Any = None

    def segmenter_for(self, model_id: str, state: SessionState) -> VideoSegmenter:
        if self.segmenter is None or state.model_id != model_id:
            self.segmenter = VideoSegmenter(None, cache_frames=10_000)  # type: ignore[arg-type]
            state.model_id = model_id
            self.drop_cache()
        return self.segmenter

    def drop_cache(self) -> None:
        """Free the stage cache (memory); the next s change then asks for Segment."""
        if self.segmenter is not None:
            self.segmenter.clear_cache()
        self.cache_valid = False
        self.forget_keys()

    def forget_keys(self) -> None:
        self.feature_keys, self.coarse_keys, self.diff_keys = set(), set(), set()

    def served_by_cache(self, config: SegConfig, mode: str) -> bool:
        """Whether a run of ``config`` needs no device job: every stage it reads is cached."""
        if not self.cache_valid:
            return False
        if mode == "full":
            return config.key(DIFF_FIELDS) in self.diff_keys
        return config.key(COARSE_FIELDS) in self.coarse_keys

    def remember(self, config: SegConfig, mode: str, feature_key: tuple) -> None:
        self.feature_keys.add(feature_key)
        self.coarse_keys.add(config.key(COARSE_FIELDS))
        if mode == "full":
            self.diff_keys.add(config.key(DIFF_FIELDS))

    def pca(self) -> np.ndarray | None:
        r = self.result
        if r is None or r.features is None:
            return None
        if self._pca_of is not r.features:
            self._pca, self._pca_of = feature_pca(r), r.features
        return self._pca

    def close(self) -> None:
        self.drop_cache()
        self.segmenter = self.result = self.clip = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class Runtime:
    """Process-wide state of the app: shared models, settings, and the sessions' :class:`Work`."""

    default_model: str
    base_config: SegConfig
    limits: Limits
    defaults: UIDefaults
    models: ModelRegistry = field(default_factory=ModelRegistry)
    max_cached_sessions: int = MAX_CACHED_SESSIONS
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "vidseg_demo")
    cache_examples: bool = True
    device_fn: Callable[..., DeviceOutput] | None = None  # spaces.GPU(segment_on_device) on ZeroGPU
    _work: OrderedDict[str, Work] = field(default_factory=OrderedDict)
    _cached: OrderedDict[str, Work] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def work(self, state: SessionState | None) -> Work | None:
        """The process-held part of ``state`` (None if the session is unknown here)."""
        return self._work.get(state.id) if state is not None else None

    def work_for(self, state: SessionState) -> Work:
        with self._lock:
            w = self._work.get(state.id)
            if w is None:
                w = self._work[state.id] = Work()
            return w

    def touch(self, state: SessionState) -> None:
        """Mark the stage cache of ``state`` as recently used; drop the caches of the oldest sessions."""
        with self._lock:
            w = self._work.get(state.id)
            if w is None:
                return
            self._cached[state.id] = w
            self._cached.move_to_end(state.id)
            while len(self._cached) > self.max_cached_sessions:
                _, old = self._cached.popitem(last=False)
                old.drop_cache()

    def forget(self, state: SessionState, keep_files: bool = False) -> None:
        with self._lock:
            self._cached.pop(state.id, None)
            w = self._work.pop(state.id, None)
        if w is not None:
            if keep_files:
                w.directory = None
            w.close()

    def model_id(self, model_id: str | None) -> str:
        return (model_id or "").strip() or self.default_model


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    return int(v) if v and v.strip().isdigit() else None


def _cuda() -> bool:
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true") or torch.cuda.is_available()


def configure(
    backbone: Backbone | None = None,
    *,
    model: str | None = None,
    model_config: str | None = None,
    base_config: SegConfig | None = None,
    max_frames: int | None = None,
    defaults: UIDefaults | None = None,
    max_cached_sessions: int | None = None,
    cache_examples: bool | None = None,
    workdir: str | os.PathLike | None = None,
) -> Runtime:
    """Set the app's runtime (tests call it to inject the tiny model and cheap defaults).

    ``backbone``: an already loaded backbone (its ``source`` is the default model id); ``model``: the
    default model id (default ``$VIDSEG_MODEL`` or SD 2.1-base), loaded lazily; ``model_config``: the
    configs of a single-file checkpoint (default ``$VIDSEG_MODEL_CONFIG``), for ``load_backbone(config=)``;
    ``base_config``: the fields without a widget; ``max_frames``: the clip-length limit (default 48 with
    a GPU, 16 on the CPU, ``$VIDSEG_DEMO_MAX_FRAMES``); ``workdir``: where sessions write their files
    (default ``<temp dir>/vidseg_demo`` or ``$VIDSEG_DEMO_DIR``).
    """
    global RUNTIME
    source = model or (backbone.source if backbone is not None else default_model())
    gpu = backbone.device.type == "cuda" if backbone is not None else _cuda()
    limit = max_frames or _env_int("VIDSEG_DEMO_MAX_FRAMES") or (GPU_MAX_FRAMES if gpu else CPU_MAX_FRAMES)
    if cache_examples is None:
        cache_examples = os.environ.get("VIDSEG_DEMO_CACHE_EXAMPLES", "1").lower() not in ("0", "false", "no")
    rt = Runtime(
        default_model=source,
        base_config=base_config or SegConfig(),
        limits=Limits(max_frames=limit),
        defaults=defaults or UIDefaults(max_side=512 if gpu else 256),
        models=ModelRegistry(model_config=model_config or model_config_default()),
        max_cached_sessions=max_cached_sessions or _env_int("VIDSEG_DEMO_SESSIONS") or MAX_CACHED_SESSIONS,
        cache_examples=cache_examples,
    )
    if workdir is not None or os.environ.get("VIDSEG_DEMO_DIR"):
        rt.workdir = Path(workdir or os.environ["VIDSEG_DEMO_DIR"])
    if backbone is not None:
        rt.models.add(backbone, source)
    RUNTIME = rt
    return rt


RUNTIME: Runtime | None = None


def runtime() -> Runtime:
    return RUNTIME if RUNTIME is not None else configure()


# ------------------------------------------------------------------------------------------ device
_DEVICE_LOCK = threading.Lock()
"""One device step at a time in this process (not taken on ZeroGPU, where each call has its own GPU)."""


@dataclass
class DeviceOutput:
    """What :func:`segment_on_device` hands back: the result's arrays and the stage entries it added.

    ``labels`` Y (N, H0, W0) uint8; ``coarse_before``/``coarse_after`` M^j, M~^j (N, h, w); ``finals``
    Y (H, W) at the processing size of each kept frame, as uint8 (label ids < 256); ``entries`` the
    features / coarse maps / D_l this run computed (not those it was handed). The rest of the kept
    frames' :class:`FrameDetail` (frame, features, D_l with I+/I-, D~_l) is what the parent has once the
    entries are merged: :func:`result_from_device` rebuilds it there rather than pickling it twice.
    """

    labels: np.ndarray
    coarse_before: np.ndarray
    coarse_after: np.ndarray
    finals: dict[int, np.ndarray]
    timings: dict[str, float]
    work: dict[str, int]
    computed: tuple[str, ...]
    is_random_model: bool
    entries: StageEntries
    name_queries: dict[str, torch.Tensor] | None = None  # first batch's attn2 queries (issue 13: rename)


def gpu_duration(
    model_id: str,
    frames: np.ndarray,
    config: SegConfig,
    mode: str,
    keep: list[int],
    entries: Any = None,
    record_names: bool = False,
) -> int:
    """Seconds of GPU to request for :func:`segment_on_device` (``spaces.GPU(duration=...)`` takes a
    callable of the same arguments): frames x labels x steps, with a margin, within [60, 900]."""
    return int(min(900, max(60, 1.5 * estimate_seconds(len(frames), config, mode))))


def segment_on_device(
    model_id: str,
    frames: np.ndarray,
    config: SegConfig,
    mode: str,
    keep: list[int],
    entries: StageEntries | None = None,
    record_names: bool = False,
) -> DeviceOutput:
    """The only code that runs the backbone (in a ZeroGPU worker, or in-process under the lock).

    ``frames``: the clip's uint8 frames (N, H0, W0, 3); ``entries``: the cached stages this run reads
    (``VideoSegmenter.export_stages``). A throw-away segmenter takes them, runs, and gives back the
    result's arrays and the entries it added; the model is the parent's (loaded before the call).
    """
    seg = VideoSegmenter(runtime().models.get(model_id), cache_frames=max(1, len(frames)))
    clip = Clip(frames=frames, fps=1.0, source="<device>")
    if entries is not None:
        seg.import_stages(clip, entries)
    bars = _progress.current() is None  # tracked in-process: the progress source reports, no tqdm bars
    r = seg.segment(clip, config, mode=mode, keep=keep, progress=bars, record_names=record_names)  # type: ignore[arg-type]
    added = seg.export_stages(clip, config, mode).without(entries)  # type: ignore[arg-type]
    return DeviceOutput(
        labels=r.labels,
        coarse_before=r.coarse_before,
        coarse_after=r.coarse_after,
        finals={i: d.final.astype(np.uint8) for i, d in r.details.items()},
        timings=r.timings,
        work=r.work,
        computed=r.computed,
        is_random_model=r.is_random_model,
        entries=added,
        name_queries=r.name_queries,
    )


def _detail_features(feats: Features, i: int, aggregate: bool) -> dict[int, np.ndarray]:
    """``FrameDetail.features`` of frame ``i``: every block's query, key 0 the stage-1 feature F~."""
    one = feats[i : i + 1]
    fd = {blk: t[0].numpy() for blk, t in one.blocks.items()}
    fd[0] = one.stage1(aggregate)[0].numpy()
    return fd


def result_from_device(
    seg: VideoSegmenter, clip: Clip, config: SegConfig, mode: str, out: DeviceOutput
) -> SegmentationResult:
    """The :class:`SegmentationResult` of a device step, once ``out.entries`` are in ``seg``'s cache.

    Each kept frame's :class:`FrameDetail` is rebuilt as the pipeline builds it: the processed frame, the
    features (from the cached F~), M^j and M~^j (from ``out``), Y (``out.finals``), and in full mode the
    raw D_l (cached) and D~_l (step 4's filtering of D_l with s, recomputed here; it is deterministic).
    """
    orig, proc, _ = seg.prepare(clip, config)
    have = seg.export_stages(clip, config, mode)  # type: ignore[arg-type]
    feats = next(iter(have.features.values()), None)
    diffs = next(iter(have.diffs.values()), None) if mode == "full" else None
    if feats is None or (mode == "full" and diffs is None):  # pragma: no cover - a clip too long to cache
        raise VideoError("This clip is too long for the session cache; shorten it.")
    details = {}
    for i, y in sorted(out.finals.items()):
        diff = diffs[i] if diffs is not None else None
        filtered = (
            final_labels(diff, out.coarse_after[i], config.s_effective)[0] if diff is not None else None
        )
        details[i] = FrameDetail(
            index=i,
            frame=proc[i],
            features=_detail_features(feats, i, config.aggregate),
            coarse_before=out.coarse_before[i],
            coarse_after=out.coarse_after[i],
            final=y.astype(np.int64),
            diff=diff,
            filtered=filtered,
        )
    return SegmentationResult(
        labels=out.labels,
        coarse_before=out.coarse_before,
        coarse_after=out.coarse_after,
        mode=mode,  # type: ignore[arg-type]
        config=config,
        fps=float(clip.fps),
        size=(int(proc.shape[1]), int(proc.shape[2])),
        original_size=(int(orig.shape[1]), int(orig.shape[2])),
        details=details,
        features=feats,
        timings=out.timings,
        work=out.work,
        is_random_model=out.is_random_model,
        computed=out.computed,
    )


def run_device_step(
    rt: Runtime,
    seg: VideoSegmenter,
    mid: str,
    clip: Clip,
    config: SegConfig,
    mode: str,
    keep: list[int],
    record_names: bool = False,
) -> SegmentationResult:
    """One device step for a session: hand over the entries the run reads, merge back what it added.

    ``seg`` is the session's segmenter with its backbone attached (for the stage keys). ZeroGPU calls
    ``rt.device_fn`` (``spaces.GPU``, a worker per call, no lock); otherwise :func:`segment_on_device`
    runs here under :data:`_DEVICE_LOCK`.
    """
    entries = seg.export_stages(clip, config, mode)  # type: ignore[arg-type]
    if rt.device_fn is not None:
        out = rt.device_fn(mid, clip.frames, config, mode, keep, entries, record_names)
    else:
        with _DEVICE_LOCK:
            out = segment_on_device(mid, clip.frames, config, mode, keep, entries, record_names)
    seg.import_stages(clip, out.entries)
    result = result_from_device(seg, clip, config, mode, out)
    return dataclasses.replace(result, name_queries=out.name_queries)


# ------------------------------------------------------------------------------------------ texts
def _model_line(rt: Runtime, model_id: str) -> str:
    bb = rt.models.peek(model_id)
    if bb is None:
        return f"model `{model_id}`"
    rnd = " — **random weights, results are not meaningful**" if bb.is_random else ""
    return f"model `{model_id}` on {device_info(bb)}{rnd}"


def banner_markdown(model_id: str | None = None) -> str:
    """The banner: model status (random tiny model warning, or why the model could not be loaded)."""
    import html

    rt = runtime()
    m = rt.model_id(model_id)
    bb, err = rt.models.peek(m), rt.models.error(m)
    if err:
        return (
            f"### ⚠️ The model `{html.escape(m)}` could not be loaded\n\n{html.escape(err)}\n\n"
            f"**What to do:** set `{MODEL_ENV}` to a local copy of the weights (a diffusers folder or a "
            f"single .safetensors file, with `--model-config DIR` for its configs), or enter one as the "
            f"model id under Advanced; `{MODEL_ENV}=tiny python demo/app.py` runs the app on a random "
            "tiny model (a smoke test)."
        )
    if bb is not None and bb.is_random:
        return (
            f"### ⚠️ Random tiny model (`{html.escape(m)}`)\n\n"
            "This app runs a randomly initialised model: the whole pipeline works, but its segmentations "
            "are **not meaningful**. Set `VIDSEG_MODEL` to Stable Diffusion 2.1 for real results."
        )
    from vidseg_nb.toy import is_toy

    if bb is not None and is_toy(bb):
        return (
            f"### 🧸 Toy model (`{html.escape(m)}`) on {device_info(bb)}\n\n"
            "A tiny Stable Diffusion layout that vidseg_nb trained itself (40 minutes, 2 CPU cores) on "
            "synthetic clips of coloured, textured shapes: it segments such toy-world clips "
            "(`vidseg example --toy`), not real video, and its names are not reliable yet "
            "(docs/toy.md). Set `VIDSEG_MODEL` to Stable Diffusion 2.1 for real clips."
        )
    if bb is not None:
        return f"Model `{html.escape(m)}` on {device_info(bb)}."
    return f"Model `{html.escape(m)}` is loaded at the first run."


# ------------------------------------------------------------------------------------------ outputs
def _write(state: SessionState, work: Work, rt: Runtime) -> tuple[str, str, str]:
    """Write this run's files; delete those of runs before the previous one (a UI may still serve them)."""
    assert work.result is not None and work.clip is not None
    if work.directory is None or not work.directory.is_dir():
        base = rt.workdir / "sessions"
        base.mkdir(parents=True, exist_ok=True)
        work.directory = Path(tempfile.mkdtemp(prefix="s_", dir=base))
    previous = f"_{state.run:03d}"
    for old in work.directory.iterdir():
        if previous not in old.name:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    state.run += 1
    files = write_result_files(
        work.result, work.clip.frames, work.directory, Path(work.clip.source).stem, f"{state.run:03d}"
    )
    return tuple(str(p) for p in files)  # type: ignore[return-value]


def _render(state: SessionState, work: Work, rt: Runtime, s: Settings, wall: float, status: str) -> dict:
    r = work.result
    assert r is not None
    overlay, labels, zpath = _write(state, work, rt)
    kept = sorted(r.details) or [0]
    stride = kept[1] - kept[0] if len(kept) > 1 else 1
    f = nearest_kept(r, s.frame) or 0
    pca = work.pca()
    feat_xt, lab_xt = xt_images(r, s.row, pca)
    return dict(
        state=state,
        overlay=overlay,
        labels=labels,
        frame=dict(minimum=0, maximum=max(1, kept[-1]), step=stride, value=f),
        gallery=gallery_items(r, f, pca) + name_panels(r, f),
        legend=names_legend(r),
        xt_features=feat_xt,
        xt_labels=lab_xt,
        zip=zpath,
        stats=stats_markdown(r, wall, work.features_cached),
        status=status,
    )


# ------------------------------------------------------------------------------------------ handlers
def _run(state: SessionState | None, s: Settings, mode: str, progress: Progress, register: bool) -> dict:
    t0 = time.perf_counter()
    rt = runtime()
    path = video_path(s.video)
    if path is None:
        raise NoVideo("Upload a video first (or click one of the examples).")
    config = config_from_ui(
        rt.base_config, s.preset or rt.defaults.preset, lam=s.lam, s=s.s, n_clusters=s.n_clusters,
        t_m=s.t_m, batch_size=s.batch_size, max_side=s.max_side,
    )  # fmt: skip
    mid = rt.model_id(s.model_id)
    progress(0.0, f"loading the model {mid}")
    rt.models.get(mid)  # BackboneLoadError before touching the session
    state = state if isinstance(state, SessionState) else SessionState()
    work = rt.work_for(state)
    if not work.lock.acquire(timeout=900):
        raise VideoError("This session is still busy with the previous run; try again in a moment.")
    try:
        progress(0.02, "reading the clip")
        if not Path(path).is_file():
            raise VideoError(f"{Path(path).name}: the uploaded file is gone; upload it again.")
        sig = clip_signature(path, s.use_frames)
        if work.clip is None or state.clip_sig != sig:
            work.clip = load_clip(path, rt.limits, s.use_frames)
            state.clip_sig = sig
        seg = work.segmenter_for(mid, state)
        if state.result_sig != (sig, mid) or (state.config and state.config.max_side != config.max_side):
            work.forget_keys()  # the segmenter's cache follows the last clip at its processing size
        # names (issue 13): record the first batch's cross-attention queries whenever the model has a text
        # encoder, so any vocabulary typed later names the result with zero UNet samples (rename)
        record = getattr(rt.models.get(mid), "text_encoder", None) is not None
        keep = kept_frames(len(work.clip))
        seg.backbone = rt.models.get(mid)  # shared; only while this run uses it (stage keys, filtering)
        try:
            fkey = seg.feature_key(config)
            features_cached = work.cache_valid and fkey in work.feature_keys
            if work.served_by_cache(config, mode):  # only filtering (s) or seen settings: no device job
                result = seg.segment(work.clip, config, mode=mode, keep=keep, progress=False)
                if set(result.computed) - {"filter"}:  # pragma: no cover - bookkeeping out of step
                    log.warning("a cached run recomputed %s outside the device job", result.computed)
            else:
                est = gpu_duration(mid, work.clip.frames, config, mode, keep) if rt.device_fn else None
                msg = f"segmenting {len(work.clip)} frames" + (f" (up to about {est} s)" if est else "")
                progress(0.05, msg)
                with _progress.track(sample_progress(progress)):  # UNet samples per stage, with an ETA
                    result = run_device_step(rt, seg, mid, work.clip, config, mode, keep, record)
        finally:
            seg.backbone = None
        prev = work.result  # a cached run keeps the clip's recorded name queries (same clip and features)
        if result.name_queries is None and prev is not None and prev.name_queries is not None:
            if state.result_sig == (sig, mid) and prev.features is result.features:
                result = dataclasses.replace(result, name_queries=prev.name_queries)
        result = _named(seg, rt.models.get(mid), result, s.names)
        work.segmenter, work.result, work.kept = seg, result, keep
        work.cache_valid, work.features_cached = True, features_cached
        work.remember(config, mode, fkey)
        state.result_sig, state.config, state.mode = (sig, mid), config, mode
        if register:  # a session's cache counts against the server's few (examples keep none)
            rt.touch(state)
        progress(0.97, "writing the videos")
        kind = "Preview (coarse maps M~ upsampled)" if mode == "preview" else "Segmentation"
        status = f"{kind} of **{safe_name(path)}** with {_model_line(rt, mid)}."
        return _render(state, work, rt, s, time.perf_counter() - t0, status)
    finally:
        work.lock.release()


def segment(state: SessionState | None, s: Settings, progress: Progress = _no_progress) -> dict:
    """Segment the clip (Segment button): reruns only the stages whose settings changed."""
    return _run(state, s, "full", progress, register=True)


def preview(state: SessionState | None, s: Settings, progress: Progress = _no_progress) -> dict:
    """Coarse maps only (Preview button): features + stages 1-2, no modulation."""
    return _run(state, s, "preview", progress, register=True)


def refilter(state: SessionState | None, s: Settings) -> dict:
    """A new s (slider release): re-filter the cached difference maps, no UNet; otherwise only a status.

    Runs only when the session has a full result of the same clip, model and settings but s; anything
    else (no result yet, a preview, lambda or K moved, another clip) waits for Segment.
    """
    rt = runtime()
    work = rt.work(state)
    if state is None or work is None or work.result is None:
        return dict(status="s is applied when you press Segment (no result yet).")
    r = work.result
    path = video_path(s.video)
    if path is None:
        return {}
    config = config_from_ui(
        rt.base_config, s.preset or rt.defaults.preset, lam=s.lam, s=s.s, n_clusters=s.n_clusters,
        t_m=s.t_m, batch_size=s.batch_size, max_side=s.max_side,
    )  # fmt: skip
    mid = rt.model_id(s.model_id)
    sig = clip_signature(path, s.use_frames) if Path(path).is_file() else None
    if sig is None or state.result_sig != (sig, mid) or state.clip_sig != sig:
        return dict(status="Another clip or model: press **Segment** to run it.")
    if r.mode != "full":
        return dict(status="s has no effect on a preview; press **Segment** for the full method.")
    if config != r.config.replace(s=config.s):
        return dict(
            status="Other settings changed too (lambda, K or Advanced): press **Segment** to apply them; "
            "s alone re-filters instantly."
        )
    if config == r.config:
        return {}
    if not work.cache_valid:
        return dict(status="This session's cache was freed (the server keeps a few); press **Segment**.")
    if not work.lock.acquire(blocking=False):
        return dict(status="Busy with a run; s is applied with it when you press Segment again.")
    try:
        t0 = time.perf_counter()
        seg = work.segmenter
        bb = rt.models.peek(mid)
        if bb is None or seg is None or work.clip is None:
            return dict(status="The model was unloaded; press **Segment**.")
        seg.backbone = bb  # the stage cache has D_l: filtering only, no device job
        try:
            result = seg.segment(work.clip, config, mode="full", keep=work.kept, progress=False)
        finally:
            seg.backbone = None
        if result.name_queries is None and r.name_queries is not None:  # same clip and features: the
            result = dataclasses.replace(result, name_queries=r.name_queries)  # recorded queries carry over
        work.result, work.features_cached = _named(seg, bb, result, s.names), True
        state.config = config
        rt.touch(state)
        status = f"Re-filtered with s = {config.s:g} (cached difference maps, no UNet)."
        return _render(state, work, rt, s, time.perf_counter() - t0, status)
    finally:
        work.lock.release()


def frame_gallery(state: SessionState | None, frame: float | None) -> list[tuple[np.ndarray, str]] | None:
    """The intermediates of the chosen frame (the nearest kept one); None without a result."""
    work = runtime().work(state)
    if work is None or work.result is None:
        return None
    return gallery_items(work.result, frame, work.pca()) + name_panels(work.result, frame)


# ------------------------------------------------------------------------------------------ names (issue 13)
def _named(seg: VideoSegmenter, backbone: Any, result: SegmentationResult, words: str) -> SegmentationResult:
    """``result`` named with ``words`` (comma-separated) from its recorded queries: text encoder and
    ``to_k`` only, no UNet (``VideoSegmenter.rename``); unchanged when ``words`` is empty."""
    if not parse_vocabulary(words or ""):
        return dataclasses.replace(result, names={}, vocabulary=(), word_attention=None)
    seg.backbone = backbone
    try:
        return seg.rename(result, words)
    finally:
        seg.backbone = None


def names_legend(result: SegmentationResult | None) -> str:
    """The legend under the video: a colour swatch and a name per label id present in the labels."""
    if result is None or not result.names:
        return ""
    entries = legend_entries(result.names, ids=np.unique(result.labels).tolist())
    small = '<div style="opacity:.7;font-size:85%">{}</div>'
    note = small.format("random tiny model: these names are random") if result.is_random_model else ""
    if any(t.startswith(UNNAMED) for _, t, _ in entries):
        note += small.format(UNNAMED_NOTE)
    return legend_html(entries) + note


UNNAMED_NOTE = (
    f"A segment stays unnamed when no word leads: a word's score is its cross-attention inside the segment "
    f"over its average in the frame (1 = no preference); the best word needs a lead of {DEFAULT_MARGIN:.2f} "
    "over the second best (vidseg_nb.names). Try fewer or more distinct words."
)


def name_panels(result: SegmentationResult, frame: float | None) -> list[tuple[np.ndarray, str]]:
    """Per-word attention maps for the gallery: of the chosen frame when it is in the first batch (whose
    queries are cached), else of the first batch's nearest frame; empty without names."""
    att = result.word_attention
    if att is None or not result.vocabulary:
        return []
    i = min(len(att) - 1, max(0, int(round(float(frame or 0)))))
    d = result.details.get(i)
    base = d.frame if d is not None else None
    panels = word_attention_panels(att, result.vocabulary, base, index=i)
    return [(img, f"frame {i}: {cap}") for img, cap in panels]


def rename(state: SessionState | None, s: Settings) -> dict:
    """A new vocabulary (Names box): re-name the last result from its cached queries, no UNet, no device
    job; the legend and the gallery's attention maps follow."""
    rt = runtime()
    work = rt.work(state)
    if state is None or work is None or work.result is None:
        return dict(status="Names are given to the segments when you press Segment (no result yet).")
    if not work.result.name_queries:
        return dict(status="This model has no text encoder (or the run kept no queries): no names.")
    mid = rt.model_id(s.model_id)
    bb = rt.models.peek(mid)
    if bb is None or work.segmenter is None:
        return dict(status="The model was unloaded; press **Segment**.")
    if not work.lock.acquire(blocking=False):
        return dict(status="Busy with a run; the names are applied with it.")
    try:
        t0 = time.perf_counter()
        c0 = bb.counters.snapshot()
        work.result = _named(work.segmenter, bb, work.result, s.names)
        unet = bb.counters.since(c0)["unet_samples"]
        r = work.result
        f = nearest_kept(r, s.frame) or 0
        words = ", ".join(r.vocabulary) or "none"
        status = (
            f"Named with {{{words}}} in {time.perf_counter() - t0:.2f} s, {unet} UNet samples "
            "(cached cross-attention queries)."
        )
        if r.is_random_model:
            status += " Random tiny model: the names are random."
        return dict(
            gallery=gallery_items(r, f, work.pca()) + name_panels(r, f), legend=names_legend(r), status=status
        )
    finally:
        work.lock.release()


def xt(state: SessionState | None, row: float | None) -> tuple[np.ndarray | None, np.ndarray] | None:
    """x-t slices of features (PCA) and labels at ``row`` percent of the height; None without a result."""
    work = runtime().work(state)
    if work is None or work.result is None:
        return None
    return xt_images(work.result, row, work.pca())


def inspect(video: Any) -> str:
    """Facts about an upload (and the limits) as soon as it arrives; bad files raise :class:`VideoError`."""
    path = video_path(video)
    return "" if path is None else describe_clip(path, runtime().limits)


def upload_preview(video: Any) -> str | None:
    """A clip the browser can play for the upload box: mp4/webm as uploaded, anything else (gif, mov,
    avi, mkv) as an H.264 mp4 of the frames the app would use (cached per file); None without a file."""
    path = video_path(video)
    if path is None:
        return None
    if Path(path).suffix.lower() in (".mp4", ".webm"):
        return path
    rt = runtime()
    out = (
        rt.workdir / "previews" / f"{hashlib.sha1(repr(clip_signature(path)).encode()).hexdigest()[:16]}.mp4"
    )
    if not out.is_file():
        clip = load_clip(path, rt.limits)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_video(out, clip.frames, fps=clip.fps)
    return str(out)


CLEARED = dict(
    overlay=None, labels=None, gallery=[], xt_features=None, xt_labels=None, zip=None, stats="", legend=""
)
"""What the result outputs show after a failed upload or run: nothing of the previous result."""


def glossary(readme: Path | None = None) -> str:
    """The symbols' glossary (README.md's "Glossary" section, between its ``<!-- glossary`` markers)."""
    readme = readme or README
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    m = re.search(r"<!-- glossary[^>]*-->\n(.*?)<!-- /glossary -->", text, re.S)
    return m.group(1).strip() if m else "See the README's Glossary."


def banner(model_id: str | None = None) -> str:
    """The model banner; on page load (``model_id`` None) it loads the default model once."""
    rt = runtime()
    m = rt.model_id(model_id)
    if model_id is None and rt.models.peek(m) is None:
        try:
            rt.models.get(m)
        except BackboneLoadError:
            pass
    return banner_markdown(model_id)


def preset_values(name: str) -> tuple[float, float, int, int] | None:
    """(lambda, s, B, t_m) of a preset; None for an unknown name."""
    p = PRESETS.get(name)
    if p is None:
        return None
    return p["lam"], p["s"], p["batch_size"], p.get("t_m", SegConfig().t_m)


def example(video: Any, progress: Progress = _no_progress) -> dict:
    """An example clip segmented with the default settings in a throw-away session."""
    rt = runtime()
    state = SessionState()
    try:
        out = _run(state, Settings.from_defaults(rt.defaults, video_path(video)), "full", progress, False)
    finally:
        rt.forget(state, keep_files=True)  # the files stay: the caller copies them (Gradio caches examples)
    note = " Examples are cached without their intermediates: press **Segment** to browse them."
    return dict(overlay=out["overlay"], labels=out["labels"], stats=out["stats"], status=out["status"] + note)


def close(state: Any) -> None:
    """A session ended: free its process-held part and files."""
    if isinstance(state, SessionState) and RUNTIME is not None:
        RUNTIME.forget(state)


def examples_cache_dir(rt: Runtime) -> Path:
    """Where the examples' cache lives: ``$GRADIO_EXAMPLES_CACHE`` or ``<work dir>/cached_examples``, then
    one folder per model and settings (``<model>-<hash of model, limits, defaults, config>``)."""
    key = f"{rt.default_model}|{rt.limits.max_frames}|{rt.defaults}|{rt.base_config}"
    slug = re.sub(r"[^A-Za-z0-9]+", "-", rt.default_model)[-40:]
    base = Path(os.environ.get("GRADIO_EXAMPLES_CACHE") or rt.workdir / "cached_examples")
    return base / f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def pin_examples_cache(examples: Any, folder: Path) -> Path:
    """Give a ``gr.Examples`` the cache folder ``folder/"examples"``: Gradio names it after its dataset's
    block id ("41"), which moves whenever the layout gains a component (a stale or orphaned cache)."""
    d = Path(folder) / "examples"
    examples.cached_folder, examples.cached_file = d, d / "log.csv"
    examples.cached_indices_file = d / "indices.csv"
    return d


README = Path(__file__).resolve().parents[1] / "README.md"


def space_header(readme: Path = README) -> str:
    """The Hugging Face Space header: README.md's YAML front matter (``---`` ... ``---``), the one place
    it is written; "" when the README is absent (an installed package)."""
    if not readme.is_file():
        return ""
    text = readme.read_text(encoding="utf-8")
    m = re.match(r"---\n.*?\n---\n", text, re.S)
    return m.group(0) if m else ""


def model_choices(default: str) -> list[str]:
    """The model box's choices: the default first, then SD 2.1, the toy model (runs on a CPU: the Space's
    choice without a GPU) and the random tiny models; any other id, folder or file can be typed."""
    out = [default, DEFAULT_MODEL, "toy", "tiny", "tiny-svd"]
    return list(dict.fromkeys(m for m in out if m))


def is_toy_source(model: str) -> bool:
    """``model`` (a model box / ``$VIDSEG_MODEL`` value) names the shipped toy model."""
    from vidseg_nb.toy import model_path

    m = (model or "").strip()
    return m.lower() == "toy" or (bool(m) and Path(m).expanduser().resolve() == model_path().resolve())


def example_paths(limit: int, directory: Path | None = None, *, toy: bool | None = None) -> list[str]:
    """The example clips (written once under the work dir), trimmed to ``limit`` frames: toy-world clips
    when the demo's model is the toy model (``toy`` None: the runtime's default model decides), else the
    synthetic clips of :mod:`vidseg_nb.synthetic`."""
    if toy is None:
        toy = is_toy_source(runtime().default_model)
    d = directory or runtime().workdir / ("examples_toy" if toy else "examples")
    if toy:
        from vidseg_nb.toy import example_clips as toy_example_clips

        clips = toy_example_clips(d)
    else:
        clips = example_clips(d)
    out = []
    for p in clips:
        clip = read_video(p)
        if len(clip) <= limit:
            out.append(str(p))
            continue
        q = p.with_name(f"{p.stem}_{limit}f.mp4")
        if not q.is_file() or q.stat().st_size == 0:
            write_video(q, clip.frames[:limit], fps=clip.fps)
        out.append(str(q))
    return out
