"""What benchmarks/bench_coarse.py and benchmarks/bench_kmeans.py share: the batch-size flags (the VSPW
grid by default), the planted synthetic features and the best-of-``repeat`` timer.

Imported by name (``from _batch import ...``): the scripts run as ``python benchmarks/<script>.py``, so
this folder is first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def add_batch_arguments(ap: argparse.ArgumentParser) -> None:
    """``--frames --h --w --c``: one batch of B frames on an h x w grid of C-channel features (VSPW size)."""
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--h", type=int, default=28)
    ap.add_argument("--w", type=int, default=52)
    ap.add_argument("--c", type=int, default=640)


def planted_features(frames: int, h: int, w: int, c: int, batches: int = 1, seed: int = 0) -> np.ndarray:
    """(batches * frames, h, w, c) float32: 20 block-shaped planted clusters (drifting one cell every other
    frame) plus Gaussian noise, each vector scaled to max |x| = 1, so K-Means converges as on real
    features. The first ``frames`` frames do not depend on ``batches``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, c)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0 : w + frames * batches]
    layout = (yy // 7) * 5 + (xx // 11) % 5  # 20 block-shaped regions
    feats = []
    for j in range(batches * frames):
        lab = layout[:, j // 2 : j // 2 + w] % 20
        f = centres[lab] + 0.6 * rng.standard_normal((h, w, c)).astype(np.float32)
        feats.append(f / np.abs(f).max(axis=-1, keepdims=True))
    return np.stack(feats).astype(np.float32)


def best_seconds(
    fn: Callable[[], Any], repeat: int, sync: Callable[[], Any] | None = None
) -> tuple[float, Any]:
    """The fewest wall-clock seconds of ``repeat`` calls of ``fn`` (``sync``, e.g.
    ``torch.cuda.synchronize``, before and after each) and the last call's result."""
    best, out = float("inf"), None
    for _ in range(max(1, repeat)):
        if sync is not None:
            sync()
        t0 = time.perf_counter()
        out = fn()
        if sync is not None:
            sync()
        best = min(best, time.perf_counter() - t0)
    return best, out
