"""Time the evaluation metrics on a 100-frame 480x360 clip on the CPU; prints a markdown table.

    python benchmarks/bench_metrics.py [--repeat 3]

Rows: synthetic piecewise-constant random labels (moving blocks, 11 classes, prediction = ground truth
with 5% of the pixels flipped), synthetic per-pixel noise (worst case for J&F: boundaries everywhere)
and, when ``../shared/data`` is present, the real CamVid clip 0016E5 (prediction = previous frame's
ground truth). J&F scores one binary object per clip (class 3 = road for CamVid). Times are the best of
``--repeat`` runs, in milliseconds; label loading is not timed. Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy

try:
    from vidseg_nb import metrics as M
except ModuleNotFoundError:  # run from a checkout without installing the package
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from vidseg_nb import metrics as M

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
T, H, W, C = 100, 360, 480, 11


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def synthetic_blocks(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    cells = rng.integers(0, C, size=(H // 24 + 2, W // 24 + 2))
    big = np.kron(cells, np.ones((24, 24), dtype=np.int64))
    gt = np.stack([big[t // 10 : t // 10 + H, t // 4 : t // 4 + W] for t in range(T)])
    flip = rng.random(gt.shape) < 0.05
    pred = np.where(flip, rng.integers(0, C, size=gt.shape), gt)
    return gt, pred


def camvid() -> tuple[np.ndarray, np.ndarray] | None:
    labels = DATA / "camvid" / "0016E5" / "labels"
    if not labels.is_dir():
        return None
    from PIL import Image

    gt = np.stack([np.asarray(Image.open(p)) for p in sorted(labels.glob("*.png"))[:T]]).astype(np.int64)
    pred = np.concatenate([gt[:1], gt[:-1]])
    return gt, np.where(pred >= C, 0, pred)  # void (11) is not a prediction


def run_row(name: str, gt: np.ndarray, pred: np.ndarray, obj: int, repeat: int) -> str:
    res: dict[str, float] = {}

    def miou() -> None:
        res["mIoU"] = M.mean_iou(M.confusion_matrix(gt, pred, C))

    def mvc(n: int) -> Callable[[], None]:
        def f() -> None:
            res[f"mVC{n}"] = M.mean_video_consistency([M.video_consistency(gt, pred, n)])

        return f

    def jf() -> None:
        res["J&F"] = M.davis_scores(gt == obj, pred == obj)["JF_mean"]

    t_miou = best_ms(miou, repeat)
    t_vc8 = best_ms(mvc(8), repeat)
    t_vc16 = best_ms(mvc(16), repeat)
    t_jf = best_ms(jf, repeat)
    total = t_miou + t_vc8 + t_vc16 + t_jf
    t, h, w = gt.shape
    return (
        f"| {name} | {t}x{w}x{h} | {t_miou:.0f} | {t_vc8:.0f} | {t_vc16:.0f} | {t_jf:.0f} | {total:.0f} | "
        f"{res['mIoU']:.3f} / {res['mVC8']:.3f} / {res['mVC16']:.3f} / {res['J&F']:.3f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        ncpu = os.cpu_count() or 1
    print(
        f"Machine: {platform.processor() or platform.machine()}, nproc={ncpu}, "
        f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}\n"
    )
    print(
        "| clip | TxWxH | confusion + mIoU (ms) | mVC8 (ms) | mVC16 (ms) | J&F (ms) | total (ms) | mIoU / mVC8 / mVC16 / J&F |"
    )
    print("|---|---|---|---|---|---|---|---|")
    gt, pred = synthetic_blocks(rng)
    print(run_row("synthetic blocks", gt, pred, 3, args.repeat))
    noise_gt = rng.integers(0, C, size=(T, H, W))
    noise_pred = rng.integers(0, C, size=(T, H, W))
    print(run_row("synthetic per-pixel noise", noise_gt, noise_pred, 3, args.repeat))
    real = camvid()
    if real is None:
        print(f"\n(CamVid sample not found at {DATA / 'camvid'}: real-clip row skipped)")
    else:
        print(run_row("CamVid 0016E5 (prev-frame GT)", real[0], real[1], 3, args.repeat))


if __name__ == "__main__":
    main()
