"""Tests of vidseg_nb.authors (issue 15): one or more per row, on hand-made inputs with known answers or
against small literal transcriptions of the authors' loops (QianWangX/VidSeg_diffusion)."""

from __future__ import annotations

import io
import math
import re
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from vidseg_nb import authors as A
from vidseg_nb.errors import ConfigError
from vidseg_nb.metrics import assign_labels
from vidseg_nb.modulation import upsample_masks
from vidseg_nb.refine import refine


# ---------------------------------------------------------------------------------------------- row 1
def test_posterior_sample_is_mean_plus_std_noise_from_the_cpu_generator():
    mean = torch.tensor([[[[0.5, -1.0]]]])
    logvar = torch.tensor([[[[math.log(4.0), 100.0]]]])  # std 2; 100 is clamped to 20
    z = A.authors_posterior_sample(mean, logvar, torch.Generator().manual_seed(3))
    eps = torch.randn((1, 1, 1, 2), generator=torch.Generator().manual_seed(3))
    want = 0.18215 * (mean + torch.tensor([[[[2.0, math.exp(10.0)]]]]) * eps)
    torch.testing.assert_close(z, want)


def test_noise_off_cuda_is_the_next_cpu_draw():
    # row 9 on the CPU: the noise is the next draw of the batch's CPU generator (after the posterior)
    g = torch.Generator().manual_seed(5)
    torch.randn((2, 4, 3, 3), generator=g)
    want = torch.randn((2, 4, 3, 3), generator=g)
    g2 = torch.Generator().manual_seed(5)
    torch.randn((2, 4, 3, 3), generator=g2)
    got = A.authors_noise((2, 4, 3, 3), 5, "cpu", cpu_generator=g2, condition_shape=(1, 3, 24, 24))
    torch.testing.assert_close(got, want, rtol=0, atol=0)  # (the SVD condition draw is a CUDA one only)
    fresh = A.authors_noise((2, 4, 3, 3), 5)
    torch.testing.assert_close(fresh, torch.randn((2, 4, 3, 3), generator=torch.Generator().manual_seed(5)))
    assert fresh.device.type == "cpu" and fresh.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: their add_noise draw is on the GPU")
def test_noise_on_cuda_is_their_seed_everything_then_randn_like():
    shape = (14, 4, 7, 13)
    with torch.random.fork_rng(devices=[0]):
        torch.manual_seed(1)  # their seed_everything(1): torch.manual_seed, torch.cuda.manual_seed
        torch.cuda.manual_seed(1)
        z = torch.zeros(shape, device="cuda")
        want = torch.randn_like(z)  # EDMSampler.add_noise: the first CUDA draw after the seed
        torch.manual_seed(1)
        torch.cuda.manual_seed(1)
        image = torch.zeros((1, 3, 56, 104), device="cuda")
        torch.randn_like(image)  # their SVD pipeline: cond_aug * randn_like(image) comes first
        want_svd = torch.randn_like(z)
    got = A.authors_noise(shape, 1, "cuda")
    assert got.device.type == "cuda"
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(A.authors_noise(shape, 1, "cuda", condition_shape=(1, 3, 56, 104)), want_svd,
                               rtol=0, atol=0)  # fmt: skip
    cpu = A.authors_noise(shape, 1, "cpu")
    assert (cpu - got.cpu()).abs().max() > 0.5  # the CPU stream is another one


# ---------------------------------------------------------------------------------------------- row 2
def test_blend_steps_sd_only_tm_and_tm_plus_1_svd_to_the_end():
    def literal(t_start, n_steps, start, end):  # EDMSampler.__call__'s loop and blend condition
        steps = list(range(n_steps))[t_start : n_steps + 1]
        return [i for i in steps if start <= i <= end]

    assert A.authors_blend_steps(22, 25, "sd") == [22, 23] == literal(22, 25, 22, 23)
    assert A.authors_blend_steps(22, 25, "svd") == [22, 23, 24] == literal(22, 25, 22, 25)
    assert A.authors_blend_steps(17, 25, "sd") == [17, 18]
    with pytest.raises(ValueError):
        A.authors_blend_steps(22, 25, "xl")


# ---------------------------------------------------------------------------------------------- row 3
def test_to_uint8_truncates():
    x = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    got = A.authors_to_uint8(x)
    assert got.shape == (1, 1, 6, 3) and got.dtype == np.uint8
    # 0.5 * 255 = 127.5 -> 127 (rounding would give 128); 0.9995 * 255 = 254.87 -> 254
    np.testing.assert_array_equal(got[0, 0, :, 0], [0, 0, 127, 254, 255, 255])


def test_raw_difference_wraps_mod_256_then_square_root():
    plus = np.array([[[10, 0, 255]]], np.uint8)
    minus = np.array([[[20, 3, 0]]], np.uint8)
    # by hand: (10-20) -> 246, 246^2 = 60516 = 100 mod 256; (0-3) -> 253, 253^2 = 64009 = 9 mod 256;
    # 255^2 = 65025 = 1 mod 256. Sum 110 (the float formula would give 100 + 9 + 65025 = 65134).
    np.testing.assert_allclose(A.authors_raw_difference(plus, minus), [[math.sqrt(110)]])
    np.testing.assert_allclose(A.authors_raw_difference(minus, plus), [[math.sqrt(110)]])
    big = np.full((1, 1, 3), 255, np.uint8)
    zero = np.zeros((1, 1, 3), np.uint8)
    assert A.authors_raw_difference(big, zero)[0, 0] == pytest.approx(math.sqrt(3))  # 255^2 = 1 mod 256


def test_cv2_gaussian_kernel_by_hand():
    e = [math.exp(-4 / 18), math.exp(-1 / 18), 1.0, math.exp(-1 / 18), math.exp(-4 / 18)]
    np.testing.assert_allclose(A.cv2_gaussian_kernel(5, 3.0), np.array(e) / sum(e), rtol=0, atol=1e-15)


def test_cv2_gaussian_blur_border_is_reflect_101():
    k = A.cv2_gaussian_kernel(5, 3.0)
    corner = np.zeros((7, 7))
    corner[0, 0] = 1.0
    got = A.cv2_gaussian_blur(corner)
    # REFLECT_101 (gfedcb|abcdefgh) does not repeat the edge pixel: the impulse is seen once.
    np.testing.assert_allclose(got[:3, :3], np.outer(k[2:], k[2:]), atol=1e-15)
    assert np.all(got[3:, :] == 0) and np.all(got[:, 3:] == 0)
    centre = np.zeros((7, 7))
    centre[3, 3] = 1.0
    np.testing.assert_allclose(A.cv2_gaussian_blur(centre)[1:6, 1:6], np.outer(k, k), atol=1e-15)
    np.testing.assert_allclose(A.cv2_gaussian_blur(np.full((4, 3), 2.5)), 2.5, rtol=1e-14)


def _reflect101(p: int, n: int) -> int:
    while p < 0 or p >= n:
        p = -p if p < 0 else 2 * n - 2 - p
    return p


def _hand_difference_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The authors' formula written out per pixel (compute_difference + get_seg_map_main, no JPEG)."""
    h, w, _ = a.shape
    raw = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            s = sum((((int(a[y, x, c]) - int(b[y, x, c])) % 256) ** 2) % 256 for c in range(3))
            raw[y, x] = math.sqrt(s)
    e = [math.exp(-((i - 2) ** 2) / 18) for i in range(5)]
    k = [v / sum(e) for v in e]
    blur = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            blur[y, x] = sum(
                k[i] * k[j] * raw[_reflect101(y + i - 2, h), _reflect101(x + j - 2, w)]
                for i in range(5)
                for j in range(5)
            )
    grey = np.clip(np.trunc(blur.astype(np.float32)), 0, 255).astype(np.uint8)  # mode F -> L: truncation
    return grey / (grey.max() + 1e-5)


def test_difference_map_equals_the_formula_by_hand_wrap_included():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    got = A.authors_difference_map(a, b, jpeg=False)
    np.testing.assert_allclose(got, _hand_difference_map(a, b), rtol=0, atol=1e-12)
    # only integer grey levels 0..27 (= floor(sqrt(765))) survive before the normalisation
    raw8 = np.array(Image.fromarray(A.cv2_gaussian_blur(A.authors_raw_difference(a, b))).convert("L"))
    assert raw8.max() <= 27


def test_difference_map_jpeg_round_trip():
    # constant difference 11 in one channel: 11^2 = 121 < 256, sqrt = 11; a flat JPEG is exact
    a = np.zeros((16, 16, 3), np.uint8)
    b = a.copy()
    b[..., 1] = 11
    np.testing.assert_array_equal(A.authors_difference_map(a, b), np.full((16, 16), 11 / (11 + 1e-5)))
    # a textured pair: the JPEG (quality 75) changes the map, but only by a few grey levels
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with_jpeg = A.authors_difference_map(a, b)
    without = A.authors_difference_map(a, b, jpeg=False)
    assert not np.array_equal(with_jpeg, without)
    assert np.abs(with_jpeg - without).max() < 0.25
    # Pillow's default JPEG quality is 75, theirs: saving without a quality gives the same pixels
    grey = Image.fromarray(A.cv2_gaussian_blur(A.authors_raw_difference(a, b))).convert("L")
    buf = io.BytesIO()
    grey.save(buf, format="JPEG")
    default = np.array(Image.open(io.BytesIO(buf.getvalue())))
    np.testing.assert_array_equal(A.jpeg_roundtrip_l(np.array(grey)), default)
    assert not np.array_equal(A.jpeg_roundtrip_l(np.array(grey), quality=95), default)


def _their_d_l_from_pngs(
    plus_unit: np.ndarray, minus_unit: np.ndarray, size: tuple[int, int], tmp
) -> np.ndarray:
    """Their ``sample_video`` + ``compute_difference`` + ``get_seg_map_main``, literally, on files: decoded
    (3, h, w) in [0, 1] -> ``* 255`` ``astype(uint8)`` -> RGB2BGR -> ``cv2.resize(frame, (W, H))`` ->
    ``cv2.imwrite`` PNG; Pillow reads both back, uint8 ``(a - b) ** 2`` summed, sqrt, ``cv2.GaussianBlur``,
    ``Image.fromarray(d).convert("L")`` saved as JPEG, read back, ``d / (max + 1e-5)``."""
    cv2 = pytest.importorskip("cv2", reason="the authors extra (opencv-python-headless) is not installed")
    paths = []
    for name, unit in (("plus", plus_unit), ("minus", minus_unit)):
        frame = (np.transpose(unit, (1, 2, 0)) * 255).astype(np.uint8)
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        frame = cv2.resize(frame, (size[1], size[0]))
        cv2.imwrite(str(tmp / f"{name}.png"), frame)
        paths.append(tmp / f"{name}.png")
    a, b = (np.array(Image.open(p)) for p in paths)
    d = np.sqrt(np.sum((a - b) ** 2, axis=2))
    d = cv2.GaussianBlur(d, (5, 5), 3)
    Image.fromarray(d).convert("L").save(tmp / "d.jpg")
    d8 = np.array(Image.open(tmp / "d.jpg"))
    return d8 / (np.max(d8) + 1e-5)


def test_resized_difference_map_at_the_original_size_equals_their_files(tmp_path):
    # a hand-made pair at the processing size 448 x 832 (VSPW's 480 x 853 floored to 64): I+ a textured
    # ramp, I- = I+ minus 16 (left third: 16^2 = 256 wraps to 0), 17 (middle: 289 -> 33 per channel) or 3
    pytest.importorskip("cv2", reason="the authors extra (opencv-python-headless) is not installed")
    h, w = 448, 832
    y, x = np.mgrid[0:h, 0:w]
    plus8 = np.stack(
        [(3 * x + 2 * y + 40 * c + 7 * ((x // 5 + y // 3) % 4)) % 190 + 40 for c in range(3)], -1
    )
    delta = np.where(x < w // 3, 16, np.where(x < 2 * w // 3, 17, 3))[..., None]
    minus8 = plus8 - delta
    plus8, minus8 = plus8.astype(np.uint8), minus8.astype(np.uint8)
    # as decoded images in [0, 1] whose truncation gives back these pixels
    unit = [
        (torch.from_numpy(u.astype(np.float32)).permute(2, 0, 1)[None] + 0.5) / 255 for u in (plus8, minus8)
    ]
    np.testing.assert_array_equal(A.authors_unit_to_uint8(unit[0])[0], plus8)
    size = (480, 853)
    got = A.authors_diff_maps(unit[0], unit[1], size=size).numpy()[0]
    assert got.shape == size and got.dtype == np.float64
    np.testing.assert_array_equal(
        got, _their_d_l_from_pngs(unit[0][0].numpy(), unit[1][0].numpy(), size, tmp_path)
    )
    # the wrap survives the resize where the offset does: 16 stays 16 (0 after the wrapping square) for
    # most pixels; cv2's 8-bit fixed point rounds the two images apart by one elsewhere (15 or 17)
    big = A.authors_resize_decoded(np.stack([plus8, minus8]), size)
    off = big[0].astype(int) - big[1].astype(int)
    left = off[:, : size[1] // 3 - 3]
    assert set(np.unique(left)) <= {15, 16, 17} and (left == 16).mean() > 0.9
    raw = A.authors_raw_difference(big[0], big[1])[:, : size[1] // 3 - 3]
    assert np.all(raw[(left == 16).all(axis=-1)] == 0.0)
    # the same size is a copy: nothing changes at sides that are multiples of 64
    np.testing.assert_array_equal(A.authors_resize_decoded(np.stack([plus8]), (h, w))[0], plus8)
    np.testing.assert_array_equal(
        A.authors_diff_maps(unit[0], unit[1], size=(h, w)), A.authors_diff_maps(*unit)
    )


def test_require_cv2_names_the_extra_when_opencv_is_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError
    with pytest.raises(ConfigError, match=re.escape('pip install "vidseg_nb[authors]"')):
        A.require_cv2()
    with pytest.raises(ConfigError, match="authors"):
        A.authors_resize_decoded(np.zeros((1, 4, 4, 3), np.uint8), (5, 5))


# ---------------------------------------------------------------------------------------------- row 4
def _pillow_lanczos_reference(mask01: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos-3 resampling with Pillow's coefficient rule (centre (i + 0.5) * scale), in float."""

    def lanczos(x):
        return np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3), 0.0)

    def matrix(n_in, n_out):
        scale = n_in / n_out
        fs = max(scale, 1.0)
        support = 3 * fs
        m = np.zeros((n_out, n_in))
        for i in range(n_out):
            c = (i + 0.5) * scale
            lo = max(int(c - support + 0.5), 0)
            hi = min(int(c + support + 0.5), n_in)
            xs = np.arange(lo, hi)
            wts = lanczos((xs - c + 0.5) / fs)
            m[i, lo:hi] = wts / wts.sum()
        return m

    h, w = mask01.shape
    out = matrix(h, size[0]) @ (mask01 * 255.0) @ matrix(w, size[1]).T
    return np.clip(out, 0, 255) / 255


def test_upsample_mask_is_pillow_lanczos_not_bilinear():
    mask = np.zeros((4, 6), bool)
    mask[:, 3:] = True
    up = A.authors_upsample_mask(mask, (16, 24))
    assert up.shape == (16, 24) and up.dtype == np.float64
    np.testing.assert_allclose(up, _pillow_lanczos_reference(mask.astype(float), (16, 24)), atol=2.5 / 255)
    assert np.all(up[:, :2] == 0) and np.all(up[:, -2:] == 1)
    bil = upsample_masks(mask[None].astype(np.float32), (16, 24)).numpy()[0]
    assert np.abs(up - bil).max() > 0.02  # LANCZOS rings (clipped to 0..255) where bilinear is linear
    np.testing.assert_array_equal(A.authors_upsample_mask(np.full((3, 3), 255, np.uint8), (9, 9)), 1.0)


def test_filter_map_and_argmax():
    d = np.arange(12, dtype=float).reshape(3, 4) / 11
    np.testing.assert_allclose(A.authors_filter_map(d, np.ones((3, 4), bool), 0.7), d)
    np.testing.assert_allclose(A.authors_filter_map(d, np.zeros((3, 4), bool), 0.7), 0.7 * d)
    maps = np.array([[[0.2, 0.5]], [[0.2, 0.9]]])
    np.testing.assert_array_equal(A.authors_argmax_labels(maps, [7, 3]), [[7, 3]])  # tie: the first label


# ---------------------------------------------------------------------------------------------- rows 5, 6, 9
def test_normalise_features_by_max_abs_per_token():
    f = np.array([[[2.0, -4.0], [0.5, 0.25]]])
    np.testing.assert_allclose(A.authors_normalise_features(f), [[[0.5, -1.0], [1.0, 0.5]]])


def test_kmeans_is_seeded_through_numpys_global_state():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(3, 20, 4)).astype(np.float32)
    from sklearn.cluster import KMeans

    np.random.seed(5)  # seed_everything, then KMeans without random_state (their match_gt_mask)
    theirs = KMeans(n_clusters=4, n_init=10).fit(f.reshape(-1, 4)).predict(f[0])
    np.testing.assert_array_equal(A.authors_kmeans_first_frame(f, 4, seed=5), theirs)


def test_knn_repredicts_frame_one():
    # 1-D tokens; the lone label 1 at 1.5 is outvoted by its 3 other nearest neighbours
    ref = np.array([[0.0], [1.0], [1.5], [2.0], [3.0]])
    lab = np.array([0, 0, 1, 0, 0])
    np.testing.assert_array_equal(A.authors_knn_predict(ref, lab, ref), [0, 0, 0, 0, 0])


def test_merge_clusters_majority_with_void_as_a_label():
    coarse = np.array([[0, 0, 1, 1], [2, 2, 3, 3]])
    gt = np.array([[5, 5, 255, 255], [7, 5, 9, 9]])
    gt_big = np.kron(gt, np.ones((2, 2), np.int64))  # NEAREST back to (2, 4) is exact
    got = A.merge_clusters_by_first_frame(coarse, gt_big)
    # cluster 0: {5, 5}; 1: {255, 255} -> void; 2: {7, 5} tie -> smallest 5; 3: {9, 9}
    assert got == {0: 5, 1: 255, 2: 5, 3: 9}
    assert got == assign_labels(coarse, gt_big, ignore_index=None)
    # clusters absent from frame 1 get no entry; merging is many-to-one
    assert A.merge_clusters_by_first_frame(np.zeros((2, 4), int), gt_big) == {0: 5}


# ---------------------------------------------------------------------------------------------- row 7
def test_batch_starts_shift_the_last_batch():
    def literal(n, b):  # sample()'s batch loop
        out = []
        for k in range(n // b + 1):
            s, e = k * b, min((k + 1) * b, n)
            if e == n:
                s = e - b
                if s < 0:
                    s = 0
            out.append((s, e))
        return out

    assert A.authors_batch_starts(10, 4) == [(0, 4), (4, 8), (6, 10)]
    assert A.authors_batch_starts(8, 4) == [(0, 4), (4, 8), (4, 8)]  # N % B == 0: run twice
    assert A.authors_batch_starts(3, 4) == [(0, 3)]
    for n in range(1, 30):
        for b in range(1, 9):
            got = A.authors_batch_starts(n, b)
            assert got == literal(n, b)
            assert got[-1] == (max(n - b, 0), n)  # the last batch covers the clip's last B frames
            assert set().union(*(range(s, e) for s, e in got)) == set(range(n))


# ---------------------------------------------------------------------------------------------- row 8
def _literal_cbr(coarse, feats):
    """A literal, per-point transcription of correct_low_res_mask + dense_feature_matching_iterative
    (float32, use_aux=True, top_k=1, spatial_filter threshold 1, anchor 'common'); starts on CPU."""
    n, h, w, c = feats.shape
    f = torch.from_numpy(feats.reshape(n, h * w, c)).float()
    hs, ws = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pts = [(int((y / h) * h), int((x / w) * w)) for y, x in zip(hs.flatten(), ws.flatten())]
    all_h, all_w = [[p[0] for p in pts]], [[p[1] for p in pts]]
    for q in range(n - 1):
        src = f[q].reshape(h, w, c)
        trg = f[q + 1] / torch.norm(f[q + 1], dim=1, keepdim=True)
        aux = f[0] / torch.norm(f[0], dim=1, keepdim=True)
        nh, nw = [], []
        for y, x in zip(all_h[-1], all_w[-1]):
            s = src[y, x] / torch.norm(src[y, x])
            cos = (trg @ s).numpy()
            cos_aux = (aux @ s).numpy()
            cos = q / (q + 1) * cos + 1 / (q + 1) * cos_aux
            top = np.argpartition(cos.ravel(), -1)[-1:]
            yy, xx = np.unravel_index(top, (h, w))
            nh.append(int(yy[-1]))
            nw.append(int(xx[-1]))
        all_h.append(nh)
        all_w.append(nw)
    th, tw = np.array(all_h), np.array(all_w)
    for p in range(th.shape[1]):
        for fr in range(1, n):
            if th[fr, p] - th[fr - 1, p] > 1 or tw[fr, p] - tw[fr - 1, p] > 1:
                th[:, p] = -1
                tw[:, p] = -1
                break
    keep = ~np.any(th == -1, axis=0)
    th, tw = th[:, keep], tw[:, keep]
    new = coarse.copy()
    for p in range(th.shape[1]):
        labs = [coarse[fr, th[fr, p], tw[fr, p]] for fr in range(n)]
        top = Counter(labs).most_common(1)[0][0]
        for fr in range(n):
            new[fr, th[fr, p], tw[fr, p]] = top
    return new


def test_track_starts_float32_truncation():
    for n in (7, 22, 25, 28, 41, 52):  # the literal CPU expression of dense_tracking
        lit = [int((i / n) * n) for i in torch.arange(n)]
        assert A.authors_track_starts(1, n, "cpu")[1].tolist() == lit
        cuda_lit = [
            int(torch.tensor(i, dtype=torch.float32) * (1 / torch.tensor(n, dtype=torch.float32)) * n)
            for i in range(n)
        ]
        assert A.authors_track_starts(1, n, "cuda")[1].tolist() == cuda_lit
    xs = A.authors_track_starts(1, 22, "cpu")[1]
    assert xs[13] == 12 and xs[12] == 12  # the bug: two tracks start at cell 12, none at 13
    ys, xs = A.authors_track_starts(2, 3, "cpu")
    assert ys.tolist() == [0, 0, 0, 1, 1, 1] and xs.tolist() == [0, 1, 2, 0, 1, 2]


def test_refine_static_scene_majority_along_the_whole_track():
    h, w, n = 2, 3, 4
    feats = np.broadcast_to(np.eye(h * w).reshape(1, h, w, h * w), (n, h, w, h * w)).astype(np.float32)
    coarse = np.zeros((n, h, w), np.int64)
    coarse[:, 0, 0] = [1, 2, 2, 1]  # tie 2-2: the label seen first (1)
    coarse[:, 0, 1] = [3, 4, 4, 4]  # 4 wins, written in frame 0 too
    coarse[:, 1, 2] = [5, 5, 6, 6]
    want = coarse.copy()
    want[:, 0, 0] = 1
    want[:, 0, 1] = 4
    want[:, 1, 2] = 5
    for fp16 in (False, True):
        np.testing.assert_array_equal(A.authors_refine(coarse, feats, fp16=fp16), want)
    np.testing.assert_array_equal(_literal_cbr(coarse, feats), want)


def test_refine_differs_from_the_papers_eq5():
    h, w, n = 1, 3, 3
    feats = np.broadcast_to(np.eye(3).reshape(1, h, w, 3), (n, h, w, 3)).astype(np.float32)
    coarse = np.zeros((n, h, w), np.int64)
    coarse[:, 0, 1] = [0, 0, 1]
    ours = refine(coarse, feats, radius2=1)
    theirs = A.authors_refine(coarse, feats)
    assert ours[2, 0, 1] == 1  # eq. 5: frame 3 votes only over frames 3..B
    assert theirs[2, 0, 1] == 0  # theirs: the track's majority, written in every frame


def test_tracks_global_argmax_frame0_mixing_and_signed_filter():
    # 1 x 8 grid, 4 frames. Frame 0 lives in its own subspace (cos with later frames is 0); frames 1..3
    # hold contents e_k that move 3 cells left per frame on a torus: frame f, cell x holds (x + 3f) % 8.
    w, n = 8, 4
    feats = np.zeros((n, 1, w, 16), np.float32)
    for x in range(w):
        feats[0, 0, x, 8 + x] = 1
        for fr in range(1, n):
            feats[fr, 0, x, (x + 3 * fr) % w] = 1
    ys, xs = A.authors_tracks(feats, fp16=False)
    x0 = np.arange(w)
    # frame 1: the first step matches frame 0 with itself (weight 0 on frame 1), no move;
    # then the global argmax follows the content 3 cells left (no search radius).
    np.testing.assert_array_equal(xs, np.stack([x0, x0, (x0 - 3) % w, (x0 - 6) % w]))
    assert np.all(ys == 0)
    keep = A.authors_filter_tracks(ys, xs)
    # moves of -3 are kept (signed filter); a torus wrap (+5) drops the track
    np.testing.assert_array_equal(np.nonzero(keep)[0], [6, 7])
    coarse = np.arange(n * w).reshape(n, 1, w) % 3
    np.testing.assert_array_equal(A.authors_refine(coarse, feats, fp16=False), _literal_cbr(coarse, feats))


def test_refine_matches_the_literal_loop_on_random_features():
    rng = np.random.default_rng(0)
    for n, h, w in ((3, 4, 5), (5, 3, 7), (2, 6, 6)):
        feats = rng.normal(size=(n, h, w, 8)).astype(np.float32)
        feats[1:] = feats[:1] + 0.3 * rng.normal(size=(n - 1, h, w, 8)).astype(np.float32)
        coarse = rng.integers(0, 3, (n, h, w))
        got = A.authors_refine(coarse, feats, fp16=False, device="cpu")
        np.testing.assert_array_equal(got, _literal_cbr(coarse, feats))


def test_coarse_batch_merges_clusters_then_knn_predicts_every_frame():
    rng = np.random.default_rng(0)
    h, w, b = 3, 4, 2
    left = np.zeros((h, w), bool)
    left[:, :2] = True
    a, c = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    feats = np.where(left.reshape(1, h * w, 1), a, c) + 0.01 * rng.normal(size=(b, h * w, 2))
    gt = np.where(left, 5, 9)
    gt[0, 1] = 9  # one cell of the left cluster disagrees: the cluster's majority (5) wins
    gt_big = np.kron(gt, np.ones((4, 4), np.int64))
    maps, labels, ref = A.authors_coarse_batch(feats, (h, w), n_clusters=2, seed=1, gt_first=gt_big)
    want = np.where(left, 5, 9)
    np.testing.assert_array_equal(maps, np.broadcast_to(want, (b, h, w)))
    assert labels.tolist() == [5, 9]
    assert ref[0].shape == (b * h * w, 2) and ref[1].tolist() == maps.reshape(-1).tolist()
    # a later batch: KNN fitted on the previous batch; the contents swapped sides
    maps2, _, _ = A.authors_coarse_batch(feats[:, ::-1].copy(), (h, w), n_clusters=2, ref=ref)
    np.testing.assert_array_equal(maps2, np.broadcast_to(want[::-1, ::-1], (b, h, w)))
    # without GT the cluster ids are kept (two ids, constant per side)
    maps3, labels3, _ = A.authors_coarse_batch(feats, (h, w), n_clusters=2, seed=1)
    assert len(labels3) == 2 and len(np.unique(maps3[:, left])) == 1 and len(np.unique(maps3[:, ~left])) == 1


def test_refine_start_bug_leaves_a_cell_without_track():
    # 1 x 22 grid on CPU semantics: 13 / 22 * 22 < 13 in float32, so no track starts at cell 13
    w, n = 22, 3
    feats = np.broadcast_to(np.eye(w).reshape(1, 1, w, w), (n, 1, w, w)).astype(np.float32)
    coarse = np.zeros((n, 1, w), np.int64)
    coarse[:, 0, 13] = [1, 1, 2]  # on no track: kept frame by frame
    coarse[:, 0, 14] = [1, 1, 2]  # on its own track: the majority 1 everywhere
    got = A.authors_refine(coarse, feats, fp16=False, device="cpu")
    assert got[:, 0, 13].tolist() == [1, 1, 2]
    assert got[:, 0, 14].tolist() == [1, 1, 1]
    np.testing.assert_array_equal(got, _literal_cbr(coarse, feats))
