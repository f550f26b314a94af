"""Timing of stage-1 K-Means: TorchKMeans (vidseg_nb/kmeans.py) against scikit-learn's KMeans.

At the VSPW size (one batch of 14 frames x 28 x 52 cells = 20,384 vectors x 640 channels), K = 20,
n_init = 10, on the same float32 features; prints seconds, n_iter_, inertia and whether both found the same
partition (up to a permutation of ids) as a markdown table.

    python benchmarks/bench_kmeans.py [--frames 14 --h 28 --w 52 --c 640 --k 20 --n-init 10]
        [--device cpu|cuda] [--threads N] [--data planted|gauss] [--repeat 1]

``--data planted`` (default): 20 block-shaped planted clusters plus Gaussian noise, as in
benchmarks/bench_coarse.py, so K-Means converges as on real features; ``gauss``: pure noise (many Lloyd
iterations, the worst case). The minimum over ``--repeat`` runs is reported; on CUDA the first torch run
also pays the CUDA start-up, so use ``--repeat 2`` there.
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np
import sklearn
import torch
from _batch import add_batch_arguments, best_seconds, planted_features
from sklearn.cluster import KMeans

from vidseg_nb.kmeans import TorchKMeans


def make_features(frames: int, h: int, w: int, c: int, data: str, seed: int = 0) -> np.ndarray:
    """(frames * h * w, c) float32 features: the planted ones of benchmarks/bench_coarse.py, or noise."""
    if data == "gauss":
        return np.random.default_rng(seed).standard_normal((frames * h * w, c)).astype(np.float32)
    return planted_features(frames, h, w, c, seed=seed).reshape(-1, c)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_batch_arguments(ap)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--n-init", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (scikit-learn: OMP_NUM_THREADS)")
    ap.add_argument("--data", choices=("planted", "gauss"), default="planted")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-sklearn", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    x = make_features(args.frames, args.h, args.w, args.c, args.data)
    xt = torch.from_numpy(x).to(args.device)
    rows = []

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    best, tk = best_seconds(
        lambda: TorchKMeans(n_clusters=args.k, n_init=args.n_init, random_state=0).fit(xt), args.repeat, sync
    )
    tk_labels = tk.labels_.cpu().numpy()
    rows.append((f"TorchKMeans ({args.device})", best, tk.n_iter_, tk.inertia_))

    sk_labels = None
    if not args.skip_sklearn:
        best, sk = best_seconds(
            lambda: KMeans(n_clusters=args.k, n_init=args.n_init, random_state=0, algorithm="lloyd").fit(x),
            args.repeat,
        )
        sk_labels = sk.labels_
        rows.append(("scikit-learn KMeans (lloyd, cpu)", best, sk.n_iter_, float(sk.inertia_)))

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "-"
    print(
        f"Data: {args.data}, {x.shape[0]} vectors x {x.shape[1]} channels (B={args.frames}, "
        f"{args.h}x{args.w}), K={args.k}, n_init={args.n_init}."
    )
    print(
        f"Machine: {cpu}, nproc={os.cpu_count()}, torch threads={torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, GPU {gpu}; torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}; load average {os.getloadavg()[0]:.1f}."
    )
    print()
    print("| implementation | seconds | n_iter_ (best run) | inertia |")
    print("|---|---:|---:|---:|")
    for name, sec, n_iter, inertia in rows:
        print(f"| {name} | {sec:.2f} | {n_iter} | {inertia:.6g} |")
    if sk_labels is not None:
        print()
        print(
            f"Same partition as scikit-learn: {same_partition(tk_labels, sk_labels)}; "
            f"inertia ratio torch/sklearn - 1 = {rows[0][3] / rows[1][3] - 1:+.2e}."
        )


if __name__ == "__main__":
    main()
