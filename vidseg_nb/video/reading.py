"""Reading clips lazily: :class:`VideoStream`, :func:`open_video`, :func:`read_video`, :func:`probe_video`
(video files through ffmpeg, still and animated images and folders of frames through Pillow).
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
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from ..errors import VideoError
from .clip import (
    _WHAT_TO_UPLOAD,
    DEFAULT_FPS,
    FRAME_SUFFIXES,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    Clip,
    _check_min_side,
    _to_rgb,
    _to_uint8,
)


class _NotAVideo(VideoError):
    """ffmpeg could not open the file at all (as opposed to a problem found while reading it)."""


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
