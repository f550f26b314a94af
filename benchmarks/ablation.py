"""The paper's Table 2 ablation (B, masked modulation, feature aggregation, CBR) on the shared sample clips.

Runs :func:`vidseg_nb.evaluation.ablation.run_ablation` on the first ``--videos`` DAVIS 2016 sequences and the
CamVid sequence of ``../shared/data`` (one table per dataset: their class sets differ), or on synthetic
clips when that folder is absent (or with ``--synthetic N``), and prints the tables in the paper's
layout next to the paper's SD 2.1 numbers (VSPW, first 30 validation videos: a different dataset, so
they are a reference point, not a target).

    python benchmarks/ablation.py                       # tiny random model: a smoke run
    python benchmarks/ablation.py --model ./sd21 --frames 30 --max-side 512 --t-m 22 --clusters 20

With the default random-weight ``tiny`` model the numbers only show that every row runs end to end;
they say nothing about the method's quality.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="backbone source (default: tiny, random weights)")
    p.add_argument("--data", default=str(DATA), help="sample data folder (default: ../shared/data)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="use N synthetic clips instead")
    p.add_argument("--videos", type=int, default=1, help="DAVIS sequences to use (default 1)")
    p.add_argument("--frames", type=int, default=10, help="frames per clip (default 10: two VC_8 windows)")
    p.add_argument("--max-side", type=int, default=128, help="processing size cap (default 128)")
    p.add_argument("--clusters", type=int, default=4, help="K (default 4)")
    p.add_argument("--kmeans-n-init", type=int, default=2)
    p.add_argument("--t-m", type=int, default=24, help="modulation step index (default 24: one step)")
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)

    import torch

    from vidseg_nb.config import preset
    from vidseg_nb.datasets import open_dataset
    from vidseg_nb.evaluation.ablation import (
        RANDOM_NOTE,
        dataset_clips,
        format_table,
        run_ablation,
        synthetic_clips,
    )
    from vidseg_nb.evaluation.store import json_value
    from vidseg_nb.loading import load_backbone

    config = preset(
        "vidseg",
        n_clusters=args.clusters,
        kmeans_n_init=args.kmeans_n_init,
        t_m=args.t_m,
        max_side=args.max_side,
        max_frames=args.frames,
    )
    data = Path(args.data)
    groups: list[tuple[str, list[tuple]]] = []
    if args.synthetic or not data.is_dir():
        if not args.synthetic:
            print(f"{data} is absent: using 2 synthetic clips instead\n")
        groups.append(("synthetic", synthetic_clips(args.synthetic or 2, n_frames=args.frames)))
    else:
        groups.append(
            ("DAVIS 2016", dataset_clips(open_dataset("davis", data / "davis2016"), args.videos, args.frames))
        )
        groups.append(
            (
                "CamVid 0016E5 (11 classes)",
                dataset_clips(open_dataset("camvid", data / "camvid"), 1, args.frames),
            )
        )

    bb = load_backbone(args.model, device=args.device)
    dev = torch.cuda.get_device_name(0) if bb.device.type == "cuda" else f"CPU {platform.machine()}"
    print(
        f"model {bb.source} on {dev}; {args.frames} frames per clip, long side <= {args.max_side}, "
        f"K={args.clusters}, t_m={args.t_m}\n"
    )
    dump = {}
    for title, clips in groups:
        t0 = time.perf_counter()
        results = run_ablation(bb, clips, config, clips[0][3], clips[0][4])
        dt = time.perf_counter() - t0
        names = ", ".join(c[0] for c in clips)
        print(f"### {title}: {names} ({dt:.0f} s)\n")
        print(format_table(results))
        print()
        dump[title] = [{k: v for k, v in r.items() if k not in ("config", "per_clip")} for r in results]
    if bb.is_random:
        print(f"NOTE: {RANDOM_NOTE}. Scores in %; '—' = undefined (mVC_n needs more than n frames).")
    if args.json:
        Path(args.json).write_text(json.dumps(json_value(dump), indent=2) + "\n", encoding="utf-8")
        print(f"rows: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
