"""Scene context model Omega and the coarse-map stage (SPEC 5, paper 4.1)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from vidseg_nb.context import CoarseBatch, SceneContextModel, coarse_batch, coarse_maps, torch_knn_predict
from vidseg_nb.refine import count_label_changes

N_CLASSES = 5


def planted(rng, b=4, h=10, w=12, c=12, noise=0.25, flicker=0.0):
    """Features = one-hot planted label (scaled) + Gaussian noise. Labels: static blocks; with ``flicker``
    a fraction of cells per frame get the feature of another (random) class."""
    yy, xx = np.mgrid[0:h, 0:w]
    truth = (xx // 3 + yy // 5) % N_CLASSES
    labs = np.repeat(truth[None], b, 0)
    shown = labs.copy()
    if flicker:
        flip = rng.random(labs.shape) < flicker
        shown = np.where(flip, rng.integers(0, N_CLASSES, labs.shape), labs)
    feats = np.eye(c)[shown] * 2.0 + noise * rng.standard_normal((b, h, w, c))
    return feats.astype(np.float32), labs


def accuracy_after_permutation(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred.ravel(), truth.ravel()
    pl, tl = np.unique(p), np.unique(t)
    conf = np.array([[np.sum((p == a) & (t == b)) for b in tl] for a in pl])
    r, c = linear_sum_assignment(-conf)
    return conf[r, c].sum() / p.size


# ---------------------------------------------------------------- K-Means + KNN


def test_kmeans_and_knn_recover_planted_labels():
    rng = np.random.default_rng(0)
    feats, truth = planted(rng, b=4, noise=0.3)
    model = SceneContextModel(n_clusters=N_CLASSES, seed=0, n_init=3)
    res = coarse_batch(model, feats, refine=False)
    assert isinstance(res, CoarseBatch) and len(res) == 4
    assert res.before.shape == truth.shape and res.before.dtype == np.int64
    assert accuracy_after_permutation(res.before, truth) > 0.95
    assert set(np.unique(res.before)) <= set(range(N_CLASSES))
    # a second batch is predicted by the KNN alone, with the same ids (same permutation)
    feats2, truth2 = planted(rng, b=3, noise=0.3)
    res2 = coarse_batch(model, feats2, refine=False)
    both = np.concatenate([res.before, res2.before])
    assert accuracy_after_permutation(both, np.concatenate([truth, truth2])) > 0.95
    # accuracy measure can fail: random labels score low
    assert accuracy_after_permutation(rng.integers(0, N_CLASSES, truth.shape), truth) < 0.5


def test_start_returns_kmeans_prediction_of_frame_one_and_fits_it():
    rng = np.random.default_rng(1)
    feats, _ = planted(rng, b=3)
    feats[1:] = feats[1:, ::-1]  # other frames differ from frame 1, so "M^1 of frame 1" is checkable
    model = SceneContextModel(n_clusters=N_CLASSES, n_init=2)
    m1 = model.start(feats)
    assert m1.shape == (10, 12) and m1.dtype == np.int64
    np.testing.assert_array_equal(m1.ravel(), model.kmeans_.predict(feats[0].reshape(-1, 12)))
    assert model.kmeans_.cluster_centers_.shape == (N_CLASSES, 12)
    assert model.kmeans_.n_features_in_ == 12 and model.kmeans_.labels_.size == 3 * 10 * 12
    np.testing.assert_array_equal(model.fit_features_, feats[0].reshape(-1, 12))
    np.testing.assert_array_equal(model.fit_labels_, m1.ravel())
    assert model.n_fits_ == 1
    np.testing.assert_array_equal(model.predict(feats[0]), m1)  # KNN reproduces its training labels


def test_start_is_seeded():
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((2, 6, 7, 5)).astype(np.float32)
    a = SceneContextModel(n_clusters=6, seed=3, n_init=2).start(feats)
    b = SceneContextModel(n_clusters=6, seed=3, n_init=2).start(feats)
    np.testing.assert_array_equal(a, b)


def test_too_many_clusters_is_clamped_with_warning():
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
    model = SceneContextModel(n_clusters=20)
    with pytest.warns(UserWarning, match="n_clusters"):
        m1 = model.start(feats)
    assert model.kmeans_.n_clusters == 6
    assert sorted(np.unique(m1)) == list(range(6))


def test_fit_predict_any_leading_shape_and_torch_input():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    y = rng.integers(0, 4, (3, 4, 5))
    model = SceneContextModel(n_neighbors=1).fit(x, y)
    np.testing.assert_array_equal(model.predict(x), y)
    assert model.predict(x[0, 0]).shape == (5,)
    assert model.predict(torch.from_numpy(x[:2])).shape == (2, 4, 5)
    with pytest.raises(ValueError):
        model.fit(x, y[:2])
    with pytest.raises(NotFittedError):  # check_is_fitted before predicting
        SceneContextModel().predict(x)


def test_scikit_learn_estimator_contract():
    rng = np.random.default_rng(14)
    feats, _ = planted(rng, b=3)
    model = SceneContextModel(n_clusters=N_CLASSES, n_neighbors=3, seed=4, n_init=2, backend="sklearn")
    assert model.get_params() == dict(
        n_clusters=N_CLASSES, n_neighbors=3, seed=4, n_init=2, backend="sklearn"
    )
    assert [k for k in vars(model) if k.endswith("_")] == []  # nothing learned before fitting
    assert not model.fitted and not model.started
    labels = model.fit_predict(feats)  # y None: K-Means start on the batch, M^1..M^B
    assert labels.shape == (3, 10, 12) and model.fitted and model.started
    np.testing.assert_array_equal(labels[0], model.start_labels_)
    np.testing.assert_array_equal(labels[1:], model.predict(feats[1:]))
    np.testing.assert_array_equal(labels[0].ravel(), model.kmeans_.predict(feats[0].reshape(-1, 12)))
    # clone: same hyper-parameters, no learned state; refitting it gives the same labels
    twin = clone(model)
    assert twin.get_params() == model.get_params() and not hasattr(twin, "kmeans_")
    with pytest.raises(NotFittedError):
        twin.predict(feats)
    np.testing.assert_array_equal(twin.fit_predict(feats), labels)
    # fit with y: the KNN alone, on that data (kmeans_ kept); fit_predict(X, y) = predict after the fit
    km = model.kmeans_
    y = np.flip(labels, axis=2).copy()
    np.testing.assert_array_equal(
        model.fit_predict(feats, y), SceneContextModel(n_neighbors=3).fit(feats, y).predict(feats)
    )
    assert model.kmeans_ is km and model.n_fits_ == 2
    np.testing.assert_array_equal(model.fit_labels_, y.ravel())
    # set_params / a K-Means refit forgets the previous fit data
    model.set_params(n_clusters=2).fit(feats)
    assert model.kmeans_.n_clusters == 2 and model.n_fits_ == 1
    np.testing.assert_array_equal(model.fit_features_, feats[0].reshape(-1, 12))


def test_fit_replaces_stored_data():
    rng = np.random.default_rng(5)
    model = SceneContextModel(n_neighbors=2)
    for n in (30, 50, 20):
        model.fit(rng.standard_normal((n, 3)), rng.integers(0, 3, n))
        assert model.fit_features_.shape == (n, 3) and model.fit_labels_.shape == (n,)
        assert model.knn_.n_samples_fit_ == n
    assert model.n_fits_ == 3


# ---------------------------------------------------------------- torch KNN == scikit-learn KNN


def sk_predict(x_fit, y_fit, x, k=4):
    return (
        KNeighborsClassifier(n_neighbors=k, weights="uniform", metric="euclidean")
        .fit(x_fit, y_fit)
        .predict(x)
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_knn_equals_sklearn_random(dtype):
    rng = np.random.default_rng(6)
    x_fit = rng.standard_normal((600, 24)).astype(dtype)
    y_fit = rng.choice([0, 3, 4, 9, 17], 600)  # sparse ids, few classes -> many 2-2 vote ties
    x = rng.standard_normal((500, 24)).astype(dtype)
    ref = sk_predict(x_fit, y_fit, x)
    sk = SceneContextModel(backend="sklearn").fit(x_fit, y_fit)
    th = SceneContextModel(backend="torch").fit(torch.from_numpy(x_fit), y_fit)
    assert th.backend_ == "torch" and sk.backend_ == "sklearn"
    np.testing.assert_array_equal(sk.predict(x), ref)
    np.testing.assert_array_equal(th.predict(x), ref)
    np.testing.assert_array_equal(th.predict(torch.from_numpy(x)), ref)


def test_torch_knn_equals_sklearn_planted_vote_ties():
    rng = np.random.default_rng(7)
    n_q, c = 60, 8
    centres = rng.standard_normal((n_q, c)) * 100.0  # far apart: each query's 4 neighbours are its own
    x_fit, y_fit, expected = [], [], []
    for i in range(n_q):
        a, b, d, e = rng.choice(12, 4, replace=False)
        kind = i % 3
        labels = [a, b, a, b] if kind == 0 else [b, a, b, a] if kind == 1 else [a, b, d, e]
        # distinct distances 0.1 .. 0.4 along different axes, in shuffled order
        for m, dist in enumerate(rng.permutation([0.1, 0.2, 0.3, 0.4])):
            v = centres[i].copy()
            v[m] += dist
            x_fit.append(v)
            y_fit.append(labels[m])
        expected.append(min(a, b) if kind < 2 else min(a, b, d, e))
    x_fit, y_fit, x = np.array(x_fit), np.array(y_fit), centres
    ref = sk_predict(x_fit, y_fit, x)
    np.testing.assert_array_equal(ref, expected)  # scikit-learn: smallest label wins a vote tie
    th = SceneContextModel(backend="torch").fit(x_fit, y_fit)
    np.testing.assert_array_equal(th.predict(x), expected)
    idx = torch_knn_predict(torch.from_numpy(x_fit), torch.from_numpy(y_fit), torch.from_numpy(x), 4, 12)
    np.testing.assert_array_equal(idx.numpy(), expected)


def earliest_k_vote(x_fit, y_fit, x, k):
    """Oracle: the k neighbours by (distance, fit index), uniform vote, smallest label on equal counts."""
    d = ((x[:, None, :] - x_fit[None, :, :]) ** 2).sum(-1)
    out = []
    for row in d:
        nb = np.lexsort((np.arange(len(row)), row))[:k]
        counts = np.bincount(y_fit[nb], minlength=y_fit.max() + 1)
        out.append(int(counts.argmax()))
    return np.array(out)


def test_torch_knn_breaks_distance_ties_like_sklearn():
    # issue 17: six fit points all at distance 1 from the query, labels [0, 0, 1, 1, 1, 1], k = 4:
    # scikit-learn keeps the earliest fit points (0, 0, 1, 1 -> a 2-2 vote -> label 0)
    x_fit = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64)
    y_fit = np.array([0, 0, 1, 1, 1, 1])
    q = np.zeros((1, 3))
    assert sk_predict(x_fit, y_fit, q).tolist() == [0]
    assert torch_knn_predict(
        torch.from_numpy(x_fit), torch.from_numpy(y_fit), torch.from_numpy(q), 4, 2
    ).tolist() == [0]
    # tie-heavy integer data: every query's nearest fit points come in groups of 5-11 at exactly one
    # distance (integer offsets +-1 along random axes, duplicates included), labels random
    rng = np.random.default_rng(16)
    centres = rng.integers(-50, 50, (150, 16)).astype(np.float64) * 10
    x_fit, y_fit = [], []
    for ctr in centres:
        for _ in range(rng.integers(5, 12)):
            v = ctr.copy()
            v[rng.integers(0, 16)] += rng.choice([-1.0, 1.0])
            x_fit.append(v)
            y_fit.append(rng.integers(0, 4))
    perm = rng.permutation(len(x_fit))
    x_fit, y_fit = np.array(x_fit)[perm], np.array(y_fit)[perm]
    want = earliest_k_vote(x_fit, y_fit, centres, 4)
    # scikit-learn keeps the earliest fit points on ties only single-threaded: its multi-threaded
    # brute force merges per-thread heaps, and which tied point survives depends on the thread count
    with threadpool_limits(1):
        np.testing.assert_array_equal(sk_predict(x_fit, y_fit, centres), want)
    th = SceneContextModel(backend="torch").fit(torch.from_numpy(x_fit.astype(np.float32)), y_fit)
    np.testing.assert_array_equal(th.predict(centres.astype(np.float32)), want)


def test_torch_knn_tie_rule_on_random_integer_data_in_small_chunks(monkeypatch):
    """(distance, fit index) is the rule on any tie pattern, also when the distance block is chunked."""
    import vidseg_nb.context as context

    monkeypatch.setattr(context, "_CHUNK_ELEMENTS", 400 * 7)  # 7 queries per chunk
    rng = np.random.default_rng(17)
    x_fit = rng.integers(0, 3, (400, 20)).astype(np.float64)
    y_fit = rng.integers(0, 5, 400)
    x = rng.integers(0, 3, (150, 20)).astype(np.float64)
    got = torch_knn_predict(torch.from_numpy(x_fit), torch.from_numpy(y_fit), torch.from_numpy(x), 4, 5)
    np.testing.assert_array_equal(got.numpy(), earliest_k_vote(x_fit, y_fit, x, 4))


def test_auto_backend_on_cpu_is_sklearn():
    rng = np.random.default_rng(8)
    model = SceneContextModel(backend="auto").fit(torch.randn(20, 3), rng.integers(0, 2, 20))
    assert model.backend_ == "sklearn"
    with pytest.raises(ValueError):
        SceneContextModel(backend="faiss").fit(np.zeros((3, 2)), np.zeros(3, int))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_knn_on_cuda_equals_sklearn():
    rng = np.random.default_rng(9)
    x_fit = rng.standard_normal((800, 64)).astype(np.float32)
    y_fit = rng.integers(0, 6, 800)
    x = rng.standard_normal((700, 64)).astype(np.float32)
    model = SceneContextModel().fit(torch.from_numpy(x_fit).cuda(), y_fit)
    assert model.backend_ == "torch" and model.fit_features_.is_cuda
    np.testing.assert_array_equal(model.predict(torch.from_numpy(x).cuda()), sk_predict(x_fit, y_fit, x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_knn_ties_on_cuda_equal_the_cpu_rule():
    rng = np.random.default_rng(18)
    x_fit = rng.integers(0, 3, (3000, 20)).astype(np.float32)
    y_fit = rng.integers(0, 5, 3000)
    x = rng.integers(0, 3, (500, 20)).astype(np.float32)
    model = SceneContextModel().fit(torch.from_numpy(x_fit).cuda(), y_fit)
    assert model.backend_ == "torch"
    want = earliest_k_vote(x_fit.astype(np.float64), y_fit, x.astype(np.float64), 4)
    np.testing.assert_array_equal(model.predict(torch.from_numpy(x).cuda()), want)


# ---------------------------------------------------------------- the coarse-map stage


def test_autoregressive_update_refits_on_previous_batch_only():
    rng = np.random.default_rng(10)
    model = SceneContextModel(n_clusters=N_CLASSES, n_init=3)
    batches = [planted(rng, b=b, flicker=0.05)[0] for b in (4, 3, 5, 2)]
    seen = []
    original_fit = model.fit

    def spy(X, y=None):
        seen.append((np.array(X), None if y is None else np.array(y)))
        return original_fit(X, y)

    model.fit = spy
    results = list(coarse_maps(iter(batches), model))
    assert len(results) == 4
    # the K-Means start on batch 1 (y None), then one refit per batch on exactly that batch and its
    # refined maps (the explicit update of coarse_maps); the start fits the KNN on (F~^1, M^1)
    assert len(seen) == 5 and model.n_fits_ == 5
    np.testing.assert_array_equal(seen[0][0], batches[0])
    assert seen[0][1] is None
    for i, (feats, res) in enumerate(zip(batches, results)):
        np.testing.assert_array_equal(seen[i + 1][0], feats)
        np.testing.assert_array_equal(seen[i + 1][1], res.after)
    # what Omega holds now: the last batch, nothing older (bounded memory)
    np.testing.assert_array_equal(model.fit_features_, batches[-1].reshape(-1, 12))
    np.testing.assert_array_equal(model.fit_labels_, results[-1].after.ravel())
    # batch i+1 is Omega(batch i)'s prediction
    ref = SceneContextModel(n_neighbors=4).fit(batches[1], results[1].after)
    np.testing.assert_array_equal(results[2].before, ref.predict(batches[2]))
    # ids stay K-Means cluster ids
    for res in results:
        assert set(np.unique(res.after)) <= set(range(N_CLASSES))


def test_coarse_batch_does_not_refit_unless_asked():
    rng = np.random.default_rng(15)
    b1, b2 = planted(rng, b=3, flicker=0.1)[0], planted(rng, b=3, flicker=0.1)[0]
    model = SceneContextModel(n_clusters=N_CLASSES, n_init=2)
    first = coarse_batch(model, b1)  # the K-Means start fits (F~^1, M^1) only
    assert model.n_fits_ == 1
    np.testing.assert_array_equal(model.fit_features_, b1[0].reshape(-1, 12))
    coarse_batch(model, b2)  # Omega predicts; no hidden update
    assert model.n_fits_ == 1
    np.testing.assert_array_equal(model.fit_labels_, first.before[0].ravel())
    coarse_batch(model, b2, update=True)  # the explicit flag: refit on (F~, M~) of this batch
    assert model.n_fits_ == 2
    np.testing.assert_array_equal(model.fit_features_, b2.reshape(-1, 12))


def test_coarse_batch_refinement_reduces_flicker():
    rng = np.random.default_rng(11)
    feats, truth = planted(rng, b=10, h=12, w=15, noise=0.2, flicker=0.12)
    # correspondence features: a static pattern, so every cell tracks to itself
    corr = np.repeat(rng.standard_normal((1, 12, 15, 16)), 10, 0)
    model = SceneContextModel(n_clusters=N_CLASSES, n_init=3)
    res = coarse_batch(model, feats, corr, refine=True, radius2=1.0)
    static = np.ones((12, 15), bool)
    before, after = count_label_changes(res.before, static), count_label_changes(res.after, static)
    assert before > 30  # the coarse maps do flicker
    assert after < before
    assert accuracy_after_permutation(res.after, truth) > accuracy_after_permutation(res.before, truth)
    off = coarse_batch(SceneContextModel(n_clusters=N_CLASSES, n_init=3), feats, corr, refine=False)
    np.testing.assert_array_equal(off.before, off.after)


def test_batch_of_one_frame():
    rng = np.random.default_rng(12)
    model = SceneContextModel(n_clusters=N_CLASSES, n_init=3)
    frames = [planted(rng, b=1)[0] for _ in range(3)]
    results = list(coarse_maps(frames, model, refine=True))
    for res in results:
        assert res.before.shape == (1, 10, 12) and res.before.dtype == np.int64
        np.testing.assert_array_equal(res.before, res.after)
    assert model.n_fits_ == 4  # start + one refit per frame
    np.testing.assert_array_equal(model.fit_features_, frames[-1].reshape(-1, 12))
    np.testing.assert_array_equal(model.fit_labels_, results[-1].after.ravel())


def test_coarse_batch_torch_features_and_corr_batches():
    rng = np.random.default_rng(13)
    feats = [torch.from_numpy(planted(rng, b=3)[0]) for _ in range(2)]
    corr = [torch.randn(3, 10, 12, 7) for _ in range(2)]
    model = SceneContextModel(n_clusters=N_CLASSES, n_init=3, backend="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = list(coarse_maps(feats, model, corr, radius2=2.0))
    assert [o.after.shape for o in out] == [(3, 10, 12)] * 2
    assert isinstance(model.fit_features_, torch.Tensor) and model.fit_features_.shape == (360, 12)


# ---------------------------------------------------------------- the torch path (issue 12 item 4)


def _no_numpy(monkeypatch) -> None:
    """Make any numpy conversion of features in vidseg_nb.context fail."""

    def fail(x):
        raise AssertionError(f"features converted to numpy: {type(x).__name__} {tuple(x.shape)}")

    monkeypatch.setattr("vidseg_nb.context._to_numpy32", fail)


def _spy(monkeypatch, module, name: str, seen: list) -> None:
    """Record the device of the first tensor argument of ``module.name`` on each call."""
    real = getattr(module, name)

    def wrapper(*args, **kw):
        seen.append(next(a.device.type for a in args if isinstance(a, torch.Tensor)))
        return real(*args, **kw)

    monkeypatch.setattr(module, name, wrapper)


def test_torch_backend_runs_stages_1_2_on_tensors_end_to_end(monkeypatch):
    """backend="torch": TorchKMeans start, torch KNN, CBR in torch, refits; the features stay tensors."""
    import vidseg_nb.context as ctx
    import vidseg_nb.refine as rf
    from vidseg_nb.kmeans import TorchKMeans

    rng = np.random.default_rng(21)
    (f1, t1), (f2, t2) = planted(rng, b=4, noise=0.3), planted(rng, b=3, noise=0.3)
    sk = SceneContextModel(n_clusters=N_CLASSES, n_init=3, seed=0, backend="sklearn")
    want = [coarse_batch(sk, f, update=True) for f in (f1, f2)]
    _no_numpy(monkeypatch)
    knn, traj = [], []
    _spy(monkeypatch, ctx, "torch_knn_predict", knn)
    _spy(monkeypatch, rf, "_trajectories", traj)
    model = SceneContextModel(n_clusters=N_CLASSES, n_init=3, seed=0, backend="torch")
    got = [coarse_batch(model, torch.from_numpy(f), update=True) for f in (f1, f2)]
    assert isinstance(model.kmeans_, TorchKMeans) and model.backend_ == "torch"
    assert isinstance(model.fit_features_, torch.Tensor) and model.n_fits_ == 3  # start + 2 refits
    assert len(knn) == 2 and len(traj) == 2  # M^2..M^4, then batch 2; one CBR per batch
    truth = np.concatenate([t1, t2])
    for name in ("before", "after"):
        pred = np.concatenate([getattr(g, name) for g in got])
        assert pred.dtype == np.int64 and accuracy_after_permutation(pred, truth) > 0.95
        # the same partition as scikit-learn's path on separable data (ids may be numbered differently)
        ref = np.concatenate([getattr(w, name) for w in want])
        assert accuracy_after_permutation(pred, ref) == 1.0


def test_auto_kmeans_on_cpu_stays_scikit_learn():
    """backend="auto" on CPU (numpy or a CPU tensor) keeps scikit-learn's K-Means: the pinned labels."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(22)
    feats, _ = planted(rng, b=2)
    for x in (feats, torch.from_numpy(feats)):
        model = SceneContextModel(n_clusters=N_CLASSES, n_init=2, seed=3).fit(x)
        assert type(model.kmeans_) is KMeans
        want = KMeans(n_clusters=N_CLASSES, n_init=2, random_state=3).fit(feats.reshape(-1, 12))
        np.testing.assert_array_equal(
            model.start_labels_, want.predict(feats[0].reshape(-1, 12)).reshape(10, 12)
        )


def test_torch_kmeans_clamps_k_like_scikit_learn():
    x = torch.randn(1, 2, 2, 3)
    with pytest.warns(UserWarning, match="using 4 clusters"):
        model = SceneContextModel(n_clusters=9, n_init=1, backend="torch").fit(x)
    assert sorted(np.unique(model.start_labels_)) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
    ],
)
def test_videosegmenter_stages_1_2_on_device_tensors(monkeypatch, request, device):
    """issue 12: with a GPU, stages 1-2 of VideoSegmenter run on CUDA tensors (K-Means, KNN, CBR) with
    the default "auto" backend; on the CPU the same path, forced with backend="torch"."""
    import vidseg_nb.context as ctx
    import vidseg_nb.kmeans as km
    import vidseg_nb.refine as rf
    from vidseg_nb.config import SegConfig
    from vidseg_nb.loading import load_backbone
    from vidseg_nb.pipeline import VideoSegmenter
    from vidseg_nb.synthetic import make_clip

    bb = request.getfixturevalue("tiny") if device == "cpu" else load_backbone("tiny", device=device)
    if device == "cpu":  # "auto" is scikit-learn on the CPU: ask for torch
        real = SceneContextModel.from_config.__func__
        monkeypatch.setattr(
            SceneContextModel,
            "from_config",
            classmethod(lambda c, cfg, backend="auto": real(c, cfg, "torch")),
        )
    clip = make_clip(6, 128, 128, n_objects=2, seed=0)
    cfg = SegConfig(n_clusters=3, t_m=24, batch_size=3, max_side=128, kmeans_n_init=2)
    _no_numpy(monkeypatch)
    fits, knn, traj = [], [], []
    _spy(monkeypatch, km.TorchKMeans, "fit", fits)  # set on the class: the first tensor argument is X
    _spy(monkeypatch, ctx, "torch_knn_predict", knn)
    _spy(monkeypatch, rf, "_trajectories", traj)
    r = VideoSegmenter(bb, cfg, cache_frames=0).segment(clip, mode="preview", keep=None, progress=False)
    # one K-Means start; KNN for M^2, M^3 and for batch 2; one CBR per batch: all on the device
    assert fits == [device] and knn == [device] * 2 and traj == [device] * 2
    assert r.coarse_after.shape == (6, 8, 8) and set(np.unique(r.coarse_after)) <= {0, 1, 2}
