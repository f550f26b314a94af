"""The resumable store of a dataset evaluation: ``per_video.jsonl`` (one strict-JSON line per finished
or failed video, flushed and fsync'ed), ``run.json`` (the setting: dataset, model, mode, the full
:class:`~vidseg_nb.config.SegConfig`) and ``summary.json``.

A line with an ``error`` field records a video that failed (after its retries); a rerun tries it again.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..config import SegConfig
from ..errors import ConfigError
from .protocol import VC_WINDOWS

__all__ = [
    "PER_VIDEO",
    "SUMMARY",
    "RUN_INFO",
    "json_value",
    "to_json",
    "from_json",
    "read_per_video",
    "write_lines",
    "append_line",
    "config_dict",
    "run_info",
    "check_run_info",
    "write_json",
]

PER_VIDEO = "per_video.jsonl"
SUMMARY = "summary.json"
RUN_INFO = "run.json"


def json_value(v: Any) -> Any:
    """``v`` as strict JSON: arrays -> lists, numpy scalars -> Python, nan / inf -> null."""
    if isinstance(v, np.ndarray):
        return [json_value(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    return v


def to_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A per-video record as strict JSON (arrays -> lists, nan -> null)."""
    return {k: json_value(v) for k, v in record.items()}


_FLOATS = ("mIoU", "J", "F", "J&F", *(f"mVC{w}" for w in VC_WINDOWS))


def from_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`to_json` for the fields the summary reads (null -> nan). Error records pass
    through unchanged."""
    out = dict(record)
    if out.get("error"):
        return out
    out["conf"] = np.asarray(record["conf"], dtype=np.int64)
    for w in VC_WINDOWS:
        out[f"vc{w}"] = np.asarray(
            [math.nan if x is None else x for x in record.get(f"vc{w}", [])], dtype=np.float64
        )
    for k in _FLOATS:
        if k in out and out[k] is None:
            out[k] = math.nan
    if "mapping" in out:
        out["mapping"] = {int(k): int(v) for k, v in out["mapping"].items()}
    return out


def _dumps(obj: Any) -> str:
    return json.dumps(obj, allow_nan=False, sort_keys=False)


def _valid(rec: Any) -> bool:
    if not isinstance(rec, dict) or not isinstance(rec.get("video"), str):
        return False
    if rec.get("error"):
        return isinstance(rec["error"], str)
    return "conf" in rec and all(f"vc{w}" in rec for w in VC_WINDOWS)


def read_per_video(path: str | os.PathLike) -> tuple[dict[str, dict[str, Any]], bool]:
    """The videos of a ``per_video.jsonl`` (name -> its last JSON record, finished or failed) and
    whether the file needs repairing (a partial or corrupt line, e.g. the last one written when the
    process died)."""
    path = Path(path)
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done, False
    text = path.read_text(encoding="utf-8", errors="replace")
    dirty = bool(text) and not text.endswith("\n")
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if _valid(rec):
            done[rec["video"]] = rec
        else:
            dirty = True
    return done, dirty


def write_lines(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
    """Replace ``path`` by ``records``, one line each (atomically: temp file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(_dumps(rec) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def append_line(fh: Any, record: Mapping[str, Any]) -> None:
    """Append one record to an open JSON-lines file, flushed and fsync'ed."""
    fh.write(_dumps(record) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def config_dict(config: SegConfig) -> dict[str, Any]:
    """Every field of ``config`` as strict JSON (``extra`` included when not empty)."""
    cfg = config.to_dict()
    if not cfg.get("extra"):
        cfg.pop("extra", None)
    return json_value(cfg)


def run_info(dataset: Any, model: str, random_weights: bool, config: SegConfig, mode: str) -> dict[str, Any]:
    """The setting of a run, as written to ``run.json``: dataset, root, model, mode, the full config."""
    return {
        "dataset": type(dataset).__name__,
        "root": str(getattr(dataset, "root", "")),
        "model": str(model),
        "random_weights": bool(random_weights),
        "mode": mode,
        "config": config_dict(config),
    }


def check_run_info(path: str | os.PathLike, info: Mapping[str, Any]) -> None:
    """Refuse (:class:`ConfigError`) to resume into a folder that holds results of another setting."""
    path = Path(path)
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return
    diffs = [
        f"{k}: {old.get(k)!r} -> {info[k]!r}" for k in ("dataset", "model", "mode") if old.get(k) != info[k]
    ]
    if old.get("assign", "first-frame") != info.get("assign", "first-frame"):  # issue 13: --assign
        diffs.append(f"assign: {old.get('assign', 'first-frame')!r} -> {info.get('assign', 'first-frame')!r}")
    oc, nc = old.get("config", {}), info["config"]
    dflt = config_dict(SegConfig())  # a field added since the old run (issue 15's) had its default there
    diffs += [
        f"config.{k}: {oc.get(k, dflt.get(k))!r} -> {nc.get(k)!r}"
        for k in nc
        if oc.get(k, dflt.get(k)) != nc.get(k)
    ]
    if diffs:
        raise ConfigError(
            f"{path.parent} holds results of another setting ({'; '.join(diffs[:4])}); "
            "pass another output folder or delete it"
        )


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented strict JSON (nan -> null)."""
    Path(path).write_text(json.dumps(json_value(obj), indent=2, allow_nan=False) + "\n", encoding="utf-8")
