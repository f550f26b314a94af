"""The one progress source (vidseg_nb.progress, issue 22): UNet samples done of those planned, per stage,
inside a batch, with an ETA; the CLI's bar and the demo read it."""

from __future__ import annotations

import numpy as np

from vidseg_nb import cli, progress
from vidseg_nb.config import SegConfig
from vidseg_nb.pipeline import VideoSegmenter
from vidseg_nb.synthetic import make_clip

CFG = dict(n_clusters=3, t_m=23, batch_size=3, max_side=64, kmeans_n_init=1)


def test_samples_are_counted_per_stage_inside_each_batch(tiny):
    clip = make_clip(5, 64, 64, n_objects=2, seed=0)
    seen: list[progress.Snapshot] = []
    c0 = tiny.counters.snapshot()
    with progress.track(seen.append) as t:
        VideoSegmenter(tiny, SegConfig(**CFG), cache_frames=0).segment(clip, progress=False)
    work = tiny.counters.since(c0)
    # every UNet row is reported, and nothing else
    assert t.total_done == work["unet_samples"] + work["unet_partial_samples"] > 0
    stages = [(s.frames, s.stage) for s in seen if s.done == 0]
    assert [f for f, _ in stages] == [(0, 3), (0, 3), (3, 5), (3, 5)], stages
    assert [n.split(",")[0] for _, n in stages] == ["stage 0", "stage 3"] * 2
    # within a stage: updates before its end (not one jump per batch), ending exactly at the plan
    for key in {(s.frames, s.stage) for s in seen}:
        ss = [s for s in seen if (s.frames, s.stage) == key]
        assert ss[-1].done == ss[-1].planned > 0, key
        assert any(0 < s.done < s.planned for s in ss), key
        assert all(s.eta is not None for s in ss if s.done > 0)
        assert np.all(np.diff([s.done for s in ss]) > 0)
    mid = next(s for s in seen if 0 < s.done < s.planned)
    assert "UNet samples" in mid.line() and "left" in mid.line() and "frames" in mid.line()
    # without a tracker nothing is reported (and nothing breaks)
    assert progress.current() is None
    progress.advance(4)


def test_eta_from_the_rate_so_far():
    clock = iter([0.0, 0.0, 10.0, 10.0]).__next__
    seen: list[progress.Snapshot] = []
    with progress.track(seen.append, clock=clock):
        progress.stage("stage 3, modulation", 100)
        progress.advance(25)
    assert seen[-1].eta == 30.0 and seen[-1].fraction == 0.25
    assert "25/100 UNet samples" in seen[-1].line() and "30 s left" in seen[-1].line()


def test_cli_segment_shows_samples_per_stage(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    assert cli.main(["example", str(clip), "--frames", "5", "--height", "64", "--width", "64"]) == 0
    capsys.readouterr()
    argv = ["segment", str(clip), "-o", str(tmp_path / "seg.mp4"), "--model", "tiny", "--max-side", "64"]
    argv += ["--clusters", "3", "--t-m", "23", "--batch-size", "3", "--device", "cpu"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "stage 3, modulation" in err and "stage 0" in err and "sample" in err, err[-2000:]
