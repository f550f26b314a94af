"""Writing videos and GIFs: :class:`VideoWriter` (batch by batch), :func:`write_video`, :func:`write_gif`."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import VideoError
from .clip import _frames_array, _to_rgb


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
