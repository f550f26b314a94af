"""Per-frame diffusion features (SPEC section 3), the reference run, PCA views and x-t slices.

The reference run of a frame starts from x = z0 + sigma[t_m] * eps at step t_m and runs the Euler loop to
the last step unmodulated. At the last step it records the self-attention queries of decoder blocks
6, 7, 8 (grid H/16 x W/16). The aggregated feature F~ is the mean of the three blocks with each vector
divided by its max |value| (without aggregation: block 7 alone, same normalisation). When the stage-3
modulation follows, the same run also records every latent x_i and the q/k to inject, so each frame
is noised and denoised unmodulated exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import progress as _progress
from .authors import choose_start
from .backbone import Backbone
from .config import SegConfig
from .errors import ConfigError
from .names import NAME_BLOCKS
from .probe import (
    CORR_BLOCK,
    FEATURE_BLOCKS,
    OneKeyAttention,
    Probe,
    QKStore,
    RecordCrossQuery,
    RecordOutputs,
    RecordQK,
    RecordQuery,
    StopForward,
)


@dataclass
class Features:
    """Features of N frames on the (h, w) = (H/16, W/16) grid, float32 on the CPU.

    ``blocks[b]``: (N, h, w, C) query of block b; ``aggregated``: F~ (N, h, w, C) = mean of blocks 6-8;
    ``corr``: block-7 query used for correspondences (L2-normalised inside :func:`refine.refine`);
    ``single_block``: the block used without aggregation (7 for SD; SVD: 8, its correspondence block).
    """

    blocks: dict[int, torch.Tensor]
    aggregated: torch.Tensor
    corr: torch.Tensor
    single_block: int = CORR_BLOCK

    def stage1(self, aggregate: bool = True) -> torch.Tensor:
        """The stage-1 feature: F~ with aggregation, else block 7 (``single_block``) with the same
        max-|value| normalisation."""
        return self.aggregated if aggregate else max_abs_normalize(self.blocks[self.single_block])

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.aggregated.shape[1:3])  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.aggregated.shape[0]

    def __getitem__(self, idx: slice | list[int] | np.ndarray) -> Features:
        return Features(
            {b: f[idx] for b, f in self.blocks.items()},
            self.aggregated[idx],
            self.corr[idx],
            self.single_block,
        )

    @staticmethod
    def concat(items: list[Features]) -> Features:
        blocks = {b: torch.cat([f.blocks[b] for f in items]) for b in items[0].blocks}
        return Features(
            blocks,
            torch.cat([f.aggregated for f in items]),
            torch.cat([f.corr for f in items]),
            items[0].single_block,
        )


@dataclass
class Reference:
    """The unmodulated reference run of a batch of frames (SPEC 7)."""

    z0: torch.Tensor  # (N, 4, h8, w8) VAE latents
    x_start: torch.Tensor  # (N, 4, h8, w8) noised start latent at step t_m
    features: Features
    latents: dict[int, torch.Tensor] = field(default_factory=dict)  # step i -> x after step i
    qk: QKStore | None = None
    condition: Any = None  # backbone-specific conditioning of the batch (SVD: see ``svd.SVDCondition``)
    # with ``record_names``: {attn2 path: (N, h_l*w_l, C_l) float16 CPU} cross-attention queries (issue 13)
    name_queries: dict[str, torch.Tensor] | None = None
    prefix: RecordOutputs | None = None  # outputs at t_m of the modules before the modulation (prefix reuse)

    def nbytes(self) -> int:
        """Bytes held by the tensors stage 3 replays (q/k, prefix outputs, latents)."""
        n = sum(t.numel() * t.element_size() for t in self.latents.values())
        n += self.qk.nbytes() if self.qk is not None else 0
        n += self.prefix.nbytes() if self.prefix is not None else 0
        return n + self.x_start.numel() * self.x_start.element_size()


def max_abs_normalize(f: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each feature vector (last axis) by its max |value|."""
    return f / f.abs().amax(dim=-1, keepdim=True).clamp_min(eps)


def aggregate(blocks: dict[int, torch.Tensor], use_blocks: tuple[int, ...] = FEATURE_BLOCKS) -> torch.Tensor:
    """F~ = mean over ``use_blocks`` of the block features, each vector divided by its max |value|."""
    return max_abs_normalize(torch.stack([blocks[b].float() for b in use_blocks]).mean(0))


def frame_noise(shape: tuple[int, ...], seed: int, index: int) -> torch.Tensor:
    """eps ~ N(0, I) for frame ``index``: seeded by (seed, index), independent of batching."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))
    return torch.randn(shape, generator=g, dtype=torch.float32)


def _to_grid(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return t.float().reshape(t.shape[0], h, w, t.shape[-1]).cpu()


@torch.no_grad()
def reference_run(
    backbone: Backbone,
    frames: np.ndarray,
    config: SegConfig,
    *,
    frame_offset: int = 0,
    record_qk: bool = False,
    chunk: int | None = None,
    progress: bool = True,
    record_names: bool = False,
    name_blocks: Sequence[int] = NAME_BLOCKS,
    name_step: int | None = None,
    start: Callable[[Backbone, np.ndarray], tuple[torch.Tensor, torch.Tensor | None]] | None = None,
) -> Reference:
    """Stage 0: noise each frame to sigma[t_m], denoise unmodulated to the last step, record the features.

    The frames go through in groups of ``backbone.frames_per_group(N)`` (SD: each frame alone; SVD: the
    batch is one clip conditioned on its first frame), ``chunk`` groups per UNet call. Each frame's noise
    is seeded by (seed, ``frame_offset`` + its index), so it does not depend on batching. The layout's
    feature blocks (6-8) give F~ and its correspondence block the correspondences. With ``record_qk``
    (stage 3 follows) every latent x_i (N, 4, h8, w8) and the q/k of ``up_blocks[1..3]`` are kept, and with
    ``config.reuse_prefix`` the outputs at t_m of the modules before the modulation site (``prefix``);
    without it the last UNet forward stops after block 8, which is all the features need.

    ``record_names`` (issue 13, default off: the default path is unchanged) also records the
    cross-attention queries (``attn2.to_q``, cond half, float16 on the CPU) of ``name_blocks`` (default
    3-8) at step ``name_step`` (default the feature step, the last) into ``Reference.name_queries``; the
    early stop then moves after the last name block's ``attn2.to_q`` when that block comes later.

    ``start(backbone, frames) -> (z0, eps or None)``: how the start latent and its noise are drawn (issue 15
    rows 1 and 9), chosen once from ``config`` by :func:`~vidseg_nb.authors.choose_start` when not given.
    """
    if backbone.n_steps != config.n_steps:
        backbone.set_steps(config.n_steps)
    n = len(frames)
    g = backbone.frames_per_group(n)
    if n % g:
        raise ValueError(f"{n} frames do not split into groups of {g}")
    chunk = chunk or backbone.default_chunk(n, modulated=False)
    last = config.n_steps - 1
    layout = backbone.layout
    start = choose_start(config) if start is None else start  # issue 15 rows 1, 9
    z0, eps = start(backbone, frames)  # the authors' draws, seeded per batch, or (the paper) eps is None
    # the conditioning of the first group serves the batch: SD has none, an SVD batch is one group
    cond = backbone.condition(frames[:g], seed=config.seed, index=frame_offset)
    if eps is None:
        eps = torch.stack([frame_noise(tuple(z0.shape[1:]), config.seed, frame_offset + i) for i in range(n)])
    x_start = backbone.noise(z0, config.t_m, eps=eps)
    groups = x_start.unflatten(0, (n // g, g))  # (groups, G, 4, h8, w8)
    latents: dict[int, list[torch.Tensor]] = {}

    def keep(i: int, xi: torch.Tensor) -> None:
        latents.setdefault(i, []).append(xi.flatten(0, 1))

    names_hook: list[RecordCrossQuery] = []
    names_stop = False
    if record_names:
        nstep = last if name_step is None else int(name_step)
        if not config.t_m <= nstep <= last:
            raise ConfigError(f"name_step {nstep} is outside the reference run's steps {config.t_m}..{last}")
        # the forward may stop only after both block 8's attn1.to_q and the last name block's attn2.to_q
        names_stop = not record_qk and nstep == last and max(name_blocks) >= max(layout.feature_blocks)
        names_hook = [RecordCrossQuery(nstep, name_blocks, stop_after=names_stop)]
    query = RecordQuery(last, stop_after=not record_qk and not names_stop)
    qk = RecordQK()
    # prefix reuse (SegConfig.reuse_prefix): the outputs at t_m that every modulated run would recompute
    prefix = RecordOutputs(config.t_m, n_groups=n // g) if record_qk and config.reuse_prefix else None
    extra = [qk, *([prefix] if prefix is not None else [])] if record_qk else []
    one_key = [OneKeyAttention()] if config.one_key_attention else []  # one-token contexts: to_out(to_v(c))
    hooks = [*one_key, query, *names_hook, *extra]
    what = "stage 0, reference run (features, q/k for stage 3)" if record_qk else "stage 0, features"
    _progress.stage(what, 2 * n * (config.n_steps - config.t_m))  # CFG pairs, steps t_m..last
    with Probe(backbone.unet, *hooks, layout=layout) as probe:
        n_groups = len(groups)
        for a in tqdm(
            range(0, n_groups, chunk),
            desc="reference run",
            disable=not progress or n_groups <= chunk,
            leave=False,
        ):
            x = groups[a : a + chunk]
            if record_qk:
                backbone.sample(
                    x, config.t_m, config.guidance_scale, listener=probe, callback=keep, cond=cond
                )
            else:
                x = backbone.sample(
                    x, config.t_m, config.guidance_scale, listener=probe, stop=last, cond=cond
                )
                try:
                    backbone.unet_eps(x, last, config.guidance_scale, listener=probe, cond=cond)
                except StopForward:
                    pass
    h, w = z0.shape[2] // 2, z0.shape[3] // 2
    blocks = {b: _to_grid(query.block_features(b), h, w) for b in layout.feature_blocks}
    feats = Features(
        blocks=blocks,
        aggregated=aggregate(blocks, layout.feature_blocks),
        corr=blocks[layout.corr_block],
        single_block=layout.corr_block,
    )
    return Reference(
        z0=z0,
        x_start=x_start,
        features=feats,
        latents={i: torch.cat(v) for i, v in latents.items()},
        qk=qk.qk if record_qk else None,
        condition=cond,
        name_queries=names_hook[0].queries() if names_hook else None,
        prefix=prefix,
    )


def extract_features(
    backbone: Backbone,
    frames: np.ndarray,
    config: SegConfig,
    *,
    frame_offset: int = 0,
    chunk: int | None = None,
    progress: bool = True,
) -> Features:
    """Per-block features and F~ of ``frames`` (N, H, W, 3) uint8 (sides multiples of 64).

    Returns :class:`Features` with (N, H/16, W/16, C) tensors. Stops each last UNet forward after block 8.
    A backbone that denoises the frames of a batch jointly (SVD) gets them in batches of
    ``config.batch_size`` frames, as in the pipeline; otherwise all frames go in one call (``chunk`` at a
    time).
    """
    # frames that are denoised together depend on their batch: cut the clip as the pipeline does
    bsz = config.batch_size if backbone.frames_per_group(config.batch_size) > 1 else max(1, len(frames))
    return Features.concat(
        [
            reference_run(
                backbone,
                frames[a : a + bsz],
                config,
                frame_offset=frame_offset + a,
                chunk=chunk,
                progress=progress,
            ).features
            for a in range(0, len(frames), bsz)
        ]
    )


# ---------------------------------------------------------------------------------------- views
def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return (
        x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    )


def pca_view(
    features: np.ndarray | torch.Tensor, n_components: int = 3, *, max_fit: int = 100_000, seed: int = 0
) -> np.ndarray:
    """PCA of (..., h, w, C) features into (..., h, w, n_components) in [0, 1] (the paper's Figure 2).

    One PCA is fitted jointly over all frames (on at most ``max_fit`` random vectors) and each component
    is min-max scaled over all frames, so colours are comparable across time. Component signs are fixed
    so that the largest loading of each is positive.
    """
    f = _as_numpy(features)
    c = f.shape[-1]
    flat = f.reshape(-1, c).astype(np.float64)
    fit = flat
    if len(flat) > max_fit:
        fit = flat[np.random.default_rng(seed).choice(len(flat), max_fit, replace=False)]
    mean = fit.mean(0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    comps = vt[:n_components]
    if len(comps) < n_components:  # fewer channels than components: pad with zeros
        comps = np.concatenate([comps, np.zeros((n_components - len(comps), c))])
    sign = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])
    comps = comps * np.where(sign == 0, 1, sign)[:, None]
    proj = (flat - mean) @ comps.T
    lo, hi = proj.min(0), proj.max(0)
    out = (proj - lo) / np.where(hi - lo > 0, hi - lo, 1.0)
    return out.reshape(*f.shape[:-1], n_components).astype(np.float32)


def xt_slice(volume: np.ndarray | torch.Tensor, row: int) -> np.ndarray:
    """The (T, W, ...) image of row ``row`` of a (T, H, W, ...) volume stacked over time (paper's Figure 15)."""
    v = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    if v.ndim < 3:
        raise ValueError(f"xt_slice needs a (T, H, W, ...) volume, got shape {v.shape}")
    if not -v.shape[1] <= row < v.shape[1]:
        raise ValueError(f"row {row} outside 0..{v.shape[1] - 1}")
    return v[:, row]
