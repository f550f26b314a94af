"""What an app (the Gradio demo) and the notebooks share: upload limits and checks, the SegConfig of UI
values, the shared model registry, result files (videos, label PNG zip), the intermediates gallery of a
frame (PCA of F~, M^j, M~^j, D_l, D~_l, I+/I-, Y), x-t slices and the stats report.

No UI toolkit here: functions take plain values and raise :class:`~vidseg_nb.errors.VideoError`,
:class:`~vidseg_nb.errors.ConfigError` or :class:`~vidseg_nb.errors.BackboneLoadError` with messages
meant for users.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import threading
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backbone import Backbone
from .config import PRESETS, SegConfig
from .errors import BackboneLoadError, ConfigError, VideoError
from .features import pca_view, xt_slice
from .loading import load_backbone
from .palette import colorize
from .pipeline import SegmentationResult
from .video import (
    MIN_SIDE,
    Clip,
    overlay_frames,
    probe_video,
    read_video,
    resize_frames,
    resize_labels,
    write_label_pngs,
    write_video,
)
from .viz import frame_panels, upscale

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
MAX_KEEP = 16
"""Frames whose intermediates (I+/I-, D_l, ...) are kept for the frame browser (evenly spaced)."""
DISPLAY_SIDE = 1024
"""Long side of the output videos (label PNGs keep the input resolution)."""
MODEL_CONFIG_ENV = "VIDSEG_MODEL_CONFIG"
"""Environment variable: a diffusers folder or Hub id with the configs of a single-file checkpoint."""


# ------------------------------------------------------------------------------------------ limits
@dataclass(frozen=True)
class Limits:
    """What an upload may be (shown to users, enforced by :func:`check_clip` / :func:`load_clip`)."""

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


def check_clip(path: str | os.PathLike, limits: Limits) -> dict[str, Any]:
    """Cheap checks of an upload before decoding it; returns :func:`~vidseg_nb.video.probe_video`'s facts.

    Raises :class:`VideoError` (empty or unreadable file, frames too large or too small, too long).
    """
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


def describe_clip(path: str | os.PathLike, limits: Limits) -> str:
    """One markdown line about an upload (after :func:`check_clip`): frames, size, fps, duration."""
    info = check_clip(path, limits)
    h, w = info["size"]
    n = info.get("n_frames")
    n_txt = f"{n} frames" if info.get("n_frames_exact") else (f"about {n} frames" if n else "? frames")
    dur = info.get("duration")
    dur_txt = f", {dur:.1f} s" if dur else ""
    return f"**{safe_name(path)}**: {n_txt}, {w}x{h} px, {info['fps']:.3g} fps{dur_txt}."


def safe_name(path: str | os.PathLike) -> str:
    """The file name of ``path``, escaped for markdown/HTML."""
    import html

    return html.escape(Path(path).name, quote=False)


def load_clip(path: str | os.PathLike, limits: Limits, use_frames: int | None = None) -> Clip:
    """Check and decode an upload: at least ``min_frames`` and at most ``max_frames`` frames, sizes
    within the limits; then keep the first ``use_frames`` frames (the "maximum frames" control)."""
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


def clip_signature(path: str | os.PathLike, use_frames: int | None = None) -> tuple:
    """What identifies a decoded upload: a hash of the file's bytes, its size and the frames used (a
    re-upload of the same file under a new name is the same clip)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return (h.hexdigest(), Path(path).stat().st_size, use_frames)


def kept_frames(n: int, most: int = MAX_KEEP) -> list[int]:
    """Frames whose intermediates are kept: all of a short clip, else every ``ceil(n / most)``-th."""
    stride = max(1, math.ceil(n / most))
    return list(range(0, n, stride))


# ------------------------------------------------------------------------------------------ config
def config_from_ui(
    base: SegConfig,
    preset_name: str,
    *,
    lam: float,
    s: float,
    n_clusters: float,
    t_m: float,
    batch_size: float,
    max_side: float,
) -> SegConfig:
    """The SegConfig of UI values: the preset's switches over ``base`` (the fields without a control), then
    lambda, s, K, t_m, B and the resolution cap (rounded down to a multiple of 64, at least 64)."""
    if preset_name not in PRESETS:
        raise ConfigError(f"unknown preset {preset_name!r}; choose one of {sorted(PRESETS)}")
    side = int(max_side)
    side = max(64, side - side % 64)
    return base.replace(**PRESETS[preset_name], preset=preset_name).replace(
        lam=float(lam),
        s=float(s),
        n_clusters=int(round(n_clusters)),
        t_m=int(round(t_m)),
        batch_size=int(round(batch_size)),
        max_side=side,
        max_frames=None,
    )


# ------------------------------------------------------------------------------------------ cost
SECONDS_PER_SAMPLE_512 = 0.02
"""Seconds per UNet sample at 512x512 on an A100-class GPU (from the paper's 0.41 frames/s)."""


def unet_samples(n_frames: int, config: SegConfig, mode: str = "full", n_labels: int | None = None) -> int:
    """UNet samples a run computes from scratch: per frame 2 (CFG) x (n_steps - t_m) for the reference
    run, plus, with modulation, 2 runs (+/- lambda) per label L <= K, each of as many CFG steps."""
    steps = 2 * max(1, config.n_steps - config.t_m)
    labels = config.n_clusters if n_labels is None else n_labels
    per_frame = steps * (1 + (2 * labels if mode == "full" else 0))
    return n_frames * per_frame


def estimate_seconds(
    n_frames: int,
    config: SegConfig,
    mode: str = "full",
    *,
    seconds_per_sample: float = SECONDS_PER_SAMPLE_512,
    overhead: float = 20.0,
) -> float:
    """Device seconds of a run from scratch (frames x labels x steps), for GPU requests and users."""
    scale = (config.max_side / 512) ** 2
    return overhead + unet_samples(n_frames, config, mode) * seconds_per_sample * scale


# ------------------------------------------------------------------------------------------ models
def model_config_default() -> str | None:
    """``$VIDSEG_MODEL_CONFIG`` (configs for a single-file checkpoint), or None."""
    return os.environ.get(MODEL_CONFIG_ENV) or None


class ModelRegistry:
    """Backbones loaded on demand by source (Hub id, folder, file, ``tiny``), shared by all users.

    At most ``max_loaded`` stay in memory (least recently used go first); load failures are remembered
    (for a banner) and retried on the next request. ``model_config`` goes to
    ``load_backbone(source, config=...)`` (the configs of a single-file checkpoint).
    """

    def __init__(self, max_loaded: int = 2, model_config: str | None = None) -> None:
        self.max_loaded = max_loaded
        self.model_config = model_config
        self._loaded: OrderedDict[str, Backbone] = OrderedDict()
        self._errors: dict[str, str] = {}
        self._lock = threading.RLock()

    def add(self, backbone: Backbone, source: str | None = None) -> None:
        with self._lock:
            key = source or backbone.source
            self._loaded[key] = backbone
            self._loaded.move_to_end(key)

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
                bb = load_backbone(source, config=self.model_config)
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


# ------------------------------------------------------------------------------------------ files
def _display(frames: np.ndarray, labels: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = frames.shape[1:3]
    if max(h, w) <= side:
        return frames, labels
    k = side / max(h, w)
    size = (max(2, round(h * k)), max(2, round(w * k)))
    return resize_frames(frames, size), resize_labels(labels, size)


def write_label_zip(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """A zip (stored, not compressed) of one palette PNG per frame of the label maps Y (N, H, W)."""
    zpath = Path(path)
    png_dir = zpath.with_suffix("")
    pngs = write_label_pngs(png_dir, labels)
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_STORED) as z:
        for p in pngs:
            z.write(p, arcname=f"{png_dir.name}/{p.name}")
    shutil.rmtree(png_dir, ignore_errors=True)
    return zpath


def write_result_files(
    result: SegmentationResult,
    frames: np.ndarray,
    directory: str | os.PathLike,
    stem: str = "clip",
    tag: str = "",
    display_side: int = DISPLAY_SIDE,
) -> tuple[Path, Path, Path]:
    """Overlay video and label video (H.264 mp4, long side at most ``display_side``) and a zip of
    per-frame label PNGs (input resolution) of ``result``; ``frames`` are the input frames."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem)[:40] or "clip"
    tag = f"_{tag}" if tag else ""
    # int64: palette.colorize overflows on uint8 ids under numpy 2 (np.mod(uint8, 256))
    shown, labels = _display(frames[: len(result)], result.labels.astype(np.int64), display_side)
    overlay = write_video(d / f"{stem}_overlay{tag}.mp4", overlay_frames(shown, labels), fps=result.fps)
    label_vid = write_video(d / f"{stem}_labels{tag}.mp4", colorize(labels), fps=result.fps)
    zpath = write_label_zip(d / f"{stem}_label_pngs{tag}.zip", result.labels)
    return overlay, label_vid, zpath


# ------------------------------------------------------------------------------------------ pictures
def feature_pca(result: SegmentationResult) -> np.ndarray | None:
    """PCA colours (N, h, w, 3) of the stage-1 features F~ of all frames (one joint fit), when cached."""
    if result.features is None:
        return None
    return pca_view(result.features.stage1(result.config.aggregate))


def nearest_kept(result: SegmentationResult, frame: float | None) -> int | None:
    """The kept frame (one with details) nearest to ``frame``."""
    if not result.details:
        return None
    f = int(round(frame or 0))
    return min(sorted(result.details), key=lambda i: (abs(i - f), i))


def gallery_items(
    result: SegmentationResult, frame: float | None, pca: np.ndarray | None = None
) -> list[tuple[np.ndarray, str]]:
    """(image, caption) pairs of the intermediates of the kept frame nearest to ``frame``."""
    i = nearest_kept(result, frame)
    if i is None:
        return []
    return frame_panels(result.details[i], pca[i] if pca is not None else None)


def row_pixel(row: float | None, height: int) -> int:
    """The input row at ``row`` percent of the height (None: the middle)."""
    pct = 50.0 if row is None else float(np.clip(float(row), 0.0, 100.0))
    return int(round(pct / 100.0 * (height - 1)))


def xt_images(
    result: SegmentationResult, row: float | None, pca: np.ndarray | None = None
) -> tuple[np.ndarray | None, np.ndarray]:
    """x-t slices (time down, x across) of the PCA features and of the labels at ``row`` percent of the
    height (the paper's Figures 2 and 15); each frame is repeated to a visible height."""
    n, h0, w0 = result.labels.shape
    y = row_pixel(row, h0)
    width = min(w0, 512)
    rep = max(1, min(32, 256 // max(1, n)))
    lab_img = upscale(colorize(xt_slice(result.labels, y).astype(np.int64)), (n * rep, width))
    feat_img = None
    if pca is not None:
        gy = min(pca.shape[1] - 1, y * pca.shape[1] // h0)
        feats = (np.clip(xt_slice(pca, gy), 0, 1) * 255).round().astype(np.uint8)  # (T, w, 3)
        feat_img = upscale(feats, (n * rep, width))
    return feat_img, lab_img


# ------------------------------------------------------------------------------------------ report
WORK_NAMES = {
    "unet_samples": "UNet samples",
    "unet_calls": "UNet calls",
    "unet_partial_samples": "UNet samples stopped after block 8 (features only)",
    "vae_encodes": "VAE encodes",
    "vae_decodes": "VAE decodes",
}


def _fmt_s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


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


__all__ = [
    "Limits",
    "ModelRegistry",
    "check_clip",
    "clip_signature",
    "config_from_ui",
    "describe_clip",
    "estimate_seconds",
    "feature_pca",
    "gallery_items",
    "kept_frames",
    "load_clip",
    "model_config_default",
    "nearest_kept",
    "row_pixel",
    "unet_samples",
    "stats_markdown",
    "what_ran",
    "write_label_zip",
    "write_result_files",
    "xt_images",
]
