"""Open-vocabulary names for segments from Stable Diffusion's cross-attention (issue 13).

The reference run (SPEC 7) already passes every frame through the UNet; its cross-attention layers
(``attn2``) tie each cell to text tokens. Recording the cross-attention *queries* once lets any
vocabulary be scored later with no further UNet work: a word only needs the text encoder and each
layer's ``to_k``.

Recipe (SPEC terms)
-------------------
Recorded (by the wiring, during the reference run; see :class:`QueryRecorder`):

- Sites: the ``attn2`` of ``up_blocks[b // 3].attentions[b % 3].transformer_blocks[0]`` for the paper's
  decoder blocks b in :data:`NAME_BLOCKS` = (3, ..., 8) (SPEC 3: blocks 3-5 at H/32, 6-8 at H/16).
- At the feature step (default: the last step of the reference run, where F~ is recorded), the output
  of ``attn2.to_q`` of each site, conditional half only (the second half of the [uncond; cond] batch):
  q_l of shape (N, L_l, C_l), L_l = h_l * w_l cells of that block's grid.

Text side (:func:`encode_vocabulary`):

- Each word or phrase v is put alone into the template (default ``"a photo of a {}"``), tokenized with
  the backbone's own tokenizer padded to ``model_max_length`` (77) exactly like the conditioning prompt
  of SD (BOS, tokens, EOS, padding), and encoded with the backbone's own text encoder (last hidden
  state, the states SD's UNet is conditioned on): s_v of shape (T = 77, D).
- The positions P_v of v's sub-word tokens inside its prompt are kept.
- Why one prompt per word: a cross-attention softmax is taken over the T tokens of *one* prompt. With
  one prompt per word that softmax is exactly the one the layer computes when conditioned on that
  prompt; it does not depend on the other words of the vocabulary, on their order, or on how many
  there are (VSPW's 124 names do not fit in one 75-token prompt anyway). Competition between words is
  introduced afterwards by the per-word normalisation of :func:`cluster_scores`.

Attention (:func:`word_attention`), for every layer l, frame n, cell i and word v:

- k_{l,v} = to_k_l(s_v) (T, C_l); q and k split into H_l heads of d = C_l / H_l channels;
- p_{l,h}[n, i, :] = softmax_t(scale_l * q_{l,h}[n, i] . k_{l,v,h}[t]) over all T tokens of v's prompt,
  scale_l = the layer's ``attn.scale`` (1 / sqrt(d) in SD), as ``Attention.get_attention_scores``
  computes it (computed here in float32);
- a_l[n, i, v] = mean over heads h and over the sub-word positions t in P_v of p_{l,h}[n, i, t];
- a_l reshaped to the layer grid (h_l, w_l) and resized to the feature grid (h, w) of F~: bilinear
  (``align_corners=False``) when the layer grid is smaller (blocks 3-5: 16x16 -> 32x32 at 512 px),
  area averaging when it is larger, untouched when equal;
- A[n, y, x, v] = mean over layers l of the resized a_l. Shape (N, h, w, V).

Names (:func:`cluster_scores`, :func:`name_clusters`): with the refined coarse labels M (N, h, w),

- per-frame, per-word normalisation: A^[n, y, x, v] = A[n, y, x, v] / mean_{y', x'} A[n, y', x', v];
- score[c, v] = mean of A^[n, y, x, v] over the cells (n, y, x) with M = c (1 = the word's frame
  average; above 1 = the word's attention concentrates in c);
- name(c) = argmax_v score[c, v]; margin(c) = best score - second best score (the second best is 0 for
  a one-word vocabulary); name(c) = :data:`UNNAMED` when margin(c) < ``margin`` (default
  :data:`DEFAULT_MARGIN`, a setting, not calibrated on real weights: none can be loaded here).

Cost (SD 2.1 at 512 px): the recorded queries are 3 x 16*16*1280 + 3 x 32*32*640 = 2,949,120 values
per frame, 11.8 MB in float32 (5.9 MB in float16). Scoring a word costs 2 * 77 * 2,949,120 = 454 MFLOP
per frame (q k^T; the key projections are negligible), and no UNet work.

Names are decided on the first batch and carried with the cluster ids (:class:`NameTracker`);
:func:`merge_same_names` merges clusters that got the same name.

SVD has no text encoder (it is conditioned on a CLIP image embedding): :func:`require_text_encoder`
says so. The tiny random test model's names are random and carry no meaning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import VidSegError

NAME_BLOCKS: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
"""Paper decoder blocks whose cross-attention queries are recorded for names (SPEC 3)."""

DEFAULT_TEMPLATE = "a photo of a {}"
"""Prompt each vocabulary word is embedded in (alone); ``"{}"`` embeds the bare word."""

DEFAULT_MARGIN = 0.1
"""Minimum (best - second best) normalised score for a cluster to get a name (uncalibrated)."""

UNNAMED = "unnamed"

KeyProjection = Callable[[torch.Tensor], torch.Tensor] | torch.Tensor


class VocabularyError(VidSegError, ValueError):
    """An empty vocabulary, an empty or repeated word, or a word that does not fit the text encoder."""


class TextEncoderError(VidSegError, RuntimeError):
    """The backbone has no text encoder / tokenizer to embed a vocabulary with."""


# ------------------------------------------------------------------------------------------ text side
@dataclass
class Vocabulary:
    """Words embedded one per prompt.

    ``states``: (V, T, D) float32 text-encoder states of each word's prompt (T = ``model_max_length``);
    ``token_ids``: (V, T) the prompts' token ids; ``positions[v]``: indices in 0..T-1 of word v's
    sub-word tokens inside its prompt.
    """

    words: list[str]
    prompts: list[str]
    states: torch.Tensor
    token_ids: torch.Tensor
    positions: list[list[int]]
    template: str = DEFAULT_TEMPLATE

    def __len__(self) -> int:
        return len(self.words)

    def token_mask(self) -> torch.Tensor:
        """(V, T) float: 1 / |P_v| at the positions of word v, 0 elsewhere (sub-word averaging)."""
        m = torch.zeros(self.token_ids.shape, dtype=torch.float32)
        for v, pos in enumerate(self.positions):
            m[v, pos] = 1.0 / len(pos)
        return m


def _short(word: str, n: int = 40) -> str:
    return word if len(word) <= n else word[: n - 3] + "..."


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids) if text else []


@torch.no_grad()
def encode_vocabulary(
    tokenizer: Any, text_encoder: Any, words: Sequence[str], template: str = DEFAULT_TEMPLATE
) -> Vocabulary:
    """Embed each word (or short phrase) alone in ``template`` with the backbone's tokenizer and text
    encoder, padded to ``model_max_length`` like SD's conditioning; keep its sub-word positions."""
    if isinstance(words, str):
        words = [words]
    words = [" ".join(str(w).split()) for w in words]
    if not words:
        raise VocabularyError("the vocabulary is empty: give at least one word or phrase")
    if template.count("{}") != 1:
        raise VocabularyError(f"the prompt template {template!r} must contain '{{}}' exactly once")
    for w in words:
        if not w:
            raise VocabularyError("the vocabulary holds an empty word: remove it or give a name")
    seen: set[str] = set()
    for w in words:
        if w.lower() in seen:
            raise VocabularyError(f"the vocabulary holds {w!r} twice: give each word once")
        seen.add(w.lower())
    n_max = int(tokenizer.model_max_length)
    prefix, suffix = template.split("{}")
    pre, suf = _ids(tokenizer, prefix.strip()), _ids(tokenizer, suffix.strip())
    budget = n_max - 2 - len(pre) - len(suf)
    rows, positions, prompts = [], [], []
    for w in words:
        wid = _ids(tokenizer, w)
        if not wid:
            raise VocabularyError(f"the word {w!r} tokenizes to nothing: give a word with letters")
        if len(wid) > budget:
            raise VocabularyError(
                f"the word {_short(w)!r} is {len(wid)} tokens; the text encoder's context holds {n_max} tokens, "
                f"{budget} for a word after BOS/EOS and the template {template!r}: shorten it"
            )
        prompt = template.format(w)
        ids = list(tokenizer(prompt, padding="max_length", max_length=n_max, truncation=False).input_ids)
        start = 1 + len(pre)
        if len(ids) != n_max or ids[start : start + len(wid)] != wid:
            raise VocabularyError(
                f"the template {template!r} changes how {w!r} tokenizes: put spaces around '{{}}'"
            )
        rows.append(ids)
        positions.append(list(range(start, start + len(wid))))
        prompts.append(prompt)
    token_ids = torch.tensor(rows, dtype=torch.long)
    dev = next(text_encoder.parameters()).device
    states = text_encoder(token_ids.to(dev))[0].float().cpu()
    return Vocabulary(list(words), prompts, states, token_ids, positions, template)


def require_text_encoder(backbone: Any) -> tuple[Any, Any]:
    """The backbone's ``(tokenizer, text_encoder)``, or a :class:`TextEncoderError` saying why not."""
    if getattr(backbone, "joint_frames", False) or hasattr(backbone, "image_encoder"):
        raise TextEncoderError(
            "open-vocabulary names need a text encoder; Stable Video Diffusion has none (it is conditioned "
            "on a CLIP image embedding): use an SD 2.x backbone"
        )
    tok, enc = getattr(backbone, "tokenizer", None), getattr(backbone, "text_encoder", None)
    if tok is None or enc is None:
        raise TextEncoderError(
            f"the backbone {getattr(backbone, 'source', type(backbone).__name__)!r} kept no tokenizer/text "
            "encoder; load it with both kept to name segments"
        )
    return tok, enc


# ------------------------------------------------------------------------------------------ UNet side
def site_name(block: int) -> str:
    """Module path of the cross-attention (``attn2``) of paper decoder block ``block`` (3..11)."""
    if not 3 <= block <= 11:
        raise VocabularyError(f"decoder block {block} has no cross-attention (blocks 3..11 do)")
    return f"up_blocks.{block // 3}.attentions.{block % 3}.transformer_blocks.0.attn2"


def attention_sites(unet: torch.nn.Module, blocks: Sequence[int] = NAME_BLOCKS) -> dict[str, Any]:
    """``{module path: attn2 module}`` of the given decoder blocks (each has ``heads``, ``to_k``)."""
    return {site_name(b): unet.get_submodule(site_name(b)) for b in blocks}


def site_parameters(
    sites: Mapping[str, Any],
) -> tuple[dict[str, KeyProjection], dict[str, int], dict[str, float]]:
    """``(to_k, heads, scales)`` of attention modules, as :func:`word_attention` takes them (a layer
    with ``norm_cross`` gets its text states normalised before ``to_k``, as diffusers does)."""
    to_k: dict[str, KeyProjection] = {}
    for name, attn in sites.items():
        if getattr(attn, "norm_cross", None) is not None:
            to_k[name] = lambda s, a=attn: a.to_k(a.norm_encoder_hidden_states(s))
        else:
            to_k[name] = attn.to_k
    heads = {n: int(a.heads) for n, a in sites.items()}
    scales = {n: float(a.scale) for n, a in sites.items()}
    return to_k, heads, scales


class QueryRecorder:
    """Forward hooks on ``attn2.to_q`` of the name sites: keep the conditional half at one step.

    ``set_step(i)`` (the :class:`~vidseg_nb.backbone.StepListener` interface) arms the hooks when
    ``i == step`` (``step=None``: every call records, the last one wins). Each armed UNet call appends
    its cond half (second half of the batch) per site; :meth:`queries` concatenates the chunks:
    ``{site: (N, L_l, C_l)}`` on the CPU in ``dtype``.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        blocks: Sequence[int] = NAME_BLOCKS,
        step: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.sites = attention_sites(unet, blocks)
        self.step, self.dtype = step, dtype
        self.armed = step is None
        self._chunks: dict[str, list[torch.Tensor]] = {n: [] for n in self.sites}
        self._handles: list[Any] = []

    def set_step(self, step: int) -> None:
        self.armed = self.step is None or step == self.step

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _inp: Any, out: torch.Tensor) -> None:
            if self.armed:
                self._chunks[name].append(out[out.shape[0] // 2 :].detach().to("cpu", self.dtype))

        return hook

    def __enter__(self) -> QueryRecorder:
        self._handles = [a.to_q.register_forward_hook(self._hook(n)) for n, a in self.sites.items()]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def queries(self) -> dict[str, torch.Tensor]:
        return {n: torch.cat(c) for n, c in self._chunks.items() if c}


def layer_grid(n_cells: int, grid: tuple[int, int]) -> tuple[int, int]:
    """The (h_l, w_l) with h_l * w_l = ``n_cells`` whose aspect ratio is closest to the feature grid's."""
    h, w = grid
    best = None
    for hl in range(1, n_cells + 1):
        if n_cells % hl:
            continue
        err = abs(math.log((hl / (n_cells // hl)) / (h / w)))
        if best is None or err < best[0] - 1e-12:
            best = (err, hl)
    assert best is not None
    return best[1], n_cells // best[1]


def resize_map(a: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, h_l, w_l, V) -> (N, h, w, V): bilinear up, area down, identity when equal."""
    if tuple(a.shape[1:3]) == tuple(grid):
        return a
    x = a.permute(0, 3, 1, 2)
    if a.shape[1] <= grid[0] and a.shape[2] <= grid[1]:
        x = F.interpolate(x, size=grid, mode="bilinear", align_corners=False)
    else:
        x = F.interpolate(x, size=grid, mode="area")
    return x.permute(0, 2, 3, 1)


def _keys(proj: KeyProjection, states: torch.Tensor) -> torch.Tensor:
    if isinstance(proj, torch.Tensor):
        return states.to(proj.device, torch.float32) @ proj.float().T
    p = next(iter(proj.parameters()), None) if isinstance(proj, torch.nn.Module) else None
    s = states if p is None else states.to(p.device, p.dtype)
    return proj(s).float()


def attention_probs(q: torch.Tensor, k: torch.Tensor, heads: int, scale: float | None = None) -> torch.Tensor:
    """softmax_t(scale * q_h . k_h[t]) per head: q (N, L, C), k (V, T, C) -> (N, V, H, L, T) float32."""
    n, cells, c = q.shape
    d = c // heads
    scale = d**-0.5 if scale is None else scale
    qh = q.float().reshape(n, cells, heads, d).permute(0, 2, 1, 3)  # N H L d
    kh = k.float().reshape(k.shape[0], k.shape[1], heads, d).permute(0, 2, 1, 3)  # V H T d
    logits = torch.einsum("nhld,vhtd->nvhlt", qh, kh.to(qh.device)) * scale
    return logits.softmax(dim=-1)


@torch.no_grad()
def word_attention(
    queries: Mapping[str, torch.Tensor],
    to_k: Mapping[str, KeyProjection],
    heads: Mapping[str, int],
    vocab: Vocabulary,
    grid: tuple[int, int],
    scales: Mapping[str, float] | None = None,
    *,
    device: str | torch.device | None = None,
    max_elements: int = 1 << 25,
) -> torch.Tensor:
    """A (N, h, w, V) float32 on the CPU: attention of every cell to each word, averaged over its
    sub-word tokens, heads and layers, each layer's map resized to the feature grid ``grid`` = (h, w)
    of F~ (module docstring).

    ``queries[site]``: (N, L_l, C_l) recorded ``attn2.to_q`` outputs (cond half, any dtype/device);
    ``to_k[site]``: the layer's ``to_k`` (a module/callable, or its (C_l, D) weight); ``heads[site]``:
    its head count; ``scales[site]``: its ``attn.scale`` (default 1 / sqrt(C_l / H_l)). The math runs
    in float32 on ``device`` (default: each query's device), in chunks of frames and words holding at
    most ``max_elements`` attention probabilities. No UNet call.
    """
    if not queries:
        raise VocabularyError("no cross-attention queries were recorded: nothing to name")
    n_words, n_tok = vocab.token_ids.shape
    out = None
    for site, q in queries.items():
        dev = torch.device(device) if device is not None else q.device
        n, cells = q.shape[0], q.shape[1]
        hl, wl = layer_grid(cells, grid)
        k = _keys(to_k[site], vocab.states).to(dev)  # V T C
        mask = vocab.token_mask().to(dev)  # V T
        scale = None if scales is None else scales[site]
        per_pair = heads[site] * cells * n_tok
        wc = max(1, min(n_words, max_elements // per_pair))
        fc = max(1, max_elements // (per_pair * wc))
        rows = []
        for f in range(0, n, fc):
            qf = q[f : f + fc].to(dev)
            cols = []
            for a in range(0, n_words, wc):
                p = attention_probs(qf, k[a : a + wc], heads[site], scale)  # n v H L T
                cols.append(torch.einsum("nvhlt,vt->nlv", p, mask[a : a + wc]) / p.shape[2])
            rows.append(torch.cat(cols, dim=-1))
        layer = torch.cat(rows).reshape(n, hl, wl, n_words)
        layer = resize_map(layer, grid).cpu()
        out = layer if out is None else out + layer
    assert out is not None
    return out / len(queries)


def unet_word_attention(
    queries: Mapping[str, torch.Tensor],
    unet: torch.nn.Module,
    vocab: Vocabulary,
    grid: tuple[int, int],
    **kw: Any,
) -> torch.Tensor:
    """:func:`word_attention` with ``to_k``, ``heads`` and scales read from the ``unet``'s own modules at
    the paths that key ``queries`` (as :class:`QueryRecorder` names them)."""
    sites = {name: unet.get_submodule(name) for name in queries}
    to_k, heads, scales = site_parameters(sites)
    return word_attention(queries, to_k, heads, vocab, grid, scales, **kw)


# ------------------------------------------------------------------------------------------ names
@dataclass(frozen=True)
class ClusterName:
    """The name of one cluster: ``name`` (a word or :data:`UNNAMED`), its normalised ``score``, the
    ``margin`` over the second-best word and ``best``, the top word (kept even when unnamed)."""

    name: str
    score: float
    margin: float
    best: str


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def cluster_scores(attention: Any, coarse: Any, eps: float = 1e-12) -> tuple[list[int], torch.Tensor]:
    """Cluster ids present in ``coarse`` (N, h, w; negative = ignored) and score (C, V):
    mean over the cluster's cells of A[n, y, x, v] / mean_{y', x'} A[n, y', x', v]."""
    a = _as_tensor(attention).float()
    lab = _as_tensor(coarse).long().to(a.device)
    if a.shape[:3] != lab.shape:
        raise VocabularyError(f"attention {tuple(a.shape)} and labels {tuple(lab.shape)} differ in N, h, w")
    a = a / a.mean(dim=(1, 2), keepdim=True).clamp_min(eps)
    ids = sorted(int(i) for i in torch.unique(lab) if i >= 0)
    flat, fl = a.reshape(-1, a.shape[-1]), lab.reshape(-1)
    scores = torch.stack([flat[fl == i].mean(0) for i in ids]) if ids else flat.new_zeros(0, a.shape[-1])
    return ids, scores


def name_clusters(
    attention: Any, coarse: Any, words: Sequence[str], margin: float = DEFAULT_MARGIN
) -> dict[int, ClusterName]:
    """``{cluster id: ClusterName}`` for the clusters of ``coarse`` from word attention A (N, h, w, V)."""
    if len(words) != _as_tensor(attention).shape[-1]:
        raise VocabularyError(f"{len(words)} words but attention has {_as_tensor(attention).shape[-1]}")
    ids, scores = cluster_scores(attention, coarse)
    out: dict[int, ClusterName] = {}
    for i, s in zip(ids, scores, strict=True):
        top = torch.topk(s, min(2, len(s)))
        best = float(top.values[0])
        gap = best - (float(top.values[1]) if len(s) > 1 else 0.0)
        word = words[int(top.indices[0])]
        out[i] = ClusterName(word if gap >= margin else UNNAMED, best, gap, word)
    return out


@dataclass
class NameTracker:
    """Names decided on the first batch and carried with the cluster ids through the clip.

    Later batches' labels come from the KNN over known ids, so they hold no new id; if one does
    appear anyway it is named from the first batch it appears in (when that batch's attention is
    given; else :data:`UNNAMED`) and listed in ``late``.
    """

    words: list[str]
    margin: float = DEFAULT_MARGIN
    names: dict[int, ClusterName] = field(default_factory=dict)
    late: set[int] = field(default_factory=set)
    decided: bool = False

    def update(self, coarse: Any, attention: Any = None) -> dict[int, ClusterName]:
        """Names of the clusters in this batch's labels (N, h, w); ``attention`` is needed on the first."""
        ids = sorted(int(i) for i in torch.unique(_as_tensor(coarse)) if i >= 0)
        if not self.decided:
            if attention is None:
                raise VocabularyError("the first batch needs its word attention to decide the names")
            self.names = name_clusters(attention, coarse, self.words, self.margin)
            self.decided = True
        new = [i for i in ids if i not in self.names]
        if new:
            fresh = name_clusters(attention, coarse, self.words, self.margin) if attention is not None else {}
            nan = float("nan")
            for i in new:
                self.names[i] = fresh.get(i, ClusterName(UNNAMED, nan, nan, UNNAMED))
                self.late.add(i)
        return {i: self.names[i] for i in ids}


def merge_same_names(labels: Any, names: Mapping[int, ClusterName]) -> tuple[Any, dict[int, ClusterName]]:
    """Clusters sharing a name (not :data:`UNNAMED`) become one: every member id maps to the smallest,
    which keeps the member entry with the highest score. Ids are not renumbered; ``labels`` keep
    their type (numpy or torch); ids absent from ``names`` are left alone."""
    groups: dict[str, list[int]] = {}
    for i, n in names.items():
        if n.name != UNNAMED:
            groups.setdefault(n.name, []).append(i)
    remap = {}
    out = {i: n for i, n in names.items() if n.name == UNNAMED}
    for members in groups.values():
        keep = min(members)
        out[keep] = max((names[i] for i in members), key=lambda n: n.score)
        remap.update({i: keep for i in members if i != keep})
    lab = _as_tensor(labels)
    new = lab.clone()
    for src, dst in remap.items():
        new[lab == src] = dst
    new_labels = new if isinstance(labels, torch.Tensor) else new.numpy()
    return new_labels, dict(sorted(out.items()))


# ------------------------------------------------------------------------------------------ vocabularies
CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree",
    "sign/symbol", "fence", "car", "pedestrian", "bicyclist",
)  # fmt: skip
"""CamVid's 11 evaluation classes, in training-id order 0..10."""

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)  # fmt: skip
"""Cityscapes' 19 classes in trainId order 0..18 (``datasets.CITYSCAPES_LABEL_TO_TRAIN``)."""

VSPW_CLASSES: tuple[str, ...] = (
    "wall", "ceiling", "door", "stair", "ladder", "escalator", "Playground_slide", "handrail_or_fence",
    "window", "rail", "goal", "pillar", "pole", "floor", "ground", "grass", "sand", "athletic_field",
    "road", "path", "crosswalk", "building", "house", "bridge", "tower", "windmill", "well_or_well_lid",
    "other_construction", "sky", "mountain", "stone", "wood", "ice", "snowfield", "grandstand", "sea",
    "river", "lake", "waterfall", "water", "billboard_or_Bulletin_Board", "sculpture", "pipeline",
    "flag", "parasol_or_umbrella", "cushion_or_carpet", "tent", "roadblock", "car", "bus", "truck",
    "bicycle", "motorcycle", "wheeled_machine", "ship_or_boat", "raft", "airplane", "tyre",
    "traffic_light", "lamp", "person", "cat", "dog", "horse", "cattle", "other_animal", "tree",
    "flower", "other_plant", "toy", "ball_net", "backboard", "skateboard", "bat", "ball",
    "cupboard_or_showcase_or_storage_rack", "box", "traveling_case_or_trolley_case", "basket",
    "bag_or_package", "trash_can", "cage", "plate", "tub_or_bowl_or_pot", "bottle_or_cup", "barrel",
    "fishbowl", "bed", "pillow", "table_or_desk", "chair_or_seat", "bench", "sofa", "shelf", "bathtub",
    "gun", "commode", "roaster", "other_machine", "refrigerator", "washing_machine", "Microwave_oven",
    "fan", "curtain", "textiles", "clothes", "painting_or_poster", "mirror", "flower_pot_or_vase",
    "clock", "book", "tool", "blackboard", "tissue", "screen_or_television", "computer", "printer",
    "Mobile_phone", "keyboard", "other_electronic_product", "fruit", "food", "instrument", "train",
)  # fmt: skip
"""VSPW's 124 classes (official names, raw mask values 1..124 = class ids 0..123, ``datasets.VSPW_LUT``)."""

_VOCABULARIES = {"camvid": CAMVID_CLASSES, "cityscapes": CITYSCAPES_CLASSES, "vspw": VSPW_CLASSES}


def vocabulary_for_dataset(name: str, official: bool = False) -> list[str]:
    """Class names of ``camvid`` (11), ``vspw`` (124) or ``cityscapes`` (19), in class-id order.

    By default as prompt words: lower case, ``_`` and ``/`` read as spaces/"or" (``"sign or symbol"``,
    ``"handrail or fence"``); ``official=True`` gives the datasets' own spellings.
    """
    key = name.lower().strip()
    if key not in _VOCABULARIES:
        raise VocabularyError(
            f"no class list for data set {name!r}; known: {', '.join(sorted(_VOCABULARIES))}"
        )
    names = list(_VOCABULARIES[key])
    if official:
        return names
    return [n.lower().replace("/", " or ").replace("_", " ") for n in names]


__all__ = [
    "CAMVID_CLASSES",
    "CITYSCAPES_CLASSES",
    "DEFAULT_MARGIN",
    "DEFAULT_TEMPLATE",
    "NAME_BLOCKS",
    "UNNAMED",
    "VSPW_CLASSES",
    "ClusterName",
    "NameTracker",
    "QueryRecorder",
    "TextEncoderError",
    "Vocabulary",
    "VocabularyError",
    "attention_probs",
    "attention_sites",
    "cluster_scores",
    "encode_vocabulary",
    "layer_grid",
    "merge_same_names",
    "name_clusters",
    "require_text_encoder",
    "resize_map",
    "site_name",
    "site_parameters",
    "unet_word_attention",
    "word_attention",
]
