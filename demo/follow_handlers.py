"""Follow objects (issue 22): the demo's handlers for object prompts on frame 1, without Gradio.

After a segmentation, frame 1 is shown as an image. A click on it (``gr.SelectData.index`` = (x, y) in
the frame's pixels) with an object id and a sign (positive / negative) adds one
:class:`~vidseg_nb.prompts.Click`; an uploaded or painted first-frame mask sets the objects by
:func:`~vidseg_nb.prompts.objects_from_mask` (clicks then correct it). Every prompt change gives, at once:
the object masks of every frame (:func:`~vidseg_nb.prompts.object_masks`), an object overlay video (mp4),
frame 1 with the objects in their overlay colours and the clicks marked (the image that takes the clicks),
a zip of the DAVIS palette PNGs and the overlay, and a status line with the UNet samples the handler
spent, read from the backbone's counters before and after (always 0: the handlers only read the
:class:`~vidseg_nb.pipeline.SegmentationResult` the session holds; they never call the device step, so
on ZeroGPU they need no GPU).

Prompts live in a small :class:`FollowState` (a ``gr.State`` of its own): the clicks, in pixels, and the
mask's object ids. They are re-applied to the session's current result, so after a new s or a new
Segment of the same clip they follow the new clusters; another clip starts afresh.

Each handler returns a dict with the keys of :data:`FOLLOW_OUTPUTS` (a missing key leaves its widget as
it is); errors (a click before any segmentation, a mask of the wrong size, an empty mask) raise
:class:`~vidseg_nb.prompts.PromptError` / :class:`demo.handlers.NoResult`, which ``demo/follow.py``
turns into one toast.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from demo import handlers as H
from vidseg_nb.app_support import DISPLAY_SIDE
from vidseg_nb.palette import colorize
from vidseg_nb.prompts import (
    Click,
    PromptError,
    davis_png,
    object_masks,
    object_overlay,
    objects_from_clicks,
    objects_from_mask,
    read_object_mask,
)
from vidseg_nb.video import resize_frames, write_video

FOLLOW_OUTPUTS = ("follow", "frame", "overlay", "zip", "status", "editor")
"""The outputs of every handler here, in the order of ``demo/follow.py``'s widgets."""

SIGNS = ("positive", "negative")
"""The sign radio's choices: positive = this cluster is part of the object, negative = it is not."""

BRUSH_OBJECTS = 5
"""Objects 1..5 have a brush colour in the mask painter: their overlay colour (:func:`brush_colours`)."""


def brush_colours() -> np.ndarray:
    """(BRUSH_OBJECTS, 3) uint8: the colours objects 1..BRUSH_OBJECTS have in the overlay and the preview
    (:func:`vidseg_nb.prompts.object_overlay`'s palette), so a stroke is painted in the colour it shows."""
    return colorize(np.arange(1, BRUSH_OBJECTS + 1, dtype=np.int64)[None])[0]


_WRITES = itertools.count(1)
"""Numbers of the files written (unique in the process: a new file name per prompt change)."""

POSITIVE_RGB, NEGATIVE_RGB = (40, 220, 60), (235, 40, 40)


@dataclass
class FollowState:
    """A session's object prompts (small and picklable): clicks ``(frame, x, y, object_id, positive)``
    in input pixels, frame 1's object ids of an uploaded / painted mask, the clip they are for."""

    clicks: list[tuple[int, int, int, int, bool]] = field(default_factory=list)
    mask: np.ndarray | None = None  # (H0, W0) uint8 object ids (255 void) or None
    clip_sig: tuple | None = None

    def __eq__(self, other: object) -> bool:  # the mask is an array
        if not isinstance(other, FollowState):
            return NotImplemented
        same_mask = (self.mask is None and other.mask is None) or (
            self.mask is not None and other.mask is not None and np.array_equal(self.mask, other.mask)
        )
        return same_mask and (self.clicks, self.clip_sig) == (other.clicks, other.clip_sig)


def _follow(follow: Any) -> FollowState:
    return follow if isinstance(follow, FollowState) else FollowState()


# ------------------------------------------------------------------------------------------ reading
@dataclass
class _Session:
    rt: H.Runtime
    state: H.SessionState
    work: H.Work
    result: Any
    frames: np.ndarray


def _session(state: Any) -> _Session:
    """The session's result and input frames; :class:`NoResult` before any segmentation."""
    rt = H.runtime()
    st = state if isinstance(state, H.SessionState) else None
    work = rt.work(st)
    if st is None or work is None or work.result is None or work.clip is None:
        raise H.NoResult(
            "Segment a clip first (press Segment, or Preview): the objects are picked from its clusters."
        )
    r, frames = work.result, work.clip.frames
    if len(frames) < len(r.labels) or frames.shape[1:3] != r.labels.shape[1:3]:
        raise H.NoResult("The clip changed since the last segmentation: press Segment again.")
    return _Session(rt, st, work, r, frames[: len(r.labels)])


def _clip_sig(s: _Session) -> tuple | None:
    return s.state.result_sig[0] if s.state.result_sig else s.state.clip_sig


# ------------------------------------------------------------------------------------------ masks
def mask_from_editor(value: dict) -> np.ndarray:
    """Object ids (H, W) of a painted mask: a ``gr.ImageEditor`` value (``{"background", "layers",
    "composite"}``, numpy arrays) whose layers' strokes are in the :func:`brush_colours` of objects
    1..:data:`BRUSH_OBJECTS`: each painted pixel (alpha >= 128) takes the nearest of those colours, the
    rest is 0 (background). The background (frame 1) is not read."""
    layers = [np.asarray(a) for a in (value.get("layers") or []) if a is not None]
    if not layers:
        raise PromptError("the painted mask has no object: paint on frame 1 with an object's colour first")
    shapes = {a.shape[:2] for a in layers}
    if len(shapes) > 1:  # pragma: no cover - the editor's layers share the canvas size
        raise PromptError(f"the painted layers have different sizes {sorted(shapes)}")
    h, w = layers[0].shape[:2]
    ids = np.zeros((h, w), np.int64)
    pal = brush_colours().astype(np.int64)
    for a in layers:  # later layers paint over earlier ones
        if a.ndim == 2:
            a = np.stack([a] * 3 + [np.full_like(a, 255)], -1)
        rgb = a[..., :3].astype(np.int64)
        alpha = a[..., 3] if a.shape[-1] == 4 else np.full((h, w), 255)
        painted = alpha >= 128
        d = ((rgb[:, :, None, :] - pal[None, None]) ** 2).sum(-1)
        ids[painted] = d.argmin(-1)[painted] + 1
    return ids


# ------------------------------------------------------------------------------------------ outputs
def _marked(frame: np.ndarray, clicks: list[tuple[int, int, int, int, bool]]) -> np.ndarray:
    """Frame 1 with a dot per click on it: green (positive), red (negative)."""
    im = Image.fromarray(frame)
    draw = ImageDraw.Draw(im)
    r = max(3, round(max(frame.shape[:2]) / 80))
    for f, x, y, _obj, positive in clicks:
        if f != 0:
            continue
        colour = POSITIVE_RGB if positive else NEGATIVE_RGB
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=(255, 255, 255), width=1)
    return np.asarray(im)


def _display(frames: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    h, w = frames.shape[1:3]
    if max(h, w) <= side:
        return frames
    k = side / max(h, w)
    return resize_frames(frames, (max(2, round(h * k)), max(2, round(w * k))))


def _write(s: _Session, masks: np.ndarray) -> tuple[str, str]:
    """The object overlay (H.264 mp4) and a zip of the DAVIS palette PNGs + that overlay, in the
    session's folder. Names carry the current run's number (``_write`` of the handlers cleans them up
    with that run's files) and a number of their own; the files of the prompt before stay (the browser
    may still fetch them), older ones go."""
    work = s.work
    if work.directory is None or not work.directory.is_dir():  # pragma: no cover - a run made it
        base = s.rt.workdir / "sessions"
        base.mkdir(parents=True, exist_ok=True)
        work.directory = Path(tempfile.mkdtemp(prefix="s_", dir=base))
    d = work.directory
    tag = f"objects_{s.state.run:03d}_{next(_WRITES):05d}"
    keep = getattr(work, "follow_tag", None)
    for old in d.glob("*_objects_*"):
        if keep is None or keep not in old.name:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    work.follow_tag = tag  # type: ignore[attr-defined]
    stem = Path(work.clip.source).stem[:40] if work.clip is not None else "clip"
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem) or "clip"
    overlay = write_video(
        d / f"{stem}_{tag}.mp4", object_overlay(_display(s.frames), masks), fps=s.result.fps
    )
    png_dir = d / f"{stem}_{tag}"
    pngs = davis_png(masks, png_dir)
    zpath = d / f"{stem}_{tag}.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_STORED) as z:
        for p in pngs:
            z.write(p, arcname=f"{png_dir.name}/{p.name}")
        z.write(overlay, arcname=overlay.name)
    for p in pngs:
        p.unlink(missing_ok=True)
    png_dir.rmdir()
    return str(overlay), str(zpath)


def _objects(s: _Session, follow: FollowState) -> dict[int, set[int]]:
    base = objects_from_mask(s.result, follow.mask) if follow.mask is not None else None
    return objects_from_clicks(s.result, follow.clicks, objects=base)


def _counters(s: _Session) -> Any:
    mid = s.state.result_sig[1] if s.state.result_sig else s.state.model_id
    bb = s.rt.models.peek(s.rt.model_id(mid))
    return bb.counters if bb is not None else None


def _unet(counters: Any, before: dict | None) -> int:
    if counters is None or before is None:
        return 0  # no backbone is loaded: nothing could have run it
    d = counters.since(before)
    return int(d["unet_samples"] + d["unet_partial_samples"])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _render(s: _Session, follow: FollowState, t0: float, before: dict | None, what: str) -> dict:
    """Every output of a prompt change: masks -> overlay video, frame-1 preview, zip, status."""
    counters = _counters(s)
    objects = _objects(s, follow)
    frame1 = s.frames[0]
    if not objects:  # no prompt yet (or all cleared): frame 1 as it is
        unet = _unet(counters, before)
        status = (
            f"{what}Click on frame 1 to pick object 1 (positive: its cluster is part of the object, "
            f"negative: it is not), or upload / paint a first-frame mask · {unet} UNet samples."
        )
        return dict(
            follow=follow, frame=_marked(frame1, follow.clicks), overlay=None, zip=None, status=status
        )
    masks = object_masks(s.result, objects)
    overlay, zpath = _write(s, masks)
    preview = _marked(object_overlay(frame1[None], masks[:1])[0], follow.clicks)
    unet = _unet(counters, before)
    parts = [f"object {k}: {_plural(len(v), 'cluster')}" for k, v in sorted(objects.items())]
    source = " + ".join(
        (["mask"] if follow.mask is not None else [])
        + ([_plural(len(follow.clicks), "click")] if follow.clicks else [])
    )
    status = (
        f"{what}{', '.join(parts)} ({source}; {len(masks)} frames) · {unet} UNet samples · "
        f"{time.perf_counter() - t0:.2f} s"
    )
    if follow.mask is not None and any(not v for v in objects.values()):
        status += " · an object that is the majority of no cluster on frame 1 stays empty: try a larger K"
    return dict(follow=follow, frame=preview, overlay=overlay, zip=zpath, status=status)


def _start(state: Any) -> tuple[_Session, float, Any, dict | None]:
    t0 = time.perf_counter()
    s = _session(state)
    counters = _counters(s)
    return s, t0, counters, counters.snapshot() if counters is not None else None


def _for_clip(s: _Session, follow: Any) -> FollowState:
    """``follow`` if it is for the session's clip, else fresh prompts for it."""
    f = _follow(follow)
    sig = _clip_sig(s)
    return f if f.clip_sig == sig else FollowState(clip_sig=sig)


# ------------------------------------------------------------------------------------------ handlers
def refresh(state: Any, follow: Any) -> dict:
    """A new result (Segment, Preview, a new s): frame 1 in the image and the painter, and the prompts
    re-applied to the new clusters (another clip: no prompts). Without a result: everything empty."""
    try:
        s, t0, _, before = _start(state)
    except H.NoResult:
        return dict(
            follow=FollowState(), frame=None, overlay=None, zip=None, editor=None,
            status="Segment a clip first; then click on its frame 1 to follow objects.",
        )  # fmt: skip
    f = _for_clip(s, follow)
    try:
        out = _render(s, f, t0, before, "")
    except PromptError:  # the prompts do not fit the new result (e.g. a mask of another size): drop them
        out = _render(s, FollowState(clip_sig=f.clip_sig), t0, before, "")
    out["editor"] = dict(background=s.frames[0], layers=[], composite=None)
    return out


def click(state: Any, follow: Any, index: Any, object_id: Any = 1, sign: Any = "positive") -> dict:
    """A click on frame 1 at ``index`` = (x, y) (``gr.SelectData.index``) for object ``object_id``,
    ``sign`` "positive" or "negative": the click list grows by one and every output follows. No UNet,
    no device step: a look-up of the cluster under the pixel in the session's result."""
    s, t0, _, before = _start(state)
    f = _for_clip(s, follow)
    try:
        x, y = (int(round(float(v))) for v in index)
    except (TypeError, ValueError) as e:
        raise PromptError(f"a click needs (x, y) pixel coordinates, got {index!r}") from e
    obj = _object_id(object_id)
    positive = str(sign or "positive").strip().lower() != "negative"
    new = dataclasses.replace(f, clicks=[*f.clicks, (0, x, y, obj, positive)])
    objects_from_clicks(s.result, [Click(*new.clicks[-1])])  # a bad click raises before it is kept
    return _render(s, new, t0, before, "")


def _object_id(value: Any) -> int:
    try:
        obj = int(round(float(value if value is not None else 1)))
    except (TypeError, ValueError) as e:
        raise PromptError(f"the object id must be a number 1..255, got {value!r}") from e
    if not 1 <= obj <= 255:
        raise PromptError(f"the object id must be 1..255, got {obj}")
    return obj


def mask_ids(mask: Any) -> np.ndarray:
    """Frame 1's object ids from an upload (a PNG path or a Gradio file value), an array / image
    (:func:`~vidseg_nb.prompts.read_object_mask`) or a ``gr.ImageEditor`` value (:func:`mask_from_editor`)."""
    if isinstance(mask, dict) and ("layers" in mask or "background" in mask):
        return mask_from_editor(mask)
    if mask is None or (isinstance(mask, str) and not mask):
        raise PromptError("no mask: upload a first-frame mask PNG, or paint the objects on frame 1")
    if isinstance(mask, (str, os.PathLike, dict)) or hasattr(mask, "path"):
        return read_object_mask(str(H.video_path(mask)))
    return read_object_mask(mask)


def use_mask(state: Any, follow: Any, mask: Any) -> dict:
    """An uploaded first-frame mask (PNG path, array, image) or a painted one (a ``gr.ImageEditor``
    value, :func:`mask_from_editor`): the objects become :func:`~vidseg_nb.prompts.objects_from_mask`'s
    (the clicks so far are dropped; later clicks correct the mask's objects)."""
    s, t0, _, before = _start(state)
    f = _for_clip(s, follow)
    ids = mask_ids(mask)
    objects_from_mask(s.result, ids)  # wrong size / no object: PromptError, before it is kept
    new = dataclasses.replace(f, clicks=[], mask=ids.astype(np.uint8))
    return _render(s, new, t0, before, "Mask: ")


def clear(state: Any, follow: Any) -> dict:
    """Forget the clicks and the mask (Clear button)."""
    try:
        s, t0, _, before = _start(state)
    except H.NoResult:
        return dict(follow=FollowState(), frame=None, overlay=None, zip=None, status="No clicks.")
    return _render(s, FollowState(clip_sig=_clip_sig(s)), t0, before, "Cleared. ")
