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

Which modules are meant is a :class:`Layout`: :data:`SD_LAYOUT` (the default, SPEC 3) or the SVD layout of
``vidseg_nb.svd`` (block 8 for modulation and correspondence, modulation on the self-attention output of
the spatial and temporal transformer blocks, q/k injection in both). The SVD UNet denoises the frames of
a clip jointly: its spatial attention rows are (run, frame) and its temporal attention rows are
(run, grid cell), so a run spans a *group* of rows; recording, injection and modulation handle groups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Layout:
    """Which UNet modules the probe uses (paper decoder blocks -> diffusers module paths).

    ``mod_kind``: the attention module of ``mod_block`` whose output gets the modulation (``"attn2"``,
    cross-attention, for SD; ``"attn1"``, self-attention, for SVD); ``mod_temporal``: also add it to the
    output of the temporal transformer block's ``attn1`` (SVD, as the authors' code does);
    ``inject_spatial`` / ``inject_temporal``: which transformer blocks of ``qk_up_blocks`` get their
    ``attn1``/``attn2`` q/k replaced in modulated runs.
    """

    name: str = "sd"
    feature_blocks: tuple[int, ...] = FEATURE_BLOCKS
    mod_block: int = MOD_BLOCK
    mod_kind: str = "attn2"
    mod_temporal: bool = False
    corr_block: int = CORR_BLOCK
    qk_up_blocks: tuple[int, ...] = (1, 2, 3)
    inject_spatial: bool = True
    inject_temporal: bool = False

    def block_path(self, block: int) -> str:
        """Spatial transformer block of paper block ``block`` (``...transformer_blocks.0``)."""
        return block_path(block)

    def temporal_block_path(self, block: int) -> str:
        """Temporal transformer block of paper block ``block`` (SVD's ``temporal_transformer_blocks.0``)."""
        return block_path(block).replace(".transformer_blocks.0", ".temporal_transformer_blocks.0")

    def mod_sites(self, block: int | None = None) -> list[tuple[str, str]]:
        """(module path, ``"spatial"`` | ``"temporal"``) of every output that gets the modulation."""
        b = self.mod_block if block is None else block
        sites = [(f"{self.block_path(b)}.{self.mod_kind}", "spatial")]
        if self.mod_temporal:
            sites.append((f"{self.temporal_block_path(b)}.attn1", "temporal"))
        return sites

    def injection_sites(self, unet: torch.nn.Module, up_blocks: Iterable[int] | None = None) -> list[str]:
        """``attn1``/``attn2`` paths of the spatial and/or temporal transformer blocks in ``up_blocks``."""
        out = []
        for site in injection_sites(unet, self.qk_up_blocks if up_blocks is None else up_blocks):
            temporal = ".temporal_transformer_blocks." in site
            if self.inject_temporal if temporal else self.inject_spatial:
                out.append(site)
        return out


SD_LAYOUT = Layout()


def _temporal_rows(add: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(R*F, n, c) per-(run, frame) rows -> (R*n, F, c) per-(run, cell) rows of a temporal attention output."""
    f = out.shape[1]
    r, n = add.shape[0] // f, add.shape[1]
    return add.reshape(r, f, n, add.shape[-1]).permute(0, 2, 1, 3).reshape(r * n, f, add.shape[-1])


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

    def get(self, key: tuple[int, str, str], index: torch.Tensor, group: int = 1) -> torch.Tensor:
        """The recorded (uncond; cond) rows of the runs ``index``; a run spans ``group`` rows (1 for SD;
        SVD: frames per clip in spatial attention, grid cells in temporal attention)."""
        u, c = self.data[key]
        if group == 1:
            return torch.cat([u[index], c[index]])
        u, c = (
            u.unflatten(0, (-1, group))[index].flatten(0, 1),
            c.unflatten(0, (-1, group))[index].flatten(0, 1),
        )
        return torch.cat([u, c])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for pair in self.data.values() for t in pair)

    def __len__(self) -> int:
        return len(self.data)


class Probe:
    """Forward hooks for recording features, modulating block 7 (``layout.mod_block``) and recording/injecting
    q/k.

    Use as ``with Probe(unet, ...) as probe: backbone.sample(..., listener=probe)``. ``layout`` picks the
    modules (default :data:`SD_LAYOUT`); ``feature_blocks``, ``mod_block`` and ``qk_up_blocks`` override it.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        *,
        layout: Layout | None = None,
        feature_step: int | None = None,
        feature_blocks: Iterable[int] | None = None,
        stop_after_features: bool = False,
        mod_step: int | None = None,
        mod_block: int | None = None,
        record_qk: bool = False,
        inject_qk: QKStore | None = None,
        qk_up_blocks: Iterable[int] | None = None,
    ) -> None:
        self.unet = unet
        self.layout = layout or SD_LAYOUT
        self.feature_step = feature_step
        self.feature_blocks = tuple(self.layout.feature_blocks if feature_blocks is None else feature_blocks)
        self.stop_after_features = stop_after_features
        self.mod_step = mod_step
        self.mod_block = self.layout.mod_block if mod_block is None else mod_block
        # (R, n, 1 or C) for SD: one row per run; SVD: (R*F, n, 1 or C), one row per (run, frame).
        self.modulation: torch.Tensor | None = None  # set per chunk by the caller
        self.record_qk = record_qk
        self.qk = QKStore() if record_qk else None
        self.inject_qk = inject_qk
        self.inject_index: torch.Tensor | None = None  # (R,) reference run of each run, set per chunk
        self.qk_up_blocks = tuple(self.layout.qk_up_blocks if qk_up_blocks is None else qk_up_blocks)
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

    def _mod_hook_temporal(self, _m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor | None:
        if self.step != self.mod_step or self.modulation is None:
            return None
        add = _temporal_rows(self.modulation, out).to(out.device, out.dtype)
        return out + torch.cat([add, add])

    def _qk_hook(self, site: str, kind: str):
        def hook(_m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor | None:
            key = (self.step, site, kind)
            if self.qk is not None:
                self.qk.add(key, out)
            if self.inject_qk is not None:
                if self.inject_index is None:
                    raise RuntimeError("Probe.inject_index must be set before an injected run")
                group = (out.shape[0] // 2) // len(self.inject_index)
                return self.inject_qk.get(key, self.inject_index, group).to(out.dtype)
            return None

        return hook

    # -- context
    def __enter__(self) -> Probe:
        mods = dict(self.unet.named_modules())
        if self.feature_step is not None:
            for b in self.feature_blocks:
                self._handles.append(
                    mods[f"{self.layout.block_path(b)}.attn1.to_q"].register_forward_hook(
                        self._feature_hook(b)
                    )
                )
        if self.mod_step is not None:
            for path, kind in self.layout.mod_sites(self.mod_block):
                hook = self._mod_hook_temporal if kind == "temporal" else self._mod_hook
                self._handles.append(mods[path].register_forward_hook(hook))
        if self.record_qk or self.inject_qk is not None:
            for site in self.layout.injection_sites(self.unet, self.qk_up_blocks):
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
        """Recorded query of ``block``: (frames, h*w, C), conditional half, chunks concatenated (SVD: the
        rows are the frames of the clip)."""
        if not self.features.get(block):
            raise RuntimeError(
                f"no features of block {block} were recorded (feature_step={self.feature_step})"
            )
        return torch.cat(self.features[block])


def count_hooks(module: torch.nn.Module) -> int:
    """Forward hooks installed anywhere in ``module`` (0 after a probe's context exits)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())
