"""Forward hooks on the UNet as small pieces, composed by one context manager (SPEC section 3).

Each hook has one job, at the step indices the sampler announces (:meth:`Probe.set_step`):

- :class:`RecordQuery`: record the self-attention query (``attn1.to_q`` output, conditional half) of
  decoder blocks 6, 7, 8 (``up_blocks[2].attentions[0..2].transformer_blocks[0]``) at one step, and
  optionally end the forward there (:class:`StopForward`);
- :class:`RecordCrossQuery`: record the cross-attention query (``attn2.to_q``, conditional half) of the
  name blocks (3-8) at one step, for open-vocabulary names (issue 13);
- :class:`AddToOutput`: add a tensor to the modulation sites' output (SD: block 7's cross-attention
  ``attn2``, after ``to_out``, before the residual add) at one step, on both CFG halves: +/- lambda * M_l;
- :class:`RecordQK`: record the ``to_q``/``to_k`` outputs of ``attn1``/``attn2`` of every transformer block
  in ``up_blocks[1..3]`` at every step;
- :class:`InjectQK`: replace them by recorded ones in another run (EmerDiff's fixed QK^T).

:class:`Probe` installs the hooks it is given (``with Probe(unet, *hooks, layout=...)``), refuses a UNet
whose attention projections are fused, and removes every hook on exit. Everything a hook needs is given to
its constructor. The UNet batch is always ``[uncond rows; cond rows]``. Nothing is subclassed or copied
from diffusers.

Which modules are meant is a :class:`Layout`: :data:`SD_LAYOUT` (the default, SPEC 3) or the SVD layout of
``vidseg_nb.svd`` (block 8 for modulation and correspondence, modulation on the self-attention output of
the spatial and temporal transformer blocks, q/k injection in both). The SVD UNet denoises the frames of
a clip jointly: its spatial attention rows are (run, frame) and its temporal attention rows are
(run, grid cell), so a run spans a *group* of rows; injection and modulation handle groups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from .errors import VidSegError

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


class FusedProjectionsError(VidSegError, ValueError):
    """The UNet's attention projections are fused (``to_qkv``): hooks on ``to_q``/``to_k`` would never fire."""


def refuse_fused_projections(unet: torch.nn.Module) -> None:
    """Raise :class:`FusedProjectionsError` when an attention of ``unet`` has ``fused_projections`` set
    (diffusers' ``fuse_qkv_projections()``): the query record and the q/k injection would silently do
    nothing, since the fused processor never calls ``to_q``/``to_k``."""
    fused = [
        n
        for n, m in unet.named_modules()
        if getattr(m, "fused_projections", False) is True  # set by fuse_projections(); unfusing leaves it,
        and "Fused" in type(getattr(m, "processor", None)).__name__  # but swaps the fused processor back
    ]
    if fused:
        raise FusedProjectionsError(
            f"the UNet's attention projections are fused ({len(fused)} modules, e.g. {fused[0]!r}): the "
            "query/key hooks would never fire. Call `unet.unfuse_qkv_projections()` before segmenting."
        )


class Hook:
    """One job on the UNet's modules at the steps the sampler announces. :class:`Probe` installs it."""

    def install(self, mods: dict[str, torch.nn.Module], layout: Layout, probe: Probe) -> list[Any]:
        """Register forward hooks on ``mods`` (paths from ``layout``); ``probe.step`` is the current step.
        Returns the handles."""
        raise NotImplementedError  # pragma: no cover - interface


class RecordQuery(Hook):
    """(a) Record the self-attention query (``attn1.to_q``, conditional half) of ``blocks`` (default the
    layout's feature blocks 6, 7, 8) at step ``step``; ``stop_after`` ends the forward after the last
    of them (:class:`StopForward`)."""

    def __init__(self, step: int, blocks: Iterable[int] | None = None, *, stop_after: bool = False) -> None:
        self.step = step
        self.blocks = None if blocks is None else tuple(blocks)
        self.stop_after = stop_after
        self.features: dict[int, list[torch.Tensor]] = {}

    def install(self, mods: dict[str, torch.nn.Module], layout: Layout, probe: Probe) -> list[Any]:
        blocks = layout.feature_blocks if self.blocks is None else self.blocks
        self.features = {b: [] for b in blocks}
        last = max(blocks)

        def make(block: int):
            def hook(_m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> None:
                if probe.step != self.step:
                    return
                self.features[block].append(out[out.shape[0] // 2 :].detach())
                if self.stop_after and block == last:
                    raise StopForward

            return hook

        return [mods[f"{layout.block_path(b)}.attn1.to_q"].register_forward_hook(make(b)) for b in blocks]

    def block_features(self, block: int) -> torch.Tensor:
        """Recorded query of ``block``: (frames, h*w, C), conditional half, UNet calls concatenated."""
        if not self.features.get(block):
            raise RuntimeError(f"no features of block {block} were recorded (step={self.step})")
        return torch.cat(self.features[block])


class RecordCrossQuery(Hook):
    """(a') Record the cross-attention query (``attn2.to_q`` output, conditional half) of ``blocks`` at step
    ``step``, moved to the CPU in ``dtype``: the cached input of open-vocabulary names (issue 13,
    :mod:`vidseg_nb.names`). ``stop_after`` ends the forward after the last block's ``attn2.to_q``.

    :meth:`queries` gives ``{attn2 module path: (frames, h_l*w_l, C_l)}``, UNet calls concatenated."""

    def __init__(
        self,
        step: int,
        blocks: Iterable[int],
        *,
        stop_after: bool = False,
        dtype: torch.dtype = torch.float16,
    ) -> None:
        self.step = step
        self.blocks = tuple(blocks)
        self.stop_after = stop_after
        self.dtype = dtype
        self.chunks: dict[str, list[torch.Tensor]] = {}

    def install(self, mods: dict[str, torch.nn.Module], layout: Layout, probe: Probe) -> list[Any]:
        sites = {b: f"{layout.block_path(b)}.attn2" for b in self.blocks}
        self.chunks = {s: [] for s in sites.values()}
        last = max(self.blocks)

        def make(block: int, site: str):
            def hook(_m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> None:
                if probe.step != self.step:
                    return
                self.chunks[site].append(out[out.shape[0] // 2 :].detach().to("cpu", self.dtype))
                if self.stop_after and block == last:
                    raise StopForward

            return hook

        return [mods[f"{site}.to_q"].register_forward_hook(make(b, site)) for b, site in sites.items()]

    def queries(self) -> dict[str, torch.Tensor]:
        return {s: torch.cat(c) for s, c in self.chunks.items() if c}


class AddToOutput(Hook):
    """(b) Add ``add`` to the output of the modulation sites of ``block`` (default the layout's: block 7's
    ``attn2`` for SD; block 8's spatial and temporal ``attn1`` for SVD) at step ``step``, on both CFG
    halves: the masked modulation +/- lambda * M_l.

    ``add`` is (R*G, h*w, 1 or C): one row per (run, frame) of R runs of G frames (G = 1 for SD). At a
    temporal site, whose rows are (run, grid cell), it is rearranged to (R*h*w, G, 1 or C).
    """

    def __init__(self, step: int, add: torch.Tensor, block: int | None = None) -> None:
        self.step = step
        self.add = add
        self.block = block

    def install(self, mods: dict[str, torch.nn.Module], layout: Layout, probe: Probe) -> list[Any]:
        def make(temporal: bool):
            def hook(_m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor | None:
                if probe.step != self.step:
                    return None
                add = _temporal_rows(self.add, out) if temporal else self.add
                add = add.to(out.device, out.dtype)
                return out + torch.cat([add, add])

            return hook

        return [
            mods[path].register_forward_hook(make(kind == "temporal"))
            for path, kind in layout.mod_sites(self.block)
        ]


class RecordQK(Hook):
    """(c) Record the ``to_q``/``to_k`` outputs of ``attn1``/``attn2`` at the layout's injection sites of
    ``up_blocks`` (default 1..3) at every step, into ``self.qk``."""

    def __init__(self, up_blocks: Iterable[int] | None = None) -> None:
        self.up_blocks = None if up_blocks is None else tuple(up_blocks)
        self.qk = QKStore()

    def install(self, mods: dict[str, torch.nn.Module], layout: Layout, probe: Probe) -> list[Any]:
        def make(site: str, kind: str):
            def hook(_m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> None:
                self.qk.add((probe.step, site, kind), out)

            return hook

        unet = probe.unet
        return [
            mods[f"{site}.to_{kind}"].register_forward_hook(make(site, kind))
            for site in layout.injection_sites(unet, self.up_blocks)
            for kind in ("q", "k")
        ]


class InjectQK(Hook):
    """(d) Replace the ``to_q``/``to_k`` outputs at the injection sites by those recorded in ``store``
    (EmerDiff's fixed QK^T): run k of the batch gets the rows of reference group ``index[k]``."""

    def __init__(self, store: QKStore, index: torch.Tensor, up_blocks: Iterable[int] | None = None) -> None:
        self.store = store
        self.index = index
        self.up_blocks = None if up_blocks is None else tuple(up_blocks)

    def install(self, mods: dict[str, torch.nn.Module], layout: Layout, probe: Probe) -> list[Any]:
        def make(site: str, kind: str):
            def hook(_m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor:
                group = (out.shape[0] // 2) // len(self.index)
                return self.store.get((probe.step, site, kind), self.index, group).to(out.dtype)

            return hook

        return [
            mods[f"{site}.to_{kind}"].register_forward_hook(make(site, kind))
            for site in layout.injection_sites(probe.unet, self.up_blocks)
            for kind in ("q", "k")
        ]


class Probe:
    """The one context manager composing hooks on a UNet: ``with Probe(unet, RecordQuery(24), layout=L) as p:
    backbone.sample(..., listener=p)``. The sampler tells it the step (:meth:`set_step`); every hook acts
    at its own steps. Entering refuses fused attention projections; leaving removes every hook."""

    def __init__(self, unet: torch.nn.Module, *hooks: Hook, layout: Layout | None = None) -> None:
        self.unet = unet
        self.hooks = hooks
        self.layout = layout or SD_LAYOUT
        self.step: int | None = None
        self._handles: list[Any] = []

    def set_step(self, step: int) -> None:
        """StepListener: the step index of the next UNet call."""
        self.step = step

    def __enter__(self) -> Probe:
        refuse_fused_projections(self.unet)
        mods = dict(self.unet.named_modules())
        try:
            for h in self.hooks:
                self._handles += h.install(mods, self.layout, self)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def count_hooks(module: torch.nn.Module) -> int:
    """Forward hooks installed anywhere in ``module`` (0 after a probe's context exits)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())
