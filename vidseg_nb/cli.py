"""Command line: ``vidseg segment``, ``vidseg evaluate``, ``vidseg ablate``, ``vidseg bench``.

A user mistake (bad clip, model that cannot be loaded, invalid setting) prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .config import PRESETS, ConfigError, SegConfig, default_model, preset

RANDOM_BANNER = (
    "NOTE: this model has random weights ('tiny', 'tiny-svd', 'random-*'): its segmentations are not "
    "meaningful (smoke test only)."
)


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The hyper-parameter flags shared by every command that runs the pipeline."""
    p.add_argument(
        "--model",
        default=None,
        help=f"SD 2.x or SVD: Hub id, diffusers folder, single file, 'tiny' or 'tiny-svd' (default: {default_model()})",
    )
    p.add_argument("--preset", default="vidseg", choices=sorted(PRESETS))
    p.add_argument("--lam", type=float, default=None, help="lambda, modulation strength")
    p.add_argument("--s", type=float, default=None, help="filtering factor outside the mask, in [0, 1]")
    p.add_argument("--clusters", type=int, default=None, help="K-Means clusters K")
    p.add_argument("--batch-size", type=int, default=None, help="B, frames per batch")
    p.add_argument("--t-m", type=int, default=None, help="modulation / start step index (0..24)")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--max-side", type=int, default=None, help="cap on the long side (multiple of 64)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")


def config_from_args(args: argparse.Namespace) -> SegConfig:
    """A SegConfig from the preset and the flags that were given."""
    over: dict[str, Any] = {}
    for flag, name in (
        ("lam", "lam"), ("s", "s"), ("clusters", "n_clusters"), ("batch_size", "batch_size"), ("t_m", "t_m"),
        ("max_frames", "max_frames"), ("max_side", "max_side"), ("seed", "seed"),
    ):  # fmt: skip
        v = getattr(args, flag, None)
        if v is not None:
            over[name] = v
    if getattr(args, "preview", False):
        over["modulation"] = False
    return preset(args.preset, **over)


def _load(args: argparse.Namespace):
    from .loading import load_backbone

    bb = load_backbone(args.model, device=args.device)
    if bb.is_random:
        print(RANDOM_BANNER, file=sys.stderr)
    return bb


def cmd_segment(args: argparse.Namespace) -> int:
    from .pipeline import VideoSegmenter
    from .video import overlay_frames, read_video, write_label_pngs, write_video

    config = config_from_args(args)
    clip = read_video(args.clip, max_frames=config.max_frames)
    out = Path(args.output)
    labels_dir = Path(args.labels_dir) if args.labels_dir else out.with_name(out.stem + "_labels")
    bb = _load(args)
    t0 = time.perf_counter()
    res = VideoSegmenter(bb, config, cache_frames=0).segment(clip, keep=None)
    dt = time.perf_counter() - t0
    write_video(out, overlay_frames(clip.frames[: len(res)], res.labels), fps=res.fps)
    label_video = out.with_name(out.stem + "_labels.mp4")
    from .palette import colorize

    write_video(label_video, colorize(res.labels), fps=res.fps)
    write_label_pngs(labels_dir, res.labels)
    w = res.work_per_frame()
    print(
        f"{len(res)} frames in {dt:.1f} s ({res.mode} mode, {res.size[1]}x{res.size[0]} processing size); "
        f"per frame: {w['unet_samples']:.0f} UNet samples, {w['vae_decodes']:.0f} VAE decodes.\n"
        f"overlay: {out}\nlabels video: {label_video}\nlabel PNGs: {labels_dir}/"
    )
    if bb.is_random:
        print(RANDOM_BANNER)
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    from .synthetic import make_clip, save_clip

    clip = make_clip(
        n_frames=args.frames, height=args.height, width=args.width, n_objects=args.objects, seed=args.seed
    )
    path = save_clip(clip, args.output, labels_dir=args.labels_dir)
    print(
        f"wrote a synthetic clip of {len(clip)} frames ({args.width}x{args.height}, {args.objects} moving objects): {path}"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vidseg", description="Zero-shot video semantic segmentation with Stable Diffusion."
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("segment", help="segment a clip: overlay video, label video, per-frame label PNGs")
    s.add_argument("clip", help="video file or folder of frames")
    s.add_argument("-o", "--output", default="segmentation.mp4", help="overlay video to write (mp4)")
    s.add_argument(
        "--labels-dir", default=None, help="folder for per-frame palette PNGs (default: OUT_labels/)"
    )
    s.add_argument("--preview", action="store_true", help="coarse maps only, no modulation (fast)")
    add_config_args(s)
    s.set_defaults(func=cmd_segment)
    try:
        from .evaluate import add_parsers

        add_parsers(sub)
    except ImportError:  # pragma: no cover - evaluation module optional during development
        pass
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
    e.set_defaults(func=cmd_example)
    b = sub.add_parser("bench", help="cost and speed benchmark (see benchmarks/)")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    from .backbone import BackboneLoadError
    from .datasets import DatasetError
    from .video import VideoError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (VideoError, BackboneLoadError, ConfigError, DatasetError, FileNotFoundError) as e:
        msg = str(e).replace("\n", " ")
        print(f"vidseg {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["main", "build_parser", "config_from_args", "add_config_args", "SegConfig"]
