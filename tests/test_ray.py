"""``evaluate_dataset(..., use_ray=True)`` on a local Ray on the CPU with the tiny model: actors that load
the model once each, a video that raises (recorded with its error, the run goes on), the driver never
loading a model, results equal to a local run's. Skipped without Ray (``pip install 'vidseg_nb[cluster]'``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_evaluate import N_FRAMES, _strip, small_config, write_camvid

from vidseg_nb import evaluation as ev
from vidseg_nb import loading
from vidseg_nb.datasets import open_dataset
from vidseg_nb.evaluation.runner import package_env, ray_plan


def _lines(path: Path) -> dict[str, dict]:
    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return {r["video"]: {k: v for k, v in _strip(r).items() if k != "worker"} for r in recs}


def test_ray_plan_from_cluster_resources() -> None:
    gpu = ray_plan({"CPU": 64.0, "GPU": 4.0}, n_videos=30)
    assert gpu == {"actors": 4, "options": {"num_gpus": 1, "num_cpus": 1}, "device": "cuda"}
    assert ray_plan({"CPU": 64.0, "GPU": 4.0}, n_videos=2)["actors"] == 2  # never more actors than videos
    cpu = ray_plan({"CPU": 3.0}, n_videos=30)
    assert cpu == {"actors": 3, "options": {"num_cpus": 1}, "device": "cpu"}
    assert ray_plan({"CPU": 16.0}, n_videos=30, workers=2)["actors"] == 2
    env = package_env({"env_vars": {"A": "1"}})
    assert Path(env["py_modules"][0]) == Path(ev.__file__).resolve().parents[1]  # the vidseg_nb package
    assert env["env_vars"] == {"A": "1"}


def test_ray_actors_match_local_run_and_record_a_failing_video(tiny, tmp_path, monkeypatch) -> None:
    ray = pytest.importorskip("ray", reason="Ray is optional (pip install 'vidseg_nb[cluster]')")
    root = write_camvid(tmp_path / "camvid", n_videos=3)
    (root / "seq2" / "frames" / "seq2_00003.png").write_bytes(b"not a png")  # raises in its worker
    ds = open_dataset("camvid", root)
    local = ev.evaluate_dataset(ds, tiny, small_config(), tmp_path / "local", videos=2, progress=False)

    def no_model(*a, **k):
        raise AssertionError("the driver loaded a model")

    monkeypatch.setattr(loading, "load_backbone", no_model)
    # the package travels as the job's py_modules (what evaluate_dataset does when it starts Ray itself)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=package_env())
    try:
        out = tmp_path / "ray"
        s = ev.evaluate_dataset(ds, "tiny", small_config(), out, progress=False, use_ray=True, retries=1)
    finally:
        ray.shutdown()
    raw = [json.loads(x) for x in (out / "per_video.jsonl").read_text().splitlines()]
    lines = _lines(out / "per_video.jsonl")
    assert sorted(lines) == ["seq0", "seq1", "seq2"]
    assert "seq2_00003.png" in lines["seq2"]["error"] and lines["seq2"]["attempts"] == 2
    assert "conf" not in lines["seq2"]
    ref = _lines(tmp_path / "local" / "per_video.jsonl")
    assert lines["seq0"] == ref["seq0"] and lines["seq1"] == ref["seq1"]  # same records as a local run
    assert s["failed"] == 1 and s["failed_videos"] == ["seq2"] and s["videos"] == 2
    assert s["mIoU"] == local["mIoU"] and s["mVC8"] == local["mVC8"] and s["frames"] == 2 * N_FRAMES
    # one model load per actor: at most 2 actors (2 CPUs) served the 3 videos, each with one load time
    workers = {(r["worker"]["pid"], r["worker"]["load_seconds"]) for r in raw if "worker" in r}
    assert 1 <= len({pid for pid, _ in workers}) <= 2 and len(workers) == len({pid for pid, _ in workers})
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == "tiny" and run["random_weights"] is True and run["config"]["n_clusters"] == 3
