"""VideoSegmenter end to end on the tiny model, its cache, presets, Table 2 switches, config, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from vidseg_nb.cli import main as cli_main
from vidseg_nb.config import PRESETS, ConfigError, SegConfig, preset
from vidseg_nb.metrics import apply_label_map, assign_labels, confusion_matrix, mean_iou
from vidseg_nb.pipeline import VideoSegmenter
from vidseg_nb.synthetic import make_clip
from vidseg_nb.video import read_video

# small and quick: 128x128 frames (8x8 feature grid), 3 denoising steps
FAST = dict(n_clusters=3, kmeans_n_init=2, max_side=256, batch_size=3)


@pytest.fixture(scope="module")
def clip():
    return make_clip(n_frames=4, height=130, width=140, n_objects=2, seed=2)


@pytest.fixture(scope="module")
def segmenter(tiny):
    return VideoSegmenter(tiny, SegConfig(**FAST))


@pytest.fixture(scope="module")
def first(segmenter, clip):
    return segmenter.segment(clip.frames, progress=False)


def test_end_to_end_shapes_labels_and_work(first, clip):
    res = first
    assert res.labels.shape == clip.labels.shape  # input resolution, every frame
    assert res.size == (128, 128) and res.original_size == (130, 140) and res.mode == "full"
    assert res.coarse_before.shape == res.coarse_after.shape == (4, 8, 8)
    # every label is a cluster present in frame 1's coarse map (Omega only predicts ids it was fitted on)
    assert set(np.unique(res.labels)) <= set(np.unique(res.coarse_before[0]))
    assert set(np.unique(res.coarse_after)) <= set(np.unique(res.coarse_before[0]))
    # work: (25 - t_m) x 2 x (1 + 2 L_f) UNet samples and 2 L_f decodes per frame
    L = [len(np.unique(m)) if len(np.unique(m)) > 1 else 0 for m in res.coarse_after]
    assert res.work["unet_samples"] == sum(3 * 2 * (1 + 2 * n) for n in L)
    assert res.work["vae_decodes"] == sum(2 * n for n in L) and res.work["vae_encodes"] == 4
    assert res.is_random_model
    d = res.details[2]
    assert d.diff.raw.shape[0] == len(d.diff.labels) and d.diff.plus.shape[1:] == (128, 128, 3)
    assert d.filtered.shape == d.diff.raw.shape and d.final.shape == (128, 128)
    assert set(d.features) == {0, 6, 7, 8} and d.features[7].shape == (8, 8, 64)


def test_same_clip_and_seed_give_identical_labels(tiny, first, clip):
    again = VideoSegmenter(tiny, SegConfig(**FAST)).segment(clip.frames, progress=False)
    np.testing.assert_array_equal(again.labels, first.labels)


def test_new_s_reruns_no_unet_sample(segmenter, first, clip):
    c0 = segmenter.backbone.counters.snapshot()
    res = segmenter.segment(clip.frames, segmenter.config.replace(s=0.0), progress=False)
    assert all(v == 0 for v in segmenter.backbone.counters.since(c0).values())
    assert res.computed == ("filter",) and first.computed == ("features", "coarse maps", "stage 3", "filter")
    np.testing.assert_array_equal(res.coarse_after, first.coarse_after)
    f = 1
    raw, old = res.details[f].diff.raw, first.details[f].filtered
    np.testing.assert_array_equal(raw, first.details[f].diff.raw)  # D_l served from the cache
    assert not np.allclose(res.details[f].filtered, old)  # but re-filtered with the new s


def test_new_lambda_reruns_stage3_only(segmenter, first, clip):
    c0 = segmenter.backbone.counters.snapshot()
    res = segmenter.segment(clip.frames, segmenter.config.replace(lam=20.0), progress=False)
    w = segmenter.backbone.counters.since(c0)
    assert "features" not in res.timings and "coarse maps (stages 1-2)" not in res.timings
    assert res.features is first.features  # the cached feature extraction, not a new one
    assert res.computed == ("stage 3", "filter")
    np.testing.assert_array_equal(res.coarse_after, first.coarse_after)
    assert w["unet_samples"] == first.work["unet_samples"]  # stage 3: reference run + modulated runs
    assert not np.allclose(res.details[0].diff.raw, first.details[0].diff.raw)


def test_new_cluster_count_reruns_stages_1_to_3_not_features(segmenter, first, clip):
    res = segmenter.segment(clip.frames, segmenter.config.replace(n_clusters=2), progress=False)
    assert "features" not in res.timings and "coarse maps (stages 1-2)" in res.timings
    assert res.features is first.features and res.computed == ("coarse maps", "stage 3", "filter")
    assert len(np.unique(res.coarse_before[0])) <= 2


def test_preview_mode_upsamples_refined_coarse_maps(tiny, clip):
    seg = VideoSegmenter(tiny, SegConfig(**FAST))
    c0 = tiny.counters.snapshot()
    res = seg.segment(clip.frames, mode="preview", progress=False)
    w = tiny.counters.since(c0)
    assert res.mode == "preview" and w["vae_decodes"] == 0
    assert w["unet_partial_samples"] == 2 * 4  # last step stops after block 8
    from vidseg_nb.video import resize_labels

    np.testing.assert_array_equal(res.labels, resize_labels(res.coarse_after, (130, 140)))


def test_long_clip_keeps_only_requested_intermediates(tiny):
    seg = VideoSegmenter(tiny, SegConfig(**{**FAST, "batch_size": 4}), cache_frames=4)
    frames = make_clip(n_frames=9, height=64, width=64, seed=5).frames
    res = seg.segment(frames, mode="preview", keep=[7], progress=False)
    assert set(res.details) == {7} and res.features is None and seg._cache is None
    assert res.labels.shape == (9, 64, 64)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_run_end_to_end(tiny, name):
    cfg = preset(name, n_clusters=3, kmeans_n_init=1, max_side=64, t_m=24)
    frames = make_clip(n_frames=3, height=64, width=64, seed=1).frames
    res = VideoSegmenter(tiny, cfg, cache_frames=0).segment(frames, progress=False)
    assert res.labels.shape == (3, 64, 64) and res.config.preset == name
    if name == "emerdiff":
        assert cfg.batch_size == 1 and not cfg.refine and not cfg.aggregate and cfg.s_effective == 1.0
        np.testing.assert_array_equal(res.coarse_before, res.coarse_after)  # no CBR


@pytest.mark.parametrize(
    "switch",
    [
        dict(batch_size=1),
        dict(masked_modulation=False, lam=10.0, s=1.0),
        dict(aggregate=False),
        dict(refine=False),
    ],
)
def test_table2_switches_run_end_to_end(tiny, switch):
    cfg = SegConfig(n_clusters=3, kmeans_n_init=1, max_side=64, t_m=24, batch_size=2).replace(**switch)
    frames = make_clip(n_frames=3, height=64, width=64, seed=3).frames
    res = VideoSegmenter(tiny, cfg, cache_frames=0).segment(frames, progress=False)
    assert res.labels.shape == (3, 64, 64)
    if not cfg.refine or cfg.batch_size == 1:
        np.testing.assert_array_equal(res.coarse_before, res.coarse_after)


def test_planted_segment_miou_smoke(first, clip):
    """First-frame assignment + mIoU against the planted ground truth (a smoke figure, not quality)."""
    mapping = assign_labels(first.coarse_after[0], clip.labels[0])
    pred = apply_label_map(first.labels.astype(np.int64), mapping, default=clip.n_labels)
    conf = confusion_matrix(clip.labels, pred, clip.n_labels + 1)
    miou = mean_iou(conf)
    assert 0.0 <= miou <= 1.0 and conf.sum() == clip.labels.size


# ---------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "bad, field",
    [(dict(t_m=25), "t_m"), (dict(t_m=-1), "t_m"), (dict(s=1.5), "s"), (dict(s=-0.1), "s"), (dict(batch_size=0), "batch_size"),
     (dict(max_side=500), "max_side"), (dict(lam=-1.0), "lam"), (dict(blur_kernel=4), "blur_kernel"), (dict(t_f=3), "t_f")],
)  # fmt: skip
def test_config_validation_names_the_field(bad, field):
    with pytest.raises(ConfigError, match=f"SegConfig.{field}="):
        SegConfig(**bad)


def test_config_defaults_are_the_papers():
    c = SegConfig()
    assert (c.n_steps, c.t_m, c.guidance_scale, c.batch_size, c.n_clusters, c.n_neighbors) == (
        25,
        22,
        5.0,
        14,
        20,
        4,
    )
    assert (c.lam, c.s, c.blur_kernel, c.blur_sigma, c.radius2, c.last_blend_step) == (
        50.0,
        0.7,
        5,
        3.0,
        1.0,
        24,
    )
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("nope")
    with pytest.raises(ConfigError, match="unknown SegConfig field"):
        c.replace(lambda_=3)


# ---------------------------------------------------------------------------------------- CLI
def test_cli_segment_tiny_writes_videos_and_pngs(tmp_path, capsys):
    src = tmp_path / "clip.mp4"
    assert cli_main(["example", str(src), "--frames", "4", "--height", "64", "--width", "96"]) == 0
    out = tmp_path / "seg.mp4"
    rc = cli_main([
        "segment", str(src), "-o", str(out), "--model", "tiny", "--max-side", "64", "--clusters", "3",
        "--t-m", "24", "--device", "cpu",
    ])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr()
    assert "random weights" in text.err and "random weights" in text.out
    overlay = read_video(out)
    labels = read_video(tmp_path / "seg_labels.mp4")
    assert len(overlay) == len(labels) == 4 and overlay.size == (64, 96)
    pngs = sorted((tmp_path / "seg_labels").glob("*.png"))
    assert len(pngs) == 4


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video")
    assert cli_main(["segment", str(bad), "--model", "tiny", "-o", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.mp4" in err[0] and "Traceback" not in err[0]
    assert cli_main(["segment", str(bad), "--s", "3", "-o", str(tmp_path / "x.mp4")]) == 2
    assert "SegConfig.s=" in capsys.readouterr().err
