"""The toy world (clips, captions, tokenizer), `vidseg train-toy`'s mechanics, and the shipped toy model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vidseg_nb.toy import manifest, model_path, world
from vidseg_nb.toy.tokenizer import bpe, check_words, write_word_tokenizer
from vidseg_nb.toy.train import TrainSettings, build_pool, crop_caption, file_hashes, name_caption, train_toy


def test_clip_labels_objects_and_captions_agree():
    c = world.make_toy_clip(9001, n_frames=6, size=128, n_objects=3)
    assert c.frames.shape == (6, 128, 128, 3) and c.labels.shape == (6, 128, 128)
    assert set(np.unique(c.labels)) <= {0, 1, 2, 3}
    assert len({o.colour for o in c.objects}) == 3  # distinct colours
    for t, cap in enumerate(c.captions):
        assert cap.startswith(world.TEMPLATE)
        for i, o in enumerate(c.objects):
            visible = (c.labels[t] == i + 1).sum() >= 0.003 * 128 * 128
            assert (o.phrase in cap) == visible
    # the object's pixels have its colour word's hue
    import colorsys

    for i, o in enumerate(c.objects):
        px = c.frames[0][c.labels[0] == i + 1].astype(float).mean(0) / 255
        hue = colorsys.rgb_to_hsv(*px)[0]
        d = min(abs(hue - world.COLOURS[o.colour]), 1 - abs(hue - world.COLOURS[o.colour]))
        assert d < 1 / 12, (o, hue)


def test_clips_are_seeded_and_eval_seeds_are_held_out():
    a, b = world.make_toy_clip(5, 3, 64), world.make_toy_clip(5, 3, 64)
    assert np.array_equal(a.frames, b.frames) and a.captions == b.captions
    assert not np.array_equal(a.frames, world.make_toy_clip(6, 3, 64).frames)
    assert not set(world.EVAL_SEEDS) & set(world.TRAIN_SEEDS)


def test_word_tokenizer_each_word_one_token(tmp_path):
    from transformers import CLIPTokenizer

    words = world.vocabulary()
    tok = CLIPTokenizer.from_pretrained(str(write_word_tokenizer(tmp_path, words)), model_max_length=77)
    assert check_words(tok, words) == []
    ids = tok(
        world.caption([world.ToyObject("red", "striped", "circle")]), add_special_tokens=False
    ).input_ids
    assert len(ids) == len("a photo of a red striped circle".split())
    # any other text still tokenizes (the character alphabet is kept), into several tokens
    assert len(tok("zebra", add_special_tokens=False).input_ids) > 1
    # our BPE simulation agrees with the tokenizer's own
    ranks = {
        tuple(line.split()): i
        for i, line in enumerate((tmp_path / "merges.txt").read_text().splitlines()[1:])
    }
    for w in words + ["circlex", "redd"]:
        assert [t for t in bpe(w, ranks)] == tok.tokenize(w)


def test_crop_captions_name_only_visible_objects():
    st = TrainSettings(n_clips=3, frames_per_clip=2, size=128)
    pool = build_pool(st, progress=False)
    g = torch.Generator().manual_seed(0)
    clip = world.make_toy_clip(world.TRAIN_SEEDS[0], 2, 128)
    for y, x in ((0, 0), (8, 8), (4, 0)):
        cap = crop_caption(pool, 0, y, x, 8, 8, 48, g)
        for i, o in enumerate(clip.objects):
            px = (clip.labels[0, y * 8 : y * 8 + 64, x * 8 : x * 8 + 64] == i + 1).sum()
            assert (o.phrase in cap) == (px >= 48), (y, x, o, px, cap)


def test_name_captions_are_the_names_prompt_for_the_most_visible_object():
    # TrainSettings.p_name: "a photo of a {colour or shape}" of the crop's largest visible object
    from vidseg_nb.names import DEFAULT_TEMPLATE

    st = TrainSettings(n_clips=3, frames_per_clip=2, size=128)
    pool = build_pool(st, progress=False)
    clip = world.make_toy_clip(world.TRAIN_SEEDS[0], 2, 128)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for y, x in ((0, 0), (8, 8), (4, 0), (0, 8), (8, 0)):
        px = [
            (clip.labels[0, y * 8 : y * 8 + 64, x * 8 : x * 8 + 64] == i + 1).sum()
            for i in range(len(clip.objects))
        ]
        for _ in range(6):
            cap = name_caption(pool, 0, y, x, 8, 8, 48, g)
            if max(px) < 48:
                assert cap == world.caption([])
                continue
            o = clip.objects[int(np.argmax(px))]
            assert cap in (DEFAULT_TEMPLATE.format(o.colour), DEFAULT_TEMPLATE.format(o.shape)), (cap, o)
            seen.add(cap == DEFAULT_TEMPLATE.format(o.colour))
    assert seen == {True, False}  # both kinds of word are drawn
    with pytest.raises(Exception, match="p_name"):
        TrainSettings(p_name=1.5).validate()
    assert TrainSettings().p_name == 0  # the shipped plan never uses it


SMALL = dict(
    n_clips=2, frames_per_clip=2, size=64, vae_crop=32, unet_crop=4, vae_steps=6, unet_steps=6, full_batch=2
)


def _weights(folder):
    from safetensors.torch import load_file

    return {k: load_file(str(folder / k / "diffusion_pytorch_model.safetensors")) for k in ("unet", "vae")}


def test_train_toy_resume_equals_uninterrupted_run(tmp_path):
    a = train_toy(tmp_path / "a", TrainSettings(**SMALL), progress=False, log=lambda m: None)
    # interrupted once in the VAE phase and once in the UNet phase
    stops = {("vae", 3), ("unet", 2)}
    halt = lambda phase, step: (phase, step) in stops  # noqa: E731
    out = tmp_path / "b"
    assert train_toy(out, TrainSettings(**SMALL), progress=False, halt=halt, log=lambda m: None) is None
    assert train_toy(out, resume=True, progress=False, halt=halt, log=lambda m: None) is None
    b = train_toy(out, resume=True, progress=False, log=lambda m: None)
    wa, wb = _weights(a), _weights(b)
    for k in wa:
        for name in wa[k]:
            assert torch.equal(wa[k][name], wb[k][name]), (k, name)
    assert (out / "loss.png").stat().st_size > 0
    man = manifest(b)
    assert man["files"] == file_hashes(b) and man["training"]["plan"]["unet_steps"] == 6
    # the folder loads like any diffusers folder
    from vidseg_nb import load_backbone

    bb = load_backbone(str(b), device="cpu")
    assert not bb.is_random and abs(bb.scaling_factor - man["training"]["scaling_factor"]) < 1e-3


def test_finetune_script_continues_a_finished_run(tmp_path):
    # scripts/toy_finetune.py (docs/toy.md's experiments): UNet + text encoder move, the VAE is kept
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "toy_finetune.py"
    spec = importlib.util.spec_from_file_location("toy_finetune", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    run = tmp_path / "run"
    base = train_toy(run, TrainSettings(**SMALL), progress=False, log=lambda m: None)
    out = tmp_path / "ft"
    assert mod.main(["--run", str(run), "--out", str(out), "--steps", "3", "--p-name", "1"]) == 0
    wa, wb = _weights(base), _weights(out / "model")
    assert all(torch.equal(wa["vae"][k], wb["vae"][k]) for k in wa["vae"])
    assert any(not torch.equal(wa["unet"][k], wb["unet"][k]) for k in wa["unet"])
    rows = json.loads((out / "losses.json").read_text())["rows"]
    assert rows[-1]["step"] == 3 and rows[-1]["full_from"] == 0  # every step on whole latents
    halt = lambda phase, step: phase == "unet" and step == 1  # noqa: E731
    train_toy(tmp_path / "half", TrainSettings(**SMALL), progress=False, halt=halt, log=lambda m: None)
    with pytest.raises(SystemExit, match="not a finished run"):
        mod.main(["--run", str(tmp_path / "half"), "--out", str(tmp_path / "ft2"), "--steps", "1"])


def test_train_toy_refuses_to_overwrite_a_run(tmp_path):
    from vidseg_nb.errors import ConfigError

    halt = lambda phase, step: step == 1  # noqa: E731
    train_toy(tmp_path, TrainSettings(**SMALL), progress=False, halt=halt, log=lambda m: None)
    with pytest.raises(ConfigError, match="--resume"):
        train_toy(tmp_path, TrainSettings(**SMALL), progress=False, log=lambda m: None)
    with pytest.raises(ConfigError, match="multiple of 64"):
        TrainSettings(size=100).validate()


def test_cli_train_toy_writes_a_model(tmp_path, capsys):
    from vidseg_nb.cli import main

    argv = ["train-toy", "--out", str(tmp_path), "--clips", "2", "--frames-per-clip", "2", "--size", "64"]
    assert main(argv + ["--vae-steps", "2", "--unet-steps", "2", "--quiet"]) == 2  # crop 16 > latent 8
    assert "UNet crop" in capsys.readouterr().err


def test_cli_train_toy_defaults_to_the_shipped_plan():
    # a from-scratch `vidseg train-toy` does the shipped model's steps on any machine; --minutes plans
    from vidseg_nb.cli import build_parser, train_settings
    from vidseg_nb.toy.train import SHIPPED_STEPS

    p = build_parser()
    plain = train_settings(p.parse_args(["train-toy"]))
    assert (plain.vae_steps, plain.unet_steps) == SHIPPED_STEPS
    if (model_path() / "MANIFEST.json").is_file():  # the constant is the shipped model's own plan
        plan = manifest()["training"]["plan"]
        assert SHIPPED_STEPS == (plan["vae_steps"], plan["unet_steps"])
    timed = train_settings(p.parse_args(["train-toy", "--minutes", "5"]))
    assert timed.minutes == 5 and timed.vae_steps is None and timed.unet_steps is None
    fixed = train_settings(p.parse_args(["train-toy", "--vae-steps", "3", "--unet-steps", "4"]))
    assert (fixed.vae_steps, fixed.unet_steps) == (3, 4)


needs_model = pytest.mark.skipif(
    not (model_path() / "model_index.json").is_file(), reason="the toy model is not in this checkout"
)


@needs_model
def test_shipped_toy_model_matches_its_manifest():
    man = manifest()
    assert man["files"] == file_hashes(model_path())
    assert sum((model_path() / f).stat().st_size for f in man["files"]) <= 10 * 2**20
    assert man["command"].startswith("vidseg train-toy") and man["commit"]
    assert man["quality"]["summary"]["full_mIoU"] > 0


@needs_model
def test_load_toy_offline(monkeypatch):
    from vidseg_nb import load_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bb = load_backbone("toy", device="cpu")
    assert bb.source == "toy" and not bb.is_random
    assert check_words(bb.tokenizer, world.vocabulary()) == []
    assert next(bb.unet.parameters()).dtype == torch.float32
    json.dumps(manifest())  # plain JSON


@needs_model
def test_demo_banner_says_what_the_toy_model_is(monkeypatch):
    pytest.importorskip("gradio")
    import demo.handlers as H
    from vidseg_nb import load_backbone

    rt = H.runtime()
    monkeypatch.setattr(rt.models, "peek", lambda m: load_backbone("toy", device="cpu"))
    monkeypatch.setattr(rt.models, "error", lambda m: None)
    text = H.banner_markdown("toy")
    assert "Toy model" in text and "not real video" in text and "not meaningful" not in text
