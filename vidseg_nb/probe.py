"""One context manager of forward hooks on the SD 2.x UNet (SPEC section 3).

It can, at the step indices it is told by the sampler (:meth:`Probe.set_step`):

(a) record the self-attention query (``attn1.to_q`` output, conditional half) of decoder blocks 6, 7, 8
    (``up_blocks[2].attentions[0..2].transformer_blocks[0]``) at one step;
(b) add a tensor to block 7's cross-attention output (``attn2``, after ``to_out``, before the residual add)
    at one step, on both CFG halves: the masked modulation +/- lambda * M_l;
(c) record the ``to_q``/``to_k`` outputs of ``attn1``/``attn2`` of every transformer block in
    ``up_blocks[1..3]`` at every step, and later inject them into another run (EmerDiff's fixed QK^T).

The UNet batch is always ``[uncond rows; cond rows]`` (R rows each). Leaving the context removes every
hook. Nothing is subclassed or copied from diffusers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

FEATURE_BLOCKS = (6, 7, 8)
MOD_BLOCK = 7
CORR_BLOCK = 7


class StopForward(Exception):
    """Raised from a hook to end a UNet forward early (features need the UNet only up to block 8)."""


def block_path(block: int) -> str:
    """Module path of paper decoder block ``block`` (3..11) with attention: ``up_blocks[i].attentions[j]``."""
    if not 3 <= block <= 11:
        raise ValueError(f"decoder block {block} has no attention (blocks 3..11 do)")
    return f"up_blocks.{block // 3}.attentions.{block % 3}.transformer_blocks.0"


def injection_sites(unet: torch.nn.Module, up_blocks: Iterable[int] = (1, 2, 3)) -> list[str]:
    """``attn1``/``attn2`` module paths of every transformer block in ``up_blocks``."""
    ups = set(up_blocks)
    out = []
    for name, _ in unet.named_modules():
        parts = name.split(".")
        if (
            len(parts) > 2
            and parts[0] == "up_blocks"
            and int(parts[1]) in ups
            and parts[-1] in ("attn1", "attn2")
        ):
            out.append(name)
    return out


class QKStore:
    """Recorded q/k of a reference run: key (step, site, 'q'|'k') -> (uncond rows, cond rows)."""

    def __init__(self) -> None:
        self.data: dict[tuple[int, str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def add(self, key: tuple[int, str, str], out: torch.Tensor) -> None:
        r = out.shape[0] // 2
        u, c = out[:r].detach(), out[r:].detach()
        if key in self.data:  # another chunk of frames of the same run
            pu, pc = self.data[key]
            u, c = torch.cat([pu, u]), torch.cat([pc, c])
        self.data[key] = (u, c)

    def get(self, key: tuple[int, str, str], index: torch.Tensor) -> torch.Tensor:
        u, c = self.data[key]
        return torch.cat([u[index], c[index]])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for pair in self.data.values() for t in pair)

    def __len__(self) -> int:
        return len(self.data)


class Probe:
    """Forward hooks for recording features, modulating block 7 and recording/injecting q/k.

    Use as ``with Probe(unet, ...) as probe: backbone.sample(..., listener=probe)``.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        *,
        feature_step: int | None = None,
        feature_blocks: Iterable[int] = FEATURE_BLOCKS,
        stop_after_features: bool = False,
        mod_step: int | None = None,
        mod_block: int = MOD_BLOCK,
        record_qk: bool = False,
        inject_qk: QKStore | None = None,
        qk_up_blocks: Iterable[int] = (1, 2, 3),
    ) -> None:
        self.unet = unet
        self.feature_step = feature_step
        self.feature_blocks = tuple(feature_blocks)
        self.stop_after_features = stop_after_features
        self.mod_step = mod_step
        self.mod_block = mod_block
        self.modulation: torch.Tensor | None = None  # (R, n, 1 or C), set per chunk by the caller
        self.record_qk = record_qk
        self.qk = QKStore() if record_qk else None
        self.inject_qk = inject_qk
        self.inject_index: torch.Tensor | None = None  # (R,) reference row of each run, set per chunk
        self.qk_up_blocks = tuple(qk_up_blocks)
        self.features: dict[int, list[torch.Tensor]] = {b: [] for b in self.feature_blocks}
        self.step: int | None = None
        self._handles: list[Any] = []

    # -- StepListener
    def set_step(self, step: int) -> None:
        self.step = step

    # -- hooks
    def _feature_hook(self, block: int):
        last = max(self.feature_blocks)

        def hook(_m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> None:
            if self.step != self.feature_step:
                return
            r = out.shape[0] // 2
            self.features[block].append(out[r:].detach())
            if self.stop_after_features and block == last:
                raise StopForward

        return hook

    def _mod_hook(self, _m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor | None:
        if self.step != self.mod_step or self.modulation is None:
            return None
        add = self.modulation.to(out.device, out.dtype)
        return out + torch.cat([add, add])

    def _qk_hook(self, site: str, kind: str):
        def hook(_m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor | None:
            key = (self.step, site, kind)
            if self.qk is not None:
                self.qk.add(key, out)
            if self.inject_qk is not None:
                if self.inject_index is None:
                    raise RuntimeError("Probe.inject_index must be set before an injected run")
                return self.inject_qk.get(key, self.inject_index).to(out.dtype)
            return None

        return hook

    # -- context
    def __enter__(self) -> Probe:
        mods = dict(self.unet.named_modules())
        if self.feature_step is not None:
            for b in self.feature_blocks:
                self._handles.append(
                    mods[f"{block_path(b)}.attn1.to_q"].register_forward_hook(self._feature_hook(b))
                )
        if self.mod_step is not None:
            self._handles.append(
                mods[f"{block_path(self.mod_block)}.attn2"].register_forward_hook(self._mod_hook)
            )
        if self.record_qk or self.inject_qk is not None:
            for site in injection_sites(self.unet, self.qk_up_blocks):
                for kind in ("q", "k"):
                    h = mods[f"{site}.to_{kind}"].register_forward_hook(self._qk_hook(site, kind))
                    self._handles.append(h)
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # -- results
    def block_features(self, block: int) -> torch.Tensor:
        """Recorded query of ``block``: (frames, h*w, C), conditional half, chunks concatenated."""
        if not self.features.get(block):
            raise RuntimeError(
                f"no features of block {block} were recorded (feature_step={self.feature_step})"
            )
        return torch.cat(self.features[block])


def count_hooks(module: torch.nn.Module) -> int:
    """Forward hooks installed anywhere in ``module`` (0 after a probe's context exits)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())
