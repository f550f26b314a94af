"""Seconds per stage on a CPU for the demo's case: a 16-frame toy clip at 256 px, K = 5, full mode, on
the toy model (issue 21 item 6). Prints the pipeline's stage timings, the time inside UNet forwards and
VAE encodes/decodes (timed around the modules themselves), the share outside both, and the work done
(UNet samples and VAE decodes per frame, machine-independent).

``python benchmarks/bench_toy_cpu.py [--threads 2] [--frames 16] [--model toy] [--json F]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any


def _timed(store: dict[str, float], key: str, fn: Any) -> Any:
    def wrapper(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            store[key] = store.get(key, 0.0) + time.perf_counter() - t0

    return wrapper


def main(argv: list[str] | None = None) -> int:
    import torch

    from vidseg_nb import load_backbone
    from vidseg_nb.config import SegConfig
    from vidseg_nb.pipeline import VideoSegmenter
    from vidseg_nb.toy.world import EVAL_SEEDS, make_toy_clip

    p = argparse.ArgumentParser(prog="bench_toy_cpu.py")
    p.add_argument("--model", default="toy")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--clusters", type=int, default=5)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    bb = load_backbone(a.model, device="cpu")
    inside: dict[str, float] = {}
    bb.unet.forward = _timed(inside, "UNet", bb.unet.forward)
    bb.vae.decode = _timed(inside, "VAE decode", bb.vae.decode)
    bb.vae.encode = _timed(inside, "VAE encode", bb.vae.encode)
    clip = make_toy_clip(EVAL_SEEDS[0], a.frames, a.size, 3, speed=3.0)
    cfg = SegConfig(n_clusters=a.clusters, max_side=a.size, seed=0)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = VideoSegmenter(bb, cfg, cache_frames=0).segment(clip.frames, mode="full", keep=None, progress=False)
    total = time.perf_counter() - t0
    n = len(res)
    vae = inside.get("VAE decode", 0.0) + inside.get("VAE encode", 0.0)
    other = total - inside.get("UNet", 0.0) - vae
    out = dict(
        model=bb.source,
        frames=n,
        size=list(res.size),
        clusters=a.clusters,
        threads=a.threads,
        load_average_before=round(load, 2),
        total_s=round(total, 2),
        s_per_frame=round(total / n, 3),
        stages_s={k: round(v, 2) for k, v in res.timings.items()},
        inside_s={k: round(v, 2) for k, v in inside.items()},
        share={
            "UNet": round(inside.get("UNet", 0.0) / total, 3),
            "VAE": round(vae / total, 3),
            "other": round(other / total, 3),
        },  # fmt: skip
        work_per_frame={k: round(v, 2) for k, v in res.work_per_frame().items()},
        torch=torch.__version__,
        cpu=os.cpu_count(),
    )
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
