"""Synthetic clips with planted segments (vidseg_nb.synthetic)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vidseg_nb import synthetic, video
from vidseg_nb.synthetic import TEXTURE_RANGE, make_clip


def matches_colour(pixels: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Whether each pixel (M, 3) is ``colour`` times one texture factor in TEXTURE_RANGE (up to rounding)."""
    p = pixels.astype(np.float64)
    c = colour.astype(np.float64)
    lo, hi = TEXTURE_RANGE
    ch = c > 40  # channels large enough for a stable ratio
    ratio = p[:, ch] / c[ch]
    ok = (ratio.min(1) >= lo - 0.02) & (ratio.max(1) <= hi + 0.02) & (np.ptp(ratio, axis=1) < 0.04)
    small = np.abs(p[:, ~ch] - c[~ch] * ratio.mean(1, keepdims=True)).max(1, initial=0) <= 2
    return ok & small


def test_shapes_and_types():
    clip = make_clip(n_frames=5, height=96, width=160, n_objects=4)
    assert clip.frames.shape == (5, 96, 160, 3) and clip.frames.dtype == np.uint8
    assert clip.labels.shape == (5, 96, 160) and clip.labels.dtype == np.int64
    assert clip.n_labels == 5 and clip.colors.shape == (5, 3) and clip.centers.shape == (4, 5, 2)
    assert set(np.unique(clip.labels)) <= set(range(5))
    assert clip.shapes == ("circle", "rect", "triangle", "circle")
    assert len(clip) == 5 and clip.size == (96, 160)
    assert clip.to_clip().frames is clip.frames


def test_deterministic_per_seed():
    a, b, c = make_clip(seed=7), make_clip(seed=7), make_clip(seed=8)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.frames, c.frames)
    assert not np.array_equal(a.labels, c.labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_cover_exactly_the_drawn_shapes(seed):
    clip = make_clip(n_frames=8, height=128, width=128, n_objects=5, seed=seed, speed=4.0)
    frames, labels = clip.frames.reshape(-1, 3), clip.labels.reshape(-1)
    for lab in range(1, clip.n_labels):
        inside = labels == lab
        assert inside.any(), f"object {lab} never visible"
        hit = matches_colour(frames, clip.colors[lab])
        assert hit[inside].all(), (
            f"object {lab}: {np.count_nonzero(~hit[inside])} labelled pixels of another colour"
        )
        assert hit[~inside].mean() < 0.002, f"object {lab}'s colour outside its label region"
    # background: textured, but never any object's colour
    bg = labels == 0
    assert bg.mean() > 0.3
    assert np.abs(frames[bg].mean(0) - clip.colors[0]).max() < 30


def test_later_objects_occlude_earlier_ones():
    clip = make_clip(n_frames=12, height=96, width=96, n_objects=6, seed=4, speed=3.0)
    n, h, w = clip.labels.shape
    overlaps = 0
    for i in range(clip.centers.shape[0]):
        ys = np.clip(np.round(clip.centers[i, :, 0]).astype(int), 0, h - 1)
        xs = np.clip(np.round(clip.centers[i, :, 1]).astype(int), 0, w - 1)
        at_centre = clip.labels[np.arange(n), ys, xs]
        assert (at_centre >= i + 1).all()  # an object's own centre shows it or a later object
        overlaps += int((at_centre > i + 1).sum())
    assert overlaps > 0, "this seed should produce occlusions"


@pytest.mark.parametrize("speed", [2.0, 4.0])
def test_objects_move_by_speed(speed):
    clip = make_clip(n_frames=10, height=256, width=256, n_objects=1, seed=5, speed=speed, shapes=("circle",))
    yy, xx = np.mgrid[0:256, 0:256]
    cent = []
    for t in range(10):
        m = clip.labels[t] == 1
        cent.append((yy[m].mean(), xx[m].mean()))
    cent = np.array(cent)
    np.testing.assert_allclose(cent, clip.centers[0], atol=0.3)
    steps = np.linalg.norm(np.diff(cent, axis=0), axis=1)
    assert np.median(steps) == pytest.approx(speed, abs=0.3)


def test_objects_and_background_are_textured():
    clip = make_clip(n_frames=2, height=128, width=128, n_objects=3, seed=0)
    f = clip.frames[0].astype(np.float64)
    for lab in range(clip.n_labels):
        region = f[clip.labels[0] == lab]
        brightness = region.sum(1) / max(clip.colors[lab].astype(float).sum(), 1)
        assert brightness.std() > 0.05, f"label {lab} is flat"


def test_static_objects_when_speed_is_zero():
    clip = make_clip(n_frames=4, n_objects=2, speed=0.0)
    assert (clip.labels == clip.labels[0]).all()
    assert (clip.frames == clip.frames[0]).all()


def test_objects_bounce_and_stay_inside():
    clip = make_clip(n_frames=80, height=96, width=128, n_objects=3, seed=1, speed=5.0)
    assert (clip.labels[:, [0, -1], :] == 0).all() and (clip.labels[:, :, [0, -1]] == 0).all()
    for t in range(0, 80, 7):
        assert set(np.unique(clip.labels[t])) == {0, 1, 2, 3}  # nothing leaves (occlusion aside)


def test_fast_enough():
    make_clip()  # warm-up
    t0 = time.perf_counter()
    make_clip(n_frames=16, height=256, width=256)
    assert time.perf_counter() - t0 < 1.5  # typically ~0.15 s


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown shape"):
        make_clip(shapes=("hexagon",))
    with pytest.raises(ValueError):
        make_clip(n_frames=0)


def test_save_clip_by_suffix(tmp_path):
    clip = make_clip(n_frames=4, height=64, width=96, n_objects=2)
    for name in ("c.mp4", "c.gif", "frames"):
        p = synthetic.save_clip(clip, tmp_path / name, labels_dir=tmp_path / "labels")
        back = video.read_video(p)
        assert len(back) == 4 and back.size == (64, 96)
    np.testing.assert_array_equal(video.read_video(tmp_path / "frames").frames, clip.frames)
    np.testing.assert_array_equal(video.read_label_png(tmp_path / "labels" / "00003.png"), clip.labels[3])


def test_example_clips(tmp_path):
    paths = synthetic.example_clips(tmp_path)
    assert len(paths) == 3 and all(p.suffix == ".mp4" and p.is_file() for p in paths)
    sizes = {video.probe_video(p)["size"] for p in paths}
    assert sizes == {(256, 256), (256, 448), (448, 256)}
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert synthetic.example_clips(tmp_path) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes  # not rewritten


@pytest.mark.parametrize("batch", [1, 4, 7, 50])
def test_iter_clip_is_make_clip_in_batches(batch):
    kw = dict(n_frames=13, height=72, width=100, n_objects=4, seed=5, speed=6.0)
    whole = make_clip(**kw)
    parts = list(synthetic.iter_clip(**kw, batch=batch))
    assert [len(f) for f, _ in parts] == [min(batch, 13 - a) for a in range(0, 13, batch)]
    np.testing.assert_array_equal(np.concatenate([f for f, _ in parts]), whole.frames)
    np.testing.assert_array_equal(np.concatenate([lab for _, lab in parts]), whole.labels)


def test_save_long_clip_round_trip(tmp_path):
    kw = dict(n_frames=21, height=64, width=96, n_objects=2, seed=2)
    whole = make_clip(**kw)
    p = synthetic.save_long_clip(
        tmp_path / "long.mp4", 21, 64, 96, n_objects=2, seed=2, batch=8, labels_dir=tmp_path / "gt"
    )
    back = video.read_video(p)
    assert len(back) == 21 and back.size == (64, 96)
    assert np.abs(back.frames.astype(np.int16) - whole.frames).mean() < 4.0
    for t in (0, 8, 20):
        np.testing.assert_array_equal(video.read_label_png(tmp_path / "gt" / f"{t:05d}.png"), whole.labels[t])
    assert not (tmp_path / "gt" / "00021.png").exists()
