"""Reading clips, sizing frames to multiples of 64, and writing videos, GIFs and label PNGs.

Array convention of the whole library (stated once, here):

* **frames** at the edges (reading, writing, drawing): ``np.ndarray`` of shape ``(N, H, W, 3)``, dtype
  ``uint8``, RGB. A single frame is ``(H, W, 3)``.
* **inside** the model: ``torch.Tensor`` of shape ``(N, C, H, W)``, floating point.
* **label maps**: ``np.ndarray`` of shape ``(N, h, w)``, dtype ``int64``; ids index ``palette.PALETTE``.
* sizes are always ``(H, W)`` (height first), like the array shapes.

Every problem with what a user hands in (missing or unreadable file, zero frames, frames too small,
a clip longer than the limit, frames of different sizes in a folder) raises :class:`VideoError`, whose
message names the input, the problem and what to do.

Readers: video files (mp4, webm, mov, avi, mkv, ...) are decoded by the ffmpeg binary of
``imageio-ffmpeg`` through imageio's ``FFMPEG`` plugin (streamed, so ``max_frames`` stops decoding early;
rotation metadata is applied by ffmpeg). Still images, folders of frames and (animated) GIF/WebP/APNG
files are read with Pillow. Conversions to RGB uint8: grayscale is repeated to three channels; an alpha
channel is composited over **black** (fully transparent pixels become black); 16-bit images are scaled
by 1/257; float images in [0, 1] are scaled by 255 (others are clipped to [0, 255]); palette images are
expanded to RGB.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from . import palette
from .errors import VideoError

__all__ = [
    "DEFAULT_FPS",
    "IMAGE_SUFFIXES",
    "MIN_SIDE",
    "VIDEO_SUFFIXES",
    "Clip",
    "VideoError",
    "overlay_frames",
    "prepare_frames",
    "probe_video",
    "read_label_png",
    "read_video",
    "resize_frames",
    "resize_labels",
    "target_size",
    "write_gif",
    "write_label_pngs",
    "write_video",
]

MIN_SIDE = 64
"""Smallest accepted frame side in pixels (the UNet works on multiples of 64)."""
DEFAULT_FPS = 10.0
"""Frame rate assumed for folders of frames, single images and GIFs without frame durations."""
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_WHAT_TO_UPLOAD = "Upload an mp4/webm/mov/gif/avi file or a folder of PNG/JPG frames."


class _NotAVideo(VideoError):
    """ffmpeg could not open the file at all (as opposed to a problem found while reading it)."""


@dataclass
class Clip:
    """Decoded frames and where they came from.

    ``frames`` is ``(N, H, W, 3)`` uint8 RGB; ``fps`` is the rate of *these* frames (the source rate
    divided by the stride); ``original_size`` is ``(H, W)`` of the source frames (filled from ``frames``
    when not given); ``truncated`` says frames beyond ``max_frames`` were dropped.
    """

    frames: np.ndarray
    fps: float = DEFAULT_FPS
    source: str = "<array>"
    truncated: bool = False
    original_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        f = np.asarray(self.frames)
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise ValueError(f"Clip.frames must be (N, H, W, 3) uint8, got {f.shape} {f.dtype}")
        self.frames = f
        if self.original_size is None:
            self.original_size = (int(f.shape[1]), int(f.shape[2]))

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def duration(self) -> float:
        """Length in seconds at ``fps``."""
        return len(self) / self.fps if self.fps > 0 else 0.0


# --------------------------------------------------------------------------------------------------
# conversions to (H, W, 3) uint8


def _to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return np.round(a.astype(np.float32) / 257.0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        if a.size and a.max() > 255:  # 16-bit data in a wider integer type
            return np.round(np.clip(a, 0, 65535).astype(np.float32) / 257.0).astype(np.uint8)
        return np.clip(a, 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise VideoError(f"{name}: frame values contain NaN or infinity. Pass finite pixel values.")
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        return np.round(np.clip(a, 0, 255)).astype(np.uint8)
    raise VideoError(f"{name}: unsupported pixel type {a.dtype}. Pass uint8 RGB frames (H, W, 3).")


def _to_rgb(frame: Any, name: str) -> np.ndarray:
    """One frame (array or PIL image, any common layout/depth) -> (H, W, 3) uint8 RGB."""
    if isinstance(frame, Image.Image):
        frame = _pil_array(frame)
    a = np.asarray(frame)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 2, 3, 4):
        raise VideoError(
            f"{name}: frame of shape {a.shape} looks channel-first; frames are (H, W, 3) "
            "(use .transpose(1, 2, 0) / .permute(1, 2, 0))."
        )
    a = _to_uint8(a, name)
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise VideoError(f"{name}: a frame must be (H, W), (H, W, 3) or (H, W, 4); got shape {a.shape}.")
    c = a.shape[2]
    if c == 3:
        return np.ascontiguousarray(a)
    if c == 1:
        return np.repeat(a, 3, axis=2)
    rgb = np.repeat(a[:, :, :1], 3, axis=2) if c == 2 else a[:, :, :3]
    alpha = a[:, :, -1:].astype(np.uint16)
    return ((rgb.astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)  # over black


def _pil_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    elif mode == "I":
        return np.asarray(im).astype(np.int64)
    elif mode not in ("L", "RGB", "RGBA", "F"):
        im = im.convert("RGB")
    return np.asarray(im)


def _check_min_side(h: int, w: int, name: str) -> None:
    if h < MIN_SIDE or w < MIN_SIDE:
        raise VideoError(
            f"{name}: frames are {w}x{h} px (WxH); the minimum is {MIN_SIDE} px on each side. "
            "Use a larger video."
        )


# --------------------------------------------------------------------------------------------------
# reading


def _natural_key(path: Path) -> tuple:
    parts = re.split(r"(\d+)", path.name.lower())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _list_frames(folder: Path) -> list[Path]:
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FRAME_SUFFIXES
    ]
    return sorted(files, key=_natural_key)


def _ffmpeg_message(e: BaseException) -> str:
    """The informative line of an ffmpeg/imageio error (not the version banner)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    keys = ("invalid data", "error", "could not", "not found", "no such", "unsupported", "moov", "failed")
    good = [ln for ln in lines if any(k in ln.lower() for k in keys) and not ln.startswith("configuration")]
    msg = good[-1] if good else (lines[-1] if lines else type(e).__name__)
    msg = re.sub(r"^\[[^\]]*\]\s*", "", msg)
    return msg[:200]


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # rotation notes are expected, not news
        return "different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_Quiet())


@contextlib.contextmanager
def _ffmpeg_reader(path: Path, name: str) -> Iterator[tuple[dict, Iterator[np.ndarray]]]:
    import imageio.v3 as iio

    try:
        # ffmpeg sniffs the content; the extension only gets imageio past its suffix check
        handle = iio.imopen(path, "r", plugin="FFMPEG", extension=".mp4")
    except Exception as e:  # imageio/ffmpeg raise OSError, IndexError, RuntimeError ... for bad files
        raise _NotAVideo(
            f"{name}: not a readable video (ffmpeg: {_ffmpeg_message(e)}). {_WHAT_TO_UPLOAD}"
        ) from e
    try:
        try:
            meta = dict(handle.metadata())
        except Exception as e:
            raise _NotAVideo(
                f"{name}: not a readable video (ffmpeg: {_ffmpeg_message(e)}). {_WHAT_TO_UPLOAD}"
            ) from e

        def frames() -> Iterator[np.ndarray]:
            it = handle.iter()
            i = 0
            while True:
                try:
                    f = next(it)
                except StopIteration:
                    return
                except Exception as e:
                    raise VideoError(
                        f"{name}: decoding failed at frame {i} (ffmpeg: {_ffmpeg_message(e)}). "
                        "The file may be truncated or damaged; re-encode it as mp4 (H.264)."
                    ) from e
                i += 1
                yield f

        yield meta, frames()
    finally:
        with contextlib.suppress(Exception):
            handle.close()


def _gif_fps(durations: list[float]) -> float:
    d = [x for x in durations if x and x > 10]  # browsers treat <= 10 ms as 100 ms; missing -> default
    return 1000.0 / float(np.median(d)) if d else DEFAULT_FPS


def _collect(
    items: Iterable[Any],
    load: Callable[[Any], np.ndarray],
    label: Callable[[int, Any], str],
    name: str,
    *,
    stride: int,
    max_frames: int | None,
    too_long: str,
    total: int | None = None,
) -> tuple[list[np.ndarray], bool]:
    """Keep every ``stride``-th item, load it, check sizes; stop after ``max_frames`` (+1 to detect more)."""
    out: list[np.ndarray] = []
    truncated = False
    size: tuple[int, int] | None = None
    step = f" (with stride={stride})" if stride > 1 else ""
    too_long_msg = (
        f"{name}: the clip has more than the limit of {max_frames} frames{step}. Trim the clip, "
        "raise max_frames, or keep every k-th frame with stride=k."
    )
    if too_long == "error" and max_frames is not None and total is not None:
        if -(-total // stride) > max_frames:  # known up front: refuse before decoding anything
            raise VideoError(too_long_msg)
    for i, item in enumerate(items):
        if i % stride:
            continue
        if max_frames is not None and len(out) == max_frames:
            truncated = True
            break
        frame = load(item)
        h, w = frame.shape[:2]
        if size is None:
            _check_min_side(h, w, name)
            size = (h, w)
        elif (h, w) != size:
            raise VideoError(
                f"{name}: {label(i, item)} is {w}x{h} px (WxH) but the first frame is {size[1]}x{size[0]}; "
                "all frames of a clip must have the same size. Resize or remove the odd frames."
            )
        out.append(frame)
    if truncated:
        kept = f" (the source has {total})" if total is not None else ""
        if too_long == "error":
            raise VideoError(too_long_msg)
        warnings.warn(
            f"{name}: the clip has more than {max_frames} frames{step}; keeping the first {max_frames}{kept}.",
            stacklevel=3,
        )
    return out, truncated


def _check_args(max_frames: int | None, stride: int, too_long: str, min_frames: int) -> None:
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if too_long not in ("truncate", "error"):
        raise ValueError(f"too_long must be 'truncate' or 'error', got {too_long!r}")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")


def _open_image(path: Path, name: str) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise VideoError(f"{name}: not a readable image ({e}). {_WHAT_TO_UPLOAD}") from e
    return im


def _load_frame(path: Path, name: str) -> np.ndarray:
    """One still image file -> (H, W, 3) uint8, EXIF orientation applied."""
    with _open_image(path, name) as im:
        return _to_rgb(ImageOps.exif_transpose(im), name)


def _read_image_file(
    path: Path, name: str, collect: Callable[..., tuple[list[np.ndarray], bool]]
) -> tuple[list[np.ndarray], float, bool]:
    """A still or animated image file -> (frames, fps, truncated)."""
    with _open_image(path, name) as im:
        return _read_open_image(im, name, collect)


def _read_open_image(
    im: Image.Image, name: str, collect: Callable[..., tuple[list[np.ndarray], bool]]
) -> tuple[list[np.ndarray], float, bool]:
    n = getattr(im, "n_frames", 1)
    if n <= 1:
        frame = _to_rgb(ImageOps.exif_transpose(im), name)
        frames, truncated = collect([frame], lambda f: f, lambda i, _: f"frame {i}", total=1)
        return frames, DEFAULT_FPS, truncated
    durations: list[float] = []

    def load(fr: Image.Image) -> np.ndarray:
        durations.append(float(fr.info.get("duration") or 0))
        return _to_rgb(fr, name)

    try:
        frames, truncated = collect(ImageSequence.Iterator(im), load, lambda i, _: f"frame {i}", total=n)
    except (OSError, EOFError, SyntaxError) as e:
        raise VideoError(f"{name}: the animated image is damaged ({e}). Re-save it or upload an mp4.") from e
    return frames, _gif_fps(durations), truncated


def read_video(
    source: str | os.PathLike | np.ndarray | Sequence[Any] | Clip,
    *,
    max_frames: int | None = None,
    stride: int = 1,
    too_long: Literal["truncate", "error"] = "truncate",
    min_frames: int = 1,
) -> Clip:
    """Read a clip as ``(N, H, W, 3)`` uint8 RGB frames.

    ``source``: a video file (mp4/webm/mov/avi/mkv ...), a GIF or other (animated) image, a folder of
    frames (png/jpg/jpeg/bmp/webp, natural name order), an array ``(N, H, W, 3|4)``, ``(N, H, W)``
    (grayscale) or ``(H, W, 3)`` (one frame), a list of frames, or a :class:`Clip`.
    Keeps every ``stride``-th frame (``fps`` is divided accordingly), then at most ``max_frames``:
    with ``too_long="truncate"`` the rest is dropped with a warning and ``truncated=True``; with
    ``"error"`` a :class:`VideoError` is raised. Videos are decoded lazily, so a limit stops decoding.
    """
    _check_args(max_frames, stride, too_long, min_frames)

    def collect(items, load, label, total=None):
        return _collect(
            items,
            load,
            label,
            name,
            stride=stride,
            max_frames=max_frames,
            too_long=too_long,
            total=total,
        )

    if isinstance(source, Clip):
        name = Path(source.source).name or source.source
        frames, truncated = collect(source.frames, lambda f: f, lambda i, _: f"frame {i}", total=len(source))
        fps, src, orig = source.fps, source.source, source.original_size
        truncated = truncated or source.truncated
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        name = path.name or str(path)
        src, orig = str(path), None
        if not path.exists():
            raise VideoError(f"{name}: no such file or folder ({path}). Check the path. {_WHAT_TO_UPLOAD}")
        if path.is_dir():
            files = _list_frames(path)
            if not files:
                raise VideoError(
                    f"{name}: the folder contains no frames (no {'/'.join(s[1:] for s in FRAME_SUFFIXES)} "
                    f"files). {_WHAT_TO_UPLOAD}"
                )
            frames, truncated = collect(
                files,
                lambda p: _load_frame(p, f"{name}/{p.name}"),
                lambda i, p: p.name,
                total=len(files),
            )
            fps = DEFAULT_FPS
        else:
            if path.stat().st_size == 0:
                raise VideoError(f"{name}: the file is empty (0 bytes). {_WHAT_TO_UPLOAD}")
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                frames, fps, truncated = _read_image_file(path, name, collect)
            else:
                try:
                    with _ffmpeg_reader(path, name) as (meta, it):
                        frames, truncated = collect(it, lambda f: _to_rgb(f, name), lambda i, _: f"frame {i}")
                except _NotAVideo:
                    if suffix in VIDEO_SUFFIXES:
                        raise
                    try:  # unknown suffix: maybe an image after all
                        frames, fps, truncated = _read_image_file(path, name, collect)
                    except VideoError as e:
                        raise VideoError(
                            f"{name}: neither a readable video nor an image. {_WHAT_TO_UPLOAD}"
                        ) from e
                else:
                    fps = float(meta.get("fps") or 0) or DEFAULT_FPS
    else:
        name = "<array>"
        src, orig = name, None
        fps = DEFAULT_FPS
        if isinstance(source, Image.Image):
            source = [source]
        if isinstance(source, np.ndarray) or (
            hasattr(source, "__array__") and not isinstance(source, Sequence)
        ):
            arr = np.asarray(source)
            if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
                arr = arr[None]  # one frame
            if arr.ndim not in (3, 4):
                raise VideoError(f"{name}: frames must be (N, H, W, 3) or (N, H, W); got shape {arr.shape}.")
            items: Sequence[Any] = _to_uint8(arr, name)  # one scaling rule for the whole clip
        elif isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
            items = source
        else:
            raise VideoError(
                f"unsupported clip source of type {type(source).__name__}; pass a path, a folder, "
                "an (N, H, W, 3) uint8 array or a list of frames."
            )
        frames, truncated = collect(
            items, lambda f: _to_rgb(f, name), lambda i, _: f"frame {i}", total=len(items)
        )

    if len(frames) < min_frames:
        what = "no frames" if not frames else f"only {len(frames)} frame(s)"
        raise VideoError(
            f"{name}: the clip has {what}; at least {min_frames} needed"
            + (f" (with stride={stride})" if stride > 1 else "")
            + f". {_WHAT_TO_UPLOAD}"
        )
    arr = np.stack(frames)
    if orig is None:
        orig = (int(arr.shape[1]), int(arr.shape[2]))
    return Clip(frames=arr, fps=float(fps) / stride, source=src, truncated=truncated, original_size=orig)


def probe_video(source: str | os.PathLike | np.ndarray | Clip) -> dict[str, Any]:
    """Cheap facts about a clip without decoding it all, for limit checks in a UI.

    Returns ``{"n_frames": int | None, "n_frames_exact": bool, "fps": float, "size": (H, W),
    "duration": float | None}``. For video files ``n_frames`` is estimated as ``round(duration * fps)``.
    """
    if isinstance(source, Clip):
        n = len(source)
        return dict(
            n_frames=n, n_frames_exact=True, fps=source.fps, size=source.size, duration=n / source.fps
        )
    if not isinstance(source, (str, os.PathLike)):
        c = read_video(source)
        return probe_video(c)
    path = Path(source).expanduser()
    name = path.name or str(path)
    if not path.exists():
        raise VideoError(f"{name}: no such file or folder ({path}). Check the path. {_WHAT_TO_UPLOAD}")
    if path.is_dir():
        files = _list_frames(path)
        if not files:
            raise VideoError(f"{name}: the folder contains no frames. {_WHAT_TO_UPLOAD}")
        with _open_image(files[0], f"{name}/{files[0].name}") as im:
            w, h = ImageOps.exif_transpose(im).size
        n = len(files)
        return dict(n_frames=n, n_frames_exact=True, fps=DEFAULT_FPS, size=(h, w), duration=n / DEFAULT_FPS)
    if path.stat().st_size == 0:
        raise VideoError(f"{name}: the file is empty (0 bytes). {_WHAT_TO_UPLOAD}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        with _open_image(path, name) as im:
            n = int(getattr(im, "n_frames", 1))
            durations = []
            if n > 1:
                for fr in ImageSequence.Iterator(im):
                    durations.append(float(fr.info.get("duration") or 0))
            fps = _gif_fps(durations) if n > 1 else DEFAULT_FPS
            w, h = im.size
        return dict(n_frames=n, n_frames_exact=True, fps=fps, size=(h, w), duration=n / fps)
    with _ffmpeg_reader(path, name) as (meta, _):
        fps = float(meta.get("fps") or 0) or DEFAULT_FPS
        w, h = meta.get("size", (0, 0))
        duration = meta.get("duration")
        n = int(round(duration * fps)) if duration and math.isfinite(duration) else None
    return dict(n_frames=n, n_frames_exact=False, fps=fps, size=(int(h), int(w)), duration=duration)


# --------------------------------------------------------------------------------------------------
# sizing


def target_size(height: int, width: int, max_side: int = 512) -> tuple[int, int]:
    """``(H, W)`` the model works at: aspect kept, long side <= ``max_side``, each side floored to a
    multiple of 64 (at least 64). E.g. 480x853 -> (448, 832) when ``max_side >= 853``; (256, 512) at 512.
    """
    if max_side < MIN_SIDE:
        raise ValueError(f"max_side must be at least {MIN_SIDE}, got {max_side}")
    h, w = int(height), int(width)
    _check_min_side(h, w, "clip")
    m = max(h, w)
    if m > max_side:  # integer arithmetic: no 511.999 -> 448 surprises
        h, w = h * max_side // m, w * max_side // m
    return max(MIN_SIDE, h // 64 * 64), max(MIN_SIDE, w // 64 * 64)


def _frames_array(frames: Clip | np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    if isinstance(frames, Clip):
        return frames.frames
    return np.asarray(frames)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(N, H, W, 3)`` (or one ``(H, W, 3)``) uint8 frames to ``size`` = (H, W) with Pillow's
    antialiased bicubic filter (area-like when shrinking). Returns the input itself if already that size."""
    a = np.asarray(frames)
    single = a.ndim == 3
    if single:
        a = a[None]
    if a.ndim != 4 or a.dtype != np.uint8:
        raise ValueError(f"resize_frames wants (N, H, W, 3) uint8 frames, got {a.shape} {a.dtype}")
    h, w = int(size[0]), int(size[1])
    if a.shape[1:3] == (h, w):
        return a[0] if single else a
    out = np.stack(
        [np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BICUBIC)) for f in a]
    ).astype(np.uint8)
    return out[0] if single else out


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Input index of each of ``n_out`` output pixels: ``floor((i + 0.5) * n_in / n_out)``.

    The centre of output pixel i is sampled (PIL ``NEAREST``, torch ``"nearest-exact"``), in exact integer
    arithmetic (PIL, in floating point, can land one pixel lower when the product is an integer).
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got {n_in} -> {n_out}")
    return np.minimum((2 * np.arange(n_out) + 1) * n_in // (2 * n_out), n_in - 1)


def resize_labels(labels: Any, size: tuple[int, int], *, keep_dtype: bool = False) -> Any:
    """Nearest-neighbour resize of label maps ``(..., h, w)`` to ``size`` = (H, W): the one label resize.

    Output pixel (i, j) takes input pixel ``(floor((i + 0.5) * h / H), floor((j + 0.5) * w / W))``
    (:func:`_nearest_index`). numpy in -> int64 numpy out; a torch tensor in -> long tensor out (same
    device); ``keep_dtype=True`` keeps the input dtype (masks, images moved to channels-first).
    """
    h, w = int(size[0]), int(size[1])
    if type(labels).__module__.startswith("torch"):
        import torch

        rows = torch.from_numpy(_nearest_index(labels.shape[-2], h)).to(labels.device)
        cols = torch.from_numpy(_nearest_index(labels.shape[-1], w)).to(labels.device)
        t = labels if keep_dtype else labels.long()
        return t[..., rows[:, None], cols[None, :]]
    a = np.asarray(labels)
    if a.ndim < 2:
        raise ValueError(f"resize_labels wants (..., h, w) label maps, got shape {a.shape}")
    rows = _nearest_index(a.shape[-2], h)
    cols = _nearest_index(a.shape[-1], w)
    out = a[..., rows[:, None], cols[None, :]]
    return out if keep_dtype else out.astype(np.int64)


def prepare_frames(clip_or_frames: Clip | np.ndarray, max_side: int = 512) -> np.ndarray:
    """Frames resized to :func:`target_size` (multiples of 64, long side <= ``max_side``)."""
    a = _frames_array(clip_or_frames)
    if a.ndim != 4:
        raise ValueError(f"prepare_frames wants (N, H, W, 3) frames, got shape {a.shape}")
    return resize_frames(a, target_size(a.shape[1], a.shape[2], max_side))


# --------------------------------------------------------------------------------------------------
# writing


def _frames_for_writing(frames: Any, name: str) -> np.ndarray:
    if isinstance(frames, (list, tuple)):
        fs = [_to_rgb(f, name) for f in frames]
        if len({f.shape for f in fs}) > 1:
            raise VideoError(f"{name}: frames differ in size; all frames of a video must have the same size.")
        a = np.stack(fs) if fs else np.zeros((0,))
    elif (a := _frames_array(frames)).ndim == 4 and a.shape[-1] == 3 and a.dtype == np.uint8:
        pass
    elif a.ndim in (3, 4):
        a = np.stack([_to_rgb(f, name) for f in a])
    if a.ndim != 4 or len(a) == 0:
        raise VideoError(f"{name}: nothing to write (frames of shape {a.shape}); need (N, H, W, 3), N >= 1.")
    return a


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9"}


def write_video(path: str | os.PathLike, frames: Any, fps: float = 10, *, crf: int = 18) -> Path:
    """Write frames ``(N, H, W, 3)`` uint8 as a browser-playable video; returns the path.

    ``.mp4`` (also .m4v/.mov/.mkv): H.264 (libx264), yuv420p, ``-movflags +faststart``; ``.webm``: VP9;
    ``.gif``: :func:`write_gif`. Odd sizes are padded by one edge-replicated row/column to even (yuv420p
    needs even sides). ``crf``: H.264 quality, 0 (lossless) .. 51 (worst); 18 looks lossless.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return write_gif(path, frames, fps)
    if suffix not in _CODECS:
        raise VideoError(f"{path.name}: cannot write '{suffix}' videos; use .mp4, .webm or .gif.")
    a = _frames_for_writing(frames, path.name)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    ph, pw = a.shape[1] % 2, a.shape[2] % 2
    if ph or pw:
        a = np.pad(a, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = _CODECS[suffix]
    params = ["-crf", str(int(crf))]
    if codec == "libx264":
        params += ["-preset", "medium"]
        if suffix in (".mp4", ".m4v", ".mov"):
            params += ["-movflags", "+faststart"]
    else:
        params += ["-b:v", "0", "-row-mt", "1"]
    import imageio.v2 as iio2

    tmp = _tmp_path(path)
    try:
        writer = iio2.get_writer(
            tmp,
            format="FFMPEG",
            mode="I",
            fps=float(fps),
            codec=codec,
            pixelformat="yuv420p",
            macro_block_size=1,
            quality=None,
            output_params=params,
            ffmpeg_log_level="error",
        )
        try:
            for f in a:
                writer.append_data(f)
        finally:
            writer.close()
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def write_gif(path: str | os.PathLike, frames: Any, fps: float = 10, *, loop: int = 0) -> Path:
    """Write frames as an animated GIF (Pillow, adaptive palette per frame); returns the path.

    GIF stores delays in 1/100 s, so fps is rounded accordingly (10, 20, 25, 50 are exact). Pillow merges
    identical consecutive frames into one longer frame (playback is the same, the frame count is not).
    """
    path = Path(path)
    a = _frames_for_writing(frames, path.name)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    duration = max(20, int(round(100.0 / fps)) * 10)
    ims = [Image.fromarray(f) for f in a]
    tmp = _tmp_path(path)
    try:
        ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:], duration=duration, loop=loop)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def _palette_bytes() -> list[int]:
    return palette.PALETTE.astype(np.uint8).reshape(-1).tolist()


def write_label_pngs(
    directory: str | os.PathLike, labels: Any, names: Sequence[str] | None = None
) -> list[Path]:
    """One palette PNG (mode "P", colours ``palette.PALETTE``) per label map; pixel values are the ids.

    ``labels``: ``(N, h, w)`` (or one ``(h, w)``) integer ids in 0..255. ``names``: file names per frame
    (``.png`` appended if missing); default ``00000.png, 00001.png, ...``. Returns the written paths.
    """
    a = np.asarray(labels)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise VideoError(f"label maps must be (N, h, w) or (h, w); got shape {a.shape}.")
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        if not np.array_equal(a, np.round(a)):
            raise VideoError(f"label maps must hold integer ids; got non-integer values of type {a.dtype}.")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise VideoError(
            f"label ids must be in 0..255 to fit a palette PNG; got ids {int(a.min())}..{int(a.max())}. "
            "Map ignore/negative ids to a valid id first."
        )
    if names is None:
        names = [f"{i:05d}.png" for i in range(len(a))]
    if len(names) != len(a):
        raise VideoError(f"got {len(names)} names for {len(a)} label maps.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pal = _palette_bytes()
    out = []
    for lab, nm in zip(a, names):
        p = directory / (nm if str(nm).lower().endswith(".png") else f"{nm}.png")
        im = Image.fromarray(lab.astype(np.uint8), mode="L").convert("P")
        im.putpalette(pal)
        im.save(p, format="PNG")
        out.append(p)
    return out


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """The raw ids ``(h, w)`` int64 of a label PNG (palette indices of mode "P", or gray values)."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path.name}: no such label file ({path}).")
    with _open_image(path, path.name) as im:
        mode = im.mode
        if mode in ("P", "L", "1") or mode.startswith("I"):
            return np.asarray(im).astype(np.int64)
    raise VideoError(
        f"{path.name}: a {mode} picture, not a label PNG of ids (palette or grayscale). "
        "Colour-coded label images need a colour -> id table (see datasets.py)."
    )


def overlay_frames(frames: Any, labels: Any, alpha: float = 0.5) -> np.ndarray:
    """Palette colours of ``labels`` blended over ``frames`` (``(N, H, W, 3)`` uint8 or one frame).

    Labels of another size are first resized (nearest) to the frames.
    """
    f = _frames_array(frames)
    lab = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    if lab.ndim != f.ndim - 1:
        raise ValueError(f"overlay_frames: labels {lab.shape} do not match frames {f.shape}")
    if lab.shape[-2:] != f.shape[-3:-1]:
        lab = resize_labels(lab, f.shape[-3:-1])
    return palette.overlay(f, lab, alpha)
