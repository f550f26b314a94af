"""Issue 23: one way through a clip. ``VideoSegmenter.stream`` follows the batch plan (the authors'
overlapping last batch included, row 7), takes the first-frame ground truth (row 6) and resumes with the
authors' KNN (row 5); ``vidseg segment --preset authors`` streams with a checkpoint per batch and
``--resume``.

- the shifted plan streams with bounded held frames: each batch yields its frames up to the next batch's
  start, every frame once, in order; the reader holds at most one batch of frames, for 10 or 1,000 frames;
- ``stream`` equals ``segment`` (and ``iter_batches`` by frame index, the later batch winning) with the
  authors' switches, the ground truth given;
- a stream resumed from a saved :class:`StreamState` with the authors' KNN equals the uninterrupted run;
- ``vidseg segment --preset authors`` killed after a checkpoint and rerun with ``--resume`` writes the
  label PNGs of an uninterrupted run (also where the killed batch yielded no frame: N % B == 0).
"""

from __future__ import annotations

import numpy as np
import pytest

from vidseg_nb import cli
from vidseg_nb.authors import batch_plan
from vidseg_nb.config import SegConfig, preset
from vidseg_nb.pipeline import StreamState, VideoSegmenter, _FrameWindows
from vidseg_nb.synthetic import make_clip, save_clip
from vidseg_nb.video import open_video, read_label_png

FAST = dict(max_side=64, n_clusters=3, kmeans_n_init=2, t_m=24, batch_size=3)


def authors(**kw) -> SegConfig:
    return preset("authors", **{**FAST, **kw})


@pytest.fixture(scope="module")
def clip():
    return make_clip(n_frames=8, height=64, width=80, n_objects=2, seed=4, speed=3.0)


class _Stop(Exception):
    pass


# ------------------------------------------------------------------------------------ held frames
@pytest.mark.parametrize("n", [1, 2, 3, 7, 9, 10, 1000])
def test_shifted_plan_reader_holds_at_most_one_batch(n) -> None:
    """The lazy reader of the authors' plan: frames as the plan says, at most B held, for any length."""
    bsz = 14
    frames = np.zeros((n, 64, 64, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(n) % 256  # frame index in a pixel
    frames[:, 0, 0, 1] = np.arange(n) // 256
    plan = batch_plan(n, SegConfig(batch_size=bsz, shifted_last_batch=True))
    reader = _FrameWindows(open_video(frames), plan, bsz, 0, 0)
    got = list(reader)
    assert [(a, a + len(f)) for a, f, _, _ in got] == plan
    for a, f, _, held in got:
        idx = f[:, 0, 0, 0].astype(int) + 256 * f[:, 0, 0, 1].astype(int)
        assert idx.tolist() == list(range(a, a + len(f)))
        assert held <= bsz
    assert reader.peak <= bsz  # the same bound for 1,000 frames as for 10


@pytest.mark.parametrize("n", [7, 8])  # a short last batch overlapping the previous one; N % B == 0
def test_shifted_plan_streams_each_frame_once_with_bounded_held_frames(tiny, n) -> None:
    c = make_clip(n_frames=n, height=64, width=64, n_objects=2, seed=5)
    config = authors(modulation=False, batch_size=3)
    plan = batch_plan(n, config)
    got = list(VideoSegmenter(tiny, config, cache_frames=0).stream(c.frames, config, progress=False))
    assert [(b.result.start, b.result.stop) for b in got] == plan  # whole batches run
    starts = [a for a, _ in plan[1:]] + [n]
    assert [(b.start, b.stop) for b in got] == [(a, s) for (a, _), s in zip(plan, starts)]
    assert [b.state().frames_done for b in got] == starts  # the checkpoint: the next batch's start
    assert max(b.held for b in got) <= config.batch_size  # frames held: one batch, not the clip
    np.testing.assert_array_equal(np.concatenate([b.frames for b in got]), c.frames)
    assert sum(len(b.labels) for b in got) == n


# ------------------------------------------------------------------------------------ equal to segment
def test_stream_with_the_authors_switches_equals_segment_and_iter_batches(tiny, clip) -> None:
    config = authors(modulation=False)
    gt = clip.labels[0]
    ref = VideoSegmenter(tiny, config).segment(clip.frames, progress=False, first_frame_gt=gt)
    seg = VideoSegmenter(tiny, config, cache_frames=0)
    got = list(seg.stream(clip.frames, config, progress=False, first_frame_gt=gt))
    np.testing.assert_array_equal(np.concatenate([b.labels for b in got]), ref.labels)
    np.testing.assert_array_equal(np.concatenate([b.after for b in got]), ref.coarse_after)
    frames = seg.prepare(clip.frames, config)[1]
    after = np.zeros_like(ref.coarse_after)
    for b in seg.iter_batches(frames, config, mode="preview", progress=False, first_frame_gt=gt):
        after[b.start : b.stop] = b.after  # by frame index: the later batch wins
    np.testing.assert_array_equal(after, ref.coarse_after)
    plain = VideoSegmenter(tiny, config).segment(clip.frames, progress=False)  # no GT: not merged
    assert not np.array_equal(plain.coarse_after, ref.coarse_after) or len(np.unique(gt)) <= 1


@pytest.mark.parametrize("kill_after", [1, 2])
def test_resume_with_the_authors_knn_equals_the_uninterrupted_run(tiny, clip, tmp_path, kill_after) -> None:
    config = authors(modulation=False)
    assert config.knn_first_frame and config.shifted_last_batch
    gt = clip.labels[0]
    full = list(VideoSegmenter(tiny, config, cache_frames=0).stream(clip.frames, config, progress=False))
    done = full[:kill_after]
    path = done[-1].state().save(tmp_path / "s.npz", run="x")
    state, meta = StreamState.load(path)
    assert meta == {"run": "x"} and state.knn_features is not None
    np.testing.assert_array_equal(state.knn_labels, done[-1].state().knn_labels)
    rest = list(
        VideoSegmenter(tiny, config, cache_frames=0).stream(
            clip.frames, config, progress=False, start_batch=kill_after, state=state
        )
    )
    assert rest[0].start == state.frames_done
    np.testing.assert_array_equal(
        np.concatenate([b.labels for b in done + rest]), np.concatenate([b.labels for b in full])
    )
    # with the GT (row 6) too: the merged ids carry through the resume
    seg = VideoSegmenter(tiny, config, cache_frames=0)
    full = list(seg.stream(clip.frames, config, progress=False, first_frame_gt=gt))
    st = full[kill_after - 1].state()
    rest = list(seg.stream(clip.frames, config, progress=False, start_batch=kill_after, state=st))
    np.testing.assert_array_equal(
        np.concatenate([b.labels for b in full[:kill_after] + rest]), np.concatenate([b.labels for b in full])
    )


# ------------------------------------------------------------------------------------ the CLI
def _pngs(d) -> np.ndarray:
    return np.stack([read_label_png(p) for p in sorted(d.glob("*.png"))])


@pytest.mark.parametrize(("n", "kill_after"), [(5, 2), (6, 3)])  # (6, 3): batch 3 yields no frame
def test_cli_authors_preset_kill_and_resume_equals_an_uninterrupted_run(
    tiny, tmp_path, monkeypatch, capsys, n, kill_after
) -> None:
    c = make_clip(n_frames=n, height=64, width=64, n_objects=2, seed=6)
    clip_file = save_clip(c, tmp_path / "clip.mp4")
    monkeypatch.setattr(cli, "_open", lambda args: tiny)
    flags = ["--preset", "authors", "--max-side", "64", "--clusters", "3", "--kmeans-n-init", "2"]
    flags += ["--batch-size", "2", "--t-m", "24", "--quiet"]
    ref_out = tmp_path / "ref" / "seg.mp4"
    assert cli.main(["segment", str(clip_file), "-o", str(ref_out), *flags]) == 0
    assert len(list((tmp_path / "ref" / "seg_labels").glob("*.png"))) == n

    real_ckpt, calls = cli._save_checkpoint, []

    def ckpt(*a):
        real_ckpt(*a)
        calls.append(1)
        if len(calls) == kill_after:
            raise _Stop  # killed after this batch's checkpoint

    out = tmp_path / "run" / "seg.mp4"
    monkeypatch.setattr(cli, "_save_checkpoint", ckpt)
    with pytest.raises(_Stop):
        cli.main(["segment", str(clip_file), "-o", str(out), *flags])
    state, _ = StreamState.load(out.with_name("seg_state.npz"))
    plan = batch_plan(n, cli.config_from_args(cli.build_parser().parse_args(["segment", "x", *flags])))
    assert state.frames_done == plan[kill_after][0] < n  # the overlapped frames were held back
    assert len(list((out.parent / "seg_labels").glob("*.png"))) == state.frames_done
    monkeypatch.setattr(cli, "_save_checkpoint", real_ckpt)
    capsys.readouterr()
    assert cli.main(["segment", str(clip_file), "-o", str(out), *flags, "--resume"]) == 0
    assert f"resumed at frame {state.frames_done}" in capsys.readouterr().out
    np.testing.assert_array_equal(_pngs(out.parent / "seg_labels"), _pngs(tmp_path / "ref" / "seg_labels"))
    assert not out.with_name("seg_state.npz").exists()
