"""Issue 22: ``vidseg segment --first-frame-mask MASK.png --gt DIR`` (follow objects from the command line).

- the object PNGs ``OUT_objects/`` equal the library's ``object_masks(objects_from_mask(...))`` of the same
  segmentation, ``OUT_objects.mp4`` has every frame, and the J&F printed per object and as the mean are
  ``prompts.j_and_f`` of those masks against the annotations;
- ``--gt`` alone takes its first PNG as the mask;
- interrupted and resumed (``--resume``): the object PNGs and video equal an uninterrupted run's, and a
  resume with another mask, or of a run without one, is refused in one line;
- bad masks (missing, wrong size, no object, unreadable) and a missing ``--gt`` folder give one error line
  naming the flag, exit 2, no traceback, before any model work;
- clip errors (missing, not a video, empty folder) say what to give on the command line, not the demo's
  "Upload ...".
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from vidseg_nb import cli, loading
from vidseg_nb.config import SegConfig
from vidseg_nb.pipeline import VideoSegmenter
from vidseg_nb.prompts import davis_png, j_and_f, object_masks, objects_from_mask, read_annotations
from vidseg_nb.synthetic import make_clip, save_clip
from vidseg_nb.video import read_video

CLI_FAST = ["--model", "tiny", "--device", "cpu", "--max-side", "64", "--clusters", "4", "--batch-size", "2"]
CLI_FAST += ["--preview", "--quiet"]
CONFIG = SegConfig(max_side=64, n_clusters=4, batch_size=2, modulation=False)


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("objects")
    clip = make_clip(n_frames=5, height=70, width=90, n_objects=2, seed=3)
    frames = save_clip(clip, d / "frames")  # a folder of PNG frames: lossless
    gt = d / "gt"
    davis_png(clip.labels.astype(np.uint8), gt)
    return clip, frames, gt


def _run(*argv) -> int:
    return cli.main(["segment", *map(str, argv), *CLI_FAST])


def test_first_frame_mask_and_gt(data, tiny, tmp_path, capsys) -> None:
    clip, frames, gt = data
    out = tmp_path / "seg.mp4"
    assert _run(frames, "-o", out, "--first-frame-mask", gt / "00000.png", "--gt", gt) == 0
    text = capsys.readouterr().out
    got = read_annotations(tmp_path / "seg_objects")
    res = VideoSegmenter(tiny, CONFIG, cache_frames=0).segment(clip.frames, keep=None, progress=False)
    want = object_masks(res, objects_from_mask(res, clip.labels[0]))
    np.testing.assert_array_equal(got, want)
    video = read_video(tmp_path / "seg_objects.mp4").frames
    assert video.shape == (5, 70, 90, 3)
    score = j_and_f(want, clip.labels)
    for k in (1, 2):
        j, f = score["J_objects"][k - 1], score["F_objects"][k - 1]
        assert f"object {k}: J {j:.3f}  F {f:.3f}  J&F {(j + f) / 2:.3f}" in text
    assert re.search(rf"mean over 2 object\(s\), 5 frames: .*J&F {score['J&F']:.3f}", text)

    # --gt alone: its first PNG is the mask, the same objects
    out2 = tmp_path / "b" / "seg.mp4"
    assert _run(frames, "-o", out2, "--gt", gt) == 0
    np.testing.assert_array_equal(read_annotations(tmp_path / "b" / "seg_objects"), want)


def test_whole_clip_path_follows_objects_too(data, tiny, tmp_path, capsys) -> None:
    """The authors' overlapping last batch goes whole through segment(): the same objects output."""
    clip, frames, gt = data
    out = tmp_path / "seg.mp4"
    assert _run(frames, "-o", out, "--gt", gt, "--shifted-last-batch") == 0
    assert "mean over 2 object(s), 5 frames" in capsys.readouterr().out
    config = CONFIG.replace(shifted_last_batch=True)
    res = VideoSegmenter(tiny, config).segment(clip.frames, keep=None, progress=False)
    want = object_masks(res, objects_from_mask(res, clip.labels[0]))
    np.testing.assert_array_equal(read_annotations(tmp_path / "seg_objects"), want)
    assert len(read_video(tmp_path / "seg_objects.mp4").frames) == 5


def test_resume_follows_the_same_objects(data, tmp_path, monkeypatch, capsys) -> None:
    clip, frames, gt = data
    mask = gt / "00000.png"
    ref = tmp_path / "ref" / "seg.mp4"
    assert _run(frames, "-o", ref, "--first-frame-mask", mask) == 0
    real_ckpt = cli._save_checkpoint
    calls = []

    def ckpt(*a):
        real_ckpt(*a)
        calls.append(1)
        if len(calls) == 2:
            raise _Stop

    out = tmp_path / "run" / "seg.mp4"
    monkeypatch.setattr(cli, "_save_checkpoint", ckpt)
    with pytest.raises(_Stop):
        _run(frames, "-o", out, "--first-frame-mask", mask)
    monkeypatch.setattr(cli, "_save_checkpoint", real_ckpt)
    assert len(list((out.parent / "seg_objects").glob("*.png"))) == 4

    other = tmp_path / "other.png"  # another mask: object 2 only
    davis_png(np.where(clip.labels[0] == 2, 2, 0).astype(np.uint8), tmp_path / "o")
    (tmp_path / "o" / "00000.png").rename(other)
    capsys.readouterr()
    assert _run(frames, "-o", out, "--first-frame-mask", other, "--resume") == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "another first-frame mask" in err and "Traceback" not in err

    assert _run(frames, "-o", out, "--first-frame-mask", mask, "--resume") == 0
    assert "resumed at frame 4" in capsys.readouterr().out
    np.testing.assert_array_equal(
        read_annotations(out.parent / "seg_objects"), read_annotations(ref.parent / "seg_objects")
    )
    a = read_video(out.with_name("seg_objects.mp4")).frames
    b = read_video(ref.with_name("seg_objects.mp4")).frames
    assert len(a) == len(b) == 5
    np.testing.assert_array_equal(a, b)


def test_resume_of_a_run_without_a_mask_is_refused(data, tmp_path, monkeypatch, capsys) -> None:
    _, frames, gt = data

    def ckpt(*a):
        real(*a)
        raise _Stop

    real = cli._save_checkpoint
    out = tmp_path / "seg.mp4"
    monkeypatch.setattr(cli, "_save_checkpoint", ckpt)
    with pytest.raises(_Stop):
        _run(frames, "-o", out)
    monkeypatch.setattr(cli, "_save_checkpoint", real)
    capsys.readouterr()
    assert _run(frames, "-o", out, "--first-frame-mask", gt / "00000.png", "--resume") == 2
    assert "had no --first-frame-mask" in capsys.readouterr().err


def _bad(tmp_path):
    wrong = tmp_path / "wrong.png"
    davis_png(np.ones((35, 45), np.uint8), tmp_path / "w")
    (tmp_path / "w" / "00000.png").rename(wrong)
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((70, 90), np.uint8)).save(empty)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"no png")
    short = tmp_path / "short"
    davis_png(np.ones((2, 70, 90), np.uint8), short)
    return [
        (["--first-frame-mask", tmp_path / "missing.png"], "--first-frame-mask .*missing.png: no such file"),
        (["--first-frame-mask", wrong], "is 45x35 pixels but the clip's frames are 90x70"),
        (["--first-frame-mask", empty], "has no object"),
        (["--first-frame-mask", junk], "--first-frame-mask .*junk.png: not a readable PNG"),
        (["--gt", tmp_path / "nowhere"], "--gt .*nowhere: no such folder"),
        (["--gt", short], "--gt .*short: 2 annotation PNGs for a clip of 5 frames"),
    ]


@pytest.mark.parametrize("case", range(6))
def test_bad_masks_give_one_line_before_any_model_work(data, tmp_path, monkeypatch, capsys, case) -> None:
    _, frames, _ = data
    flags, words = _bad(tmp_path)[case]
    monkeypatch.setattr(loading, "load_backbone", lambda *a, **k: pytest.fail("model loaded"))
    assert _run(frames, "-o", tmp_path / "seg.mp4", *flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vidseg segment: error: ")
    assert re.search(words, err), err
    assert not (tmp_path / "seg_objects").exists()


# --------------------------------------------------------------------------------------------------
# clip errors in command-line words (not the demo's "Upload ...")
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["missing", "not a video", "empty folder"])
def test_clip_errors_say_cli_words(tmp_path, monkeypatch, capsys, kind) -> None:
    clip = tmp_path / "clip.mp4"
    if kind == "not a video":
        clip.write_bytes(b"this is no video at all" * 10)
    elif kind == "empty folder":
        clip = tmp_path / "frames"
        clip.mkdir()
    monkeypatch.setattr(loading, "load_backbone", lambda *a, **k: pytest.fail("model loaded"))
    assert cli.main(["segment", str(clip), "-o", str(tmp_path / "seg.mp4"), *CLI_FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vidseg segment: error: ")
    assert "Upload" not in err and cli.CLI_WHAT_TO_GIVE in err, err
