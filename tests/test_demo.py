"""The Gradio demo on the tiny random model: the handlers (demo/handlers.py, no browser, no Gradio) called
with one Settings object, the Gradio wrappers of demo/app.py (errors, skips), the app served in-process
and driven with gradio_client, two sessions at once, and bad input.

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
from demo import handlers as H  # noqa: E402
from vidseg_nb import app_support  # noqa: E402
from vidseg_nb.config import SegConfig  # noqa: E402
from vidseg_nb.errors import VideoError, VidSegError  # noqa: E402
from vidseg_nb.palette import colorize  # noqa: E402
from vidseg_nb.synthetic import make_clip, save_clip  # noqa: E402
from vidseg_nb.video import read_label_png, read_video, write_gif  # noqa: E402

LIMIT = 6  # clip-length limit of the test app
DEFAULTS = H.UIDefaults(n_clusters=3, t_m=24, batch_size=4, max_side=64)
KW = dict(
    lam=50.0,
    s=0.7,
    n_clusters=3,
    preset="vidseg",
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
    return H.configure(
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


def settings(path, **kw) -> H.Settings:
    return H.Settings(video=str(path) if path else path, **{**KW, **kw})


def segment(state, path, **kw) -> dict:
    out = H.segment(state, settings(path, **kw))
    assert set(out) == set(H.OUTPUT_NAMES)
    return out


def refilter(state, path, **kw) -> dict:
    out = H.refilter(state, settings(path, **kw))
    assert set(out) <= set(H.OUTPUT_NAMES)
    return out


def result(state):
    """The last result of a session (held by the process, not in the session state)."""
    return H.runtime().work(state).result


def app_kw(**kw) -> dict:
    """The widget keywords of the Gradio wrappers (app.segment_event, ...)."""
    d = {**KW, **kw}
    d["preset_name"] = d.pop("preset")
    return d


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


def is_skip(v) -> bool:  # gr.skip()
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
    assert isinstance(session, H.SessionState)
    r = result(session)
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
        "features F~, PCA",
        "coarse map M^j",
        "refined map M~^j",
        "difference map D_",
        "difference map D~_",
        "(I+)",
        "(I-)",
        "final labels Y",
    ):
        assert any(want in c for c in captions), (want, captions)
    assert all(img.dtype == np.uint8 and img.ndim == 3 for img, _ in seg_a["gallery"])
    assert seg_a["frame"]["maximum"] == 3
    assert seg_a["xt_features"].shape[1:] == (128, 3) and seg_a["xt_labels"].shape[1:] == (128, 3)
    assert "UNet samples" in seg_a["stats"] and "full run" in seg_a["stats"]
    assert "not meaningful" in seg_a["status"]


def test_s_refilters_without_the_unet(seg_a, clips, backbone):
    session = seg_a["state"]
    base = widgets(result(session).config)
    r_before = result(session)
    before = work(backbone)
    out0 = refilter(session, clips["a"], **{**base, "s": 0.0})
    r0 = result(session)
    out1 = refilter(session, clips["a"], **{**base, "s": 1.0})
    r1 = result(session)
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
    np.testing.assert_array_equal(result(session).labels, r_before.labels)
    assert all(v == 0 for v in delta(backbone, before).values())


def test_s_release_without_a_result_does_nothing(rt, clips, backbone):
    before = work(backbone)
    out = refilter(None, clips["a"], s=0.1)
    assert set(out) == {"status"} and "Segment" in out["status"]
    # through the Gradio wrapper: every other output is gr.skip()
    vals = dict(zip(H.OUTPUT_NAMES, app.refilter_event(None, str(clips["a"]), **app_kw(s=0.1))))
    assert all(is_skip(vals[k]) for k in H.OUTPUT_NAMES if k != "status")
    assert delta(backbone, before)["unet_samples"] == 0


def test_s_release_after_moving_lambda_waits_for_segment(seg_a, clips, backbone):
    session = seg_a["state"]
    base = widgets(result(session).config)
    r = result(session)
    before = work(backbone)
    out = refilter(session, clips["a"], **{**base, "lam": base["lam"] + 7, "s": 0.3})
    assert set(out) == {"status"} and "press **Segment**" in out["status"]
    assert result(session) is r and all(v == 0 for v in delta(backbone, before).values())


def test_lambda_reruns_stage3_only(seg_a, clips, backbone):
    session = seg_a["state"]
    base = widgets(result(session).config)
    before = work(backbone)
    out = segment(session, clips["a"], **{**base, "lam": 20.0})
    d = delta(backbone, before)
    r = result(session)
    assert r.config.lam == 20.0
    assert d["unet_samples"] > 0 and d["vae_decodes"] > 0  # stage 3 ran
    assert d["unet_partial_samples"] == 0  # no feature-only forwards
    assert "features" not in r.timings and "coarse maps (stages 1-2)" not in r.timings
    assert "modulation (stage 3)" in r.timings
    assert "stage 3 rerun" in out["stats"]


def test_clusters_rerun_stages_1_to_3_but_not_the_features(seg_a, clips, backbone):
    session = seg_a["state"]
    base = widgets(result(session).config)
    before = work(backbone)
    out = segment(session, clips["a"], **{**base, "n_clusters": 2})
    r = result(session)
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
    out = H.preview(None, settings(clips["b"]))
    d = delta(backbone, before)
    r = result(out["state"])
    assert r.mode == "preview" and r.labels.shape == (5, 128, 192)
    assert d["vae_decodes"] == 0 and d["unet_samples"] == 0 and d["unet_partial_samples"] > 0
    assert "features" in r.timings and "modulation (stage 3)" not in r.timings
    captions = [c for _, c in out["gallery"]]
    assert "final labels Y" in captions and not any(", raw" in c for c in captions)
    assert len(read_video(out["overlay"])) == 5
    # s does nothing to a preview, and says so
    assert "preview" in refilter(out["state"], clips["b"], s=0.2)["status"]


def test_frame_and_xt_events(seg_a):
    session = seg_a["state"]
    g = H.frame_gallery(session, 2)
    assert g[0][1] == "frame 2"
    feat, lab = H.xt(session, 0)  # row 0 % of the height: the top row
    assert feat.shape == lab.shape and lab.shape[1] == 128
    r = result(session)
    rows = lab[:: lab.shape[0] // len(r)]  # one picture row per frame (time runs down)
    np.testing.assert_array_equal(rows, colorize(r.labels[:, 0].astype(np.int64)))
    assert H.frame_gallery(None, 1) is None and H.xt(H.SessionState(), 1) is None
    assert is_skip(app.frame_event(None, 1))
    assert app.frame_event(session, 2)[0][1] == "frame 2"


def test_two_sessions_keep_separate_state(seg_a, clips, backbone, rt):
    s1 = seg_a["state"]
    out2 = segment(None, clips["b"], s=0.5)
    s2 = out2["state"]
    assert s2.id != s1.id and rt.work(s2).segmenter is not rt.work(s1).segmenter
    assert result(s2).labels.shape == (5, 128, 192)
    # session 1 still re-filters its own clip, from its own cache
    before = work(backbone)
    out1 = refilter(s1, clips["a"], **{**widgets(result(s1).config), "s": 0.25})
    assert delta(backbone, before)["unet_samples"] == 0
    assert result(s1).labels.shape == (4, 128, 128)
    assert read_video(out1["overlay"]).size == (128, 128)
    assert result(s2).labels.shape == (5, 128, 192) and result(s2).config.s == 0.5
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
    with pytest.raises(VideoError, match=message):  # the handler: a library error with the message
        segment(None, clips[name])
    with pytest.raises(gr.Error) as e:  # the app: the same message as a gr.Error
        app.segment_event(None, str(clips[name]), **app_kw())
    assert message in e.value.message, e.value.message
    assert "Traceback" not in e.value.message
    with pytest.raises(gr.Error) as e2:  # the upload check says the same at once
        app.inspect_event(str(clips[name]))
    assert message in e2.value.message
    assert all(v == 0 for v in delta(backbone, before).values())


def test_missing_video_and_bad_settings(rt, clips):
    with pytest.raises(gr.Error, match="Upload a video"):
        app.segment_event(None, None, **app_kw())
    with pytest.raises(VidSegError) as e:
        segment(None, clips["a"], t_m=40)
    assert "t_m" in str(e.value)
    with pytest.raises(gr.Error) as e:
        app.segment_event(None, str(clips["a"]), **app_kw(preset="nope"))
    assert "unknown preset" in e.value.message
    assert H.inspect(None) == ""


def test_rgba_gif_is_converted(rt, clips):
    clip = app_support.load_clip(clips["rgba"], rt.limits)
    assert clip.frames.shape == (3, 128, 128, 3)
    assert clip.frames[:, :20, :20].max() == 0  # transparent -> black
    assert "3 frames" in H.inspect(str(clips["rgba"]))
    out = H.preview(None, settings(clips["rgba"]))
    assert len(read_video(out["overlay"])) == 3


def test_pixel_budget_bounds_the_decoded_clip(rt, clips):
    tight = app_support.Limits(max_frames=LIMIT, max_total_pixels=2 * 128 * 128)
    with pytest.raises(VideoError, match="allow at most 2 frames"):
        app_support.load_clip(clips["a"], tight)


def test_old_sessions_drop_their_caches(rt):
    r = H.Runtime("tiny", SegConfig(), app_support.Limits(), H.UIDefaults(), max_cached_sessions=2)
    states = [H.SessionState() for _ in range(3)]
    works = [r.work_for(s) for s in states]
    for s, w in zip(states, works):
        w.cache_valid = True
        r.touch(s)
    assert [w.cache_valid for w in works] == [False, True, True]
    r.touch(states[1])  # used again: now states[2] is the oldest kept
    r.touch(states[0])
    assert [w.cache_valid for w in works] == [False, True, False]
    r.forget(states[0])
    assert r.work(states[0]) is None and r.work(states[1]) is works[1]


def test_preset_sets_lambda_s_batch_and_t_m(rt):
    assert H.preset_values("emerdiff") == (10.0, 1.0, 1, 22)
    assert H.preset_values("svd")[3] == 17  # the paper's SVD setting
    assert H.preset_values("nope") is None
    lam, s, b, t_m = app.preset_event("emerdiff")
    assert (lam["value"], s["value"], b["value"], t_m["value"]) == (10.0, 1.0, 1, 22)
    cfg = app_support.config_from_ui(
        rt.base_config, "emerdiff", lam=10.0, s=1.0, n_clusters=3, t_m=24, batch_size=1, max_side=100
    )
    assert not cfg.refine and not cfg.masked_modulation and cfg.kmeans_n_init == 1
    assert cfg.max_side == 64 and cfg.n_clusters == 3 and cfg.preset == "emerdiff"


def test_max_frames_uses_the_first_frames(rt, clips):
    clip = app_support.load_clip(clips["b"], rt.limits, 3)
    assert len(clip) == 3
    with pytest.raises(VideoError, match="at least 2"):
        app_support.load_clip(clips["b"], rt.limits, 1)


def test_model_that_cannot_be_loaded(rt, clips, tmp_path):
    bad = str(tmp_path / "no-such-model")
    with pytest.raises(gr.Error) as e:
        app.segment_event(None, str(clips["a"]), **app_kw(model_id=bad))
    assert "Could not load the model" in e.value.message and "VIDSEG_MODEL" in e.value.message
    banner = H.banner(bad)
    assert "could not be loaded" in banner and "VIDSEG_MODEL" in banner
    assert "not meaningful" in app.banner_event(None)  # the default (tiny) model
    assert rt.models.peek("tiny") is not None


def test_model_config_is_forwarded_to_load_backbone(monkeypatch, backbone):
    calls = []

    def fake_load(source, **kw):
        calls.append((source, kw))
        return backbone

    monkeypatch.setattr(app_support, "load_backbone", fake_load)
    assert app.parse_args(["--model-config", "/cfg/dir"]).model_config == "/cfg/dir"
    assert app.parse_args([]).model_config is None
    reg = app_support.ModelRegistry(model_config="/cfg/dir")
    assert reg.get("model.safetensors") is backbone
    monkeypatch.setenv(app_support.MODEL_CONFIG_ENV, "/env/cfg")
    assert app_support.ModelRegistry(model_config=app_support.model_config_default()).get("m2") is backbone
    monkeypatch.delenv(app_support.MODEL_CONFIG_ENV)
    app_support.ModelRegistry().get("m3")
    assert calls == [
        ("model.safetensors", {"config": "/cfg/dir"}),
        ("m2", {"config": "/env/cfg"}),
        ("m3", {"config": None}),
    ]


def test_build_app_wiring(rt):
    demo = app.build_app(configure_runtime=False, examples=False)
    fns = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
    for name in ("segment", "preview", "refilter", "frame", "xt", "inspect"):
        assert name in fns, sorted(fns)
    for name in ("segment", "preview"):
        assert (
            fns[name].concurrency_limit == app.device_concurrency() and fns[name].concurrency_id == "device"
        )
    assert demo._queue.max_size == app.QUEUE_SIZE
    text = " ".join(str(getattr(b, "value", "")) for b in demo.blocks.values())
    assert f"2–{LIMIT} frames" in text and "4096 px" in text and "not meaningful" in text


def test_device_concurrency_allows_zerogpu_parallelism(monkeypatch):
    monkeypatch.delenv("VIDSEG_DEMO_CONCURRENCY", raising=False)
    assert app.device_concurrency(zero_gpu=True) == 4  # a GPU per call: several side by side
    assert app.device_concurrency(zero_gpu=False) == 2  # one device step (the lock), one CPU part
    monkeypatch.setenv("VIDSEG_DEMO_CONCURRENCY", "3")
    assert app.device_concurrency(zero_gpu=False) == 3
    if not app.ZERO_GPU:
        assert app.DEVICE_FN is None  # off ZeroGPU the handlers' lock guards the device step


def test_one_device_step_at_a_time_off_zerogpu(rt, clips, monkeypatch):
    """Without ZeroGPU two sessions' device steps never overlap (the one lock), their results both come."""
    import threading
    import time

    active, most = [0], [0]
    guard = threading.Lock()
    real = H.segment_on_device

    def counted(*args):
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            time.sleep(0.3)  # widen the window a second run could enter
            return real(*args)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(rt, "device_fn", None)
    monkeypatch.setattr(H, "segment_on_device", counted)
    outs: dict[str, dict] = {}
    threads = [
        threading.Thread(target=lambda k=k: outs.__setitem__(k, segment(None, clips[k], lam=33.0)))
        for k in ("a", "b")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sorted(outs) == ["a", "b"] and most[0] == 1


def test_session_state_is_small_and_picklable(seg_a, rt):
    import pickle

    state = seg_a["state"]
    blob = pickle.dumps(state)
    assert len(blob) < 8_000, len(blob)  # ids, signatures and a config: no frames, no cache
    s = pickle.loads(blob)
    assert s == state and rt.work(s) is rt.work(state)  # the process still holds its stage cache
    assert result(s).labels.shape == (4, 128, 128)
    assert rt.work(state).segmenter.backbone is None  # the shared backbone is attached per job only


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


API_KW = {**{k: v for k, v in app_kw().items() if k != "model_id"}, "max_frames": LIMIT}


def _api(result) -> dict:
    """The API outputs of /segment, /refilter, /preview (all outputs but the state)."""
    names = [n for n in H.OUTPUT_NAMES if n != "state"]
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
    assert captions[0] == "frame 0" and "final labels Y" in captions
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
    paths = H.example_paths(LIMIT)
    assert len(paths) == 3
    for p in paths:
        assert 2 <= len(read_video(p)) <= LIMIT


def test_toy_model_gets_toy_world_examples(tmp_path):
    """On the toy model the examples are toy-world clips (its training distribution, seeds that are neither
    training nor evaluation seeds), 16 frames at 256 px; on other models the synthetic clips."""
    from vidseg_nb.toy import EVAL_SEEDS, EXAMPLES, make_toy_clip, model_path
    from vidseg_nb.toy.world import TRAIN_SEEDS

    assert H.is_toy_source("toy") and H.is_toy_source(" TOY ") and H.is_toy_source(str(model_path()))
    assert not H.is_toy_source("tiny") and not H.is_toy_source("stabilityai/stable-diffusion-2-1-base")
    toy = H.example_paths(32, tmp_path / "t", toy=True)
    other = H.example_paths(32, tmp_path / "o", toy=False)
    assert [Path(p).name for p in toy] == [name for name, _ in EXAMPLES]
    assert not {Path(p).name for p in toy} & {Path(p).name for p in other}
    for (_, kw), p in zip(EXAMPLES, toy, strict=True):
        assert kw["seed"] not in EVAL_SEEDS and kw["seed"] not in TRAIN_SEEDS
        clip = read_video(p)
        assert len(clip) == 16 and clip.size == (256, 256)
        want = make_toy_clip(kw["seed"], kw["n_frames"], kw["size"], kw["n_objects"], speed=kw["speed"])
        # the mp4 is the seeded clip (lossy codec: close, not equal)
        assert np.abs(clip.frames[0].astype(int) - want.frames[0].astype(int)).mean() < 12
    trimmed = H.example_paths(8, tmp_path / "t", toy=True)
    assert all(len(read_video(p)) == 8 for p in trimmed)


# ----------------------------------------------------------------------------------------- ZeroGPU
@pytest.fixture
def one_thread():
    """One torch thread in the parent too, while a test forks: the forked worker runs single-threaded
    (libgomp's pool is not fork-safe), and the parent's comparison runs must use the same reductions to be
    bit-identical."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class FakeGPU:
    """Like ``spaces.GPU(duration=...)``: each call asks ``duration(*args)``, pickles the arguments into
    a forked worker, runs the function there and pickles its result back; records the bytes moved."""

    def __init__(self, duration):
        self.duration = duration
        self.calls: list[dict] = []

    def __call__(self, fn):
        import multiprocessing
        import pickle

        def wrapper(*args):
            seconds = self.duration(*args)
            blob = pickle.dumps(args)
            ctx = multiprocessing.get_context("fork")
            recv, send = ctx.Pipe(duplex=False)

            def child():
                # a forked child must not use the parent's OpenMP thread pool (libgomp is not fork-safe:
                # it deadlocks); ZeroGPU's worker is a fresh process for its CPU side too
                import torch

                torch.set_num_threads(1)
                try:
                    send.send_bytes(pickle.dumps(("ok", fn(*pickle.loads(blob)))))
                except BaseException as e:  # noqa: BLE001 - handed to the parent
                    send.send_bytes(pickle.dumps(("error", repr(e))))

            proc = ctx.Process(target=child)
            proc.start()
            if not recv.poll(600):  # never hang the suite
                proc.kill()
                raise AssertionError("the forked device step did not answer within 600 s")
            back = recv.recv_bytes()
            proc.join(60)
            kind, value = pickle.loads(back)
            assert kind == "ok", value
            self.calls.append(dict(duration=seconds, args_bytes=len(blob), result_bytes=len(back)))
            return value

        return wrapper


def _same_result(got, want) -> None:
    """Two SegmentationResults carry the same arrays: Y, M^j, M~^j, every kept detail, the features F~."""
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.coarse_before, want.coarse_before)
    np.testing.assert_array_equal(got.coarse_after, want.coarse_after)
    assert (got.size, got.original_size, got.mode) == (want.size, want.original_size, want.mode)
    assert sorted(got.details) == sorted(want.details)
    for i, d in got.details.items():
        w = want.details[i]
        np.testing.assert_array_equal(d.frame, w.frame)
        np.testing.assert_array_equal(d.final, w.final)
        np.testing.assert_array_equal(d.coarse_after, w.coarse_after)
        assert sorted(d.features) == sorted(w.features)
        for blk in d.features:
            np.testing.assert_array_equal(d.features[blk], w.features[blk])
        assert (d.diff is None) == (w.diff is None) and (d.filtered is None) == (w.filtered is None)
        if d.diff is not None:
            np.testing.assert_array_equal(d.diff.raw, w.diff.raw)
            np.testing.assert_array_equal(d.diff.plus, w.diff.plus)
            np.testing.assert_array_equal(d.filtered, w.filtered)
    assert (got.features is None) == (want.features is None)
    if got.features is not None:
        np.testing.assert_array_equal(got.features.aggregated.numpy(), want.features.aggregated.numpy())


def test_device_step_through_a_forking_fake_spaces_gpu(rt, clips, backbone, monkeypatch, one_thread):
    """issue 14: only frames, config and the stage entries a run reads go in; arrays and new entries come
    back; the session's segmenter never crosses; an s change never calls the device function."""
    import pickle

    from vidseg_nb.pipeline import VideoSegmenter

    fake = FakeGPU(H.gpu_duration)
    monkeypatch.setattr(rt, "device_fn", fake(H.segment_on_device))
    sent: list[tuple] = []
    real = H.segment_on_device
    monkeypatch.setattr(H, "segment_on_device", lambda *a: sent.append(a) or real(*a))  # must not be used
    out = segment(None, clips["a"], s=0.6, lam=40.0)
    state = out["state"]
    work = rt.work(state)
    assert len(fake.calls) == 1
    r = result(state)
    # the parent's reconstruction is the in-process result (same clip, config, seed), detail for detail
    want = VideoSegmenter(backbone, r.config).segment(work.clip, keep=work.kept, progress=False)
    _same_result(r, want)
    assert r.work["unet_samples"] > 0  # counted in the worker, brought back with the result
    # the worker's entries are now the parent's cache: F~, (M^j, M~^j) and D_l of this run
    have = work.segmenter.export_stages(work.clip, r.config, "full")
    assert (len(have.features), len(have.coarse), len(have.diffs)) == (1, 1, 1)
    # s and settings seen before never enter the device function
    assert "Re-filtered" in refilter(state, clips["a"], s=0.2, lam=40.0)["status"]
    assert "re-filter only" in segment(state, clips["a"], s=0.6, lam=40.0)["stats"]
    assert len(fake.calls) == 1
    # a new lambda does (stage 3), handed the parent's cached features and coarse maps, not its D_l
    out = segment(state, clips["a"], s=0.6, lam=20.0)
    assert len(fake.calls) == 2 and "stage 3 rerun" in out["stats"]
    r2 = result(state)
    _same_result(r2, VideoSegmenter(backbone, r2.config).segment(work.clip, keep=work.kept, progress=False))
    have2 = work.segmenter.export_stages(work.clip, r2.config, "full")
    assert have2.features == have.features and len(work.segmenter.cache.entry.diffs) == 2
    weights = sum(p.numel() * p.element_size() for p in backbone.unet.parameters())
    entries_in = len(pickle.dumps((have.features, have.coarse)))
    for c in fake.calls:
        assert 60 <= c["duration"] <= 900
        assert c["args_bytes"] < weights  # no model inside: it stays loaded in the parent
    # first run: frames + config + no entries; the lambda rerun: plus F~ and the coarse maps, no more
    frames_bytes = work.clip.frames.nbytes
    # back: the new entries, Y, M^j, M~^j and the kept frames' uint8 Y, nothing twice
    arrays = r.labels.nbytes + 2 * r.coarse_before.nbytes + sum(d.final.size for d in r.details.values())
    # and the first batch's cross-attention queries (the demo records them when the model has a text
    # encoder, so a later vocabulary renames without a GPU call; issue 13)
    arrays += len(pickle.dumps(r.name_queries)) if r.name_queries else 0
    assert fake.calls[0]["result_bytes"] < len(pickle.dumps(have)) + arrays + 20_000
    assert fake.calls[0]["args_bytes"] < frames_bytes + 20_000
    assert fake.calls[1]["args_bytes"] < frames_bytes + entries_in + 20_000
    assert not sent  # the in-process (locked) path was not taken
    print(
        "bytes pickled per device call (args, result):",
        [(c["args_bytes"], c["result_bytes"]) for c in fake.calls],
    )


def test_preview_then_full_through_the_fake_gpu(rt, clips, backbone, monkeypatch, one_thread):
    """A preview's features cross back; the full run after it is handed them and computes stage 3."""
    from vidseg_nb.pipeline import VideoSegmenter

    fake = FakeGPU(H.gpu_duration)
    monkeypatch.setattr(rt, "device_fn", fake(H.segment_on_device))
    out = H.preview(None, settings(clips["b"], lam=30.0))
    state = out["state"]
    work = rt.work(state)
    r = result(state)
    want = VideoSegmenter(backbone, r.config).segment(
        work.clip, mode="preview", keep=work.kept, progress=False
    )
    _same_result(r, want)
    segment(state, clips["b"], lam=30.0)
    r2 = result(state)
    assert len(fake.calls) == 2 and r2.mode == "full"
    _same_result(r2, VideoSegmenter(backbone, r2.config).segment(work.clip, keep=work.kept, progress=False))


def test_stage_entries_move_a_cache_between_segmenters(rt, clips, backbone):
    """export_stages -> pickle -> import_stages: a fresh segmenter serves the run from the cache alone."""
    import pickle

    from vidseg_nb.pipeline import VideoSegmenter

    clip = read_video(clips["a"])
    cfg = rt.base_config.replace(n_clusters=3, t_m=24, batch_size=4, max_side=64)
    a = VideoSegmenter(backbone, cfg)
    assert len(a.export_stages(clip, cfg, "full")) == 0  # nothing cached yet
    want = a.segment(clip, keep="all", progress=False)
    entries = pickle.loads(pickle.dumps(a.export_stages(clip, cfg, "full")))
    assert (len(entries.features), len(entries.coarse), len(entries.diffs)) == (1, 1, 1)
    assert len(a.export_stages(clip, cfg, "preview").diffs) == 0  # a preview reads no D_l
    b = VideoSegmenter(backbone, cfg)
    assert b.import_stages(clip, entries) == 3
    assert b.import_stages(clip, entries) == 0  # nothing replaced
    got = b.segment(clip, keep="all", progress=False)
    assert got.computed == ("filter",) and got.work["unet_samples"] == 0
    _same_result(got, want)
    # a new lambda reads the features and coarse maps only
    lam = a.export_stages(clip, cfg.replace(lam=10.0), "full")
    assert (len(lam.features), len(lam.coarse), len(lam.diffs)) == (1, 1, 0)
    assert len(entries.without(lam)) == 1 and entries.without(entries).keys() == set()
    other = read_video(clips["b"])
    with pytest.raises(ValueError, match="another clip"):
        b.import_stages(other, entries)


def test_gpu_request_grows_with_frames_labels_and_steps(rt):
    cfg = SegConfig(n_clusters=10, t_m=22, max_side=512)
    # per frame: 2 (CFG) x 3 steps x (1 reference run + 2 x 10 modulated runs)
    assert app_support.unet_samples(4, cfg) == 4 * 2 * 3 * 21
    assert app_support.unet_samples(4, cfg, "preview") == 4 * 2 * 3
    small = app_support.estimate_seconds(8, cfg)
    assert app_support.estimate_seconds(16, cfg) > small
    assert app_support.estimate_seconds(8, cfg.replace(n_clusters=20)) > small
    assert app_support.estimate_seconds(8, cfg.replace(t_m=20)) > small
    clip = app_support.Clip(frames=np.zeros((48, 64, 64, 3), np.uint8), fps=10.0, source="x")
    big = cfg.replace(n_clusters=20)
    f = clip.frames
    assert H.gpu_duration("m", f, big, "full", [], None) == int(1.5 * (20 + 48 * 6 * 41 * 0.02))
    assert H.gpu_duration("m", f, big.replace(max_side=1024), "full", [], None) == 900  # capped
    assert H.gpu_duration("m", f, cfg, "preview", [], None) == 60  # at least a minute


# ----------------------------------------------------------------------------------------- issue 22, item 5
def test_s_with_names_keeps_the_names_and_runs_no_unet(rt, clips, backbone):
    """Moving s after a segmentation with Names re-filters with the cached D_l and keeps the names (the
    recorded cross-attention queries carry over): no error, zero UNet samples."""
    words = "person, dog, grass"
    out = segment(None, clips["a"], names=words)
    state = out["state"]
    assert result(state).names and out["legend"]
    base = widgets(result(state).config)
    before = work(backbone)
    out2 = refilter(state, clips["a"], **{**base, "s": 0.2}, names=words)
    assert all(v == 0 for v in delta(backbone, before).values()), delta(backbone, before)
    assert "Re-filtered" in out2["status"] and out2["legend"]
    r = result(state)
    assert r.config.s == 0.2 and r.names and r.vocabulary == ("person", "dog", "grass")
    assert r.name_queries is not None
    # through the Gradio wrapper too: no gr.Error
    vals = app.refilter_event(state, str(clips["a"]), **app_kw(**{**base, "s": 0.4}), names=words)
    assert dict(zip(H.OUTPUT_NAMES, vals))["legend"]
    assert all(v == 0 for v in delta(backbone, before).values())


def test_segment_reports_unet_samples_per_stage_inside_a_batch(rt, clips, monkeypatch):
    """The demo reads the one progress source (vidseg_nb.progress): UNet samples of each stage, with an
    ETA, while the batch runs (not a bar that jumps at its end)."""
    monkeypatch.setattr(H, "PROGRESS_EVERY_S", 0.0)  # every update (the tiny model is fast)
    calls: list[tuple[float, str]] = []
    H.segment(None, settings(clips["b"], lam=33.0), lambda f, d: calls.append((f, d)))
    inside = [(f, d) for f, d in calls if "UNet samples" in d]
    assert any("stage 0" in d for _, d in inside) and any("stage 3, modulation" in d for _, d in inside)
    assert any(0 < f < 1 and "left" in d for f, d in inside), inside


def test_one_progress_display_per_run(rt):
    """Segment / Preview / s draw their progress on the status line only, not on all 10 outputs."""
    demo = app.build_app(configure_runtime=False, examples=False)
    status = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "status")
    fns = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
    for name in ("segment", "preview", "refilter"):
        assert [b._id for b in fns[name].show_progress_on or []] == [status._id], name
        assert len(fns[name].outputs) > 5


def test_one_space_header_read_from_the_readme():
    """The Space's YAML header is written once, in README.md's front matter; the app reads it."""
    import yaml

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith(app.SPACE_HEADER) and app.SPACE_HEADER.count("---") == 2
    meta = yaml.safe_load(app.SPACE_HEADER.strip().strip("-"))
    assert meta["app_file"] == "demo/app.py" and meta["sdk"] == "gradio"
    assert meta["sdk_version"] == gr.__version__ and meta["python_version"] == "3.10.13"
    assert "3.11" not in Path(app.__file__).read_text()  # no second copy of the header in the app


def test_examples_cache_folder_has_a_stable_name(rt, monkeypatch):
    monkeypatch.setattr(rt, "cache_examples", True)
    monkeypatch.delenv("GRADIO_EXAMPLES_CACHE", raising=False)
    folders = []
    for _ in range(2):
        demo = app.build_app(configure_runtime=False, examples=True)
        folders.append(Path(demo.vidseg_examples.cached_folder))
    assert folders[0] == folders[1] and folders[0].name == "examples"
    assert folders[0].parent == H.examples_cache_dir(rt) and folders[0].is_relative_to(rt.workdir)


def test_legend_says_why_a_segment_is_unnamed():
    from types import SimpleNamespace

    from vidseg_nb.names import DEFAULT_MARGIN, UNNAMED, ClusterName

    names = {0: ClusterName("dog", 1.6, 0.5, "dog"), 1: ClusterName(UNNAMED, 1.23, 0.04, "person")}
    r = SimpleNamespace(names=names, labels=np.array([[0, 1]]), is_random_model=False)
    html = H.names_legend(r)
    assert f"unnamed (best: person 1.23, lead 0.04 &lt; {DEFAULT_MARGIN:.2f})" in html
    assert "needs a lead of" in html and "over the second best" in html
    named = SimpleNamespace(names={0: names[0]}, labels=np.array([[0]]), is_random_model=False)
    assert "needs a lead" not in H.names_legend(named)  # no note without an unnamed segment


def test_error_toasts_say_what_failed(rt, clips):
    """One gr.Error per failure, its title naming what failed (not the bare word "Error")."""
    cases = [
        (lambda: app.inspect_event(str(clips["text"])), "Upload refused: not a usable video"),
        (lambda: app.segment_event(None, None, **app_kw()), "Segment: no video yet"),
        (lambda: app.segment_event(None, str(clips["a"]), **app_kw(preset="nope")), "Segment refused"),
        (lambda: app.preview_event(None, str(clips["wide"]), **app_kw()), "Preview refused"),
    ]
    for call, title in cases:
        with pytest.raises(gr.Error) as e:
            call()
        assert e.value.title.startswith(title) and e.value.title != "Error", e.value.title
        assert e.value.message.startswith(f"<strong>{title}")  # Gradio 6 shows "Error" as the toast title
    msg, title, known = H.error_toast(RuntimeError("boom <b>"), "Segment")
    assert not known and title == "Segment failed: unexpected error" and "&lt;b&gt;" in msg


def test_failed_upload_or_run_clears_the_stale_result(seg_a, rt):
    """A failed Segment / Preview / upload runs clear_event: no previous overlay, gallery, zip or legend."""
    demo = app.build_app(configure_runtime=False, examples=False)
    fns = demo.fns
    clears = [f for f in fns.values() if f.fn is app.clear_event]
    assert len(clears) == 3 and all(f.trigger_only_on_failure for f in clears)
    after = {fns[f.trigger_after].api_name for f in clears}
    assert after == {"segment", "preview", "inspect"}, after
    vals = dict(zip(H.OUTPUT_NAMES[1:], app.clear_event()))
    assert vals["overlay"] is None and vals["labels"] is None and vals["gallery"] == []
    assert vals["legend"] == "" and vals["stats"] == "" and vals["zip"] is None
    assert all(is_skip(vals[k]) for k in ("frame", "status"))  # the status keeps the error's line


def test_upload_preview_and_a_compact_zip(rt, clips):
    prev = app.upload_preview_event(str(clips["rgba"]))
    assert prev["visible"] and prev["value"].endswith(".mp4")
    assert len(read_video(prev["value"])) == 3  # a gif becomes a playable mp4 of its frames
    assert app.upload_preview_event(str(clips["a"]))["value"] == str(clips["a"])  # an mp4 plays as it is
    assert app.upload_preview_event(None)["visible"] is False
    demo = app.build_app(configure_runtime=False, examples=False)
    zip_box = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "zip")
    assert isinstance(zip_box, gr.DownloadButton)  # one compact button, not an empty tall file box


def test_gallery_captions_in_words_and_a_glossary(seg_a, rt):
    captions = [c for _, c in seg_a["gallery"]]
    assert all(c[0].isalpha() and c[0].islower() for c in captions), captions  # words first
    assert "difference map D_" in " ".join(captions) and not any(
        c.startswith(("D", "M", "I")) for c in captions
    )
    assert "white-space: normal" in app.CSS and "caption" in app.CSS  # captions wrap, never "..."
    g = H.glossary()
    for sym in ("F~", "M^j", "M~^j", "D_l", "D~_l", "t_m", "lambda", "| s |"):
        assert sym in g, sym
    demo = app.build_app(configure_runtime=False, examples=False)
    box = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "glossary")
    assert box.value == g and g in (ROOT / "README.md").read_text(encoding="utf-8")
