"""The command line: flags generated from every SegConfig field, ``--config`` JSON precedence, the
config written by ``vidseg segment`` / ``vidseg evaluate``, ``--model-config``, ``vidseg evaluate``
(local and the Ray driver loading no model) and ``vidseg ablate``. (The CLI tests of
tests/test_pipeline.py and tests/test_svd.py cover ``vidseg segment`` end to end.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import typing
from types import SimpleNamespace

import numpy as np
import pytest
from test_evaluate import SIZE, write_camvid

from vidseg_nb import cli, loading
from vidseg_nb.config import PRESETS, SegConfig, preset
from vidseg_nb.errors import BackboneLoadError, ConfigError
from vidseg_nb.evaluation import ablation, runner

FAST = ["--model", "tiny", "--max-side", "64", "--clusters", "3", "--t-m", "24", "--batch-size", "4"]


@pytest.fixture(scope="module")
def camvid(tmp_path_factory):
    return write_camvid(tmp_path_factory.mktemp("camvid"))


def _parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["segment", "clip.mp4", *argv])


# --------------------------------------------------------------------------------------------------
# SegConfig flags
# --------------------------------------------------------------------------------------------------
def _other_value(f: dataclasses.Field, tp: typing.Any) -> tuple[list[str], typing.Any]:
    """Flags that set field ``f`` to a valid non-default value, and that value."""
    flag = "--" + f.name.replace("_", "-")
    base = preset("vidseg")
    cur = getattr(base, f.name)
    args = typing.get_args(tp)
    if tp is bool:
        return ([f"--no-{f.name.replace('_', '-')}"] if cur else [flag]), not cur
    if type(None) in args and cur is not None:
        return [flag, "none"], None
    valid = {"t_m": 20, "t_f": 23, "max_side": 128, "blur_kernel": 7, "s": 0.25, "max_frames": 3}
    v = valid.get(f.name, (cur or 0) + (2 if (int in args or tp is int) else 0.5))
    return [flag, str(v)], v


def test_every_segconfig_field_has_a_flag_with_its_help() -> None:
    hints = typing.get_type_hints(SegConfig)
    actions = {  # the field's own flag (--preview is another flag with dest "modulation")
        a.dest: a
        for a in cli.build_parser()._subparsers._group_actions[0].choices["segment"]._actions
        if f"--{a.dest.replace('_', '-')}" in a.option_strings
    }
    for f in dataclasses.fields(SegConfig):
        if f.name in ("preset", "extra"):
            continue
        argv, value = _other_value(f, hints[f.name])
        cfg = cli.config_from_args(_parse(*argv))
        assert getattr(cfg, f.name) == value, (f.name, argv)
        assert cfg.replace(**{f.name: getattr(preset("vidseg"), f.name)}) == preset(
            "vidseg"
        )  # only that field
        assert actions[f.name].help.startswith(f.metadata.get("help", "").replace("%", "%%")), f.name


def test_short_aliases_still_work() -> None:
    args = _parse("--lam", "20", "--s", "0.5", "--clusters", "5", "--batch-size", "3", "--t-m", "23",
                  "--max-frames", "4", "--max-side", "128", "--seed", "7", "--preview")  # fmt: skip
    cfg = cli.config_from_args(args)
    got = (cfg.lam, cfg.s, cfg.n_clusters, cfg.batch_size, cfg.t_m, cfg.max_frames, cfg.max_side, cfg.seed)
    assert got == (20.0, 0.5, 5, 3, 23, 4, 128, 7) and cfg.modulation is False
    assert cli.config_from_args(_parse()) == preset("vidseg")
    assert cli.config_from_args(_parse("--preset", "emerdiff")) == preset("emerdiff")


def test_config_json_precedence(tmp_path) -> None:
    """preset < --config JSON < explicit flags; run.json / OUT_config.json (fields under "config") work."""
    plain = tmp_path / "c.json"
    plain.write_text(json.dumps({"preset": "emerdiff", "n_clusters": 7, "lam": 33.0, "aggregate": True}))
    cfg = cli.config_from_args(_parse("--config", str(plain), "--lam", "44", "--no-aggregate"))
    assert (
        cfg.preset == "emerdiff" and cfg.batch_size == PRESETS["emerdiff"]["batch_size"]
    )  # the JSON's preset
    assert cfg.n_clusters == 7 and cfg.lam == 44.0 and cfg.aggregate is False  # flags win over the file
    cfg = cli.config_from_args(_parse("--preset", "vidseg", "--config", str(plain)))
    assert cfg.preset == "vidseg" and cfg.batch_size == 14 and cfg.lam == 33.0 and cfg.aggregate is True
    full = preset("emerdiff", n_clusters=9, t_f=23, max_frames=5)
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"model": "tiny", "config": cli.config_json(full)}))
    assert cli.config_from_args(_parse("--config", str(run))) == full
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"lambda_": 3}))
    with pytest.raises(ConfigError, match="lambda_"):
        cli.config_from_args(_parse("--config", str(bad)))


def test_bad_config_file_is_one_line_exit_2(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["segment", "x.mp4", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.json" in err


# --------------------------------------------------------------------------------------------------
# model loading
# --------------------------------------------------------------------------------------------------
def test_model_config_reaches_load_backbone(camvid, tmp_path, monkeypatch, capsys) -> None:
    seen: list[dict] = []

    def fake(source=None, device=None, dtype=None, *, config=None, **kw):
        seen.append(dict(source=source, device=device, config=config))
        raise BackboneLoadError(f"cannot load {source}")

    monkeypatch.setattr(loading, "load_backbone", fake)
    clip = tmp_path / "clip.mp4"
    assert cli.main(["example", str(clip), "--frames", "2", "--height", "64", "--width", "64"]) == 0
    mc = ["--model", "sd.safetensors", "--model-config", "cfgdir", "--device", "cpu"]
    assert cli.main(["segment", str(clip), "-o", str(tmp_path / "o.mp4"), *mc]) == 2
    assert (
        cli.main(
            ["evaluate", "--dataset", "camvid", "--root", str(camvid), "--out", str(tmp_path / "e"), *mc]
        )
        == 2
    )
    assert cli.main(["ablate", "--synthetic", "1", *mc]) == 2
    assert seen == [dict(source="sd.safetensors", device="cpu", config="cfgdir")] * 3
    assert "cannot load sd.safetensors" in capsys.readouterr().err


def test_open_backbone_prints_the_random_banner(tiny, monkeypatch, capsys) -> None:
    monkeypatch.setattr(loading, "load_backbone", lambda *a, **k: tiny)
    assert cli.open_backbone("tiny") is tiny
    assert cli.RANDOM_BANNER in capsys.readouterr().err
    monkeypatch.setattr(loading, "load_backbone", lambda *a, **k: SimpleNamespace(is_random=False))
    cli.open_backbone("real")
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------------
def test_cli_segment_writes_its_full_config(tmp_path, capsys) -> None:
    clip = tmp_path / "clip.mp4"
    assert cli.main(["example", str(clip), "--frames", "3", "--height", "64", "--width", "64"]) == 0
    out = tmp_path / "seg.mp4"
    argv = [
        "segment",
        str(clip),
        "-o",
        str(out),
        *FAST,
        "--preview",
        "--no-refine",
        "--t-f",
        "24",
        "--device",
        "cpu",
    ]
    assert cli.main(argv) == 0
    path = tmp_path / "seg_config.json"
    assert str(path) in capsys.readouterr().out
    saved = json.loads(path.read_text())
    assert saved["model"] == "tiny" and saved["mode"] == "preview" and saved["frames"] == 3
    expect = preset(
        "vidseg", max_side=64, n_clusters=3, t_m=24, batch_size=4, modulation=False, refine=False, t_f=24
    )
    assert set(saved["config"]) == {f.name for f in dataclasses.fields(SegConfig)} - {"extra"}
    assert SegConfig(**saved["config"]) == expect
    assert cli.config_from_args(_parse("--config", str(path))) == expect  # the run can be repeated from it


def test_cli_evaluate(camvid, tmp_path, capsys) -> None:
    out = tmp_path / "ev"
    rc = cli.main(["evaluate", "--dataset", "camvid", "--root", str(camvid), "--videos", "1", "--out", str(out),
                   "--preview", "--quiet", *FAST])  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == 1 and summary["run"]["config"]["n_clusters"] == 3
    run = json.loads((out / "run.json").read_text())
    assert SegConfig(**run["config"]) == preset(
        "vidseg", max_side=64, n_clusters=3, t_m=24, batch_size=4, modulation=False
    )
    printed = capsys.readouterr()
    assert "mIoU" in printed.out and str(out / "summary.json") in printed.out
    assert "random weights" in printed.err


def test_cli_evaluate_ray_driver_loads_no_model(camvid, tmp_path, monkeypatch, capsys) -> None:
    pytest.importorskip("ray")
    seen = {}

    def no_model(*a, **k):
        raise AssertionError("the driver loaded a model")

    def fake(dataset, backbone, config, out, **kw):
        seen.update(backbone=backbone, **kw)
        return {"videos": 1, "failed": 1, "failed_videos": ["seq1"], "frames": 10, "mIoU": 0.5,
                "mVC8": 0.5, "mVC16": math.nan, "run": {"mode": "preview", "model": backbone}}  # fmt: skip

    monkeypatch.setattr(loading, "load_backbone", no_model)
    monkeypatch.setattr(runner, "evaluate_dataset", fake)
    rc = cli.main(["evaluate", "--dataset", "camvid", "--root", str(camvid), "--out", str(tmp_path), "--ray",
                   "--address", "auto", "--workers", "3", "--retries", "2", *FAST])  # fmt: skip
    assert rc == 1  # a video failed
    assert seen["backbone"] == "tiny" and seen["use_ray"] is True and seen["ray_address"] == "auto"
    assert seen["workers"] == 3 and seen["retries"] == 2
    err = capsys.readouterr().err
    assert "random weights" in err and "seq1" in err


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


def test_cli_ablate_prints_table2(monkeypatch, capsys, tmp_path) -> None:
    seen = {}

    def fake(bb, clips, config, num_classes, ignore_index=255, **kw):
        seen.update(clips=clips, config=config, num_classes=num_classes)
        cfgs = [config.replace(**o) for _, o in ablation.TABLE2_ROWS]
        return [
            dict(row=n, config=c, batch_size=c.batch_size, masked_modulation=c.masked_modulation,
                 aggregate=c.aggregate, refine=c.refine, mIoU=0.5, mVC8=0.25, mVC16=math.nan)
            for (n, _), c in zip(ablation.TABLE2_ROWS, cfgs)
        ]  # fmt: skip

    monkeypatch.setattr(ablation, "run_ablation", fake)
    monkeypatch.setattr(cli, "open_backbone", lambda *a, **k: SimpleNamespace(source="tiny", is_random=True))
    js = tmp_path / "rows.json"
    argv = ["ablate", "--synthetic", "2", "--max-frames", "5", "--n-neighbors", "2", "--json", str(js), *FAST]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert len(seen["clips"]) == 2 and seen["clips"][0][1].shape == (5, SIZE, SIZE, 3)
    assert seen["num_classes"] == 4 and seen["config"].n_clusters == 3 and seen["config"].n_neighbors == 2
    rows = [x for x in out.splitlines() if x.startswith("| ")][1:]
    assert len(rows) == 6 and "50.0" in rows[0] and "smoke" in out
    saved = json.loads(js.read_text())
    assert [SegConfig(**r["config"]).batch_size for r in saved] == [1, 14, 14, 14, 14, 14]
    assert saved[0]["mVC16"] is None
    assert cli.main(["ablate", *FAST]) == 2  # neither a dataset nor --synthetic


def test_cli_segment_with_the_authors_overlapping_last_batch(tiny, tmp_path, monkeypatch, capsys) -> None:
    """``--shifted-last-batch`` (the ``authors`` preset's row 7) on the CLI: streamed like any setting (a
    batch writes its frames up to the next batch's start, the later batch wins the overlap): the same
    labels as ``segment()``, all frames written once, no checkpoint left (issue 23)."""
    from vidseg_nb.authors import batch_plan
    from vidseg_nb.pipeline import VideoSegmenter
    from vidseg_nb.video import read_label_png

    clip = tmp_path / "c.mp4"
    assert cli.main(["example", str(clip), "--frames", "5", "--height", "64", "--width", "64"]) == 0
    monkeypatch.setattr(cli, "_open", lambda args: tiny)
    argv = [
        "segment",
        str(clip),
        "-o",
        str(tmp_path / "o.mp4"),
        *FAST,
        "--batch-size",
        "2",
        "--shifted-last-batch",
    ]
    capsys.readouterr()
    assert cli.main([*argv, "--quiet"]) == 0
    assert "whole clip" not in capsys.readouterr().err
    assert not (tmp_path / "o_state.npz").exists()
    config = cli.config_from_args(cli.build_parser().parse_args(argv))
    assert batch_plan(5, config) == [(0, 2), (2, 4), (3, 5)]  # frame 3 is in two batches
    res = VideoSegmenter(tiny, config).segment(str(clip), progress=False)
    pngs = sorted((tmp_path / "o_labels").glob("*.png"))
    assert [p.stem for p in pngs] == [f"{i:05d}" for i in range(5)]
    np.testing.assert_array_equal(np.stack([read_label_png(p) for p in pngs]), res.labels)
    assert json.loads((tmp_path / "o_config.json").read_text())["frames"] == 5
