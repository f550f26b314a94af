"""Evaluation: per-clip scoring with a known answer, pooling, resumable dataset runs (local and Ray),
the Table 2 ablation and the ``vidseg evaluate`` / ``vidseg ablate`` commands.

Model runs use the random tiny backbone on 128x128 clips processed at 64x64 (a 4x4 feature grid), in
preview mode where the test is about bookkeeping, so the whole file stays small.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from vidseg_nb import cli, pipeline
from vidseg_nb import evaluate as ev
from vidseg_nb.config import ConfigError, SegConfig, preset
from vidseg_nb.datasets import open_dataset
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
    real = ev.eval_sample

    def crashing(sample, *a, **k):
        calls.append(sample.name)
        if sample.name == "seq1":
            raise RuntimeError("simulated crash")
        return real(sample, *a, **k)

    monkeypatch.setattr(ev, "eval_sample", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ev.evaluate_dataset(ds, tiny, small_config(), tmp_path, progress=False)
    assert calls == ["seq0", "seq1"]
    assert list(_lines(tmp_path / "per_video.jsonl")) == ["seq0"] and not (tmp_path / "summary.json").exists()

    calls.clear()
    monkeypatch.setattr(ev, "eval_sample", lambda s, *a, **k: (calls.append(s.name), real(s, *a, **k))[1])
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
    assert s["J&F"] == pytest.approx(np.mean([r["J&F"] for r in recs.values()]))
    table = ev.format_summary(s)
    assert "J&F" in table and "mVC8" not in table


def test_ray_matches_local_run(tiny, camvid, clean_run, tmp_path) -> None:
    ray = pytest.importorskip("ray", reason="Ray is optional (pip install 'vidseg_nb[cluster]')")
    clean_out, _ = clean_run
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ev.evaluate_dataset(
            open_dataset("camvid", camvid), tiny, small_config(), tmp_path, progress=False, use_ray=True
        )
    finally:
        ray.shutdown()
    assert _lines(tmp_path / "per_video.jsonl") == _lines(clean_out / "per_video.jsonl")
    ours = json.loads((tmp_path / "summary.json").read_text())
    assert _strip(ours) == _strip(json.loads((clean_out / "summary.json").read_text()))


# --------------------------------------------------------------------------------------------------
# Table 2
# --------------------------------------------------------------------------------------------------
def test_table2_rows_are_valid_configs() -> None:
    assert len(ev.TABLE2_ROWS) == len(ev.PAPER_TABLE2_SD) == 6
    cfgs = [preset("vidseg").replace(**over) for _, over in ev.TABLE2_ROWS]
    got = [(c.batch_size, c.masked_modulation, c.aggregate, c.refine) for c in cfgs]
    assert got == [
        (1, False, False, False),
        (14, False, False, False),
        (14, True, False, False),
        (14, True, True, False),
        (14, True, False, True),
        (14, True, True, True),
    ]
    for c in cfgs:
        assert (c.lam, c.s) == ((50.0, 0.7) if c.masked_modulation else (10.0, 1.0))
    assert cfgs[0].to_dict() == preset("emerdiff").replace(preset="vidseg").to_dict()
    assert cfgs[-1] == preset("vidseg")


def test_run_ablation_runs_every_row(tiny) -> None:
    c = make_clip(n_frames=3, height=SIZE, width=SIZE, n_objects=2, seed=5, speed=4.0)
    base = small_config(modulation=True)
    before = tiny.counters.snapshot()
    results = ev.run_ablation(tiny, [("clip", c.frames, c.labels)], base, num_classes=3, progress=False)
    assert tiny.counters.since(before)["vae_decodes"] > 0  # full mode: modulated images were decoded
    assert [r["row"] for r in results] == [name for name, _ in ev.TABLE2_ROWS]
    for r, (_, over) in zip(results, ev.TABLE2_ROWS):
        assert r["config"] == base.replace(**over)
        assert 0 <= r["mIoU"] <= 1 and math.isnan(r["mVC8"])  # 3 frames: no VC_8 window
        assert r["per_clip"]["clip"]["mode"] == "full"
    table = ev.format_table(results)
    rows = [x for x in table.splitlines() if x.startswith("|")][2:]
    assert len(rows) == 6
    assert rows[0].split("|")[1:5] == [" 1 ", " ✗ ", " ✗ ", " ✗ "]
    assert "33.4" in rows[0] and "88.4" in rows[5] and "VSPW" in table
    plain = ev.format_table(results, paper=False)
    assert "33.4" not in plain and len([x for x in plain.splitlines() if x.startswith("|")]) == 8


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
FAST = ["--model", "tiny", "--max-side", "64", "--clusters", "3", "--t-m", "24", "--batch-size", "4"]


def test_cli_evaluate(camvid, tmp_path, capsys) -> None:
    out = tmp_path / "ev"
    rc = cli.main(["evaluate", "--dataset", "camvid", "--root", str(camvid), "--videos", "1", "--out", str(out),
                   "--preview", "--quiet", *FAST])  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == 1 and summary["run"]["config"]["n_clusters"] == 3
    printed = capsys.readouterr()
    assert "mIoU" in printed.out and str(out / "summary.json") in printed.out
    assert "random weights" in printed.err


def test_cli_ray_missing_says_how_to_install(camvid, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    rc = cli.main(
        ["evaluate", "--dataset", "camvid", "--root", str(camvid), "--out", str(tmp_path), "--ray", *FAST]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'vidseg_nb[cluster]'" in err and len(err.splitlines()) == 1


def test_cli_wrong_root_is_one_line_error(tmp_path, capsys) -> None:
    rc = cli.main(["evaluate", "--dataset", "camvid", "--root", str(tmp_path / "nope"), *FAST])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err


def test_cli_ablate_prints_table2(monkeypatch, capsys) -> None:
    seen = {}

    def fake(bb, clips, config, num_classes, ignore_index=255, **kw):
        seen.update(clips=clips, config=config, num_classes=num_classes)
        cfgs = [config.replace(**o) for _, o in ev.TABLE2_ROWS]
        return [
            dict(row=n, batch_size=c.batch_size, masked_modulation=c.masked_modulation, aggregate=c.aggregate,
                 refine=c.refine, mIoU=0.5, mVC8=0.25, mVC16=math.nan)
            for (n, _), c in zip(ev.TABLE2_ROWS, cfgs)
        ]  # fmt: skip

    monkeypatch.setattr(ev, "run_ablation", fake)
    monkeypatch.setattr(cli, "_load", lambda args: SimpleNamespace(source="tiny", is_random=True))
    assert cli.main(["ablate", "--synthetic", "2", "--max-frames", "5", *FAST]) == 0
    out = capsys.readouterr().out
    assert len(seen["clips"]) == 2 and seen["clips"][0][1].shape == (5, SIZE, SIZE, 3)
    assert seen["num_classes"] == 4 and seen["config"].n_clusters == 3
    rows = [x for x in out.splitlines() if x.startswith("| ")][1:]
    assert len(rows) == 6 and "50.0" in rows[0] and "smoke" in out
    assert cli.main(["ablate", *FAST]) == 2  # neither a dataset nor --synthetic
