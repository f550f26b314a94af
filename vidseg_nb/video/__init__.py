"""Reading clips, sizing frames to multiples of 64, and writing videos, GIFs and label PNGs.

One module per concern, their public names re-exported here (``from vidseg_nb.video import X``):

* :mod:`.clip`: the constants, :class:`Clip` and the conversions of any frame to ``(H, W, 3)`` uint8 RGB;
* :mod:`.reading`: lazy reading and streams (:class:`VideoStream`, :func:`open_video`, :func:`read_video`,
  :func:`probe_video`);
* :mod:`.sizing`: the model's frame size and resizing (:func:`target_size`, :func:`resize_frames`,
  :func:`prepare_frames`, the one label resize :func:`resize_labels`);
* :mod:`.writing`: videos and GIFs (:class:`VideoWriter`, :func:`write_video`, :func:`write_gif`);
* :mod:`.labels`: label pictures (:func:`write_label_pngs`, :class:`LabelPNGWriter`,
  :func:`read_label_png`, :func:`overlay_frames`).

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

from ..errors import VideoError
from .clip import DEFAULT_FPS, IMAGE_SUFFIXES, MIN_SIDE, VIDEO_SUFFIXES, Clip
from .labels import LabelPNGWriter, overlay_frames, read_label_png, write_label_pngs
from .reading import VideoStream, VideoWarning, open_video, probe_video, read_video
from .sizing import prepare_frames, resize_frames, resize_labels, target_size
from .writing import VideoWriter, write_gif, write_video

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
