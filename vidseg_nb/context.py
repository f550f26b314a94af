"""Stage 1 — the scene context model Omega (paper section 4.1; SPEC section 5) and the coarse-map stage.

Symbols: ``F~^j`` the aggregated feature of frame j (B, h, w, C), ``M^j`` the coarse map predicted by the
context model, ``M~^j`` the refined coarse map (stage 2, :mod:`vidseg_nb.refine`), ``Omega`` the context
model (a KNN classifier, k = 4, Euclidean, uniform weights), K the number of K-Means clusters.

Per video: the first batch is clustered by K-Means (fitted on every vector of the batch); its prediction
for frame 1 is ``M^1``; Omega is fitted on ``(F~^1, M^1)`` and predicts ``M^2..M^B``
(``SceneContextModel.fit_predict``). After refinement, Omega is refitted on every ``(F~^j, M~^j)`` of that
batch only (memory stays bounded) and predicts the next batch: the autoregressive update
``omega.fit(F~, M~)``, done explicitly by the caller (the pipeline, :func:`coarse_maps`).

Label ids are the K-Means cluster ids (0..K-1) for the whole video: a KNN only predicts ids it was fitted
on, so a cluster keeps its id, and therefore its palette colour (:mod:`vidseg_nb.palette`), from batch to
batch. A cluster that vanishes from a batch's refined maps can not come back in later batches.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.validation import check_is_fitted

from .kmeans import TorchKMeans
from .refine import refine as _refine

__all__ = ["CoarseBatch", "SceneContextModel", "coarse_batch", "coarse_maps"]

_BACKENDS = ("auto", "sklearn", "torch")
# "auto" also picks torch on CPU when the KNN work n_fit * n_query * C (estimated as n_fit^2 * C) exceeds
# this. Measured on CPU (benchmarks/bench_coarse.py), scikit-learn's multithreaded brute force is about
# twice as fast as the float64 torch path at the VSPW size (20k x 20k x 640 = 2.7e11), so the threshold
# is set out of reach of one batch: on CPU "auto" means scikit-learn in practice, on a GPU torch.
AUTO_TORCH_WORK = 1e14
_CHUNK_ELEMENTS = 1 << 24  # distance-matrix chunk (queries x fit points) in the torch KNN: 128 MiB in float64


def _to_numpy32(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.numpy()
    x = np.asarray(x)
    if x.dtype != np.float64:
        x = x.astype(np.float32, copy=False)
    return np.ascontiguousarray(x)


def _flatten(features: Any) -> tuple[Any, tuple[int, ...]]:
    """(..., C) -> (N, C), plus the leading shape."""
    shape = tuple(features.shape)
    if len(shape) < 1:
        raise ValueError("features need a channel axis (..., C)")
    return features.reshape(-1, shape[-1]), shape[:-1]


def torch_knn_predict(
    fit_x: torch.Tensor, fit_y: torch.Tensor, x: torch.Tensor, k: int, n_classes: int
) -> torch.Tensor:
    """Uniform-weight KNN vote in torch, the same as scikit-learn's ``KNeighborsClassifier.predict``.

    ``fit_y`` holds class indices 0..n_classes-1. Squared Euclidean distances ``|x|^2 - 2 x.y + |y|^2`` in
    float64 (scikit-learn upcasts float32 to float64 for the same GEMM trick). The k neighbours are the
    k smallest by (distance, fit index): on a distance tie at the k-th place the earliest fit points win.
    The k-th smallest distance comes from ``topk``; every fit point closer than it is a neighbour, and of
    those exactly at it the first ones in index order fill the remaining places (a cumulative count).
    scikit-learn's brute-force search (a bounded max-heap fed in fit-index order) keeps exactly these
    whenever the tied points are the nearest ones (duplicated feature vectors, points on one sphere
    around the query). When a tie at the k-th place is followed by closer points, its heap may evict a
    tied point other than the last one, a choice of heap layout and thread chunking that no rule on
    (distance, index) reproduces; those ties need exactly equal float distances, rare on real features. On equal votes the smallest class index wins (``argmax``
    returns the first maximum), as in scikit-learn. Runs on ``fit_x``'s device, chunked over queries so
    the distance block stays about 128 MiB.
    """
    fit_x = fit_x.to(torch.float64)
    x = x.to(fit_x.device, torch.float64)
    fit_y = fit_y.to(fit_x.device, torch.long)
    yy = (fit_x * fit_x).sum(1)
    n_fit = fit_x.shape[0]
    k = min(int(k), n_fit)
    chunk = max(1, _CHUNK_ELEMENTS // max(n_fit, 1))
    out = torch.empty(x.shape[0], dtype=torch.long, device=fit_x.device)
    for s in range(0, x.shape[0], chunk):
        xc = x[s : s + chunk]
        d = (xc * xc).sum(1, keepdim=True) - 2.0 * (xc @ fit_x.T) + yy
        kth = d.topk(k, dim=1, largest=False, sorted=True).values[:, -1:]  # (q, 1) k-th smallest
        closer = d < kth
        at = d == kth
        room = k - closer.sum(1, keepdim=True)  # places left for the points exactly at the k-th distance
        chosen = closer | (at & (at.cumsum(1, dtype=torch.int32) <= room))  # earliest fit indices first
        del d, closer, at
        counts = torch.zeros((xc.shape[0], n_classes), dtype=torch.int32, device=fit_x.device)
        counts.scatter_add_(1, fit_y.expand(xc.shape[0], -1), chosen.to(torch.int32))
        out[s : s + chunk] = counts.argmax(1)
    return out


class SceneContextModel(BaseEstimator):
    """The scene context model Omega (a scikit-learn estimator): K-Means start, then a KNN refitted per batch.

    Hyper-parameters (``get_params``/``set_params``/``clone`` work):

    n_clusters:
        K, the K-Means clusters of the first batch (clamped, with a warning, to the number of vectors).
    n_neighbors:
        k of the KNN (clamped to the number of fit vectors).
    seed, n_init:
        K-Means ``random_state`` and ``n_init``.
    backend:
        ``"sklearn"`` (``KMeans`` and ``KNeighborsClassifier``, brute force, the search whose ties the
        torch backend follows), ``"torch"`` (:class:`~vidseg_nb.kmeans.TorchKMeans` and
        :func:`torch_knn_predict`, on the features' device: a CUDA batch never leaves the GPU) or
        ``"auto"``: torch for both when the features are a CUDA/MPS tensor; on the CPU scikit-learn's
        K-Means, and a torch KNN only when its work is large (``AUTO_TORCH_WORK``). The two KNNs give
        the same labels (see :func:`torch_knn_predict` on distance ties); the two K-Means the same
        partition on well separated data but not bit-identical labels in general (float order, and
        the cluster numbering of the seeds), so CPU "auto" runs stay scikit-learn's.

    Fitting (Figure 3, stage 1): ``fit(F~)`` with ``y=None`` on the first batch (B, h, w, C) runs K-Means
    on every vector and fits the KNN on ``(F~^1, M^1)``; ``fit(F~, M~)`` is the autoregressive update (the
    KNN alone, on that data only). ``predict(F~^j)`` -> ``M^j``; ``fit_predict(F~)`` -> M^1..M^B of the
    first batch.

    Learned attributes (set only by ``fit``): ``kmeans_`` (the fitted ``KMeans``, or ``TorchKMeans`` on the
    torch path, kept by later KNN fits),
    ``start_labels_`` (M^1 of the K-Means start), ``fit_features_`` (N, C) and ``fit_labels_`` (N,) (what
    the KNN was last fitted on: numpy, or a torch tensor on the torch backend), ``classes_`` (sorted label
    ids known to Omega), ``n_features_in_``, ``backend_`` (the resolved backend of the last fit), ``knn_``
    (the scikit-learn estimator, or ``None`` on the torch backend), ``k_`` (k used), ``n_fits_`` (number
    of fits since the K-Means start). Features are used as given (the caller normalises them).
    """

    def __init__(
        self,
        n_clusters: int = 20,
        n_neighbors: int = 4,
        seed: int = 0,
        n_init: int = 10,
        backend: str = "auto",
    ) -> None:
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.seed = seed
        self.n_init = n_init
        self.backend = backend

    @classmethod
    def from_config(cls, config: Any, backend: str = "auto") -> SceneContextModel:
        """A model with ``n_clusters``, ``n_neighbors``, ``kmeans_n_init`` and ``seed`` of a SegConfig."""
        return cls(
            n_clusters=config.n_clusters,
            n_neighbors=config.n_neighbors,
            seed=config.seed,
            n_init=config.kmeans_n_init,
            backend=backend,
        )

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "classes_")

    @property
    def started(self) -> bool:
        """Whether a K-Means start (``fit`` with ``y=None``) has run."""
        return hasattr(self, "kmeans_")

    @property
    def fitted(self) -> bool:
        """Whether the KNN has been fitted (and Omega can :meth:`predict`)."""
        return self.__sklearn_is_fitted__()

    _LEARNED = (
        "kmeans_",
        "start_labels_",
        "fit_features_",
        "fit_labels_",
        "classes_",
        "n_features_in_",
        "backend_",
        "knn_",
        "k_",
        "n_fits_",
        "_fit_codes",
    )

    def reset(self) -> SceneContextModel:
        """Forget everything learned (a new video); the hyper-parameters stay."""
        for name in self._LEARNED:
            if hasattr(self, name):
                delattr(self, name)
        return self

    # ---------------------------------------------------------------- scikit-learn API
    def fit(self, X: Any, y: Any = None) -> SceneContextModel:
        """Fit Omega; returns ``self``.

        - ``y`` None: ``X`` is a first batch ``F~^1..F~^B`` (B, h, w, C). K-Means on every vector gives
          ``M^1`` (its prediction for frame 1, ``start_labels_``); the KNN is fitted on ``(F~^1, M^1)``.
          Everything learned before is forgotten.
        - ``y`` given: the KNN is fitted on ``X`` (..., C) and integer labels ``y`` (...), replacing the
          earlier fit data (the autoregressive update ``fit(F~^j, M~^j)``; ``kmeans_`` is kept). Only
          this data is kept: memory stays bounded.
        """
        if y is None:
            return self._fit_kmeans(X)
        return self._fit_knn(X, y)

    def predict(self, X: Any) -> np.ndarray:
        """Omega's prediction ``M^j`` for features ``X`` (..., C): int64 label ids of shape (...)."""
        check_is_fitted(self)
        xf, lead = _flatten(X)
        if xf.shape[-1] != self.n_features_in_:
            raise ValueError(
                f"features have {xf.shape[-1]} channels, the model was fitted on {self.n_features_in_}"
            )
        if xf.shape[0] == 0:
            return np.zeros(lead, dtype=np.int64)
        if self.backend_ == "torch":
            xt = xf if isinstance(xf, torch.Tensor) else torch.from_numpy(_to_numpy32(xf))
            idx = torch_knn_predict(self.fit_features_, self._fit_codes, xt, self.k_, len(self.classes_))
            pred = self.classes_[idx.cpu().numpy()]
        else:
            pred = self.knn_.predict(_to_numpy32(xf))
        return np.asarray(pred, dtype=np.int64).reshape(lead)

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """``fit(X, y)``, then the labels of ``X``.

        With ``y`` None (the first batch, (B, h, w, C)): ``M^1`` from K-Means and ``M^2..M^B`` predicted
        by the KNN fitted on ``(F~^1, M^1)``, as (B, h, w) int64. With ``y``: ``predict(X)`` after the fit.
        """
        self.fit(X, y)
        if y is not None:
            return self.predict(X)
        m1 = self.start_labels_
        rest = self.predict(X[1:]) if X.shape[0] > 1 else np.empty((0, *m1.shape), dtype=np.int64)
        return np.concatenate([m1[None], rest], axis=0)

    def start(self, features: Any) -> np.ndarray:
        """Alias of the K-Means start: ``fit(features).start_labels_`` (M^1 of frame 1, (h, w) int64)."""
        return self.fit(features).start_labels_

    # ---------------------------------------------------------------- fitting
    def _check_backend(self) -> None:
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")

    def _fit_kmeans(self, features: Any) -> SceneContextModel:
        self._check_backend()
        if len(features.shape) != 4:
            raise ValueError(
                f"fit without labels needs a batch of features (B, h, w, C), got shape {tuple(features.shape)}"
            )
        self.reset()
        b, h, w, c = (int(d) for d in features.shape)
        n = b * h * w
        k = int(self.n_clusters)
        if k < 1:
            raise ValueError(f"n_clusters must be >= 1, got {k}")
        if k > n:
            warnings.warn(f"n_clusters={k} > {n} feature vectors; using {n} clusters", stacklevel=3)
            k = n
        if self._kmeans_backend(features) == "torch":
            # on the features' device (numpy input: CPU tensors); only M^1 (h, w) comes to the CPU
            x = features if isinstance(features, torch.Tensor) else torch.from_numpy(_to_numpy32(features))
            if x.dtype not in (torch.float32, torch.float64):
                x = x.float()
            self.kmeans_ = TorchKMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed)
            self.kmeans_.fit(x.reshape(-1, c))
            m1 = self.kmeans_.predict(x[0].reshape(-1, c)).reshape(h, w).cpu().numpy().astype(np.int64)
            self._fit_knn(x[0], m1)
        else:
            xn = _to_numpy32(features)
            self.kmeans_ = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed)
            self.kmeans_.fit(xn.reshape(-1, c))
            m1 = self.kmeans_.predict(xn[0].reshape(-1, c)).astype(np.int64).reshape(h, w)
            self._fit_knn(features[0], m1)
        self.start_labels_ = m1
        return self

    def _kmeans_backend(self, x: Any) -> str:
        """Backend of the K-Means start: torch when asked, or "auto" on a CUDA/MPS tensor; else sklearn."""
        self._check_backend()
        if self.backend == "torch":
            return "torch"
        if self.backend == "auto" and isinstance(x, torch.Tensor) and x.device.type != "cpu":
            return "torch"
        return "sklearn"

    def _resolve_backend(self, x: Any, n_fit: int) -> str:
        self._check_backend()
        if self.backend != "auto":
            return self.backend
        if isinstance(x, torch.Tensor) and x.device.type != "cpu":
            return "torch"
        # A prediction batch is typically as large as the fit set.
        return "torch" if float(n_fit) * n_fit * x.shape[-1] > AUTO_TORCH_WORK else "sklearn"

    def _fit_knn(self, features: Any, labels: Any) -> SceneContextModel:
        xf, lead = _flatten(features)
        lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if tuple(lab.shape) != lead:
            raise ValueError(
                f"labels shape {tuple(lab.shape)} does not match features {tuple(features.shape)}"
            )
        if not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"labels must be integers, got {lab.dtype}")
        y = lab.reshape(-1).astype(np.int64)
        if y.size == 0:
            raise ValueError("fit needs at least one sample")
        backend = self._resolve_backend(features, y.size)
        classes, y_idx = np.unique(y, return_inverse=True)
        k = min(int(self.n_neighbors), y.size)
        if k < 1:
            raise ValueError(f"n_neighbors must be >= 1, got {self.n_neighbors}")
        # Drop the previous fit first so that two fit sets never live at the same time.
        self.fit_features_ = self.fit_labels_ = self.knn_ = self._fit_codes = None
        if backend == "torch":
            xt = xf if isinstance(xf, torch.Tensor) else torch.from_numpy(_to_numpy32(xf))
            self.fit_features_ = xt.detach()
            self.fit_labels_ = torch.from_numpy(y).to(xt.device)
            self._fit_codes = torch.from_numpy(y_idx.reshape(-1)).to(xt.device)
        else:
            xn = _to_numpy32(xf)
            self.knn_ = KNeighborsClassifier(
                n_neighbors=k, weights="uniform", metric="euclidean", algorithm="brute"
            )
            self.knn_.fit(xn, y)
            self.fit_features_ = xn
            self.fit_labels_ = y
        self.classes_ = classes
        self.n_features_in_ = int(xf.shape[-1])
        self.backend_ = backend
        self.k_ = k
        self.n_fits_ = getattr(self, "n_fits_", 0) + 1
        return self


@dataclass
class CoarseBatch:
    """Coarse maps of one batch: ``before`` = ``M^j`` (Omega / K-Means), ``after`` = ``M~^j`` (refined).

    Both (B, h, w) int64 label ids; ``after`` equals ``before`` when refinement is off or B = 1.
    """

    before: np.ndarray
    after: np.ndarray

    def __len__(self) -> int:
        return len(self.before)


def coarse_batch(
    model: SceneContextModel,
    features: Any,
    corr_features: Any = None,
    *,
    refine: bool = True,
    radius2: float = 1.0,
    update: bool = False,
) -> CoarseBatch:
    """Stages 1-2 for one batch ``F~^1..F~^B`` (B, h, w, C) (Figure 3, steps 1 and 2).

    - Step 1: if ``model`` is not fitted, ``model.fit_predict(F~)`` (K-Means on this batch gives ``M^1``,
      the KNN fitted on ``(F~^1, M^1)`` predicts ``M^2..M^B``); otherwise ``model.predict(F~)``.
    - Step 2: with ``refine`` and B > 1, ``M~^j`` = :func:`vidseg_nb.refine.refine` of ``M^j`` on
      ``corr_features`` (``F_c``, default: ``features``) with ``radius2`` (T); else ``M~^j = M^j``.
    - The autoregressive update ``model.fit(F~, M~)`` is the caller's (as in
      :class:`~vidseg_nb.pipeline.VideoSegmenter` and :func:`coarse_maps`); ``update=True`` does it here.
    """
    if len(features.shape) != 4:
        raise ValueError(f"features must be (B, h, w, C), got shape {tuple(features.shape)}")
    b = features.shape[0]
    if b < 1:
        raise ValueError("empty batch")
    before = model.predict(features) if model.fitted else model.fit_predict(features)
    if refine and b > 1:
        after = _refine(before, features if corr_features is None else corr_features, radius2=radius2)
    else:
        after = before.copy()
    if update:
        model.fit(features, after)
    return CoarseBatch(before=before, after=after)


def coarse_maps(
    features_batches: Iterable[Any],
    model: SceneContextModel,
    corr_batches: Iterable[Any] | None = None,
    *,
    refine: bool = True,
    radius2: float = 1.0,
) -> Iterator[CoarseBatch]:
    """Generator of :class:`CoarseBatch` over consecutive batches of one video (see :func:`coarse_batch`).

    After each batch, the autoregressive update ``model.fit(F~, M~)`` on that batch only. ``corr_batches``
    (optional) yields the correspondence features of the same batches.
    """
    corr_iter = iter(corr_batches) if corr_batches is not None else None
    for feats in features_batches:
        corr = next(corr_iter) if corr_iter is not None else None
        cb = coarse_batch(model, feats, corr, refine=refine, radius2=radius2)
        model.fit(feats, cb.after)  # autoregressive update: Omega <- (F~^j, M~^j) of this batch
        yield cb
