"""The Gradio demo (demo/app.py) on the tiny random model: the event functions called directly, the app
served in-process and driven with gradio_client, two sessions at once, and bad input.

Cheap settings throughout: 4-5 frame clips, a 64 px resolution cap, K = 3, t_m = 24 (one Euler step),
one K-Means init; the whole file runs in about a minute on two CPU cores.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

gr = pytest.importorskip("gradio")

from demo import app  # noqa: E402
from vidseg_nb.config import SegConfig  # noqa: E402
from vidseg_nb.palette import colorize  # noqa: E402
from vidseg_nb.synthetic import make_clip, save_clip  # noqa: E402
from vidseg_nb.video import read_label_png, read_video, write_gif  # noqa: E402

LIMIT = 6  # clip-length limit of the test app
DEFAULTS = app.UIDefaults(n_clusters=3, t_m=24, batch_size=4, max_side=64)
KW = dict(
    lam=50.0,
    s=0.7,
    n_clusters=3,
    preset_name="vidseg",
    t_m=24,
    batch_size=4,
    max_frames=None,
    max_side=64,
    model_id=None,
    frame=0,
    row=50,
)
WORK = ("unet_samples", "unet_partial_samples", "unet_calls", "vae_encodes", "vae_decodes")


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def backbone(request):
    """The tiny random backbone (the session fixture of conftest.py when there is one)."""
    try:
        return request.getfixturevalue("tiny")
    except pytest.FixtureLookupError:  # pragma: no cover - without the shared conftest
        from vidseg_nb.loading import load_backbone

        return load_backbone("tiny", device="cpu")


@pytest.fixture(scope="module")
def rt(backbone, tmp_path_factory):
    return app.configure(
        backbone,
        base_config=SegConfig(kmeans_n_init=1),
        max_frames=LIMIT,
        defaults=DEFAULTS,
        cache_examples=False,
        workdir=tmp_path_factory.mktemp("demo"),
    )


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Good and bad uploads."""
    d = tmp_path_factory.mktemp("clips")
    out = {
        "a": save_clip(make_clip(4, 128, 128, n_objects=2, seed=0), d / "a.mp4"),
        "b": save_clip(make_clip(5, 128, 192, n_objects=2, seed=1), d / "b.mp4"),
        "long": save_clip(make_clip(LIMIT + 2, 64, 64, n_objects=1, seed=2), d / "long.mp4"),
    }
    rgba = np.zeros((3, 128, 128, 4), np.uint8)
    rgba[..., :3] = make_clip(3, 128, 128, n_objects=2, seed=3).frames
    rgba[..., 3] = 255
    rgba[:, :20, :20, 3] = 0  # a transparent corner
    ims = [Image.fromarray(f, "RGBA") for f in rgba]
    ims[0].save(d / "rgba.gif", save_all=True, append_images=ims[1:], duration=100, loop=0, disposal=2)
    out["rgba"] = d / "rgba.gif"
    out["one"] = write_gif(d / "one.gif", make_clip(1, 96, 96, seed=4).frames)
    out["wide"] = write_gif(d / "wide.gif", np.full((2, 64, 5000, 3), 120, np.uint8))
    out["small"] = write_gif(d / "small.gif", np.full((2, 32, 32, 3), 120, np.uint8))
    (d / "text.mp4").write_text("this is not a video, just text with a video suffix\n" * 20)
    out["text"] = d / "text.mp4"
    (d / "empty.mp4").write_bytes(b"")
    out["empty"] = d / "empty.mp4"
    return out


def outputs(values: tuple) -> dict:
    assert len(values) == len(app.OUTPUT_NAMES)
    return dict(zip(app.OUTPUT_NAMES, values))


def segment(state, path, **kw) -> dict:
    return outputs(app.segment_event(state, str(path) if path else path, **{**KW, **kw}))


def refilter(state, path, **kw) -> dict:
    return outputs(app.refilter_event(state, str(path), **{**KW, **kw}))


def widgets(config: SegConfig) -> dict:
    """Widget values that give ``config`` (so tests do not depend on the order they run in)."""
    return dict(
        lam=config.lam,
        s=config.s,
        n_clusters=config.n_clusters,
        t_m=config.t_m,
        batch_size=config.batch_size,
        max_side=config.max_side,
    )


def is_skip(v) -> bool:
    return isinstance(v, dict) and v == {"__type__": "update"}


def work(bb) -> dict:
    return {k: getattr(bb.counters, k) for k in WORK}


def delta(bb, before: dict) -> dict:
    return {k: getattr(bb.counters, k) - before[k] for k in WORK}


@pytest.fixture(scope="module")
def seg_a(rt, clips):
    """A session that has segmented clip A once (the full method)."""
    return segment(None, clips["a"])


# ----------------------------------------------------------------------------------------- events
def test_segment_event_outputs(seg_a, rt):
    session = seg_a["state"]
    assert isinstance(session, app.Session)
    r = session.result
    assert r.mode == "full" and r.labels.shape == (4, 128, 128)
    for key in ("overlay", "labels"):
        clip = read_video(seg_a[key])
        assert len(clip) == 4 and clip.size == (128, 128), key
        info = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", seg_a[key]],
            capture_output=True,
            text=True,
        ).stderr
        assert "h264" in info and "yuv420p" in info, info  # plays in every browser
    # the label video shows the palette colours of the labels (H.264 is lossy: compare loosely)
    lab = read_video(seg_a["labels"]).frames.astype(np.float32)
    assert np.abs(lab - colorize(r.labels.astype(np.int64))).mean() < 12
    with zipfile.ZipFile(seg_a["zip"]) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        assert len(names) == 4
        z.extract(names[2], Path(seg_a["zip"]).parent / "x")
    np.testing.assert_array_equal(read_label_png(Path(seg_a["zip"]).parent / "x" / names[2]), r.labels[2])
    captions = [c for _, c in seg_a["gallery"]]
    for want in (
        "frame 0",
        "PCA of F~",
        "coarse M^j",
        "refined M~^j",
        "(raw)",
        "(filtered)",
        "I+",
        "I-",
        "final Y",
    ):
        assert any(want in c for c in captions), (want, captions)
    assert all(img.dtype == np.uint8 and img.ndim == 3 for img, _ in seg_a["gallery"])
    assert seg_a["frame"]["maximum"] == 3
    assert seg_a["xt_features"].shape[1:] == (128, 3) and seg_a["xt_labels"].shape[1:] == (128, 3)
    assert "UNet samples" in seg_a["stats"] and "full run" in seg_a["stats"]
    assert "not meaningful" in seg_a["status"]


def test_s_refilters_without_the_unet(seg_a, clips, backbone):
    session = seg_a["state"]
    base = widgets(session.result.config)
    r_before = session.result
    before = work(backbone)
    out0 = refilter(session, clips["a"], **{**base, "s": 0.0})
    r0 = session.result
    out1 = refilter(session, clips["a"], **{**base, "s": 1.0})
    r1 = session.result
    assert all(v == 0 for v in delta(backbone, before).values()), delta(backbone, before)
    for r in (r0, r1):
        assert set(r.timings) <= {"filter + argmax", "resize"}, r.timings
    assert r0.config.s == 0.0 and r1.config.s == 1.0
    # the filtered difference maps change with s, and the labels follow
    assert not np.allclose(r0.details[0].filtered, r1.details[0].filtered)
    assert not np.array_equal(r0.labels, r1.labels)
    assert "re-filter only" in out0["stats"] and "Re-filtered" in out1["status"]
    assert read_video(out0["overlay"]).size == (128, 128)
    # back to the first s: exactly the first labels again, still without the UNet
    refilter(session, clips["a"], **{**base, "s": r_before.config.s})
    np.testing.assert_array_equal(session.result.labels, r_before.labels)
    assert all(v == 0 for v in delta(backbone, before).values())


def test_s_release_without_a_result_does_nothing(rt, clips, backbone):
    before = work(backbone)
    out = refilter(None, clips["a"], s=0.1)
    assert all(is_skip(out[k]) for k in app.OUTPUT_NAMES if k != "status")
    assert "Segment" in out["status"]
    assert delta(backbone, before)["unet_samples"] == 0


def test_s_release_after_moving_lambda_waits_for_segment(seg_a, clips, backbone):
    session = seg_a["state"]
    base = widgets(session.result.config)
    r = session.result
    before = work(backbone)
    out = refilter(session, clips["a"], **{**base, "lam": base["lam"] + 7, "s": 0.3})
    assert all(is_skip(out[k]) for k in app.OUTPUT_NAMES if k != "status")
    assert "press **Segment**" in out["status"]
    assert session.result is r and all(v == 0 for v in delta(backbone, before).values())


def test_lambda_reruns_stage3_only(seg_a, clips, backbone):
    session = seg_a["state"]
    base = widgets(session.result.config)
    before = work(backbone)
    out = segment(session, clips["a"], **{**base, "lam": 20.0})
    d = delta(backbone, before)
    r = session.result
    assert r.config.lam == 20.0
    assert d["unet_samples"] > 0 and d["vae_decodes"] > 0  # stage 3 ran
    assert d["unet_partial_samples"] == 0  # no feature-only forwards
    assert "features" not in r.timings and "coarse maps (stages 1-2)" not in r.timings
    assert "modulation (stage 3)" in r.timings
    assert "stage 3 rerun" in out["stats"]


def test_clusters_rerun_stages_1_to_3_but_not_the_features(seg_a, clips, backbone):
    session = seg_a["state"]
    base = widgets(session.result.config)
    before = work(backbone)
    out = segment(session, clips["a"], **{**base, "n_clusters": 2})
    r = session.result
    assert delta(backbone, before)["unet_partial_samples"] == 0
    assert "features" not in r.timings and "coarse maps (stages 1-2)" in r.timings
    assert len(np.unique(r.coarse_before)) <= 2
    assert "stages 1-3 rerun (features from the cache)" in out["stats"]
    # settings seen before are all cached: Segment only re-filters
    before = work(backbone)
    out = segment(session, clips["a"], **{**base, "n_clusters": 3})
    assert all(v == 0 for v in delta(backbone, before).values())
    assert "re-filter only" in out["stats"]


def test_preview_gives_coarse_maps_without_modulation(rt, clips, backbone):
    before = work(backbone)
    out = outputs(app.preview_event(None, str(clips["b"]), **KW))
    d = delta(backbone, before)
    r = out["state"].result
    assert r.mode == "preview" and r.labels.shape == (5, 128, 192)
    assert d["vae_decodes"] == 0 and d["unet_samples"] == 0 and d["unet_partial_samples"] > 0
    assert "features" in r.timings and "modulation (stage 3)" not in r.timings
    captions = [c for _, c in out["gallery"]]
    assert "final Y" in captions and not any("(raw)" in c for c in captions)
    assert len(read_video(out["overlay"])) == 5
    # s does nothing to a preview, and says so
    assert "preview" in refilter(out["state"], clips["b"], s=0.2)["status"]


def test_frame_and_xt_events(seg_a):
    session = seg_a["state"]
    g = app.frame_event(session, 2)
    assert g[0][1] == "frame 2"
    feat, lab = app.xt_event(session, 0)  # row 0 % of the height: the top row
    assert feat.shape == lab.shape and lab.shape[1] == 128
    n = len(session.result)
    rows = lab[:: lab.shape[0] // n]  # one picture row per frame (time runs down)
    np.testing.assert_array_equal(rows, colorize(session.result.labels[:, 0].astype(np.int64)))
    assert is_skip(app.frame_event(None, 1))


def test_two_sessions_keep_separate_state(seg_a, clips, backbone):
    s1 = seg_a["state"]
    out2 = segment(None, clips["b"], s=0.5)
    s2 = out2["state"]
    assert s2 is not s1 and s2.segmenter is not s1.segmenter
    assert s2.result.labels.shape == (5, 128, 192)
    # session 1 still re-filters its own clip, from its own cache
    before = work(backbone)
    out1 = refilter(s1, clips["a"], **{**widgets(s1.result.config), "s": 0.25})
    assert delta(backbone, before)["unet_samples"] == 0
    assert s1.result.labels.shape == (4, 128, 128)
    assert read_video(out1["overlay"]).size == (128, 128)
    assert s2.result.labels.shape == (5, 128, 192) and s2.result.config.s == 0.5
    assert Path(out1["overlay"]).parent != Path(out2["overlay"]).parent


# ----------------------------------------------------------------------------------------- bad input
BAD = [
    ("text", "not a readable video"),
    ("empty", "empty"),
    ("one", "at least 2 frames"),
    ("long", f"at most {LIMIT} frames"),
    ("wide", "at most 4096 px"),
    ("small", "minimum is 64"),
]


@pytest.mark.parametrize(("name", "message"), BAD)
def test_bad_upload_is_a_readable_error(rt, clips, backbone, name, message):
    before = work(backbone)
    with pytest.raises(gr.Error) as e:
        segment(None, clips[name])
    assert message in e.value.message, e.value.message
    assert "Traceback" not in e.value.message
    with pytest.raises(gr.Error) as e2:  # the upload check says the same at once
        app.inspect_event(str(clips[name]))
    assert message in e2.value.message
    assert all(v == 0 for v in delta(backbone, before).values())


def test_missing_video_and_bad_settings(rt, clips):
    with pytest.raises(gr.Error, match="Upload a video"):
        segment(None, None)
    with pytest.raises(gr.Error) as e:
        segment(None, clips["a"], t_m=40)
    assert "t_m" in e.value.message
    with pytest.raises(gr.Error) as e:
        segment(None, clips["a"], preset_name="nope")
    assert "unknown preset" in e.value.message
    assert app.inspect_event(None) == ""


def test_rgba_gif_is_converted(rt, clips):
    clip = app.load_clip(clips["rgba"])
    assert clip.frames.shape == (3, 128, 128, 3)
    assert clip.frames[:, :20, :20].max() == 0  # transparent -> black
    assert "3 frames" in app.inspect_event(str(clips["rgba"]))
    out = outputs(app.preview_event(None, str(clips["rgba"]), **KW))
    assert len(read_video(out["overlay"])) == 3


def test_pixel_budget_bounds_the_decoded_clip(rt, clips):
    tight = app.Limits(max_frames=LIMIT, max_total_pixels=2 * 128 * 128)
    with pytest.raises(app.VideoError, match="allow at most 2 frames"):
        app.load_clip(clips["a"], limits=tight)


def test_old_sessions_drop_their_caches(rt):
    r = app.Runtime("tiny", SegConfig(), app.Limits(), app.UIDefaults(), max_cached_sessions=2)
    sessions = [app.Session() for _ in range(3)]
    for s in sessions:
        s.cache_valid = True
        r.touch(s)
    assert [s.cache_valid for s in sessions] == [False, True, True]
    r.touch(sessions[1])  # used again: now sessions[2] is the oldest kept
    r.touch(sessions[0])
    assert [s.cache_valid for s in sessions] == [False, True, False]


def test_preset_sets_lambda_s_batch_and_t_m(rt):
    lam, s, b, t_m = app.preset_event("emerdiff")
    assert (lam["value"], s["value"], b["value"], t_m["value"]) == (10.0, 1.0, 1, 22)
    assert app.preset_event("svd")[3]["value"] == 17  # the paper's SVD setting
    cfg = app.make_config(10.0, 1.0, 3, "emerdiff", 24, 1, 64)
    assert not cfg.refine and not cfg.masked_modulation and cfg.kmeans_n_init == 1


def test_max_frames_uses_the_first_frames(rt, clips):
    clip = app.load_clip(clips["b"], use_frames=3)
    assert len(clip) == 3
    with pytest.raises(Exception, match="at least 2"):
        app.load_clip(clips["b"], use_frames=1)


def test_model_that_cannot_be_loaded(rt, clips, tmp_path):
    bad = str(tmp_path / "no-such-model")
    with pytest.raises(gr.Error) as e:
        segment(None, clips["a"], model_id=bad)
    assert "Could not load the model" in e.value.message and "VIDSEG_MODEL" in e.value.message
    banner = app.banner_event(bad)
    assert "could not be loaded" in banner and "VIDSEG_MODEL" in banner
    assert "not meaningful" in app.banner_event(None)  # the default (tiny) model
    assert rt.models.peek("tiny") is not None


def test_build_app_wiring(rt):
    demo = app.build_app(configure_runtime=False, examples=False)
    fns = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
    for name in ("segment", "preview", "refilter", "frame", "xt", "inspect"):
        assert name in fns, sorted(fns)
    for name in ("segment", "preview"):
        assert fns[name].concurrency_limit == 1 and fns[name].concurrency_id == "device"
    assert demo._queue.max_size == app.QUEUE_SIZE
    text = " ".join(str(getattr(b, "value", "")) for b in demo.blocks.values())
    assert f"2–{LIMIT} frames" in text and "4096 px" in text and "not meaningful" in text


def test_session_pickles_without_the_backbone(seg_a):
    import pickle

    s = pickle.loads(pickle.dumps(seg_a["state"]))
    assert s.segmenter.backbone is None and s.result.labels.shape == (4, 128, 128)
    assert s.lock.acquire(blocking=False)


# ----------------------------------------------------------------------------------------- over HTTP
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(rt):
    demo = app.build_app(configure_runtime=False, examples=True)
    port = _free_port()
    demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, ssr_mode=False
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=True)


API_KW = {**{k: v for k, v in KW.items() if k != "model_id"}, "max_frames": LIMIT}


def _api(result) -> dict:
    """The API outputs of /segment, /refilter, /preview (all outputs but the state)."""
    names = [n for n in app.OUTPUT_NAMES if n != "state"]
    assert len(result) == len(names)
    return dict(zip(names, result))


def test_client_segment_refilter_browse(server, clips):
    from gradio_client import handle_file

    c = _client(server)
    info = c.predict(video=handle_file(str(clips["a"])), api_name="/inspect")
    assert "a.mp4" in info and "128x128" in info
    out = _api(c.predict(video=handle_file(str(clips["a"])), **API_KW, api_name="/segment"))
    clip = read_video(out["overlay"])
    assert len(clip) == 4 and clip.size == (128, 128)
    assert len(read_video(out["labels"])) == 4
    captions = [g["caption"] for g in out["gallery"]]
    assert captions[0] == "frame 0" and "final Y" in captions
    assert Image.open(out["gallery"][0]["image"]).size == (64, 64)  # processing size
    assert zipfile.is_zipfile(out["zip"])
    out2 = _api(c.predict(video=handle_file(str(clips["a"])), **{**API_KW, "s": 0.2}, api_name="/refilter"))
    assert "Re-filtered" in out2["status"] and "re-filter only" in out2["stats"]
    g = c.predict(frame=3, api_name="/frame")
    assert g[0]["caption"] == "frame 3"
    feat, lab = c.predict(row=10, api_name="/xt")
    assert Image.open(lab).size[0] == 128


def test_client_two_sessions_at_once_and_bad_input(server, clips):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    c1, c2, c3 = _client(server), _client(server), _client(server)
    j1 = c1.submit(video=handle_file(str(clips["a"])), **API_KW, api_name="/segment")
    j2 = c2.submit(video=handle_file(str(clips["b"])), **{**API_KW, "s": 0.4}, api_name="/segment")
    # meanwhile a third user uploads garbage: a readable error, nothing else disturbed
    with pytest.raises(AppError) as e:
        c3.predict(video=handle_file(str(clips["text"])), **API_KW, api_name="/segment")
    assert "not a readable video" in str(e.value)
    o1, o2 = _api(j1.result(timeout=300)), _api(j2.result(timeout=300))
    assert read_video(o1["overlay"]).size == (128, 128) and len(read_video(o1["overlay"])) == 4
    assert read_video(o2["overlay"]).size == (128, 192) and len(read_video(o2["overlay"])) == 5
    # each session re-filters its own clip
    r1 = _api(c1.predict(video=handle_file(str(clips["a"])), **{**API_KW, "s": 0.1}, api_name="/refilter"))
    r2 = _api(c2.predict(video=handle_file(str(clips["b"])), **{**API_KW, "s": 0.9}, api_name="/refilter"))
    assert read_video(r1["overlay"]).size == (128, 128) and "s = 0.1" in r1["status"]
    assert read_video(r2["overlay"]).size == (128, 192) and "s = 0.9" in r2["status"]
    # the user with the bad file can go on with a good one (cheap check: the upload inspection)
    assert "b.mp4" in c3.predict(video=handle_file(str(clips["b"])), api_name="/inspect")


def test_example_clips_fit_the_limit(rt):
    paths = app.example_paths(LIMIT)
    assert len(paths) == 3
    for p in paths:
        assert 2 <= len(read_video(p)) <= LIMIT
