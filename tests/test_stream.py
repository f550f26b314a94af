"""Issue 16: the streaming segmenter (``VideoSegmenter.stream``), resuming it, and ``vidseg segment``
batch by batch with ``--resume``.

- the streamed labels (and M^j, M~^j) equal ``segment``'s on the same clip (several batches, a short last
  batch), for SD (full and preview mode) and SVD;
- a run resumed from a saved :class:`StreamState` after batch 2 gives the labels of an uninterrupted run;
- ``vidseg segment`` interrupted (an exception raised from the checkpoint step) and rerun with
  ``--resume``: the label PNGs and videos equal an uninterrupted run's, no PNG is written twice, and a
  resume with other settings is refused;
- the progress bar counts frames (total = the clip's frame count).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vidseg_nb import cli, pipeline, video
from vidseg_nb.config import SegConfig
from vidseg_nb.pipeline import StreamState, VideoSegmenter
from vidseg_nb.synthetic import make_clip, save_clip
from vidseg_nb.video import read_label_png, read_video

FAST = dict(max_side=64, n_clusters=3, t_m=24, batch_size=3)
CLI_FAST = ["--model", "tiny", "--device", "cpu", "--max-side", "64", "--clusters", "3", "--batch-size", "2"]
CLI_FAST += ["--preview", "--quiet"]


@pytest.fixture(scope="module")
def clip():
    return make_clip(n_frames=7, height=70, width=90, n_objects=2, seed=3)


def _stream_all(seg, frames, config, **kw):
    return list(seg.stream(frames, config, progress=False, **kw))


@pytest.mark.parametrize("modulation", [True, False], ids=["full", "preview"])
def test_streamed_labels_equal_segment(tiny, clip, modulation) -> None:
    config = SegConfig(**FAST, modulation=modulation)
    ref = VideoSegmenter(tiny, config).segment(clip.frames, progress=False)  # cached path, whole clip
    got = _stream_all(VideoSegmenter(tiny, config, cache_frames=0), clip.frames, config)  # lazy path
    assert [(b.start, b.stop) for b in got] == [(0, 3), (3, 6), (6, 7)]  # a short last batch
    labels = np.concatenate([b.labels for b in got])
    assert labels.dtype == np.uint8 and labels.shape == clip.frames.shape[:3]  # input resolution
    np.testing.assert_array_equal(labels, ref.labels)
    np.testing.assert_array_equal(np.concatenate([b.result.before for b in got]), ref.coarse_before)
    np.testing.assert_array_equal(np.concatenate([b.result.after for b in got]), ref.coarse_after)
    np.testing.assert_array_equal(np.concatenate([b.frames for b in got]), clip.frames)
    assert len(np.unique(ref.labels)) >= 2  # not a degenerate clip


def test_streamed_labels_equal_segment_svd(clip) -> None:
    from vidseg_nb.loading import load_backbone

    svd = load_backbone("tiny-svd", device="cpu")
    config = SegConfig(**FAST, modulation=False)
    ref = VideoSegmenter(svd, config).segment(clip.frames, progress=False)
    got = _stream_all(VideoSegmenter(svd, config, cache_frames=0), clip.frames, config)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in got]), ref.labels)


def test_segment_of_a_long_clip_streams_and_equals_the_cached_run(tiny, clip) -> None:
    config = SegConfig(**FAST, modulation=False)
    cached = VideoSegmenter(tiny, config).segment(clip.frames, progress=False)
    long = VideoSegmenter(tiny, config, cache_frames=4).segment(clip.frames, progress=False)  # 7 > 4
    np.testing.assert_array_equal(long.labels, cached.labels)
    assert long.features is None and cached.features is not None


def test_resume_from_a_saved_state_equals_the_uninterrupted_run(tiny, clip, tmp_path) -> None:
    config = SegConfig(**{**FAST, "batch_size": 2}, modulation=True)
    full = _stream_all(VideoSegmenter(tiny, config, cache_frames=0), clip.frames, config)
    assert len(full) == 4
    # interrupted: an exception raised by the consumer after batch 2 (index 1), its state saved first
    path = tmp_path / "state.npz"
    done = []
    with pytest.raises(KeyboardInterrupt):
        for sb in VideoSegmenter(tiny, config, cache_frames=0).stream(clip.frames, config, progress=False):
            done.append(sb.labels)
            sb.state().save(path, clip="x")
            if sb.index == 1:
                raise KeyboardInterrupt
    state, meta = StreamState.load(path)
    assert meta == {"clip": "x"} and (state.next_batch, state.frames_done) == (2, 4)
    rest = list(
        VideoSegmenter(tiny, config, cache_frames=0).stream(
            clip.frames, config, progress=False, start_batch=2, state=state
        )
    )
    assert [b.start for b in rest] == [4, 6]
    np.testing.assert_array_equal(
        np.concatenate(done + [b.labels for b in rest]), np.concatenate([b.labels for b in full])
    )
    for a, b in zip(rest, full[2:]):
        np.testing.assert_array_equal(a.result.before, b.result.before)  # Omega's prediction: identical


def test_stream_refuses_a_state_without_its_batch(tiny, clip) -> None:
    config = SegConfig(**FAST, modulation=False)
    st = StreamState(1, 3, np.zeros((1, 2, 2, 4), np.float32), np.zeros((1, 2, 2), np.int64))
    seg = VideoSegmenter(tiny, config, cache_frames=0)
    with pytest.raises(ValueError):
        next(seg.stream(clip.frames, config, progress=False, start_batch=2, state=st))
    with pytest.raises(ValueError):
        next(seg.stream(clip.frames, config, progress=False, start_batch=1))


class _Bar:
    made: list[_Bar] = []

    def __init__(self, *a, total=None, initial=0, unit="it", disable=False, **kw) -> None:
        self.total, self.initial, self.unit, self.disable, self.n = total, initial, unit, disable, initial
        _Bar.made.append(self)

    def update(self, k: int) -> None:
        self.n += k

    def close(self) -> None:
        pass


def test_progress_bar_counts_frames(tiny, clip, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "tqdm", _Bar)
    _Bar.made = []
    config = SegConfig(**{**FAST, "batch_size": 2}, modulation=False)
    seg = VideoSegmenter(tiny, config, cache_frames=0)
    got = list(seg.stream(clip.frames, config))
    bar = _Bar.made[0]
    assert (bar.total, bar.unit, bar.initial, bar.n, bar.disable) == (7, "frame", 0, 7, False)
    _Bar.made = []
    list(seg.stream(clip.frames, config, start_batch=2, state=got[1].state()))
    assert (_Bar.made[0].initial, _Bar.made[0].n) == (4, 7)  # a resumed run starts at the frames done


# --------------------------------------------------------------------------------------------------
# vidseg segment --resume
# --------------------------------------------------------------------------------------------------
class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory, clip):
    return save_clip(clip, tmp_path_factory.mktemp("clip") / "clip.mp4")


def _pngs(d) -> np.ndarray:
    files = sorted(d.glob("*.png"))
    return np.stack([read_label_png(p) for p in files])


def test_cli_resume_equals_an_uninterrupted_run(clip_file, tmp_path, monkeypatch, capsys) -> None:
    ref_out = tmp_path / "ref" / "seg.mp4"
    assert cli.main(["segment", str(clip_file), "-o", str(ref_out), *CLI_FAST]) == 0
    assert not (tmp_path / "ref" / "seg_state.npz").exists()  # removed when the run finishes

    writes: list[str] = []
    real_save = video.labels._save_label_png
    monkeypatch.setattr(
        video.labels, "_save_label_png", lambda p, *a: (writes.append(p.name), real_save(p, *a))
    )
    real_ckpt = cli._save_checkpoint
    calls = []

    def ckpt(*a):
        real_ckpt(*a)
        calls.append(1)
        if len(calls) == 2:
            raise _Stop  # killed after batch 2 (its checkpoint saved)

    out = tmp_path / "run" / "seg.mp4"
    monkeypatch.setattr(cli, "_save_checkpoint", ckpt)
    with pytest.raises(_Stop):
        cli.main(["segment", str(clip_file), "-o", str(out), *CLI_FAST])
    assert writes == [f"{i:05d}.png" for i in range(4)]
    state = out.with_name("seg_state.npz")
    assert state.is_file()
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out.parent / "seg_labels").glob("*.png")}

    # another setting: refused with a clear message, nothing written
    capsys.readouterr()
    assert (
        cli.main(["segment", str(clip_file), "-o", str(out), *CLI_FAST, "--clusters", "4", "--resume"]) == 2
    )
    err = capsys.readouterr().err
    assert "--resume" in err and "n_clusters: 3 -> 4" in err
    assert writes == [f"{i:05d}.png" for i in range(4)]

    monkeypatch.setattr(cli, "_save_checkpoint", real_ckpt)
    assert cli.main(["segment", str(clip_file), "-o", str(out), *CLI_FAST, "--resume"]) == 0
    assert "resumed at frame 4" in capsys.readouterr().out
    assert writes == [f"{i:05d}.png" for i in range(7)]  # every frame written exactly once
    assert {p: (out.parent / "seg_labels" / p).stat().st_mtime_ns for p in mtimes} == mtimes
    np.testing.assert_array_equal(_pngs(out.parent / "seg_labels"), _pngs(tmp_path / "ref" / "seg_labels"))
    assert not state.exists()
    for suffix in (".mp4", "_labels.mp4"):  # the videos were rebuilt for the frames done, then continued
        a = read_video(out.with_name("seg" + suffix)).frames
        b = read_video(ref_out.with_name("seg" + suffix)).frames
        assert len(a) == len(b) == 7
        np.testing.assert_array_equal(a, b)
    assert json.loads(out.with_name("seg_config.json").read_text())["frames"] == 7


def test_cli_resume_without_a_checkpoint_is_an_error(clip_file, tmp_path, capsys) -> None:
    out = tmp_path / "seg.mp4"
    assert cli.main(["segment", str(clip_file), "-o", str(out), *CLI_FAST, "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# evaluation of long videos, batch by batch
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bsz", [1, 5, 40])
def test_stream_scorer_equals_score_result(bsz) -> None:
    from vidseg_nb.evaluation.protocol import StreamScorer, score_result

    rng = np.random.default_rng(0)
    t, c = 37, 4
    base = rng.integers(0, c, (1, 12, 10))
    gt = np.where(rng.random((t, 12, 10)) < 0.15, rng.integers(0, c, (t, 12, 10)), base)  # mostly constant
    gt[5, :2] = 255  # void
    labels = np.where(rng.random((t, 12, 10)) < 0.2, rng.integers(0, 6, (t, 12, 10)), (base + 1) % 6)
    coarse = rng.integers(0, 6, (t, 3, 2))
    ann = np.ones(t, bool)
    ann[[0, 1, 20]] = False  # labels assigned on frame 2; windows with frame 20 left out
    want = score_result(labels, coarse, gt, c, 255, davis=True, annotated=ann)
    sc = StreamScorer(c, 255, davis=True)
    for a in range(0, t, bsz):
        sc.add(labels[a : a + bsz], coarse[a : a + bsz], gt[a : a + bsz], ann[a : a + bsz])
    got = sc.result()
    assert set(got) == set(want) and want["assign_frame"] == 2
    for k, v in want.items():
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(v), err_msg=k)
    assert np.isfinite(want["vc8"]).sum() > 5 and np.isnan(want["vc8"]).sum() > 0  # windows of both kinds


def test_long_dataset_video_is_streamed_with_the_same_record(tiny, tmp_path, monkeypatch) -> None:
    from test_evaluate import small_config, write_camvid

    from vidseg_nb.datasets import open_dataset
    from vidseg_nb.evaluation import runner

    ds = open_dataset("camvid", write_camvid(tmp_path, n_videos=1))
    sample = ds[0]
    config = small_config()
    whole = runner.eval_sample(sample, tiny, config)
    calls = []
    real = pipeline.VideoSegmenter.segment
    monkeypatch.setattr(
        pipeline.VideoSegmenter, "segment", lambda *a, **k: (calls.append(1), real(*a, **k))[1]
    )
    streamed = runner.eval_sample(sample, tiny, config, stream_frames=4)  # 10 frames > 4: streamed
    assert not calls  # the whole clip was never segmented at once
    whole.pop("seconds"), streamed.pop("seconds")
    assert streamed == whole
