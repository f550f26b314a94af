"""Peak memory of ``vidseg segment`` against clip length (issue 16: memory must not grow with the clip).

For each N, writes a synthetic 480x856 clip of N frames (batch by batch, so the generator itself stays
small), runs ``vidseg segment CLIP --preview --max-side 128 --model tiny`` as a subprocess and prints
the child's peak RSS (``ru_maxrss`` of that child alone, measured by a small wrapper process) and the
wall time per frame. While the child runs, its peak RSS so far (VmHWM) is polled against the label
PNGs written (``trace`` in ``--json``): a flat trace is memory that does not grow with the clip, even
for a run stopped early. If peak RSS grows with N, the slope (MB per 100 frames) says how much each frame
costs.

    python benchmarks/bench_memory.py                # N = 100 and 300
    python benchmarks/bench_memory.py 100 300 1000   # any lengths
    python benchmarks/bench_memory.py --code /path/to/checkout 100   # measure another checkout's code
    python benchmarks/bench_memory.py 100 1000 --max-ratio 1.25 --extra --preset authors --batch-size 14
        # issue 23: the authors' preset (overlapping last batch, their KNN) streams too; exit 1 when the
        # peak RSS of the longest clip is over 1.25x the shortest's

Set OMP_NUM_THREADS etc. as for any CPU run; ``--extra`` passes more flags to ``vidseg segment``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def make_clip_file(path: Path, n: int, height: int, width: int) -> None:
    """The synthetic clip, written batch by batch by this checkout's synthetic.py (in a subprocess, so the
    measured process imports only the measured checkout)."""
    if path.is_file():
        return
    code = f"from vidseg_nb.synthetic import save_long_clip; save_long_clip({str(path)!r}, {n}, {height}, {width})"
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def run_one(
    n: int, work: Path, code: Path, height: int, width: int, extra: list[str], poll: float = 5.0
) -> dict:
    clip = work / f"clip_{n}.mp4"
    make_clip_file(clip, n, height, width)
    out = work / f"seg_{n}.mp4"
    # the child's peak RSS, and (polled while it runs) its peak so far against the frames written
    cmd = [sys.executable, "-c", _CHILD, "segment", str(clip), "-o", str(out), "--preview"]
    cmd += ["--max-side", "128", "--model", "tiny", *extra]
    env = dict(os.environ, PYTHONPATH=str(code), TQDM_DISABLE="1")
    t0 = time.perf_counter()
    labels = work / f"seg_{n}_labels"
    shutil.rmtree(labels, ignore_errors=True)  # PNGs of an earlier run would count as frames done
    trace: list[dict] = []  # (frames written so far, the child's peak RSS so far): flat = no growth
    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, text=True, env=env)
        while proc.poll() is None:
            hwm = _status_mb(proc.pid, "VmHWM")
            done = sum(1 for _ in labels.glob("*.png")) if labels.is_dir() else 0
            last = trace[-1] if trace else {}
            if hwm == hwm and (done, hwm) != (last.get("frames_done"), last.get("peak_rss_mb")):
                trace.append(
                    {"s": round(time.perf_counter() - t0, 1), "frames_done": done, "peak_rss_mb": hwm}
                )
            time.sleep(poll)
        so.seek(0), se.seek(0)
        stdout, stderr = so.read(), se.read()
    wall = time.perf_counter() - t0
    line = [ln for ln in stdout.splitlines() if ln.startswith("BENCH_MEMORY ")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"N={n}: vidseg failed (rc {proc.returncode}):\n{stderr[-2000:]}")
    res = json.loads(line[0].split(" ", 1)[1])
    return dict(
        n=n, peak_rss_mb=res["maxrss_kib"] / 1024, s_per_frame=res["seconds"] / n, wall_s=wall, trace=trace
    )


def _status_mb(pid: int, field: str) -> float:
    """``field`` (VmHWM, VmRSS) of process ``pid`` in MB, nan when it is gone."""
    try:
        for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
            if ln.startswith(field + ":"):
                return int(ln.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def machine() -> str:
    """CPU model, cores this process may use, and the thread settings (the rows depend on them)."""
    cpu = "unknown CPU"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores available, OMP_NUM_THREADS={threads}"


def _rss_mb() -> float:
    for ln in Path("/proc/self/status").read_text().splitlines():
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1]) / 1024
    return float("nan")


def stages(n: int, work: Path, code: Path, height: int, width: int) -> None:
    """The steps of ``vidseg segment`` (cli.cmd_segment) in this process, one by one: for each, the
    numpy memory it allocates at its peak (tracemalloc) and keeps afterwards, and the process RSS."""
    import tracemalloc

    clip_path = work / f"clip_{n}.mp4"
    make_clip_file(clip_path, n, height, width)
    sys.path.insert(0, str(code))
    from vidseg_nb.cli import config_from_args
    from vidseg_nb.loading import load_backbone
    from vidseg_nb.palette import colorize
    from vidseg_nb.pipeline import VideoSegmenter
    from vidseg_nb.video import overlay_frames, read_video, write_label_pngs, write_video

    args = argparse.Namespace(preset="vidseg", preview=True, max_side=128)
    config = config_from_args(args)
    bb = load_backbone("tiny")
    tracemalloc.start()
    held: dict[str, object] = {}
    print(f"{n} frames {width}x{height}; MB (per 100 frames in brackets); RSS after load: {_rss_mb():.0f} MB")
    print(f"{'step':<34} {'peak':>14} {'kept':>14} {'RSS':>7}")

    def step(name: str, fn) -> object:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        cur, peak = tracemalloc.get_traced_memory()
        p, k = (peak - base) / 2**20, (cur - base) / 2**20
        print(f"{name:<34} {p:>6.0f} ({p * 100 / n:>5.0f}) {k:>6.0f} ({k * 100 / n:>5.0f}) {_rss_mb():>7.0f}")
        return out

    clip = step("read_video (all frames)", lambda: read_video(clip_path, max_frames=config.max_frames))
    seg = VideoSegmenter(bb, config, cache_frames=0)
    step("prepare (resize all frames)", lambda: seg.prepare(clip, config))  # result dropped, as segment does
    res = step("segment (labels at input size)", lambda: seg.segment(clip, keep=None, progress=False))
    over = step("overlay_frames (whole clip)", lambda: overlay_frames(clip.frames[: len(res)], res.labels))
    step("write_video overlay", lambda: write_video(work / "o.mp4", over, fps=res.fps))
    over = None
    col = step("colorize (whole clip)", lambda: colorize(res.labels))
    step("write_video labels", lambda: write_video(work / "l.mp4", col, fps=res.fps))
    col = None
    step("write_label_pngs", lambda: write_label_pngs(work / "labels", res.labels))
    held["res"] = res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("frames", nargs="*", type=int, default=[100, 300], help="clip lengths N")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=856)
    p.add_argument("--code", type=Path, default=ROOT, help="checkout whose vidseg_nb is measured")
    p.add_argument("--work", type=Path, default=None, help="folder for clips and outputs (default: temp)")
    p.add_argument("--stages", action="store_true", help="in-process breakdown by step (first N only)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows (and the machine) here")
    p.add_argument(
        "--max-ratio", type=float, default=None, help="exit 1 if peak RSS (longest / shortest N) is over this"
    )
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `vidseg segment` flags")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.stages:
            stages(args.frames[0], work, args.code, args.height, args.width)
            return 0
        rows = []
        print(f"vidseg segment --preview --max-side 128 --model tiny, {args.width}x{args.height} clips")
        print(machine())
        print(f"{'frames':>7} {'peak RSS (MB)':>14} {'s/frame':>8}")
        for n in args.frames:
            row = run_one(n, work, args.code, args.height, args.width, args.extra)
            rows.append(row)
            print(f"{row['n']:>7} {row['peak_rss_mb']:>14.0f} {row['s_per_frame']:>8.3f}", flush=True)
            tr = row["trace"]
            if tr:
                pts = [
                    [p for p in tr if p["frames_done"] <= q * row["n"]][-1] for q in (0.1, 0.25, 0.5, 0.75, 1)
                ]
                print(
                    "        peak RSS so far at frames written: "
                    + ", ".join(f"{p['frames_done']}: {p['peak_rss_mb']:.0f} MB" for p in pts),
                    flush=True,
                )
        if args.json:
            args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
        if len(rows) >= 2:
            a, b = rows[0], rows[-1]
            ratio = b["peak_rss_mb"] / a["peak_rss_mb"]
            print(f"peak RSS ratio {b['n']}/{a['n']} frames: {ratio:.3f}")
            slope = (b["peak_rss_mb"] - a["peak_rss_mb"]) / (b["n"] - a["n"]) * 100
            print(
                f"growth: {slope:.0f} MB per 100 frames (raw frames alone: "
                f"{args.height * args.width * 3 * 100 / 2**20:.0f} MB per 100 frames)"
            )
            if args.max_ratio is not None and ratio > args.max_ratio:
                print(f"FAIL: peak RSS ratio {ratio:.3f} > {args.max_ratio}")
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
