"""Pictures of every intermediate: arrays for the demo (uint8 RGB) and matplotlib figures for notebooks.

Array helpers return (H, W, 3) uint8 images so Gradio, PIL and matplotlib can all show them; figure
helpers import matplotlib lazily and return a ``Figure``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .palette import PALETTE, colorize, overlay
from .video import resize_labels


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (or uint8) -> uint8."""
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    return np.clip(np.round(a * 255), 0, 255).astype(np.uint8)


def upscale(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (h, w) map or (h, w, C) image to (H, W), keeping its dtype.

    Sampling by :func:`vidseg_nb.video.resize_labels` (the one label resize), so an upscaled label map
    shows exactly the labels the pipeline and the metrics use; feature-grid pictures stay crisp.
    """
    a = np.asarray(img)
    if a.ndim == 3:
        return np.moveaxis(resize_labels(np.moveaxis(a, -1, 0), size, keep_dtype=True), 0, -1)
    return resize_labels(a, size, keep_dtype=True)


def heatmap(d: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """A map in [0, 1] (H, W) -> RGB uint8 with a matplotlib colormap (difference maps D_l, D~_l)."""
    from matplotlib import colormaps

    return to_uint8(colormaps[cmap](np.clip(np.asarray(d, dtype=np.float32), 0, 1))[..., :3])


def label_image(labels: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """A label map (h, w) -> palette RGB, optionally resized first (nearest, :func:`upscale`) to ``size``."""
    return colorize(upscale(labels, size) if size is not None else labels)


def tile(images: Sequence[np.ndarray], cols: int | None = None, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Images of equal size in a grid (row-major), ``pad`` pixels apart."""
    ims = [
        np.asarray(i) if np.asarray(i).ndim == 3 else np.repeat(np.asarray(i)[..., None], 3, -1)
        for i in images
    ]
    if not ims:
        raise ValueError("tile needs at least one image")
    h, w = ims[0].shape[:2]
    cols = cols or len(ims)
    rows = -(-len(ims) // cols)
    out = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, 3), fill, np.uint8)
    for k, im in enumerate(ims):
        r, c = divmod(k, cols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = to_uint8(im)
    return out


def legend_colors(ids: Sequence[int]) -> dict[int, str]:
    """Hex colour of each label id (for legends and tables)."""
    return {int(i): "#%02x%02x%02x" % tuple(PALETTE[int(i) % len(PALETTE)]) for i in ids}


# ------------------------------------------------------------------ names (issue 13)
def legend_entries(
    names: Any, ids: Sequence[int] | None = None, margin: float | None = None
) -> list[tuple[int, str, str]]:
    """``(label id, text, hex colour)`` per named cluster (``names``: ``{id: ClusterName}`` of
    ``SegmentationResult.names``), ids in order; ``ids`` restricts to the ids shown (e.g. present in the
    labels). An unnamed cluster says why, with its best word's score and lead over the second word,
    below the ``margin`` a name needs (default ``names.DEFAULT_MARGIN``):
    ``"unnamed (best: sky 1.00, lead 0.01 < 0.10)"``."""
    import math

    from .names import DEFAULT_MARGIN

    need = DEFAULT_MARGIN if margin is None else margin
    keys = sorted(int(i) for i in names if ids is None or int(i) in {int(j) for j in ids})
    cols = legend_colors(keys)
    out = []
    for i in keys:
        n = names[i]
        text = n.name
        if n.name == "unnamed" and n.best not in ("unnamed", ""):
            text = f"unnamed (best: {n.best}"
            if not (math.isnan(n.score) or math.isnan(n.margin)):
                text += f" {n.score:.2f}, lead {n.margin:.2f} < {need:.2f}"
            text += ")"
        out.append((i, text, cols[i]))
    return out


def draw_legend(
    frame: np.ndarray, entries: Sequence[tuple[int, str, str]], font_size: int | None = None
) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 with a legend in its top-left corner: a colour swatch and the name of each
    entry (:func:`legend_entries`) on a translucent dark box (Pillow's default font). Returns a copy."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).convert("RGBA")
    if not entries:
        return np.asarray(img.convert("RGB"))
    size = font_size or max(10, min(24, img.height // 24))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    pad, line = max(2, size // 4), size + max(2, size // 4)
    width = max(draw.textlength(text, font=font) for _, text, _ in entries)
    box_w = int(pad * 3 + size + width)
    box_h = int(pad * 2 + line * len(entries))
    draw.rectangle([0, 0, min(box_w, img.width - 1), min(box_h, img.height - 1)], fill=(0, 0, 0, 150))
    for k, (_, text, colour) in enumerate(entries):
        y = pad + k * line
        draw.rectangle([pad, y, pad + size, y + size], fill=colour, outline=(255, 255, 255, 255))
        draw.text((pad * 2 + size, y), text, fill=(255, 255, 255, 255), font=font)
    return np.asarray(Image.alpha_composite(img, layer).convert("RGB"))


def legend_html(entries: Sequence[tuple[int, str, str]]) -> str:
    """The legend as HTML: one colour swatch and name per entry (the demo shows it under the video)."""
    from html import escape

    items = "".join(
        f'<span style="display:inline-flex;align-items:center;margin:2px 10px 2px 0">'
        f'<span style="width:14px;height:14px;background:{c};border:1px solid #888;margin-right:4px;'
        f'display:inline-block"></span>{escape(t)} <small style="opacity:.6">&nbsp;#{i}</small></span>'
        for i, t, c in entries
    )
    return f'<div class="vidseg-legend">{items}</div>'


def word_attention_panels(
    attention: Any, words: Sequence[str], frame: np.ndarray | None = None, index: int = 0
) -> list[tuple[np.ndarray, str]]:
    """One heat map per word of frame ``index`` of A (N, h, w, V) (``SegmentationResult.word_attention``),
    each min-max scaled on its own, at the frame's size when ``frame`` is given and blended over it."""
    a = np.asarray(attention.detach().cpu() if hasattr(attention, "detach") else attention, np.float32)[index]
    out = []
    for v, word in enumerate(words):
        m = a[..., v]
        m = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else np.zeros_like(m)
        img = heatmap(m)
        if frame is not None:
            img = upscale(img, tuple(frame.shape[:2]))
            img = to_uint8((0.5 * frame.astype(np.float32) + 0.5 * img.astype(np.float32)) / 255)
        out.append((img, f"attention to '{word}'"))
    return out


def frame_panels(detail: Any, pca: np.ndarray | None = None) -> list[tuple[np.ndarray, str]]:
    """(image, caption) pairs for one :class:`~vidseg_nb.pipeline.FrameDetail`: frame, PCA of F~, M^j, M~^j,
    each D_l and D~_l, I+/I-, and Y, in the order of the method. Captions say it in words, the paper's
    symbol after (``"difference map D_3, raw"``), for a visitor who has not read the paper."""
    size = detail.frame.shape[:2]
    out: list[tuple[np.ndarray, str]] = [(detail.frame, f"frame {detail.index}")]
    if pca is not None:
        out.append((upscale(to_uint8(pca), size), "features F~, PCA over the frames"))
    out.append(
        (
            overlay(detail.frame[None], upscale(detail.coarse_before, size)[None])[0],
            "coarse map M^j (context model)",
        )
    )
    out.append(
        (
            overlay(detail.frame[None], upscale(detail.coarse_after, size)[None])[0],
            "refined map M~^j (correspondences)",
        )
    )
    if detail.diff is not None:
        for k, lab in enumerate(detail.diff.labels):
            out.append((heatmap(detail.diff.raw[k]), f"difference map D_{lab}, raw"))
            if detail.filtered is not None:
                out.append((heatmap(detail.filtered[k]), f"difference map D~_{lab}, filtered"))
            if detail.diff.plus is not None:
                out.append((detail.diff.plus[k], f"image, +lambda on label {lab} (I+)"))
                out.append((detail.diff.minus[k], f"image, -lambda on label {lab} (I-)"))
    # (Y is at the input frame size with SegConfig.resize_decoded, issue 15 row 3: shown at the frame's)
    out.append((overlay(detail.frame[None], upscale(detail.final, size)[None])[0], "final labels Y"))
    return out


# ---------------------------------------------------------------------------------------------------
# Notebook figures: matplotlib ``Figure``s built with pyplot and closed before they are returned, so a
# notebook shows each exactly once (as a cell's last value, with ``display`` or from ``interact``) and
# headless callers (tests, widget callbacks) leak no open figures.
# ---------------------------------------------------------------------------------------------------
def _grid(rows: int, cols: int, size: float, aspect: float = 1.0) -> tuple[Any, np.ndarray]:
    """A closed pyplot figure with a (rows, cols) array of axes, ticks off; ``aspect`` = height / width."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        rows, cols, figsize=(size * cols, size * rows * aspect + 0.4), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    plt.close(fig)
    return fig, axes


def _pick(n: int, frame_ids: Sequence[int] | None, most: int) -> list[int]:
    """Frame indices to show: the given ones (negative from the end), else up to ``most`` evenly spread."""
    if frame_ids is None:
        return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(n, most))})
    return [int(i) % n for i in frame_ids]


def _row_y(row: int, grid_h: int, height: int) -> float:
    """Pixel y of the centre of feature-grid row ``row`` in an image ``height`` pixels tall."""
    return (row + 0.5) * height / grid_h - 0.5


def show_images(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    cols: int | None = None,
    size: float = 2.6,
    suptitle: str | None = None,
) -> Any:
    """Images (each (H, W, 3) uint8/float in [0, 1], or (H, W) maps in [0, 1]) in a grid with titles."""
    if len(images) == 0:
        raise ValueError("show_images needs at least one image")
    cols = cols or len(images)
    rows = -(-len(images) // cols)
    h, w = np.asarray(images[0]).shape[:2]
    fig, axes = _grid(rows, cols, size, h / w)
    for k, ax in enumerate(axes.flat):
        if k >= len(images):
            ax.axis("off")
            continue
        im = np.asarray(images[k])
        ax.imshow(
            im, cmap="inferno" if im.ndim == 2 else None, vmin=0, vmax=1 if im.dtype != np.uint8 else 255
        )
        if titles is not None:
            ax.set_title(titles[k], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def show_pca_blocks(
    frames: np.ndarray,
    pcas: dict[str, np.ndarray],
    frame_ids: Sequence[int] = (0, -1),
    row: int | None = None,
    size: float = 2.6,
) -> Any:
    """The paper's Figures 2 and 15 (top): each chosen frame next to the PCA view of each block.

    ``frames`` (N, H, W, 3) uint8; ``pcas`` name -> (N, h, w, 3) in [0, 1] from
    :func:`vidseg_nb.features.pca_view` (one PCA per block, fitted jointly over the frames). ``row``:
    a feature-grid row drawn in red on the frames (the row of the x-t slices of :func:`show_xt`).
    """
    ids = _pick(len(frames), frame_ids, 2)
    h, w = frames.shape[1:3]
    fig, axes = _grid(len(ids), 1 + len(pcas), size, h / w)
    for r, i in enumerate(ids):
        axes[r, 0].imshow(frames[i])
        axes[r, 0].set_ylabel(f"frame {i}")
        for c, (name, p) in enumerate(pcas.items(), start=1):
            axes[r, c].imshow(upscale(to_uint8(p[i]), (h, w)))
            if r == 0:
                axes[r, c].set_title(f"PCA of {name}", fontsize=9)
        if row is not None:
            y = _row_y(row, next(iter(pcas.values())).shape[1], h)
            for ax in axes[r]:
                ax.axhline(y, color="red", lw=1.2)
    axes[0, 0].set_title("frame", fontsize=9)
    return fig


def show_xt(
    slices: dict[str, np.ndarray],
    frame: np.ndarray | None = None,
    row: int | None = None,
    grid_h: int | None = None,
    size: float = 2.6,
) -> Any:
    """The paper's Figures 2 and 15 (bottom): x-t slices, one per block, time running downwards.

    ``slices`` name -> (T, w, 3) in [0, 1] or uint8 (:func:`vidseg_nb.features.xt_slice` of a PCA view).
    With ``frame`` (H, W, 3), ``row`` and ``grid_h`` the first panel shows where the slice was taken.
    Vertical streaks mean features that stay put over time; jagged ones mean flicker.
    """
    panels = len(slices) + (frame is not None)
    fig, axes = _grid(1, panels, size, 0.8)
    k = 0
    if frame is not None:
        axes[0, 0].imshow(frame)
        if row is not None and grid_h:
            axes[0, 0].axhline(_row_y(row, grid_h, frame.shape[0]), color="red", lw=1.5)
        axes[0, 0].set_title("slice row (red)", fontsize=9)
        k = 1
    for ax, (name, s) in zip(axes[0, k:], slices.items()):
        s = np.asarray(s)
        ax.imshow(s, aspect="auto", interpolation="nearest")
        ax.set_title(f"x-t slice: {name}", fontsize=9)
        ax.set_xlabel("x (grid cell)")
        ax.set_ylabel("t (frame)")
        if s.shape[0] <= 12:
            ax.set_yticks(range(s.shape[0]))
    return fig


def show_label_rows(
    frames: np.ndarray,
    rows: dict[str, np.ndarray],
    frame_ids: Sequence[int] | None = None,
    alpha: float = 0.55,
    most: int = 6,
    size: float = 2.2,
) -> Any:
    """Label maps over frames: one row per entry of ``rows`` (name -> (N, h, w) or (N, H, W) ids),
    palette colours over the frames, one column per chosen frame."""
    ids = _pick(len(frames), frame_ids, most)
    h, w = frames.shape[1:3]
    fig, axes = _grid(len(rows), len(ids), size, h / w)
    for r, (name, labs) in enumerate(rows.items()):
        for c, i in enumerate(ids):
            lab = upscale(np.asarray(labs[i]), (h, w))
            axes[r, c].imshow(overlay(frames[i][None], lab[None], alpha)[0])
            if r == 0:
                axes[r, c].set_title(f"frame {i}", fontsize=9)
        axes[r, 0].set_ylabel(name, fontsize=9)
    return fig


def show_coarse_before_after(
    frames: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    frame_ids: Sequence[int] | None = None,
    size: float = 2.2,
) -> Any:
    """The paper's Figure 4: ``M^j`` (scene context model) over ``M~^j`` (after correspondence-based
    refinement), and a third row marking in white the cells the refinement changed.

    Row titles carry the number of label flips between consecutive frames
    (:func:`vidseg_nb.refine.count_label_changes`) before and after refinement.
    """
    from .refine import count_label_changes

    ids = _pick(len(frames), frame_ids, 6)
    h, w = frames.shape[1:3]
    fig, axes = _grid(3, len(ids), size, h / w)
    names = (
        f"$M^j$ (context model)\n{count_label_changes(before)} flips",
        f"$\\tilde{{M}}^j$ (refined)\n{count_label_changes(after)} flips",
        "changed by CBR",
    )
    for c, i in enumerate(ids):
        for r, lab in enumerate((before[i], after[i])):
            axes[r, c].imshow(overlay(frames[i][None], upscale(lab, (h, w))[None], 0.55)[0])
        changed = upscale((before[i] != after[i]).astype(np.float32), (h, w))
        axes[2, c].imshow(frames[i] // 3)
        axes[2, c].imshow(changed, cmap="gray", alpha=changed * 0.9, vmin=0, vmax=1)
        axes[0, c].set_title(f"frame {i}", fontsize=9)
    for r, name in enumerate(names):
        axes[r, 0].set_ylabel(name, fontsize=9)
    return fig


def show_correspondence(
    frame_j: np.ndarray,
    frame_j1: np.ndarray,
    coords: np.ndarray,
    labels: np.ndarray | None = None,
    size: float = 3.4,
) -> Any:
    """Eq. 3: the match ``T^j[p]`` of every grid cell p of frame j in frame j+1, as arrows on frame j.

    ``coords`` (h, w, 2) target (y', x') from :func:`vidseg_nb.refine.correspondence` (``as_coords=True``);
    cells matched to themselves get a dot. ``labels`` (h, w) optionally colours frame j by ``M^j``.
    """
    h, w = coords.shape[:2]
    big_h, big_w = frame_j.shape[:2]
    fig, axes = _grid(1, 2, size, big_h / big_w)
    base = (
        frame_j if labels is None else overlay(frame_j[None], upscale(labels, (big_h, big_w))[None], 0.4)[0]
    )
    axes[0, 0].imshow(base)
    axes[0, 1].imshow(frame_j1)
    ys, xs = np.mgrid[0:h, 0:w]
    sy, sx = big_h / h, big_w / w
    dy, dx = coords[..., 0] - ys, coords[..., 1] - xs
    moved = (dy != 0) | (dx != 0)
    axes[0, 0].scatter((xs[~moved] + 0.5) * sx, (ys[~moved] + 0.5) * sy, s=3, c="white")
    axes[0, 0].quiver(
        (xs[moved] + 0.5) * sx,
        (ys[moved] + 0.5) * sy,
        dx[moved] * sx,
        dy[moved] * sy,
        color="red",
        angles="xy",
        scale_units="xy",
        scale=1,
        width=0.006,
    )
    axes[0, 0].set_title(f"frame j: $T^j$ ({int(moved.sum())} of {h * w} cells move)", fontsize=9)
    axes[0, 1].set_title("frame j+1", fontsize=9)
    return fig


def show_difference_maps(
    frame: np.ndarray,
    coarse: np.ndarray,
    labels: Sequence[int],
    raw: np.ndarray,
    filtered: np.ndarray | None = None,
    final: np.ndarray | None = None,
    plus: np.ndarray | None = None,
    minus: np.ndarray | None = None,
    max_labels: int = 6,
    size: float = 2.0,
) -> Any:
    """Stage 3 of one frame, one row per label l: mask ``M_l``, ``I+``, ``I-``, ``D_l``, ``D~_l``; then ``Y``.

    ``coarse`` (h, w) is ``M~^j``; ``raw``/``filtered`` (L, H, W) in [0, 1]; ``plus``/``minus`` (L, H, W, 3)
    uint8; ``final`` (H, W) label ids. The last row shows the frame and ``Y = argmax_l D~_l``.
    """
    labels = list(labels)[:max_labels]
    big_h, big_w = frame.shape[:2]
    cols = ["mask $M_l$"]
    cols += ["$I^+_l$", "$I^-_l$"] if plus is not None else []
    cols += ["$D_l$"] + (["$\\tilde{D}_l$"] if filtered is not None else [])
    fig, axes = _grid(len(labels) + (final is not None), len(cols), size, big_h / big_w)
    for r, lab in enumerate(labels):
        mask = upscale((np.asarray(coarse) == lab).astype(np.float32), (big_h, big_w))
        panels = [overlay(frame[None], np.where(mask > 0, lab, -1)[None], 0.6)[0]]
        if plus is not None and minus is not None:
            panels += [plus[r], minus[r]]
        panels += [heatmap(raw[r])] + ([heatmap(filtered[r])] if filtered is not None else [])
        for c, im in enumerate(panels):
            axes[r, c].imshow(im)
        axes[r, 0].set_ylabel(f"label {lab}", fontsize=9)
    for c, name in enumerate(cols):
        axes[0, c].set_title(name, fontsize=10)
    if final is not None:
        r = len(labels)
        axes[r, 0].imshow(frame)
        axes[r, 0].set_ylabel("result", fontsize=9)
        axes[r, 1].imshow(overlay(frame[None], np.asarray(final)[None], 0.6)[0])
        axes[r, 1].set_title("$Y = \\arg\\max_l \\tilde{D}_l$", fontsize=9)
        for ax in axes[r, 2:]:
            ax.axis("off")
    return fig


def show_masking_comparison(
    frame: np.ndarray,
    mask: np.ndarray,
    diffs: dict[str, np.ndarray],
    finals: dict[str, np.ndarray],
    size: float = 2.4,
) -> Any:
    """The paper's Figures 7 and 12: (a) the frame, (b) the coarse mask ``M_l``, then the difference map
    ``D_l`` of that mask and the final map ``Y`` of each variant (name -> (H, W)): e.g. without and with
    latent blending, and with difference-map filtering."""
    big_h, big_w = frame.shape[:2]
    fig, axes = _grid(2, 1 + len(diffs), size, big_h / big_w)
    m = upscale(np.asarray(mask).astype(np.float32), (big_h, big_w))
    axes[0, 0].imshow(frame)
    axes[0, 0].set_title("(a) frame", fontsize=9)
    axes[1, 0].imshow(m, cmap="gray", vmin=0, vmax=1)
    axes[1, 0].set_title("(b) coarse mask $M_l$", fontsize=9)
    for c, (name, d) in enumerate(diffs.items(), start=1):
        axes[0, c].imshow(heatmap(d))
        axes[0, c].contour(m, levels=[0.5], colors="cyan", linewidths=0.8)
        axes[0, c].set_title(f"$D_l$, {name}", fontsize=9)
    for c, (name, y) in enumerate(finals.items(), start=1):
        axes[1, c].imshow(overlay(frame[None], np.asarray(y)[None], 0.6)[0])
        axes[1, c].set_title(f"$Y$, {name}", fontsize=9)
    return fig


def show_filtering(
    frame: np.ndarray,
    labels: Sequence[int],
    raw: np.ndarray,
    filtered: np.ndarray,
    final: np.ndarray,
    title: str | None = None,
    max_labels: int = 8,
    size: float = 2.0,
) -> Any:
    """Compact stage-3 view for sliders: top row ``D_l`` per label, bottom row ``D~_l`` (eq. 7), with the
    frame and ``Y = argmax_l D~_l`` in the last column. ``raw``/``filtered`` (L, H, W); ``final`` (H, W)."""
    labels = list(labels)[:max_labels]
    big_h, big_w = frame.shape[:2]
    fig, axes = _grid(2, len(labels) + 1, size, big_h / big_w)
    for c, lab in enumerate(labels):
        axes[0, c].imshow(heatmap(raw[c]))
        axes[0, c].set_title(f"$D_{{{lab}}}$", fontsize=10)
        axes[1, c].imshow(heatmap(filtered[c]))
        axes[1, c].set_title(f"$\\tilde{{D}}_{{{lab}}}$", fontsize=10)
    axes[0, -1].imshow(frame)
    axes[0, -1].set_title("frame", fontsize=9)
    axes[1, -1].imshow(overlay(frame[None], np.asarray(final)[None], 0.6)[0])
    axes[1, -1].set_title("$Y = \\arg\\max_l \\tilde{D}_l$", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
