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

import collections
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
    "LabelPNGWriter",
    "VideoError",
    "VideoStream",
    "VideoWarning",
    "VideoWriter",
    "open_video",
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
    msg = re.sub(r"^(\[[^\]]*\]\s*)+", "", msg)
    return msg[:200]


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # rotation notes are expected, not news
        return "different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_Quiet())


class VideoWarning(UserWarning):
    """A clip was read only in part: decoding stopped early (truncated or damaged file)."""


_HOLD = 8
"""Decoded frames held back while reading a video file, so that frames ffmpeg outputs around a point
where the data ends (B-frames whose references are lost, gaps filled by repeats) are never handed out."""
_CHECK_TIMEOUT = 300.0


def _good_prefix(path: Path, fps: float) -> tuple[int | None, str]:
    """Second decode of a damaged file: (frames decoded before the first error or gap, ffmpeg's message).

    Runs ``ffmpeg -i path -vf showinfo -f null -`` (frames in presentation order, no repeats) and returns
    the number of leading frames whose timestamps follow each other without a gap; ``None`` if the check
    itself failed (timeout)."""
    import subprocess

    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0"]
    cmd += ["-vf", "showinfo", "-fps_mode", "passthrough", "-f", "null", "-"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=_CHECK_TIMEOUT)
    except (subprocess.TimeoutExpired, OSError):
        return None, "the check decode did not finish"
    times = [float(t) for t in re.findall(r"\bn:\s*\d+\s+pts:\s*-?\d+\s+pts_time:(-?[\d.]+)", r.stderr)]
    errors = [ln for ln in r.stderr.splitlines() if re.search(r"partial file|invalid|error", ln, re.I)]
    if not errors:
        return len(times), ""
    step = 1.0 / fps if fps > 0 else None
    good = len(times)
    if step:
        for k in range(1, len(times)):
            if times[k] - times[k - 1] > 1.5 * step:
                good = k
                break
    return good, _ffmpeg_message(RuntimeError("\n".join(errors)))


@contextlib.contextmanager
def _ffmpeg_reader(path: Path, name: str) -> Iterator[tuple[dict, Iterator[np.ndarray]]]:
    """(metadata, lazy frames) of a video file, decoded by ffmpeg (imageio-ffmpeg) as rgb24.

    The frames stop where decoding stops: for a truncated/damaged file, the frames before the first
    lost frame are yielded and then a :class:`VideoWarning` names the frame where decoding stopped."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = dict(next(gen))
    except Exception as e:  # ffmpeg could not open it: OSError/RuntimeError with its stderr
        gen.close()
        raise _NotAVideo(
            f"{name}: not a readable video (ffmpeg: {_ffmpeg_message(e)}). {_WHAT_TO_UPLOAD}"
        ) from e
    w, h = (int(x) for x in meta.get("size", (0, 0)))
    fps = float(meta.get("fps") or 0) or DEFAULT_FPS
    duration = meta.get("duration")
    expected = int(round(duration * fps)) if duration and math.isfinite(duration) else None

    def frames() -> Iterator[np.ndarray]:
        held: collections.deque[np.ndarray] = collections.deque()
        out = 0
        failure: str | None = None
        try:
            while True:
                try:
                    bb = next(gen)
                except StopIteration:
                    break
                except RuntimeError as e:  # a partial frame at the end of the data
                    failure = _ffmpeg_message(e)
                    break
                held.append(np.frombuffer(bb, np.uint8).reshape(h, w, 3))
                if len(held) > _HOLD:
                    out += 1
                    yield held.popleft()
        finally:
            gen.close()
        n_read = out + len(held)
        if failure is None and (expected is None or n_read >= expected - 1):
            yield from held
            return
        good, msg = _good_prefix(path, fps)  # ended early: which decoded frames can be trusted?
        if failure is None and not msg:
            yield from held  # fewer frames than the container says, but nothing damaged
            return
        good = n_read if good is None else min(good, n_read)
        while held and out < good:
            out += 1
            yield held.popleft()
        if out == 0:
            raise VideoError(
                f"{name}: no frame could be decoded (ffmpeg: {failure or msg}). "
                "The file may be truncated or damaged; re-encode it as mp4 (H.264)."
            )
        total = f" of about {expected}" if expected else ""
        warnings.warn(
            f"{name}: decoding stopped at frame {out}{total} (ffmpeg: {failure or msg}); "
            f"the file is truncated or damaged, keeping frames 0..{out - 1}.",
            VideoWarning,
            stacklevel=2,
        )

    it = frames()
    try:
        yield meta, it
    finally:
        it.close()


def _gif_fps(durations: list[float]) -> float:
    d = [x for x in durations if x and x > 10]  # browsers treat <= 10 ms as 100 ms; missing -> default
    return 1000.0 / float(np.median(d)) if d else DEFAULT_FPS


def _select(
    items: Iterable[Any],
    load: Callable[[Any], np.ndarray],
    label: Callable[[int, Any], str],
    name: str,
    *,
    stride: int,
    max_frames: int | None,
    too_long: str,
    total: int | None = None,
    state: dict[str, Any] | None = None,
) -> Iterator[np.ndarray]:
    """Every ``stride``-th item, loaded and size-checked, lazily; stops after ``max_frames`` (reading one
    more to detect a longer clip: warning + ``state["truncated"] = True``, or VideoError)."""
    state = state if state is not None else {}
    state["truncated"] = False
    size: tuple[int, int] | None = None
    step = f" (with stride={stride})" if stride > 1 else ""
    too_long_msg = (
        f"{name}: the clip has more than the limit of {max_frames} frames{step}. Trim the clip, "
        "raise max_frames, or keep every k-th frame with stride=k."
    )
    if too_long == "error" and max_frames is not None and total is not None:
        if -(-total // stride) > max_frames:  # known up front: refuse before decoding anything
            raise VideoError(too_long_msg)
    n = 0
    for i, item in enumerate(items):
        if i % stride:
            continue
        if max_frames is not None and n == max_frames:
            state["truncated"] = True
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
        n += 1
        yield frame
    if state["truncated"]:
        kept = f" (the source has {total})" if total is not None else ""
        if too_long == "error":
            raise VideoError(too_long_msg)
        warnings.warn(
            f"{name}: the clip has more than {max_frames} frames{step}; keeping the first {max_frames}{kept}.",
            stacklevel=3,
        )


def _collect(
    items: Iterable[Any],
    load: Callable[[Any], np.ndarray],
    label: Callable[[int, Any], str],
    name: str,
    **kw: Any,
) -> tuple[list[np.ndarray], bool]:
    """:func:`_select` collected: (frames, truncated)."""
    state: dict[str, Any] = {}
    out = list(_select(items, load, label, name, state=state, **kw))
    return out, state["truncated"]


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


class VideoStream:
    """A clip read lazily, frame by frame or batch by batch (see :func:`open_video`).

    Known up front (before any frame is decoded): ``fps`` (of the kept frames: source rate / stride),
    ``size`` ``(H, W)`` of the frames, ``n_frames`` (frames this stream will yield: exact for folders,
    arrays and images, estimated from the container's duration x fps for video files, ``None`` when the
    container does not say; ``n_frames_exact`` tells which), ``source``, ``name`` and ``original_size``.
    After an iteration: ``truncated`` (frames beyond ``max_frames`` were dropped) and ``n_read``.

    Each iteration decodes the source again from its start (a video file is not kept open between
    iterations); memory is one frame (video files: plus ``_HOLD`` frames held back) or one batch.
    """

    def __init__(
        self,
        source: str | os.PathLike | np.ndarray | Sequence[Any] | Clip,
        *,
        max_frames: int | None = None,
        stride: int = 1,
        too_long: Literal["truncate", "error"] = "truncate",
        min_frames: int = 1,
    ) -> None:
        _check_args(max_frames, stride, too_long, min_frames)
        self.max_frames, self.stride, self.too_long, self.min_frames = (
            max_frames,
            stride,
            too_long,
            min_frames,
        )
        self.truncated = False
        self.n_read = 0
        self._eager: list[np.ndarray] | None = None  # GIFs and other image files
        self._path: Path | None = None
        self._items: Sequence[Any] | None = None
        self._load: Callable[[Any], np.ndarray] = lambda f: f
        self._label: Callable[[int, Any], str] = lambda i, _: f"frame {i}"
        self._total: int | None = None
        self.n_frames_exact = True
        self._source_truncated = False
        orig: tuple[int, int] | None = None
        fps = DEFAULT_FPS
        if isinstance(source, Clip):
            name = Path(source.source).name or source.source
            self.source = source.source
            self._items, self._total = source.frames, len(source)
            fps, orig, self._source_truncated = source.fps, source.original_size, source.truncated
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source).expanduser()
            name = path.name or str(path)
            self.source = str(path)
            if not path.exists():
                raise VideoError(
                    f"{name}: no such file or folder ({path}). Check the path. {_WHAT_TO_UPLOAD}"
                )
            if path.is_dir():
                files = _list_frames(path)
                if not files:
                    raise VideoError(
                        f"{name}: the folder contains no frames (no {'/'.join(s[1:] for s in FRAME_SUFFIXES)} "
                        f"files). {_WHAT_TO_UPLOAD}"
                    )
                self._items, self._total = files, len(files)
                self._load = lambda p: _load_frame(p, f"{name}/{p.name}")
                self._label = lambda i, p: p.name
            else:
                if path.stat().st_size == 0:
                    raise VideoError(f"{name}: the file is empty (0 bytes). {_WHAT_TO_UPLOAD}")
                suffix = path.suffix.lower()
                self.name = name
                if suffix in IMAGE_SUFFIXES:
                    self._eager, fps, self.truncated = _read_image_file(path, name, self._collect)
                else:
                    try:
                        with _ffmpeg_reader(path, name) as (meta, _):
                            pass
                    except _NotAVideo:
                        if suffix in VIDEO_SUFFIXES:
                            raise
                        try:  # unknown suffix: maybe an image after all
                            self._eager, fps, self.truncated = _read_image_file(path, name, self._collect)
                        except VideoError as e:
                            raise VideoError(
                                f"{name}: neither a readable video nor an image. {_WHAT_TO_UPLOAD}"
                            ) from e
                    else:
                        self._path = path
                        fps = float(meta.get("fps") or 0) or DEFAULT_FPS
                        w, h = (int(x) for x in meta.get("size", (0, 0)))
                        _check_min_side(h, w, name)
                        orig = (h, w)
                        d = meta.get("duration")
                        self._total = int(round(d * fps)) if d and math.isfinite(d) else None
                        self.n_frames_exact = False
        else:
            name = "<array>"
            self.source = name
            if isinstance(source, Image.Image):
                source = [source]
            if isinstance(source, np.ndarray) or (
                hasattr(source, "__array__") and not isinstance(source, Sequence)
            ):
                arr = np.asarray(source)
                if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
                    arr = arr[None]  # one frame
                if arr.ndim not in (3, 4):
                    raise VideoError(
                        f"{name}: frames must be (N, H, W, 3) or (N, H, W); got shape {arr.shape}."
                    )
                self._items = _to_uint8(arr, name)  # one scaling rule for the whole clip
            elif isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
                self._items = source
            else:
                raise VideoError(
                    f"unsupported clip source of type {type(source).__name__}; pass a path, a folder, "
                    "an (N, H, W, 3) uint8 array or a list of frames."
                )
            self._total = len(self._items)
            self._load = lambda f: _to_rgb(f, name)
        self.name = name
        self.fps = float(fps) / stride
        if self._eager is not None:
            self._check_count(len(self._eager))
            self.n_frames: int | None = len(self._eager)
            self.size = (int(self._eager[0].shape[0]), int(self._eager[0].shape[1]))
        else:
            if too_long == "error" and max_frames is not None and self._total is not None:
                if self.n_frames_exact and -(-self._total // stride) > max_frames:
                    list(self._select())  # raises the refusal before decoding anything
            n = None if self._total is None else -(-self._total // stride)
            self.n_frames = n if n is None or max_frames is None else min(n, max_frames)
            if orig is None:  # first frame only: folders load one file, arrays are at hand
                first = self._load(self._items[0]) if self._items is not None and len(self._items) else None
                if first is None:
                    self.size = (0, 0)
                else:
                    _check_min_side(int(first.shape[0]), int(first.shape[1]), name)
                    self.size = (int(first.shape[0]), int(first.shape[1]))
            else:
                self.size = (int(orig[0]), int(orig[1])) if self._path is not None else self._first_size()
        self.original_size = orig if orig is not None else self.size
        self.truncated = self.truncated or self._source_truncated

    # ------------------------------------------------------------------ internals
    def _first_size(self) -> tuple[int, int]:
        f = self._items[0] if self._items is not None and len(self._items) else None
        return (0, 0) if f is None else (int(f.shape[0]), int(f.shape[1]))

    def _collect(self, items, load, label, total=None) -> tuple[list[np.ndarray], bool]:
        return _collect(
            items,
            load,
            label,
            self.name,
            stride=self.stride,
            max_frames=self.max_frames,
            too_long=self.too_long,
            total=total,
        )

    def _select(self, items: Iterable[Any] | None = None, state: dict | None = None) -> Iterator[np.ndarray]:
        return _select(
            self._items if items is None else items,
            self._load,
            self._label,
            self.name,
            stride=self.stride,
            max_frames=self.max_frames,
            too_long=self.too_long,
            total=self._total if self.n_frames_exact else None,
            state=state,
        )

    def _check_count(self, n: int) -> None:
        if n < self.min_frames:
            what = "no frames" if not n else f"only {n} frame(s)"
            raise VideoError(
                f"{self.name}: the clip has {what}; at least {self.min_frames} needed"
                + (f" (with stride={self.stride})" if self.stride > 1 else "")
                + f". {_WHAT_TO_UPLOAD}"
            )

    # ------------------------------------------------------------------ reading
    def frames(self, start: int = 0) -> Iterator[np.ndarray]:
        """The frames ``(H, W, 3)`` uint8 one by one, from frame ``start`` on (the frames before it are
        decoded but not handed out: a resumed run continues exactly where it stopped)."""
        if self._eager is not None:
            self.n_read = len(self._eager)
            yield from self._eager[start:]
            return
        state: dict[str, Any] = {}
        n = 0
        if self._path is not None:
            with _ffmpeg_reader(self._path, self.name) as (_, raw):
                for f in self._select(raw, state):
                    n += 1
                    if n > start:
                        yield f
        else:
            for f in self._select(None, state):
                n += 1
                if n > start:
                    yield f
        self.n_read = n
        self.truncated = state.get("truncated", False) or self._source_truncated
        self._check_count(n)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.frames()

    def batches(self, batch_size: int, start: int = 0) -> Iterator[np.ndarray]:
        """The frames as ``(b, H, W, 3)`` uint8 arrays of ``batch_size`` frames (the last may be shorter),
        from frame ``start`` on."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        buf: list[np.ndarray] = []
        for f in self.frames(start):
            buf.append(f)
            if len(buf) == batch_size:
                yield np.stack(buf)
                buf = []
        if buf:
            yield np.stack(buf)

    def read(self) -> Clip:
        """All frames as a :class:`Clip` (what :func:`read_video` returns)."""
        frames = list(self.frames())
        return Clip(
            frames=np.stack(frames),
            fps=self.fps,
            source=self.source,
            truncated=self.truncated,
            original_size=self.original_size,
        )

    def __repr__(self) -> str:
        n = self.n_frames if self.n_frames_exact else f"~{self.n_frames}"
        return f"VideoStream({self.name!r}, n_frames={n}, fps={self.fps:g}, size={self.size})"


def open_video(
    source: str | os.PathLike | np.ndarray | Sequence[Any] | Clip,
    *,
    max_frames: int | None = None,
    stride: int = 1,
    too_long: Literal["truncate", "error"] = "truncate",
    min_frames: int = 1,
) -> VideoStream:
    """Open a clip for lazy reading: a :class:`VideoStream` whose ``n_frames``, ``fps`` and ``size`` are
    known before decoding, and whose ``batches(B)`` yields ``(B, H, W, 3)`` uint8 frames.

    Same sources, arguments, checks and messages as :func:`read_video`; problems found at opening (missing
    or empty file, not a video, frames under 64 px, a known length over ``max_frames`` with
    ``too_long="error"``) raise :class:`VideoError` here, the others (a frame of another size in a folder,
    too few frames, a longer clip than announced) while iterating. A truncated or damaged video file
    yields the frames that decode and then warns (:class:`VideoWarning`) naming the frame where decoding
    stopped. Animated images (GIF, WebP, APNG) are decoded when opened.
    """
    return VideoStream(source, max_frames=max_frames, stride=stride, too_long=too_long, min_frames=min_frames)


def read_video(
    source: str | os.PathLike | np.ndarray | Sequence[Any] | Clip,
    *,
    max_frames: int | None = None,
    stride: int = 1,
    too_long: Literal["truncate", "error"] = "truncate",
    min_frames: int = 1,
) -> Clip:
    """Read a clip as ``(N, H, W, 3)`` uint8 RGB frames (all of :func:`open_video`, collected).

    ``source``: a video file (mp4/webm/mov/avi/mkv ...), a GIF or other (animated) image, a folder of
    frames (png/jpg/jpeg/bmp/webp, natural name order), an array ``(N, H, W, 3|4)``, ``(N, H, W)``
    (grayscale) or ``(H, W, 3)`` (one frame), a list of frames, or a :class:`Clip`.
    Keeps every ``stride``-th frame (``fps`` is divided accordingly), then at most ``max_frames``:
    with ``too_long="truncate"`` the rest is dropped with a warning and ``truncated=True``; with
    ``"error"`` a :class:`VideoError` is raised. Videos are decoded lazily, so a limit stops decoding.
    A truncated video file gives the frames that decode plus a :class:`VideoWarning`.
    """
    return open_video(
        source, max_frames=max_frames, stride=stride, too_long=too_long, min_frames=min_frames
    ).read()


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


def _codec_params(suffix: str, crf: int, fragmented: bool) -> tuple[str, list[str]]:
    codec = _CODECS[suffix]
    params = ["-crf", str(int(crf))]
    if codec == "libx264":
        params += ["-preset", "medium"]
        if suffix in (".mp4", ".m4v", ".mov"):
            if fragmented:  # readable up to the last fragment (1 s) if the writer dies mid-clip
                params += ["-movflags", "+frag_keyframe+empty_moov+default_base_moof"]
                params += ["-frag_duration", "1000000", "-flush_packets", "1"]
            else:
                params += ["-movflags", "+faststart"]
    else:
        params += ["-b:v", "0", "-row-mt", "1"]
    return codec, params


class VideoWriter:
    """Append frames to a browser-playable video batch by batch; a context manager.

    ``with VideoWriter(path, fps) as w: w.append(batch)`` with batches ``(b, H, W, 3)`` uint8 (or one
    ``(H, W, 3)`` frame), all of the size of the first. ``.mp4``: H.264 (libx264), yuv420p, written while
    the run goes as a *fragmented* mp4 (a fragment per second), so a run that is killed leaves the frames
    encoded so far readable (x264 holds back up to ~40 frames); when the writer is closed (also on an
    exception inside the ``with`` block) ffmpeg finishes the file and it is rewritten with
    ``+faststart`` (``faststart=False`` keeps the fragmented file). ``.webm``: VP9. Odd sizes are padded
    to even by one edge-replicated row/column. ``n_written``: frames appended so far.
    """

    def __init__(
        self, path: str | os.PathLike, fps: float = 10, *, crf: int = 18, faststart: bool = True
    ) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _CODECS:
            raise VideoError(f"{self.path.name}: cannot write '{suffix}' videos; use .mp4 or .webm.")
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps, self.crf, self.faststart = float(fps), int(crf), faststart
        self.n_written = 0
        self.size: tuple[int, int] | None = None
        self._writer: Any = None
        self._closed = False

    def _open(self, h: int, w: int) -> None:
        import imageio.v2 as iio2

        self.path.parent.mkdir(parents=True, exist_ok=True)
        codec, params = _codec_params(self.path.suffix.lower(), self.crf, fragmented=True)
        self._writer = iio2.get_writer(
            self.path,
            format="FFMPEG",
            mode="I",
            fps=self.fps,
            codec=codec,
            pixelformat="yuv420p",
            macro_block_size=1,
            quality=None,
            output_params=params,
            ffmpeg_log_level="error",
        )
        self.size = (h, w)

    def append(self, frames: Any) -> None:
        """Append ``(b, H, W, 3)`` frames (or one ``(H, W, 3)``); encoded and written as they come."""
        if self._closed:
            raise VideoError(f"{self.path.name}: the writer is closed.")
        a = np.asarray(frames)
        if a.ndim == 3 and a.shape[-1] == 3:
            a = a[None]
        a = _frames_for_writing(a, self.path.name)
        h, w = int(a.shape[1]), int(a.shape[2])
        if self._writer is None:
            self._open(h, w)
        elif (h, w) != self.size:
            raise VideoError(
                f"{self.path.name}: frames of {w}x{h} px appended to a video of {self.size[1]}x{self.size[0]}; "
                "all frames of a video must have the same size."
            )
        ph, pw = h % 2, w % 2
        if ph or pw:
            a = np.pad(a, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
        for f in a:
            self._writer.append_data(f)
        self.n_written += len(a)

    def close(self) -> Path:
        """Finish the file (and rewrite it with ``+faststart`` for mp4); returns the path."""
        if self._closed:
            return self.path
        self._closed = True
        if self._writer is None:
            raise VideoError(f"{self.path.name}: nothing to write (no frames appended).")
        self._writer.close()
        if self.faststart and self.path.suffix.lower() in (".mp4", ".m4v", ".mov"):
            _remux_faststart(self.path)
        return self.path

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._writer is not None:
            self.close()
        self._closed = True


def _remux_faststart(path: Path) -> None:
    """Rewrite a (fragmented) mp4 as a plain one with the index first (stream copy, no re-encoding)."""
    import subprocess

    import imageio_ffmpeg

    tmp = _tmp_path(path)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(path)]
    cmd += ["-map", "0", "-c", "copy", "-movflags", "+faststart", str(tmp)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if r.returncode == 0 and tmp.is_file():
            os.replace(tmp, path)  # on failure the fragmented file stays, readable
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_video(path: str | os.PathLike, frames: Any, fps: float = 10, *, crf: int = 18) -> Path:
    """Write frames ``(N, H, W, 3)`` uint8 as a browser-playable video; returns the path.

    ``.mp4`` (also .m4v/.mov/.mkv): H.264 (libx264), yuv420p, ``-movflags +faststart``; ``.webm``: VP9;
    ``.gif``: :func:`write_gif`. Odd sizes are padded by one edge-replicated row/column to even (yuv420p
    needs even sides). ``crf``: H.264 quality, 0 (lossless) .. 51 (worst); 18 looks lossless.
    Written to a temporary file first, so ``path`` never holds a partial video (for batch-by-batch
    writing, see :class:`VideoWriter`).
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
    codec, params = _codec_params(suffix, crf, fragmented=False)
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


def _check_label_ids(a: np.ndarray) -> None:
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        if not np.array_equal(a, np.round(a)):
            raise VideoError(f"label maps must hold integer ids; got non-integer values of type {a.dtype}.")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise VideoError(
            f"label ids must be in 0..255 to fit a palette PNG; got ids {int(a.min())}..{int(a.max())}. "
            "Map ignore/negative ids to a valid id first."
        )


def _save_label_png(path: Path, lab: np.ndarray, pal: list[int]) -> None:
    im = Image.fromarray(lab.astype(np.uint8), mode="L").convert("P")
    im.putpalette(pal)
    tmp = _tmp_path(path)
    try:  # a killed run never leaves a half-written PNG under the final name
        im.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_label_pngs(
    directory: str | os.PathLike, labels: Any, names: Sequence[str] | None = None, *, start: int = 0
) -> list[Path]:
    """One palette PNG (mode "P", colours ``palette.PALETTE``) per label map; pixel values are the ids.

    ``labels``: ``(N, h, w)`` (or one ``(h, w)``) integer ids in 0..255. ``names``: file names per frame
    (``.png`` appended if missing); default ``{start:05d}.png, {start+1:05d}.png, ...`` (``start``: index
    of the first map, for a clip written batch by batch). Returns the written paths.
    """
    a = np.asarray(labels)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise VideoError(f"label maps must be (N, h, w) or (h, w); got shape {a.shape}.")
    _check_label_ids(a)
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if names is None:
        names = [f"{start + i:05d}.png" for i in range(len(a))]
    if len(names) != len(a):
        raise VideoError(f"got {len(names)} names for {len(a)} label maps.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pal = _palette_bytes()
    out = []
    for lab, nm in zip(a, names):
        p = directory / (nm if str(nm).lower().endswith(".png") else f"{nm}.png")
        _save_label_png(p, lab, pal)
        out.append(p)
    return out


class LabelPNGWriter:
    """Label PNGs ``00000.png, 00001.png, ...`` written batch by batch: ``append(labels)`` writes maps
    ``(b, h, w)`` as frames ``n_written .. n_written + b - 1``. ``start``: index of the first frame (a
    resumed run passes the number of frames done, so no frame is written twice). Each file appears
    complete or not at all (written under a temporary name, then renamed)."""

    def __init__(self, directory: str | os.PathLike, *, start: int = 0) -> None:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.directory = Path(directory)
        self.start = self.n_written = int(start)

    def append(self, labels: Any) -> list[Path]:
        """Write ``(b, h, w)`` (or one ``(h, w)``) label maps; returns their paths."""
        paths = write_label_pngs(self.directory, labels, start=self.n_written)
        self.n_written += len(paths)
        return paths

    @staticmethod
    def frames_done(directory: str | os.PathLike) -> int:
        """How many leading frames ``00000.png, 00001.png, ...`` exist in ``directory`` (where a resumed
        run starts)."""
        d = Path(directory)
        n = 0
        while (d / f"{n:05d}.png").is_file():
            n += 1
        return n

    def __enter__(self) -> LabelPNGWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


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
