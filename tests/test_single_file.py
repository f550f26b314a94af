"""Loading a single original-format checkpoint (``.safetensors`` / ``.ckpt``, as SD 2.x files on the Hub are):
the tiny model written by ``ldm_format`` and read back through ``load_backbone(file, config=folder)``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from ldm_format import TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX, components_to_ldm

from vidseg_nb.backbone import BackboneLoadError, build_tiny_components, save_components
from vidseg_nb.loading import load_backbone

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")


@pytest.fixture(scope="module")
def single_file(tmp_path_factory):
    """The tiny model (seed 0) as a config-only diffusers folder plus one original-format ``.safetensors``."""
    root = tmp_path_factory.mktemp("single_file")
    comps = build_tiny_components(seed=0)
    folder = save_components(comps, root / "tiny-sd")
    # Keep only the configs (and the tokenizer): diffusers falls back to a component's weights in the config
    # folder when it finds none in the file, which would let a broken conversion pass unnoticed.
    for f in list(folder.rglob("*")):
        if f.suffix in WEIGHT_SUFFIXES:
            f.unlink()
    assert not [f for f in folder.rglob("*") if f.suffix in WEIGHT_SUFFIXES]
    ckpt = components_to_ldm(comps)
    path = root / "tiny-sd2.safetensors"
    safetensors.torch.save_file(ckpt, str(path))
    return dict(comps=comps, folder=folder, ckpt=ckpt, path=path, root=root)


@pytest.fixture(scope="module")
def reference():
    """The original tiny model (seed 0), not shared with other test modules."""
    return load_backbone("tiny", device="cpu")


def _frames(n: int = 2, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _assert_same_parameters(got: torch.nn.Module, want: torch.nn.Module) -> None:
    a, b = dict(got.named_parameters()), dict(want.named_parameters())
    assert a.keys() == b.keys()
    bad = [k for k in a if a[k].device.type == "meta" or not torch.equal(a[k], b[k])]
    assert not bad, f"{len(bad)} parameters differ, e.g. {bad[:3]}"


def test_round_trip_through_original_format_safetensors(single_file, reference):
    path, folder = single_file["path"], single_file["folder"]
    bb = load_backbone(path, device="cpu", config=str(folder))
    assert bb.source == str(path) and not bb.is_random
    _assert_same_parameters(bb.unet, single_file["comps"]["unet"])
    _assert_same_parameters(bb.vae, single_file["comps"]["vae"])
    _assert_same_parameters(bb.unet, reference.unet)
    # the text encoder only shows through the empty-prompt states
    assert torch.equal(bb.cond_states, reference.cond_states)
    # the scheduler config came from the folder: same prediction type, same trailing sigmas
    assert bb.prediction_type == reference.prediction_type == "epsilon"
    assert torch.equal(bb.sigmas, reference.sigmas) and torch.equal(bb.timesteps, reference.timesteps)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(bb.unet_eps(x, 20, 5.0), reference.unet_eps(x, 20, 5.0))
    frames = _frames()
    assert torch.equal(bb.encode(frames), reference.encode(frames))


def test_converter_inverts_diffusers_single_file_converters(single_file):
    """diffusers' own LDM -> diffusers converters give back the original state dicts, key for key."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    comps, ckpt = single_file["comps"], single_file["ckpt"]
    assert all(k.startswith((UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX)) for k in ckpt)
    text = comps["text_encoder"]
    back = dict(
        unet=convert_ldm_unet_checkpoint(ckpt, dict(comps["unet"].config)),
        vae=convert_ldm_vae_checkpoint(ckpt, dict(comps["vae"].config)),
        # older transformers wrap the text model in ``text_model.``; diffusers strips it when it is flat
        text_encoder={
            k.removeprefix("text_model."): v for k, v in convert_open_clip_checkpoint(text, ckpt).items()
        },
    )
    for name, sd in back.items():
        want = comps[name].state_dict()
        want = {k.removeprefix("text_model."): v for k, v in want.items() if not k.endswith("position_ids")}
        assert sd.keys() == want.keys(), name
        bad = [k for k in want if not torch.equal(sd[k], want[k])]
        assert not bad, f"{name}: {bad[:3]}"
    # a few names and shapes as the original SD 2.x checkpoints have them
    assert ckpt[UNET_PREFIX + "input_blocks.3.0.op.weight"].shape == (32, 32, 3, 3)  # first downsampler
    assert UNET_PREFIX + "output_blocks.2.1.conv.weight" in ckpt  # upsampler after a plain up block
    assert UNET_PREFIX + "output_blocks.5.2.conv.weight" in ckpt  # ... and after a transformer
    assert UNET_PREFIX + "middle_block.1.transformer_blocks.0.attn2.to_k.weight" in ckpt
    assert ckpt[VAE_PREFIX + "encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)  # 1x1 convolution
    assert ckpt[VAE_PREFIX + "decoder.up.3.block.1.conv1.weight"].shape[0] == 64  # up.3: lowest resolution
    assert ckpt[VAE_PREFIX + "decoder.up.0.block.0.conv1.weight"].shape[0] == 32
    qkv = ckpt[TEXT_PREFIX + "transformer.resblocks.1.attn.in_proj_weight"]
    sa = text.state_dict()
    q, k, v = (sa[f"encoder.layers.1.self_attn.{p}_proj.weight"] for p in "qkv")
    assert torch.equal(qkv, torch.cat([q, k, v]))
    assert ckpt[TEXT_PREFIX + "positional_embedding"].shape == (77, 32)


def test_ckpt_variant_loads(single_file, reference):
    path = single_file["root"] / "tiny-sd2.ckpt"
    torch.save({"state_dict": single_file["ckpt"], "global_step": 875000}, path)
    bb = load_backbone(path, device="cpu", config=str(single_file["folder"]))
    _assert_same_parameters(bb.unet, reference.unet)
    _assert_same_parameters(bb.vae, reference.vae)
    assert torch.equal(bb.cond_states, reference.cond_states)


@pytest.mark.parametrize("kind", ["garbage.safetensors", "truncated.safetensors", "garbage.ckpt"])
def test_corrupt_single_file_gives_clear_error(single_file, tmp_path, kind):
    bad = tmp_path / kind
    if kind.startswith("truncated"):
        data = Path(single_file["path"]).read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(b"\x00\x17 this is not a checkpoint \xff" * 64)
    with pytest.raises(BackboneLoadError) as e:
        load_backbone(bad, device="cpu", config=str(single_file["folder"]))
    assert str(bad) in str(e.value)


def test_single_file_without_configs_names_what_is_missing(single_file, monkeypatch):
    """Offline, without ``config=`` and without the default model's configs in the cache: one clear error
    saying the file needs its component configs and how to pass them."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(single_file["root"] / "empty-hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(single_file["root"] / "empty-hf-home" / "hub"))
    with pytest.raises(BackboneLoadError) as e:
        load_backbone(single_file["path"], device="cpu")
    msg = str(e.value)
    assert "--model-config" in msg and "configs" in msg and str(single_file["path"]) in msg


def test_v_prediction_is_inferred_from_a_sibling_yaml(single_file, tmp_path):
    """An SD 2.x file whose original config says ``parameterization: "v"`` is sampled as v-prediction."""
    import shutil

    from vidseg_nb.loading import single_file_parameterization

    path = tmp_path / "tiny-v.safetensors"
    shutil.copy(single_file["path"], path)
    assert single_file_parameterization(path) is None
    eps = load_backbone(path, device="cpu", config=str(single_file["folder"]))
    assert eps.prediction_type == "epsilon"
    path.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert single_file_parameterization(path) == "v"
    bb = load_backbone(path, device="cpu", config=str(single_file["folder"]))
    assert bb.prediction_type == "v_prediction"
