"""Command line: ``vidseg segment``, ``vidseg evaluate``, ``vidseg ablate``, ``vidseg example``,
``vidseg bench``.

Every command that runs the pipeline takes one flag per :class:`~vidseg_nb.config.SegConfig` field
(generated from the dataclass: ``--n-clusters``, ``--aggregate/--no-aggregate``, ``--t-f none``, ...,
help text from the field's metadata), the short aliases ``--clusters`` and ``--preview``, and
``--config FILE`` (a JSON of SegConfig fields, or a ``run.json`` / ``OUT_config.json`` holding them
under ``"config"``). Precedence: ``--preset`` < ``--config`` < explicit flags.

A user mistake (bad clip, model that cannot be loaded, invalid setting) prints one line and exits 2.
Argument parsing and printing live here; :mod:`vidseg_nb.evaluation` never imports this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from pathlib import Path
from typing import Any, TextIO

from .config import PRESETS, SegConfig, default_model, preset
from .errors import ConfigError

RANDOM_BANNER = (
    "NOTE: this model has random weights ('tiny', 'tiny-svd', 'random-*'): its segmentations are not "
    "meaningful (smoke test only)."
)
DATASETS = ("davis", "vspw", "camvid", "cityscapes")

_SKIP_FIELDS = ("preset", "extra")  # --preset chooses the preset; extra is for library callers
_ALIASES = {"n_clusters": ["--clusters"]}


# --------------------------------------------------------------------------------------------------
# SegConfig <-> flags
# --------------------------------------------------------------------------------------------------
def _optional(parse: Any) -> Any:
    def conv(text: str) -> Any:
        return None if text.strip().lower() in ("none", "null", "") else parse(text)

    conv.__name__ = getattr(parse, "__name__", "value")
    return conv


def config_fields() -> list[dataclasses.Field]:
    """The SegConfig fields that get a flag (all but ``preset`` and ``extra``)."""
    return [f for f in dataclasses.fields(SegConfig) if f.name not in _SKIP_FIELDS]


def add_config_args(p: argparse.ArgumentParser, preview: bool = True) -> None:
    """The model flags and one flag per SegConfig field (default None = not given), shared by every
    command that runs the pipeline; ``preview``: also ``--preview`` (= ``--no-modulation``)."""
    p.add_argument(
        "--model",
        default=None,
        help=f"SD 2.x or SVD: Hub id, diffusers folder, single file, 'tiny' or 'tiny-svd' (default: {default_model()})",
    )
    p.add_argument(
        "--model-config",
        default=None,
        metavar="DIR",
        help="diffusers folder or Hub id with the component configs of a single-file checkpoint",
    )
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS), help="base setting (default: vidseg)")
    p.add_argument(
        "--config",
        default=None,
        metavar="JSON",
        help="SegConfig fields from a JSON file (a run.json or OUT_config.json works): over the preset, "
        "under explicit flags",
    )
    g = p.add_argument_group("SegConfig (every field; default: the preset's value)")
    hints = typing.get_type_hints(SegConfig)
    for f in config_fields():
        flags = ["--" + f.name.replace("_", "-"), *_ALIASES.get(f.name, [])]
        help_text = (f.metadata.get("help", "") if f.metadata else "").replace("%", "%%")  # argparse formats
        tp = hints[f.name]
        args = typing.get_args(tp)
        nullable = type(None) in args
        base = next((a for a in args if a is not type(None)), tp) if args else tp
        if base is bool:
            g.add_argument(
                *flags, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=help_text
            )
            continue
        conv = _optional(base) if nullable else base
        if nullable:
            help_text = (help_text + " " if help_text else "") + "('none': unset)"
        g.add_argument(*flags, dest=f.name, type=conv, default=None, metavar=f.name.upper(), help=help_text)
    if preview:
        g.add_argument(
            "--preview",
            dest="modulation",
            action="store_false",
            default=None,
            help="coarse maps only, no modulation (fast): the same as --no-modulation",
        )


def read_config_json(path: str | Path) -> dict[str, Any]:
    """SegConfig fields from a JSON file: a plain mapping of fields, or any JSON with them under
    ``"config"`` (``run.json``, ``OUT_config.json``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"--config {path}: not a readable JSON file ({e})") from e
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a JSON object of SegConfig fields")
    known = {f.name for f in dataclasses.fields(SegConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"--config {path}: unknown SegConfig field(s) {unknown}")
    return data


def config_from_args(args: argparse.Namespace) -> SegConfig:
    """The SegConfig of a command: the preset, then ``--config`` JSON, then the flags that were given."""
    from_file = read_config_json(args.config) if getattr(args, "config", None) else {}
    name = getattr(args, "preset", None) or from_file.get("preset") or "vidseg"
    over = {k: v for k, v in from_file.items() if k != "preset"}
    for f in config_fields():
        v = getattr(args, f.name, None)
        if v is not None:
            over[f.name] = v
    return preset(name, **over)


def config_json(config: SegConfig) -> dict[str, Any]:
    """Every field of ``config`` as JSON (what ``--config`` reads back)."""
    from .evaluation.store import config_dict

    return config_dict(config)


# --------------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------------
def open_backbone(
    source: str | None,
    device: str | None = None,
    model_config: str | None = None,
    *,
    banner: TextIO | None = None,
) -> Any:
    """``load_backbone(source, device=device, config=model_config)``, printing :data:`RANDOM_BANNER`
    to ``banner`` (default stderr) when the model has random weights."""
    from .loading import load_backbone

    bb = load_backbone(source, device=device, config=model_config)
    if bb.is_random:
        print(RANDOM_BANNER, file=banner or sys.stderr)
    else:
        from .toy import TOY_NOTE, is_toy

        if is_toy(bb):
            print(TOY_NOTE, file=banner or sys.stderr)
    return bb


def _open(args: argparse.Namespace) -> Any:
    return open_backbone(args.model, args.device, getattr(args, "model_config", None))


# --------------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------------
def _clip_identity(stream: Any) -> dict[str, Any]:
    """What identifies the clip of a run (for ``--resume``): path, bytes on disk, frame count, size, fps."""
    p = Path(stream.source)
    nbytes = p.stat().st_size if p.is_file() else None
    return {
        "source": str(p.resolve()) if p.exists() else stream.source,
        "bytes": nbytes,
        "n_frames": stream.n_frames,
        "size": list(stream.size),
        "fps": round(float(stream.fps), 6),
    }


def _save_checkpoint(path: Path, state: Any, meta: dict[str, Any]) -> None:
    """Write the checkpoint after a finished batch (atomically; tests wrap this to interrupt a run)."""
    state.save(path, **meta)


def _check_resume(path: Path, meta: dict[str, Any], labels_dir: Path) -> Any:
    """The saved StreamState of an interrupted run, after checking that it is the same run."""
    from .pipeline import StreamState

    if not path.is_file():
        raise ConfigError(
            f"--resume: no checkpoint {path} (the run finished, or never started with this -o); "
            "run without --resume"
        )
    state, saved = StreamState.load(path)
    diff = []
    for key in ("clip", "model", "mode"):
        if saved.get(key) != meta[key]:
            diff.append(f"{key}: {saved.get(key)!r} -> {meta[key]!r}")
    a, b = saved.get("config", {}), meta["config"]
    diff += [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if diff:
        raise ConfigError(
            f"--resume: the checkpoint {path} is of another run ({'; '.join(diff)}); rerun with the same "
            "clip, model and settings, or without --resume to start over"
        )
    from .video import LabelPNGWriter

    done = LabelPNGWriter.frames_done(labels_dir)
    if done < state.frames_done:
        raise ConfigError(
            f"--resume: {labels_dir} holds {done} label PNGs but the checkpoint is at frame "
            f"{state.frames_done}; run without --resume to start over"
        )
    return state


def cmd_segment(args: argparse.Namespace) -> int:
    """``vidseg segment``: :func:`_segment` with a progress bar in UNet samples per stage (unless
    ``--quiet``), read from the one progress source, :mod:`vidseg_nb.progress` (the demo reads it too)."""
    from . import progress

    if args.quiet:
        return _segment(args)
    listen = progress.tqdm_listener()
    try:
        with progress.track(listen):
            return _segment(args)
    finally:
        listen.close()  # type: ignore[attr-defined]


def _segment(args: argparse.Namespace) -> int:
    """Segment a clip batch by batch (VideoSegmenter.stream): memory stays flat with the clip length.

    Every batch appends to the overlay video, the label video and the label PNGs, then saves the
    checkpoint ``OUT_state.npz`` (next batch, frames done, Omega's fit data, clip identity and settings);
    ``--resume`` continues from it (the two videos are rebuilt for the frames done from the source frames
    and the PNGs, as an mp4 cannot be appended to). The checkpoint is removed when the run finishes.
    A batch's PNGs are written before its checkpoint, so a run killed between the two rewrites that
    batch's PNGs (with the same labels) on resume; PNGs of checkpointed batches are never rewritten.
    Always streamed (``cache_frames=0``): one code path for every length, bounded memory, and a
    checkpoint for every run, the ``authors`` preset's included (its overlapping last batch: a batch
    yields its frames up to the next batch's start, so every frame is written once); the labels equal
    ``VideoSegmenter.segment``'s (tests/test_stream.py).
    """
    import numpy as np

    from .palette import colorize
    from .pipeline import StreamState, VideoSegmenter
    from .video import LabelPNGWriter, VideoWriter, open_video, overlay_frames, read_label_png

    config = config_from_args(args)
    stream = open_video(args.clip, max_frames=config.max_frames)
    paths = _SegmentPaths.of(args)
    out, labels_dir, label_video, state_path = paths.out, paths.labels_dir, paths.label_video, paths.state
    mode = "full" if config.modulation else "preview"
    objects = _Objects.of(args, stream, paths)  # bad masks fail here, before the model loads
    bb = _open(args)
    meta = {
        "clip": _clip_identity(stream),
        "model": str(bb.source),
        "mode": mode,
        "config": config_json(config),
    }
    state = _check_resume(state_path, meta, labels_dir) if args.resume else None
    if objects is not None and state is not None:
        objects.resume(StreamState.load(state_path)[1])
    bsz = config.batch_size
    start_batch = state.next_batch if state is not None else 0
    done = state.frames_done if state is not None else 0
    seg = VideoSegmenter(bb, config, cache_frames=0)
    names = _Names(seg, args.names, state_path if state is not None else None)  # --names (issue 13)
    counters0 = bb.counters.snapshot()
    t0 = time.perf_counter()
    n = done
    with (
        VideoWriter(out, fps=stream.fps) as ov,
        VideoWriter(label_video, fps=stream.fps) as lv,
        _ObjectVideo(objects, stream.fps, done) as obj,
    ):
        if done:  # rebuild the videos of the frames done: source frames + the label PNGs already written
            k = 0
            for orig in stream.batches(bsz):
                m = min(len(orig), done - k)
                lab = [read_label_png(labels_dir / f"{i:05d}.png") for i in range(k, k + m)]
                lab = np.stack(lab).astype(np.uint8)
                ov.append(names.legend(overlay_frames(orig[:m], lab), lab))
                lv.append(colorize(lab))
                obj.rebuild(orig[:m], lab)
                k += m
                if k >= done:
                    break
        pngs = LabelPNGWriter(labels_dir, start=done)
        for sb in seg.stream(
            stream,
            config,
            mode=mode,
            progress=not args.quiet,
            start_batch=start_batch,
            state=state,
            record_names=names.wanted and start_batch == 0,
        ):
            names.update(sb)
            if len(sb):  # (a batch the authors' last batch overlaps whole yields no frame)
                pngs.append(sb.labels)
                ov.append(names.legend(overlay_frames(sb.frames, sb.labels), sb.labels))
                lv.append(colorize(sb.labels))
                obj.append(sb)
            n = sb.stop
            _save_checkpoint(state_path, sb.state(), {**meta, **names.meta(), **obj.meta()})
    dt = time.perf_counter() - t0
    state_path.unlink(missing_ok=True)
    _finish_segment(args, config, stream, bb, paths, names, n, done, dt, bb.counters.since(counters0))
    if objects is not None:
        objects.report(n)
    return 0


@dataclasses.dataclass(frozen=True)
class _SegmentPaths:
    """Where ``vidseg segment -o OUT.mp4`` writes: the overlay ``OUT.mp4``, the label PNGs (``--labels-dir``
    or ``OUT_labels/``), ``OUT_labels.mp4``, the checkpoint ``OUT_state.npz``, ``OUT_config.json`` and, with
    ``--first-frame-mask`` / ``--gt``, ``OUT_objects.mp4`` and the object PNGs ``OUT_objects/``."""

    out: Path
    labels_dir: Path
    label_video: Path
    state: Path
    config: Path
    objects_video: Path
    objects_dir: Path

    @classmethod
    def of(cls, args: argparse.Namespace) -> _SegmentPaths:
        out = Path(args.output)

        def side(suffix: str) -> Path:
            return out.with_name(out.stem + suffix)

        labels = Path(args.labels_dir) if args.labels_dir else side("_labels")
        return cls(
            out, labels, side("_labels.mp4"), side("_state.npz"), side("_config.json"),
            side("_objects.mp4"), side("_objects"),
        )  # fmt: skip


def _finish_segment(
    args: argparse.Namespace,
    config: Any,
    stream: Any,
    bb: Any,
    paths: _SegmentPaths,
    names: Any,
    n: int,
    done: int,
    dt: float,
    work: dict[str, Any],
) -> None:
    """``OUT_config.json``, the summary line (``work``: the backbone's counters over the ``n - done`` new
    frames), ``OUT_names.json`` and the random-weights note."""
    from .video import target_size

    mode = "full" if config.modulation else "preview"
    out, cfg_path = paths.out, paths.config
    run = {
        "clip": str(args.clip),
        "model": str(bb.source),
        "model_config": getattr(args, "model_config", None),
        "random_weights": bool(bb.is_random),
        "mode": mode,
        "frames": n,
        "config": config_json(config),
    }
    cfg_path.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    new = max(1, n - done)
    size = target_size(stream.size[0], stream.size[1], config.max_side)
    resumed = f" (resumed at frame {done})" if done else ""
    print(
        f"{n} frames{resumed} in {dt:.1f} s ({mode} mode, {size[1]}x{size[0]} processing size); "
        f"per frame: {work.get('unet_samples', 0) / new:.0f} UNet samples, "
        f"{work.get('vae_decodes', 0) / new:.0f} VAE decodes.\n"
        f"overlay: {out}\nlabels video: {paths.label_video}\nlabel PNGs: {paths.labels_dir}/\nconfig: {cfg_path}"
    )
    _write_names(out, names, bool(bb.is_random))
    if bb.is_random:
        print(RANDOM_BANNER)


class _Objects:
    """``--first-frame-mask`` / ``--gt`` (issue 22): frame 1's object mask, read and checked before any
    model work; the cluster -> object prompt (:func:`vidseg_nb.prompts.objects_from_mask`, the assignment
    of ``vidseg evaluate``) decided on the first batch, which holds frame 1, and saved in the checkpoint
    for ``--resume``; J&F against ``--gt`` read back from the object PNGs at the end."""

    def __init__(self, mask: Any, mask_name: str, gt: Path | None, paths: _SegmentPaths) -> None:
        import hashlib

        self.mask = mask
        self.mask_name = mask_name
        self.digest = hashlib.sha256(mask.astype("int64").tobytes()).hexdigest()[:16]
        self.gt = gt
        self.paths = paths
        self.prompt: dict[int, set[int]] | None = None

    @classmethod
    def of(cls, args: argparse.Namespace, stream: Any, paths: _SegmentPaths) -> _Objects | None:
        from .prompts import PromptError, read_object_mask

        if args.first_frame_mask is None and args.gt is None:
            return None
        gt = Path(args.gt) if args.gt else None
        if gt is not None:
            pngs = sorted(gt.glob("*.png")) if gt.is_dir() else []
            if not gt.is_dir():
                raise PromptError(
                    f"--gt {gt}: no such folder (give the folder of the clip's annotation PNGs)"
                )
            if not pngs:
                raise PromptError(f"--gt {gt}: no PNG files in the folder")
            n = stream.n_frames if getattr(stream, "n_frames_exact", False) else None
            if n is not None and len(pngs) < n:
                raise PromptError(
                    f"--gt {gt}: {len(pngs)} annotation PNGs for a clip of {n} frames; give one PNG per "
                    "frame (or fewer frames with --max-frames)"
                )
        flag, source = ("--first-frame-mask", args.first_frame_mask)
        if source is None:
            flag, source = "--gt", pngs[0]
        if not Path(source).is_file():
            raise PromptError(f"{flag} {source}: no such file")
        try:
            mask = read_object_mask(source)
        except PromptError as e:
            raise PromptError(f"{flag} {source}: {str(e).replace(f'object mask {source}: ', '')}") from e
        h0, w0 = stream.size
        if mask.shape != (h0, w0):
            raise PromptError(
                f"{flag} {source} is {mask.shape[1]}x{mask.shape[0]} pixels but the clip's frames are "
                f"{w0}x{h0}: give the mask of the clip's first frame at the clip's size"
            )
        if not ((mask != 0) & (mask != 255)).any():
            raise PromptError(
                f"{flag} {source} has no object: every pixel is 0 (background) or 255 (void); mark the "
                "objects with ids 1, 2, ..."
            )
        return cls(mask, str(source), gt, paths)

    def resume(self, saved: dict[str, Any]) -> None:
        """The prompt of the interrupted run, from its checkpoint's meta (same mask, or an error)."""
        got = saved.get("objects")
        if got is None or got.get("mask") != self.digest:
            why = "had no --first-frame-mask / --gt" if got is None else "used another first-frame mask"
            raise ConfigError(
                f"--resume: the interrupted run {why}, and frame 1's coarse map is not kept in the "
                "checkpoint; rerun without --resume to follow these objects"
            )
        self.prompt = {int(k): {int(c) for c in v} for k, v in got["prompt"].items()}

    def decide(self, first: Any) -> None:
        """The prompt from the first batch (or the whole result); notes objects that got no cluster."""
        from .prompts import objects_from_mask

        self.prompt = objects_from_mask(first, self.mask)
        for k, members in sorted(self.prompt.items()):
            if not members:
                print(
                    f"note: object {k} of the first-frame mask is the majority of no cluster of frame 1's "
                    "coarse map: its masks stay empty (try more --clusters)",
                    file=sys.stderr,
                )

    def meta(self) -> dict[str, Any]:
        if self.prompt is None:
            return {}
        prompt = {str(k): sorted(v) for k, v in self.prompt.items()}
        return {"objects": {"mask": self.digest, "prompt": prompt}}

    def report(self, n: int) -> None:
        """Where the outputs are and, with ``--gt``, J&F per object and the mean (the first and last
        frame dropped, as DAVIS)."""
        from .prompts import j_and_f, read_annotations

        print(f"objects video: {self.paths.objects_video}\nobject PNGs: {self.paths.objects_dir}/")
        if self.gt is None:
            return
        masks = read_annotations(self.paths.objects_dir, max_frames=n)
        score = j_and_f(masks, self.gt)
        for k, j, f in zip(score["objects"], score["J_objects"], score["F_objects"]):
            print(f"object {k}: J {j:.3f}  F {f:.3f}  J&F {(j + f) / 2:.3f}")
        print(
            f"mean over {len(score['objects'])} object(s), {n} frames: J {score['J']:.3f}  "
            f"F {score['F']:.3f}  J&F {score['J&F']:.3f}"
        )


class _ObjectVideo:
    """``OUT_objects.mp4`` and ``OUT_objects/`` written batch by batch (nothing without ``--first-frame-mask``
    / ``--gt``); ``start``: frames done by an interrupted run (their PNGs are on disk, the video is rebuilt
    with :meth:`rebuild`)."""

    def __init__(self, objects: _Objects | None, fps: float, start: int) -> None:
        self.objects = objects
        self.fps = fps
        self.next = start
        self.writer: Any = None

    def __enter__(self) -> _ObjectVideo:
        if self.objects is not None:
            from .video import VideoWriter

            self.writer = VideoWriter(self.objects.paths.objects_video, fps=self.fps).__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.writer is not None:
            self.writer.__exit__(*exc)

    def _video(self, frames: Any, masks: Any) -> None:
        from .prompts import object_overlay

        self.writer.append(object_overlay(frames, masks))

    def rebuild(self, frames: Any, labels: Any) -> None:
        """The video of frames already done (their object PNGs exist)."""
        if self.objects is not None:
            from .prompts import masks_from_labels

            self._video(frames, masks_from_labels(labels, self.objects.prompt))

    def append(self, batch: Any, frames: Any = None) -> None:
        """One StreamBatch (or a whole SegmentationResult with its ``frames``): decide the prompt on the
        first, then write the batch's object PNGs and video frames."""
        if self.objects is None:
            return
        from .prompts import davis_png, masks_from_labels

        if self.objects.prompt is None:
            self.objects.decide(batch)
        masks = masks_from_labels(batch.labels, self.objects.prompt)
        davis_png(masks, self.objects.paths.objects_dir, start=self.next)
        self._video(batch.frames if frames is None else frames, masks)
        self.next += len(masks)

    def meta(self) -> dict[str, Any]:
        return self.objects.meta() if self.objects is not None else {}


def _draw_legend(frames: Any, labels: Any, names: dict[int, Any]) -> Any:
    """Overlay frames with the names legend of the label ids present drawn on each."""
    import numpy as np

    from .viz import draw_legend, legend_entries

    entries = legend_entries(names, ids=np.unique(labels).tolist())
    return np.stack([draw_legend(f, entries) for f in frames])
    return 0


class _Names:
    """``--names`` on the streamed run (issue 13): the segmenter's
    :class:`~vidseg_nb.pipeline.ClipNamer` (the vocabulary embedded before any UNet work, so bad words
    fail first; the names decided on the first batch and carried with the cluster ids, as
    ``VideoSegmenter.segment(names=...)`` does); a resumed run takes them from the checkpoint, and this
    draws the legend and saves them. ``vocabulary``/``names`` as a
    :class:`~vidseg_nb.pipeline.SegmentationResult` has them (for :func:`_write_names`)."""

    def __init__(self, seg: Any, words: str | None, checkpoint: Path | None) -> None:
        self.wanted = words is not None
        self.namer = seg.name_tracker(words) if words is not None else None
        self.vocabulary: tuple[str, ...] = self.namer.vocabulary if self.namer is not None else ()
        if self.namer is not None and checkpoint is not None:  # resumed: the names the first batch decided
            from .names import ClusterName
            from .pipeline import StreamState

            saved = StreamState.load(checkpoint)[1].get("names") or {}
            self.namer.resume({int(k): ClusterName(**v) for k, v in saved.items()})

    @property
    def names(self) -> dict[int, Any]:
        return self.namer.names if self.namer is not None else {}

    def update(self, sb: Any) -> None:
        if self.namer is not None:
            self.namer.update(sb.result)

    def legend(self, frames: Any, labels: Any) -> Any:
        """Overlay frames with the names legend drawn on each (only with ``--names``)."""
        return _draw_legend(frames, labels, self.names) if self.names else frames

    def meta(self) -> dict[str, Any]:
        """The names for the checkpoint (JSON)."""
        if not self.names:
            return {}
        return {
            "names": {
                str(k): dict(name=n.name, score=float(n.score), margin=float(n.margin), best=n.best)
                for k, n in self.names.items()
            }
        }


def _write_names(out: Path, res: Any, random_weights: bool) -> None:
    """``OUT_names.json``: {label id: name, score, margin, best} next to the outputs (with ``--names``)."""
    if not res.vocabulary:
        return
    import math

    path = out.with_name(out.stem + "_names.json")

    def num(x: float) -> float | None:
        return None if not math.isfinite(x) else round(float(x), 6)

    doc = {
        "vocabulary": list(res.vocabulary),
        "random_weights": random_weights,
        "note": "random tiny-model weights: these names carry no meaning" if random_weights else None,
        "labels": {
            str(i): {"name": n.name, "score": num(n.score), "margin": num(n.margin), "best": n.best}
            for i, n in res.names.items()
        },
    }
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    shown = ", ".join(f"{i}: {n.name}" for i, n in res.names.items())
    print(f"names: {path} ({shown})")


def _assign_kw(args: argparse.Namespace) -> dict[str, Any]:
    """``evaluate_dataset(assign=...)`` from ``--assign`` (issue 13); nothing for the default."""
    assign = getattr(args, "assign", "first-frame")
    return {"assign": assign} if assign != "first-frame" else {}


def _print_by_names(summary: dict[str, Any], format_summary: Any) -> None:
    """With ``--assign names|both``: say which assignment each table is (and print the names one)."""
    assign = summary.get("assign", "first-frame")
    if assign == "names":
        print("(clusters assigned by their names: no ground-truth frame was read to assign them)")
    if "by_names" in summary:
        print("(above: first-frame assignment) assigned by names, no ground truth read to assign:")
        print(format_summary(summary["by_names"], davis=False))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .datasets import open_dataset
    from .evaluation import (
        PER_VIDEO,
        SUMMARY,
        format_summary,
        import_ray,
        is_davis,
        is_random_source,
        resolve_protocol,
    )
    from .evaluation.ablation import RANDOM_NOTE
    from .evaluation.runner import evaluate_dataset

    config = config_from_args(args)
    protocol = resolve_protocol(config, args.protocol)
    if args.ray:
        try:
            import_ray()
        except ModuleNotFoundError as e:
            print(f"vidseg evaluate: error: {e}", file=sys.stderr)
            return 2
    dataset = open_dataset(args.dataset, args.root)
    out = Path(args.out or f"eval_{args.dataset}")
    if args.ray:  # the workers load the model; the driver never does
        model: Any = args.model or default_model()
        random_weights = is_random_source(model)
        if random_weights:
            print(RANDOM_BANNER, file=sys.stderr)
    else:
        model = _open(args)
        random_weights = bool(model.is_random)
    summary = evaluate_dataset(
        dataset,
        model,
        config,
        out,
        videos=args.videos,
        progress=not args.quiet,
        use_ray=args.ray,
        ray_address=args.address,
        retries=args.retries,
        workers=args.workers,
        model_config=args.model_config,
        device=args.device,
        protocol=protocol,
        **_assign_kw(args),
    )
    run = summary["run"]
    print(
        f"{args.dataset}: {summary['videos']} videos, {summary.get('frames', 0)} frames, "
        f"{run['mode']} mode, model {run['model']}, protocol {summary.get('protocol', protocol)}"
    )
    print(format_summary(summary, davis=is_davis(dataset)))
    _print_by_names(summary, format_summary)
    print(f"per-video results: {out / PER_VIDEO}\nsummary: {out / SUMMARY}\nsetting: {out / 'run.json'}")
    if summary.get("failed"):
        print(
            f"{summary['failed']} video(s) failed: {', '.join(summary['failed_videos'][:5])} "
            f"(their 'error' is in {out / PER_VIDEO}; rerun to retry them)",
            file=sys.stderr,
        )
    if random_weights:
        print(f"NOTE: {RANDOM_NOTE}.")
    return 1 if summary.get("failed") else 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from .evaluation.ablation import RANDOM_NOTE, dataset_clips, format_table, run_ablation, synthetic_clips
    from .evaluation.protocol import resolve_protocol
    from .evaluation.store import json_value

    config = config_from_args(args)
    if args.synthetic:
        clips = synthetic_clips(args.synthetic, n_frames=config.max_frames or 8)
        where = f"{args.synthetic} synthetic clips"
    else:
        if not args.dataset or not args.root:
            raise ConfigError("vidseg ablate needs --dataset and --root, or --synthetic N")
        from .datasets import open_dataset

        clips = dataset_clips(open_dataset(args.dataset, args.root), args.videos, config.max_frames)
        where = f"{len(clips)} {args.dataset} videos"
    bb = _open(args)
    protocol = resolve_protocol(config, args.protocol)
    results = run_ablation(
        bb, clips, config, clips[0][3], clips[0][4], progress=not args.quiet, protocol=protocol
    )
    print(f"Table 2 ablation on {where}, model {bb.source}, protocol {protocol} (scores in %):\n")
    print(format_table(results, paper=not args.no_paper))
    if args.json:
        rows = [{k: v for k, v in r.items() if k not in ("config", "per_clip")} for r in results]
        for r, full in zip(rows, results):
            if "config" in full:
                r["config"] = config_json(full["config"])
        Path(args.json).write_text(json.dumps(json_value(rows), indent=2) + "\n", encoding="utf-8")
        print(f"\nresults: {args.json}")
    if bb.is_random:
        print(f"\nNOTE: {RANDOM_NOTE}.")
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    from .synthetic import make_clip, save_clip

    clip = make_clip(
        n_frames=args.frames, height=args.height, width=args.width, n_objects=args.objects, seed=args.seed
    )
    if args.toy:
        from .toy import make_toy_clip

        clip = make_toy_clip(9001 + args.seed, args.frames, args.height, args.objects, speed=3.0)
        args.width = args.height
    path = save_clip(clip, args.output, labels_dir=args.labels_dir)
    print(
        f"wrote a synthetic clip of {len(clip)} frames ({args.width}x{args.height}, {args.objects} moving objects): {path}"
    )
    return 0


def train_settings(args: argparse.Namespace) -> Any:
    """The :class:`~vidseg_nb.toy.train.TrainSettings` of ``train-toy``: without ``--minutes`` and
    ``--vae-steps``/``--unet-steps`` the shipped model's plan (``SHIPPED_STEPS``), which is what makes a
    from-scratch run reproduce it on any machine; ``--minutes M`` plans the steps from this machine's speed."""
    from .toy.train import SHIPPED_STEPS, TrainSettings

    vae, unet = args.vae_steps, args.unet_steps
    if args.minutes is None and vae is None and unet is None:
        vae, unet = SHIPPED_STEPS
    return TrainSettings(
        minutes=40.0 if args.minutes is None else args.minutes,
        seed=args.seed,
        n_clips=args.clips,
        frames_per_clip=args.frames_per_clip,
        size=args.size,
        vae_steps=vae,
        unet_steps=unet,
    )


def cmd_train_toy(args: argparse.Namespace) -> int:
    from .toy.train import train_toy

    st = train_settings(args)
    command = "vidseg " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["train-toy"] else None
    folder = train_toy(args.out, st, resume=args.resume, progress=not args.quiet, command=command)
    print(f"loss curves: {Path(args.out) / 'loss.png'}; use it with --model {folder}")
    return 0


def _add_train_toy(sub: Any) -> None:
    t = sub.add_parser(
        "train-toy",
        help="train the toy model (tiny SD 2.x layout) on toy-world clips, on the CPU",
        description="Train the toy model from scratch: toy-world clips with captions, then the VAE, then the "
        "UNet and text encoder (recipe: vidseg_nb/toy/train.py, reasons: docs/toy.md). Seeded; a checkpoint "
        "every 2 minutes and after each phase (--resume continues it); OUT/loss.png holds the loss curves "
        "and OUT/model the diffusers folder with MANIFEST.json.",
    )
    t.add_argument(
        "--minutes", type=float, default=None,
        help="time budget: plans the steps from this machine's speed (default: the shipped model's plan, "
        "VAE 2,470 and UNet 5,233 steps, about 45 minutes on 2 cores)",
    )  # fmt: skip
    t.add_argument("--out", default="toy-train", help="output folder (default ./toy-train)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--clips", type=int, default=400, help="training clips (default 400)")
    t.add_argument("--frames-per-clip", type=int, default=6)
    t.add_argument("--size", type=int, default=256, help="frame side in px (default 256)")
    t.add_argument("--vae-steps", type=int, default=None, help="fix the VAE steps (instead of --minutes)")
    t.add_argument("--unet-steps", type=int, default=None, help="fix the UNet steps (instead of --minutes)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train_toy)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(args.rest)


# --------------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------------
def _add_protocol(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--protocol",
        default=None,
        choices=("authors", "late"),
        help="late: ground truth only at scoring (the paper, SPEC 8); authors: the official protocol of the "
        "authors' code, the first frame's ground truth merges clusters before KNN, CBR and modulation "
        "(default: authors with --preset authors, else late)",
    )


def _add_evaluate(sub: Any) -> None:
    e = sub.add_parser(
        "evaluate",
        help="score a dataset (mIoU, mVC8, mVC16; J&F for DAVIS), resumable, optionally on Ray",
        description="Evaluate on a dataset folder (SPEC 8). Each video is appended to "
        "OUT/per_video.jsonl (a video that fails gets an 'error' line and the run goes on); rerunning "
        "with the same --out resumes. The setting (full config) goes to OUT/run.json, the pooled "
        "scores to OUT/summary.json. Exit status 1 when a video failed.",
    )
    e.add_argument("--dataset", required=True, choices=DATASETS)
    e.add_argument("--root", required=True, help="dataset folder")
    e.add_argument("--videos", type=int, default=None, help="only the first N videos")
    e.add_argument("--out", default=None, help="output folder (default: ./eval_DATASET)")
    e.add_argument(
        "--ray",
        action="store_true",
        help="Ray actors, one model each: one per GPU of the cluster, else one per CPU "
        "(pip install 'vidseg_nb[cluster]')",
    )
    e.add_argument(
        "--address", default=None, help="Ray cluster address, e.g. auto (default: a local instance)"
    )
    e.add_argument("--workers", type=int, default=None, help="at most N Ray actors")
    e.add_argument(
        "--retries", type=int, default=1, help="attempts after a video's first failure (default 1)"
    )
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_protocol(e)
    e.add_argument(
        "--assign",
        default="first-frame",
        choices=("first-frame", "names", "both"),
        help="clusters -> classes: from the first annotated frame's ground truth (default), by their names "
        "(the dataset's class names are the vocabulary; no ground truth is read to assign; issue 13), or both",
    )
    add_config_args(e)
    e.set_defaults(func=cmd_evaluate)


def _add_ablate(sub: Any) -> None:
    a = sub.add_parser(
        "ablate",
        help="the paper's Table 2 ablation on dataset videos or synthetic clips",
        description="Run the six rows of the paper's Table 2 (B, masked modulation, feature aggregation, "
        "CBR) and print them in the paper's layout, next to the paper's SD 2.1 numbers.",
    )
    a.add_argument("--dataset", default=None, choices=DATASETS)
    a.add_argument("--root", default=None, help="dataset folder")
    a.add_argument("--videos", type=int, default=1, help="first N videos of the dataset (default 1)")
    a.add_argument("--synthetic", type=int, default=0, metavar="N", help="use N synthetic clips instead")
    a.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    a.add_argument("--no-paper", action="store_true", help="leave out the paper's columns")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_protocol(a)
    add_config_args(a, preview=False)
    a.set_defaults(func=cmd_ablate)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vidseg", description="Zero-shot video semantic segmentation with Stable Diffusion."
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "segment",
        help="segment a clip: overlay video, label video, per-frame label PNGs, OUT_config.json",
    )
    s.add_argument("clip", help="video file or folder of frames")
    s.add_argument("-o", "--output", default="segmentation.mp4", help="overlay video to write (mp4)")
    s.add_argument(
        "--labels-dir", default=None, help="folder for per-frame palette PNGs (default: OUT_labels/)"
    )
    s.add_argument(
        "--names",
        default=None,
        metavar="WORDS",
        help='name the segments with a vocabulary, e.g. "person, dog, grass, sky": writes OUT_names.json '
        "and draws a legend on the overlay (issue 13; SD 2.x only)",
    )
    s.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its checkpoint OUT_state.npz (same clip, model and settings)",
    )
    s.add_argument(
        "--first-frame-mask",
        default=None,
        metavar="MASK.png",
        help="follow objects (issue 22): frame 1's object mask (DAVIS palette PNG of ids, or a 0/255 PNG "
        "for one object; the clip's size); writes OUT_objects.mp4 and the object PNGs OUT_objects/",
    )
    s.add_argument(
        "--gt",
        default=None,
        metavar="DIR",
        help="folder of DAVIS annotation PNGs of the clip: prints J&F per object and the mean (without "
        "--first-frame-mask its first PNG is the mask)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_args(s)
    s.set_defaults(func=cmd_segment)
    _add_evaluate(sub)
    _add_ablate(sub)
    e = sub.add_parser(
        "example", help="write a synthetic clip with planted moving objects (and its ground truth)"
    )
    e.add_argument("output", help="mp4/gif file or folder")
    e.add_argument("--frames", type=int, default=16)
    e.add_argument("--height", type=int, default=256)
    e.add_argument("--width", type=int, default=256)
    e.add_argument("--objects", type=int, default=3)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--labels-dir", default=None, help="also write the ground-truth label PNGs here")
    e.add_argument(
        "--toy",
        action="store_true",
        help="a toy-world clip (square, --height px, named objects the toy model was trained on: --model toy)",
    )
    e.set_defaults(func=cmd_example)
    _add_train_toy(sub)
    b = sub.add_parser("bench", help="cost and speed benchmark (see benchmarks/)")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=cmd_bench)
    return p


CLI_WHAT_TO_GIVE = "Give an mp4/webm/mov/gif/avi file or a folder of PNG/JPG frames as the clip."
"""What the command line asks for where the library's clip errors say what to upload (the demo's words)."""


def cli_message(error: BaseException) -> str:
    """One line for a user mistake, in command-line words: the library's clip errors end with what to
    upload in the demo; here they say what to give on the command line."""
    from .video.clip import _WHAT_TO_UPLOAD

    return str(error).replace("\n", " ").replace(_WHAT_TO_UPLOAD, CLI_WHAT_TO_GIVE)


def main(argv: list[str] | None = None) -> int:
    from .errors import VidSegError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (VidSegError, FileNotFoundError) as e:
        msg = cli_message(e)
        print(f"vidseg {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = [
    "main",
    "build_parser",
    "config_from_args",
    "add_config_args",
    "config_fields",
    "read_config_json",
    "config_json",
    "open_backbone",
    "RANDOM_BANNER",
    "SegConfig",
]
