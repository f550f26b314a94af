"""Reading, sizing and writing clips (vidseg_nb.video)."""

from __future__ import annotations

import re
import subprocess
import time
import warnings
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from vidseg_nb import palette, video
from vidseg_nb.synthetic import make_clip, save_clip
from vidseg_nb.video import VideoError

H, W = 128, 192


@pytest.fixture(scope="module")
def syn():
    return make_clip(n_frames=12, height=H, width=W, n_objects=3, seed=3)


@pytest.fixture(scope="module")
def mp4(syn, tmp_path_factory) -> Path:
    return video.write_video(tmp_path_factory.mktemp("mp4") / "clip.mp4", syn.frames, fps=12)


def ffmpeg_info(path: Path) -> str:
    """ffmpeg's description of a file (stderr of `ffmpeg -i`)."""
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    return subprocess.run([exe, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def top_level_atoms(path: Path) -> list[str]:
    data = path.read_bytes()
    atoms, i = [], 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i : i + 4], "big")
        atoms.append(data[i + 4 : i + 8].decode("latin1"))
        if size == 1:
            size = int.from_bytes(data[i + 8 : i + 16], "big")
        if size < 8:
            break
        i += size
    return atoms


def save_pngs(folder: Path, frames, names=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / (names[i] if names else f"{i:03d}.png"))
    return folder


# ------------------------------------------------------------------------------------------------
# round trips


def test_mp4_round_trip(syn, mp4):
    clip = video.read_video(mp4)
    assert isinstance(clip, video.Clip)
    assert len(clip) == 12 and clip.size == (H, W) and clip.frames.shape == (12, H, W, 3)
    assert clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(12.0)
    assert clip.original_size == (H, W) and not clip.truncated
    err = np.abs(clip.frames.astype(np.int16) - syn.frames).mean()
    assert err < 4.0, f"H.264 round trip mean abs error {err:.2f}"


def test_mp4_is_h264_yuv420p_faststart(mp4):
    info = ffmpeg_info(mp4)
    stream = [ln for ln in info.splitlines() if "Video:" in ln]
    assert stream, info
    assert re.search(r"Video: h264\b", stream[0]), stream[0]
    assert "yuv420p" in stream[0], stream[0]
    atoms = top_level_atoms(mp4)
    assert "moov" in atoms and "mdat" in atoms
    assert atoms.index("moov") < atoms.index("mdat"), f"no faststart: {atoms}"


def test_odd_sizes_padded_to_even(syn, tmp_path):
    frames = syn.frames[:3, :65, :67]
    p = video.write_video(tmp_path / "odd.mp4", frames, fps=10)
    clip = video.read_video(p)
    assert clip.size == (66, 68)
    assert np.abs(clip.frames[:, :65, :67].astype(np.int16) - frames).mean() < 6


def test_webm_written_and_read(syn, tmp_path):
    p = video.write_video(tmp_path / "clip.webm", syn.frames[:4], fps=8)
    assert "Video: vp9" in ffmpeg_info(p)
    clip = video.read_video(p)
    assert len(clip) == 4 and clip.size == (H, W) and clip.fps == pytest.approx(8.0)


def test_gif_round_trip(syn, tmp_path):
    p = save_clip(syn, tmp_path / "clip.gif", fps=10)
    clip = video.read_video(p)
    assert len(clip) == 12 and clip.size == (H, W)
    assert clip.fps == pytest.approx(10.0)
    assert np.abs(clip.frames.astype(np.int16) - syn.frames).mean() < 2.0


def test_png_folder_round_trip_is_exact(syn, tmp_path):
    p = save_clip(syn, tmp_path / "frames")
    clip = video.read_video(p)
    np.testing.assert_array_equal(clip.frames, syn.frames)
    assert clip.fps == video.DEFAULT_FPS


def test_folder_natural_order(tmp_path):
    frames = [np.full((64, 64, 3), v, np.uint8) for v in (10, 20, 30)]
    save_pngs(tmp_path / "f", frames, names=["f1.png", "f2.png", "f10.png"])
    (tmp_path / "f" / "notes.txt").write_text("not a frame")
    clip = video.read_video(tmp_path / "f")
    assert clip.frames[:, 0, 0, 0].tolist() == [10, 20, 30]


def test_rotated_video_is_upright(syn, mp4, tmp_path):
    rot = tmp_path / "rot.mp4"
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    cmd = [exe, "-y", "-v", "error", "-display_rotation", "90", "-i", str(mp4), "-c", "copy", str(rot)]
    if subprocess.run(cmd, capture_output=True).returncode:
        pytest.skip("this ffmpeg cannot write rotation metadata")
    clip = video.read_video(rot)
    assert clip.size == (W, H)  # a phone's vertical clip comes out vertical


def test_unknown_suffix_is_sniffed(syn, mp4, tmp_path):
    odd = tmp_path / "clip.data"
    odd.write_bytes(mp4.read_bytes())
    assert len(video.read_video(odd)) == 12
    with pytest.raises(VideoError, match="limit of 3 frames"):  # not masked by the image fallback
        video.read_video(odd, max_frames=3, too_long="error")
    Image.fromarray(syn.frames[0]).save(tmp_path / "frame.img", format="PNG")
    np.testing.assert_array_equal(video.read_video(tmp_path / "frame.img").frames[0], syn.frames[0])
    (tmp_path / "junk.data").write_text("junk")
    with pytest.raises(VideoError, match="neither a readable video nor an image"):
        video.read_video(tmp_path / "junk.data")


def test_probe(mp4, syn, tmp_path):
    info = video.probe_video(mp4)
    assert info["fps"] == pytest.approx(12.0) and info["size"] == (H, W)
    assert info["n_frames"] == 12
    folder = save_clip(syn, tmp_path / "frames")
    info = video.probe_video(folder)
    assert info == dict(n_frames=12, n_frames_exact=True, fps=10.0, size=(H, W), duration=1.2)


# ------------------------------------------------------------------------------------------------
# bad input: each raises VideoError naming the problem


def test_text_file_renamed_mp4(tmp_path):
    p = tmp_path / "clip.mp4"
    p.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoError, match=r"clip\.mp4: not a readable video .*ffmpeg.*Upload"):
        video.read_video(p)


def test_text_file_renamed_png(tmp_path):
    p = tmp_path / "frame.png"
    p.write_text("hello")
    with pytest.raises(VideoError, match=r"frame\.png: not a readable image"):
        video.read_video(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty\.mp4: the file is empty \(0 bytes\)"):
        video.read_video(p)


def test_missing_path(tmp_path):
    with pytest.raises(VideoError, match=r"nothere\.mp4: no such file or folder"):
        video.read_video(tmp_path / "nothere.mp4")
    with pytest.raises(VideoError, match="no such file"):
        video.probe_video(tmp_path / "nothere.mp4")


def test_zero_frames(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="contains no frames"):
        video.read_video(tmp_path / "empty")
    with pytest.raises(VideoError, match="has no frames"):
        video.read_video([])
    with pytest.raises(VideoError, match="has no frames"):
        video.read_video(np.zeros((0, 64, 64, 3), np.uint8))


def test_min_frames(syn):
    with pytest.raises(VideoError, match=r"only 2 frame\(s\); at least 3 needed"):
        video.read_video(syn.frames[:2], min_frames=3)


def test_single_frame(syn, tmp_path):
    clip = video.read_video(syn.frames[0])  # (H, W, 3)
    assert clip.frames.shape == (1, H, W, 3)
    Image.fromarray(syn.frames[5]).save(tmp_path / "one.png")
    clip = video.read_video(tmp_path / "one.png")
    assert len(clip) == 1
    np.testing.assert_array_equal(clip.frames[0], syn.frames[5])


def test_grayscale_frames_become_rgb(tmp_path):
    gray = np.arange(2 * 64 * 80, dtype=np.uint32).reshape(2, 64, 80) % 251
    clip = video.read_video(gray.astype(np.uint8))  # (N, H, W)
    assert clip.frames.shape == (2, 64, 80, 3)
    for c in range(3):
        np.testing.assert_array_equal(clip.frames[..., c], gray)
    save_pngs(tmp_path / "g", [], None)
    for i in range(2):
        Image.fromarray(gray[i].astype(np.uint8), mode="L").save(tmp_path / "g" / f"{i}.png")
    np.testing.assert_array_equal(video.read_video(tmp_path / "g").frames, clip.frames)


def test_16bit_frames_become_8bit(tmp_path):
    g16 = np.full((64, 64), 257 * 200, np.uint16)
    Image.fromarray(g16).save(tmp_path / "deep.png")
    clip = video.read_video(tmp_path / "deep.png")
    assert clip.frames.dtype == np.uint8 and int(clip.frames.max()) == 200 == int(clip.frames.min())


def test_rgba_composited_over_black(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :20, 3] = 255
    rgba[:, 20:40, 3] = 0
    rgba[:, 40:, 3] = 128
    clip = video.read_video(rgba[None])
    f = clip.frames[0]
    assert f.shape == (64, 64, 3)
    assert f[0, 0].tolist() == [200, 100, 50]
    assert f[0, 30].tolist() == [0, 0, 0]
    assert f[0, 50].tolist() == [100, 50, 25]
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(video.read_video(tmp_path / "a.png").frames[0], f)


def test_float_frames_in_0_1_are_scaled_per_clip():
    frames = np.zeros((2, 64, 64, 3), np.float32)
    frames[0] = 1.0
    frames[1] = 0.5  # a dim frame of the same clip, not a separate 0..255 frame
    clip = video.read_video(frames)
    assert clip.frames[:, 0, 0, 0].tolist() == [255, 128]
    with pytest.raises(VideoError, match="NaN"):
        video.read_video(np.full((1, 64, 64, 3), np.nan, np.float32))


def test_palette_gif_becomes_rgb(tmp_path):
    idx = np.zeros((64, 64), np.uint8)
    idx[:, 32:] = 1
    im = Image.fromarray(idx, mode="P")
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.save(tmp_path / "p.gif")
    f = video.read_video(tmp_path / "p.gif").frames[0]
    assert f[0, 0].tolist() == [255, 0, 0] and f[0, 63].tolist() == [0, 0, 255]


def test_frames_smaller_than_64_px(tmp_path):
    with pytest.raises(VideoError, match=r"minimum is 64 px"):
        video.read_video(np.zeros((3, 48, 100, 3), np.uint8))
    save_pngs(tmp_path / "small", [np.zeros((100, 63, 3), np.uint8)])
    with pytest.raises(VideoError, match=r"small: frames are 63x100 px .*minimum is 64 px"):
        video.read_video(tmp_path / "small")


def test_mismatched_sizes_in_folder(tmp_path):
    frames = [
        np.zeros((64, 64, 3), np.uint8),
        np.zeros((64, 64, 3), np.uint8),
        np.zeros((80, 64, 3), np.uint8),
    ]
    save_pngs(tmp_path / "mix", frames)
    with pytest.raises(VideoError, match=r"002\.png is 64x80 px .*first frame is 64x64.*same size"):
        video.read_video(tmp_path / "mix")


def test_too_long_truncates_with_warning(syn, mp4, tmp_path):
    with pytest.warns(UserWarning, match="more than 5 frames; keeping the first 5"):
        clip = video.read_video(mp4, max_frames=5)
    assert len(clip) == 5 and clip.truncated
    folder = save_clip(syn, tmp_path / "frames")
    with pytest.warns(UserWarning, match="keeping the first 4"):
        clip = video.read_video(folder, max_frames=4)
    assert clip.truncated
    np.testing.assert_array_equal(clip.frames, syn.frames[:4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exactly at the limit: no warning
        clip = video.read_video(folder, max_frames=12)
    assert len(clip) == 12 and not clip.truncated


def test_too_long_refused(syn, mp4, tmp_path):
    with pytest.raises(VideoError, match=r"clip\.mp4: .*more than the limit of 5 frames"):
        video.read_video(mp4, max_frames=5, too_long="error")
    folder = save_clip(syn, tmp_path / "frames")
    with pytest.raises(VideoError, match="limit of 11 frames"):
        video.read_video(folder, max_frames=11, too_long="error")
    assert len(video.read_video(folder, max_frames=12, too_long="error")) == 12


def test_stride_and_max_frames():
    frames = np.zeros((10, 64, 64, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(10)
    clip = video.read_video(frames, stride=3)
    assert clip.frames[:, 0, 0, 0].tolist() == [0, 3, 6, 9]
    assert clip.fps == pytest.approx(video.DEFAULT_FPS / 3)
    with pytest.warns(UserWarning, match=r"more than 2 frames \(with stride=3\)"):
        clip = video.read_video(frames, stride=3, max_frames=2)
    assert clip.frames[:, 0, 0, 0].tolist() == [0, 3] and clip.truncated


def test_stride_on_mp4(mp4):
    clip = video.read_video(mp4, stride=2)
    assert len(clip) == 6 and clip.fps == pytest.approx(6.0)


def test_write_rejects_empty(tmp_path):
    with pytest.raises(VideoError, match="nothing to write"):
        video.write_video(tmp_path / "x.mp4", np.zeros((0, 64, 64, 3), np.uint8))
    with pytest.raises(VideoError, match=r"cannot write '\.xyz'"):
        video.write_video(tmp_path / "x.xyz", np.zeros((1, 64, 64, 3), np.uint8))


# ------------------------------------------------------------------------------------------------
# sizing


@pytest.mark.parametrize(
    ("h", "w", "max_side", "expected"),
    [
        (480, 853, 853, (448, 832)),  # VSPW, features 28x52
        (480, 853, 1024, (448, 832)),
        (853, 480, 853, (832, 448)),  # vertical
        (853, 480, 1024, (832, 448)),
        (480, 854, 512, (256, 512)),
        (854, 480, 512, (512, 256)),
        (1080, 1920, 512, (256, 512)),
        (64, 64, 512, (64, 64)),
        (512, 512, 512, (512, 512)),
        (70, 2000, 512, (64, 512)),  # short side never below 64
    ],
)
def test_target_size(h, w, max_side, expected):
    assert video.target_size(h, w, max_side) == expected
    th, tw = expected
    assert th % 64 == 0 and tw % 64 == 0 and max(th, tw) <= max(max_side, 64)


def test_target_size_too_small():
    with pytest.raises(VideoError, match="minimum is 64 px"):
        video.target_size(63, 500)


def test_prepare_and_resize_frames(syn):
    frames = video.resize_frames(syn.frames[:2], (480, 853))
    assert frames.shape == (2, 480, 853, 3) and frames.dtype == np.uint8
    out = video.prepare_frames(frames, max_side=512)
    assert out.shape == (2, 256, 512, 3) and out.dtype == np.uint8
    assert video.prepare_frames(video.Clip(frames), max_side=853).shape == (2, 448, 832, 3)
    flat = np.full((1, 100, 100, 3), 77, np.uint8)  # resampling keeps a flat colour
    assert (video.resize_frames(flat, (64, 64)) == 77).all()


def test_resize_labels_nearest():
    lab = np.array([[[0, 1], [2, 3]]])
    up = video.resize_labels(lab, (4, 4))
    assert up.dtype == np.int64 and up.shape == (1, 4, 4)
    np.testing.assert_array_equal(up[0], np.kron(lab[0], np.ones((2, 2), int)))
    np.testing.assert_array_equal(video.resize_labels(up, (2, 2)), lab)
    rng = np.random.default_rng(1)
    odd = rng.integers(0, 50, size=(2, 13, 29))
    for size in [(7, 11), (30, 64), (13, 29)]:  # same pixel centres as PIL's NEAREST
        want = [
            np.asarray(Image.fromarray(o.astype(np.uint8)).resize(size[::-1], Image.NEAREST)) for o in odd
        ]
        np.testing.assert_array_equal(video.resize_labels(odd, size), np.stack(want))
    torch = pytest.importorskip("torch")
    t = video.resize_labels(torch.from_numpy(lab), (4, 4))
    assert t.dtype == torch.int64
    np.testing.assert_array_equal(t.numpy(), up)


# ------------------------------------------------------------------------------------------------
# labels and overlays


def test_label_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 256, size=(3, 40, 50))
    labels[0, 0, 0], labels[0, 0, 1] = 0, 255
    paths = video.write_label_pngs(tmp_path / "labels", labels, names=["a", "b", "c.png"])
    assert [p.name for p in paths] == ["a.png", "b.png", "c.png"]
    for p, lab in zip(paths, labels):
        with Image.open(p) as im:
            assert im.mode == "P"
            pal = np.array(im.getpalette()[:768], np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(pal, palette.PALETTE)
        got = video.read_label_png(p)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, lab)


def test_label_png_rejects_ids_outside_0_255(tmp_path):
    with pytest.raises(VideoError, match=r"0\.\.255"):
        video.write_label_pngs(tmp_path, np.full((1, 8, 8), 256))
    with pytest.raises(VideoError, match=r"0\.\.255"):
        video.write_label_pngs(tmp_path, np.full((1, 8, 8), -1))


def test_read_label_png_rejects_rgb(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(VideoError, match="not a label PNG"):
        video.read_label_png(tmp_path / "rgb.png")


def test_overlay_frames_hand_built():
    frames = np.full((1, 4, 4, 3), 100, np.uint8)
    labels = np.array([[[0, 1], [1, 2]]])  # 2x2, resized (nearest) to 4x4
    out = video.overlay_frames(frames, labels, alpha=0.5)
    assert out.shape == (1, 4, 4, 3) and out.dtype == np.uint8
    for (y, x), lab in {(0, 0): 0, (1, 1): 0, (0, 3): 1, (3, 0): 1, (3, 3): 2}.items():
        expected = np.round(0.5 * 100 + 0.5 * palette.PALETTE[lab].astype(float))
        np.testing.assert_array_equal(out[0, y, x], expected)
    np.testing.assert_array_equal(video.overlay_frames(frames, labels, alpha=0.0), frames)


# ------------------------------------------------------------------------------------------------
# lazy reading (open_video / VideoStream)


def test_open_video_knows_length_fps_size_up_front(syn, mp4, tmp_path):
    s = video.open_video(mp4)
    assert s.n_frames == 12 and not s.n_frames_exact and s.fps == pytest.approx(12.0) and s.size == (H, W)
    batches = list(s.batches(5))
    assert [b.shape for b in batches] == [(5, H, W, 3), (5, H, W, 3), (2, H, W, 3)]
    assert all(b.dtype == np.uint8 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), video.read_video(mp4).frames)
    folder = save_clip(syn, tmp_path / "frames")
    s = video.open_video(folder, stride=2, max_frames=4)
    assert s.n_frames == 4 and s.n_frames_exact and s.fps == pytest.approx(video.DEFAULT_FPS / 2)
    with pytest.warns(UserWarning, match="keeping the first 4"):
        got = np.concatenate(list(s.batches(3)))
    np.testing.assert_array_equal(got, syn.frames[0:8:2])
    assert s.truncated


def test_open_video_resumes_at_start(syn, mp4, tmp_path):
    full = video.read_video(mp4).frames
    np.testing.assert_array_equal(np.concatenate(list(video.open_video(mp4).batches(4, start=7))), full[7:])
    arr = video.open_video(syn.frames)
    assert [len(b) for b in arr.batches(4, start=2)] == [4, 4, 2]
    np.testing.assert_array_equal(np.stack(list(arr.frames(start=10))), syn.frames[10:])


def test_folder_frames_are_loaded_one_by_one(syn, tmp_path, monkeypatch):
    folder = save_clip(syn, tmp_path / "frames")
    loaded = []
    real = video.reading._load_frame
    monkeypatch.setattr(video.reading, "_load_frame", lambda p, name: loaded.append(p.name) or real(p, name))
    s = video.open_video(folder)
    assert s.n_frames == 12 and s.size == (H, W) and loaded == ["00000.png"]  # only the first, for the size
    it = s.batches(3)
    first = next(it)
    np.testing.assert_array_equal(first, syn.frames[:3])
    assert len(loaded) == 1 + 3  # nothing beyond the first batch was read
    assert sum(len(b) for b in it) == 9


def test_open_video_checks_at_opening(syn, tmp_path):
    folder = save_clip(syn, tmp_path / "frames")
    with pytest.raises(VideoError, match="limit of 11 frames"):
        video.open_video(folder, max_frames=11, too_long="error")
    with pytest.raises(VideoError, match="no such file"):
        video.open_video(tmp_path / "nope.mp4")
    with pytest.raises(VideoError, match="minimum is 64"):
        video.open_video(np.zeros((3, 32, 32, 3), np.uint8))


# ------------------------------------------------------------------------------------------------
# truncated files


@pytest.fixture(scope="module")
def long_mp4(tmp_path_factory):
    c = make_clip(n_frames=40, height=H, width=W, n_objects=3, seed=4, speed=4.0)
    p = video.write_video(tmp_path_factory.mktemp("long") / "long.mp4", c.frames, fps=10)
    return p, video.read_video(p).frames


def test_truncated_mp4_yields_the_decoded_frames_and_warns(long_mp4, tmp_path):
    path, full = long_mp4
    half = tmp_path / "half.mp4"
    data = path.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    t0 = time.perf_counter()
    s = video.open_video(half)
    assert s.size == (H, W) and s.n_frames == 40  # the container still announces 40
    with pytest.warns(
        video.VideoWarning, match=r"half\.mp4: decoding stopped at frame \d+ of about 40"
    ) as rec:
        got = np.concatenate(list(s.batches(4)))
    msg = [str(r.message) for r in rec if issubclass(r.category, video.VideoWarning)][0]
    k = int(re.search(r"stopped at frame (\d+)", msg).group(1))
    assert 0 < k < 40 and len(got) == k
    np.testing.assert_array_equal(got, full[:k])  # exactly the first frames, no concealed or repeated ones
    with pytest.warns(video.VideoWarning, match=f"stopped at frame {k}"):
        clip = video.read_video(half)
    np.testing.assert_array_equal(clip.frames, full[:k])
    assert time.perf_counter() - t0 < 60  # never a hang


def test_mp4_with_no_decodable_frame_is_an_error(long_mp4, tmp_path):
    path, _ = long_mp4
    stub = tmp_path / "stub.mp4"
    stub.write_bytes(path.read_bytes()[:600])
    with pytest.raises(VideoError, match=r"stub\.mp4: .*(not a readable video|no frame could be decoded)"):
        video.read_video(stub)


# ------------------------------------------------------------------------------------------------
# streaming writers


def test_video_writer_appends_batches(syn, tmp_path):
    p = tmp_path / "out" / "stream.mp4"
    with video.VideoWriter(p, fps=12) as w:
        for a in range(0, 12, 5):
            w.append(syn.frames[a : a + 5])
        assert w.n_written == 12
    clip = video.read_video(p)
    assert len(clip) == 12 and clip.fps == pytest.approx(12.0)
    assert np.abs(clip.frames.astype(np.int16) - syn.frames).mean() < 4.0
    atoms = top_level_atoms(p)  # finished: a plain faststart mp4 again, like write_video's
    assert "moof" not in atoms and atoms.index("moov") < atoms.index("mdat")
    assert "yuv420p" in ffmpeg_info(p) and re.search(r"Video: h264\b", ffmpeg_info(p))
    with pytest.raises(VideoError, match="same size"):
        with video.VideoWriter(tmp_path / "x.mp4") as w:
            w.append(syn.frames[:2])
            w.append(syn.frames[:2, :64])


def test_video_writer_keeps_frames_on_an_exception(syn, tmp_path):
    p = tmp_path / "broken.mp4"
    with pytest.raises(KeyboardInterrupt):
        with video.VideoWriter(p, fps=10) as w:
            w.append(syn.frames[:7])
            raise KeyboardInterrupt
    back = video.read_video(p)
    assert len(back) == 7
    assert np.abs(back.frames.astype(np.int16) - syn.frames[:7]).mean() < 4.0


_WRITER_CHILD = """
import os, sys, time
import numpy as np
from vidseg_nb import video
from vidseg_nb.synthetic import iter_clip
w = video.VideoWriter(sys.argv[1], fps=10)
for frames, _ in iter_clip(int(sys.argv[2]), 64, 96, 2, seed=1, speed=3.0, batch=10):
    w.append(frames)
print("appended", flush=True)
time.sleep(120)  # killed here, never closes the writer
"""


def _children(pid: int) -> list[int]:
    return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _killed_writer(path: Path, n: int, kill_ffmpeg: bool) -> None:
    import os
    import signal
    import sys

    child = subprocess.Popen([sys.executable, "-c", _WRITER_CHILD, str(path), str(n)], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"appended"
        ffmpeg = _children(child.pid)
        assert ffmpeg, "the writer's ffmpeg process was not found"
        if kill_ffmpeg:  # both die at once: only what ffmpeg has written so far is on disk
            deadline, last = time.time() + 30, -1
            while time.time() < deadline:  # let the encoder write what it can
                size = path.stat().st_size if path.exists() else 0
                if size == last and size > 4096:
                    break
                last = size
                time.sleep(0.5)
            for pid in ffmpeg:
                os.kill(pid, signal.SIGKILL)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        if not kill_ffmpeg:  # ffmpeg sees the end of its input and finishes the file
            deadline = time.time() + 30
            while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in ffmpeg):
                time.sleep(0.2)
    finally:
        if child.poll() is None:
            child.kill()


def test_killed_run_leaves_a_readable_video(tmp_path):
    from vidseg_nb.synthetic import make_clip as mk

    src = mk(n_frames=150, height=64, width=96, n_objects=2, seed=1, speed=3.0).frames
    p = tmp_path / "killed.mp4"
    _killed_writer(p, 30, kill_ffmpeg=False)  # the Python process dies, its ffmpeg finishes the file
    back = video.read_video(p)
    assert len(back) == 30
    assert np.abs(back.frames.astype(np.int16) - src[:30]).mean() < 4.0
    p2 = tmp_path / "killed_hard.mp4"
    _killed_writer(p2, 150, kill_ffmpeg=True)  # both die: the fragments written so far are readable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", video.VideoWarning)  # the last fragment may be cut
        back = video.read_video(p2)
    assert 10 <= len(back) < 150
    assert np.abs(back.frames.astype(np.int16) - src[: len(back)]).mean() < 4.0


def test_label_png_writer_continues_at_start(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 20, size=(7, 16, 24))
    d = tmp_path / "labels"
    w = video.LabelPNGWriter(d)
    w.append(labels[:3])
    assert video.LabelPNGWriter.frames_done(d) == 3
    w2 = video.LabelPNGWriter(d, start=video.LabelPNGWriter.frames_done(d))  # a resumed run
    paths = w2.append(labels[3:5]) + w2.append(labels[5]) + w2.append(labels[6:])
    assert [p.name for p in paths] == ["00003.png", "00004.png", "00005.png", "00006.png"]
    assert w2.n_written == 7 and video.LabelPNGWriter.frames_done(d) == 7
    assert sorted(p.name for p in d.iterdir()) == [f"{i:05d}.png" for i in range(7)]  # no temp files left
    for i in range(7):
        np.testing.assert_array_equal(video.read_label_png(d / f"{i:05d}.png"), labels[i])
    assert [p.name for p in video.write_label_pngs(tmp_path / "x", labels[:2], start=40)] == [
        "00040.png",
        "00041.png",
    ]


def test_batches_hold_only_a_few_frames(long_mp4):
    import tracemalloc

    path, full = long_mp4
    frame = full[0].nbytes
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        n = 0
        for b in video.open_video(path).batches(2):
            n += len(b)
        lazy_peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        video.read_video(path)
        eager_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert n == 40
    assert eager_peak > 40 * frame  # the measurement sees the whole clip ...
    assert lazy_peak < (video.reading._HOLD + 2 * 2 + 4) * frame  # ... and the stream holds a few frames only
