"""Follow objects (issue 22): turn a segmentation's clusters into object masks from a first-frame mask or
from clicks. No UNet work: pure look-ups on a finished :class:`~vidseg_nb.pipeline.SegmentationResult`
(or on the first :class:`~vidseg_nb.pipeline.StreamBatch` of a streamed run).

An *object prompt* is a plain ``dict[int, set[int]]``: object id (1..255; 0 is background) -> the set of
cluster ids (label ids of Y and M^j) that form that object. A cluster belongs to at most one object.

- :func:`objects_from_mask`: frame 1's object mask (0 = background, 1..n = objects, 255 = void) ->
  clusters, by the first-frame majority assignment of SPEC 8 that ``vidseg evaluate`` uses
  (:func:`vidseg_nb.metrics.assign_labels` on M^1 = ``coarse_before[0]``, the mask nearest-resized to the
  feature grid). So the masks of :func:`object_masks` are exactly what ``vidseg evaluate --dataset davis``
  scores.
- :func:`objects_from_clicks`: clicks ``(frame, x, y, object_id, positive)`` in input pixels look up the
  cluster of the *final* label map Y (``result.labels``, the colours the user sees) at that pixel: a
  positive click puts that cluster into the object (taking it from any other object), a negative one
  takes it out. Y rather than M^j: then a positive click on pixel p always makes p part of the object's
  mask in that frame, and a negative one always makes p not part of it (M^j is on the coarse grid, and
  modulation moves boundaries, so a look-up on M^j could give a cluster that is not the one under p).
  Both functions return cluster ids of the same label space, so clicks can correct a mask's prompt
  (``objects_from_clicks(result, clicks, objects=objects_from_mask(result, mask))``).
- :func:`object_masks`: (N, H0, W0) uint8 object ids for every frame, from Y.
- :func:`davis_png` / :func:`read_object_mask` / :func:`read_annotations`: DAVIS-style palette PNGs.
- :func:`j_and_f`: DAVIS J&F of the object masks against annotations (the evaluation's own
  :func:`vidseg_nb.evaluation.protocol.davis_objects`).

Mask files: palette PNGs (mode "P", DAVIS 2017) give their palette indices, 255 = void; grayscale PNGs
holding only 0 and 255 (DAVIS 2016) are binary: 255 = object 1; other grayscale PNGs hold object ids
(255 = void); RGB PNGs are read through the DAVIS palette (black/white only: binary). Arrays follow the
grayscale rule (bool arrays are binary).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from .errors import VidSegError
from .metrics import apply_label_map, assign_labels
from .video import resize_labels

__all__ = [
    "VOID",
    "Click",
    "PromptError",
    "davis_palette",
    "read_object_mask",
    "read_annotations",
    "objects_from_mask",
    "objects_from_clicks",
    "object_masks",
    "masks_from_labels",
    "davis_png",
    "object_overlay",
    "j_and_f",
]

VOID = 255
"""Mask value left out of the assignment and of scoring (DAVIS 2017's void)."""

ObjectMap = dict[int, set[int]]


class PromptError(VidSegError, ValueError):
    """A first-frame mask or a click that cannot be used; the message says what is wrong and what to do."""


class Click(NamedTuple):
    """One click: ``frame`` (0-based), ``x``, ``y`` (input pixels, column and row), ``object_id`` (1..255)
    and ``positive`` (True: this cluster is part of the object; False: it is not)."""

    frame: int
    x: int
    y: int
    object_id: int
    positive: bool = True


def davis_palette() -> np.ndarray:
    """The DAVIS 2017 (= PASCAL VOC) palette, (256, 3) uint8: id 0 black, 1 (128, 0, 0), 2 (0, 128, 0),
    3 (128, 128, 0), ... (bit-interleaved colours)."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


# --------------------------------------------------------------------------------------------------
# reading masks
# --------------------------------------------------------------------------------------------------
def _ids_from_gray(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.astype(np.int64)
    if a.dtype.kind not in "iu":
        if not np.array_equal(a, np.round(a)):
            raise PromptError(f"{name}: an object mask must hold integer ids, got {a.dtype} values")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() > 255):
        raise PromptError(
            f"{name}: object ids must be 0..255 (0 background, 255 void), got {a.min()}..{a.max()}"
        )
    vals = np.unique(a)
    if vals.size and set(vals.tolist()) <= {0, VOID} and VOID in vals:
        return (a == VOID).astype(np.int64)  # a binary 0/255 mask (DAVIS 2016): 255 = object 1
    return a


def _ids_from_rgb(rgb: np.ndarray, name: str) -> np.ndarray:
    flat = rgb.reshape(-1, 3).astype(np.int64)
    code = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    colours, inv = np.unique(code, return_inverse=True)
    if set(colours.tolist()) <= {0, 0xFFFFFF}:
        return (code == 0xFFFFFF).astype(np.int64).reshape(rgb.shape[:2])
    pal = davis_palette().astype(np.int64)
    pal_code = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    lookup = {int(c): i for i, c in enumerate(pal_code.tolist())}
    unknown = [int(c) for c in colours.tolist() if int(c) not in lookup]
    if unknown:
        shown = ", ".join(f"#{c:06x}" for c in unknown[:3])
        raise PromptError(
            f"{name}: an RGB mask with colours outside the DAVIS palette ({shown}); save the mask as a "
            "palette PNG of object ids, or a black/white PNG for one object"
        )
    ids = np.array([lookup[int(c)] for c in colours.tolist()], dtype=np.int64)
    return ids[inv.ravel()].reshape(rgb.shape[:2])


def _image_ids(im: Image.Image, name: str) -> np.ndarray:
    if im.mode == "P":
        return np.asarray(im).astype(np.int64)  # palette indices (DAVIS 2017), 255 = void
    if im.mode in ("RGB", "RGBA"):
        return _ids_from_rgb(np.asarray(im.convert("RGB")), name)
    if im.mode in ("L", "1") or im.mode.startswith("I"):
        return _ids_from_gray(np.asarray(im), name)
    raise PromptError(f"{name}: a {im.mode} picture is not an object mask (use a palette or grayscale PNG)")


def read_object_mask(mask: str | os.PathLike | np.ndarray | Image.Image) -> np.ndarray:
    """An object mask (H, W) int64: 0 background, 1..n objects, 255 void, from a PNG path, a PIL image or
    an array (rules in the module docstring). A missing or unreadable file raises :class:`PromptError`."""
    if isinstance(mask, (str, os.PathLike)):
        path = Path(mask)
        if not path.is_file():
            raise PromptError(f"object mask {path}: no such file")
        try:
            with Image.open(path) as im:
                im.load()
                return _image_ids(im, f"object mask {path}")
        except PromptError:
            raise
        except (OSError, SyntaxError, ValueError) as e:
            raise PromptError(f"object mask {path}: not a readable PNG ({e})") from e
    if isinstance(mask, Image.Image):
        return _image_ids(mask, "object mask")
    a = np.asarray(mask)
    if a.ndim == 3 and a.shape[-1] == 3 and a.dtype == np.uint8:
        return _ids_from_rgb(a, "object mask")
    if a.ndim != 2:
        raise PromptError(f"an object mask must be one (H, W) map, got shape {a.shape}")
    return _ids_from_gray(a, "object mask")


def read_annotations(folder: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """A folder of annotation PNGs (``00000.png, 00001.png, ...``, sorted by name) as (N, H, W) int64 object
    ids (255 void), each read by :func:`read_object_mask` (DAVIS 2016 0/255 -> 0/1, as the DAVIS reader)."""
    d = Path(folder)
    if not d.is_dir():
        raise PromptError(f"annotations {d}: no such folder")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() == ".png")[:max_frames]
    if not files:
        raise PromptError(f"annotations {d}: no PNG files in the folder")
    maps = [read_object_mask(p) for p in files]
    shapes = {m.shape for m in maps}
    if len(shapes) > 1:
        raise PromptError(f"annotations {d}: PNGs of different sizes {sorted(shapes)}")
    return np.stack(maps)


# --------------------------------------------------------------------------------------------------
# prompts -> clusters
# --------------------------------------------------------------------------------------------------
def _views(result: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """(Y at input size, M^j, index of the first frame) of a SegmentationResult or a StreamBatch."""
    if hasattr(result, "coarse_before"):
        return np.asarray(result.labels), np.asarray(result.coarse_before), 0
    if hasattr(result, "result") and hasattr(result.result, "before"):  # StreamBatch
        return np.asarray(result.labels), np.asarray(result.result.before), int(result.start)
    raise TypeError(f"expected a SegmentationResult or a StreamBatch, got {type(result).__name__}")


def objects_from_mask(result: Any, mask: str | os.PathLike | np.ndarray | Image.Image) -> dict[int, set[int]]:
    """Object id -> cluster ids from frame 1's object mask (H0, W0) (0 background, 1..n objects, 255 void).

    Each cluster of M^1 (``coarse_before[0]``) takes the majority object of its cells, the mask
    nearest-resized to the feature grid: :func:`vidseg_nb.metrics.assign_labels`, the first-frame
    assignment of SPEC 8 that ``vidseg evaluate`` scores with. Every object id of the mask is a key; an
    object that is the majority of no cluster (too small for the clusters) gets an empty set (its masks
    stay empty, as in the evaluation). ``result``: a SegmentationResult, or the first StreamBatch of a
    streamed run (frame 1 is in it). Raises :class:`PromptError` for a mask of another size than the
    frames or one without objects.
    """
    labels, coarse, start = _views(result)
    if start != 0:
        raise PromptError("objects_from_mask needs frame 1's coarse map: pass the first batch of the run")
    ids = read_object_mask(mask)
    h0, w0 = labels.shape[1:3]
    if ids.shape != (h0, w0):
        raise PromptError(
            f"the first-frame mask is {ids.shape[1]}x{ids.shape[0]} pixels but the frames are {w0}x{h0}: "
            "use the mask of the clip's first frame, at the clip's size"
        )
    present = sorted(int(v) for v in np.unique(ids) if v not in (0, VOID))
    if not present:
        raise PromptError("the first-frame mask has no object (all pixels are 0 = background or 255 = void)")
    mapping = assign_labels(coarse[0], ids, ignore_index=VOID)
    objects: dict[int, set[int]] = {k: set() for k in present}
    for cluster, obj in mapping.items():
        if obj in objects:
            objects[obj].add(int(cluster))
    return objects


def objects_from_clicks(
    result: Any,
    clicks: Iterable[Click | Sequence[Any]],
    objects: Mapping[int, Iterable[int]] | None = None,
) -> dict[int, set[int]]:
    """Object id -> cluster ids from clicks ``(frame, x, y, object_id, positive)`` in input pixels.

    The cluster of a click is Y (``result.labels[frame]``) at row ``y``, column ``x``. Positive: the cluster
    joins ``object_id`` and leaves any other object; negative: it leaves ``object_id`` (``object_id`` 0:
    every object). Clicks apply in order, so a later click overrides an earlier one. ``objects``: a prompt
    to start from (e.g. :func:`objects_from_mask`'s; not modified). Objects left without clusters are kept
    (empty sets). ``result``: a SegmentationResult or a StreamBatch (frames outside it raise).
    """
    labels, _, start = _views(result)
    n, h0, w0 = labels.shape[:3]
    out: dict[int, set[int]] = {int(k): {int(c) for c in v} for k, v in (objects or {}).items()}
    for i, raw in enumerate(clicks):
        try:
            c = Click(*raw)
        except TypeError as e:
            raise PromptError(
                f"click {i + 1}: expected (frame, x, y, object_id, positive), got {raw!r}"
            ) from e
        f, x, y, obj = int(c.frame), int(c.x), int(c.y), int(c.object_id)
        if not start <= f < start + n:
            raise PromptError(f"click {i + 1}: frame {f} is outside frames {start}..{start + n - 1}")
        if not (0 <= x < w0 and 0 <= y < h0):
            raise PromptError(f"click {i + 1}: pixel (x={x}, y={y}) is outside the {w0}x{h0} frame")
        if not 0 <= obj <= 255 or (c.positive and obj == 0):
            raise PromptError(f"click {i + 1}: object id must be 1..255, got {obj}")
        cluster = int(labels[f - start, y, x])
        if c.positive:
            for members in out.values():
                members.discard(cluster)
            out.setdefault(obj, set()).add(cluster)
        else:
            for k, members in out.items():
                if obj in (0, k):
                    members.discard(cluster)
    return out


# --------------------------------------------------------------------------------------------------
# clusters -> masks
# --------------------------------------------------------------------------------------------------
def masks_from_labels(labels: np.ndarray, objects: Mapping[int, Iterable[int]]) -> np.ndarray:
    """Object ids (same shape as ``labels``, uint8) of cluster maps ``labels`` (any shape, e.g. one batch
    of Y): a cluster's pixels take its object's id, every other pixel 0."""
    mapping: dict[int, int] = {}
    for k, members in objects.items():
        if not 1 <= int(k) <= 255:
            raise PromptError(f"object ids must be 1..255, got {k}")
        for c in members:
            if int(c) in mapping and mapping[int(c)] != int(k):
                raise PromptError(f"cluster {c} is in objects {mapping[int(c)]} and {k}")
            mapping[int(c)] = int(k)
    return apply_label_map(np.asarray(labels), mapping, default=0).astype(np.uint8)


def object_masks(result: Any, objects: Mapping[int, Iterable[int]]) -> np.ndarray:
    """(N, H0, W0) uint8 object ids of every frame: Y (``result.labels``) through the prompt ``objects``."""
    return masks_from_labels(_views(result)[0], objects)


def object_overlay(frames: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Frames (N, H, W, 3) uint8 with each object's pixels blended in its palette colour
    (:func:`vidseg_nb.video.overlay_frames`); background pixels (id 0) keep the frame's colours."""
    from .video import overlay_frames

    f = np.asarray(frames)
    m = np.asarray(masks)
    over = overlay_frames(f, m, alpha)
    if m.shape != f.shape[:-1]:
        m = resize_labels(m, f.shape[-3:-1])
    return np.where((m == 0)[..., None], f, over)


def davis_png(masks: np.ndarray, folder: str | os.PathLike, start: int = 0) -> list[Path]:
    """Write object masks (N, H, W) (or one (H, W)) ids 0..255 as DAVIS palette PNGs (mode "P", the DAVIS
    palette) ``{start:05d}.png, ...`` in ``folder`` (created); PIL reads them back as the same ids.
    Returns the paths."""
    from .video.labels import _check_label_ids, _save_label_png

    a = np.asarray(masks)
    a = a[None] if a.ndim == 2 else a
    if a.ndim != 3:
        raise PromptError(f"object masks must be (N, H, W) or (H, W), got shape {a.shape}")
    _check_label_ids(a)
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    pal = davis_palette().reshape(-1).tolist()
    paths = []
    for i, m in enumerate(a):
        p = d / f"{start + i:05d}.png"
        _save_label_png(p, m, pal)
        paths.append(p)
    return paths


def j_and_f(masks: np.ndarray, gt: np.ndarray | str | os.PathLike) -> dict[str, Any]:
    """DAVIS J&F of object masks (N, H, W) against annotations ``gt`` ((N', H, W) ids, 255 void, N' >= N;
    or a folder for :func:`read_annotations`), the evaluation's :func:`~vidseg_nb.evaluation.protocol.
    davis_objects`: objects 1..K with K the largest id of the annotations' frame 1, the first and last frame
    dropped when N >= 3. Returns ``J_objects``, ``F_objects`` (per object), ``J``, ``F``, ``J&F`` (means
    over objects) and ``objects`` (the ids)."""
    from .evaluation.protocol import davis_objects

    pred = np.asarray(masks)
    g = read_annotations(gt, max_frames=len(pred)) if isinstance(gt, (str, os.PathLike)) else np.asarray(gt)
    if len(g) < len(pred):
        raise PromptError(f"{len(g)} annotated frames for {len(pred)} masks")
    g = g[: len(pred)].astype(np.int64)
    if g.shape != pred.shape:
        raise PromptError(
            f"annotations are {g.shape[2]}x{g.shape[1]} pixels but the masks are {pred.shape[2]}x{pred.shape[1]}"
        )
    first = g[0][g[0] != VOID]
    k = int(first.max()) if first.size else 0
    if k < 1:
        raise PromptError("the annotations' first frame has no object")
    out = davis_objects(g, pred.astype(np.int64), k + 1, VOID)
    out["objects"] = list(range(1, k + 1))
    return out
