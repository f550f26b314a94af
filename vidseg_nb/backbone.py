"""The backbone interface (:class:`Backbone`, shared by SD 2.x and SVD) and the SD 2.x implementation
(:class:`SDBackbone`), its configs and random-weight builders. Loading is in :mod:`vidseg_nb.loading`.

SPEC sections 1-2. Frames are VAE-encoded (posterior mean x scaling factor) to z0; noising is
x = z0 + sigma[t_m] * eps; one step i runs the UNet on x / sqrt(sigma_i^2 + 1) for the uncond (zeros) and
cond (empty prompt) halves in one batch, eps_hat = eps_u + w (eps_c - eps_u) with w = 5, and
x <- x + (sigma_{i+1} - sigma_i) * eps_hat, on the trailing sigmas of ``EulerDiscreteScheduler``.

The backbone counts its work (``counters``): UNet samples and calls, VAE encodes and decodes.
"""

from __future__ import annotations

import json
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from . import progress
from .errors import BackboneLoadError
from .probe import SD_LAYOUT, Layout, StopForward

TINY = "tiny"
TOY = "toy"
"""The toy model the project trained and ships (vidseg_nb/toy/model); see :mod:`vidseg_nb.toy`."""
RANDOM_SD21 = "random-sd21"  # full-size SD 2.1 architecture, random weights (benchmarks)
SCALED_LINEAR = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
)


@dataclass
class WorkCounters:
    """Machine-independent work done by a backbone (feeds the benchmarks)."""

    unet_samples: int = 0  # rows through the UNet (a CFG pair counts 2)
    unet_calls: int = 0
    unet_partial_samples: int = 0  # forwards stopped after block 8 (feature extraction only)
    vae_encodes: int = 0  # frames encoded
    vae_decodes: int = 0  # images decoded

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)

    def since(self, before: dict[str, int]) -> dict[str, int]:
        return {k: v - before.get(k, 0) for k, v in self.__dict__.items()}

    def reset(self) -> None:
        for k in self.__dict__:
            setattr(self, k, 0)


class StepListener(Protocol):
    """Something told the step index before every UNet call (the :class:`~vidseg_nb.probe.Probe`)."""

    def set_step(self, step: int) -> None: ...


class Backbone(ABC):
    """A diffusion backbone as the method sees it (SPEC 1-2, 10): SD 2.x (:class:`SDBackbone`) and SVD
    (:class:`vidseg_nb.svd.SVDBackbone`) implement it.

    Latents go through the sampler in *groups*: ``frames_per_group(n)`` frames are one denoising sample
    (1 for SD, the whole batch for SVD), so R runs are (R, G, 4, h, w). :meth:`unet_eps` and :meth:`sample`
    also take the backbone's native 4-D layout (:meth:`as_groups`). What differs per backbone:

    - ``layout``: the probe's modules (:class:`~vidseg_nb.probe.Layout`);
    - :meth:`frames_per_group`, :meth:`as_groups`;
    - :meth:`condition`: the conditioning of a group of frames (SD: none, the empty prompt is fixed;
      SVD: its first frame);
    - :meth:`model_output`: the raw UNet output for ``[uncond; cond]`` of the preconditioned latents;
    - :meth:`guidance`: the CFG weight w of a group (SD: the constant; SVD: a per-frame ramp);
    - :meth:`decode` (SVD: the temporal decoder), :meth:`default_chunk`.

    Shared, written once: the trailing/Karras sigmas (:meth:`set_steps`), noising, the v-prediction
    conversion and CFG (:meth:`unet_eps`), the Euler loop (:meth:`sample`), the VAE encoder (:meth:`encode`),
    devices, dtypes, counters.
    """

    unet: torch.nn.Module
    vae: torch.nn.Module
    sigmas: torch.Tensor
    timesteps: torch.Tensor
    scheduler_config: dict[str, Any]
    source: str
    is_random: bool
    counters: WorkCounters
    n_steps: int
    layout: ClassVar[Layout]
    scheduler_overrides: ClassVar[dict[str, Any]] = {}
    default_prediction_type: ClassVar[str] = "epsilon"
    default_preset: ClassVar[str] = "vidseg"  # the paper's settings with this backbone (config.PRESETS)

    # ---------------------------------------------------------------- devices, dtypes, VAE scale
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def vae_dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def vae_scale(self) -> int:
        """Pixels per latent cell (8 for SD and SVD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", self.default_prediction_type)

    # ---------------------------------------------------------------- what each backbone defines
    @abstractmethod
    def frames_per_group(self, n_frames: int) -> int:
        """Frames of a batch of ``n_frames`` denoised together as one sample (1 for SD, n for SVD)."""

    @abstractmethod
    def as_groups(self, x: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """Latents in the grouped layout (R, G, 4, h, w) and the map back to the layout ``x`` came in
        (a 5-D ``x`` is already grouped; 4-D is SD's (R, 4, h, w) or one SVD clip (F, 4, h, w))."""

    @abstractmethod
    def condition(self, frames: np.ndarray, *, seed: int = 0, index: int = 0) -> Any:
        """The conditioning of one group of ``frames`` (N, H, W, 3) uint8 whose first frame is frame
        ``index`` of the clip (SD: ``None``; SVD: :class:`~vidseg_nb.svd.SVDCondition` of its first frame)."""

    @abstractmethod
    def model_output(self, xin: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """The UNet's output (2R, G, 4, h, w) float32 for ``[uncond; cond]`` of the preconditioned grouped
        latents ``xin`` = x / sqrt(sigma^2 + 1) (R, G, 4, h, w) in the UNet's dtype at timestep ``t``."""

    @abstractmethod
    def guidance(self, group: int, guidance_scale: float) -> float | torch.Tensor:
        """The CFG weight w of a group of ``group`` frames, broadcastable to (R, G, 4, h, w)."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (R, G, 4, h, w) or (N, 4, h, w) -> images (R*G or N, 3, 8h, 8w) float32 in [0, 1]."""

    @abstractmethod
    def default_chunk(self, n_frames: int, *, modulated: bool) -> int:
        """Groups per UNet call for a batch of ``n_frames``: in the reference run, or (``modulated``)
        modulated runs (even, so a +/- pair stays together)."""

    # ---------------------------------------------------------------- shared: sigmas, noise, Euler loop
    def set_steps(self, n_steps: int) -> None:
        """Timesteps t_i and sigmas sigma_0 > ... > sigma_{n-1}, sigma_n = 0 of ``EulerDiscreteScheduler``
        on ``scheduler_config`` with ``scheduler_overrides`` (SD: trailing spacing, SPEC 2; SVD: its own
        Karras/EDM sigmas, timesteps 0.25 log sigma)."""
        from diffusers import EulerDiscreteScheduler

        sched = EulerDiscreteScheduler.from_config({**self.scheduler_config, **self.scheduler_overrides})
        sched.set_timesteps(n_steps)
        self.n_steps = n_steps
        self.timesteps = sched.timesteps.to(torch.float32).cpu()
        self.sigmas = sched.sigmas.to(torch.float32).cpu()

    def noise(
        self,
        z0: torch.Tensor,
        start: int,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x = z0 + sigma[t_m] * eps, eps ~ N(0, I) from ``generator`` (or given)."""
        if eps is None:
            eps = torch.randn(z0.shape, generator=generator, dtype=torch.float32, device="cpu")
        return z0 + self.sigmas[start].item() * eps.to(z0.device, z0.dtype)

    @torch.no_grad()
    def encode(self, frames: np.ndarray | torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """Frames (N, H, W, 3) uint8 -> z0 (N, 4, H/8, W/8) float32: posterior mean x scaling factor."""
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        out = []
        with vae_precision(self.device):
            for i in range(0, len(frames), chunk):
                f = frames[i : i + chunk].to(self.device)
                x = f.permute(0, 3, 1, 2).to(self.vae_dtype) / 127.5 - 1.0
                mean = self.vae.encode(x).latent_dist.mean
                out.append(mean.float() * self.scaling_factor)
                self.counters.vae_encodes += len(f)
        return torch.cat(out)

    def euler_step(self, x: torch.Tensor, step: int, d_hat: torch.Tensor) -> torch.Tensor:
        """x <- x + (sigma_{i+1} - sigma_i) * d_hat."""
        return x + (self.sigmas[step + 1].item() - self.sigmas[step].item()) * d_hat

    def unet_eps(
        self,
        x: torch.Tensor,
        step: int,
        guidance_scale: float,
        listener: StepListener | None = None,
        cond: Any = None,
    ) -> torch.Tensor:
        """The Euler derivative d_hat = d_u + w (d_c - d_u) for latents x at step i (one UNet call on the
        2R groups [uncond; cond]); d = eps for epsilon models, d = (x - x0) / sigma with
        x0 = x / (sigma^2 + 1) - sigma v / sqrt(sigma^2 + 1) for v-prediction. Same layout as ``x``."""
        sigma = self.sigmas[step].item()
        # precondition in the layout given, then view it grouped: the memory format stays that of x
        # (the UNet's convolution numerics depend on it)
        xin, _ = self.as_groups((x / (sigma**2 + 1) ** 0.5).to(self.device, self.dtype))
        xg, back = self.as_groups(x)
        r, g = xg.shape[:2]
        t = self.timesteps[step].to(self.device)
        if listener is not None:
            listener.set_step(step)
        self.counters.unet_calls += 1
        try:
            out = self.model_output(xin, t, cond)
        except StopForward:
            self.counters.unet_partial_samples += 2 * r * g
            progress.advance(2 * r * g)
            raise
        self.counters.unet_samples += 2 * r * g
        progress.advance(2 * r * g)  # the one progress source (vidseg_nb.progress): a no-op unless tracked
        if self.prediction_type == "v_prediction":
            xs = torch.cat([xg, xg]).to(out.device, torch.float32)
            x0 = out * (-sigma / (sigma**2 + 1) ** 0.5) + xs / (sigma**2 + 1)
            out = (xs - x0) / sigma
        elif self.prediction_type != "epsilon":
            raise BackboneLoadError(f"unsupported prediction_type {self.prediction_type!r}")
        d_u, d_c = out[:r], out[r:]
        return back(d_u + self.guidance(g, guidance_scale) * (d_c - d_u))

    def sample(
        self,
        x: torch.Tensor,
        start: int,
        guidance_scale: float = 5.0,
        listener: StepListener | None = None,
        callback: Callable[[int, torch.Tensor], torch.Tensor | None] | None = None,
        stop: int | None = None,
        cond: Any = None,
    ) -> torch.Tensor:
        """Euler loop from step ``start`` to the last step (or up to ``stop`` exclusive).

        ``callback(i, x)`` runs after step i; it may return a replacement latent (latent blending).
        """
        x = x.to(self.device, torch.float32)
        for i in range(start, self.n_steps if stop is None else stop):
            x = self.euler_step(x, i, self.unet_eps(x, i, guidance_scale, listener, cond=cond))
            if callback is not None:
                y = callback(i, x)
                if y is not None:
                    x = y
        return x

    def to(self, device: str | torch.device) -> Backbone:
        self.unet.to(device)
        self.vae.to(device)
        text_encoder = getattr(self, "text_encoder", None)  # SD with names kept (issue 13)
        if text_encoder is not None:
            text_encoder.to(device)
        return self


@contextmanager
def vae_precision(device: torch.device) -> Iterator[None]:
    """TF32 for the fp32 VAE's convolutions and matmuls on CUDA (tensor cores), only inside this context:
    the previous ``torch.backends`` flags are restored on exit (nothing changes process-wide)."""
    if device.type != "cuda":
        yield
        return
    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


@dataclass
class SDBackbone(Backbone):
    """An SD 2.x UNet + VAE + empty-prompt text states, with the trailing-sigma Euler loop (SPEC 2).

    Every frame is its own denoising sample (groups of one frame); the UNet batch of R latents is
    [uncond (zero states); cond (empty prompt)] with the constant guidance weight w.
    """

    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler_config: dict[str, Any]
    cond_states: torch.Tensor  # (1, 77, D): text embedding of ""
    source: str = TINY
    is_random: bool = False
    counters: WorkCounters = field(default_factory=WorkCounters)
    n_steps: int = 25
    # kept for open-vocabulary names (issue 13, vidseg_nb.names); None: this backbone cannot name segments
    tokenizer: Any = field(default=None, repr=False)
    text_encoder: torch.nn.Module | None = field(default=None, repr=False)
    layout: ClassVar[Layout] = SD_LAYOUT  # the probe's modules (SPEC 3)
    scheduler_overrides: ClassVar[dict[str, Any]] = {"timestep_spacing": "trailing"}  # SPEC 2

    def __post_init__(self) -> None:
        self.set_steps(self.n_steps)

    def frames_per_group(self, n_frames: int) -> int:
        """Frames denoised together as one sample: 1 (SD: every frame is its own sample)."""
        return 1

    def as_groups(self, x: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """(R, 4, h, w) -> (R, 1, 4, h, w) (and back); 5-D latents are already grouped."""
        if x.ndim == 5:
            return x, lambda d: d
        return x[:, None], lambda d: d[:, 0]

    def condition(self, frames: np.ndarray, *, seed: int = 0, index: int = 0) -> None:
        """SD has no per-group conditioning (the empty-prompt states are fixed)."""
        return None

    def model_output(self, xin: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """eps (or v) of the 2R rows [uncond (zero states); cond (empty prompt)] in one UNet call."""
        r, g = xin.shape[:2]
        # SD groups are one frame: xin[:, 0] is a view with the latents' memory format, strides included
        # (flatten(0, 1) can lose channels_last for R = 1; the convolution numerics depend on it)
        x = xin[:, 0]
        rows = torch.cat([x, x])
        n = r * g
        states = self.cond_states.to(self.device, self.dtype)
        states = torch.cat([torch.zeros_like(states).expand(n, -1, -1), states.expand(n, -1, -1)])
        out = self.unet(rows, t, encoder_hidden_states=states, return_dict=False)[0].float()
        return out.unflatten(0, (2 * r, g))

    def guidance(self, group: int, guidance_scale: float) -> float:
        """The constant w (5 in the paper, SPEC 2)."""
        return guidance_scale

    def default_chunk(self, n_frames: int, *, modulated: bool) -> int:
        """Frames per UNet call: from free GPU memory (reference: ~1.5 GiB per frame, up to 32; modulated
        runs: 1 per GiB, even, 2..64), on the CPU 4 (reference) and 8 (modulated)."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if modulated:
                return int(max(2, min(64, free / 2**30)) // 2 * 2)
            return max(1, min(32, int(free / 2**30 / 1.5)))
        return 8 if modulated else 4

    # ---------------------------------------------------------------- VAE
    @torch.no_grad()
    def decode(self, z: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """Latents (N, 4, h, w) or grouped (R, 1, 4, h, w) -> images (N, 3, 8h, 8w) float32 in [0, 1]
        (VAE in its own dtype), ``chunk`` at a time."""
        if z.ndim == 5:
            z = z.flatten(0, 1)
        out = []
        with vae_precision(self.device):
            for i in range(0, len(z), chunk):
                zi = z[i : i + chunk].to(self.device, self.vae_dtype) / self.scaling_factor
                img = self.vae.decode(zi, return_dict=False)[0].float()
                out.append(((img + 1) / 2).clamp(0, 1))
                self.counters.vae_decodes += len(zi)
        return torch.cat(out)


# -------------------------------------------------------------------- model configs
def sd2_unet_config(
    channels: tuple[int, ...], heads: tuple[int, ...], cross_dim: int, sample: int
) -> dict[str, Any]:
    """The SD 2.x UNet layout (3 cross-attention down blocks, 3 cross-attention up blocks after a plain
    one, linear projections), at any width."""
    return dict(
        sample_size=sample,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=channels,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=heads,
        cross_attention_dim=cross_dim,
        use_linear_projection=True,
        norm_num_groups=32,
    )


def sd_vae_config(channels: tuple[int, ...], layers: int, sample: int) -> dict[str, Any]:
    """The SD VAE layout (4 blocks: 8x down/upsampling, 4 latent channels, scaling factor 0.18215)."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=channels,
        layers_per_block=layers,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=sample,
        scaling_factor=0.18215,
    )


def tiny_configs() -> dict[str, dict[str, Any]]:
    """Small configs with the real SD 2.x block layout (4 up blocks, attention in up_blocks 1-3)."""
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=32,
        hidden_act="gelu",
    )
    return dict(
        unet=sd2_unet_config((32, 64, 64, 64), (2, 4, 4, 4), 32, 32),
        vae=sd_vae_config((32, 32, 64, 64), 1, 256),
        text_encoder=text,
        scheduler=dict(**SCALED_LINEAR, prediction_type="epsilon", _class_name="EulerDiscreteScheduler"),
    )


def sd21_configs() -> dict[str, Any]:
    """The real SD 2.1-base configs (UNet 865M, VAE 84M): for FLOP counts on the ``meta`` device and
    full-size random-weight benchmarks (``load_backbone("random-sd21")``)."""
    return dict(
        unet=sd2_unet_config((320, 640, 1280, 1280), (5, 10, 20, 20), 1024, 64),
        vae=sd_vae_config((128, 256, 512, 512), 2, 512),
        scheduler=dict(**SCALED_LINEAR, prediction_type="epsilon"),
        text_dim=1024,
    )


def build_random_sd21(device: str | torch.device = "cpu", seed: int = 0) -> SDBackbone:
    """A full-size SD 2.1-base UNet + VAE with random weights (``device="meta"``: shapes only, no memory).

    The empty-prompt states are random too (no text encoder is built): for cost and speed measurements.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    cfg = sd21_configs()
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**cfg["unet"]).eval().requires_grad_(False)
        vae = AutoencoderKL(**cfg["vae"]).eval().requires_grad_(False)
    cond = (
        torch.randn(1, 77, cfg["text_dim"])
        if str(device) != "meta"
        else torch.empty(1, 77, cfg["text_dim"], device="meta")
    )
    return SDBackbone(
        unet=unet,
        vae=vae,
        scheduler_config=cfg["scheduler"],
        cond_states=cond,
        source="random-sd21",
        is_random=True,
    )


def _bytes_to_unicode() -> dict[int, str]:
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_tiny_tokenizer(folder: str | Path) -> Path:
    """A character-level CLIP tokenizer (byte alphabet, no merges) written offline to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(c, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def build_tiny_components(seed: int = 0) -> dict[str, Any]:
    """Random-weight UNet, VAE, CLIP text encoder and tokenizer with the SD 2.x layout (no download)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    cfg = tiny_configs()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg["unet"])
    vae = AutoencoderKL(**cfg["vae"])
    with tempfile.TemporaryDirectory() as d:
        tokenizer = CLIPTokenizer.from_pretrained(
            str(write_tiny_tokenizer(d)), local_files_only=True, model_max_length=77
        )
    text_cfg = CLIPTextConfig(
        **cfg["text_encoder"],
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text_encoder = CLIPTextModel(text_cfg)
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler(**{k: v for k, v in cfg["scheduler"].items() if not k.startswith("_")})
    for m in (unet, vae, text_encoder):
        m.eval()
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=sched)


def save_components(components: dict[str, Any], folder: str | Path) -> Path:
    """Write components as a diffusers folder (``unet/``, ``vae/``, ...) with ``model_index.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        components[name].save_pretrained(folder / name)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": __import__("diffusers").__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", type(components["scheduler"]).__name__],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


# -------------------------------------------------------------------- loading
