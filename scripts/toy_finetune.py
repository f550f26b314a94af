"""Continue a finished toy training run's UNet and text encoder (an experiment, not the shipped recipe).

Tests two of docs/toy.md's "what would reach the targets" guesses on the same footing: more UNet steps at
256 px (``--p-name 0``), and the same steps with a share of the crops captioned by the names' own prompt
(``"a photo of a {word}"``, ``TrainSettings.p_name``). Starts from ``RUN/checkpoint.pt`` and
``RUN/latents.pt`` of ``vidseg train-toy --out RUN`` (the VAE is kept as it is), trains ``--steps`` steps on
whole 256 px latents with a fresh warm-up + cosine schedule, and writes a diffusers folder ``OUT/model`` and
``OUT/losses.json``; measure it with ``python -m vidseg_nb.toy.quality --model OUT/model``.

    python scripts/toy_finetune.py --run /path/to/run --out /tmp/ft_names --steps 1200 --p-name 0.3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from vidseg_nb.toy import train as T


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a finished `vidseg train-toy --out` folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--p-name", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    saved = torch.load(a.run / T.CHECKPOINT, weights_only=False)
    old = T._State(**saved["state"])
    if old.phase != "done":
        raise SystemExit(f"{a.run} is not a finished run (phase {old.phase})")
    st = dataclasses.replace(
        T.TrainSettings(**old.settings), unet_steps=a.steps, full_share=1.0, unet_lr=a.lr, p_name=a.p_name
    )
    st.validate()
    comps = T.build_toy_components(st.seed)
    for k in ("unet", "vae", "text_encoder"):
        comps[k].load_state_dict(saved["models"][k])
    unet, te = comps["unet"], comps["text_encoder"]
    opt = torch.optim.AdamW(list(unet.parameters()) + list(te.parameters()), lr=st.unet_lr, weight_decay=0.0)
    state = T._State(settings=dataclasses.asdict(st), phase="unet", scaling_factor=old.scaling_factor)
    pool = T.build_pool(st)
    lat = torch.load(a.run / "latents.pt") * old.scaling_factor
    g = torch.Generator().manual_seed(a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    T._train_unet(st, state, unet, te, comps["tokenizer"], opt, pool, lat, g, lambda force=False: None, True)
    folder = T.save_toy_model(comps, a.out / "model", old.scaling_factor)
    info = dict(run=str(a.run), args={k: str(v) for k, v in vars(a).items()}, seconds=time.time() - t0)
    (a.out / "losses.json").write_text(json.dumps(dict(info, rows=state.rows), indent=1))
    T.plot_losses(state.rows, a.out / "loss.png")
    print(f"wrote {folder} in {info['seconds']:.0f} s; last UNet MSE {state.rows[-1]['mse']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
