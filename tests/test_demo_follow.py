"""The demo's "Follow objects" step (issue 22, item 2) without a browser: demo/follow_handlers.py called
directly and through demo/follow.py's Gradio wrappers, on a synthetic clip segmented with the tiny model.

A click on frame 1 gives exactly ``prompts.object_masks(result, prompts.objects_from_clicks(...))``, a
negative click removes the cluster, an uploaded or painted mask gives exactly ``objects_from_mask``'s
masks, no handler spends a UNet sample or calls the device step, and errors are one toast.
Cheap settings as tests/test_demo.py: 4 frames, a 64 px cap, K = 3, one Euler step.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

gr = pytest.importorskip("gradio")

from masks import inside  # noqa: E402

from demo import app, follow  # noqa: E402
from demo import follow_handlers as FH  # noqa: E402
from demo import handlers as H  # noqa: E402
from vidseg_nb import prompts as P  # noqa: E402
from vidseg_nb.config import SegConfig  # noqa: E402
from vidseg_nb.synthetic import make_clip, save_clip  # noqa: E402
from vidseg_nb.video import read_video, resize_labels  # noqa: E402

DEFAULTS = H.UIDefaults(n_clusters=3, t_m=24, batch_size=4, max_side=64)
KW = dict(lam=50.0, s=0.7, n_clusters=3, preset="vidseg", t_m=24, batch_size=4, max_side=64, frame=0, row=50)
WORK = ("unet_samples", "unet_partial_samples", "unet_calls", "vae_encodes", "vae_decodes")


@pytest.fixture(scope="module")
def backbone(tiny):
    """The tiny random backbone (conftest.py's session fixture)."""
    return tiny


@pytest.fixture(scope="module")
def rt(backbone, tmp_path_factory):
    return H.configure(
        backbone,
        base_config=SegConfig(kmeans_n_init=1),
        max_frames=6,
        defaults=DEFAULTS,
        cache_examples=False,
        workdir=tmp_path_factory.mktemp("follow"),
    )


@pytest.fixture(scope="module")
def synth():
    return make_clip(4, 128, 160, n_objects=2, seed=0)


@pytest.fixture(scope="module")
def seg(rt, synth, tmp_path_factory):
    """A session that has segmented the synthetic clip (full method) and its result."""
    path = save_clip(synth, tmp_path_factory.mktemp("clip") / "planted.mp4")
    out = H.segment(None, H.Settings(video=str(path), **KW))
    return out["state"], path


def result(state):
    return H.runtime().work(state).result


def work(bb) -> dict:
    return {k: getattr(bb.counters, k) for k in WORK}


def zipped_masks(zpath: str) -> tuple[np.ndarray, list[str]]:
    """The DAVIS PNGs of a Follow-objects zip, read back as ids, and the zip's names."""
    import tempfile

    with zipfile.ZipFile(zpath) as z, tempfile.TemporaryDirectory() as d:
        names = sorted(z.namelist())
        z.extractall(d)
        masks = np.stack([P.read_object_mask(Path(d) / n) for n in names if n.endswith(".png")])
    return masks, names


def test_click_inside_a_planted_object_gives_the_masks_of_objects_from_clicks(seg, synth, backbone):
    state, _ = seg
    r = result(state)
    x, y = inside(synth.labels[0] == 1)
    assert synth.labels[0, y, x] == 1
    before = work(backbone)
    ref = FH.refresh(state, None)
    assert ref["frame"].shape == (128, 160, 3) and ref["overlay"] is None
    assert ref["editor"]["background"].shape == (128, 160, 3)
    out = FH.click(state, ref["follow"], (x, y), 1, "positive")
    assert work(backbone) == before  # no UNet sample, no VAE: a look-up in the result
    want = P.object_masks(r, P.objects_from_clicks(r, [P.Click(0, x, y, 1, True)]))
    assert want[0, y, x] == 1 and want.shape == (4, 128, 160)
    got, names = zipped_masks(out["zip"])
    np.testing.assert_array_equal(got, want)
    assert len([n for n in names if n.endswith(".png")]) == 4 and any(n.endswith(".mp4") for n in names)
    assert out["follow"].clicks == [(0, x, y, 1, True)]
    video = read_video(out["overlay"])
    assert len(video) == 4 and video.size == (128, 160)
    assert out["status"].startswith("object 1: 1 cluster (1 click; 4 frames) · 0 UNet samples")
    # the preview is frame 1 with object 1 in its overlay colour: an object pixel away from the dot changes
    ys, xs = np.nonzero(want[0] == 1)
    far = np.argmax((ys - y) ** 2 + (xs - x) ** 2)
    plain = ref["frame"]
    assert not np.array_equal(out["frame"][ys[far], xs[far]], plain[ys[far], xs[far]])
    bg = np.argwhere(want[0] == 0)[0]
    np.testing.assert_array_equal(out["frame"][tuple(bg)], plain[tuple(bg)])  # background: the frame


def test_negative_click_removes_the_cluster_and_a_second_object(seg, synth, backbone):
    state, _ = seg
    r = result(state)
    x, y = inside(synth.labels[0] == 1)
    before = work(backbone)
    one = FH.click(state, None, (x, y), 1, "positive")
    neg = FH.click(state, one["follow"], (x, y), 1, "negative")
    assert work(backbone) == before
    got, _ = zipped_masks(neg["zip"])
    assert not got.any()  # the cluster left object 1: no pixel of it anywhere
    assert neg["status"].startswith("object 1: 0 clusters (2 clicks")
    # object 2 takes the cluster under a point of planted object 2; object 1 keeps the one under (x, y)
    x2, y2 = inside(synth.labels[0] == 2)
    two = FH.click(state, FH.click(state, None, (x, y), 1, "positive")["follow"], (x2, y2), 2, "positive")
    clicks = [P.Click(0, x, y, 1, True), P.Click(0, x2, y2, 2, True)]
    want = P.object_masks(r, P.objects_from_clicks(r, clicks))
    np.testing.assert_array_equal(zipped_masks(two["zip"])[0], want)
    assert want[0, y2, x2] == 2 and "object 2: 1 cluster" in two["status"]


def _m1_mask(r) -> tuple[np.ndarray, int]:
    """A frame-1 mask that is object 1 on the cells of M^1's largest cluster (nearest-upsampled)."""
    m1 = np.asarray(r.coarse_before[0]).astype(np.int64)
    c = int(np.bincount(m1.ravel()).argmax())  # the largest: its majority survives the resizing
    mask = (resize_labels(m1, r.labels.shape[1:3]) == c).astype(np.uint8)
    return mask, c


def test_uploaded_or_painted_mask_gives_the_masks_of_objects_from_mask(seg, backbone, tmp_path):
    state, _ = seg
    r = result(state)
    mask, cluster = _m1_mask(r)
    objects = P.objects_from_mask(r, mask)
    assert cluster in objects[1]
    want = P.object_masks(r, objects)
    assert want.any()
    png = P.davis_png(mask, tmp_path / "mask")[0]  # a palette PNG, as DAVIS ships them
    before = work(backbone)
    up = FH.use_mask(state, FH.FollowState(clicks=[(0, 1, 1, 1, True)]), str(png))
    assert up["follow"].clicks == [] and np.array_equal(up["follow"].mask, mask)
    np.testing.assert_array_equal(zipped_masks(up["zip"])[0], want)
    assert up["status"].startswith(f"Mask: object 1: {len(objects[1])} cluster")
    assert "(mask; 4 frames) · 0 UNet samples" in up["status"]
    # the painter: strokes in object 1's overlay colour (the brush's first) on a transparent layer
    layer = np.zeros((*mask.shape, 4), np.uint8)
    layer[mask == 1] = (*FH.brush_colours()[0], 255)
    editor = dict(background=r.labels[0] * 0, layers=[layer], composite=None)
    painted = FH.use_mask(state, None, editor)
    np.testing.assert_array_equal(zipped_masks(painted["zip"])[0], want)
    assert work(backbone) == before
    # a gradio file value (dict with a path) is read as the upload
    np.testing.assert_array_equal(zipped_masks(FH.use_mask(state, None, {"path": str(png)})["zip"])[0], want)


def test_handlers_never_call_the_device_step(seg, synth, rt, monkeypatch):
    """The ZeroGPU split: clicks and masks only read the session's result (no spaces.GPU call)."""

    def no_gpu(*a, **k):
        raise AssertionError("the device step was called")

    monkeypatch.setattr(rt, "device_fn", no_gpu)
    monkeypatch.setattr(H, "segment_on_device", no_gpu)
    monkeypatch.setattr(H, "run_device_step", no_gpu)
    state, _ = seg
    x, y = inside(synth.labels[0] == 1)
    out = follow.click_event(
        state, None, 1, "positive", gr.SelectData(None, {"index": [x, y], "value": None})
    )
    vals = dict(zip(FH.FOLLOW_OUTPUTS, out))
    assert vals["follow"].clicks == [(0, x, y, 1, True)] and "0 UNet samples" in vals["status"]
    assert vals["editor"] == {"__type__": "update"}  # gr.skip(): the painter is left as it is
    assert Path(vals["overlay"]).is_file() and Path(vals["zip"]).is_file()


def test_prompts_follow_a_new_s_and_reset_for_another_clip(seg, synth, rt, backbone):
    state, path = seg
    x, y = inside(synth.labels[0] == 1)
    one = FH.click(state, None, (x, y), 1, "positive")
    out = H.refilter(state, H.Settings(video=str(path), **{**KW, "s": 0.3}))
    assert "Re-filtered" in out["status"]
    r = result(state)
    assert r.config.s == 0.3
    ref = FH.refresh(state, one["follow"])  # the overlay changed: the click applies to the new result
    want = P.object_masks(r, P.objects_from_clicks(r, [P.Click(0, x, y, 1, True)]))
    np.testing.assert_array_equal(zipped_masks(ref["zip"])[0], want)
    other = FH.FollowState(clicks=[(0, x, y, 1, True)], clip_sig=("another clip",))
    fresh = FH.refresh(state, other)
    assert fresh["follow"].clicks == [] and fresh["overlay"] is None and "Click on frame 1" in fresh["status"]
    cleared = FH.clear(state, one["follow"])
    assert (
        cleared["follow"].clicks == [] and cleared["zip"] is None and cleared["status"].startswith("Cleared.")
    )
    H.refilter(state, H.Settings(video=str(path), **KW))  # back to s = 0.7 for the other tests


def test_errors_are_one_toast(seg, rt, tmp_path):
    state, _ = seg
    sel = gr.SelectData(None, {"index": [5, 5], "value": None})
    cases = [
        (lambda: follow.click_event(None, None, 1, "positive", sel), "The click: no segmentation yet", "Segment a clip first"),
        (lambda: follow.click_event(H.SessionState(), None, 1, "positive", sel), "The click: no segmentation yet", "Segment a clip first"),
        (lambda: follow.click_event(state, None, 0, "positive", sel), "The click refused: invalid input", "object id must be 1..255"),
        (lambda: follow.click_event(state, None, 1, "positive", gr.SelectData(None, {"index": [999, 5], "value": None})),
         "The click refused: invalid input", "outside the 160x128 frame"),
        (lambda: follow.mask_event(state, None, np.ones((64, 64), np.uint8)), "The mask refused: invalid input",
         "the first-frame mask is 64x64 pixels but the frames are 160x128"),
        (lambda: follow.mask_event(state, None, np.zeros((128, 160), np.uint8)), "The mask refused: invalid input",
         "has no object"),
        (lambda: follow.mask_event(state, None, dict(background=None, layers=[np.zeros((128, 160, 4), np.uint8)], composite=None)),
         "The mask refused: invalid input", "has no object"),
        (lambda: follow.mask_event(None, None, np.ones((128, 160), np.uint8)), "The mask: no segmentation yet", "Segment a clip first"),
    ]  # fmt: skip
    for call, title, words in cases:
        with pytest.raises(gr.Error) as e:
            call()
        assert e.value.title == title, e.value.title
        assert e.value.message.startswith(f"<strong>{title}</strong><br>") and words in e.value.message, (
            e.value.message
        )
    # a refused prompt keeps the state: the click list is the caller's, unchanged
    f = FH.FollowState(clicks=[(0, 5, 5, 1, True)])
    with pytest.raises(P.PromptError):
        FH.click(state, f, (999, 5), 1, "positive")
    assert f.clicks == [(0, 5, 5, 1, True)]


def test_layout_is_its_own_module_and_app_stays_small(rt):
    demo = app.build_app(configure_runtime=False, examples=False)
    fns = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
    for name in ("follow_click", "follow_clear", "follow_mask"):
        assert name in fns, sorted(fns)
    assert fns["follow_click"].concurrency_id != "device"  # never queued behind a segmentation
    sec = demo.vidseg_follow
    assert isinstance(sec, follow.Follow) and sec.frame.elem_id == "follow-frame"
    lines = (ROOT / "demo" / "app.py").read_text(encoding="utf-8").count("\n")
    assert lines < 500, lines
    assert FH.refresh(None, None)["frame"] is None  # no result: nothing to click on
