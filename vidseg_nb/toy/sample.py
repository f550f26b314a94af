"""Text-to-image samples from an SD-layout backbone (the toy model): the evidence that it learned its world.

Plain classifier-free guidance with a DDIM sampler, as in SD: eps = eps_0 + w (eps_c - eps_0), where
eps_0 is the UNet's output for all-zero text states (the unconditional half the method uses, which the toy
model was trained on with probability ``p_zero``) and eps_c for the caption's CLIP states.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


@torch.no_grad()
def generate(
    backbone: Any,
    caption: str,
    *,
    n: int = 4,
    size: int = 256,
    steps: int = 30,
    guidance: float = 3.0,
    seed: int = 0,
) -> np.ndarray:
    """``n`` images (n, size, size, 3) uint8 for ``caption`` ("" for unconditional samples), DDIM with
    ``steps`` steps and guidance weight w = ``guidance``, seeded."""
    from diffusers import DDIMScheduler

    from ..names import require_text_encoder

    if size % 8:
        raise ValueError(f"size must be a multiple of 8 (the VAE's factor), got {size}")
    tok, te = require_text_encoder(backbone)
    dev, dt = backbone.device, backbone.dtype
    ids = tok(
        caption, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    )
    cond = te(ids.input_ids.to(next(te.parameters()).device))[0].to(dev, dt)
    states = torch.cat([torch.zeros_like(cond).expand(n, -1, -1), cond.expand(n, -1, -1)])
    sched = DDIMScheduler.from_config(
        {k: v for k, v in backbone.scheduler_config.items() if not k.startswith("_")},
        timestep_spacing="trailing",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((n, 4, size // 8, size // 8), generator=g).to(dev, dt) * sched.init_noise_sigma
    for t in sched.timesteps:
        eps = backbone.unet(torch.cat([z, z]), t.to(dev), encoder_hidden_states=states, return_dict=False)[0]
        e0, ec = eps.float().chunk(2)
        z = sched.step(e0 + guidance * (ec - e0), t, z.float()).prev_sample.to(dt)
        backbone.counters.unet_samples += 2 * n
        backbone.counters.unet_calls += 1
    img = backbone.decode(z.float())
    return (img.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def dominant_colour(image: np.ndarray, min_share: float = 0.0005) -> str | None:
    """The toy colour word (:data:`~vidseg_nb.toy.world.COLOURS`) whose hue is the most common among the
    saturated, bright pixels (S > 0.5, V > 0.4) of ``image`` (H, W, 3) uint8; None if under ``min_share``
    of the pixels are."""
    from matplotlib.colors import rgb_to_hsv

    from .world import COLOURS

    hsv = rgb_to_hsv(image.reshape(-1, 3) / 255.0)
    hue = hsv[(hsv[:, 1] > 0.5) & (hsv[:, 2] > 0.4), 0]
    if len(hue) < max(1, min_share * len(hsv)):
        return None
    hues = np.array(list(COLOURS.values()))
    nearest = np.abs((hue[:, None] - hues[None] + 0.5) % 1 - 0.5).argmin(1)
    return list(COLOURS)[int(np.bincount(nearest, minlength=len(hues)).argmax())]


def caption_colour_accuracy(
    backbone: Any, *, n: int = 4, size: int = 256, steps: int = 20, seed: int = 0, shape: str = "circle"
) -> tuple[float, dict[str, list[str | None]]]:
    """Share of the images generated for "a photo of a <colour> <shape>" (n per toy colour) whose
    :func:`dominant_colour` is that colour (chance: 1/6), and the colour found per image."""
    from .world import COLOURS

    found = {c: [dominant_colour(im) for im in generate(backbone, f"a photo of a {c} {shape}", n=n, size=size,
                                                        steps=steps, seed=seed)] for c in COLOURS}  # fmt: skip
    hits = sum(f == c for c, fs in found.items() for f in fs)
    return hits / (n * len(COLOURS)), found
