"""Names (issue 13) wired through the library, the CLI and the evaluation, on the random tiny model.

The tiny model's weights are random: the names it gives mean nothing, so no test reads meaning into
one. What is tested is the wiring: the queries recorded in the reference run are the UNet's own
``attn2.to_q`` outputs at the feature step (checked against an independent recorder), the default path
is untouched, a new vocabulary costs zero UNet samples, the CLI writes the JSON and the legend, and the
assignment by names reads no ground truth.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidseg_nb import cli
from vidseg_nb.config import preset
from vidseg_nb.datasets import VideoSample, open_dataset
from vidseg_nb.errors import ConfigError
from vidseg_nb.evaluation import protocol, runner
from vidseg_nb.features import reference_run
from vidseg_nb.names import (
    NAME_BLOCKS,
    UNNAMED,
    ClusterName,
    NameTracker,
    QueryRecorder,
    TextEncoderError,
    VocabularyError,
    name_clusters,
    site_name,
    unet_word_attention,
)
from vidseg_nb.palette import PALETTE
from vidseg_nb.pipeline import VideoSegmenter, parse_vocabulary
from vidseg_nb.synthetic import make_clip
from vidseg_nb.video import read_label_png
from vidseg_nb.viz import draw_legend, legend_entries, legend_html

WORDS = ["person", "dog", "grass", "sky"]


def cfg(**over):
    base = dict(n_clusters=3, kmeans_n_init=1, t_m=23, max_side=128, batch_size=2, modulation=False)
    return preset("vidseg", **{**base, **over})


@pytest.fixture(scope="module")
def clip():
    return make_clip(n_frames=4, height=128, width=128, n_objects=2, seed=3)


def unet_work(work: dict) -> int:
    return work["unet_samples"] + work["unet_partial_samples"] + work["unet_calls"]


# ------------------------------------------------------------------------------------------ recording
@pytest.mark.parametrize("record_qk", [True, False])
def test_recorded_queries_are_the_unets_attn2_queries_at_the_feature_step(tiny, clip, record_qk):
    """The probe hook records exactly what an independent recorder (names.QueryRecorder) sees at the last
    step, for every name block (block 8 included: the early stop moved after its attn2.to_q); F~ unchanged."""
    config = cfg()
    frames = clip.frames[:2, :128, :128]
    plain = reference_run(tiny, frames, config, record_qk=record_qk, progress=False)
    c0 = tiny.counters.snapshot()
    named = reference_run(tiny, frames, config, record_qk=record_qk, progress=False, record_names=True)
    work_named = tiny.counters.since(c0)
    c0 = tiny.counters.snapshot()
    reference_run(tiny, frames, config, record_qk=record_qk, progress=False)
    assert work_named == tiny.counters.since(c0)  # same UNet work with names recorded
    assert torch.equal(plain.features.aggregated, named.features.aggregated)
    assert plain.name_queries is None
    assert set(named.name_queries) == {site_name(b) for b in NAME_BLOCKS}
    # independent: a full run (no early stop), every call recorded in float32; the last call is the last step
    with QueryRecorder(tiny.unet, step=None) as rec:
        reference_run(tiny, frames, config, record_qk=True, progress=False)
    for site, q in named.name_queries.items():
        assert q.dtype == torch.float16 and q.device.type == "cpu"
        want = rec._chunks[site][-1]
        assert q.shape == want.shape and q.shape[0] == 2
        assert torch.equal(q, want.half())


def test_name_step_outside_the_run_is_a_clear_error(tiny, clip):
    with pytest.raises(ConfigError, match="outside the reference run"):
        reference_run(tiny, clip.frames[:1], cfg(), progress=False, record_names=True, name_step=3)


# ------------------------------------------------------------------------------------------ pipeline
def test_vocabulary_path_end_to_end_and_default_path_untouched(tiny, clip):
    plain = VideoSegmenter(tiny, cfg(), cache_frames=0).segment(clip, progress=False)
    assert plain.names == {} and plain.name_queries is None and plain.vocabulary == ()
    res = VideoSegmenter(tiny, cfg(), cache_frames=0).segment(clip, progress=False, names=", ".join(WORDS))
    assert np.array_equal(res.labels, plain.labels)  # names never change the labels...
    assert res.work == plain.work  # ...nor the UNet work
    assert res.vocabulary == tuple(WORDS)
    b = cfg().batch_size
    assert res.word_attention.shape == (b, *res.coarse_after.shape[1:], len(WORDS))
    # A is the word attention of the recorded queries; names follow from A and M~ of the first batch
    a = unet_word_attention(res.name_queries, tiny.unet, VideoSegmenter(tiny).vocabulary(WORDS), (8, 8))
    torch.testing.assert_close(res.word_attention, a)
    tracker = NameTracker(WORDS)
    tracker.update(res.coarse_after[:b], a)
    for s in range(b, len(res), b):
        tracker.update(res.coarse_after[s : s + b])
    assert res.names == tracker.names
    assert set(np.unique(res.labels)) <= set(res.names)
    assert all(n.best in WORDS for n in res.names.values() if n.best != UNNAMED)


def test_a_second_vocabulary_costs_zero_unet_samples(tiny, clip):
    seg = VideoSegmenter(tiny, cfg())
    first = seg.segment(clip, progress=False, names=WORDS)
    assert first.work["unet_samples"] > 0
    c0 = tiny.counters.snapshot()
    renamed = seg.rename(first, ["cat", "tree", "road"])
    assert unet_work(tiny.counters.since(c0)) == 0
    assert renamed.vocabulary == ("cat", "tree", "road") and np.array_equal(renamed.labels, first.labels)
    # segmenting the same clip again with another vocabulary: features, coarse maps and queries cached
    again = seg.segment(clip, progress=False, names=["cat", "tree", "road"])
    assert unet_work(again.work) == 0
    assert again.names == renamed.names
    torch.testing.assert_close(again.word_attention, renamed.word_attention)


def test_names_after_a_plain_run_cost_one_first_batch_feature_run(tiny, clip):
    seg = VideoSegmenter(tiny, cfg())
    plain = seg.segment(clip, progress=False)
    named = seg.segment(clip, progress=False, names=WORDS)
    b, n = cfg().batch_size, len(clip.frames)
    assert named.work["unet_partial_samples"] == plain.work["unet_partial_samples"] * b // n
    assert named.work["unet_samples"] == plain.work["unet_samples"] * b // n


def test_clip_namer_decides_on_the_first_batch_and_carries_the_names(tiny, clip):
    seg = VideoSegmenter(tiny, cfg(), cache_frames=0)
    frames = seg.prepare(clip, cfg())[1]
    b0, b1 = seg.iter_batches(frames, cfg(), mode="preview", progress=False, record_names=True)
    assert b0.name_queries and b1.name_queries is None
    namer = seg.name_tracker(", ".join(WORDS))
    assert namer.names == {} and namer.vocabulary == tuple(WORDS) and namer.attention is None
    first = namer.update(b0)
    # A from the recorded queries (text encoder + to_k), the names of M~ of the first batch from A
    att = unet_word_attention(b0.name_queries, tiny.unet, seg.vocabulary(WORDS), tuple(b0.after.shape[1:]))
    torch.testing.assert_close(namer.attention, att)
    assert first == name_clusters(att, b0.after, WORDS, seg.name_margin) and "names" in b0.timings
    assert set(first) == set(np.unique(b0.after).tolist())
    namer.update(b1)  # later batches need no queries: the names go with the cluster ids
    assert namer.names == dict(sorted(first.items()))
    namer.update_coarse(np.full_like(b1.after, 99), start=4)  # an id never seen: unnamed, listed late
    assert namer.names[99].name == UNNAMED and namer.tracker.late == {99}
    resumed = seg.name_tracker(WORDS)  # a resumed run: the names of its first batch, no A needed
    resumed.resume(first)
    resumed.update(b1)
    assert resumed.names == dict(sorted(first.items())) and resumed.attention is None
    with pytest.raises(VocabularyError, match="no cross-attention queries"):
        seg.name_tracker(WORDS).update(b1)  # a fresh one given a batch without queries


def test_names_queries_are_one_stage_of_the_clip_cache(tiny, clip):
    # issue 23 item 3: the first batch's queries are looked up and stored like the other stages
    seg = VideoSegmenter(tiny, cfg())
    first = seg.segment(clip, progress=False, record_names=True)
    ((key, q),) = seg.cache.entry.queries.items()
    assert dict(key)["name_blocks"] == tuple(seg.name_blocks) and dict(key)["name_step"] == seg.name_step
    assert q is first.name_queries and key[: len(seg.feature_key(cfg()))] == seg.feature_key(cfg())
    c0 = tiny.counters.snapshot()
    again = seg.segment(clip, cfg(n_clusters=2), progress=False, record_names=True)  # new K: stages 1-2 only
    assert unet_work(tiny.counters.since(c0)) == 0 and again.name_queries is q
    c1 = tiny.counters.snapshot()
    seg.name_step = cfg().t_m  # other queries: the first batch's reference run again, once
    third = seg.segment(clip, progress=False, record_names=True)
    b, n = cfg().batch_size, len(clip.frames)
    assert tiny.counters.since(c1)["unet_partial_samples"] == first.work["unet_partial_samples"] * b // n
    assert len(seg.cache.entry.queries) == 2 and third.name_queries is not q
    seg.clear_cache()
    assert seg.cache.entry is None


def test_rename_needs_recorded_queries(tiny, clip):
    seg = VideoSegmenter(tiny, cfg(), cache_frames=0)
    res = seg.segment(clip, progress=False)
    with pytest.raises(VocabularyError, match="no cross-attention queries"):
        seg.rename(res, WORDS)
    kept = seg.segment(clip, progress=False, record_names=True)
    assert kept.names == {} and kept.name_queries
    assert set(seg.rename(kept, WORDS).names) >= set(np.unique(kept.labels))


@pytest.mark.parametrize(
    "words, match",
    [("", "empty"), ([], "empty"), ("dog, , sky", "empty word"), (["word " * 80], "77 tokens")],
)
def test_bad_vocabulary_is_one_clear_line_before_any_unet_work(tiny, clip, words, match):
    c0 = tiny.counters.snapshot()
    with pytest.raises(VocabularyError, match=match) as e:
        VideoSegmenter(tiny, cfg(), cache_frames=0).segment(clip, progress=False, names=words)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300
    assert unet_work(tiny.counters.since(c0)) == 0


def test_backbone_without_text_encoder_is_one_clear_line(tiny, clip):
    bare = dataclasses.replace(tiny, text_encoder=None, tokenizer=None)
    with pytest.raises(TextEncoderError, match="kept no tokenizer/text encoder") as e:
        VideoSegmenter(bare, cfg()).segment(clip, progress=False, names=WORDS)
    assert "\n" not in str(e.value)


def test_parse_vocabulary():
    assert parse_vocabulary(" person, dog ,grass\nsky ") == ["person", "dog", "grass", "sky"]
    assert parse_vocabulary("  ") == [] and parse_vocabulary(["a ", "b"]) == ["a", "b"]


# ------------------------------------------------------------------------------------------ legend
def test_draw_legend_swatches_have_the_palette_colours():
    names = {0: ClusterName("dog", 1.5, 0.4, "dog"), 5: ClusterName(UNNAMED, 1.0, 0.01, "sky")}
    entries = legend_entries(names)
    # an unnamed segment says why: its best word's score and its lead over the second, below the margin
    assert [(i, t) for i, t, _ in entries] == [(0, "dog"), (5, "unnamed (best: sky 1.00, lead 0.01 < 0.10)")]
    frame = np.full((96, 128, 3), 200, np.uint8)
    out = draw_legend(frame, entries, font_size=12)
    pad, line = 3, 15  # font_size // 4, font_size + pad
    for k, (i, _, _) in enumerate(entries):
        y = pad + k * line + 6
        assert tuple(out[y, pad + 6]) == tuple(PALETTE[i])
    assert np.array_equal(out[90:, 100:], frame[90:, 100:])  # outside the box: untouched
    assert legend_entries(names, ids=[5]) == entries[1:]
    assert "unnamed (best: sky 1.00, lead 0.01 &lt; 0.10)" in legend_html(
        entries
    ) and "#ff7f0e" not in legend_html(entries[:1])


# ------------------------------------------------------------------------------------------ CLI
FAST = ["--model", "tiny", "--device", "cpu", "--max-side", "64", "--t-m", "24", "--kmeans-n-init", "1",
        "--n-clusters", "3", "--preview"]  # fmt: skip


def test_cli_segment_writes_names_json_and_legend(tmp_path, capsys):
    clip = tmp_path / "c.mp4"
    assert cli.main(["example", str(clip), "--frames", "3", "--height", "64", "--width", "64"]) == 0
    assert cli.main(["segment", str(clip), "-o", str(tmp_path / "plain.mp4"), *FAST]) == 0
    assert not (tmp_path / "plain_names.json").exists()
    assert (
        cli.main(["segment", str(clip), "-o", str(tmp_path / "o.mp4"), "--names", "person, dog", *FAST]) == 0
    )
    doc = json.loads((tmp_path / "o_names.json").read_text())
    assert doc["vocabulary"] == ["person", "dog"] and doc["random_weights"] is True
    ids = {
        int(v) for p in (tmp_path / "o_labels").glob("*.png") for v in np.unique(np.asarray(Image.open(p)))
    }
    assert ids  # palette PNGs hold the colours, read the ids from the JSON instead:
    assert all(set(v) == {"name", "score", "margin", "best"} for v in doc["labels"].values())
    assert all(v["best"] in ("person", "dog") for v in doc["labels"].values())
    assert "names:" in capsys.readouterr().out
    from vidseg_nb.video import read_video

    a = read_video(tmp_path / "plain.mp4").frames.astype(float)
    b = read_video(tmp_path / "o.mp4").frames.astype(float)
    # same labels, so the overlays differ only where the legend is drawn (top-left); mp4 noise elsewhere
    assert np.abs(a - b)[:, :12, :20].mean() > 20
    assert np.abs(a - b)[:, 40:, 40:].mean() < 3


def _names_json(path: Path) -> dict:
    return json.loads(path.read_text())["labels"]


def _as_json(names: dict) -> dict:
    """``result.names`` as ``OUT_names.json`` writes them (6 decimals, NaN as null)."""
    num = lambda x: None if not np.isfinite(x) else round(float(x), 6)  # noqa: E731
    return {
        str(i): dict(name=n.name, score=num(n.score), margin=num(n.margin), best=n.best)
        for i, n in names.items()
    }


def test_cli_streamed_names_equal_segment_names_and_survive_a_resume(tiny, tmp_path, monkeypatch):
    """The streamed CLI and ``segment(names=...)`` name with one ClipNamer: the same names on the same
    labels; a run killed after batch 1 and resumed keeps the names its first batch decided."""
    clip = tmp_path / "c.mp4"
    assert cli.main(["example", str(clip), "--frames", "5", "--height", "64", "--width", "64"]) == 0
    monkeypatch.setattr(cli, "_open", lambda args: tiny)
    words = "person, dog, grass"
    argv = ["segment", str(clip), "-o", str(tmp_path / "o.mp4"), "--names", words, *FAST, "--batch-size", "2"]
    assert cli.main([*argv, "--quiet"]) == 0
    config = cli.config_from_args(cli.build_parser().parse_args(argv))
    res = VideoSegmenter(tiny, config, cache_frames=0).segment(str(clip), progress=False, names=words)
    pngs = np.stack([read_label_png(p) for p in sorted((tmp_path / "o_labels").glob("*.png"))])
    np.testing.assert_array_equal(pngs, res.labels)  # the same run ...
    assert res.names and _names_json(tmp_path / "o_names.json") == _as_json(res.names)  # ... the same names

    real_ckpt, calls = cli._save_checkpoint, []

    def ckpt(*a):
        real_ckpt(*a)
        calls.append(1)
        raise _Stop  # killed after batch 1 (its checkpoint saved, with the names)

    out = tmp_path / "r.mp4"
    monkeypatch.setattr(cli, "_save_checkpoint", ckpt)
    run = ["segment", str(clip), "-o", str(out), "--names", words, *FAST, "--batch-size", "2", "--quiet"]
    with pytest.raises(_Stop):
        cli.main(run)
    monkeypatch.setattr(cli, "_save_checkpoint", real_ckpt)
    assert cli.main([*run, "--resume"]) == 0
    assert _names_json(tmp_path / "r_names.json") == _as_json(res.names)


class _Stop(Exception):
    pass


def test_cli_bad_names_are_one_line_exit_2(tmp_path, capsys):
    clip = tmp_path / "c.mp4"
    assert cli.main(["example", str(clip), "--frames", "2", "--height", "64", "--width", "64"]) == 0
    capsys.readouterr()
    for words in ("", " , ", "word " * 80):
        assert cli.main(["segment", str(clip), "-o", str(tmp_path / "o.mp4"), "--names", words, *FAST]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len([x for x in err if x.startswith("vidseg")]) == 1, err


def test_cli_names_without_text_encoder_is_one_line_exit_2(tiny, tmp_path, monkeypatch, capsys):
    clip = tmp_path / "c.mp4"
    assert cli.main(["example", str(clip), "--frames", "2", "--height", "64", "--width", "64"]) == 0
    bare = dataclasses.replace(tiny, text_encoder=None, tokenizer=None)
    monkeypatch.setattr(cli, "_open", lambda args: bare)
    capsys.readouterr()
    c0 = tiny.counters.snapshot()
    assert cli.main(["segment", str(clip), "-o", str(tmp_path / "o.mp4"), "--names", "dog", *FAST]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "text encoder" in err[0], err
    assert unet_work(tiny.counters.since(c0)) == 0 and not (tmp_path / "o.mp4").exists()


# ------------------------------------------------------------------------------------------ evaluation
def write_camvid(root: Path, n_frames: int = 4) -> Path:
    c = make_clip(n_frames=n_frames, height=128, width=128, n_objects=2, seed=10, speed=4.0)
    seq = root / "seq0"
    (seq / "frames").mkdir(parents=True)
    (seq / "labels").mkdir(parents=True)
    for i in range(n_frames):
        Image.fromarray(c.frames[i]).save(seq / "frames" / f"seq0_{i:05d}.png")
        Image.fromarray(c.labels[i].astype(np.uint8), mode="L").save(seq / "labels" / f"seq0_{i:05d}.png")
    return root


def test_name_mapping_and_given_mapping_scoring():
    names = {0: ClusterName("road", 2.0, 0.5, "road"), 1: ClusterName(UNNAMED, 1.0, 0.0, "sky"),
             2: ClusterName(UNNAMED, float("nan"), float("nan"), UNNAMED)}  # fmt: skip
    assert protocol.name_mapping(names, ["sky", "building", "road"]) == {0: 2, 1: 0, 2: -1}
    labels = np.array([[[0, 1], [2, 2]]])
    gt = np.array([[[2, 0], [1, 1]]])
    out = protocol.score_result(labels, None, gt, 3, mapping={0: 2, 1: 0, 2: -1})
    assert out["assign_frame"] is None and out["unassigned_pixels"] == 2
    assert out["conf"][2, 2] == 1 and out["conf"][0, 0] == 1 and out["conf"][1, 3] == 2


def test_assign_names_reads_no_ground_truth_to_assign(tiny, tmp_path, monkeypatch):
    ds = open_dataset("camvid", write_camvid(tmp_path / "camvid"))
    events: list[str] = []
    orig_load, orig_read = VideoSample.load_labels, VideoSample.read_label
    orig_segment = VideoSegmenter.segment

    def load_labels(self, *a, **k):
        events.append("load_labels")
        return orig_load(self, *a, **k)

    def read_label(self, *a, **k):
        events.append("read_label")
        return orig_read(self, *a, **k)

    def segment(self, *a, **k):
        out = orig_segment(self, *a, **k)
        events.append(f"segmented with {len(out.names)} names")
        return out

    def no_gt_assignment(*a, **k):
        raise AssertionError("the first-frame (ground-truth) assignment was called")

    monkeypatch.setattr(VideoSample, "load_labels", load_labels)
    monkeypatch.setattr(VideoSample, "read_label", read_label)
    monkeypatch.setattr(VideoSegmenter, "segment", segment)
    monkeypatch.setattr(protocol, "assign_labels", no_gt_assignment)
    config = cfg(max_side=64, batch_size=4)
    summary = runner.evaluate_dataset(ds, tiny, config, tmp_path / "out", progress=False, assign="names")
    assert summary["videos"] == 1 and summary["assign"] == "names" and np.isfinite(summary["mIoU"])
    # the names were decided before any ground truth was read; ground truth is then read for scoring
    assert events[0].startswith("segmented with") and not events[0].endswith(" 0 names")
    assert "read_label" not in events[: events.index("load_labels")]
    rec = json.loads((tmp_path / "out" / "per_video.jsonl").read_text().splitlines()[0])
    assert rec["assign_frame"] is None and set(rec["names"].values()) <= set(protocol.dataset_vocabulary(ds))
    assert json.loads((tmp_path / "out" / "run.json").read_text())["assign"] == "names"


def test_assign_both_keeps_the_first_frame_numbers(tiny, tmp_path):
    ds = open_dataset("camvid", write_camvid(tmp_path / "camvid"))
    config = cfg(max_side=64, batch_size=4)
    first = runner.evaluate_dataset(ds, tiny, config, tmp_path / "ff", progress=False)
    both = runner.evaluate_dataset(ds, tiny, config, tmp_path / "both", progress=False, assign="both")
    names = runner.evaluate_dataset(ds, tiny, config, tmp_path / "names", progress=False, assign="names")
    np.testing.assert_equal(both["mIoU"], first["mIoU"])
    np.testing.assert_equal(both["by_names"]["mIoU"], names["mIoU"])
    assert "by_names" not in first and first.get("assign") == "first-frame"
    with pytest.raises(ConfigError, match="assign"):  # resuming a folder with another assignment
        runner.evaluate_dataset(ds, tiny, config, tmp_path / "ff", progress=False, assign="names")


def test_assign_names_on_davis_and_bad_assign_are_clear_errors(tmp_path):
    class DavisDataset:
        pass

    with pytest.raises(ConfigError, match="no class names") as e:
        protocol.dataset_vocabulary(DavisDataset())
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="one of"):
        protocol.check_assign("gt")
    assert len(protocol.dataset_vocabulary(type("VSPWDataset", (), {})())) == 124
    assert len(protocol.dataset_vocabulary(type("CityscapesDataset", (), {})())) == 19


# ------------------------------------------------------------------------------------------ demo
def test_demo_names_box_renames_without_a_rerun(tiny, tmp_path):
    """Segment with a vocabulary (legend + attention maps), then a new vocabulary in the Names box: the
    rename handler re-names from the cached queries with zero UNet samples and no device job."""
    pytest.importorskip("gradio")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from demo import handlers as H
    from vidseg_nb.config import SegConfig
    from vidseg_nb.synthetic import save_clip

    rt = H.configure(
        tiny, base_config=SegConfig(kmeans_n_init=1), max_frames=6, cache_examples=False,
        defaults=H.UIDefaults(n_clusters=3, t_m=24, batch_size=4, max_side=64), workdir=tmp_path / "w",
    )  # fmt: skip
    calls = []
    rt.device_fn = lambda *a: calls.append(1) or H.segment_on_device(*a)
    path = save_clip(make_clip(4, 128, 128, n_objects=2, seed=0), tmp_path / "a.mp4")
    kw = dict(lam=50.0, s=0.7, n_clusters=3, preset="vidseg", t_m=24, batch_size=4, max_side=64, frame=0)
    out = H.segment(None, H.Settings(video=str(path), names="person, dog", **kw))
    assert len(calls) == 1 and set(out) == set(H.OUTPUT_NAMES)
    state = out["state"]
    r = rt.work(state).result
    assert r.vocabulary == ("person", "dog") and r.name_queries
    for i in np.unique(r.labels):
        assert f"#{i}<" in out["legend"] and legend_entries(r.names)[0][2] in out["legend"]
    assert "random" in out["legend"]
    captions = [c for _, c in out["gallery"]]
    assert "frame 0: attention to 'person'" in captions and "frame 0: attention to 'dog'" in captions
    c0 = tiny.counters.snapshot()
    new = H.rename(state, H.Settings(names="grass, sky, road", frame=0))
    assert unet_work(tiny.counters.since(c0)) == 0 and len(calls) == 1  # no UNet, no device job
    assert "0 UNet samples" in new["status"]
    r2 = rt.work(state).result
    assert r2.vocabulary == ("grass", "sky", "road") and np.array_equal(r2.labels, r.labels)
    assert any(n.best in ("grass", "sky", "road") for n in r2.names.values())
    assert "attention to 'road'" in " ".join(c for _, c in new["gallery"])
    cleared = H.rename(state, H.Settings(names="", frame=0))
    assert cleared["legend"] == "" and rt.work(state).result.names == {}
    # a new vocabulary before any result: a status line, nothing else
    assert set(H.rename(None, H.Settings(names="dog"))) == {"status"}


def test_cli_evaluate_assign_both_prints_both_tables(tmp_path, capsys):
    root = write_camvid(tmp_path / "camvid")
    out = tmp_path / "out"
    argv = ["evaluate", "--dataset", "camvid", "--root", str(root), "--out", str(out), "--assign", "both",
            "--quiet", *FAST, "--batch-size", "4"]  # fmt: skip
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert text.count("| videos | frames | mIoU | mVC8 | mVC16 |") == 2
    assert "assigned by names, no ground truth read to assign" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["assign"] == "both" and "mIoU" in summary["by_names"]
