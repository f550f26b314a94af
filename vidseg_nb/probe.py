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
- :class:`InjectQK`: replace them by recorded ones in another run (EmerDiff's fixed QK^T);
- :class:`OneKeyAttention`: cross-attentions over a one-token context (SVD's image embedding) computed as
  ``to_out(to_v(c))``, the exact value of softmax over one key (issue 12).

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
import torch.nn.functional as F

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
    ``attn1``/``attn2`` q/k replaced in modulated runs; ``one_token_kinds``: the attention kinds whose
    context is a single token (SVD: every ``attn2`` attends to its one CLIP image embedding). Softmax over
    one key is exactly 1, so q/k change nothing there: such sites (:meth:`one_token_sites`) are no
    injection sites, and q/k are neither recorded nor injected at them.
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
    one_token_kinds: tuple[str, ...] = ()

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

    def prefix_sites(self, unet: torch.nn.Module) -> list[str]:
        """Modules whose outputs at step t_m are the same in every modulated run as in the reference run,
        in forward order: the down path (its skip tensors included), the mid block, the up blocks before
        ``mod_block``'s, the resnets/attentions of that up block before ``mod_block``, and inside
        ``mod_block``'s spatial transformer the norms, ``proj_in``, ``attn1`` and (SD, ``mod_kind="attn2"``)
        ``attn2``, whose output gets the modulation added. Everything in it runs on the reference's latent
        with the reference's injected q/k, so it is identical (prefix reuse, issue 12.1)."""
        up, j = divmod(self.mod_block, 3)
        names = dict(unet.named_modules())
        sites = [f"down_blocks.{i}" for i in range(len(unet.down_blocks))] + ["mid_block"]
        sites += [f"up_blocks.{u}" for u in range(up)]
        for k in range(j):
            sites += [f"up_blocks.{up}.resnets.{k}", f"up_blocks.{up}.attentions.{k}"]
        att = f"up_blocks.{up}.attentions.{j}"
        tb = self.block_path(self.mod_block)
        sites += [
            f"up_blocks.{up}.resnets.{j}",
            f"{att}.norm",
            f"{att}.proj_in",
            f"{tb}.norm1",
            f"{tb}.attn1",
        ]
        if self.mod_kind == "attn2":
            sites += [f"{tb}.norm2", f"{tb}.attn2"]
        return [s for s in sites if s in names]

    def one_token_sites(self, unet: torch.nn.Module) -> list[str]:
        """Paths of the attention modules of ``unet`` whose context is one token (``one_token_kinds``)."""
        return [n for n, _ in unet.named_modules() if n.rsplit(".", 1)[-1] in self.one_token_kinds]

    def injection_sites(self, unet: torch.nn.Module, up_blocks: Iterable[int] | None = None) -> list[str]:
        """``attn1``/``attn2`` paths of the spatial and/or temporal transformer blocks in ``up_blocks``,
        less the one-token sites (:meth:`one_token_sites`: q/k do not change their output)."""
        out = []
        for site in injection_sites(unet, self.qk_up_blocks if up_blocks is None else up_blocks):
            temporal = ".temporal_transformer_blocks." in site
            if site.rsplit(".", 1)[-1] in self.one_token_kinds:
                continue
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
    (EmerDiff's fixed QK^T): run k of the batch gets the rows of reference group ``index[k]``. The layout
    leaves one-token sites out of the injection sites, so every site met has recorded q/k; one without
    them (a reference recorded with another layout or other steps) raises :class:`KeyError`."""

    def __init__(self, store: QKStore, index: torch.Tensor, up_blocks: Iterable[int] | None = None) -> None:
        self.store = store
        self.index = index
        self.up_blocks = None if up_blocks is None else tuple(up_blocks)

    def install(self, mods: dict[str, torch.nn.Module], layout: Layout, probe: Probe) -> list[Any]:
        def make(site: str, kind: str):
            def hook(_m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor | None:
                key = (probe.step, site, kind)
                if key not in self.store.data:
                    raise KeyError(f"InjectQK: no recorded {kind} at {site}, step {probe.step}")
                group = (out.shape[0] // 2) // len(self.index)
                return self.store.get(key, self.index, group).to(out.dtype)

            return hook

        return [
            mods[f"{site}.to_{kind}"].register_forward_hook(make(site, kind))
            for site in layout.injection_sites(probe.unet, self.up_blocks)
            for kind in ("q", "k")
        ]


# ---------------------------------------------------------------------------------- prefix reuse (12.1)
def _flatten(out: Any) -> tuple[list[torch.Tensor], Any]:
    """Tensors of a module output (a tensor, or nested tuples of tensors) and its structure."""
    if isinstance(out, torch.Tensor):
        return [out], None
    if isinstance(out, (tuple, list)):
        flat, spec = [], []
        for o in out:
            f, sp = _flatten(o)
            flat += f
            spec.append((len(f), sp))
        return flat, (type(out), spec)
    raise TypeError(f"cannot record a module output of type {type(out).__name__}")


def _unflatten(flat: list[torch.Tensor], spec: Any) -> Any:
    if spec is None:
        return flat[0]
    kind, parts = spec
    out, i = [], 0
    for n, sp in parts:
        out.append(_unflatten(flat[i : i + n], sp))
        i += n
    return kind(out)


def _dim_order(t: torch.Tensor) -> list[int]:
    """Dims of ``t`` from the outermost in memory to the innermost (its memory format, e.g. channels_last)."""
    return sorted(range(t.ndim), key=lambda d: (-t.stride(d), -d))


def _in_order(t: torch.Tensor, order: list[int]) -> torch.Tensor:
    """``t`` laid out in memory in the dim order ``order`` (the recorded tensor's memory format: the
    kernels that read it, and so their numerics, depend on it)."""
    if order == list(range(t.ndim)):
        return t.contiguous()
    inv = [order.index(d) for d in range(t.ndim)]
    return t.permute(order).contiguous().permute(inv)


class RecordOutputs(Hook):
    """Record the outputs of the modules ``sites`` (default: the layout's :meth:`Layout.prefix_sites`) at
    step ``step``, into ``self.store`` (a :class:`QKStore`, key (step, site, i) for the i-th tensor of the
    output; its memory format and tuple structure are kept too). The reference run records them at t_m,
    over ``n_groups`` denoising groups (SD: frames; SVD: one clip, whose rows are its frames)."""

    def nbytes(self) -> int:
        return self.store.nbytes()

    def __init__(self, step: int, sites: Iterable[str] | None = None, n_groups: int = 1) -> None:
        self.step = step
        self.sites = None if sites is None else tuple(sites)
        self.n_groups = n_groups  # reference groups recorded (frames for SD, 1 clip for SVD)
        self.store = QKStore()
        self.spec: dict[str, Any] = {}
        self.order: dict[tuple[int, str, int], list[int]] = {}

    def install(self, mods: dict[str, torch.nn.Module], layout: Layout, probe: Probe) -> list[Any]:
        sites = layout.prefix_sites(probe.unet) if self.sites is None else self.sites
        self.sites = tuple(sites)

        def make(site: str):
            def hook(_m: torch.nn.Module, _inp: Any, out: Any) -> None:
                if probe.step != self.step:
                    return
                flat, self.spec[site] = _flatten(out)
                for i, t in enumerate(flat):
                    self.order.setdefault((self.step, site, i), _dim_order(t))
                    self.store.add((self.step, site, i), t)

            return hook

        return [mods[site].register_forward_hook(make(site)) for site in sites]


class _Restore:
    """A handle whose ``remove()`` undoes a patch (restores a module's forward or processor)."""

    def __init__(self, undo: Any) -> None:
        self.undo = undo

    def remove(self) -> None:
        if self.undo is not None:
            self.undo()
            self.undo = None


class ReplayOutputs(Hook):
    """At step ``step``, the modules ``recorded.sites`` do not run: each returns its recorded reference
    output, run k of the batch getting the rows of reference group ``index[k]`` (uncond and cond halves),
    in the recorded memory format. At other steps they run normally. Forward hooks on the modules still
    fire (the modulation is added to a replayed ``attn2``/``attn1`` output). The module objects stay in
    place (only the instance's ``forward`` is patched, and restored on exit)."""

    def __init__(self, recorded: RecordOutputs, index: torch.Tensor) -> None:
        self.recorded = recorded
        self.index = index
        self.replayed = 0  # module outputs served from the record

    def install(self, mods: dict[str, torch.nn.Module], layout: Layout, probe: Probe) -> list[Any]:
        rec = self.recorded
        handles = []

        def make(site: str, module: torch.nn.Module, orig: Any):
            def forward(*args: Any, **kwargs: Any) -> Any:
                if probe.step != rec.step:
                    return orig(*args, **kwargs)
                out, i = [], 0
                while (key := (rec.step, site, i)) in rec.store.data:
                    u = rec.store.data[key][0]
                    t = rec.store.get(key, self.index, len(u) // rec.n_groups)
                    out.append(_in_order(t, rec.order[key]))
                    i += 1
                self.replayed += 1
                return _unflatten(out, rec.spec[site])

            return forward

        for site in rec.sites or ():
            m = mods[site]
            had = "forward" in m.__dict__
            orig = m.forward
            m.forward = make(site, m, orig)

            def undo(m: torch.nn.Module = m, had: bool = had, orig: Any = orig) -> None:
                if had:
                    m.forward = orig
                else:
                    del m.forward

            handles.append(_Restore(undo))
        return handles


def _swap_processor(attn: Any, make: Any) -> _Restore:
    """Give ``attn`` the processor ``make(old)`` (``old``: its current one, the fallback); the handle
    restores ``old``."""
    old = attn.processor
    attn.set_processor(make(old))
    return _Restore(lambda: attn.set_processor(old))


# ---------------------------------------------------------------------------------- injected attention (12.2)
class UnsupportedAttentionError(VidSegError, ValueError):
    """An injected attention uses a feature the q/k-injecting processor does not implement."""


class _FallbackProcessor:
    """An attention processor (diffusers' extension point) that handles the calls :meth:`applies` accepts
    in :meth:`run` and hands every other call, unchanged, to ``fallback`` (the processor it replaced)."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback

    def applies(
        self, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor | None, mask: Any
    ) -> bool:
        raise NotImplementedError

    def run(
        self, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor | None, mask: Any
    ) -> torch.Tensor:
        raise NotImplementedError

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if not self.applies(attn, hidden_states, encoder_hidden_states, attention_mask):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        return self.run(attn, hidden_states, encoder_hidden_states, attention_mask)


class InjectedAttnProcessor(_FallbackProcessor):
    """Attention processor (diffusers' extension point) of an injected ``attn1``/``attn2``: q and k are
    the reference run's (``store``), so ``to_q``/``to_k`` are not computed; v = ``to_v`` of this run.

    Run k of the batch uses reference group ``index[k]``. With ``shared`` the attention probabilities
    softmax(q k^T / sqrt(d)) are computed once per reference group (and CFG half) and step, and applied to
    the v of every run of that group (all 2L modulated runs of a frame share them); without it, the same
    scaled-dot-product call as diffusers' ``AttnProcessor2_0`` on the injected q/k (bit-identical to
    computing and then replacing them).
    """

    def __init__(
        self, store: QKStore, index: torch.Tensor, site: str, probe: Probe, fallback: Any, *, shared: bool
    ) -> None:
        super().__init__(fallback)  # steps (and sites) without recorded q/k
        self.store, self.index, self.site, self.probe = store, index, site, probe
        self.shared = shared
        self._groups: list[tuple[int, torch.Tensor]] | None = None

    def applies(
        self, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor | None, mask: Any
    ) -> bool:
        return (self.probe.step, self.site, "q") in self.store.data

    def run(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        attention_mask: Any,
    ) -> torch.Tensor:
        qkey = (self.probe.step, self.site, "q")
        unsupported = [
            name
            for name, bad in (
                ("attention_mask", attention_mask is not None),
                ("spatial_norm", getattr(attn, "spatial_norm", None) is not None),
                ("group_norm", getattr(attn, "group_norm", None) is not None),
                ("norm_q/norm_k", getattr(attn, "norm_q", None) is not None or attn.norm_k is not None),
                ("residual_connection", bool(attn.residual_connection)),
                ("rescale_output_factor", attn.rescale_output_factor != 1.0),
                ("4-D input", hidden_states.ndim != 3),
            )
            if bad
        ]
        if unsupported:
            raise UnsupportedAttentionError(f"{self.site}: q/k injection does not support {unsupported}")
        rows = hidden_states.shape[0]
        r = len(self.index)
        group = rows // 2 // r
        src = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            src = attn.norm_encoder_hidden_states(src)
        value = attn.to_v(src)
        heads = attn.heads
        d = value.shape[-1] // heads
        value = value.view(rows, -1, heads, d).transpose(1, 2)
        if self.shared:
            out = self._shared(value, group, heads, d)
        else:
            q = self.store.get(qkey, self.index, group).to(value.dtype)
            k = self.store.get((self.probe.step, self.site, "k"), self.index, group).to(value.dtype)
            q = q.view(rows, -1, heads, d).transpose(1, 2)
            k = k.view(rows, -1, heads, d).transpose(1, 2)
            out = F.scaled_dot_product_attention(q, k, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(rows, -1, heads * d).to(value.dtype)
        return attn.to_out[1](attn.to_out[0](out))

    def _shared(self, value: torch.Tensor, group: int, heads: int, d: int) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) of each reference group once, times the v of each of its runs."""
        step = self.probe.step
        (qu, qc), (ku, kc) = self.store.data[(step, self.site, "q")], self.store.data[(step, self.site, "k")]
        r = len(self.index)
        v = value.unflatten(0, (2, r, group))  # (half, run, group rows, heads, n, d)
        n_q = qu.shape[1]
        out = v.new_empty(*v.shape[:4], n_q, d)
        scale = d**-0.5
        if self._groups is None:  # once per processor: (reference group, runs of the batch using it)
            idx = self.index.cpu()
            self._groups = [(gi, (idx == gi).nonzero().flatten()) for gi in torch.unique(idx).tolist()]
        for half, (q_all, k_all) in enumerate(((qu, ku), (qc, kc))):
            for gi, sel in self._groups:
                q = q_all[gi * group : (gi + 1) * group].to(v.dtype)
                k = k_all[gi * group : (gi + 1) * group].to(v.dtype)
                q = q.view(group, -1, heads, d).transpose(1, 2)
                k = k.view(group, -1, heads, d).transpose(1, 2)
                p = torch.softmax((q @ k.transpose(-1, -2)).float() * scale, dim=-1).to(v.dtype)
                out[half, sel] = p[None] @ v[half, sel]
        return out.flatten(0, 2)


class InjectAttention(Hook):
    """(d') q/k injection through an attention processor (:class:`InjectedAttnProcessor`): the same
    replacement as :class:`InjectQK` without computing the thrown-away ``to_q``/``to_k`` outputs, and with
    ``shared`` the attention probabilities once per reference group for all runs that share its q/k.
    The previous processors are restored on exit."""

    def __init__(
        self,
        store: QKStore,
        index: torch.Tensor,
        up_blocks: Iterable[int] | None = None,
        *,
        shared: bool = False,
    ) -> None:
        self.store = store
        self.index = index
        self.up_blocks = None if up_blocks is None else tuple(up_blocks)
        self.shared = shared

    def install(self, mods: dict[str, torch.nn.Module], layout: Layout, probe: Probe) -> list[Any]:
        return [
            _swap_processor(
                mods[site],
                lambda old, site=site: InjectedAttnProcessor(
                    self.store, self.index, site, probe, old, shared=self.shared
                ),
            )
            for site in layout.injection_sites(probe.unet, self.up_blocks)
        ]


# ---------------------------------------------------------------------------------- one-key attention (12.2)
def one_key_context(attn: Any, hidden_states: torch.Tensor, context: torch.Tensor | None, mask: Any) -> bool:
    """Whether this attention call attends to a single key with the plain diffusers arithmetic: then
    softmax over that one key is exactly 1 and the output is ``to_out(to_v(c))`` for every query."""
    return (
        context is not None
        and context.ndim == 3
        and context.shape[1] == 1
        and mask is None
        and hidden_states.ndim == 3
        and getattr(attn, "spatial_norm", None) is None
        and getattr(attn, "group_norm", None) is None
    )


class OneKeyAttnProcessor(_FallbackProcessor):
    """Attention processor of a cross-attention whose context is one token (SVD's CLIP image embedding):
    softmax(q k^T / sqrt(d)) over one key is exactly 1, so the output is ``to_out(to_v(c))`` broadcast to
    every query, independent of q and k. ``to_q``/``to_k``, QK^T and P V are not computed, and ``to_out``
    runs on one row per sample instead of one per query (float noise: the matmul's row count differs).
    Any other call (more than one key, a mask, 4-D input, spatial/group norm) goes to ``fallback``."""

    def applies(
        self, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor | None, mask: Any
    ) -> bool:
        return one_key_context(attn, hidden_states, context, mask)

    def run(
        self, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor | None, mask: Any
    ) -> torch.Tensor:
        ctx = context
        if attn.norm_cross:
            ctx = attn.norm_encoder_hidden_states(ctx)
        out = attn.to_out[1](attn.to_out[0](attn.to_v(ctx)))  # (B, 1, C): one row per sample
        out = out.to(hidden_states.dtype).expand(-1, hidden_states.shape[1], -1)
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor if attn.rescale_output_factor != 1.0 else out


class OneKeyAttention(Hook):
    """Every ``attn2`` of the UNet gets :class:`OneKeyAttnProcessor` (issue 12, ``SegConfig.one_key_attention``):
    cross-attentions over a one-token context skip their q/k projections, QK^T and P V and run ``to_out``
    once per sample; others (SD's 77 text tokens) run as before. Install it before :class:`InjectAttention`
    (whose fallback it then is). q/k recorded or injected at such a site would not change its output:
    they are neither recorded nor injected. The previous processors are restored on exit."""

    def install(self, mods: dict[str, torch.nn.Module], layout: Layout, probe: Probe) -> list[Any]:
        return [
            _swap_processor(attn, OneKeyAttnProcessor)
            for name, attn in mods.items()
            if name.endswith("attn2") and hasattr(attn, "set_processor") and hasattr(attn, "to_v")
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
        for h in reversed(self._handles):  # last installed first: stacked processors unwind in order
            h.remove()
        self._handles.clear()


def count_hooks(module: torch.nn.Module) -> int:
    """Forward hooks installed anywhere in ``module`` (0 after a probe's context exits)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())
