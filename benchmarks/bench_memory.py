"""Peak memory of ``vidseg segment`` against clip length (issue 16: memory must not grow with the clip).

For each N, writes a synthetic 480x856 clip of N frames (batch by batch, so the generator itself stays
small), runs ``vidseg segment CLIP --preview --max-side 128 --model tiny`` as a subprocess and prints
the child's peak RSS (``ru_maxrss`` of that child alone, measured by a small wrapper process) and the
wall time per frame. If peak RSS grows with N, the slope (MB per 100 frames) says how much each frame
costs.

    python benchmarks/bench_memory.py                # N = 100 and 300
    python benchmarks/bench_memory.py 100 300 1000   # any lengths
    python benchmarks/bench_memory.py --code /path/to/checkout 100   # measure another checkout's code

Set OMP_NUM_THREADS etc. as for any CPU run; ``--extra`` passes more flags to ``vidseg segment``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# runs the CLI in-process in a fresh interpreter and reports its own peak RSS (ru_maxrss, KiB on Linux)
_CHILD = """
import json, resource, sys, time
from vidseg_nb.cli import main
t0 = time.perf_counter()
rc = main(sys.argv[1:])
dt = time.perf_counter() - t0
r = resource.getrusage(resource.RUSAGE_SELF)
print("BENCH_MEMORY " + json.dumps({"rc": rc, "seconds": dt, "maxrss_kib": r.ru_maxrss}), flush=True)
"""


def run_one(n: int, work: Path, code: Path, height: int, width: int, extra: list[str]) -> dict:
    sys.path.insert(0, str(ROOT))
    from vidseg_nb.synthetic import save_long_clip

    clip = work / f"clip_{n}.mp4"
    if not clip.is_file():
        save_long_clip(clip, n, height, width, seed=0)
    out = work / f"seg_{n}.mp4"
    cmd = [sys.executable, "-c", _CHILD, "segment", str(clip), "-o", str(out), "--preview"]
    cmd += ["--max-side", "128", "--model", "tiny", *extra]
    env = dict(os.environ, PYTHONPATH=str(code), TQDM_DISABLE="1")
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("BENCH_MEMORY ")]
    if r.returncode != 0 or not line:
        raise SystemExit(f"N={n}: vidseg failed (rc {r.returncode}):\n{r.stderr[-2000:]}")
    res = json.loads(line[0].split(" ", 1)[1])
    return dict(n=n, peak_rss_mb=res["maxrss_kib"] / 1024, s_per_frame=res["seconds"] / n, wall_s=wall)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("frames", nargs="*", type=int, default=[100, 300], help="clip lengths N")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=856)
    p.add_argument("--code", type=Path, default=ROOT, help="checkout whose vidseg_nb is measured")
    p.add_argument("--work", type=Path, default=None, help="folder for clips and outputs (default: temp)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `vidseg segment` flags")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        print(f"vidseg segment --preview --max-side 128 --model tiny, {args.width}x{args.height} clips")
        print(f"{'frames':>7} {'peak RSS (MB)':>14} {'s/frame':>8}")
        for n in args.frames:
            row = run_one(n, work, args.code, args.height, args.width, args.extra)
            rows.append(row)
            print(f"{row['n']:>7} {row['peak_rss_mb']:>14.0f} {row['s_per_frame']:>8.3f}", flush=True)
        if len(rows) >= 2:
            a, b = rows[0], rows[-1]
            slope = (b["peak_rss_mb"] - a["peak_rss_mb"]) / (b["n"] - a["n"]) * 100
            print(
                f"growth: {slope:.0f} MB per 100 frames (raw frames alone: "
                f"{args.height * args.width * 3 * 100 / 2**20:.0f} MB per 100 frames)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
