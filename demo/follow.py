"""The "Follow objects" step of the demo (issue 22): layout and wiring only, below the results.

``app.py`` calls :func:`section` once inside its Blocks. Frame 1 of the last segmentation is an image:
a click (``select``) adds a positive or negative point for the chosen object id; a first-frame mask can
be uploaded (PNG) or painted (``gr.ImageEditor``). Each prompt updates the object overlay video, frame
1's mask preview (the same image, objects in their overlay colours, clicks as dots), the download (DAVIS
palette PNGs + the overlay, zipped) and the status line ("object 1: N clusters · 0 UNet samples"). The
handlers (``demo/follow_handlers.py``, no Gradio there) only read the session's result: no device step,
so on ZeroGPU they never ask for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from demo import follow_handlers as FH
from demo.toasts import user_errors

HELP = (
    "Pick objects of the segmentation on **frame 1**: a *positive* click puts the cluster under the pointer "
    "into the object, a *negative* one takes it out; change the **object id** for the next object. Or give "
    "frame 1's mask (upload or paint, below). The masks follow the clusters through the clip; no UNet runs."
)


def _tuple(out: dict) -> tuple:
    """A handler's dict as the output tuple: missing keys leave their widget alone."""
    return tuple(out[k] if k in out else gr.skip() for k in FH.FOLLOW_OUTPUTS)


@user_errors("Follow objects")
def refresh_event(state: Any, follow: Any, overlay: Any = None) -> tuple:
    """A new result in the overlay video (Segment, Preview, s): frame 1 and the prompts on it."""
    return _tuple(FH.refresh(state if overlay is not None else None, follow))


@user_errors("The click")
def click_event(state: Any, follow: Any, object_id: Any, sign: Any, evt: gr.SelectData) -> tuple:
    """A click on frame 1 (``evt.index`` = (x, y) in the frame's pixels)."""
    return _tuple(FH.click(state, follow, evt.index, object_id, sign))


@user_errors("The mask")
def mask_event(state: Any, follow: Any, mask: Any) -> tuple:
    """An uploaded PNG or the painter's value: the objects of frame 1's mask."""
    if mask is None:
        return tuple(gr.skip() for _ in FH.FOLLOW_OUTPUTS)  # the upload box was cleared
    return _tuple(FH.use_mask(state, follow, mask))


@user_errors("Clearing the clicks")
def clear_event(state: Any, follow: Any) -> tuple:
    return _tuple(FH.clear(state, follow))


@dataclass
class Follow:
    """The section's widgets (tests and app.py read them)."""

    state: gr.State
    frame: gr.Image
    object_id: gr.Number
    sign: gr.Radio
    overlay: gr.Video
    zip: gr.DownloadButton
    status: gr.Markdown
    upload: gr.File
    editor: gr.ImageEditor


def _hex(rgb: Any) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


def section(session: gr.State, result_video: gr.Video) -> Follow:
    """Lay out "Follow objects" here (inside the Blocks) and wire it: ``session`` is the app's session
    state, ``result_video`` the segmentation's overlay (a new value there refreshes frame 1)."""
    colours = [_hex(c) for c in FH.brush_colours()]
    with gr.Accordion("Follow objects: click on frame 1 (no UNet)", open=True, elem_id="follow"):
        gr.Markdown(HELP)
        follow = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                frame = gr.Image(
                    label="frame 1: click an object (objects in their overlay colours, clicks as dots)",
                    height=360,
                    type="numpy", format="png", interactive=False, elem_id="follow-frame",
                )  # fmt: skip
                with gr.Row():
                    obj = gr.Number(
                        value=1,
                        precision=0,
                        minimum=1,
                        maximum=255,
                        label="object id",
                        elem_id="follow-object",
                    )
                    sign = gr.Radio(list(FH.SIGNS), value="positive", label="click", elem_id="follow-sign")
                    clear = gr.Button("Clear clicks", size="sm", elem_id="follow-clear")
            with gr.Column(scale=1, min_width=320):
                status = gr.Markdown(elem_id="follow-status")
                overlay = gr.Video(
                    label="object overlay",
                    height=360,
                    autoplay=True,
                    loop=True,
                    interactive=False,
                    elem_id="follow-video",
                )
                zip_btn = gr.DownloadButton(
                    "Download the object masks (DAVIS PNGs + overlay, zip)", size="sm", elem_id="follow-zip"
                )
        with gr.Accordion("Or frame 1's mask: upload a PNG, or paint objects 1-5", open=False):
            with gr.Row():
                upload = gr.File(
                    label="first-frame mask (palette PNG of object ids, or black/white for one object)",
                    file_types=[".png"], type="filepath", elem_id="follow-mask-file",
                )  # fmt: skip
                editor = gr.ImageEditor(
                    label="paint on frame 1 in an object's colour (object 1 = the first colour)",
                    type="numpy", image_mode="RGBA", sources=("upload",), transforms=(),
                    brush=gr.Brush(colors=colours, default_color=colours[0], color_mode="fixed"),
                    elem_id="follow-editor",
                )  # fmt: skip
            paint = gr.Button("Use the painted mask", size="sm", elem_id="follow-paint")
    outs = [follow, frame, overlay, zip_btn, status, editor]
    quick = dict(concurrency_limit=4, show_progress="minimal", show_progress_on=[status])
    result_video.change(
        refresh_event, [session, follow, result_video], outs, api_visibility="private", **quick
    )
    frame.select(click_event, [session, follow, obj, sign], outs, api_name="follow_click", **quick)
    clear.click(clear_event, [session, follow], outs, api_name="follow_clear", **quick)
    upload.upload(mask_event, [session, follow, upload], outs, api_name="follow_mask", **quick)
    paint.click(mask_event, [session, follow, editor], outs, api_visibility="private", **quick)
    return Follow(follow, frame, obj, sign, overlay, zip_btn, status, upload, editor)
