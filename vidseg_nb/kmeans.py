"""K-Means in torch (stage 1 on a GPU): scikit-learn's ``KMeans(algorithm="lloyd")`` re-implemented.

Stage 1 of VidSeg (paper section 4.1; SPEC section 5) clusters every aggregated feature ``F~^j`` of the
first batch with K-Means (K clusters, ``n_init`` restarts) and takes the prediction for frame 1 as the
coarse map ``M^1``. At the VSPW grid (14 frames x 28 x 52 cells, 640 channels: about 20k x 640) this takes
tens of seconds on a CPU; :class:`TorchKMeans` runs the same algorithm on the device of its input.

What is the same as scikit-learn (``sklearn/cluster/_kmeans.py``):

- X is centred on its mean before clustering (``cluster_centers_`` are returned un-centred);
- greedy k-means++ initialisation with ``n_local_trials = 2 + int(log(K))`` candidates per centre, sampled
  with probability proportional to the squared distance to the closest chosen centre (``searchsorted`` on
  the cumulative potential, clipped to the last index), keeping the candidate that lowers the potential most;
- ``tol`` is relative: the absolute tolerance is ``tol * mean(var(X, axis=0))`` (``_tolerance``);
- Lloyd iterations: assign (E step) with the current centres, recompute means (M step); stop when the
  labels did not change from the previous iteration ("strict convergence") or when the sum over clusters of
  the squared centre shifts is ``<= tol``, or after ``max_iter``; without strict convergence a last E step
  makes ``labels_`` match ``cluster_centers_``. ``n_iter_`` counts iterations as scikit-learn does;
- empty clusters: before the means are taken, each empty cluster is moved to one of the points farthest
  from their assigned centre (the farthest first), which leaves its old cluster; nothing is moved when all
  points lie on their centres (more clusters than distinct points); an empty cluster then keeps a zero sum,
  i.e. a centre at the mean of X, as in scikit-learn;
- best of ``n_init`` runs by inertia; a later run replaces the best one only when its inertia is lower and
  its partition differs (``_is_same_clustering``); a ``ConvergenceWarning`` when fewer than K distinct
  labels are found; ``ValueError`` when there are fewer samples than clusters.

What differs:

- random numbers come from ``torch.Generator`` (CPU, so the draws do not depend on the device), not from
  numpy's ``RandomState``: for a given ``random_state`` the initial centres are not scikit-learn's, so
  labels are not bit-identical to scikit-learn in general. On separable data both find the same partition
  (up to a permutation of cluster ids); on unstructured data the inertia agrees to about 1%
  (``tests/test_kmeans.py``). Restart ``r`` uses seed ``numpy.random.SeedSequence(random_state).spawn``'s
  r-th child (deterministic; a run's draws do not depend on how many restarts run before it);
- the farthest points for relocation are taken by ``topk`` (sorted), scikit-learn takes them by
  ``argpartition`` (unsorted among the farthest): with several empty clusters at once the pairing of
  empty cluster and point may differ;
- no ``sample_weight``, no ``elkan``, dense input only.

Numerics (the choice): storage float32. The Lloyd E step uses ``|c|^2 - 2 x.c`` as a float32 GEMM on the
mean-centred X, as scikit-learn's Cython does for float32 input (the float32 matmul precision is set to
"highest" during ``fit``/``predict`` so that CUDA does not use TF32, and restored after; this global
setting is not thread-safe). The k-means++ distances are ``|x|^2 - 2 x.c + |c|^2`` in float64 (scikit-learn
upcasts float32 to float64 there as well), since the potential and the sampling are sensitive to
cancellation; for that, ``fit`` holds one float64 centred copy of X (peak memory about 4x X: X, its float32
and float64 centred copies). Cluster sums are float32 one-hot GEMMs over blocks of 4096 rows added in
float64 (deterministic on CUDA, no atomics); the centre shift, the tolerance and the inertia (from direct
differences ``|x - c|^2``) are float64. On devices without float64 (MPS) those parts stay float32. Every
N x K (or candidates x N) distance block is chunked over rows to at most ``max_elements`` values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

__all__ = ["TorchKMeans", "kmeans_plusplus", "tolerance"]

DEFAULT_MAX_ELEMENTS = 1 << 24  # values per distance block (64 MiB in float32, 128 MiB in float64)
_SUM_ROWS = 4096  # rows per float32 block of the cluster sums (blocks are added in float64)


def _as_tensor(x: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """(N, C) float32 tensor on ``device`` (default: x's device; CPU for numpy)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float32)))
    if device is not None:
        t = t.to(device)
    t = t.to(torch.float32)
    if t.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {tuple(t.shape)}")
    return t.contiguous()


def _acc_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device supports it (not MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _row_chunks(n: int, width: int, max_elements: int) -> Iterator[slice]:
    step = max(1, int(max_elements) // max(int(width), 1))
    for s in range(0, n, step):
        yield slice(s, min(s + step, n))


@contextmanager
def _highest_matmul_precision() -> Iterator[None]:
    """float32 matmuls in IEEE float32 (no TF32 on CUDA) inside the block; the setting is restored."""
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def tolerance(x: torch.Tensor, tol: float) -> float:
    """The absolute tolerance ``tol * mean_c var(X[:, c])`` (scikit-learn's ``_tolerance``), in float64."""
    if tol == 0:
        return 0.0
    xa = x.to(_acc_dtype(x.device))
    return float(xa.var(dim=0, unbiased=False).mean().item()) * float(tol)


def _sq_dist_upcast(
    x_acc: torch.Tensor, x_sq: torch.Tensor, c: torch.Tensor, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> torch.Tensor:
    """Squared distances (len(c), N) from centres ``c`` to all rows of ``x_acc`` (float64, the
    accumulation dtype), ``|x|^2 - 2 x.c + |c|^2`` with ``x_sq`` = squared row norms, clamped at 0, the
    (len(c), rows) block chunked over rows."""
    ca = c.to(x_acc.dtype)
    c_sq = torch.linalg.vecdot(ca, ca)
    out = torch.empty((c.shape[0], x_acc.shape[0]), dtype=x_acc.dtype, device=x_acc.device)
    for sl in _row_chunks(x_acc.shape[0], c.shape[0], max_elements):
        d = torch.addmm(x_sq[sl][None, :], ca, x_acc[sl].T, alpha=-2.0)
        out[:, sl] = d.add_(c_sq[:, None]).clamp_min_(0)
    return out


def kmeans_plusplus(
    x: torch.Tensor,
    n_clusters: int,
    generator: torch.Generator,
    n_local_trials: int | None = None,
    x_acc: torch.Tensor | None = None,
    x_sq: torch.Tensor | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy k-means++ (scikit-learn's ``_kmeans_plusplus``, unit weights): initial centres and their indices.

    ``generator`` is a CPU ``torch.Generator`` (device-independent draws). Returns ``(centers (K, C)
    float32 on x's device, indices (K,) int64 on CPU)``. ``x_acc`` (x in float64) and ``x_sq`` (its
    squared row norms) may be passed to share them between restarts.
    """
    n, _ = x.shape
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    if x_acc is None:
        x_acc = x.to(_acc_dtype(x.device))
    if x_sq is None:
        x_sq = torch.linalg.vecdot(x_acc, x_acc)
    indices = torch.full((n_clusters,), -1, dtype=torch.long)
    first = int(torch.randint(n, (1,), generator=generator).item())
    indices[0] = first
    closest = _sq_dist_upcast(x_acc, x_sq, x[first : first + 1], max_elements)[0]
    pot = closest.sum()
    for c in range(1, n_clusters):
        rand = torch.rand(n_local_trials, generator=generator, dtype=torch.float64)
        rand_vals = rand.to(x.device, closest.dtype) * pot
        cand = torch.searchsorted(torch.cumsum(closest, 0), rand_vals).clamp_(max=n - 1)
        d = _sq_dist_upcast(x_acc, x_sq, x[cand], max_elements)
        torch.minimum(closest[None, :], d, out=d)
        cand_pot = d.sum(1)
        best = int(torch.argmin(cand_pot).item())
        pot = cand_pot[best]
        closest = d[best]
        indices[c] = int(cand[best].item())
    return x[indices.to(x.device)].clone(), indices


def _assign(x: torch.Tensor, centers: torch.Tensor, max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """E step: nearest centre of every row (first minimum on ties), ``argmin |c|^2 - 2 x.c`` in float32."""
    c_sq = (centers * centers).sum(1)
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for sl in _row_chunks(x.shape[0], centers.shape[0], max_elements):
        d = torch.addmm(c_sq[None, :], x[sl], centers.T, alpha=-2.0)
        labels[sl] = d.argmin(1)
    return labels


def _point_sq_dist(
    x: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> torch.Tensor:
    """``|x_i - c_{label_i}|^2`` for every row (direct differences, float32 values)."""
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    for sl in _row_chunks(x.shape[0], x.shape[1], max_elements):
        diff = x[sl] - centers[labels[sl]]
        out[sl] = (diff * diff).sum(1)
    return out


def _inertia(
    x: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> float:
    """Sum of squared distances to the assigned centres (accumulated in float64)."""
    d = _point_sq_dist(x, centers, labels, max_elements)
    return float(d.to(_acc_dtype(x.device)).sum().item())


def _cluster_sums(
    x: torch.Tensor, labels: torch.Tensor, k: int, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums (K, C) and counts (K,) in the accumulation dtype.

    One-hot GEMM in float32 per block of at most ``_SUM_ROWS`` rows, blocks accumulated in float64:
    deterministic on CUDA (no atomics, unlike ``index_add_``) and more accurate than one float32 sum.
    """
    acc = _acc_dtype(x.device)
    sums = torch.zeros((k, x.shape[1]), dtype=acc, device=x.device)
    ids = torch.arange(k, device=x.device)
    rows = max(1, min(_SUM_ROWS, int(max_elements) // max(k + x.shape[1], 1)))
    for s in range(0, x.shape[0], rows):
        sl = slice(s, min(s + rows, x.shape[0]))
        onehot = (labels[sl][:, None] == ids[None, :]).to(x.dtype)
        sums += (onehot.T @ x[sl]).to(acc)
    counts = torch.bincount(labels, minlength=k).to(acc)
    return sums, counts


def _relocate_empty(
    x: torch.Tensor,
    centers_old: torch.Tensor,
    labels: torch.Tensor,
    sums: torch.Tensor,
    counts: torch.Tensor,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> None:
    """Move empty clusters to the points farthest from their centres (scikit-learn's
    ``_relocate_empty_clusters_dense``), in place on ``sums``/``counts``; labels are not changed."""
    empty = torch.nonzero(counts == 0).flatten()
    n_empty = int(empty.numel())
    if n_empty == 0:
        return
    dist = _point_sq_dist(x, centers_old, labels, max_elements)
    if float(dist.max().item()) == 0.0:
        return  # more clusters than distinct points: relocating is pointless
    far = torch.topk(dist, n_empty, largest=True, sorted=True).indices
    for new_id, far_idx in zip(empty.tolist(), far.tolist(), strict=True):
        old_id = int(labels[far_idx].item())
        xp = x[far_idx].to(sums.dtype)
        sums[old_id] -= xp
        sums[new_id] = xp
        counts[new_id] = 1.0
        counts[old_id] -= 1.0


def _lloyd_step(
    x: torch.Tensor, centers: torch.Tensor, max_elements: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One Lloyd iteration: (labels w.r.t. ``centers``, new centres float32, squared centre shift sum)."""
    k = centers.shape[0]
    labels = _assign(x, centers, max_elements)
    sums, counts = _cluster_sums(x, labels, k, max_elements)
    _relocate_empty(x, centers, labels, sums, counts, max_elements)
    nonzero = counts > 0
    new = sums.clone()
    new[nonzero] = sums[nonzero] / counts[nonzero, None]
    shift = ((new - centers.to(new.dtype)) ** 2).sum()
    return labels, new.to(torch.float32), float(shift.item())


def _kmeans_single_lloyd(
    x: torch.Tensor, centers_init: torch.Tensor, max_iter: int, tol: float, max_elements: int
) -> tuple[torch.Tensor, float, torch.Tensor, int]:
    """A single Lloyd run (scikit-learn's ``_kmeans_single_lloyd``): (labels, inertia, centres, n_iter)."""
    centers = centers_init
    labels_old: torch.Tensor | None = None
    labels = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    strict = False
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        labels, centers_new, shift = _lloyd_step(x, centers, max_elements)
        centers = centers_new
        if labels_old is not None and torch.equal(labels, labels_old):
            strict = True
            break
        if shift <= tol:
            break
        labels_old = labels
    if not strict:
        labels = _assign(x, centers, max_elements)
    return labels, _inertia(x, centers, labels, max_elements), centers, n_iter


def _is_same_clustering(a: torch.Tensor, b: torch.Tensor, k: int) -> bool:
    """True when every cluster of ``a`` maps to a single cluster of ``b`` (scikit-learn's check)."""
    pairs = torch.unique(a * k + b)
    return int(pairs.numel()) == int(torch.unique(a).numel())


class TorchKMeans:
    """K-Means (Lloyd, greedy k-means++ init, ``n_init`` restarts) in torch, on the device of X.

    Parameters follow ``sklearn.cluster.KMeans``: ``n_clusters`` (K), ``n_init``, ``max_iter``, ``tol``
    (relative to the mean feature variance), ``random_state`` (int seed), plus ``init`` (``"k-means++"`` or
    an array (K, C) of initial centres, which runs once, as scikit-learn does with ``n_init="auto"``) and
    ``max_elements`` (values per distance block). Learned: ``cluster_centers_`` (K, C) float32 on X's
    device, ``labels_`` (N,) int64, ``inertia_`` (float), ``n_iter_``, ``n_features_in_``.

    In stage 1 the fit data is every ``F~^j`` of the first batch flattened to (N, C); ``predict`` of
    frame 1 is ``M^1``. Results are torch tensors on X's device (numpy input: CPU tensors).
    """

    def __init__(
        self,
        n_clusters: int = 8,
        n_init: int = 10,
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: int | None = 0,
        init: str | Any = "k-means++",
        max_elements: int = DEFAULT_MAX_ELEMENTS,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.init = init
        self.max_elements = max_elements

    def __repr__(self) -> str:
        return (
            f"TorchKMeans(n_clusters={self.n_clusters}, n_init={self.n_init}, max_iter={self.max_iter}, "
            f"tol={self.tol}, random_state={self.random_state})"
        )

    def _check(self, n: int) -> None:
        if int(self.n_clusters) < 1:
            raise ValueError(f"n_clusters must be >= 1, got {self.n_clusters}")
        if int(self.n_init) < 1:
            raise ValueError(f"n_init must be >= 1, got {self.n_init}")
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.tol < 0:
            raise ValueError(f"tol must be >= 0, got {self.tol}")
        if n < int(self.n_clusters):
            raise ValueError(f"n_samples={n} should be >= n_clusters={self.n_clusters}.")

    def _seeds(self, n_runs: int) -> list[int]:
        entropy = None if self.random_state is None else int(self.random_state)
        children = np.random.SeedSequence(entropy).spawn(n_runs)
        return [int(ch.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for ch in children]

    def fit(self, X: Any, y: Any = None) -> TorchKMeans:
        """Cluster X (N, C): a torch tensor (computed on its device) or an array (computed on CPU)."""
        x = _as_tensor(X)
        n, c = x.shape
        self._check(n)
        k = int(self.n_clusters)
        max_el = int(self.max_elements)
        acc = _acc_dtype(x.device)
        with torch.no_grad(), _highest_matmul_precision():
            # centred copies, as scikit-learn (copy_x=True): float64 for k-means++, float32 for Lloyd
            x_acc = x.to(acc, copy=True)
            mean = x_acc.mean(0)
            x_acc -= mean
            xc = x_acc.to(torch.float32)
            tol = tolerance(x_acc, self.tol)
            x_sq = torch.linalg.vecdot(x_acc, x_acc)
            init_array = None if isinstance(self.init, str) else _as_tensor(self.init, x.device)
            if init_array is None and self.init != "k-means++":
                raise ValueError(f"init must be 'k-means++' or an array, got {self.init!r}")
            if init_array is not None and tuple(init_array.shape) != (k, c):
                raise ValueError(f"init has shape {tuple(init_array.shape)}, expected {(k, c)}")
            n_runs = 1 if init_array is not None else int(self.n_init)
            best: tuple[torch.Tensor, float, torch.Tensor, int] | None = None
            for seed in self._seeds(n_runs):
                if init_array is not None:
                    centers0 = (init_array.to(acc) - mean).to(torch.float32)
                else:
                    gen = torch.Generator(device="cpu").manual_seed(seed)
                    centers0, _ = kmeans_plusplus(xc, k, gen, x_acc=x_acc, x_sq=x_sq, max_elements=max_el)
                run = _kmeans_single_lloyd(xc, centers0, int(self.max_iter), tol, max_el)
                if best is None or (run[1] < best[1] and not _is_same_clustering(run[0], best[0], k)):
                    best = run
            del xc, x_acc, x_sq
        assert best is not None
        labels, inertia, centers, n_iter = best
        distinct = int(torch.unique(labels).numel())
        if distinct < k:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than n_clusters ({k}). "
                "Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._mean = mean
        self.cluster_centers_ = (centers.to(acc) + mean).to(torch.float32)
        self._centers_c = centers
        self.labels_ = labels
        self.inertia_ = inertia
        self.n_iter_ = n_iter
        self.n_features_in_ = c
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError("TorchKMeans is not fitted yet; call fit first")

    def predict(self, X: Any) -> torch.Tensor:
        """Nearest learned centre of every row of X (N, C): int64 labels on the centres' device.

        Computed on the mean-centred data like the fit, so ``predict(X_fit)`` equals ``labels_``.
        """
        self._check_fitted()
        x = _as_tensor(X, self.cluster_centers_.device)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {x.shape[1]} features, the model was fitted on {self.n_features_in_}")
        labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
        with torch.no_grad(), _highest_matmul_precision():
            for sl in _row_chunks(x.shape[0], x.shape[1], int(self.max_elements)):
                xc = (x[sl].to(self._mean.dtype) - self._mean).to(torch.float32)
                labels[sl] = _assign(xc, self._centers_c, int(self.max_elements))
        return labels

    def fit_predict(self, X: Any, y: Any = None) -> torch.Tensor:
        """``fit(X).labels_``."""
        return self.fit(X).labels_

    def score(self, X: Any, y: Any = None) -> float:
        """Minus the inertia of X w.r.t. the learned centres (scikit-learn's ``score``)."""
        self._check_fitted()
        x = _as_tensor(X, self.cluster_centers_.device)
        with torch.no_grad(), _highest_matmul_precision():
            return -_inertia(x, self.cluster_centers_, self.predict(x), int(self.max_elements))
