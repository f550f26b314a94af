"""Stage 1 — the scene context model Omega (paper section 4.1; SPEC section 5) and the coarse-map stage.

Symbols: ``F~^j`` the aggregated feature of frame j (B, h, w, C), ``M^j`` the coarse map predicted by the
context model, ``M~^j`` the refined coarse map (stage 2, :mod:`vidseg_nb.refine`), ``Omega`` the context
model (a KNN classifier, k = 4, Euclidean, uniform weights), K the number of K-Means clusters.

Per video: the first batch is clustered by K-Means (fitted on every vector of the batch); its prediction
for frame 1 is ``M^1``; Omega is fitted on ``(F~^1, M^1)`` and predicts ``M^2..M^B``. After refinement,
Omega is refitted on every ``(F~^j, M~^j)`` of that batch only (memory stays bounded) and predicts the
next batch: the autoregressive update.

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
from sklearn.cluster import KMeans
from sklearn.neighbors import KNeighborsClassifier

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
    """Uniform-weight KNN vote in torch, like scikit-learn's ``KNeighborsClassifier.predict``.

    ``fit_y`` holds class indices 0..n_classes-1. Squared Euclidean distances ``|x|^2 - 2 x.y + |y|^2`` in
    float64 (scikit-learn upcasts float32 to float64 for the same GEMM trick), the k smallest by
    ``topk``, the vote by ``scatter_add``; on equal counts the smallest class index wins (``argmax``
    returns the first maximum), as in scikit-learn (``weighted_mode`` / ``argmax`` over sorted
    ``classes_``). Neighbour *distance* ties (two fit points exactly equidistant at the k-th place) may be
    broken differently from scikit-learn; on float features they are rare. Runs on ``fit_x``'s device,
    chunked over queries so the distance block stays about 128 MiB.
    """
    fit_x = fit_x.to(torch.float64)
    x = x.to(fit_x.device, torch.float64)
    yy = (fit_x * fit_x).sum(1)
    n_fit = fit_x.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // max(n_fit, 1))
    out = torch.empty(x.shape[0], dtype=torch.long, device=fit_x.device)
    for s in range(0, x.shape[0], chunk):
        xc = x[s : s + chunk]
        d = (xc * xc).sum(1, keepdim=True) - 2.0 * (xc @ fit_x.T) + yy
        idx = d.topk(k, dim=1, largest=False, sorted=False).indices
        counts = torch.zeros((xc.shape[0], n_classes), dtype=torch.int32, device=fit_x.device)
        counts.scatter_add_(1, fit_y[idx], torch.ones_like(idx, dtype=torch.int32))
        out[s : s + chunk] = counts.argmax(1)
    return out


class SceneContextModel:
    """The scene context model Omega: K-Means initialisation, then a KNN classifier refitted per batch.

    Parameters (scikit-learn style; learned state ends in ``_``):

    n_clusters:
        K, the K-Means clusters of the first batch (clamped, with a warning, to the number of vectors).
    n_neighbors:
        k of the KNN (clamped to the number of fit vectors).
    seed, n_init:
        K-Means ``random_state`` and ``n_init``.
    backend:
        ``"sklearn"`` (``KNeighborsClassifier``), ``"torch"`` (:func:`torch_knn_predict`, on the features'
        device) or ``"auto"``: torch when the fit features are a CUDA/MPS tensor or the work is large
        (``AUTO_TORCH_WORK``), else scikit-learn. Both give the same labels.

    Learned state: ``kmeans_`` (the fitted ``KMeans``), ``fit_features_`` (N, C) and ``fit_labels_`` (N,)
    (what Omega was last fitted on: numpy, or a torch tensor on the torch backend), ``classes_`` (sorted
    label ids known to Omega), ``backend_`` (the resolved backend of the last fit), ``knn_`` (the
    scikit-learn estimator, or ``None`` on the torch backend), ``n_fits_`` (number of fits).
    Features are used as given (the caller normalises them).
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
        self.kmeans_: KMeans | None = None
        self.n_fits_ = 0

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

    def __repr__(self) -> str:
        return (
            f"SceneContextModel(n_clusters={self.n_clusters}, n_neighbors={self.n_neighbors}, "
            f"seed={self.seed}, n_init={self.n_init}, backend={self.backend!r})"
        )

    @property
    def started(self) -> bool:
        """Whether :meth:`start` (K-Means on a first batch) has run."""
        return self.kmeans_ is not None

    @property
    def fitted(self) -> bool:
        """Whether Omega has been fitted (and can :meth:`predict`)."""
        return self.n_fits_ > 0

    def reset(self) -> SceneContextModel:
        """Forget everything learned (a new video)."""
        for name in (
            "kmeans_",
            "fit_features_",
            "fit_labels_",
            "classes_",
            "backend_",
            "knn_",
            "k_",
            "_fit_idx",
        ):
            if hasattr(self, name):
                delattr(self, name)
        self.kmeans_ = None
        self.n_fits_ = 0
        return self

    # ---------------------------------------------------------------- K-Means initialisation
    def start(self, features: Any) -> np.ndarray:
        """K-Means on every vector of the first batch ``F~^1..F~^B`` (B, h, w, C); returns ``M^1`` (h, w).

        ``M^1`` is the K-Means prediction for frame 1 (int64 cluster ids); Omega is then fitted on
        ``(F~^1, M^1)``. A model that was started before is reset first.
        """
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")
        if len(features.shape) != 4:
            raise ValueError(
                f"start needs a batch of features (B, h, w, C), got shape {tuple(features.shape)}"
            )
        self.reset()
        x = _to_numpy32(features)
        b, h, w, c = x.shape
        flat = x.reshape(-1, c)
        k = int(self.n_clusters)
        if k < 1:
            raise ValueError(f"n_clusters must be >= 1, got {k}")
        if k > flat.shape[0]:
            warnings.warn(
                f"n_clusters={k} > {flat.shape[0]} feature vectors; using {flat.shape[0]} clusters",
                stacklevel=2,
            )
            k = flat.shape[0]
        self.kmeans_ = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed).fit(flat)
        m1 = self.kmeans_.predict(x[0].reshape(-1, c)).astype(np.int64).reshape(h, w)
        first = features[0]
        self.fit(first, m1)
        return m1

    # ---------------------------------------------------------------- KNN context model
    def _resolve_backend(self, x: Any, n_fit: int) -> str:
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")
        if self.backend != "auto":
            return self.backend
        if isinstance(x, torch.Tensor) and x.device.type != "cpu":
            return "torch"
        # A prediction batch is typically as large as the fit set.
        return "torch" if float(n_fit) * n_fit * x.shape[-1] > AUTO_TORCH_WORK else "sklearn"

    def fit(self, features: Any, labels: Any) -> SceneContextModel:
        """Fit Omega on ``features`` (..., C) and integer ``labels`` (...), replacing earlier data.

        Only this data is kept (``fit_features_``, ``fit_labels_``): memory stays bounded.
        """
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
        self.fit_features_ = self.fit_labels_ = self.knn_ = None
        if backend == "torch":
            xt = xf if isinstance(xf, torch.Tensor) else torch.from_numpy(_to_numpy32(xf))
            self.fit_features_ = xt.detach()
            self.fit_labels_ = torch.from_numpy(y).to(xt.device)
            self._fit_idx = torch.from_numpy(y_idx.reshape(-1)).to(xt.device)
        else:
            xn = _to_numpy32(xf)
            self.knn_ = KNeighborsClassifier(n_neighbors=k, weights="uniform", metric="euclidean")
            self.knn_.fit(xn, y)
            self.fit_features_ = xn
            self.fit_labels_ = y
            self._fit_idx = None
        self.classes_ = classes
        self.backend_ = backend
        self.k_ = k
        self.n_fits_ += 1
        return self

    def predict(self, features: Any) -> np.ndarray:
        """Omega's prediction ``M^j`` for ``features`` (..., C): int64 label ids of shape (...)."""
        if not self.fitted:
            raise RuntimeError("SceneContextModel.predict before fit/start")
        xf, lead = _flatten(features)
        if xf.shape[-1] != self.fit_features_.shape[-1]:
            raise ValueError(
                f"features have {xf.shape[-1]} channels, the model was fitted on {self.fit_features_.shape[-1]}"
            )
        if xf.shape[0] == 0:
            return np.zeros(lead, dtype=np.int64)
        if self.backend_ == "torch":
            xt = xf if isinstance(xf, torch.Tensor) else torch.from_numpy(_to_numpy32(xf))
            idx = torch_knn_predict(self.fit_features_, self._fit_idx, xt, self.k_, len(self.classes_))
            pred = self.classes_[idx.cpu().numpy()]
        else:
            pred = self.knn_.predict(_to_numpy32(xf))
        return np.asarray(pred, dtype=np.int64).reshape(lead)


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
) -> CoarseBatch:
    """Stages 1-2 for one batch ``F~^1..F~^B`` (B, h, w, C), then the autoregressive update of Omega.

    - If ``model`` is not started: K-Means on this batch gives ``M^1``, Omega fitted on ``(F~^1, M^1)``
      predicts ``M^2..M^B``. Otherwise Omega predicts every frame of the batch.
    - With ``refine`` and B > 1: ``M~^j`` = :func:`vidseg_nb.refine.refine` of ``M^j`` on
      ``corr_features`` (``F_c``, default: ``features``) with ``radius2`` (T).
    - Omega is refitted on every ``(F~^j, M~^j)`` of this batch only.
    """
    if len(features.shape) != 4:
        raise ValueError(f"features must be (B, h, w, C), got shape {tuple(features.shape)}")
    b = features.shape[0]
    if b < 1:
        raise ValueError("empty batch")
    if not model.started:
        m1 = model.start(features)
        rest = model.predict(features[1:]) if b > 1 else np.empty((0, *m1.shape), dtype=np.int64)
        before = np.concatenate([m1[None], rest], axis=0)
    else:
        before = model.predict(features)
    if refine and b > 1:
        after = _refine(before, features if corr_features is None else corr_features, radius2=radius2)
    else:
        after = before.copy()
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

    ``corr_batches`` (optional) yields the correspondence features of the same batches.
    """
    corr_iter = iter(corr_batches) if corr_batches is not None else None
    for feats in features_batches:
        corr = next(corr_iter) if corr_iter is not None else None
        yield coarse_batch(model, feats, corr, refine=refine, radius2=radius2)
