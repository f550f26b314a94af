"""TorchKMeans (vidseg_nb/kmeans.py) against scikit-learn's KMeans(algorithm="lloyd")."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.cluster._kmeans import _tolerance
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning

from vidseg_nb.kmeans import TorchKMeans, _assign, kmeans_plusplus, tolerance


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b are the same partition up to a permutation of ids (a bijection a <-> b)."""
    a, b = np.asarray(a), np.asarray(b)
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_blobs(n_samples=3000, n_features=64, centers=5, cluster_std=1.0, random_state=0)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def gauss() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4000, 32)).astype(np.float32)


def test_same_partition_helper() -> None:
    assert _same_partition([0, 0, 1, 2], [2, 2, 0, 1])
    assert not _same_partition([0, 0, 1, 2], [0, 1, 1, 2])
    assert not _same_partition([0, 0, 1, 1], [0, 0, 0, 0])


def test_separable_same_partition_as_sklearn(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = blobs
    tk = TorchKMeans(n_clusters=5, n_init=10, random_state=0).fit(x)
    sk = KMeans(n_clusters=5, n_init=10, random_state=0, algorithm="lloyd").fit(x)
    labels = tk.labels_.numpy()
    assert _same_partition(labels, sk.labels_)
    assert _same_partition(labels, y)
    assert tk.inertia_ == pytest.approx(sk.inertia_, rel=1e-5)
    # the same centres up to the permutation of ids
    perm = {int(a): int(b) for a, b in zip(labels, sk.labels_, strict=True)}
    for a, b in perm.items():
        np.testing.assert_allclose(tk.cluster_centers_[a].numpy(), sk.cluster_centers_[b], atol=1e-4)
    # labels_ are the nearest learned centres
    assert torch.equal(tk.predict(x), tk.labels_)
    assert tk.labels_.dtype == torch.int64 and tk.cluster_centers_.dtype == torch.float32


def test_random_data_inertia_within_1pct(gauss: np.ndarray) -> None:
    tk = TorchKMeans(n_clusters=20, n_init=10, random_state=0).fit(gauss)
    sk = KMeans(n_clusters=20, n_init=10, random_state=0, algorithm="lloyd").fit(gauss)
    assert abs(tk.inertia_ / sk.inertia_ - 1.0) < 0.01
    # inertia_ is the sum of squared distances to the assigned centres (float64 reference)
    c = tk.cluster_centers_.double().numpy()
    ref = ((gauss.astype(np.float64) - c[tk.labels_.numpy()]) ** 2).sum()
    assert tk.inertia_ == pytest.approx(ref, rel=1e-5)
    assert len(np.unique(tk.labels_.numpy())) == 20


def test_uniform_data_inertia_within_1pct() -> None:
    x = np.random.default_rng(3).uniform(size=(3000, 16)).astype(np.float32)
    tk = TorchKMeans(n_clusters=12, n_init=10, random_state=5).fit(x)
    sk = KMeans(n_clusters=12, n_init=10, random_state=5, algorithm="lloyd").fit(x)
    assert abs(tk.inertia_ / sk.inertia_ - 1.0) < 0.01


def test_same_init_same_lloyd_run(gauss: np.ndarray) -> None:
    """With the same initial centres the Lloyd iterations are scikit-learn's: same labels, n_iter_."""
    init = gauss[:20].copy()
    tk = TorchKMeans(n_clusters=20, init=init).fit(gauss)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sk = KMeans(n_clusters=20, init=init, n_init=1, algorithm="lloyd").fit(gauss)
    assert tk.n_iter_ == sk.n_iter_
    np.testing.assert_array_equal(tk.labels_.numpy(), sk.labels_)
    np.testing.assert_allclose(tk.cluster_centers_.numpy(), sk.cluster_centers_, atol=1e-5)
    assert tk.inertia_ == pytest.approx(sk.inertia_, rel=1e-5)


def test_empty_cluster_relocated_as_sklearn(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    """A centre far from every point is empty after the first E step: it moves to the point farthest from
    its centre, which leaves its old cluster (scikit-learn's ``_relocate_empty_clusters_dense``)."""
    x, y = blobs
    init = np.concatenate([x[[int(np.flatnonzero(y == j)[0]) for j in range(5)]], np.full((1, 64), 1e3)])
    init = init.astype(np.float32)
    tk = TorchKMeans(n_clusters=6, init=init, max_iter=1).fit(x)
    sk = KMeans(n_clusters=6, init=init, n_init=1, max_iter=1, algorithm="lloyd").fit(x)
    first = _assign(torch.from_numpy(x), torch.from_numpy(init[:5])).numpy()
    assert _same_partition(first, y)
    d = ((x.astype(np.float64) - init[first]) ** 2).sum(1)
    far = int(np.argmax(d))
    old = first[far]
    rest = (first == old) & (np.arange(len(x)) != far)
    np.testing.assert_allclose(tk.cluster_centers_[5].numpy(), x[far], atol=1e-4)
    np.testing.assert_allclose(
        tk.cluster_centers_[old].numpy(), x[rest].astype(np.float64).mean(0), atol=1e-4
    )
    np.testing.assert_allclose(tk.cluster_centers_.numpy(), sk.cluster_centers_, atol=1e-4)
    np.testing.assert_array_equal(tk.labels_.numpy(), sk.labels_)
    assert tk.labels_[far] == 5
    full_tk = TorchKMeans(n_clusters=6, init=init).fit(x)
    full_sk = KMeans(n_clusters=6, init=init, n_init=1, algorithm="lloyd").fit(x)
    np.testing.assert_array_equal(full_tk.labels_.numpy(), full_sk.labels_)
    assert full_tk.n_iter_ == full_sk.n_iter_
    assert len(np.unique(full_tk.labels_.numpy())) == 6


def test_duplicate_points_warn_like_sklearn() -> None:
    """3 distinct points, K = 5: ConvergenceWarning (3 distinct clusters), as scikit-learn."""
    base = np.array([[0.0, 0.0], [5.0, 5.0], [10.0, 0.0]], dtype=np.float32)
    x = np.repeat(base, 20, axis=0)
    with pytest.warns(ConvergenceWarning, match=r"Number of distinct clusters \(3\)"):
        tk = TorchKMeans(n_clusters=5, n_init=3, random_state=0).fit(x)
    with pytest.warns(ConvergenceWarning, match=r"Number of distinct clusters \(3\)"):
        sk = KMeans(n_clusters=5, n_init=3, random_state=0).fit(x)
    assert _same_partition(tk.labels_.numpy(), sk.labels_)
    assert tk.inertia_ == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="n_samples=3 should be >= n_clusters=5"):
        TorchKMeans(n_clusters=5).fit(base)


def test_determinism(gauss: np.ndarray) -> None:
    a = TorchKMeans(n_clusters=20, n_init=2, random_state=7).fit(gauss)
    b = TorchKMeans(n_clusters=20, n_init=2, random_state=7).fit(torch.from_numpy(gauss))
    assert torch.equal(a.labels_, b.labels_)
    assert torch.equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_ and a.n_iter_ == b.n_iter_
    c = TorchKMeans(n_clusters=20, n_init=1, random_state=8).fit(gauss)
    d = TorchKMeans(n_clusters=20, n_init=1, random_state=7).fit(gauss)
    assert not torch.equal(c.labels_, d.labels_)  # another seed, another local optimum on noise
    # restart r's seed does not depend on n_init: the best of 2 runs is at least as good as run 0
    assert a.inertia_ <= d.inertia_ + 1e-6


def test_stopping_rule(blobs: tuple[np.ndarray, np.ndarray], gauss: np.ndarray) -> None:
    x, _ = blobs
    # separable blobs, one k-means++ seed per blob: the first E step is final, the second one confirms
    # it (strict convergence at iteration 2), as in scikit-learn
    tk = TorchKMeans(n_clusters=5, n_init=1, random_state=0).fit(x)
    sk = KMeans(n_clusters=5, n_init=1, random_state=0).fit(x)
    assert tk.n_iter_ == sk.n_iter_ == 2
    # a huge tol stops after the first M step (the shift test), then a last E step
    big = TorchKMeans(n_clusters=20, n_init=1, tol=1e6, random_state=0).fit(gauss)
    assert big.n_iter_ == 1
    assert torch.equal(big.predict(gauss), big.labels_)
    one = TorchKMeans(n_clusters=20, n_init=1, max_iter=1, random_state=0).fit(gauss)
    assert one.n_iter_ == 1
    assert torch.equal(one.predict(gauss), one.labels_)
    # tol = 0 runs to strict convergence: the centres are the means of their clusters
    full = TorchKMeans(n_clusters=20, n_init=1, tol=0.0, random_state=0).fit(gauss)
    assert 2 < full.n_iter_ < 300
    lab = full.labels_.numpy()
    means = np.stack([gauss[lab == j].astype(np.float64).mean(0) for j in range(20)])
    np.testing.assert_allclose(full.cluster_centers_.numpy(), means, atol=1e-5)


def test_tolerance_matches_sklearn(gauss: np.ndarray) -> None:
    x = gauss * np.linspace(0.5, 3.0, 32, dtype=np.float32) + 100.0
    assert tolerance(torch.from_numpy(x), 1e-4) == pytest.approx(
        float(_tolerance(x.astype(np.float64), 1e-4)), rel=1e-9
    )
    assert tolerance(torch.from_numpy(x), 0.0) == 0.0


def test_kmeans_plusplus_picks_one_point_per_blob(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = blobs
    xt = torch.from_numpy(x)
    centers, idx = kmeans_plusplus(xt, 5, torch.Generator().manual_seed(0))
    assert sorted(y[idx.numpy()].tolist()) == [0, 1, 2, 3, 4]
    assert torch.equal(centers, xt[idx])
    # chunking does not change the result
    c2, idx2 = kmeans_plusplus(xt, 5, torch.Generator().manual_seed(0), max_elements=500)
    assert torch.equal(idx, idx2)


def test_chunking_does_not_change_the_fit(gauss: np.ndarray) -> None:
    a = TorchKMeans(n_clusters=8, n_init=2, random_state=1).fit(gauss)
    b = TorchKMeans(n_clusters=8, n_init=2, random_state=1, max_elements=1000).fit(gauss)
    assert torch.equal(a.labels_, b.labels_)
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-6)
    np.testing.assert_allclose(a.cluster_centers_.numpy(), b.cluster_centers_.numpy(), atol=1e-5)


def test_api(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = blobs
    km = TorchKMeans(n_clusters=5, n_init=2)
    with pytest.raises(RuntimeError):
        km.predict(x)
    lab = km.fit_predict(x)
    assert torch.equal(lab, km.labels_)
    assert km.score(x) == pytest.approx(-km.inertia_, rel=1e-5)
    with pytest.raises(ValueError, match="features"):
        km.predict(x[:, :3])
    with pytest.raises(ValueError):
        TorchKMeans(n_clusters=0).fit(x)
    with pytest.raises(ValueError):
        TorchKMeans(n_clusters=2, init="random").fit(x)
    # K = 1: the centre is the mean, the inertia the total sum of squares; K = N: every point alone
    small = x[:50].astype(np.float64)
    one = TorchKMeans(n_clusters=1, n_init=2).fit(small)
    assert one.inertia_ == pytest.approx(((small - small.mean(0)) ** 2).sum(), rel=1e-5)
    np.testing.assert_allclose(one.cluster_centers_[0].numpy(), small.mean(0), atol=1e-5)
    every = TorchKMeans(n_clusters=50, n_init=1).fit(small)
    assert every.inertia_ == 0.0 and len(np.unique(every.labels_.numpy())) == 50
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        TorchKMeans(n_clusters=5, n_init=1).fit(x)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(old)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_sklearn(blobs: tuple[np.ndarray, np.ndarray], gauss: np.ndarray) -> None:
    x, y = blobs
    xg = torch.from_numpy(x).cuda()
    tk = TorchKMeans(n_clusters=5, n_init=10, random_state=0).fit(xg)
    assert tk.labels_.is_cuda and tk.cluster_centers_.is_cuda
    assert _same_partition(tk.labels_.cpu().numpy(), y)
    cpu = TorchKMeans(n_clusters=5, n_init=10, random_state=0).fit(x)
    assert _same_partition(tk.labels_.cpu().numpy(), cpu.labels_.numpy())
    assert tk.inertia_ == pytest.approx(cpu.inertia_, rel=1e-5)
    assert torch.equal(tk.predict(xg), tk.labels_)
    again = TorchKMeans(n_clusters=5, n_init=10, random_state=0).fit(xg)
    assert torch.equal(again.labels_, tk.labels_)  # deterministic on CUDA (no atomics in the sums)
    assert torch.equal(again.cluster_centers_, tk.cluster_centers_)
    g = TorchKMeans(n_clusters=20, n_init=10, random_state=0).fit(torch.from_numpy(gauss).cuda())
    sk = KMeans(n_clusters=20, n_init=10, random_state=0).fit(gauss)
    assert abs(g.inertia_ / sk.inertia_ - 1.0) < 0.01
    # the fit runs in IEEE float32 even when TF32 is allowed, and the caller's setting is restored
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        h = TorchKMeans(n_clusters=20, n_init=10, random_state=0).fit(torch.from_numpy(gauss).cuda())
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(old)
    assert torch.equal(h.labels_, g.labels_)
