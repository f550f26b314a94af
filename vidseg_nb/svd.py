"""The Stable Video Diffusion backbone: the paper's "Ours (SVD)" (section 4.4, Table 3; SPEC 10).

The SVD configs and :class:`SVDBackbone`, an implementation of :class:`vidseg_nb.backbone.Backbone`: its
probe layout (:data:`SVD_LAYOUT`), one denoising group per batch (``frames_per_group(n) = n``: the frames
are one clip), its conditioning, UNet call, guidance ramp and temporal decoder. The stages
(:func:`features.reference_run`, :func:`modulation.modulate`) are the same code as for SD.

Model. ``UNetSpatioTemporalConditionModel`` (8 input channels: the noisy latent and the conditioning
frame's latent), ``AutoencoderKLTemporalDecoder`` (the SD VAE encoder, a decoder with temporal layers that
decodes ``num_frames`` frames together), ``CLIPVisionModelWithProjection`` (ViT-H/14 image embedding).
The same module names as SD: blocks 6-8 are ``up_blocks[2].attentions[0..2]``; each attention is a
``TransformerSpatioTemporalModel`` with ``transformer_blocks`` (spatial) and
``temporal_transformer_blocks`` (attention over the frames at each grid cell).

Conditioning of a batch of F frames (diffusers' ``StableVideoDiffusionPipeline``; the authors' sgm code
does the same): the conditioning frame is the first frame of the batch;
- ``encoder_hidden_states`` (R, 1, D): CLIP image embedding of that frame (resized to 224 x 224 with
  antialiasing, CLIP mean/std), without noise;
- its VAE latent, ``vae.encode(frame + 0.02 * noise).latent_dist.mode()``, unscaled (no 0.18215),
  concatenated on channels to every frame's latent;
- ``added_time_ids`` = (fps_id, motion_bucket_id, noise_aug_strength) = (14, 127, 0.02): fps_id 14 is
  the authors' VSPW setting (VSPW is sampled at 15 fps; diffusers' default fps=7 gives 6);
- classifier-free guidance: the uncond half has a zero image embedding and zero conditioning latents
  (as in the SVD pipeline and sgm's ``force_uc_zero_embeddings``). The guidance weight is not SD's
  constant 5: SVD's pipeline and the authors' ``LinearPredictionGuider`` use a per-frame linear ramp from
  1.0 (the conditioning frame) to a maximum (2.5 in the authors' SVD config, 3.0 in diffusers). We follow
  the authors: w_j = linspace(``min_guidance_scale`` = 1.0, ``config.guidance_scale``, F)[j], and the
  ``svd`` preset sets ``guidance_scale = 2.5`` (``min_guidance_scale=None`` gives a constant weight).

Sampler. SVD is v-prediction with EDM preconditioning on Karras sigmas (sigma_max 700, sigma_min 0.002,
rho 7): diffusers' ``EulerDiscreteScheduler`` with ``use_karras_sigmas`` and
``timestep_type="continuous"`` gives sigma_0 = 700 > ... > sigma_24 = 0.002, sigma_25 = 0 and the UNet
timestep c_noise = 0.25 log sigma (as sgm's ``EDMDiscretization`` and ``VScalingWithEDMcNoise``). One step:
v = UNet([x / sqrt(sigma^2 + 1); cond latent], 0.25 log sigma); x0 = x / (sigma^2 + 1) - sigma v /
sqrt(sigma^2 + 1); d = (x - x0) / sigma; d_hat = d_u + w (d_c - d_u); x <- x + (sigma_{i+1} - sigma_i) d_hat.
Noising x = z0 + sigma[t_m] eps as for SD (the authors' ``add_noise``); t_m = 17 (8 denoising steps).

Sites (``SVD_LAYOUT``, Table 3): features at blocks 6, 7, 8 (spatial ``attn1.to_q``), correspondence and
modulation at block 8; the modulation is added to the self-attention output (``attn1``) of block 8's
spatial transformer block and, as in the authors' code (``modulate_layer_type="spatial,temporal"``), of
its temporal transformer block; q/k of ``attn1``/``attn2`` of the spatial and temporal transformer blocks
of ``up_blocks[1..3]`` are injected (Table 3: "spatial & temporal"; the authors' VSPW script injects the
temporal ones only: ``SVD_LAYOUT`` with ``inject_spatial=False``).

Runs and work (a batch of F frames, L labels present in its frames that hold at least two labels;
S = n_steps - t_m denoising steps; a UNet "sample" is one frame through the UNet, a CFG pair counts 2):
- reference run: one clip: S x 2F UNet samples, F + 1 VAE encodes (the frames and the noise-augmented
  conditioning frame), 1 CLIP image encode;
- modulated runs: one per (label, sign) for the whole clip: 2L runs x S x 2F UNet samples; at t_m,
  sign * lambda * M_l^j is added to frame j's tokens (zero where frame j has no label l); latent
  blending per frame with its own mask; every frame of every run is decoded (the temporal decoder sees
  the whole clip): 2L x F decodes;
- per frame: S x 2 x (1 + 2L) UNet samples, 2L decodes, 1 + 1/F encodes, 1/F image encodes; the UNet is
  called S x (1 + ceil(2L / chunk)) times per batch (``chunk`` runs per call), independent of L when all
  runs fit in one call.
D_l is computed per frame only for the labels present in that frame (``modulation.difference_map``);
frames whose map holds a single label get a constant map, as with SD.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .backbone import Backbone, WorkCounters, vae_precision
from .probe import Layout

TINY_SVD = "tiny-svd"
RANDOM_SVD = "random-svd"  # full-size SVD architecture, random weights (benchmarks, FLOP counts)
SVD_MODEL = "stabilityai/stable-video-diffusion-img2vid"
SVD_XT_MODEL = "stabilityai/stable-video-diffusion-img2vid-xt"
SVD_UNET_CLASS = "UNetSpatioTemporalConditionModel"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

SVD_LAYOUT = Layout(
    name="svd",
    feature_blocks=(6, 7, 8),
    mod_block=8,
    mod_kind="attn1",
    mod_temporal=True,
    corr_block=8,
    qk_up_blocks=(1, 2, 3),
    inject_spatial=True,
    inject_temporal=True,
    one_token_kinds=("attn2",),  # the cross-attentions attend to one CLIP image token
)

# stabilityai/stable-video-diffusion-img2vid scheduler/scheduler_config.json
SVD_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    interpolation_type="linear",
    sigma_min=0.002,
    sigma_max=700.0,
    steps_offset=1,
    timestep_spacing="leading",
    timestep_type="continuous",
    use_karras_sigmas=True,
)


@dataclass
class SVDWorkCounters(WorkCounters):
    """:class:`WorkCounters` plus CLIP image encodes (one per batch, of its conditioning frame)."""

    image_encodes: int = 0


@dataclass
class SVDCondition:
    """The image conditioning of one clip (its first frame), on the backbone's device."""

    image_embeds: torch.Tensor  # (1, 1, D) CLIP image embedding
    image_latent: torch.Tensor  # (1, 4, h, w) VAE mode of the noise-augmented frame, unscaled
    added_time_ids: torch.Tensor  # (1, 3): fps_id, motion_bucket_id, noise_aug_strength


def _cond_seed(seed: int, index: int) -> int:
    """Seed of the conditioning frame's noise augmentation (distinct from the frames' noise seeds)."""
    return (int(seed) * 1_000_003 + int(index)) ^ 0x5_EED_C0D


@dataclass
class SVDBackbone(Backbone):
    """An SVD UNet + temporal VAE + CLIP image encoder with the EDM Euler loop (module docstring).

    The frames of a batch are one denoising group (one clip): grouped latents are (R, F, 4, h, w), R runs
    of the clip; a 4-D (F, 4, h, w) is one clip. The conditioning of a clip is its :class:`SVDCondition`
    (``cond``; default: the last one made by :meth:`condition_on`).
    """

    unet: torch.nn.Module
    vae: torch.nn.Module
    image_encoder: torch.nn.Module
    scheduler_config: dict[str, Any]
    source: str = TINY_SVD
    is_random: bool = False
    counters: SVDWorkCounters = field(default_factory=SVDWorkCounters)
    n_steps: int = 25
    fps_id: int = 14
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    min_guidance_scale: float | None = 1.0  # None: constant guidance weight
    decode_chunk: int | None = None  # frames per temporal-decoder call; None: the whole clip
    last_condition: SVDCondition | None = None
    layout: ClassVar[Layout] = SVD_LAYOUT
    default_prediction_type: ClassVar[str] = "v_prediction"
    default_preset: ClassVar[str] = "svd"

    def __post_init__(self) -> None:
        self.set_steps(self.n_steps)

    # ---------------------------------------------------------------- the Backbone interface
    def frames_per_group(self, n_frames: int) -> int:
        """Frames denoised together as one sample: the whole batch (one SVD clip)."""
        return n_frames

    def as_groups(self, x: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """One clip (F, 4, h, w) -> (1, F, 4, h, w) (and back); 5-D latents are already grouped."""
        if x.ndim == 5:
            return x, lambda d: d
        return x[None], lambda d: d[0]

    def condition(self, frames: np.ndarray, *, seed: int = 0, index: int = 0) -> SVDCondition:
        """The :class:`SVDCondition` of a clip: its first frame (:meth:`condition_on`)."""
        return self.condition_on(frames[0], seed=seed, index=index)

    def model_output(
        self, xin: torch.Tensor, t: torch.Tensor, cond: SVDCondition | None = None
    ) -> torch.Tensor:
        """v of the 2R clips [uncond (zero image embedding and latent); cond] in one UNet call; the
        conditioning latent is concatenated on channels to every frame."""
        cond = self._cond(cond)
        r, f = xin.shape[:2]
        lat = cond.image_latent.to(self.device, self.dtype)[:, None].expand(r, f, -1, -1, -1)
        inp = torch.cat([torch.cat([xin, torch.zeros_like(lat)], 2), torch.cat([xin, lat], 2)])
        emb = cond.image_embeds.to(self.device, self.dtype).expand(r, -1, -1)
        states = torch.cat([torch.zeros_like(emb), emb])
        ids = cond.added_time_ids.to(self.device, self.dtype).expand(2 * r, -1)
        return self.unet(inp, t, encoder_hidden_states=states, added_time_ids=ids, return_dict=False)[
            0
        ].float()

    def guidance(self, group: int, guidance_scale: float) -> torch.Tensor:
        """w_j per frame (:meth:`guidance_weights`), shaped (1, F, 1, 1, 1)."""
        return self.guidance_weights(group, guidance_scale).to(self.device).view(1, group, 1, 1, 1)

    def default_chunk(self, n_frames: int, *, modulated: bool) -> int:
        """Clips per UNet call: 1 in the reference run (the batch is one clip); modulated runs (2 x F UNet
        samples each): 2 on the CPU, on a GPU about 1 per free GiB per 14 frames at 512 px, even, 2..16."""
        if not modulated:
            return 1
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            runs = int(free / 2**30 / max(1, n_frames))
            return max(2, min(16, runs - runs % 2))
        return 2

    # ---------------------------------------------------------------- properties
    @property
    def image_size(self) -> int:
        """Side of the CLIP image encoder's input (224 for SVD)."""
        return int(self.image_encoder.config.image_size)

    def guidance_weights(self, n_frames: int, guidance_scale: float) -> torch.Tensor:
        """(F,) guidance weight per frame: linspace(min_guidance_scale, guidance_scale, F), or constant."""
        if self.min_guidance_scale is None:
            return torch.full((n_frames,), float(guidance_scale))
        return torch.linspace(float(self.min_guidance_scale), float(guidance_scale), n_frames)

    def _cond(self, cond: SVDCondition | None) -> SVDCondition:
        cond = cond if cond is not None else self.last_condition
        if cond is None:
            raise RuntimeError("SVD needs a conditioning frame: pass cond= or call condition_on(frame) first")
        return cond

    # ---------------------------------------------------------------- VAE and image encoder
    @staticmethod
    def _pixels(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        return frames

    @torch.no_grad()
    def decode(
        self, z: torch.Tensor, num_frames: int | None = None, chunk: int | None = None
    ) -> torch.Tensor:
        """Latents of clips -> images (N, 3, 8h, 8w) in [0, 1] (VAE in its own dtype, fp32).

        ``z`` is (R, F, 4, h, w) (R clips of F frames) or (N, 4, h, w) (clips of ``num_frames`` frames,
        default one clip). The temporal decoder sees ``chunk`` (default ``decode_chunk``, else the whole
        clip) frames of a clip at a time, passed as its ``num_frames``.
        """
        if z.ndim == 5:
            num_frames = z.shape[1]
            z = z.flatten(0, 1)
        clip = num_frames or len(z)
        step = min(chunk or self.decode_chunk or clip, clip)
        out = []
        with vae_precision(self.device):
            for c0 in range(0, len(z), clip):
                c1 = min(c0 + clip, len(z))
                for a in range(c0, c1, step):
                    zi = z[a : min(a + step, c1)].to(self.device, self.vae_dtype) / self.scaling_factor
                    img = self.vae.decode(zi, num_frames=len(zi), return_dict=False)[0].float()
                    out.append(((img + 1) / 2).clamp(0, 1))
                    self.counters.vae_decodes += len(zi)
        return torch.cat(out)

    @torch.no_grad()
    def embed_image(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings (N, D) of frames (N, H, W, 3) uint8: resized to 224 x 224 in [-1, 1]
        with antialiasing (as the SVD pipeline), then CLIP's mean/std."""
        x = self._pixels(frames).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        s = self.image_size
        x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False, antialias=True)
        x = ((x + 1) / 2).clamp(0, 1)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        enc_dtype = next(self.image_encoder.parameters()).dtype
        emb = self.image_encoder(pixel_values=((x - mean) / std).to(enc_dtype)).image_embeds
        self.counters.image_encodes += len(x)
        return emb.float()

    @torch.no_grad()
    def condition_on(self, frame: np.ndarray | torch.Tensor, seed: int = 0, index: int = 0) -> SVDCondition:
        """The :class:`SVDCondition` of a clip whose conditioning frame is ``frame`` (H, W, 3) uint8; the
        noise augmentation is seeded by (``seed``, ``index``). Also kept as ``self.last_condition``."""
        frame = self._pixels(frame)
        emb = self.embed_image(frame[None])[:, None]
        img = frame[None].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        g = torch.Generator().manual_seed(_cond_seed(seed, index))
        img = img + self.noise_aug_strength * torch.randn(img.shape, generator=g, dtype=torch.float32)
        with vae_precision(self.device):
            lat = self.vae.encode(img.to(self.device, self.vae_dtype)).latent_dist.mode().float()
        self.counters.vae_encodes += 1
        ids = torch.tensor(
            [[float(self.fps_id), float(self.motion_bucket_id), float(self.noise_aug_strength)]],
            device=self.device,
        )
        self.last_condition = SVDCondition(image_embeds=emb, image_latent=lat, added_time_ids=ids)
        return self.last_condition

    def to(self, device: str | torch.device) -> SVDBackbone:
        for m in (self.unet, self.vae, self.image_encoder):
            m.to(device)
        self.last_condition = None
        return self


# -------------------------------------------------------------------- model configs
def svd_unet_config(
    channels: tuple[int, ...], heads: tuple[int, ...], cross_dim: int, time_dim: int, sample: int
) -> dict[str, Any]:
    """The SVD UNet layout (3 spatio-temporal cross-attention down blocks, 3 cross-attention up blocks
    after a plain one; 8 input channels; 3 added time ids), at any width."""
    return dict(
        sample_size=sample,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
        up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
        block_out_channels=channels,
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=3 * time_dim,
        layers_per_block=2,
        cross_attention_dim=cross_dim,
        transformer_layers_per_block=1,
        num_attention_heads=heads,
        num_frames=14,
    )


def svd_vae_config(channels: tuple[int, ...], layers: int, sample: int) -> dict[str, Any]:
    """The SVD VAE (SD's encoder, a temporal decoder; 8x, 4 latent channels, scaling factor 0.18215)."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        block_out_channels=channels,
        layers_per_block=layers,
        latent_channels=4,
        sample_size=sample,
        scaling_factor=0.18215,
        force_upcast=True,
    )


def tiny_svd_configs() -> dict[str, dict[str, Any]]:
    """Small configs with the real SVD block layout (4 up blocks, spatio-temporal attention in 1-3)."""
    return dict(
        unet=svd_unet_config((32, 64, 64, 64), (2, 4, 4, 4), 32, 8, 8),
        vae=svd_vae_config((32, 32, 64, 64), 1, 64),
        image_encoder=dict(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            image_size=32,
            patch_size=4,
            projection_dim=32,
            hidden_act="gelu",
        ),
        scheduler=dict(SVD_SCHEDULER),
    )


def svd_configs() -> dict[str, dict[str, Any]]:
    """The real ``stable-video-diffusion-img2vid`` configs (UNet 1.52B, VAE 98M, ViT-H/14 632M): for FLOP
    counts on the ``meta`` device and full-size random-weight benchmarks (``load_backbone("random-svd")``)."""
    return dict(
        unet=svd_unet_config((320, 640, 1280, 1280), (5, 10, 20, 20), 1024, 256, 96),
        vae=svd_vae_config((128, 256, 512, 512), 2, 768),
        image_encoder=dict(
            hidden_size=1280,
            intermediate_size=5120,
            num_attention_heads=16,
            num_hidden_layers=32,
            image_size=224,
            patch_size=14,
            projection_dim=1024,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
        ),
        scheduler=dict(SVD_SCHEDULER),
    )


def build_svd_components(
    cfg: dict[str, dict[str, Any]], seed: int = 0, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Random-weight UNet, temporal VAE, CLIP image encoder and scheduler from ``cfg`` (no download)."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNetSpatioTemporalConditionModel(**cfg["unet"])
        vae = AutoencoderKLTemporalDecoder(**cfg["vae"])
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg["image_encoder"]))
    for m in (unet, vae, image_encoder):  # .to: diffusers' AlphaBlender makes its mix factor on the CPU
        m.to(device).eval().requires_grad_(False)
    return dict(
        unet=unet,
        vae=vae,
        image_encoder=image_encoder,
        scheduler=EulerDiscreteScheduler(**cfg["scheduler"]),
    )


def build_tiny_svd_components(seed: int = 0) -> dict[str, Any]:
    """The tiny random SVD (real block layout and module names) built offline."""
    return build_svd_components(tiny_svd_configs(), seed)


def build_random_svd(device: str | torch.device = "cpu", seed: int = 0) -> SVDBackbone:
    """A full-size SVD (img2vid) with random weights (``device="meta"``: shapes only, no memory)."""
    comps = build_svd_components(svd_configs(), seed, device)
    return SVDBackbone(
        unet=comps["unet"],
        vae=comps["vae"],
        image_encoder=comps["image_encoder"],
        scheduler_config=dict(comps["scheduler"].config),
        source=RANDOM_SVD,
        is_random=True,
    )


def save_svd_components(components: dict[str, Any], folder: str | Path) -> Path:
    """Write SVD components as a diffusers folder (``unet/``, ``vae/``, ``image_encoder/``,
    ``feature_extractor/``, ``scheduler/``) with a ``StableVideoDiffusionPipeline`` ``model_index.json``."""
    import diffusers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("unet", "vae", "image_encoder", "scheduler"):
        components[name].save_pretrained(folder / name)
    size = int(components["image_encoder"].config.image_size)
    preproc = dict(
        do_resize=True,
        size={"shortest_edge": size},
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
        resample=3,
        image_processor_type="CLIPImageProcessor",
    )
    (folder / "feature_extractor").mkdir(exist_ok=True)
    (folder / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(preproc, indent=2))
    index = {
        "_class_name": "StableVideoDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", type(components["scheduler"]).__name__],
        "unet": ["diffusers", SVD_UNET_CLASS],
        "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def work_formula(n_labels: int, t_m: int = 17, n_steps: int = 25, n_frames: int = 14) -> dict[str, float]:
    """Work per frame of the full method with SVD (L labels in the batch, F frames per batch):
    (n - t_m) x 2 x (1 + 2L) UNet samples, 2L decodes, 1 + 1/F VAE encodes, 1/F CLIP image encodes."""
    return {
        "unet_samples": (n_steps - t_m) * 2 * (1 + 2 * n_labels),
        "vae_encodes": 1 + 1 / n_frames,
        "vae_decodes": 2 * n_labels,
        "image_encodes": 1 / n_frames,
    }
