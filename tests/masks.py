"""Test helpers on planted masks (imported by the demo tests like ``pinned``)."""

from __future__ import annotations

import numpy as np


def inside(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of a pixel deep inside ``mask`` (erode until one more step would empty it)."""
    m = np.asarray(mask).astype(bool)
    while True:
        e = m.copy()
        e[1:] &= m[:-1]
        e[:-1] &= m[1:]
        e[:, 1:] &= m[:, :-1]
        e[:, :-1] &= m[:, 1:]
        if not e.any():
            break
        m = e
    ys, xs = np.nonzero(m)
    return int(xs[len(xs) // 2]), int(ys[len(ys) // 2])
