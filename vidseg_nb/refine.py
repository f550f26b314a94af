"""Stage 2 — correspondence-based refinement, CBR (paper section 4.2, eqs. 3-5; SPEC section 6).

Symbols: ``F_c^j`` the correspondence feature of frame j (block-7 query, compared by cosine similarity),
``M^j`` the coarse map of frame j (stage 1), ``T^j`` the trajectory (correspondence) map from frame j to
frame j+1, ``M~^j`` the refined map, ``T`` (``radius2``) the squared search radius in grid cells.

- Eq. 3: ``T^j[p] = argmax_q cos(F_c^j[p], F_c^{j+1}[q])`` over the cells q of the grid with
  ``||p - q||^2 <= radius2``. On equal similarity the cell itself wins, then the first offset in
  row-major order (dy ascending, then dx ascending).
- Eq. 4: ``TRACK(p, j, k)`` follows ``T`` from frame j to frame k.
- Eq. 5: ``M~^j[p] = argmax_l sum_{k=j}^{B-1} 1(M^k[TRACK(p, j, k)] = l)`` (0-based frames; frame j is
  included, the trajectory runs to the last frame of the batch). On a vote tie ``M^j[p]`` wins when it
  is among the top labels, else the smallest label id.

The votes are computed backwards by dynamic programming, exact because ``TRACK`` composes:
``V^{B-1} = onehot(M^{B-1})`` and ``V^j = onehot(M^j) + V^{j+1}[T^j]`` (a gather over cells).
Everything runs in torch on the features' device; there is no Python loop over cells. Only the label
maps M^j (small integer arrays) pass through the CPU (relabelling with ``np.unique``) and ``M~^j`` comes
back as numpy; the features F_c, the similarities, the trajectories T^j and the votes stay on the device.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["correspondence", "count_label_changes", "neighbourhood_offsets", "refine", "trajectories"]


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def neighbourhood_offsets(radius2: float) -> list[tuple[int, int]]:
    """Integer offsets ``(dy, dx)`` with ``dy^2 + dx^2 <= radius2``: ``(0, 0)`` first, then row-major.

    This order is the tie-break of eq. 3: the cell itself wins on equal similarity, then the first
    offset in row-major order (dy ascending, then dx ascending).
    """
    if radius2 < 0 or not math.isfinite(radius2):
        raise ValueError(f"radius2 must be a finite number >= 0, got {radius2!r}")
    r = math.isqrt(int(math.floor(radius2)))
    offs = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= radius2]
    offs.remove((0, 0))
    return [(0, 0)] + offs


def _normalise(f: torch.Tensor) -> torch.Tensor:
    if not f.is_floating_point() or f.dtype in (torch.float16, torch.bfloat16):
        f = f.float()
    return torch.nn.functional.normalize(f, dim=-1, eps=1e-12)


def _trajectories(feats: torch.Tensor, radius2: float) -> torch.Tensor:
    """``T^j`` for all consecutive pairs of ``feats`` (N, h, w, C): (N-1, h*w) flat indices into frame j+1."""
    n, h, w, _ = feats.shape
    dev = feats.device
    offs = neighbourhood_offsets(radius2)
    if n < 2:
        return torch.empty((0, h * w), dtype=torch.long, device=dev)
    fn = _normalise(feats)
    a, b = fn[:-1], fn[1:]  # F^j, F^{j+1}
    r = max(max(abs(dy), abs(dx)) for dy, dx in offs)
    # Zero padding; the padded cells are masked to -inf below (they lie outside the grid).
    bp = torch.nn.functional.pad(b, (0, 0, r, r, r, r))  # (N-1, h+2r, w+2r, C)
    ys = torch.arange(h, device=dev).view(h, 1)
    xs = torch.arange(w, device=dev).view(1, w)
    sims = torch.empty((n - 1, len(offs), h, w), dtype=fn.dtype, device=dev)
    for i, (dy, dx) in enumerate(offs):
        shifted = bp[:, r + dy : r + dy + h, r + dx : r + dx + w]  # F^{j+1}[p + (dy, dx)]
        s = (a * shifted).sum(-1)
        inside = (ys + dy >= 0) & (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w)
        sims[:, i] = s.masked_fill(~inside, float("-inf"))
    best = sims.argmax(dim=1)  # first maximum -> the offset order above is the tie-break
    off_t = torch.tensor(offs, dtype=torch.long, device=dev)  # (n_off, 2)
    ty = ys + off_t[best, 0]
    tx = xs + off_t[best, 1]
    return (ty * w + tx).reshape(n - 1, h * w)


def trajectories(features: Any, radius2: float = 1.0) -> np.ndarray:
    """All trajectory maps ``T^j`` of a batch ``features`` (B, h, w, C): (B-1, h, w) flat indices.

    ``T^j[y, x]`` is the flat index ``y' * w + x'`` of the matched cell of frame j+1 (eq. 3).
    """
    f = _as_tensor(features)
    if f.ndim != 4:
        raise ValueError(f"features must be (B, h, w, C), got shape {tuple(f.shape)}")
    t = _trajectories(f, radius2)
    return _to_numpy(t).reshape(-1, f.shape[1], f.shape[2])


def correspondence(
    features_j: Any, features_j1: Any, radius2: float = 1.0, *, as_coords: bool = False
) -> np.ndarray:
    """``T^j`` (eq. 3) between two frames ``F_c^j``, ``F_c^{j+1}`` (h, w, C), for teaching and plots.

    Returns (h, w) int64 flat indices ``y' * w + x'`` into frame j+1, or with ``as_coords=True`` the
    (h, w, 2) target coordinates ``(y', x')``.
    """
    a, b = _as_tensor(features_j), _as_tensor(features_j1)
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(
            f"need two (h, w, C) feature maps of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    h, w = a.shape[:2]
    flat = _to_numpy(_trajectories(torch.stack([a, b.to(a.device, a.dtype)]), radius2)[0]).reshape(h, w)
    if as_coords:
        return np.stack([flat // w, flat % w], axis=-1)
    return flat


def refine(labels: Any, features: Any, radius2: float = 1.0) -> np.ndarray:
    """Refined coarse maps ``M~^j`` (eq. 5) from coarse maps ``M^j`` and correspondence features ``F_c^j``.

    Parameters
    ----------
    labels:
        ``M^1..M^B`` as (B, h, w) integer label ids (numpy or torch).
    features:
        ``F_c^1..F_c^B`` as (B, h, w, C) floats (numpy or torch); compared by cosine similarity. The work
        runs on the features' device.
    radius2:
        ``T``, the squared search radius in grid cells (1: the cell and its 4 neighbours; 0: no motion).

    Returns
    -------
    (B, h, w) int64 numpy array. With B = 1 the labels come back unchanged.
    """
    lab_np = _to_numpy(labels)
    if lab_np.ndim != 3:
        raise ValueError(f"labels must be (B, h, w), got shape {lab_np.shape}")
    if not np.issubdtype(lab_np.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {lab_np.dtype}")
    f = _as_tensor(features)
    if f.ndim != 4 or tuple(f.shape[:3]) != lab_np.shape:
        raise ValueError(
            f"features must be (B, h, w, C) with (B, h, w) = {lab_np.shape}, got {tuple(f.shape)}"
        )
    neighbourhood_offsets(radius2)  # validates radius2
    n, h, w = lab_np.shape
    lab_np = lab_np.astype(np.int64, copy=False)
    if n < 2:
        return lab_np.copy()

    dev = f.device
    traj = _trajectories(f, radius2)  # (B-1, h*w)
    # Relabel to 0..L-1 (sorted, so "smallest id" is preserved) to keep the vote tensor small.
    uniq, inv = np.unique(lab_np, return_inverse=True)
    m = torch.from_numpy(inv.reshape(n, h * w)).to(dev)
    n_lab = len(uniq)
    cells = torch.arange(h * w, device=dev)

    out = torch.empty((n, h * w), dtype=torch.long, device=dev)
    votes = torch.zeros((h * w, n_lab), dtype=torch.int32, device=dev)
    for j in range(n - 1, -1, -1):
        if j < n - 1:
            votes = votes[traj[j]]  # V^{j+1} gathered through T^j
        votes[cells, m[j]] += 1  # + onehot(M^j)
        top = votes.max(dim=1).values
        own = votes[cells, m[j]]
        smallest = votes.argmax(dim=1)  # first maximum = smallest label id among the top ones
        out[j] = torch.where(own == top, m[j], smallest)
    return uniq[_to_numpy(out)].reshape(n, h, w).astype(np.int64, copy=False)


def count_label_changes(labels: Any, mask: Any = None) -> int:
    """Number of cells whose label differs from the previous frame, summed over frames.

    ``labels`` is (B, h, w); ``mask`` (h, w) bool optionally restricts the count to some cells (for
    example the static ones).
    """
    lab = _to_numpy(labels)
    if lab.ndim < 2:
        raise ValueError(f"labels must be (B, h, w), got shape {lab.shape}")
    diff = lab[1:] != lab[:-1]
    if mask is not None:
        diff = diff & np.asarray(_to_numpy(mask), dtype=bool)
    return int(diff.sum())
