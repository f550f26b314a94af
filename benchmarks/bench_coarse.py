"""Benchmark of stages 1-2 (scene context model and CBR) on one batch at the VSPW grid.

Times K-Means (K=20, n_init=10) on all vectors of a 14-frame batch with both backends (scikit-learn, and
:class:`vidseg_nb.kmeans.TorchKMeans` through ``SceneContextModel(backend="torch")``), KNN fit/predict
with both backends (fit on one batch, predict the next), the correspondence-based refinement and a whole
``coarse_batch`` (first batch and a following one, each with its autoregressive refit, ``update=True``).
Each stage runs in a fresh subprocess so that its peak memory (peak RSS minus RSS just before the stage,
inputs excluded: Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``, else
``ru_maxrss`` growth) is its own. Prints a markdown table.

    python benchmarks/bench_coarse.py [--frames 14 --h 28 --w 52 --c 640 --repeat 1] [--device cuda]

``--device cuda``: the torch stages (``*_torch``, ``refine``) get CUDA tensors (timed with
``torch.cuda.synchronize``; their peak is then ``torch.cuda.max_memory_allocated``); the scikit-learn
stages stay on the CPU.

Features are synthetic: 20 planted clusters (block layout, drifting one cell every other frame) plus
Gaussian noise, float32, so K-Means converges as on real features rather than on pure noise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys

from _batch import add_batch_arguments, best_seconds, planted_features

STAGES = (
    "kmeans",
    "kmeans_torch",
    "knn_sklearn_fit",
    "knn_sklearn_predict",
    "knn_torch_fit",
    "knn_torch_predict",
    "refine",
    "coarse_batch_first",
    "coarse_batch_next",
    "coarse_batch_first_torch",
    "coarse_batch_next_torch",
)


def make_features(frames: int, h: int, w: int, c: int, seed: int = 0):
    """Two consecutive batches (frames, h, w, c) of the planted features."""
    f = planted_features(frames, h, w, c, batches=2, seed=seed)
    return f[:frames], f[frames:]


def maxrss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 / 1024 if sys.platform == "darwin" else r / 1024


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> tuple[float, bool]:
    """Current RSS in MiB and whether the kernel's peak (VmHWM) could be reset to it (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        rss = _status_mib("VmRSS")
        if rss is not None:
            return rss, True
    except OSError:
        pass
    return maxrss_mib(), False


def peak_mib(reset_ok: bool) -> float:
    hwm = _status_mib("VmHWM") if reset_ok else None
    return hwm if hwm is not None else maxrss_mib()


def run_stage(name: str, args: argparse.Namespace) -> dict:
    import numpy as np

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import torch

    from vidseg_nb.context import SceneContextModel, coarse_batch
    from vidseg_nb.refine import refine

    b1, b2 = make_features(args.frames, args.h, args.w, args.c)
    rng = np.random.default_rng(1)
    labels1 = rng.integers(0, 20, b1.shape[:3])
    torch_stage = name.endswith("_torch") or name.startswith("knn_torch") or name == "refine"
    cuda = torch_stage and args.device == "cuda"
    if torch_stage:  # tensors on the device (CPU or CUDA), as the pipeline hands them
        b1, b2 = (torch.from_numpy(b).to(args.device) for b in (b1, b2))
    backend = "torch" if name.endswith("_torch") else "sklearn"

    def model() -> SceneContextModel:
        return SceneContextModel(n_clusters=20, n_init=10, seed=0, backend=backend)

    prep = None
    if name.endswith("_predict"):
        prep = SceneContextModel(backend=name.split("_")[1]).fit(b1, labels1)
    if name.startswith("coarse_batch_next"):
        prep = model()
        coarse_batch(prep, b1, update=True)
    if name == "refine":
        refine(labels1[:2], b1[:2])  # warm-up of torch kernels
    if cuda:  # warm-up of the CUDA kernels of this stage's path
        SceneContextModel(n_clusters=2, n_init=1, backend="torch").start(b1[:1, :4])
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    import gc

    gc.collect()
    base, reset_ok = reset_peak()
    cuda0 = torch.cuda.memory_allocated() if cuda else 0

    def stage() -> None:
        if name.startswith("kmeans"):
            model().start(b1)
        elif name.endswith("_fit"):
            SceneContextModel(backend=name.split("_")[1]).fit(b1, labels1)
        elif name.endswith("_predict"):
            prep.predict(b2)
        elif name == "refine":
            refine(labels1, b1, radius2=1.0)
        elif name.startswith("coarse_batch_first"):
            coarse_batch(model(), b1, update=True)
        elif name.startswith("coarse_batch_next"):
            coarse_batch(prep, b2, update=True)

    seconds, _ = best_seconds(stage, args.repeat, torch.cuda.synchronize if cuda else None)
    peak = (torch.cuda.max_memory_allocated() - cuda0) / 2**20 if cuda else peak_mib(reset_ok) - base
    return {"stage": name, "seconds": seconds, "peak_extra_mib": peak, "base_mib": base, "cuda": cuda}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_batch_arguments(ap)
    ap.add_argument("--repeat", type=int, default=1, help="repetitions per stage; the minimum is reported")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device of the torch stages")
    ap.add_argument("--stage", choices=STAGES, help="(internal) run one stage and print JSON")
    ap.add_argument("--stages", nargs="*", choices=STAGES, default=list(STAGES))
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args)))
        return

    import numpy as np
    import sklearn
    import torch

    load0 = os.getloadavg()[0]
    rows = []
    for name in args.stages:
        cmd = [sys.executable, os.path.abspath(__file__), "--stage", name]
        cmd += ["--frames", str(args.frames), "--h", str(args.h), "--w", str(args.w), "--c", str(args.c)]
        cmd += ["--repeat", str(args.repeat), "--device", args.device]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  {name}: {rows[-1]['seconds']:.3f} s", file=sys.stderr)

    n = args.frames * args.h * args.w
    print(
        f"Batch: B={args.frames} frames, grid {args.h}x{args.w} (h x w), C={args.c}: "
        f"{n} vectors, {n * args.c * 4 / 2**20:.0f} MiB float32 per batch."
    )
    print(
        f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"nproc={os.cpu_count()}, torch threads={torch.get_num_threads()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}; load average before the run {load0:.1f}."
    )
    print()
    print(
        f"Torch stages on {args.device}"
        + (f" ({torch.cuda.get_device_name()})." if args.device == "cuda" else ".")
    )
    print()
    print("| stage | seconds | peak extra memory (MiB; CUDA: allocated) |")
    print("|---|---:|---:|")
    labels = {
        "kmeans": "K-Means start, scikit-learn (K=20, n_init=10, all B*h*w vectors) + M^1 + KNN fit",
        "kmeans_torch": "K-Means start, TorchKMeans (same) + M^1 + torch KNN fit",
        "knn_sklearn_fit": "KNN fit, scikit-learn (one batch)",
        "knn_sklearn_predict": "KNN predict, scikit-learn (next batch)",
        "knn_torch_fit": "KNN fit, torch",
        "knn_torch_predict": "KNN predict, torch (float64 distances)",
        "refine": "CBR refine (radius2=1)",
        "coarse_batch_first": "coarse_batch, first batch (K-Means + KNN + CBR + refit)",
        "coarse_batch_next": "coarse_batch, next batch (KNN + CBR + refit)",
        "coarse_batch_first_torch": "coarse_batch, first batch, torch backend (K-Means + KNN + CBR + refit)",
        "coarse_batch_next_torch": "coarse_batch, next batch, torch backend (KNN + CBR + refit)",
    }
    for r in rows:
        where = " [CUDA]" if r.get("cuda") else ""
        print(f"| {labels[r['stage']]}{where} | {r['seconds']:.3f} | {r['peak_extra_mib']:.0f} |")


if __name__ == "__main__":
    main()
