"""Evaluation (vidseg_nb.evaluation): per-clip scoring with a known answer, pooling (DAVIS per object),
resumable local dataset runs with failing videos, the Table 2 ablation. Ray: tests/test_ray.py; the
``vidseg evaluate`` / ``vidseg ablate`` commands: tests/test_cli.py.

Model runs use the random tiny backbone on 128x128 clips processed at 64x64 (a 4x4 feature grid), in
preview mode where the test is about bookkeeping, so the whole file stays small.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from vidseg_nb import evaluate as old_path
from vidseg_nb import evaluation as ev
from vidseg_nb import pipeline
from vidseg_nb.config import ConfigError, SegConfig, preset
from vidseg_nb.datasets import open_dataset
from vidseg_nb.evaluation import runner
from vidseg_nb.metrics import mean_iou, resize_nearest
from vidseg_nb.synthetic import make_clip

N_FRAMES = 10  # > 8: VC_8 has windows
SIZE = 128
CAMVID_VOID = 11


def small_config(**over) -> SegConfig:
    base = dict(n_clusters=3, kmeans_n_init=1, t_m=24, max_side=64, batch_size=4, modulation=False)
    return preset("vidseg", **{**base, **over})


def write_camvid(root: Path, n_videos: int = 2, n_frames: int = N_FRAMES) -> Path:
    """A CamVid-layout tree (``<root>/<seq>/frames``, ``<root>/<seq>/labels``) of synthetic clips whose
    labels are make_clip's (0 background, 1..2 objects) with a void (11) top-left corner."""
    for v in range(n_videos):
        c = make_clip(n_frames=n_frames, height=SIZE, width=SIZE, n_objects=2, seed=10 + v, speed=4.0)
        seq = root / f"seq{v}"
        (seq / "frames").mkdir(parents=True)
        (seq / "labels").mkdir(parents=True)
        for i in range(n_frames):
            lab = c.labels[i].copy()
            lab[:3, :3] = CAMVID_VOID
            Image.fromarray(c.frames[i]).save(seq / "frames" / f"seq{v}_{i:05d}.png")
            Image.fromarray(lab.astype(np.uint8), mode="L").save(seq / "labels" / f"seq{v}_{i:05d}.png")
    return root


class Crash(BaseException):
    """Stands in for the process dying (a BaseException: never recorded as a failed video)."""


def _strip(rec: dict) -> dict:
    """A per-video record or summary without wall times (the only thing a rerun may change)."""
    out = {k: v for k, v in rec.items() if k not in ("seconds",)}
    if "run" in out:
        out["run"] = {k: v for k, v in out["run"].items() if k != "root"}
    return out


def _lines(path: Path) -> dict[str, dict]:
    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return {r["video"]: _strip(r) for r in recs}


# --------------------------------------------------------------------------------------------------
# fakes
# --------------------------------------------------------------------------------------------------
class FakeSegmenter:
    """Returns fixed cluster maps (labels and coarse maps) whatever the frames; counts calls."""

    def __init__(self, labels: np.ndarray, coarse: np.ndarray) -> None:
        self.labels, self.coarse, self.calls = labels, coarse, 0

    def segment(self, clip, config=None, *, mode=None, keep="auto", progress=True):
        self.calls += 1
        return SimpleNamespace(
            labels=self.labels,
            coarse_before=self.coarse,
            coarse_after=self.coarse,
            work={"unet_samples": 1},
            mode=mode,
        )


class ColourSegmenter:
    """A model-free stand-in for VideoSegmenter: clusters = red channel // 64 (for bookkeeping tests)."""

    calls = 0

    def __init__(self, backbone, config=None, *, cache_frames=120) -> None:
        pass

    def segment(self, clip, config=None, *, mode=None, keep="auto", progress=True):
        type(self).calls += 1
        labels = (np.asarray(clip)[..., 0] // 64).astype(np.uint8)
        h, w = labels.shape[1] // 16, labels.shape[2] // 16
        coarse = np.stack([resize_nearest(x, (h, w)) for x in labels]).astype(np.int64)
        return SimpleNamespace(labels=labels, coarse_before=coarse, coarse_after=coarse, work={}, mode=mode)


# --------------------------------------------------------------------------------------------------
# evaluate_clip / summarize
# --------------------------------------------------------------------------------------------------
def test_evaluate_clip_known_permutation_is_perfect() -> None:
    c = make_clip(n_frames=18, height=32, width=32, n_objects=3, seed=3, speed=1.5)
    gt = c.labels.copy()
    perm = np.array([7, 2, 0, 5])  # class -> cluster id
    labels = perm[gt].astype(np.uint8)
    gt[:, :2, :2] = 255  # a void corner (background underneath, so the prediction is constant there)
    seg = FakeSegmenter(labels, labels.astype(np.int64))  # coarse grid = full resolution: exact assignment
    out = ev.evaluate_clip(seg, c.frames, gt, small_config(), num_classes=4, davis=True)
    assert seg.calls == 1
    assert out["mapping"] == {7: 0, 2: 1, 0: 2, 5: 3}
    assert out["mIoU"] == pytest.approx(1.0)
    assert out["mVC8"] == pytest.approx(1.0) and out["mVC16"] == pytest.approx(1.0)
    assert out["vc8"].size == 10 and out["vc16"].size == 2  # windows 0 .. T-n-1
    conf = out["conf"]
    assert conf.shape == (5, 5) and conf.sum() == (gt != 255).sum() and conf[:, 4].sum() == 0
    assert np.count_nonzero(conf - np.diag(np.diag(conf))) == 0
    assert (
        out["J"] == pytest.approx(1.0) and out["F"] == pytest.approx(1.0) and out["J&F"] == pytest.approx(1.0)
    )
    assert out["frames"] == 18 and out["work"] == {"unet_samples": 1}


def test_unassigned_clusters_count_as_errors() -> None:
    c = make_clip(n_frames=10, height=32, width=32, n_objects=2, seed=4, speed=2.0)
    gt = c.labels
    labels = gt.astype(np.uint8).copy()
    late = (gt == 2) & (np.arange(10) >= 5)[:, None, None]
    labels[late] = 9  # a cluster that does not exist in frame 0: no label for it
    out = ev.evaluate_clip(FakeSegmenter(labels, labels.astype(np.int64)), c.frames, gt, small_config(), 3)
    assert 9 not in out["mapping"]
    conf = out["conf"]
    assert out["unassigned_pixels"] == late.sum() == conf[:, 3].sum() == conf[2, 3]
    assert conf[3].sum() == 0  # the unassigned row is empty: never a ground-truth class
    assert 0 < out["mIoU"] < 1
    iou2 = conf[2, 2] / conf[2].sum()  # class 2's misses go to "unassigned", not to another class
    assert out["mIoU"] == pytest.approx((1 + 1 + iou2) / 3)


def test_unannotated_frames_are_left_out() -> None:
    """Cityscapes-like snippets: labels are assigned on the first annotated frame, and VC windows that
    contain an unannotated frame are undefined."""
    c = make_clip(n_frames=12, height=32, width=32, n_objects=2, seed=6, speed=1.0)
    gt = c.labels.copy()
    ann = [i >= 2 for i in range(12)]
    gt[:2] = 255
    labels = (c.labels + 1).astype(np.uint8)
    coarse = labels.astype(np.int64).copy()
    coarse[:2] = 0  # a cluster seen only in the unannotated frames
    out = ev.evaluate_clip(FakeSegmenter(labels, coarse), c.frames, gt, small_config(), 3, annotated=ann)
    assert out["assign_frame"] == 2 and out["mapping"] == {1: 0, 2: 1, 3: 2}
    assert out["mIoU"] == pytest.approx(1.0)
    vc = out["vc8"]
    assert vc.size == 4 and np.isnan(vc[:2]).all() and np.allclose(vc[2:], 1.0)


def test_summarize_pools_confusion_matrices_and_windows() -> None:
    a = {
        "conf": np.array([[10, 0, 0], [0, 0, 0], [0, 0, 0]]),
        "vc8": np.array([1.0, 1.0, np.nan]),
        "vc16": [],
    }
    b = {"conf": np.array([[0, 0, 0], [5, 5, 0], [0, 0, 0]]), "vc8": np.array([0.4]), "vc16": []}
    a.update(J=0.8, F=0.6, **{"J&F": 0.7}, frames=3, seconds=1.0)
    b.update(J=0.6, F=0.4, **{"J&F": 0.5}, frames=2, seconds=2.0)
    s = ev.summarize([a, b])
    assert (
        s["mIoU"] == pytest.approx(mean_iou(a["conf"] + b["conf"])) == pytest.approx((10 / 15 + 5 / 10) / 2)
    )
    assert s["mVC8"] == pytest.approx(0.8)  # all windows pooled, not the mean of per-clip means (0.7)
    assert math.isnan(s["mVC16"])
    assert s["J"] == pytest.approx(0.7) and s["F"] == pytest.approx(0.5) and s["J&F"] == pytest.approx(0.6)
    assert s["frames"] == 5 and s["videos"] == 2 and s["seconds"] == pytest.approx(3.0)
    # different class counts (DAVIS 2017): padded, the unassigned column kept last
    c3 = {"conf": np.array([[1, 0, 0, 1], [0, 2, 0, 0], [0, 0, 3, 0], [0, 0, 0, 0]]), "vc8": [], "vc16": []}
    s2 = ev.summarize([a, c3])
    assert s2["num_classes"] == 3 and s2["unassigned_fraction"] == pytest.approx(1 / 17)


def _squares(n_frames: int, n_objects: int, size: int = 32) -> np.ndarray:
    """(T, size, size) labels: object k (1..n_objects) a 6x6 square in its own column, 0 elsewhere."""
    gt = np.zeros((n_frames, size, size), np.int64)
    for k in range(1, n_objects + 1):
        gt[:, 4:10, 7 * (k - 1) + 1 : 7 * (k - 1) + 7] = k
    return gt


def test_davis_pools_objects_not_sequences() -> None:
    """The DAVIS 2017 toolkit's J-Mean / F-Mean average over all objects of all sequences: a sequence
    with one missed object and one with four perfect objects give 0.8, not the per-sequence 0.5."""
    gt_a = _squares(5, 1)
    pred_a = np.zeros_like(gt_a)  # the object is never segmented: J = F = 0
    gt_b = _squares(5, 4)
    a = ev.score_result(pred_a, pred_a, gt_a, num_classes=2, davis=True)
    b = ev.score_result(gt_b, gt_b, gt_b, num_classes=5, davis=True)  # perfect: J = F = 1 per object
    assert a["J_objects"] == [0.0] and a["F_objects"] == [0.0] and a["J&F"] == 0.0
    assert b["J_objects"] == [1.0] * 4 and b["F_objects"] == [1.0] * 4 and b["J&F"] == 1.0
    s = ev.summarize([a, b])
    assert s["objects"] == 5
    assert s["J"] == pytest.approx(0.8) and s["F"] == pytest.approx(0.8) and s["J&F"] == pytest.approx(0.8)
    # the same pooling after the JSON round trip of per_video.jsonl
    from vidseg_nb.evaluation.store import from_json, to_json

    s2 = ev.summarize([from_json(json.loads(json.dumps(to_json(r)))) for r in (a, b)])
    assert s2["J&F"] == pytest.approx(0.8)


# --------------------------------------------------------------------------------------------------
# evaluate_dataset: resume, corrupt lines, Ray
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def camvid(tmp_path_factory) -> Path:
    return write_camvid(tmp_path_factory.mktemp("camvid"))


@pytest.fixture(scope="module")
def clean_run(tiny, camvid, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    summary = ev.evaluate_dataset(open_dataset("camvid", camvid), tiny, small_config(), out, progress=False)
    return out, summary


def test_clean_run_writes_lines_and_summary(clean_run) -> None:
    out, summary = clean_run
    lines = _lines(out / "per_video.jsonl")
    assert list(lines) == ["seq0", "seq1"]
    assert all(r["frames"] == N_FRAMES and len(r["vc8"]) == N_FRAMES - 8 for r in lines.values())
    saved = json.loads((out / "summary.json").read_text())
    assert saved["videos"] == 2 and saved["frames"] == 2 * N_FRAMES
    assert 0 <= saved["mIoU"] <= 1 and 0 <= saved["mVC8"] <= 1 and saved["mVC16"] is None  # 10 frames
    assert saved["mIoU"] == pytest.approx(summary["mIoU"])
    assert saved["run"]["model"] == "tiny" and saved["run"]["mode"] == "preview"
    assert np.array(lines["seq0"]["conf"]).shape == (12, 12)  # 11 CamVid classes + unassigned


def test_resume_after_crash_recomputes_nothing(tiny, camvid, clean_run, tmp_path, monkeypatch) -> None:
    clean_out, _ = clean_run
    ds = open_dataset("camvid", camvid)
    calls: list[str] = []
    real = runner.eval_sample

    def crashing(sample, *a, **k):
        calls.append(sample.name)
        if sample.name == "seq1":
            raise Crash("simulated crash")  # the process dies: no line for seq1
        return real(sample, *a, **k)

    monkeypatch.setattr(runner, "eval_sample", crashing)
    with pytest.raises(Crash, match="simulated crash"):
        ev.evaluate_dataset(ds, tiny, small_config(), tmp_path, progress=False)
    assert calls == ["seq0", "seq1"]
    assert list(_lines(tmp_path / "per_video.jsonl")) == ["seq0"] and not (tmp_path / "summary.json").exists()

    calls.clear()
    monkeypatch.setattr(runner, "eval_sample", lambda s, *a, **k: (calls.append(s.name), real(s, *a, **k))[1])
    before = tiny.counters.snapshot()
    summary = ev.evaluate_dataset(ds, tiny, small_config(), tmp_path, progress=False)
    work = tiny.counters.since(before)
    assert calls == ["seq1"]  # the finished video is not recomputed
    assert work == _lines(clean_out / "per_video.jsonl")["seq1"]["work"]  # one video's work, no more
    assert _lines(tmp_path / "per_video.jsonl") == _lines(clean_out / "per_video.jsonl")
    clean = json.loads((clean_out / "summary.json").read_text())
    assert _strip(json.loads((tmp_path / "summary.json").read_text())) == _strip(clean)
    assert summary["videos"] == 2

    calls.clear()  # a third run has nothing left to do
    ev.evaluate_dataset(ds, tiny, small_config(), tmp_path, progress=False)
    assert calls == []
    with pytest.raises(ConfigError, match="another setting"):  # never mix settings in one folder
        ev.evaluate_dataset(ds, tiny, small_config(n_clusters=4), tmp_path, progress=False)


def test_corrupt_trailing_line_is_dropped(camvid, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "VideoSegmenter", ColourSegmenter)
    ds = open_dataset("camvid", camvid)
    bb = SimpleNamespace(source="fake", is_random=False)
    clean = ev.evaluate_dataset(ds, bb, small_config(), tmp_path / "clean", progress=False)
    out = tmp_path / "crashed"
    ev.evaluate_dataset(ds, bb, small_config(), out, videos=1, progress=False)
    per_video = out / "per_video.jsonl"
    good = per_video.read_text()
    per_video.write_text(good + "\n" + good[: len(good) // 2])  # a blank line and a half-written one
    ColourSegmenter.calls = 0
    with pytest.warns(UserWarning, match="partial or corrupt"):
        resumed = ev.evaluate_dataset(ds, bb, small_config(), out, progress=False)
    assert ColourSegmenter.calls == 1
    text = per_video.read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 2
    assert _lines(per_video) == _lines(tmp_path / "clean" / "per_video.jsonl")
    assert _strip(resumed)["mIoU"] == clean["mIoU"] and resumed["mVC8"] == clean["mVC8"]


def test_failing_video_is_recorded_and_the_run_goes_on(camvid, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "VideoSegmenter", ColourSegmenter)
    ds = open_dataset("camvid", camvid)
    bb = SimpleNamespace(source="fake", is_random=False)
    only0 = ev.evaluate_dataset(ds, bb, small_config(), tmp_path / "only0", videos=["seq0"], progress=False)
    clean = ev.evaluate_dataset(ds, bb, small_config(), tmp_path / "clean", progress=False)
    real = runner.eval_sample
    tries: list[str] = []

    def flaky(sample, *a, **k):
        tries.append(sample.name)
        if sample.name == "seq0":
            raise ValueError("unreadable frame 3")
        return real(sample, *a, **k)

    monkeypatch.setattr(runner, "eval_sample", flaky)
    out = tmp_path / "out"
    s = ev.evaluate_dataset(ds, bb, small_config(), out, progress=False, retries=2)
    assert tries == ["seq0"] * 3 + ["seq1"]  # 1 + retries attempts, then the next video
    lines = _lines(out / "per_video.jsonl")
    assert lines["seq0"]["error"] == "ValueError: unreadable frame 3" and lines["seq0"]["attempts"] == 3
    assert "conf" not in lines["seq0"] and "conf" in lines["seq1"]
    assert s["failed"] == 1 and s["failed_videos"] == ["seq0"] and s["videos"] == 1
    seq1 = ev.evaluate_dataset(ds, bb, small_config(), tmp_path / "only1", videos=["seq1"], progress=False)
    assert s["mIoU"] == seq1["mIoU"] and s["frames"] == N_FRAMES  # scored without the failed video
    assert "failed" in ev.format_summary(s) and only0["failed"] == 0

    tries.clear()  # a rerun retries the failed video only; once it passes, the summary is a clean run's
    monkeypatch.setattr(
        runner, "eval_sample", lambda smp, *a, **k: (tries.append(smp.name), real(smp, *a, **k))[1]
    )
    s = ev.evaluate_dataset(ds, bb, small_config(), out, progress=False)
    assert tries == ["seq0"] and s["failed"] == 0 and "failed_videos" not in s
    assert _strip(s)["mIoU"] == clean["mIoU"] and s["mVC8"] == clean["mVC8"]


def test_run_json_holds_the_full_config(clean_run) -> None:
    out, _ = clean_run
    run = json.loads((out / "run.json").read_text())
    fields = {f.name for f in __import__("dataclasses").fields(SegConfig)} - {"extra"}
    assert set(run["config"]) == fields
    assert SegConfig(**run["config"]) == small_config()


def test_evaluation_never_imports_the_cli_and_old_path_works() -> None:
    import subprocess
    import sys

    code = (
        "import sys, vidseg_nb.evaluation, vidseg_nb.evaluate; "
        "from vidseg_nb.evaluate import evaluate_clip, format_table, run_ablation, summarize; "
        "assert 'vidseg_nb.cli' not in sys.modules, 'evaluation imported the CLI'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert old_path.evaluate_clip is ev.evaluate_clip and old_path.run_ablation is ev.run_ablation


def write_davis(root: Path, n_frames: int = 5) -> Path:
    for v in range(2):
        c = make_clip(n_frames=n_frames, height=64, width=64, n_objects=1, seed=20 + v, speed=3.0)
        for i in range(n_frames):
            f = root / "JPEGImages" / "480p" / f"s{v}" / f"{i:05d}.jpg"
            a = root / "Annotations" / "480p" / f"s{v}" / f"{i:05d}.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            a.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(c.frames[i]).save(f)
            Image.fromarray((255 * (c.labels[i] > 0)).astype(np.uint8), mode="L").save(a)
    return root


def test_davis_dataset_gets_j_and_f(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "VideoSegmenter", ColourSegmenter)
    ds = open_dataset("davis", write_davis(tmp_path / "davis"))
    bb = SimpleNamespace(source="fake", is_random=False)
    s = ev.evaluate_dataset(ds, bb, small_config(), tmp_path / "out", progress=False)
    recs = _lines(tmp_path / "out" / "per_video.jsonl")
    assert all(0 <= r["J"] <= 1 and 0 <= r["F"] <= 1 for r in recs.values())
    assert all(len(r["J_objects"]) == len(r["F_objects"]) == 1 for r in recs.values())  # DAVIS 2016: 1 object
    j = [x for r in recs.values() for x in r["J_objects"]]
    f = [x for r in recs.values() for x in r["F_objects"]]
    assert s["objects"] == 2 and s["J"] == pytest.approx(np.mean(j)) and s["F"] == pytest.approx(np.mean(f))
    assert s["J&F"] == pytest.approx((np.mean(j) + np.mean(f)) / 2)
    table = ev.format_summary(s)
    assert "J&F" in table and "mVC8" not in table


# --------------------------------------------------------------------------------------------------
# Table 2
# --------------------------------------------------------------------------------------------------
PAPER_SWITCHES = [  # Table 2: (B, masked modulation, feature aggregation, CBR), lambda and s with MM on / off
    (1, False, False, False),
    (14, False, False, False),
    (14, True, False, False),
    (14, True, True, False),
    (14, True, False, True),
    (14, True, True, True),
]


def test_table2_rows_are_valid_configs() -> None:
    assert len(ev.TABLE2_ROWS) == len(ev.PAPER_TABLE2_SD) == 6
    cfgs = [preset("vidseg").replace(**over) for _, over in ev.TABLE2_ROWS]
    assert [(c.batch_size, c.masked_modulation, c.aggregate, c.refine) for c in cfgs] == PAPER_SWITCHES
    for c in cfgs:
        assert (c.lam, c.s) == ((50.0, 0.7) if c.masked_modulation else (10.0, 1.0))
    assert cfgs[0].to_dict() == preset("emerdiff").replace(preset="vidseg").to_dict()
    assert cfgs[-1] == preset("vidseg")


def test_run_ablation_runs_every_row(tiny, monkeypatch) -> None:
    """Each row runs with the paper's switches, and a switch that changes a stage changes its output:
    B and aggregation change M^j, CBR changes M~^j, masked modulation changes the final labels."""
    seen: list[tuple] = []

    class Spy(pipeline.VideoSegmenter):
        def segment(self, clip, config=None, **kw):
            res = super().segment(clip, config, **kw)
            seen.append((config, res.coarse_before.copy(), res.coarse_after.copy(), res.labels.copy()))
            return res

    monkeypatch.setattr(pipeline, "VideoSegmenter", Spy)
    c = make_clip(n_frames=3, height=SIZE, width=SIZE, n_objects=2, seed=5, speed=4.0)
    base = small_config(modulation=True)
    before = tiny.counters.snapshot()
    results = ev.run_ablation(tiny, [("clip", c.frames, c.labels)], base, num_classes=3, progress=False)
    assert tiny.counters.since(before)["vae_decodes"] > 0  # full mode: modulated images were decoded
    assert [r["row"] for r in results] == [name for name, _ in ev.TABLE2_ROWS]
    assert len(seen) == 6
    for r, (_, over), sw, (cfg, *_) in zip(results, ev.TABLE2_ROWS, PAPER_SWITCHES, seen):
        assert cfg == r["config"] == base.replace(**over)  # the row's config is the one that ran
        assert (cfg.batch_size, cfg.masked_modulation, cfg.aggregate, cfg.refine) == sw
        assert (cfg.lam, cfg.s) == ((50.0, 0.7) if cfg.masked_modulation else (10.0, 1.0))
        assert 0 <= r["mIoU"] <= 1 and math.isnan(r["mVC8"])  # 3 frames: no VC_8 window
        assert r["per_clip"]["clip"]["mode"] == "full"

    def differ(i: int, j: int, what: int) -> bool:
        return not np.array_equal(seen[i][what], seen[j][what])

    before_, after_, labels_ = 1, 2, 3
    assert differ(0, 1, before_)  # B = 1 -> 14: another context model
    assert not differ(1, 2, after_) and differ(1, 2, labels_)  # MM: same coarse maps, other labels
    assert differ(2, 3, before_)  # aggregation: other features F~
    assert not differ(2, 4, before_) and differ(2, 4, after_)  # CBR: same M^j, refined M~^j
    assert not differ(3, 5, before_) and differ(3, 5, after_)
    table = ev.format_table(results)
    rows = [x for x in table.splitlines() if x.startswith("|")][2:]
    assert len(rows) == 6
    mark = {True: " ✓ ", False: " ✗ "}
    for row, (b, mm, agg, cbr) in zip(rows, PAPER_SWITCHES):
        assert row.split("|")[1:5] == [f" {b} ", mark[mm], mark[agg], mark[cbr]]
    assert "33.4" in rows[0] and "88.4" in rows[5] and "VSPW" in table
    plain = ev.format_table(results, paper=False)
    assert "33.4" not in plain and len([x for x in plain.splitlines() if x.startswith("|")]) == 8
