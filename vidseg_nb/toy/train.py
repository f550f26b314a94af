"""Train the toy model: the tiny SD 2.x layout (8x VAE, cross-attention UNet, CLIP text encoder) on toy-world
clips with captions (``vidseg train-toy``).

Recipe (the reasons are in ``docs/toy.md``):

1. Data: ``n_clips`` toy clips (:func:`~vidseg_nb.toy.world.make_toy_clip`, seeds
   :data:`~vidseg_nb.toy.world.TRAIN_SEEDS`) of ``frames_per_clip`` frames at ``size`` px, regenerated
   from their seeds (a resumed run rebuilds the same pool); per frame and object the share of each 8x8
   cell it covers, so a crop's caption names just the objects visible in it.
2. VAE (``vae_share`` of the time): random ``vae_crop`` px crops and flips, L1 + MSE + 1e-4 KL per
   dimension, Adam with a cosine decay. Then the latents of every frame (posterior mean) and the
   ``scaling_factor`` = 1 / their standard deviation.
3. UNet and text encoder together: epsilon prediction on the DDPM ``scaled_linear`` schedule of SD,
   captions of the crop; ``p_empty`` of the captions replaced by the empty prompt (the method's
   conditional states) and ``p_zero`` of the states by zeros (the method's unconditional half, as the
   authors' guidance pairs them). First random ``unet_crop`` x ``unet_crop`` latent crops (128 px, cheap),
   the last ``full_share`` of the steps on whole ``size`` px latents (the size the method runs at).

Everything is drawn from one seeded generator; a checkpoint (models, optimisers, generator, losses) is
written every ``checkpoint_s`` seconds and at the end of each phase, and ``resume=True`` continues from it
exactly (same weights as an uninterrupted run with the same plan). ``minutes`` fixes the plan (steps per
phase) from the measured speed of the first steps; ``vae_steps``/``unet_steps`` fix it by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..backbone import SCALED_LINEAR, tiny_configs
from ..errors import ConfigError
from ..names import DEFAULT_TEMPLATE
from . import world
from .tokenizer import check_words, write_word_tokenizer

__all__ = [
    "SHIPPED_STEPS",
    "TrainSettings",
    "build_toy_components",
    "save_toy_model",
    "train_toy",
    "write_manifest",
]

CHECKPOINT = "checkpoint.pt"
# (VAE steps, UNet steps) of the shipped model (its MANIFEST.json plan): `vidseg train-toy` without
# --minutes runs this plan, so a from-scratch run does the same work on any machine (docs/toy.md)
SHIPPED_STEPS = (2470, 5233)


@dataclass
class TrainSettings:
    """Every setting of a toy training run (written into the checkpoint and the manifest)."""

    minutes: float = 40.0
    seed: int = 0
    n_clips: int = 400
    frames_per_clip: int = 6
    size: int = 256
    vae_share: float = 0.2
    vae_crop: int = 64
    vae_batch: int = 8
    vae_lr: float = 1e-3
    unet_batch: int = 16
    unet_crop: int = 16
    full_share: float = 0.3
    full_batch: int = 8
    unet_lr: float = 5e-4
    p_empty: float = 0.15
    p_zero: float = 0.10
    p_name: float = 0.0  # share of crops captioned "a photo of a {word}" (the names' prompt; 0: never)
    min_visible_px: int = 48
    vae_steps: int | None = None
    unet_steps: int | None = None
    checkpoint_s: float = 120.0

    def validate(self) -> None:
        if self.minutes <= 0 and (self.vae_steps is None or self.unet_steps is None):
            raise ConfigError("train-toy: give --minutes > 0, or both --vae-steps and --unet-steps")
        if self.size % 64 or self.size < 64:
            raise ConfigError("train-toy: --size must be a multiple of 64")
        if self.vae_crop % 8 or not 8 <= self.vae_crop <= self.size:
            raise ConfigError("train-toy: the VAE crop must be a multiple of 8 within the frame")
        if not 0 <= self.p_name <= 1:
            raise ConfigError("train-toy: p_name is a probability in [0, 1]")
        if not 1 <= self.unet_crop <= self.size // 8:
            raise ConfigError("train-toy: the UNet crop (latent cells) must fit the latent")
        if self.n_clips < 1 or self.frames_per_clip < 1:
            raise ConfigError("train-toy: needs at least one clip of one frame")


# ------------------------------------------------------------------ model


def build_toy_components(seed: int = 0, tokenizer_dir: str | Path | None = None) -> dict[str, Any]:
    """The tiny SD 2.x layout (:func:`vidseg_nb.backbone.tiny_configs`) with the word tokenizer of the toy
    world (each word of :func:`~vidseg_nb.toy.world.vocabulary` is one token); random weights."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    cfg = tiny_configs()
    with tempfile.TemporaryDirectory() as d:
        folder = write_word_tokenizer(tokenizer_dir or d, world.vocabulary())
        tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, model_max_length=77)
    bad = check_words(tokenizer, world.vocabulary())
    if bad:  # pragma: no cover - write_word_tokenizer guarantees it
        raise RuntimeError(f"toy tokenizer splits {bad}")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg["unet"])
    vae = AutoencoderKL(**cfg["vae"])
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            **cfg["text_encoder"],
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    sched = EulerDiscreteScheduler(**SCALED_LINEAR, prediction_type="epsilon")
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=sched)


# ------------------------------------------------------------------ data


@dataclass
class Pool:
    """Training frames (N, S, S, 3) uint8, per-object cell coverage (N, O, S/8, S/8) float32 and the words
    of each frame's objects (``objects[n][i]`` is object channel ``i``)."""

    frames: np.ndarray
    cover: np.ndarray
    objects: list[tuple[world.ToyObject, ...]]


def build_pool(st: TrainSettings, progress: bool = True) -> Pool:
    """The training pool of ``st`` (deterministic in the settings)."""
    frames, cover, objects = [], [], []
    s8 = st.size // 8
    for seed in tqdm(world.TRAIN_SEEDS[: st.n_clips], desc="toy data", disable=not progress, leave=False):
        c = world.make_toy_clip(seed, st.frames_per_clip, st.size)
        frames.append(c.frames)
        cov = np.zeros((len(c), len(world.COLOURS), s8, s8), np.float32)
        for i in range(len(c.objects)):
            m = (c.labels == i + 1).reshape(len(c), s8, 8, s8, 8)
            cov[:, i] = m.mean((2, 4))
        cover.append(cov)
        objects += [c.objects] * len(c)
    return Pool(np.concatenate(frames), np.concatenate(cover), objects)


def _crop_px(pool: Pool, n: int, y: int, x: int, h: int, w: int) -> np.ndarray:
    """Pixels of each object of frame ``n`` inside latent crop (y, x, h, w)."""
    return pool.cover[n, : len(pool.objects[n]), y : y + h, x : x + w].sum((1, 2)) * 64


def crop_caption(pool: Pool, n: int, y: int, x: int, h: int, w: int, min_px: int, g: torch.Generator) -> str:
    """Caption of latent crop (y, x, h, w) of frame ``n``: its visible objects, in a random order."""
    objs, px = pool.objects[n], _crop_px(pool, n, y, x, h, w)
    order = torch.randperm(len(objs), generator=g).tolist() if objs else []
    return world.caption([objs[i] for i in order if px[i] >= min_px])


def name_caption(pool: Pool, n: int, y: int, x: int, h: int, w: int, min_px: int, g: torch.Generator) -> str:
    """The names' prompt for latent crop (y, x, h, w) of frame ``n``: ``"a photo of a {word}"`` with the
    colour or the shape word (one draw) of the crop's most visible object; ``"a photo"`` if none is."""
    objs, px = pool.objects[n], _crop_px(pool, n, y, x, h, w)
    colour = bool(torch.rand(1, generator=g).item() < 0.5)
    if not objs or px.max() < min_px:
        return world.caption([])
    o = objs[int(px.argmax())]
    return DEFAULT_TEMPLATE.format(o.colour if colour else o.shape)


# ------------------------------------------------------------------ schedule


def _lr(base: float, step: int, total: int, warmup: int = 50) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


# ------------------------------------------------------------------ the run


@dataclass
class _State:
    settings: dict[str, Any]
    phase: str = "vae"
    step: int = 0
    plan: dict[str, int] = field(default_factory=dict)
    rows: list[dict[str, float]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    scaling_factor: float | None = None


def _save_ckpt(
    path: Path, state: _State, comps: dict[str, Any], opts: dict[str, Any], g: torch.Generator
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        dict(
            state=dataclasses.asdict(state),
            models={k: comps[k].state_dict() for k in ("unet", "vae", "text_encoder")},
            opts={k: o.state_dict() for k, o in opts.items()},
            generator=g.get_state(),
        ),
        tmp,
    )
    tmp.replace(path)


def plot_losses(rows: list[dict[str, float]], path: str | Path) -> Path:
    """Loss curves of both phases as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, phase, keys in ((axes[0], "vae", ("l1", "mse")), (axes[1], "unet", ("mse",))):
        r = [x for x in rows if x["phase"] == phase]
        for k in keys:
            ax.plot([x["step"] for x in r], [x[k] for x in r], label=k)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title({"vae": "VAE reconstruction", "unet": "UNet noise prediction (epsilon MSE)"}[phase])
        ax.legend()
        if phase == "unet" and r and "full_from" in r[-1]:
            ax.axvline(r[-1]["full_from"], color="gray", ls=":", lw=1)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def train_toy(
    out: str | Path,
    settings: TrainSettings | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    command: str | None = None,
    halt: Callable[[str, int], bool] | None = None,
) -> Path | None:
    """Train (or with ``resume`` continue) a toy model in ``out``; returns the diffusers folder
    ``out/model`` (with ``MANIFEST.json``). ``out/loss.png`` and ``out/losses.json`` hold the curves.

    ``halt(phase, step)``, asked after every step: True writes the checkpoint and stops (returns None),
    as an interruption would; ``resume=True`` continues from there."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ck = out / CHECKPOINT
    if resume and ck.is_file():
        saved = torch.load(ck, weights_only=False)
        state = _State(**saved["state"])
        st = TrainSettings(**state.settings)
        log(f"resuming {ck}: phase {state.phase}, step {state.step}")
    else:
        if ck.is_file() and not resume:
            raise ConfigError(f"{ck} exists: pass --resume to continue it, or choose another --out")
        st = settings or TrainSettings()
        st.validate()
        state, saved = _State(settings=dataclasses.asdict(st)), None
    comps = build_toy_components(st.seed)
    vae, unet, te = comps["vae"], comps["unet"], comps["text_encoder"]
    g = torch.Generator().manual_seed(st.seed)
    opts = {
        "vae": torch.optim.Adam(vae.parameters(), lr=st.vae_lr),
        "unet": torch.optim.AdamW(
            list(unet.parameters()) + list(te.parameters()), lr=st.unet_lr, weight_decay=0.0
        ),
    }
    if saved is not None:
        for k, m in (("unet", unet), ("vae", vae), ("text_encoder", te)):
            m.load_state_dict(saved["models"][k])
        for k, o in opts.items():
            o.load_state_dict(saved["opts"][k])
        g.set_state(saved["generator"])
    pool = build_pool(st, progress)
    last = [time.time()]

    def checkpoint(force: bool = False) -> None:
        stop = halt is not None and state.phase != "done" and halt(state.phase, state.step)
        if stop or force or time.time() - last[0] >= st.checkpoint_s:
            _save_ckpt(ck, state, comps, opts, g)
            (out / "losses.json").write_text(json.dumps(state.rows))
            last[0] = time.time()
        if stop:
            raise _Halted

    try:
        _run_phases(st, state, comps, opts, pool, g, checkpoint, progress, out, resume)
    except _Halted:
        log(f"stopped at {state.phase} step {state.step}; continue with --resume")
        return None
    plot_losses(state.rows, out / "loss.png")
    (out / "losses.json").write_text(json.dumps(state.rows))
    folder = save_toy_model(comps, out / "model", state.scaling_factor)
    training = dict(
        settings=dataclasses.asdict(st),
        plan=state.plan,
        seconds=state.seconds,
        final=_final_losses(state.rows),
        scaling_factor=state.scaling_factor,
    )
    write_manifest(folder, training, command=command)
    log(f"toy model written to {folder}")
    return folder


class _Halted(Exception):
    pass


def _run_phases(st, state, comps, opts, pool, g, checkpoint, progress, out: Path, resume: bool) -> None:
    vae, unet, te, tok = comps["vae"], comps["unet"], comps["text_encoder"], comps["tokenizer"]
    if state.phase == "vae":
        _train_vae(st, state, vae, opts["vae"], pool, g, checkpoint, progress)
        state.phase, state.step = "unet", 0
        checkpoint(force=True)
    lat_path = out / "latents.pt"
    if lat_path.is_file() and resume:
        lat = torch.load(lat_path)
    else:
        lat = _encode_pool(vae, pool.frames)
        torch.save(lat, lat_path)
    if state.scaling_factor is None:
        state.scaling_factor = float(1.0 / lat.std())
    if state.phase == "unet":
        _train_unet(
            st, state, unet, te, tok, opts["unet"], pool, lat * state.scaling_factor, g, checkpoint, progress
        )
        state.phase = "done"
        checkpoint(force=True)


def _final_losses(rows: list[dict[str, float]]) -> dict[str, float]:
    res = {}
    for phase in ("vae", "unet"):
        r = [x for x in rows if x["phase"] == phase][-4:]
        if r:
            for k in ("l1", "mse"):
                if k in r[0]:
                    res[f"{phase}_{k}"] = round(float(np.mean([x[k] for x in r])), 5)
    return res


def _plan_steps(st: TrainSettings, per_step: float, share: float) -> int:
    return max(1, int(st.minutes * 60 * share / per_step))


def _train_vae(st, state, vae, opt, pool, g, checkpoint, progress) -> None:
    vae.train()
    t0 = time.time() - state.seconds.get("vae", 0.0)
    total = st.vae_steps if st.vae_steps is not None else state.plan.get("vae_steps")
    bar = tqdm(total=total, initial=state.step, desc="toy VAE", disable=not progress)
    acc: list[list[float]] = []
    n_pix = st.size - st.vae_crop
    while total is None or state.step < total:
        idx = torch.randint(len(pool.frames), (st.vae_batch,), generator=g)
        cy, cx = (torch.randint(0, n_pix // 8 + 1, (2,), generator=g) * 8).tolist()
        flip = bool(torch.rand(1, generator=g) < 0.5)
        x = torch.from_numpy(pool.frames[idx.numpy(), cy : cy + st.vae_crop, cx : cx + st.vae_crop])
        x = x.permute(0, 3, 1, 2).float() / 127.5 - 1
        if flip:
            x = x.flip(3)
        _set_lr(opt, _lr(st.vae_lr, state.step, total or 10_000))
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        l1, mse = (rec - x).abs().mean(), F.mse_loss(rec, x)
        kl = post.kl().mean() / x[0].numel()
        loss = l1 + mse + 1e-4 * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        state.step += 1
        acc.append([l1.item(), mse.item(), kl.item()])
        if total is None and state.step == 10:  # plan the phase from the speed of the first steps
            total = _plan_steps(st, (time.time() - t0) / 10, st.vae_share)
            state.plan["vae_steps"] = total
            bar.reset(total)
            bar.update(state.step - 1)  # the update(1) below counts this step
        bar.update(1)
        if state.step % 25 == 0 or state.step == total:
            a = np.mean(acc, 0)
            acc = []
            state.rows.append(
                dict(phase="vae", step=state.step, l1=float(a[0]), mse=float(a[1]), kl=float(a[2]))
            )
            bar.set_postfix(l1=f"{a[0]:.4f}", mse=f"{a[1]:.4f}")
        state.seconds["vae"] = time.time() - t0
        checkpoint()
    state.plan["vae_steps"] = total
    bar.close()
    vae.eval()


@torch.no_grad()
def _encode_pool(vae, frames: np.ndarray, chunk: int = 32) -> torch.Tensor:
    vae.eval()
    lat = []
    for i in range(0, len(frames), chunk):
        x = torch.from_numpy(frames[i : i + chunk]).permute(0, 3, 1, 2).float() / 127.5 - 1
        lat.append(vae.encode(x).latent_dist.mean)
    return torch.cat(lat)


def _embed(tok, te, captions: list[str]) -> torch.Tensor:
    ids = tok(
        captions, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    )
    return te(ids.input_ids)[0]


def _train_unet(st, state, unet, te, tok, opt, pool, lat, g, checkpoint, progress) -> None:
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(**SCALED_LINEAR, prediction_type="epsilon")
    unet.train()
    te.train()
    t0 = time.time() - state.seconds.get("unet", 0.0)
    total = st.unet_steps if st.unet_steps is not None else state.plan.get("unet_steps")
    full_from = state.plan.get("full_from")
    if total is not None and full_from is None:
        full_from = int(round(total * (1 - st.full_share)))
    bar = tqdm(total=total, initial=state.step, desc="toy UNet", disable=not progress)
    acc: list[float] = []
    L = lat.shape[-1]
    while total is None or state.step < total:
        full = full_from is not None and state.step >= full_from
        b, c = (st.full_batch, L) if full else (st.unet_batch, st.unet_crop)
        idx = torch.randint(len(lat), (b,), generator=g)
        ys = torch.randint(0, L - c + 1, (b,), generator=g).tolist()
        xs = torch.randint(0, L - c + 1, (b,), generator=g).tolist()
        flips = (torch.rand(b, generator=g) < 0.5).tolist()
        z0 = torch.stack([lat[n, :, y : y + c, x : x + c] for n, y, x in zip(idx.tolist(), ys, xs)])
        z0 = torch.where(torch.tensor(flips)[:, None, None, None], z0.flip(3), z0)
        caps = [
            crop_caption(pool, n, y, x, c, c, st.min_visible_px, g) for n, y, x in zip(idx.tolist(), ys, xs)
        ]
        if st.p_name > 0:  # no extra draw otherwise: the shipped plan stays bit-identical
            named = (torch.rand(b, generator=g) < st.p_name).tolist()
            caps = [
                name_caption(pool, n, y, x, c, c, st.min_visible_px, g) if k else cap
                for k, cap, n, y, x in zip(named, caps, idx.tolist(), ys, xs)
            ]
        u = torch.rand(b, generator=g)
        caps = ["" if ui < st.p_empty else cap for ui, cap in zip(u.tolist(), caps)]
        keep = (torch.rand(b, generator=g) >= st.p_zero).float()[:, None, None]
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=g)
        _set_lr(opt, _lr(st.unet_lr, state.step, total or 10_000))
        states = _embed(tok, te, caps) * keep
        pred = unet(sched.add_noise(z0, noise, t), t, encoder_hidden_states=states).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(unet.parameters()) + list(te.parameters()), 1.0)
        opt.step()
        state.step += 1
        acc.append(loss.item())
        if total is None and state.step == 10:
            per = (time.time() - t0) / 10
            full_cost = per * (L / st.unet_crop) ** 2 * st.full_batch / st.unet_batch
            budget = st.minutes * 60 * (1 - st.vae_share)
            # steps n with (1 - f) n per + f n full_cost = budget
            total = max(1, int(budget / ((1 - st.full_share) * per + st.full_share * full_cost)))
            full_from = int(round(total * (1 - st.full_share)))
            bar.reset(total)
            bar.update(state.step - 1)  # the update(1) below counts this step
        state.plan["unet_steps"], state.plan["full_from"] = total or 0, full_from or 0
        bar.update(1)
        if state.step % 25 == 0 or state.step == total:
            state.rows.append(
                dict(phase="unet", step=state.step, mse=float(np.mean(acc)), full_from=full_from)
            )
            acc = []
            bar.set_postfix(mse=f"{state.rows[-1]['mse']:.4f}", size=c * 8)
        state.seconds["unet"] = time.time() - t0
        checkpoint()
    bar.close()
    unet.eval()
    te.eval()


# ------------------------------------------------------------------ saving


def save_toy_model(comps: dict[str, Any], folder: str | Path, scaling_factor: float) -> Path:
    """Write the components as a diffusers folder in float16 (the VAE's ``scaling_factor`` set)."""
    from ..backbone import save_components

    comps["vae"].register_to_config(scaling_factor=float(scaling_factor))
    half = {k: (v.half() if k in ("unet", "vae", "text_encoder") else v) for k, v in comps.items()}
    folder = save_components(half, folder)
    for k in ("unet", "vae", "text_encoder"):
        comps[k].float()
    return folder


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "vidseg_nb"],
            cwd=here.parent.parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def file_hashes(folder: str | Path) -> dict[str, str]:
    """SHA-256 of every file in the model folder except the manifest (POSIX relative paths)."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): _sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "MANIFEST.json"
    }


def write_manifest(
    folder: str | Path,
    training: dict[str, Any] | None = None,
    quality: dict[str, Any] | None = None,
    command: str | None = None,
) -> Path:
    """``MANIFEST.json`` beside the weights: file SHA-256s, the command and commit, training facts and
    (once measured) the quality table."""
    folder = Path(folder)
    path = folder / "MANIFEST.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    man = dict(
        what="vidseg_nb toy model: the tiny SD 2.x layout trained by the project on its own toy-world clips",
        command=command or old.get("command", ""),
        commit=_git_commit() if training is not None else old.get("commit", "unknown"),
        machine=old.get("machine")
        or f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores, torch {torch.__version__}",
        training=training if training is not None else old.get("training", {}),
        files=file_hashes(folder),
        quality=quality if quality is not None else old.get("quality"),
    )
    path.write_text(json.dumps(man, indent=1) + "\n")
    return path
