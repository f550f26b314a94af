"""Test helper: write a diffusers SD 2.x model as one original-format (LDM / Stability ``sgm``) state dict.

The inverse of what ``StableDiffusionPipeline.from_single_file`` reads, so the single-file loading path can be
exercised offline with the tiny random model:

* UNet -> ``model.diffusion_model.*`` (``time_embed``, ``input_blocks``, ``middle_block``, ``output_blocks``,
  ``out``);
* VAE -> ``first_stage_model.*`` (``encoder.down.N.block.M``, ``mid.block_1``, ``mid.attn_1`` with ``q``/``k``/
  ``v``/``proj_out`` as 1x1 convolutions, ``decoder.up.N`` numbered from the lowest resolution, ``norm_out``,
  ``quant_conv``);
* CLIP text encoder -> ``cond_stage_model.model.*`` (the OpenCLIP text tower of SD 2.x: ``token_embedding``,
  ``positional_embedding``, ``transformer.resblocks.N`` with ``attn.in_proj_*`` holding q, k, v stacked,
  ``ln_final``, ``text_projection``).

Every diffusers key must be mapped: a key this module does not know raises ``KeyError`` rather than being
dropped, so a wrong mapping cannot pass silently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."

# diffusers ResnetBlock2D (UNet) -> LDM ResBlock
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# diffusers ResnetBlock2D (VAE) -> LDM ResnetBlock: same names except the shortcut
_VAE_RESNET = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}
# diffusers Attention (VAE mid block) -> LDM AttnBlock
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_TOP = {"conv_norm_out": "norm_out"}  # under encoder./decoder.; conv_in, conv_out keep their names
_CLIP_LAYER = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def _split_module(rest: str, table: Mapping[str, str], what: str) -> str:
    """``"<module>.<weight|bias>"`` renamed through ``table`` (the module may contain dots)."""
    module, _, param = rest.rpartition(".")
    if module not in table:
        raise KeyError(f"unmapped {what} parameter {rest!r}")
    return f"{table[module]}.{param}"


# ------------------------------------------------------------------------------------------ UNet
def unet_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers ``UNet2DConditionModel`` state dict -> ``model.diffusion_model.*`` keys.

    LDM numbers the UNet's layers flat: ``input_blocks.0`` is ``conv_in``; down block b contributes
    ``layers_per_block`` (resnet [, transformer]) entries and then, except for the last block, one downsampler;
    ``output_blocks`` hold ``layers_per_block + 1`` entries per up block, the upsampler riding in the last entry
    of every block but the last (after the transformer when the block has one). The transformers themselves
    (``norm``, ``proj_in``, ``transformer_blocks.*``, ``proj_out``) use the same names in both formats.
    """
    per_down = int(config["layers_per_block"])
    per_up = per_down + 1
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m_top = key.rpartition(".")[0]
        if m_top in _UNET_TOP:
            new = f"{_UNET_TOP[m_top]}.{key.rpartition('.')[2]}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            idx = 1 + b * (per_down + 1) + j
            if kind == "resnets":
                new = f"input_blocks.{idx}.0.{_split_module(rest, _UNET_RESNET, 'resnet')}"
            else:
                new = f"input_blocks.{idx}.1.{rest}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key):
            idx = 1 + int(m[1]) * (per_down + 1) + per_down
            new = f"input_blocks.{idx}.0.op.{m[2]}"
        elif m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
            kind, j, rest = m[1], int(m[2]), m[3]
            if kind == "resnets":  # resnet, transformer, resnet
                new = f"middle_block.{2 * j}.{_split_module(rest, _UNET_RESNET, 'resnet')}"
            else:
                new = f"middle_block.1.{rest}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            idx = b * per_up + j
            if kind == "resnets":
                new = f"output_blocks.{idx}.0.{_split_module(rest, _UNET_RESNET, 'resnet')}"
            else:
                new = f"output_blocks.{idx}.1.{rest}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key):
            b = int(m[1])
            slot = 2 if up_has_attn[b] else 1
            new = f"output_blocks.{b * per_up + per_up - 1}.{slot}.conv.{m[2]}"
        else:
            raise KeyError(f"unmapped UNet parameter {key!r}")
        out[UNET_PREFIX + new] = value
    return out


# ------------------------------------------------------------------------------------------ VAE
def _vae_part(part: str, rest: str, n_blocks: int) -> str:
    """One encoder/decoder key (without the ``encoder.``/``decoder.`` part) in LDM names."""
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        # LDM numbers the decoder's up blocks from the lowest resolution: diffusers' up_blocks.0 is up.{n-1}
        i = int(m[2]) if m[1] == "down" else n_blocks - 1 - int(m[2])
        return f"{m[1]}.{i}.block.{m[3]}.{_split_module(m[4], _VAE_RESNET, 'VAE resnet')}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", rest):
        return f"down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", rest):
        return f"up.{n_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest):
        return f"mid.block_{int(m[1]) + 1}.{_split_module(m[2], _VAE_RESNET, 'VAE resnet')}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
        return f"mid.attn_1.{_split_module(m[1], _VAE_ATTN, 'VAE attention')}"
    module, _, param = rest.rpartition(".")
    if module in ("conv_in", "conv_out"):
        return rest
    if module in _VAE_TOP:
        return f"{_VAE_TOP[module]}.{param}"
    raise KeyError(f"unmapped VAE {part} parameter {rest!r}")


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKL`` state dict -> ``first_stage_model.*`` keys.

    The mid-block attention's linear q/k/v/out weights become 1x1 convolution kernels (``(C, C, 1, 1)``), as the
    original ``AttnBlock`` stores them.
    """
    n_down = len(config["down_block_types"])
    n_up = len(config["up_block_types"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        part, _, rest = key.partition(".")
        if part in ("encoder", "decoder"):
            new = f"{part}.{_vae_part(part, rest, n_down if part == 'encoder' else n_up)}"
            if ".mid.attn_1." in new and new.endswith(".weight") and value.ndim == 2:
                value = value[:, :, None, None]
        elif key.rpartition(".")[0] in ("quant_conv", "post_quant_conv"):
            new = key
        else:
            raise KeyError(f"unmapped VAE parameter {key!r}")
        out[VAE_PREFIX + new] = value.contiguous()
    return out


# ------------------------------------------------------------------------------------------ text encoder
def open_clip_to_ldm(
    state: Mapping[str, torch.Tensor],
    config: Any,
    text_projection: torch.Tensor | None = None,
    logit_scale: float | None = math.log(1 / 0.07),
) -> dict[str, torch.Tensor]:
    """A transformers ``CLIPTextModel`` state dict -> the OpenCLIP text tower under ``cond_stage_model.model.``.

    ``nn.MultiheadAttention`` keeps q, k and v as one ``in_proj`` matrix (rows q, then k, then v). OpenCLIP's
    ``text_projection`` is a bare ``(width, embed_dim)`` matrix applied as ``x @ P``; SD 2.x never uses it (it
    reads the token states), but real checkpoints carry it and loaders read its shape, so one is written
    (``text_projection`` or a seeded random ``(hidden, projection_dim)`` matrix), with ``logit_scale``.
    """
    hidden = int(config.hidden_size)
    layers: dict[int, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("text_model.")  # transformers < 5.6 wraps the text model
        if key.endswith("position_ids"):  # a buffer, not a weight (absent in new transformers)
            continue
        if key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value  # a bare parameter in OpenCLIP
        elif key.startswith("final_layer_norm."):
            out["ln_final." + key.rpartition(".")[2]] = value
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)", key):
            layers.setdefault(int(m[1]), {})[f"{m[2]}.{m[3]}"] = value
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", key):
            out[f"transformer.resblocks.{m[1]}.{_split_module(m[2], _CLIP_LAYER, 'CLIP layer')}"] = value
        else:
            raise KeyError(f"unmapped CLIP text parameter {key!r}")
    for n, qkv in sorted(layers.items()):
        for param in ("weight", "bias"):
            parts = [qkv[f"{p}.{param}"] for p in "qkv"]
            if any(t.shape[0] != hidden for t in parts):
                raise ValueError(f"layer {n}: q/k/v {param} rows differ from hidden_size {hidden}")
            out[f"transformer.resblocks.{n}.attn.in_proj_{param}"] = torch.cat(parts, dim=0)
    if text_projection is None:
        g = torch.Generator().manual_seed(0)
        proj_dim = int(getattr(config, "projection_dim", hidden))
        text_projection = torch.randn(hidden, proj_dim, generator=g) * hidden**-0.5
    out["text_projection"] = text_projection
    if logit_scale is not None:
        out["logit_scale"] = torch.tensor(float(logit_scale))
    return {TEXT_PREFIX + k: v.contiguous() for k, v in out.items()}


# ------------------------------------------------------------------------------------------ all of it
def components_to_ldm(components: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """UNet + VAE + text encoder of a diffusers SD 2.x model (``build_tiny_components()``) -> one original
    state dict, ready for ``safetensors.torch.save_file`` (tensors detached, contiguous, on the CPU)."""
    unet, vae, text = components["unet"], components["vae"], components["text_encoder"]

    def cpu(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in sd.items()}

    ckpt: dict[str, torch.Tensor] = {}
    ckpt.update(unet_to_ldm(cpu(unet.state_dict()), unet.config))
    ckpt.update(vae_to_ldm(cpu(vae.state_dict()), vae.config))
    ckpt.update(open_clip_to_ldm(cpu(text.state_dict()), text.config))
    # safetensors refuses tensors that share memory (e.g. tied weights): give each its own storage
    return {k: v.clone().contiguous() for k, v in ckpt.items()}
