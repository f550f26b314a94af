"""The authors' arithmetic (QianWangX/VidSeg_diffusion, ``sgm``), as pure functions (issue 15).

SPEC follows the paper's equations where the paper and the authors' code disagree, and that stays the
default. This module reproduces, function by function, what the authors' code computes instead, so that a
researcher comparing with Table 1 can reproduce their labels. It is a behaviour transcription, written from
reading their code (file and function names are cited); no code of theirs is copied. Behaviours that are
bugs (they contradict the paper or their own comments) are marked **bug**. Each row is wired into the
pipeline behind one :class:`~vidseg_nb.config.SegConfig` switch (all off by default, all on in the
``authors`` preset; the section "Wiring" at the end of this module holds the call-site helpers); the
"Wiring" notes say where each piece goes. The table and how to run each row: ``docs/authors.md``.

References are to the snapshot of their repository: ``scripts/sampling/sd_pipeline_vspw.py`` (``sample``,
``seed_everything``), ``scripts/sampling/svd_pipeline_vspw.py``, ``scripts/sampling/feature_extraction.py``
(``match_gt_mask``, ``correct_low_res_mask``, ``dense_tracking``, ``dense_feature_matching_iterative``,
``generate_aggregate_mask``, ``generate_binary_mask``), ``scripts/sampling/process_output.py``
(``compute_difference``, ``filter_difference_map``, ``get_seg_map_main``) and ``sgm/`` (``sampling.py``
``EDMSampler``, ``regularizers/__init__.py`` ``DiagonalGaussianRegularizer``, ``distributions.py``
``DiagonalGaussianDistribution``). Their pinned versions (``requirements/pt2.txt``): numpy 2.0.0, Pillow
10.3.0, opencv-python 4.10.0.82, scikit-learn 1.5.0, torch 2.0.1; K-Means and KNN results can depend on
the scikit-learn version, the JPEG bytes on Pillow's libjpeg.

Row 1 - VAE encoding samples the posterior
------------------------------------------
``DiffusionEngine.encode_first_stage`` -> ``AutoencoderKL.encode`` (``AutoencodingEngineLegacy.encode``)
-> ``DiagonalGaussianRegularizer(sample=True)`` (the default of ``AutoencoderKL``) ->
``DiagonalGaussianDistribution.sample``: ``z = mean + exp(0.5 * clamp(logvar, -30, 20)) * randn`` where
``randn = torch.randn(mean.shape)`` is drawn from torch's **global CPU generator** in float32 for the whole
batch at once (shape (B, 4, H/8, W/8), B frames of the batch, first-stage autocast disabled so float32),
then moved to the device; the result is multiplied by ``scale_factor = 0.18215``. The paper's encoder is
the posterior mean. The CPU generator was seeded by ``seed_everything(seed)`` at the start of the batch
(row 9), and this is its first draw. See :func:`authors_posterior_sample`.
*Wiring* (``SegConfig.vae_sample``): ``features.reference_run`` -> :func:`start_latents` ->
:func:`authors_encode`, with a CPU ``torch.Generator`` seeded with the batch seed, drawn before the
noising draw.

Row 2 - latent blending only after steps t_m and t_m + 1
--------------------------------------------------------
``EDMSampler.__call__`` loops over step indices ``i`` in ``range(num_sigmas - 1)[t_start : t_end + 1]``
(``t_start = t_m = 22`` with ``inversion_type="add_noise"``, 25 steps: i = 22, 23, 24; step i goes from
sigma_i to sigma_{i+1}). The +/- lambda modulation is applied at ``i in modulate_timestep`` (i = t_m). After
step i, when ``is_latent_blending`` (on by default in their ``__main__``) and ``latent_mask_start <= i <=
latent_mask_end``, it blends ``x = x * M + x_ref_i * (1 - M)`` with ``x_ref_i`` the unmodulated run's latent
saved after the same step i (``load_xt``, ``xt_time_{i}.pt``) and ``M`` the frame's binary mask at the
modulation grid, nearest-interpolated to the latent size (float64 then ``.float()``). SD
(``sd_pipeline_vspw.py``): ``latent_mask_start = min(modulate_timestep)``, ``latent_mask_end =
min(modulate_timestep) + 1``: blending after i = t_m and i = t_m + 1 only, **not** after the last step
(24). SVD (``svd_pipeline_vspw.py``): ``latent_mask_end = num_steps``: after every step from t_m on. See
:func:`authors_blend_steps`. *Wiring* (``SegConfig.blend_two_steps``): ``modulation.modulate``'s last
blend step from :func:`authors_last_blend_step` (t_m + 1; a backbone that denoises a batch jointly, SVD,
keeps the last step; its ``blend`` callback skips ``i > last_blend``).

Row 3 - the difference map
--------------------------
``sample_video`` decodes, ``clamp((x + 1) / 2, 0, 1) * 255`` then ``.astype(np.uint8)`` (truncation, not
rounding; :func:`authors_to_uint8`), converts RGB -> BGR, ``cv2.resize`` s to the original frame size and
writes a PNG (lossless). So D_l, the filter masks and the labels all live at the original frame size. The
resize changes pixels only when a side is not a multiple of 64 (VSPW's 853 x 480 frames are fed as
832 x 448, see :func:`authors_input_frame`, and come back to 853 x 480; with sides that are multiples of 64
it is a copy). It is reproduced with OpenCV itself (:func:`authors_resize_decoded`, the optional
``authors`` extra: ``opencv-python-headless==4.10.0.84``, the same OpenCV 4.10.0 as their pinned
opencv-python 4.10.0.82, whose wheel is built against numpy 1.x and does not import under numpy 2, which
they also pin), on the BGR array as theirs. Its limits: OpenCV's 8-bit INTER_LINEAR is fixed point (11-bit
coefficients) and its vertical pass rounds differently in the SIMD lanes (``VResizeLinearVec_32s8u``:
``((b0 (S0 >> 4)) >> 16 + (b1 (S1 >> 4)) >> 16 + 2) >> 2``) and in the scalar tail (``(b0 S0 + b1 S1 +
2^21) >> 22``), with the SIMD width chosen by CPU dispatch (and a HAL may replace it), so pixel equality
with their files holds for the same OpenCV build on the same CPU family (x86-64 with the same dispatched
SIMD width), not across every machine. ``compute_difference`` reads both PNGs
back with Pillow (RGB uint8) and computes ``sqrt(sum_c (I+ - I-)^2)`` **in uint8**: the subtraction and the
square wrap modulo 256 (**bug**), the channel sum is promoted by numpy to uint64 (no wrap), then a square
root (the paper has none), ``cv2.GaussianBlur(d, (5, 5), 3)`` on float64 (sigmaY = sigmaX = 3, border
BORDER_REFLECT_101; :func:`cv2_gaussian_blur`). That map (values 0 .. sqrt(765) ~ 27.7, *not* the
max-normalised one, which only goes to the unused ``vis_map`` folder) is saved with
``Image.fromarray(d).convert("L")`` (float64 -> Pillow mode F (float32) -> L: truncation and clipping to
0..255, Pillow's ``Convert.c`` ``f2l``; so only 28 grey levels survive, **bug**) as a JPEG with Pillow's
defaults (quality 75; a grey image has no chroma subsampling). ``get_seg_map_main`` reads the JPEG back
(uint8) and normalises ``d / (max(d) + 1e-5)``. See :func:`authors_difference_map`.
*Wiring* (``SegConfig.uint8_diff``): in ``modulation.modulate`` where D_l is computed from I+ and I-,
:func:`authors_diff_maps` (:func:`authors_unit_to_uint8` on the decoded images, then
:func:`authors_difference_map`). ``SegConfig.resize_decoded`` (needs OpenCV, checked when the segmenter or a
run starts: :func:`require_cv2`) adds the resize (without ``uint8_diff``: the paper's float D_l of the
truncated, resized 8-bit images, the resize's effect alone): the pipeline passes the clip's
input frame size (``iter_batches(..., original_size=...)``, ``stream``, ``segment``) to ``modulate``
(``out_size``), where :func:`authors_decoded_images` resizes the truncated images before
:func:`authors_difference_map`; so D_l, the LANCZOS masks of row 4 and the argmax are at the input size, and
no label resize follows. The D_l cache key then holds the input size (``cache.diff_key``); a new s
re-filters the cached maps at that size.

Row 4 - the filter mask upsampled with LANCZOS
----------------------------------------------
``filter_difference_map``: ``np.array(mask_image.resize((W, H), Image.LANCZOS)) / 255.0`` with
``mask_image`` the frame's binary mask PNG (mode L, 0/255) at the feature grid, ``(W, H)`` the difference
map's size; then ``D~ = D * m + s * D * (1 - m)`` with ``s = 0.7``. ``get_seg_map_main`` then takes
``argmax`` over the labels in the order of ``unique_labels`` (ties: the first). Both the unfiltered
(``segmentation_map_raw``) and the filtered (``segmentation_map_raw_f_0.7``) label maps are written; which
one their evaluation scores **cannot be determined** from the repository (no evaluation script); the paper
uses the filtered one. (In ``get_seg_map_main`` the test ``if "kmeans" or ...`` is always true, **bug**, so
the masks are always read from the ``kmeans_time_{t}_frame_{name}`` folders.) See
:func:`authors_upsample_mask`, :func:`authors_filter_map`, :func:`authors_argmax_labels`.
*Wiring* (``SegConfig.lanczos_filter``): ``modulation.filter_maps(..., lanczos=True)``
(:func:`authors_filter_masks`); the argmax rule is the same as ``modulation.argmax_labels``.

Row 5 - frame 1's coarse map re-predicted by the KNN
----------------------------------------------------
``match_gt_mask`` (batch 0): features (the conditional half of block 7's ``attn1`` q, ``[F:]`` of the
stored (2F, hw, C) tensor, fp16 as stored under autocast) are divided per token by their max absolute
value over channels; ``KMeans(n_clusters=num_masks, n_init=10)`` is fitted on all tokens of the batch and
predicts frame 0 only; its clusters are relabelled by the first-frame ground truth (row 6) into
``ref_mask``; then ``KNeighborsClassifier(n_neighbors=4)`` is fitted on frame 0's tokens with ``ref_mask``
and **predicts every frame of the batch, frame 0 included**, which is the coarse map of all frames. For
every later batch the KNN is fitted on *all* tokens of the previous batch, with the previous batch's
(CBR-refined when ``is_refine_mask``) labels, and predicts the current batch. The label set
``ref_unique_labels`` (one binary mask per label, empty masks for labels absent in a frame) is fixed by
batch 0. (``is_aggre_attn``, off by default, averages blocks 6-8 instead of block 7; CBR always uses
block 7.) sklearn receives the fp16 arrays (``KMeans`` converts them to float64). See
:func:`authors_coarse_batch`, :func:`authors_normalise_features`, :func:`authors_kmeans_first_frame`,
:func:`authors_knn_predict`. *Wiring* (``SegConfig.knn_first_frame``): ``pipeline`` stage 1 calls
:func:`authors_coarse_batch`, carrying its ``ref`` from batch to batch (with the refined maps).

Row 6 - first-frame ground truth merges clusters before KNN, CBR and modulation
-------------------------------------------------------------------------------
``match_gt_mask`` with ``gt_mask_path`` (batch 0 only): the GT PNG is resized to the feature grid with
``Image.NEAREST``; each K-Means cluster present in frame 0 takes the most frequent GT value among its cells
(``np.unique`` + ``argmax``: ties go to the smallest value), void (255) and "others" (0) counting as
ordinary labels; clusters with the same majority merge. Without GT the clusters keep their ids. This is
:func:`vidseg_nb.metrics.assign_labels` with ``ignore_index=None`` on a Pillow-NEAREST-resized GT; see
:func:`merge_clusters_by_first_frame`. *Wiring* (``SegConfig.gt_merge``): ``VideoSegmenter.segment(...,
first_frame_gt=...)``: inside :func:`authors_coarse_batch` with row 5, else :func:`merge_first_batch`
right after stage 1 of the first batch; ``evaluate --protocol authors`` passes the GT in and scores the
labels as they are (they already are GT classes).

Row 7 - the shifted last batch
------------------------------
``sample``: ``num_batches = N // B + 1``; batch k covers ``[k B, min((k + 1) B, N))`` except that a batch
ending at N is shifted to start at ``max(N - B, 0)``. So the last batch overlaps the previous one, and when
``N % B == 0`` the batch ``[N - B, N)`` runs twice (the second time as a later batch: its KNN is fitted on
the first run's output). Outputs are files named by frame, so an overlapping frame keeps the **last**
batch's labels. With ``N < B`` there is a single short batch ``[0, N)``, on which their per-batch loops
over ``range(num_frames)`` fail (their code assumes ``N >= B``). See :func:`authors_batch_starts`.
*Wiring* (``SegConfig.shifted_last_batch``): ``pipeline``'s batch loop runs :func:`batch_plan`, later
batches overwriting earlier ones.

Row 8 - CBR
-----------
See :func:`authors_refine`. *Wiring* (``SegConfig.authors_cbr``): ``pipeline`` stage 2.

Row 9 - seeding
---------------
``seed_everything(seed)`` (``torch.manual_seed``, ``torch.cuda.manual_seed``, ``np.random.seed``;
``--seed`` defaults to 1) is called at the start of **every** batch, so every batch draws the same random
numbers: the posterior sample (row 1: ``distributions.py`` ``DiagonalGaussianDistribution.sample``,
``torch.randn(self.mean.shape).to(device)``, the **CPU** global generator, shape (B, 4, h, w), one draw for
the batch: ``en_and_decode_n_samples_a_time`` is unset in ``configs/inference/sd_2_1.yaml``) and then the
noising ``EDMSampler.add_noise`` (``sampling.py``: ``eps = torch.randn_like(x) * sigma``, with ``x`` the
latents of frames moved ``.to(device)``, ``device="cuda"``): the **CUDA** default generator, seeded by the
same ``seed_everything`` (``torch.manual_seed`` seeds every CUDA device too), float32 (first-stage autocast
disabled), same shape, and its first draw (nothing before it draws on the GPU: the VAE and text encoder
have no active dropout, ``get_unconditional_conditioning`` zeroes ``ucg_rate``). The sampler starts from
``z + sigma_{t_m} * randn_like(z)`` (the ``sqrt(1 + sigma_0^2)`` factors of ``prepare_sampling_loop`` and
``add_noise`` cancel). The sampler itself draws nothing (``EulerEDMSampler`` with ``s_churn: 0`` in
``sd_2_1.yaml``, so ``gamma = 0`` and ``sampler_step`` skips its ``randn_like``). Their SVD pipeline
(``svd_pipeline_vspw.py``) draws ``cond_aug * torch.randn_like(image)`` (1, 3, H, W) on the GPU before
``add_noise``, so there the noise is the CUDA generator's second draw. See :func:`authors_noise`. Frame k of every batch therefore gets the same noise, and the noise of a frame
depends on its position in the batch (and on B). ``KMeans`` has no ``random_state`` and so uses numpy's global
``RandomState``, which ``seed_everything`` has just seeded; nothing in between draws from it, so their
K-Means is in fact seeded by ``seed`` (:func:`authors_kmeans_first_frame` makes this explicit).
*Wiring* (``SegConfig.batch_noise``): :func:`start_latents` -> :func:`authors_noise`: with the backbone on
CUDA, eps is drawn there from a CUDA generator seeded with ``seed`` per batch: their values for the same
PyTorch CUDA kernel (theirs: torch 2.0.1) and launch grid (``calc_execution_policy`` of
``DistributionTemplates.h`` launches min(ceil(n / 256), SMs x threads per SM / 256) blocks, so when n = B x
4 x h x w is above that cap the values depend on the GPU's SM count: VSPW's 14 x 4 x 56 x 104 differs
between an H200, 132 SMs, and an A100, 108; their GPU is not stated); on another device (CPU, MPS)
it is the next draw of the batch's CPU generator after the posterior sample, the same structure with other
values. The posterior sample stays a CPU draw everywhere, as theirs. With an SVD backbone on CUDA their
``cond_aug`` draw is drawn and dropped first (vidseg_nb's SVD conditioning noise is its own).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import ConfigError
from .metrics import assign_labels

__all__ = [
    "JPEG_QUALITY",
    "FILTER_S",
    "KNN_NEIGHBOURS",
    "UNMERGED",
    "authors_argmax_labels",
    "authors_batch_starts",
    "AUTHORS_INSTALL",
    "authors_decoded_images",
    "authors_diff_maps",
    "authors_noise",
    "authors_resize_decoded",
    "require_cv2",
    "authors_encode",
    "authors_filter_masks",
    "authors_last_blend_step",
    "authors_unit_to_uint8",
    "batch_plan",
    "choose_diff",
    "choose_start",
    "DiffChoice",
    "merge_first_batch",
    "plan_overlaps",
    "start_latents",
    "authors_blend_steps",
    "authors_coarse_batch",
    "authors_difference_map",
    "authors_filter_map",
    "authors_filter_tracks",
    "authors_input_frame",
    "authors_kmeans_first_frame",
    "authors_knn_predict",
    "authors_normalise_features",
    "authors_posterior_sample",
    "authors_raw_difference",
    "authors_refine",
    "authors_to_uint8",
    "authors_track_majority",
    "authors_track_starts",
    "authors_tracks",
    "authors_upsample_mask",
    "cv2_gaussian_blur",
    "cv2_gaussian_kernel",
    "jpeg_roundtrip_l",
    "merge_clusters_by_first_frame",
]

JPEG_QUALITY = 75  # Pillow's default, used by their ``difference_image.save(... .jpg)``
FILTER_S = 0.7  # ``get_seg_map_main(..., filter_difference=True, filter_s=0.7)``
KNN_NEIGHBOURS = 4  # ``KNeighborsClassifier(n_neighbors=4)`` in ``match_gt_mask``
VAE_SCALE = 0.18215


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# --------------------------------------------------------------------------------------------------
# Rows 1, 2, 7, 9: encoding, blending steps, batches
# --------------------------------------------------------------------------------------------------
def authors_posterior_sample(
    mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Row 1: ``z = 0.18215 * (mean + exp(0.5 * clamp(logvar, -30, 20)) * randn)``.

    ``randn`` has ``mean``'s shape, float32, drawn on the CPU (``generator`` or torch's global CPU
    generator, as ``DiagonalGaussianDistribution.sample``) and moved to ``mean``'s device.
    """
    std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
    eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device)
    return VAE_SCALE * (mean + std * eps)


def authors_blend_steps(t_m: int, n_steps: int, backbone: str = "sd") -> list[int]:
    """Row 2: the step indices i after which their sampler blends latents.

    Steps run i = t_m .. n_steps - 1 (step i: sigma_i -> sigma_{i+1}). SD: ``latent_mask_end = t_m + 1``
    (i in {t_m, t_m + 1}); SVD: ``latent_mask_end = num_steps`` (every step from t_m).
    """
    if backbone not in ("sd", "svd"):
        raise ValueError(f"backbone must be 'sd' or 'svd', got {backbone!r}")
    end = t_m + 1 if backbone == "sd" else n_steps
    return [i for i in range(t_m, n_steps) if t_m <= i <= end]


def authors_batch_starts(n_frames: int, batch_size: int) -> list[tuple[int, int]]:
    """Row 7: the ``(start, end)`` frame ranges (end exclusive) of their batches, in run order.

    ``N // B + 1`` batches ``[k B, min((k + 1) B, N))``; one that ends at N starts at ``max(N - B, 0)``.
    The last batch thus covers the clip's last B frames (overlapping the previous one), and with
    ``N % B == 0`` ``(N - B, N)`` appears twice. With ``N < B``: ``[(0, N)]`` (where their code fails).
    """
    if n_frames < 1 or batch_size < 1:
        raise ValueError(f"need n_frames >= 1 and batch_size >= 1, got {n_frames}, {batch_size}")
    out = []
    for k in range(n_frames // batch_size + 1):
        start, end = k * batch_size, min((k + 1) * batch_size, n_frames)
        if end == n_frames:
            start = max(end - batch_size, 0)
        out.append((start, end))
    return out


# --------------------------------------------------------------------------------------------------
# Row 3: the difference map
# --------------------------------------------------------------------------------------------------
def authors_input_frame(img: Image.Image) -> Image.Image:
    """How ``sample`` prepares an input frame: RGBA -> RGB, then, if a side is not a multiple of 64, a
    Pillow ``resize`` (default filter, BICUBIC in Pillow >= 7) to the sizes rounded down to 64 (a resize,
    not a crop). The tensor is then ``2 * ToTensor()(img) - 1``."""
    if img.mode == "RGBA":
        img = img.convert("RGB")
    w, h = img.size
    if h % 64 or w % 64:
        img = img.resize((w - w % 64, h - h % 64))
    return img


def authors_to_uint8(x: Any) -> np.ndarray:
    """Decoded images (N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8 as ``sample_video``:
    ``(clamp((x + 1) / 2, 0, 1) * 255).astype(uint8)`` in float32, i.e. **truncation** (255 only for 1.0).
    """
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    t = torch.clamp((t.float() + 1.0) / 2.0, min=0.0, max=1.0)
    return (t.permute(0, 2, 3, 1) * 255).cpu().numpy().astype(np.uint8)


def authors_raw_difference(plus_u8: np.ndarray, minus_u8: np.ndarray) -> np.ndarray:
    """``sqrt(sum_c (I+ - I-)^2)`` on uint8 (H, W, 3) images as ``compute_difference``: float64 (H, W).

    **Bug**: the subtraction and the square are uint8 and wrap modulo 256 (per channel the result is
    ``(a - b)^2 mod 256``); the channel sum is numpy's uint64 (no wrap); the square root is not in the paper.
    """
    a, b = np.asarray(plus_u8), np.asarray(minus_u8)
    if a.dtype != np.uint8 or b.dtype != np.uint8 or a.shape != b.shape or a.ndim != 3:
        raise ValueError(
            f"need two uint8 (H, W, C) images of one shape, got {a.dtype}{a.shape}, {b.dtype}{b.shape}"
        )
    sq = (a - b) ** 2  # uint8, wraps
    return np.sqrt(np.sum(sq, axis=2, dtype=np.uint64)).astype(np.float64)


def cv2_gaussian_kernel(ksize: int = 5, sigma: float = 3.0) -> np.ndarray:
    """``cv2.getGaussianKernel(ksize, sigma, CV_64F)`` for sigma > 0: ``exp(-x^2 / (2 sigma^2))``,
    ``x = i - (ksize - 1) / 2``, divided by its sum (float64)."""
    if ksize < 1 or ksize % 2 == 0 or sigma <= 0:
        raise ValueError(f"need an odd ksize >= 1 and sigma > 0, got {ksize}, {sigma}")
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) * 0.5
    t = np.exp((-0.5 / (sigma * sigma)) * x * x)
    return t * (1.0 / t.sum())


def _reflect101_index(n: int, pad: int) -> np.ndarray:
    """Source index of each padded position for BORDER_REFLECT_101 (``gfedcb|abcdefgh|gfedcba``)."""
    idx = np.arange(-pad, n + pad)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * n - 2
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


def cv2_gaussian_blur(x: np.ndarray, ksize: int = 5, sigma: float = 3.0) -> np.ndarray:
    """``cv2.GaussianBlur(x, (ksize, ksize), sigma)`` on a float64 (H, W) map: separable, rows then
    columns, border BORDER_REFLECT_101 (OpenCV's default). Equal to OpenCV up to float64 rounding (which the
    later float32 cast and uint8 truncation absorb)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {x.shape}")
    k = cv2_gaussian_kernel(ksize, sigma)
    p = ksize // 2
    h, w = x.shape
    xp = x[:, _reflect101_index(w, p)]
    rows = sum(k[i] * xp[:, i : i + w] for i in range(ksize))
    rp = rows[_reflect101_index(h, p), :]
    return sum(k[i] * rp[i : i + h, :] for i in range(ksize))


def jpeg_roundtrip_l(x: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """``Image.fromarray(x).convert("L")`` saved as JPEG (Pillow, ``quality``) and read back: uint8 (H, W).

    A float map becomes Pillow mode F (float32) and then L by truncation, clipped to 0..255.
    """
    img = Image.fromarray(np.asarray(x)).convert("L")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as back:
        return np.array(back)


def authors_difference_map(
    plus_u8: np.ndarray,
    minus_u8: np.ndarray,
    *,
    ksize: int = 5,
    sigma: float = 3.0,
    jpeg: bool = True,
    quality: int = JPEG_QUALITY,
) -> np.ndarray:
    """Row 3: their D_l for one (I+, I-) pair of uint8 (H, W, 3) images, as ``get_seg_map_main`` reads it.

    :func:`authors_raw_difference` (uint8 wrap, **bug**; square root), :func:`cv2_gaussian_blur` (5, 3),
    8-bit grey with truncation (values 0..27 only, **bug**), JPEG at ``quality`` and back (``jpeg=False``:
    skip only the JPEG), then ``d / (max(d) + 1e-5)``. float64 (H, W) in [0, 1).
    """
    d = cv2_gaussian_blur(authors_raw_difference(plus_u8, minus_u8), ksize, sigma)
    if jpeg:
        d8 = jpeg_roundtrip_l(d, quality)
    else:
        d8 = np.array(Image.fromarray(d).convert("L"))
    return d8 / (np.max(d8) + 1e-5)


# --------------------------------------------------------------------------------------------------
# Row 4: the LANCZOS filter mask
# --------------------------------------------------------------------------------------------------
def authors_upsample_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Row 4: a binary mask (h, w) at the feature grid -> (H, W) float64, as ``filter_difference_map``.

    The mask is the 0/255 uint8 PNG of ``generate_binary_mask`` (bool or 0/1 input is scaled to 0/255),
    resized by Pillow's LANCZOS to ``size = (H, W)`` (8-bit result, so ringing is clipped to 0..255) and
    divided by 255.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a mask (h, w), got shape {m.shape}")
    if m.dtype == np.bool_ or (m.size and m.max() <= 1):
        m = m.astype(np.uint8) * 255
    img = Image.fromarray(m.astype(np.uint8))
    h, w = int(size[0]), int(size[1])
    return np.array(img.resize((w, h), Image.LANCZOS)) / 255.0


def authors_filter_map(diff: np.ndarray, mask: np.ndarray, s: float = FILTER_S) -> np.ndarray:
    """``D~ = D * m + s * D * (1 - m)``, ``m = authors_upsample_mask(mask, D.shape)`` (float64)."""
    diff = np.asarray(diff, dtype=np.float64)
    m = authors_upsample_mask(mask, diff.shape)
    return diff * m + s * diff * (1 - m)


def authors_argmax_labels(maps: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """``labels[argmax_l maps[l]]`` over (L, H, W) maps in label order (ties: the first), int64.

    In their code every label of ``ref_unique_labels`` is run on every frame of the batch; a label absent
    from a frame has an empty mask there, so its +/- runs equal the reference run and its map is 0. After
    the 8-bit truncation of row 3 zeros are common, and a pixel where all maps are 0 gets the first label.
    """
    return np.asarray(labels, dtype=np.int64)[np.argmax(np.asarray(maps), axis=0)]


# --------------------------------------------------------------------------------------------------
# Rows 5, 6, 9: K-Means, GT merge, KNN
# --------------------------------------------------------------------------------------------------
def authors_normalise_features(features: Any) -> np.ndarray:
    """``f / max_c |f|`` per token when C > 1 (``match_gt_mask``); (..., C) numpy, dtype kept."""
    f = _np(features)
    if f.shape[-1] > 1:
        f = f / np.max(np.abs(f), axis=-1, keepdims=True)
    return f


def authors_kmeans_first_frame(features: Any, n_clusters: int, seed: int = 1) -> np.ndarray:
    """Rows 6, 9: ``KMeans(n_clusters, n_init=10)`` fitted on all tokens of the batch, predicting frame 0.

    ``features`` (B, hw, C), already :func:`authors_normalise_features`-ed. Their ``KMeans`` has no
    ``random_state`` and draws from numpy's global ``RandomState`` just seeded by ``seed_everything``; a
    ``RandomState(seed)`` here is the same stream without touching the global one. Returns (hw,) int ids.
    """
    from sklearn.cluster import KMeans

    f = _np(features)
    if f.ndim != 3:
        raise ValueError(f"features must be (B, hw, C), got shape {f.shape}")
    km = KMeans(n_clusters=n_clusters, n_init=10, random_state=np.random.RandomState(seed))
    km.fit(f.reshape(-1, f.shape[-1]))
    return km.predict(f[0])


def merge_clusters_by_first_frame(coarse_first: np.ndarray, gt_first: np.ndarray) -> dict[int, int]:
    """Row 6: cluster id -> GT label by majority on frame 1, as ``match_gt_mask`` does it.

    ``coarse_first`` (h, w) are the K-Means ids of frame 0 on the feature grid; ``gt_first`` (H, W) the GT
    label map, resized to (h, w) with Pillow ``Image.NEAREST`` as they do. Every cluster present takes the
    most frequent GT value of its cells, ties to the smallest; void (255) and 0 count as labels (no ignore
    index), so a cluster can map to 255. This is :func:`vidseg_nb.metrics.assign_labels` with
    ``ignore_index=None``, applied to the Pillow-resized GT (Pillow's float NEAREST can land one pixel off
    ``resize_nearest``'s exact rule).
    """
    coarse = np.asarray(coarse_first)
    gt = np.asarray(gt_first)
    if coarse.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"need (h, w) and (H, W) maps, got {coarse.shape}, {gt.shape}")
    h, w = coarse.shape
    if gt.min() >= 0 and gt.max() <= 255:
        img = Image.fromarray(gt.astype(np.uint8))
    else:
        img = Image.fromarray(gt.astype(np.int32))
    small = np.array(img.resize((w, h), Image.NEAREST)).astype(np.int64)
    return assign_labels(coarse, small, ignore_index=None)


def authors_knn_predict(
    ref_features: Any, ref_labels: Any, features: Any, n_neighbors: int = KNN_NEIGHBOURS
) -> np.ndarray:
    """Row 5: ``KNeighborsClassifier(n_neighbors=4)`` fitted on (ref_features (n, C), ref_labels (n,)),
    predicting ``features`` (m, C). Batch 0: ref = frame 0's tokens and merged labels, features = every
    token of the batch (frame 0 is re-predicted); later batches: ref = the previous batch's tokens and
    (refined) labels."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=n_neighbors)
    knn.fit(_np(ref_features), _np(ref_labels))
    return knn.predict(_np(features))


def authors_coarse_batch(
    features: Any,
    grid: tuple[int, int],
    *,
    n_clusters: int,
    seed: int = 1,
    gt_first: np.ndarray | None = None,
    ref: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Rows 5, 6: their coarse maps of one batch (``match_gt_mask``, ``use_gt_mask=False``).

    ``features`` (B, hw, C) raw block-7 tokens (conditional half), ``grid = (h, w)``. Batch 0 (``ref``
    None): normalise, K-Means on all tokens predicting frame 0, clusters merged by ``gt_first`` (or kept
    without GT), KNN fitted on frame 0 predicting every frame. A later batch: KNN fitted on ``ref =
    (tokens (n, C), labels (n,))`` of the previous batch. Returns the coarse maps (B, h, w) int64, the
    batch's label set ``np.unique`` (batch 0's is their ``ref_unique_labels``) and the next ``ref`` (this
    batch's tokens and maps; replace the labels by the CBR output when CBR is on, as they do).
    """
    f = authors_normalise_features(features)
    if f.ndim != 3:
        raise ValueError(f"features must be (B, hw, C), got shape {f.shape}")
    b, hw, c = f.shape
    h, w = int(grid[0]), int(grid[1])
    if h * w != hw:
        raise ValueError(f"grid {grid} does not match {hw} tokens per frame")
    if ref is None:
        clusters = authors_kmeans_first_frame(f, n_clusters, seed)
        if gt_first is not None:
            mapping = merge_clusters_by_first_frame(clusters.reshape(h, w), gt_first)
            first = np.array([mapping[int(k)] for k in clusters], dtype=np.int64)
        else:
            first = clusters.astype(np.int64)
        ref = (f[0], first)
    tokens = f.reshape(-1, c)
    maps = np.asarray(authors_knn_predict(ref[0], ref[1], tokens)).astype(np.int64).reshape(b, h, w)
    return maps, np.unique(ref[1]), (tokens, maps.reshape(-1))


# --------------------------------------------------------------------------------------------------
# Row 8: CBR
# --------------------------------------------------------------------------------------------------
def authors_track_starts(h: int, w: int, device: str = "cuda") -> tuple[np.ndarray, np.ndarray]:
    """Start cells of their tracks, (h*w,) rows and columns in row-major order.

    ``dense_tracking`` divides each index by the grid size and ``dense_feature_matching_iterative``
    multiplies back and truncates with ``int``, in float32 (**bug**: for some sizes ``i / n * n`` falls
    just below ``i`` and the track starts one cell lower, so two tracks share a cell and one cell has
    none). On CUDA the division by a Python scalar is a multiplication by the float32 reciprocal (their
    ``device="cuda"``); ``device="cpu"`` is a true division.
    """
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")

    def conv(n: int) -> np.ndarray:
        i = np.arange(n, dtype=np.float32)
        if device == "cuda":
            frac = i * (np.float32(1.0) / np.float32(n))
        else:
            frac = i / np.float32(n)
        return (frac.astype(np.float32) * np.float32(n)).astype(np.float32).astype(np.int64)

    ys, xs = conv(h), conv(w)
    return np.repeat(ys, w), np.tile(xs, h)


def _cosines(src: torch.Tensor, trg: torch.Tensor, fp16: bool) -> np.ndarray:
    """Cosine similarities (P, C) x (n, C) -> (P, n) numpy, float32 or as under CUDA autocast (fp16)."""
    a = src / torch.linalg.vector_norm(src, dim=1, keepdim=True)
    b = trg / torch.linalg.vector_norm(trg, dim=1, keepdim=True)
    if fp16:  # autocast: normalised features cast to fp16, fp32 accumulation, fp16 result
        a, b = a.half().double(), b.half().double()
        return (a @ b.T).half().numpy()
    return (a @ b.T).numpy()


def authors_tracks(
    features: Any, *, fp16: bool = True, device: str = "cuda"
) -> tuple[np.ndarray, np.ndarray]:
    """Their dense tracks (``dense_feature_matching_iterative``, ``use_aux=True``, top-1): (B, h*w) rows
    and columns of every track in every frame of the batch.

    ``features`` (B, h, w, C): block 7's self-attention q, conditional half. From the start cells
    (:func:`authors_track_starts`), for frame q = 0 .. B-2 the track at p in frame q moves to the **global**
    argmax (``np.argpartition(-1)``, over the whole grid, no search radius) of
    ``q / (q + 1) * cos(F^q[p], F^{q+1}) + 1 / (q + 1) * cos(F^q[p], F^0)``: the similarity is mixed with
    frame 0 (**bug** at q = 0, where the weight of frame 1 is 0, so the first step matches frame 0 to
    itself and the track does not move). ``fp16=True`` emulates their autocast (fp16 similarities, their
    mixing in numpy fp16); cuBLAS's accumulation may flip a last fp16 bit, which can change ties.
    """
    f = features if isinstance(features, torch.Tensor) else torch.from_numpy(np.asarray(features))
    if f.ndim != 4:
        raise ValueError(f"features must be (B, h, w, C), got shape {tuple(f.shape)}")
    b, h, w, c = f.shape
    f = f.detach().cpu().float().reshape(b, h * w, c)
    ys, xs = authors_track_starts(h, w, device)
    all_y, all_x = [ys], [xs]
    for q in range(b - 1):
        src = f[q][torch.from_numpy(ys * w + xs)]
        cos = _cosines(src, f[q + 1], fp16)
        aux = _cosines(src, f[0], fp16)
        mixed = q / (q + 1) * cos + 1 / (q + 1) * aux
        best = np.argpartition(mixed, -1, axis=1)[:, -1]
        ys, xs = best // w, best % w
        all_y.append(ys)
        all_x.append(xs)
    return np.stack(all_y), np.stack(all_x)


def authors_filter_tracks(ys: np.ndarray, xs: np.ndarray, threshold: int = 1) -> np.ndarray:
    """Their ``spatial_filter`` in ``correct_low_res_mask``: (P,) bool, True for the tracks kept.

    A track is dropped when, between two consecutive frames, ``dy > threshold`` or ``dx > threshold``.
    **Bug**: the displacement is signed, so moves up or left of any length are kept.
    """
    ys, xs = np.asarray(ys), np.asarray(xs)
    if ys.shape[0] < 2:
        return np.ones(ys.shape[1], dtype=bool)
    bad = (np.diff(ys, axis=0) > threshold) | (np.diff(xs, axis=0) > threshold)
    return ~bad.any(axis=0)


def authors_track_majority(coarse: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The ``anchor_label_method="common"`` write of ``correct_low_res_mask``: (B, h, w) int64.

    For each track in order, the most common coarse label along it (``Counter.most_common``: ties to the
    label seen first, in frame order) is written at the track's cell in **every** frame (frame 0
    included); a later track overwrites an earlier one on a shared cell; cells on no track keep their
    coarse label. Labels are read from the unrefined maps.
    """
    coarse = np.asarray(coarse).astype(np.int64)
    n, h, w = coarse.shape
    ys, xs = np.asarray(ys), np.asarray(xs)
    out = coarse.copy()
    n_tracks = ys.shape[1]
    if n_tracks == 0:
        return out
    lab = coarse[np.arange(n)[:, None], ys, xs].T  # (P, B)
    same = lab[:, :, None] == lab[:, None, :]
    counts = same.sum(axis=2)  # count of lab[p, f] along track p
    first_best = np.argmax(counts, axis=1)  # first frame holding a most-common label
    major = lab[np.arange(n_tracks), first_best]
    order = np.arange(n_tracks)
    for fr in range(n):
        flat = ys[fr] * w + xs[fr]
        last = np.full(h * w, -1, dtype=np.int64)
        np.maximum.at(last, flat, order)  # the last track writing each cell wins
        hit = last >= 0
        out[fr].reshape(-1)[hit] = major[last[hit]]
    return out


def authors_refine(
    coarse: np.ndarray,
    features: Any,
    *,
    spatial_filter: bool = True,
    threshold: int = 1,
    fp16: bool = True,
    device: str = "cuda",
) -> np.ndarray:
    """Row 8: their CBR (``correct_low_res_mask`` with its defaults), in place of the paper's eqs. 3-5.

    ``coarse`` (B, h, w) are the coarse maps M^j (their ``generate_aggregate_mask`` argmax of the binary
    masks, which equals the KNN maps), ``features`` (B, h, w, C) the correspondence features. Steps:
    :func:`authors_tracks` (global argmax, similarity mixed with frame 0), :func:`authors_filter_tracks`
    (signed displacement filter, threshold 1), :func:`authors_track_majority` (majority written along the
    whole track). Differences from :func:`vidseg_nb.refine.refine`: no search radius, the frame-0 term,
    tracks dropped instead of constrained, and the vote of frame j counts the earlier frames too.
    The refined maps are also the KNN labels for the next batch. Returns (B, h, w) int64.
    """
    coarse = np.asarray(coarse)
    if coarse.ndim != 3:
        raise ValueError(f"coarse must be (B, h, w), got shape {coarse.shape}")
    fshape = tuple(features.shape)
    if len(fshape) != 4 or fshape[:3] != coarse.shape:
        raise ValueError(f"features must be (B, h, w, C) with (B, h, w) = {coarse.shape}, got {fshape}")
    ys, xs = authors_tracks(features, fp16=fp16, device=device)
    if spatial_filter:
        keep = authors_filter_tracks(ys, xs, threshold)
        ys, xs = ys[:, keep], xs[:, keep]
    return authors_track_majority(coarse, ys, xs)


# --------------------------------------------------------------------------------------------------
# Wiring (issue 15): the helpers the pipeline's call sites dispatch to, one SegConfig switch per row
# --------------------------------------------------------------------------------------------------
UNMERGED = 255
"""Row 6 with the paper's stage 1: the label of a cluster absent from frame 1 (no GT majority), void."""


def start_latents(backbone: Any, frames: np.ndarray, config: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows 1 and 9: (z0, eps) of one batch of ``frames`` for :func:`vidseg_nb.features.reference_run`.

    One CPU generator seeded with ``config.seed`` per batch (their ``seed_everything`` at every batch):
    with ``vae_sample`` z0 is the posterior sample (:func:`authors_encode`, its first draw), else the
    posterior mean (``backbone.encode``); with ``batch_noise`` eps (N, 4, h8, w8) is the generator's next
    draw, for the whole batch at once (so frame k of every batch gets the same noise), else None: the
    caller draws each frame's own seeded noise (``features.frame_noise``, the paper's setting).
    """
    gen = torch.Generator().manual_seed(int(config.seed))
    z0 = authors_encode(backbone, frames, gen) if config.vae_sample else backbone.encode(frames)
    if not config.batch_noise:
        return z0, None
    joint = backbone.frames_per_group(len(frames)) > 1
    eps = authors_noise(tuple(z0.shape), int(config.seed), backbone.device, cpu_generator=gen,
                        condition_shape=(1, 3, *np.asarray(frames).shape[1:3]) if joint else None)  # fmt: skip
    return z0, eps


def choose_start(config: Any) -> Callable[[Any, np.ndarray], tuple[torch.Tensor, torch.Tensor | None]]:
    """Rows 1 and 9 chosen once: how :func:`vidseg_nb.features.reference_run` draws a batch's start latent
    z0 and its noise, ``start(backbone, frames) -> (z0, eps or None)``. With ``vae_sample`` or
    ``batch_noise``: :func:`start_latents` (one CPU generator seeded per batch); else the paper's
    ``(backbone.encode(frames), None)``: the posterior mean, and each frame's own seeded noise drawn by
    the caller (``features.frame_noise``)."""
    if config.vae_sample or config.batch_noise:
        return lambda backbone, frames: start_latents(backbone, frames, config)
    return lambda backbone, frames: (backbone.encode(frames), None)


def _decoded_as_they_are(images: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    return images


def _decoded_8bit_at(images: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None:
        return images
    return torch.from_numpy(authors_decoded_images(images, size)).permute(0, 3, 1, 2) / 255


@dataclass(frozen=True)
class DiffChoice:
    """Row 3 chosen once (:func:`choose_diff`): how stage 3 (:func:`vidseg_nb.modulation.modulate`) turns
    the decoded I+ and I- (N, 3, h, w) in [0, 1] into D_l.

    ``at_input_size``: D_l lives at the clip's input frame size (when that is given and another size than
    the processing size), the authors' ``cv2.resize`` of their decoded images; ``maps(I+, I-, ksize,
    sigma, size=...)``: the authors' D_l (:func:`authors_diff_maps`) in place of the paper's, or None;
    ``images(I, size)``: what the paper's difference map is taken of (I itself when ``size`` is None, else
    the authors' 8-bit images resized to ``size``, / 255, channels first); ``dtype``: of the D_l kept
    (float32; float16 with ``diff_fp16``; float64 for the authors' D_l, as theirs)."""

    at_input_size: bool
    maps: Callable[..., torch.Tensor] | None
    images: Callable[[torch.Tensor, tuple[int, int] | None], torch.Tensor]
    dtype: torch.dtype


def choose_diff(config: Any) -> DiffChoice:
    """Row 3 (``uint8_diff``, ``resize_decoded``) chosen once, see :class:`DiffChoice`."""
    dtype = torch.float16 if config.diff_fp16 else torch.float64 if config.uint8_diff else torch.float32
    return DiffChoice(
        at_input_size=bool(config.resize_decoded),
        maps=authors_diff_maps if config.uint8_diff else None,
        images=_decoded_8bit_at if config.resize_decoded else _decoded_as_they_are,
        dtype=dtype,
    )


def authors_noise(
    shape: tuple[int, ...],
    seed: int,
    device: torch.device | str = "cpu",
    *,
    cpu_generator: torch.Generator | None = None,
    condition_shape: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Row 9: eps of ``EDMSampler.add_noise`` (``torch.randn_like(z)``, float32, ``shape`` (B, 4, h, w)).

    Their ``z`` is on the GPU, so eps comes from the **CUDA** generator that ``seed_everything(seed)`` has
    just seeded, and it is that generator's first draw (the posterior sample of row 1 is a CPU draw; the
    sampler itself draws nothing). On a CUDA ``device`` eps is drawn there from a CUDA
    ``torch.Generator`` seeded with ``seed`` (the same Philox stream: their values on a GPU with the same
    launch grid, see docs/authors.md). Their SVD pipeline draws ``cond_aug * randn_like(image)`` on the
    GPU first: ``condition_shape`` (1, 3, H, W) draws (and drops) that one before eps. Elsewhere (CPU,
    MPS) eps is the next draw of ``cpu_generator`` (after the posterior sample), or of a CPU generator
    seeded with ``seed``: CPU and CUDA streams differ, so those values are not theirs. Returned on
    ``device`` (CUDA) or the CPU.
    """
    device = torch.device(device)
    if device.type == "cuda":
        gen = torch.Generator(device=device).manual_seed(int(seed))
        if condition_shape is not None:
            torch.randn(condition_shape, generator=gen, device=device, dtype=torch.float32)
        return torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    gen = cpu_generator if cpu_generator is not None else torch.Generator().manual_seed(int(seed))
    return torch.randn(shape, generator=gen, dtype=torch.float32)


@torch.no_grad()
def authors_encode(
    backbone: Any, frames: np.ndarray | torch.Tensor, generator: torch.Generator | None = None, chunk: int = 8
) -> torch.Tensor:
    """Row 1: frames (N, H, W, 3) uint8 -> z0 (N, 4, H/8, W/8) float32 = scaling factor x a posterior
    sample ``mean + exp(0.5 clamp(logvar, -30, 20)) * randn``, ``randn`` drawn once for the whole batch
    from ``generator`` on the CPU (:func:`authors_posterior_sample`, with the backbone's scaling factor,
    0.18215 for SD). The VAE runs as in ``Backbone.encode`` (``chunk`` frames per call)."""
    from .backbone import vae_precision

    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    means, logvars = [], []
    with vae_precision(backbone.device):
        for i in range(0, len(frames), chunk):
            f = frames[i : i + chunk].to(backbone.device)
            x = f.permute(0, 3, 1, 2).to(backbone.vae_dtype) / 127.5 - 1.0
            dist = backbone.vae.encode(x).latent_dist
            means.append(dist.mean.float())
            logvars.append(dist.logvar.float())
            backbone.counters.vae_encodes += len(f)
    mean, logvar = torch.cat(means), torch.cat(logvars)
    std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
    eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device)
    return backbone.scaling_factor * (mean + std * eps)  # = authors_posterior_sample for 0.18215


def authors_last_blend_step(config: Any, joint_frames: bool = False) -> int:
    """Row 2: the last step index i after which latents are blended: ``config.last_blend_step`` (t_f),
    or with ``blend_two_steps`` their ``latent_mask_end`` (:func:`authors_blend_steps`): t_m + 1 for SD,
    every step for a backbone that denoises a batch jointly (``joint_frames``: their SVD pipeline)."""
    if not config.blend_two_steps:
        return config.last_blend_step
    return max(authors_blend_steps(config.t_m, config.n_steps, "svd" if joint_frames else "sd"))


def authors_unit_to_uint8(images: torch.Tensor) -> np.ndarray:
    """Row 3: decoded images (N, 3, H, W) in [0, 1] (``Backbone.decode``: ``clamp((x + 1) / 2, 0, 1)``)
    -> (N, H, W, 3) uint8 by truncation, ``(img * 255).astype(uint8)`` as ``sample_video`` (=
    :func:`authors_to_uint8` of the VAE output x in [-1, 1])."""
    return (images.detach().float().permute(0, 2, 3, 1) * 255).cpu().numpy().astype(np.uint8)


AUTHORS_INSTALL = 'pip install "vidseg_nb[authors]"'
"""How to get the optional OpenCV of row 3's resize (``opencv-python-headless``, the authors' 4.10.0)."""


def require_cv2() -> Any:
    """OpenCV's ``cv2`` module, the optional dependency of row 3's resize (``SegConfig.resize_decoded``);
    without it a :class:`~vidseg_nb.errors.ConfigError` naming :data:`AUTHORS_INSTALL`."""
    try:
        import cv2
    except ImportError as e:
        raise ConfigError(
            "SegConfig.resize_decoded (issue 15 row 3: the authors' cv2.resize of the decoded images to the "
            f"input frame size) needs OpenCV: {AUTHORS_INSTALL} (or turn resize_decoded off; {e})"
        ) from e
    return cv2


def authors_resize_decoded(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Row 3: uint8 RGB images (N, h, w, 3) -> (N, H, W, 3) as ``sample_video`` writes and
    ``compute_difference`` reads them: ``cv2.cvtColor(RGB2BGR)``, ``cv2.resize(frame, (W, H))`` (default
    INTER_LINEAR, 8-bit fixed point; a copy when the size is already ``size = (H, W)``), ``cv2.imwrite``
    PNG (lossless) read back by Pillow as RGB. The resize is channel-wise, but it runs on the BGR array
    as theirs. Its pixels are OpenCV's: equal for the same OpenCV build and CPU family (SIMD dispatch,
    HAL), see the Row 3 notes of this module."""
    cv2 = require_cv2()
    a = np.asarray(images)
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise ValueError(f"need uint8 images (N, h, w, 3), got {a.dtype}{a.shape}")
    h, w = int(size[0]), int(size[1])
    out = np.empty((len(a), h, w, 3), np.uint8)
    for i, img in enumerate(a):
        bgr = cv2.resize(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR), (w, h))
        out[i] = bgr[..., ::-1]  # the PNG holds BGR as written by cv2; Pillow reads it back as RGB
    return out


def authors_decoded_images(images: torch.Tensor, size: tuple[int, int] | None = None) -> np.ndarray:
    """Row 3: decoded images (N, 3, h, w) in [0, 1] -> the uint8 RGB (N, H, W, 3) their difference map
    reads: :func:`authors_unit_to_uint8` (truncation), then with ``size`` (the original frame size (H, W))
    :func:`authors_resize_decoded` (``SegConfig.resize_decoded``)."""
    u8 = authors_unit_to_uint8(images)
    return u8 if size is None else authors_resize_decoded(u8, size)


def authors_diff_maps(
    plus: torch.Tensor,
    minus: torch.Tensor,
    ksize: int = 5,
    sigma: float = 3.0,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Row 3 at the D_l call site: decoded I+ and I- (N, 3, h, w) in [0, 1] -> their D_l (N, H, W)
    float64: :func:`authors_decoded_images` (uint8 truncation; with ``size`` = (H, W) the cv2 resize to
    the original frame size, else (H, W) = (h, w)) then :func:`authors_difference_map` (uint8 wrap,
    square root, cv2 blur, 8-bit JPEG and back, ``d / (max + 1e-5)``)."""
    p, m = authors_decoded_images(plus, size), authors_decoded_images(minus, size)
    return torch.from_numpy(
        np.stack([authors_difference_map(a, b, ksize=ksize, sigma=sigma) for a, b in zip(p, m)])
    )


def authors_filter_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Row 4: binary masks (L, h, w) -> (L, H, W) float64 by Pillow LANCZOS (:func:`authors_upsample_mask`)."""
    return np.stack([authors_upsample_mask(np.asarray(m), size) for m in np.asarray(masks)])


def batch_plan(n_frames: int, config: Any) -> list[tuple[int, int]]:
    """Row 7: the (start, stop) frame ranges of the pipeline's batches, in run order.

    Default: consecutive batches of B frames, a short last one. With ``shifted_last_batch``
    :func:`authors_batch_starts`: the last batch covers the clip's last B frames, overlapping the
    previous one (run twice when N % B == 0); a later batch overwrites the frames it shares.
    """
    b = int(config.batch_size)
    if config.shifted_last_batch:
        return authors_batch_starts(n_frames, b)
    return [(a, min(n_frames, a + b)) for a in range(0, n_frames, b)]


def plan_overlaps(plan: Sequence[tuple[int, int]]) -> bool:
    """Whether some frame is in two batches of ``plan`` (then the per-frame stage cache is not used)."""
    return any(a < prev_stop for (_, prev_stop), (a, _) in zip(plan, plan[1:]))


def merge_first_batch(coarse: np.ndarray, gt_first: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Row 6 with the paper's stage 1: the first batch's coarse maps (B, h, w) relabelled by the clusters'
    first-frame GT majority (:func:`merge_clusters_by_first_frame` on ``coarse[0]``); a cluster absent
    from frame 1 (predicted for a later frame only) has no majority and becomes :data:`UNMERGED` (void).
    Returns the merged maps (int64) and the mapping."""
    coarse = np.asarray(coarse).astype(np.int64)
    mapping = merge_clusters_by_first_frame(coarse[0], gt_first)
    lut = {int(k): int(v) for k, v in mapping.items()}
    ids = np.unique(coarse)
    merged = np.array([lut.get(int(k), UNMERGED) for k in ids], dtype=np.int64)
    return merged[np.searchsorted(ids, coarse)], lut
