"""VidSeg Gradio demo: upload a clip, move lambda / s / K, get a segmentation video and every intermediate.

Layout and wiring only: each event builds one :class:`demo.handlers.Settings` from the widgets, calls a
handler of ``demo/handlers.py`` (no Gradio there) and turns its plain answer into widget updates and its
errors into ``gr.Error``. Run it with ``python demo/app.py [--model M] [--model-config DIR]``
(``VIDSEG_MODEL=toy python demo/app.py`` runs the toy model offline, ``tiny`` the random one).

Cost model (what each control reruns):

* ``s``: re-filters the cached difference maps only, no UNet (on the slider's release, when the session
  has a result of the same clip and settings).
* ``lambda``: reruns stage 3 (modulation, with its reference run) only, on Segment.
* ``K`` (clusters): reruns stages 1-3 but not the feature extraction, on Segment.
* anything in "Advanced" that the features read (``t_m``, resolution cap, frames): everything, on Segment.

Each browser session holds a small :class:`demo.handlers.SessionState` in a ``gr.State``; the process
holds its stage cache (a few sessions' at most) and the shared backbones. Device jobs: on a ZeroGPU Space
each Segment/Preview gets its own worker and GPU (``spaces.GPU``), and up to ``DEVICE_CONCURRENCY`` (4)
run side by side; elsewhere one device job runs at a time (``demo.handlers._DEVICE_LOCK``), while a
second event may do its CPU work (decoding, cached re-runs, writing videos) meanwhile.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

if __package__ in (None, ""):  # `python demo/app.py`: this checkout's `vidseg_nb` and `demo.handlers`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gradio as gr

from demo import follow
from demo import handlers as H
from demo.handlers import (  # noqa: F401 - re-exported for callers of the app module
    OUTPUT_NAMES,
    Runtime,
    SessionState,
    Settings,
    UIDefaults,
    configure,
    example_paths,
    runtime,
)
from demo.toasts import user_errors
from vidseg_nb.app_support import MAX_UPLOAD_MB, MODEL_CONFIG_ENV
from vidseg_nb.backbone import Backbone
from vidseg_nb.config import MODEL_ENV, PRESETS
from vidseg_nb.errors import BackboneLoadError

try:  # Hugging Face Spaces (ZeroGPU): request a GPU per call; elsewhere a no-op
    import spaces  # type: ignore[import-not-found]

    HAS_SPACES = True
except ImportError:  # pragma: no cover - depends on the environment
    spaces = None
    HAS_SPACES = False

log = logging.getLogger("vidseg_nb.demo")

VIDEO_TYPES = [".mp4", ".webm", ".mov", ".gif", ".avi", ".mkv", ".m4v"]
STATE_TTL_S = 2 * 3600
QUEUE_SIZE = 16
"""Requests waiting in the queue; more are refused with "queue full"."""
ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")
"""On a ZeroGPU Space: the GPU appears only inside ``@spaces.GPU`` calls."""

DEVICE_FN = spaces.GPU(duration=H.gpu_duration)(H.segment_on_device) if HAS_SPACES and ZERO_GPU else None
"""The device step on ZeroGPU: a forked worker gets a GPU for ``gpu_duration(...)`` seconds. Elsewhere
``None``: the handlers run it in-process under their one device lock (``spaces.GPU`` is a no-op there,
and would bypass that lock)."""


def device_concurrency(zero_gpu: bool = ZERO_GPU) -> int:
    """``$VIDSEG_DEMO_CONCURRENCY``, else 4 on ZeroGPU and 2 elsewhere (see :data:`DEVICE_CONCURRENCY`)."""
    v = os.environ.get("VIDSEG_DEMO_CONCURRENCY", "").strip()
    return int(v) if v.isdigit() and int(v) > 0 else (4 if zero_gpu else 2)


DEVICE_CONCURRENCY = device_concurrency()
"""Segment/Preview events processed at once (``concurrency_limit``; ``$VIDSEG_DEMO_CONCURRENCY``). On
ZeroGPU each runs its device step on its own GPU, so 4 run side by side (ZeroGPU's per-user quota bounds
what one visitor takes; more would only hold more clips in memory). Elsewhere 2: the lock admits one
device step at a time, and the second event does its CPU parts (or a cached run) meanwhile, instead of
waiting in the queue behind a long run."""

CSS = "#gallery .caption-label { white-space: normal; max-width: 100%; overflow: visible; }"
"""Gallery captions wrap rather than end in "..." (``launch(css=CSS)``)."""
TITLE = "VidSeg: zero-shot video semantic segmentation with Stable Diffusion"
SPACE_HEADER = H.space_header()
"""The Hugging Face Space YAML header: README.md's front matter, the one place it is written."""


# ------------------------------------------------------------------------------------------ events
def _updates(out: dict) -> tuple:
    """A handler's dict as the output tuple: missing keys leave their widget alone (``gr.skip()``)."""
    vals = {k: out[k] for k in OUTPUT_NAMES if k in out}
    if "frame" in vals:
        vals["frame"] = gr.update(**vals["frame"], interactive=True)
    return tuple(vals.get(k, gr.skip()) for k in OUTPUT_NAMES)


def _progress(progress: Any) -> H.Progress:
    return lambda fraction, desc: progress(fraction, desc=desc)


def _state(state: Any) -> SessionState | None:
    return state if isinstance(state, SessionState) else None


# The widget parameters keep their names: they are the API's (gradio_client) parameter names.
@user_errors("Segment")
def segment_event(state, video, lam=50.0, s=0.7, n_clusters=20, preset_name="vidseg", t_m=22, batch_size=14,
                  max_frames=None, max_side=512, model_id=None, frame=0, row=None, names=None,
                  progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:  # fmt: skip
    """Segment the clip (Segment button): reruns only the stages whose settings changed."""
    st = Settings(
        video, lam, s, n_clusters, preset_name, t_m, batch_size, max_frames, max_side, model_id, frame, row,
        names or "",
    )  # fmt: skip
    return _updates(H.segment(_state(state), st, _progress(progress)))


@user_errors("Preview")
def preview_event(state, video, lam=50.0, s=0.7, n_clusters=20, preset_name="vidseg", t_m=22, batch_size=14,
                  max_frames=None, max_side=512, model_id=None, frame=0, row=None, names=None,
                  progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:  # fmt: skip
    """Coarse maps only (Preview button): features + stages 1-2, no modulation."""
    st = Settings(
        video, lam, s, n_clusters, preset_name, t_m, batch_size, max_frames, max_side, model_id, frame, row,
        names or "",
    )  # fmt: skip
    return _updates(H.preview(_state(state), st, _progress(progress)))


@user_errors("Re-filtering with s")
def refilter_event(state, video, lam=50.0, s=0.7, n_clusters=20, preset_name="vidseg", t_m=22, batch_size=14,
                   max_frames=None, max_side=512, model_id=None, frame=0, row=None, names=None) -> tuple:  # fmt: skip
    """A new s (slider release): re-filter the cached difference maps, no UNet; otherwise a status line."""
    st = Settings(
        video, lam, s, n_clusters, preset_name, t_m, batch_size, max_frames, max_side, model_id, frame, row,
        names or "",
    )  # fmt: skip
    return _updates(H.refilter(_state(state), st))


@user_errors("Naming")
def rename_event(state: Any, names: Any, model_id: Any = None, frame: Any = 0) -> tuple:
    """A new vocabulary (Names box): re-name the segments from the cached queries, no UNet (issue 13)."""
    out = H.rename(_state(state), Settings(model_id=model_id, frame=frame, names=names or ""))
    return tuple(out.get(k, gr.skip()) for k in ("legend", "gallery", "status"))


@user_errors("Showing the frame")
def frame_event(state: Any, frame: Any) -> Any:
    """The gallery of intermediates of the chosen frame (the nearest kept one)."""
    items = H.frame_gallery(_state(state), frame)
    return gr.skip() if items is None else items


@user_errors("The x-t slices")
def xt_event(state: Any, row: Any) -> tuple:
    """x-t slices of features (PCA) and labels at the chosen row."""
    images = H.xt(_state(state), row)
    return (gr.skip(), gr.skip()) if images is None else images


@user_errors("Upload")
def inspect_event(video: Any) -> str:
    """Facts about an upload as soon as it arrives; bad files raise ``gr.Error`` (then
    :func:`clear_event` empties the result outputs)."""
    return H.inspect(video)


@user_errors("The preview")
def upload_preview_event(video: Any) -> Any:
    """A preview of a good upload that the browser plays (after :func:`inspect_event` succeeds)."""
    return gr.update(value=H.upload_preview(video), visible=video is not None)


def clear_event() -> tuple:
    """After a failed upload or run: no stale result, no stale legend (``.failure`` of those events)."""
    return _updates(H.CLEARED)[1:]


@user_errors("Loading the model")
def banner_event(model_id: str | None = None) -> str:
    """The model banner; on page load it loads the default model (once) so problems show at once."""
    return H.banner(model_id)


def preset_event(preset_name: str) -> tuple:
    """Set lambda, s, B and t_m to the preset's values."""
    values = H.preset_values(preset_name)
    if values is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return tuple(gr.update(value=v) for v in values)


@user_errors("The example")
def example_event(video: Any, progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:
    """Examples (cached lazily): segment an example clip with the default settings, no session."""
    out = H.example(video, _progress(progress))
    return out["overlay"], out["labels"], out["stats"], out["status"]


# ------------------------------------------------------------------------------------------ layout
DESCRIPTION = """\
Upload a short clip and press **Segment**. The method (*Zero-shot video semantic segmentation based on
pre-trained diffusion models*; no training) clusters Stable Diffusion's self-attention features into a scene context
model (stage 1), refines the coarse maps along correspondences over time (stage 2), and sharpens them
to pixels by modulating the UNet per label and comparing the decoded images (stage 3).
**s** re-filters instantly; **lambda** reruns stage 3; **K** reruns stages 1-3 (features are cached).
"""


def build_app(
    backbone: Backbone | None = None,
    *,
    configure_runtime: bool = True,
    examples: bool = True,
    **configure_kw: Any,
) -> gr.Blocks:
    """The Gradio Blocks of the demo. ``backbone``/``configure_kw`` go to :func:`configure` (tests inject
    the tiny model and cheap defaults); ``examples=False`` leaves the example clips out."""
    rt = configure(backbone, **configure_kw) if configure_runtime or H.RUNTIME is None else runtime()
    rt.device_fn = DEVICE_FN
    d, lim = rt.defaults, rt.limits
    n_steps = rt.base_config.n_steps

    with gr.Blocks(title="VidSeg demo", delete_cache=(3600, 3 * 3600)) as demo:
        state = gr.State(None, time_to_live=STATE_TTL_S, delete_callback=H.close)
        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}")
        banner = gr.Markdown(H.banner_markdown(), elem_id="banner")
        gr.Markdown(lim.markdown(), elem_id="limits")
        with gr.Row():
            with gr.Column(scale=2, min_width=320) as left:
                video_in = gr.File(
                    label="Video (mp4, webm, mov, gif)",
                    file_types=VIDEO_TYPES,
                    type="filepath",
                    elem_id="video-in",
                )
                preview_vid = gr.Video(
                    label="preview", interactive=False, autoplay=True, loop=True, height=200,
                    visible=False, elem_id="video-preview",
                )  # fmt: skip
                clip_info = gr.Markdown(elem_id="clip-info")
                lam = gr.Slider(
                    0, 100, value=d.lam, step=1, label="λ (lambda): modulation strength",
                    info="applied on Segment; reruns stage 3 only", elem_id="lam",
                )  # fmt: skip
                s = gr.Slider(
                    0, 1, value=d.s, step=0.05, label="s: filtering outside each label's mask",
                    info="re-filters at once after a segmentation (no UNet)", elem_id="s-slider",
                )  # fmt: skip
                k = gr.Slider(
                    2, 30, value=d.n_clusters, step=1, label="K: number of clusters",
                    info="applied on Segment; reruns stages 1-3, not the features", elem_id="k",
                )  # fmt: skip
                names_in = gr.Textbox(
                    label="Names: a vocabulary for the segments (comma-separated)",
                    value="",
                    placeholder="person, dog, grass, sky",
                    info="SD 2.x: each segment gets a word from its cross-attention; a new vocabulary re-names "
                    "at once (Enter), with no UNet run",
                    elem_id="names",
                )
                with gr.Row():
                    seg_btn = gr.Button("Segment", variant="primary", elem_id="segment-btn")
                    prev_btn = gr.Button("Preview", elem_id="preview-btn")
                with gr.Accordion("Advanced", open=False):
                    preset_dd = gr.Dropdown(
                        sorted(PRESETS), value=d.preset, label="preset",
                        info="vidseg: the paper's method; emerdiff: the frame-by-frame baseline; svd: for an SVD model",
                    )  # fmt: skip
                    t_m = gr.Slider(
                        0, n_steps - 1, value=d.t_m, step=1, label="t_m: step of modulation",
                        info=f"0-based of {n_steps}; later = less noise, fewer UNet steps",
                    )  # fmt: skip
                    batch = gr.Slider(1, 48, value=d.batch_size, step=1, label="batch size B (frames)")
                    max_frames = gr.Slider(
                        lim.min_frames, lim.max_frames, value=lim.max_frames, step=1,
                        label="maximum frames (the first N are used)",
                    )  # fmt: skip
                    max_side = gr.Slider(
                        64, 1024, value=d.max_side, step=64, label="resolution cap (long side, px)"
                    )
                    model_id = gr.Dropdown(
                        H.model_choices(rt.default_model), value=rt.default_model, label="model id",
                        allow_custom_value=True,
                        info="SD 2.x or SVD: Hub id, folder, .safetensors file, 'toy' (trained on toy-world clips, no GPU needed), 'tiny' or 'tiny-svd' (random); loaded on demand",
                    )  # fmt: skip
            with gr.Column(scale=3, min_width=400):
                status = gr.Markdown(elem_id="status")
                with gr.Row():
                    overlay_out = gr.Video(
                        label="overlay", autoplay=True, loop=True, interactive=False, elem_id="overlay-video"
                    )
                    labels_out = gr.Video(
                        label="labels", autoplay=True, loop=True, interactive=False, elem_id="labels-video"
                    )
                legend = gr.HTML(elem_id="legend")  # names (issue 13): swatches + names of the segments
                frame_sl = gr.Slider(0, 1, value=0, step=1, label="frame to inspect", elem_id="frame-slider")
                gallery = gr.Gallery(
                    label="intermediates of the frame, in the order of the method (symbols: the Glossary below)",
                    columns=6,
                    height=420,
                    format="png",
                    elem_id="gallery",
                )
                row_sl = gr.Slider(
                    0,
                    100,
                    value=50,
                    step=1,
                    label="row of the x-t slices (% of the height)",
                    elem_id="row-slider",
                )
                with gr.Row():
                    xt_feat = gr.Image(label="x-t slice: features (PCA)", interactive=False, format="png")
                    xt_lab = gr.Image(label="x-t slice: labels", interactive=False, format="png")
                zip_out = gr.DownloadButton(
                    "Download the label PNGs (zip)", size="sm", elem_id="zip"
                )  # compact
                stats = gr.Markdown(elem_id="stats")
                with gr.Accordion(
                    "Glossary of the symbols (F~, M^j, M~^j, D_l, D~_l, t_m, lambda, s)", open=False
                ):
                    gr.Markdown(H.glossary(), elem_id="glossary")
        demo.vidseg_follow = follow.section(state, overlay_out)  # issue 22: "Follow objects", below
        if examples:
            with left:  # back in the input column: the examples sit under the controls
                ex_paths = example_paths(lim.max_frames)
                cache = rt.cache_examples
                demo.vidseg_examples = ex = gr.Examples(
                    examples=[[p] for p in ex_paths],
                    inputs=[video_in],
                    outputs=[overlay_out, labels_out, stats, status],
                    fn=example_event,
                    cache_examples=cache,
                    cache_mode="lazy" if cache else None,
                    example_labels=[Path(p).stem for p in ex_paths],
                    label="Examples (synthetic clips made at start-up)",
                )
                H.pin_examples_cache(ex, H.examples_cache_dir(rt))  # not Gradio's "41": a stable name

        inputs = [
            state,
            video_in,
            lam,
            s,
            k,
            preset_dd,
            t_m,
            batch,
            max_frames,
            max_side,
            model_id,
            frame_sl,
            row_sl,
            names_in,
        ]
        outputs = [
            state,
            overlay_out,
            labels_out,
            frame_sl,
            gallery,
            xt_feat,
            xt_lab,
            zip_out,
            stats,
            status,
            legend,
        ]
        one = dict(show_progress_on=[status])  # one progress display per run: the status line
        heavy = dict(
            concurrency_limit=device_concurrency(), concurrency_id="device", show_progress="full", **one
        )
        clear = dict(fn=clear_event, inputs=None, outputs=outputs[1:], api_visibility="private", queue=False)
        for btn, fn, name in ((seg_btn, segment_event, "segment"), (prev_btn, preview_event, "preview")):
            ev = btn.click(fn, inputs, outputs, api_name=name, **heavy)
            ev.then(banner_event, [model_id], [banner], api_visibility="private", queue=False)
            ev.failure(**clear)
        s.release(
            refilter_event, inputs, outputs, api_name="refilter",
            concurrency_limit=4, show_progress="minimal", trigger_mode="always_last", **one,
        )  # fmt: skip
        frame_sl.release(frame_event, [state, frame_sl], [gallery], api_name="frame", show_progress="minimal")
        names_in.submit(
            rename_event, [state, names_in, model_id, frame_sl], [legend, gallery, status], api_name="rename",
            concurrency_limit=4, show_progress="minimal",
        )  # fmt: skip
        row_sl.release(xt_event, [state, row_sl], [xt_feat, xt_lab], api_name="xt", show_progress="minimal")
        upload = video_in.change(
            inspect_event, [video_in], [clip_info], api_name="inspect", show_progress="minimal"
        )
        upload.success(upload_preview_event, [video_in], [preview_vid], api_visibility="private")
        upload.failure(**clear)
        preset_dd.change(
            preset_event, [preset_dd], [lam, s, batch, t_m], api_visibility="private", queue=False
        )
        demo.load(
            lambda: banner_event(None), None, [banner], api_visibility="private", show_progress="minimal"
        )
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2)
    return demo


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``[--host H] [--port P] [--model M] [--model-config DIR]``."""
    ap = argparse.ArgumentParser(description=TITLE)
    ap.add_argument("--host", default=None, help="server name (default $GRADIO_SERVER_NAME or 127.0.0.1)")
    ap.add_argument("--port", type=int, default=None, help="port (default $GRADIO_SERVER_PORT or 7860)")
    ap.add_argument("--model", default=None, help=f"model source (default ${MODEL_ENV} or SD 2.1-base)")
    ap.add_argument(
        "--model-config",
        default=None,
        metavar="DIR",
        help=f"diffusers folder or Hub id with the configs of a single-file checkpoint (default ${MODEL_CONFIG_ENV})",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """``python demo/app.py [--host H] [--port P] [--model M] [--model-config DIR]``; defaults from
    ``GRADIO_SERVER_NAME``, ``GRADIO_SERVER_PORT``, ``VIDSEG_MODEL`` and ``VIDSEG_MODEL_CONFIG``; the
    model config goes to ``load_backbone(source, config=DIR)``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rt = configure(model=args.model, model_config=args.model_config)
    demo = build_app(configure_runtime=False)

    def preload() -> None:
        try:
            rt.models.get(rt.default_model)
        except BackboneLoadError:
            log.warning("%s", rt.models.error(rt.default_model))

    if ZERO_GPU:  # ZeroGPU wants the weights loaded at start-up, in the main process
        preload()
    else:
        threading.Thread(target=preload, name="vidseg-preload", daemon=True).start()
    demo.launch(
        server_name=args.host, server_port=args.port, max_file_size=f"{MAX_UPLOAD_MB}mb", show_error=True,
        css=CSS,
    )  # fmt: skip


if __name__ == "__main__":
    main()
