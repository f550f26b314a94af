"""Open-vocabulary names from cross-attention (vidseg_nb.names, issue 13).

Hand-built queries/keys with known answers, the text side on the tiny tokenizer / text encoder, and
one check against diffusers' own attention probabilities on the tiny random UNet. The tiny model's
weights are random: no name it gives means anything, so no test reads meaning into one.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidseg_nb.errors import VidSegError
from vidseg_nb.names import (
    UNNAMED,
    ClusterName,
    NameTracker,
    QueryRecorder,
    TextEncoderError,
    Vocabulary,
    VocabularyError,
    attention_probs,
    attention_sites,
    cluster_scores,
    encode_vocabulary,
    layer_grid,
    merge_same_names,
    name_clusters,
    require_text_encoder,
    site_parameters,
    unet_word_attention,
    vocabulary_for_dataset,
    word_attention,
)

T, D = 6, 8  # tokens per prompt, text width of the hand-built vocabulary


def _e(i: int) -> torch.Tensor:
    v = torch.zeros(D)
    v[i] = 1.0
    return v


def hand_vocab() -> Vocabulary:
    """Prompts [BOS=e0, word tokens..., pad=e7 ...]: A = e1 at 1; B = e2 at 1; C = e3, e4 at 1, 2."""
    rows = []
    for toks in ([1], [2], [3, 4]):
        s = torch.stack([_e(0)] + [_e(t) for t in toks] + [_e(7)] * (T - 1 - len(toks)))
        rows.append(s)
    pos = [[1], [1], [1, 2]]
    return Vocabulary(["A", "B", "C"], ["A", "B", "C"], torch.stack(rows), torch.zeros(3, T).long(), pos)


def left_right_queries(alpha: float, h: int, w: int, n: int = 2, heads: int = 1) -> torch.Tensor:
    """q (n, h*w, heads*D): left half = alpha*e1 (word A), right half = alpha*e2 (word B), head 0 only."""
    q = torch.zeros(n, h, w, heads, D)
    q[:, :, : w // 2, 0] = alpha * _e(1)
    q[:, :, w // 2 :, 0] = alpha * _e(2)
    return q.reshape(n, h * w, heads * D)


def test_left_right_names_and_exact_softmax():
    h, w, heads, alpha = 4, 8, 2, 3.0
    vocab = hand_vocab()
    q = left_right_queries(alpha, h, w, heads=heads)
    weight = torch.cat([torch.eye(D)] * heads)  # to_k: (heads*D, D), every head's key = the token state
    scale = 1 / math.sqrt(D)
    a = word_attention({"l": q}, {"l": weight}, {"l": heads}, vocab, (h, w))
    assert a.shape == (2, h, w, 3)
    # head 0 on the left: logits [0, alpha, 0, 0, 0, 0] * scale for A's prompt; all 0 for B's; head 1: all 0
    e = math.exp(alpha * scale)
    p_hit, p_flat = e / (e + T - 1), 1 / T
    torch.testing.assert_close(a[:, :, : w // 2, 0], torch.full((2, h, w // 2), (p_hit + p_flat) / 2))
    torch.testing.assert_close(a[:, :, : w // 2, 1], torch.full((2, h, w // 2), p_flat))
    torch.testing.assert_close(a[:, :, w // 2 :, 1], torch.full((2, h, w // 2), (p_hit + p_flat) / 2))
    coarse = torch.zeros(2, h, w, dtype=torch.long)
    coarse[:, :, w // 2 :] = 1
    names = name_clusters(a, coarse, vocab.words)
    assert names[0].name == "A" and names[1].name == "B"
    # score = cluster mean / frame mean of the word: left A = x / ((x + p_flat) / 2)
    x = (p_hit + p_flat) / 2
    assert names[0].score == pytest.approx(x / ((x + p_flat) / 2), rel=1e-5)
    assert names[0].margin == pytest.approx(names[0].score - 1.0, rel=1e-5)  # C is flat: score 1


def test_layers_resized_and_averaged():
    h, w = 4, 8
    vocab = hand_vocab()
    q_big, q_small = left_right_queries(3.0, h, w), left_right_queries(2.0, h // 2, w // 2)
    eye = torch.eye(D)
    qs = {"big": q_big, "small": q_small}
    a = word_attention(qs, {"big": eye, "small": eye}, {"big": 1, "small": 1}, vocab, (h, w))
    a_big = word_attention({"big": q_big}, {"big": eye}, {"big": 1}, vocab, (h, w))
    a_small = word_attention({"small": q_small}, {"small": eye}, {"small": 1}, vocab, (h // 2, w // 2))
    up = F.interpolate(a_small.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False)
    torch.testing.assert_close(a, (a_big + up.permute(0, 2, 3, 1)) / 2)
    small_chunks = word_attention(
        qs, {"big": eye, "small": eye}, {"big": 1, "small": 1}, vocab, (h, w), max_elements=1
    )  # one frame and one word at a time
    torch.testing.assert_close(small_chunks, a)
    assert layer_grid(32 * 64, (64, 128)) == (32, 64) and layer_grid(16 * 16, (32, 32)) == (16, 16)


def test_subword_tokens_are_averaged():
    vocab = hand_vocab()
    alpha, h, w = 4.0, 2, 2
    q = (alpha * _e(3)).expand(1, h * w, D).clone()  # every cell points at C's first sub-word token
    a = word_attention({"l": q}, {"l": torch.eye(D)}, {"l": 1}, vocab, (h, w))
    e = math.exp(alpha / math.sqrt(D))
    expected = (e / (e + T - 1) + 1 / (e + T - 1)) / 2  # mean over positions 1 and 2 of C's prompt
    torch.testing.assert_close(a[..., 2], torch.full((1, h, w), expected))
    m = vocab.token_mask()
    assert m[2, 1] == m[2, 2] == 0.5 and m[2].sum() == 1 and m[0, 1] == 1


def test_unnamed_below_margin():
    a = torch.ones(1, 2, 2, 2)
    a[0, 0, :, 0] = 1.2  # word 0 slightly stronger in the top row, both words otherwise flat
    a[0, 0, :, 1] = 1.1
    coarse = torch.tensor([[[0, 0], [1, 1]]])
    ids, scores = cluster_scores(a, coarse)
    assert ids == [0, 1]
    top0, top1 = 1.2 / 1.1, 1.1 / 1.05  # cluster mean / frame mean per word
    torch.testing.assert_close(scores[0], torch.tensor([top0, top1]))
    gap = top0 - top1
    names = name_clusters(a, coarse, ["x", "y"], margin=gap + 1e-3)
    assert names[0] == ClusterName(UNNAMED, pytest.approx(top0), pytest.approx(gap), "x")
    assert name_clusters(a, coarse, ["x", "y"], margin=gap - 1e-3)[0].name == "x"


def test_names_survive_later_batches_and_merge():
    a1 = torch.zeros(1, 2, 4, 2)
    a1[..., :2, 0], a1[..., 2:, 1] = 1.0, 1.0  # word 0 left, word 1 right
    coarse = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    tracker = NameTracker(["left", "right"])
    first = tracker.update(coarse, a1)
    assert first[0].name == "left" and first[1].name == "right"
    swapped = a1.flip(-1)  # a later batch whose attention would swap the names
    assert name_clusters(swapped, coarse, tracker.words)[0].name == "right"
    assert tracker.update(coarse, swapped) == first
    assert tracker.update(coarse[:, :, :2]) == {0: first[0]}  # no attention needed once decided
    later = tracker.update(torch.full((1, 2, 4), 5))  # an id the KNN cannot produce: flagged, unnamed
    assert later[5].name == UNNAMED and tracker.late == {5}
    labels = np.array([[0, 1, 2, 3]])
    names = {
        i: ClusterName(n, s, 1.0, n) for i, (n, s) in enumerate([("a", 2), ("b", 2), ("a", 3), (UNNAMED, 1)])
    }
    merged, kept = merge_same_names(labels, names)
    assert merged.tolist() == [[0, 1, 0, 3]] and isinstance(merged, np.ndarray)
    assert sorted(kept) == [0, 1, 3] and kept[0].score == 3
    merged_t, _ = merge_same_names(torch.from_numpy(labels), names)
    assert merged_t.tolist() == [[0, 1, 0, 3]]


# ------------------------------------------------------------------------------------------ tiny model
@pytest.fixture(scope="module")
def comps():
    from vidseg_nb.backbone import build_tiny_components

    return build_tiny_components()


def test_encode_vocabulary_tiny(comps):
    tok, enc = comps["tokenizer"], comps["text_encoder"]
    vocab = encode_vocabulary(tok, enc, ["sky", "traffic light"])
    assert vocab.states.shape == (2, tok.model_max_length, enc.config.hidden_size)
    for v, word in enumerate(vocab.words):
        ids = tok(word, add_special_tokens=False).input_ids
        assert vocab.token_ids[v, vocab.positions[v]].tolist() == ids  # the word's own sub-words
        ref = tok(f"a photo of a {word}", padding="max_length", max_length=77, return_tensors="pt").input_ids
        assert torch.equal(vocab.token_ids[v], ref[0])
        with torch.no_grad():
            torch.testing.assert_close(vocab.states[v], enc(ref)[0][0].float())


def test_bad_vocabularies(comps, tiny):
    tok, enc = comps["tokenizer"], comps["text_encoder"]
    cases = [([], "empty"), (["sky", " "], "empty word"), (["x" * 80], "80 tokens")]
    for words, what in cases:
        with pytest.raises(VocabularyError) as e:
            encode_vocabulary(tok, enc, words)
        assert what in str(e.value) and "\n" not in str(e.value)
        assert isinstance(e.value, VidSegError) and isinstance(e.value, ValueError)
    with pytest.raises(TextEncoderError, match="Stable Video Diffusion has none") as e:
        require_text_encoder(SimpleNamespace(joint_frames=True, image_encoder=object()))
    assert "\n" not in str(e.value)
    with pytest.raises(TextEncoderError, match="kept no tokenizer/text encoder"):
        require_text_encoder(dataclasses.replace(tiny, tokenizer=None, text_encoder=None))
    assert require_text_encoder(tiny) == (tiny.tokenizer, tiny.text_encoder)  # the loader keeps both
    kept = SimpleNamespace(tokenizer=tok, text_encoder=enc)
    assert require_text_encoder(kept) == (tok, enc)


def test_word_attention_matches_diffusers_attention(comps):
    from diffusers.models.attention_processor import AttnProcessor

    unet, tok, enc = comps["unet"], comps["tokenizer"], comps["text_encoder"]
    vocab = encode_vocabulary(tok, enc, ["sky", "road"])
    unet.set_attn_processor(AttnProcessor())  # the processor that calls attn.get_attention_scores
    sites = attention_sites(unet)
    probs: dict[str, torch.Tensor] = {}
    for name, attn in sites.items():

        def scores(q, k, mask=None, attn=attn, name=name):
            p = type(attn).get_attention_scores(attn, q, k, mask)
            probs[name] = p
            return p

        attn.get_attention_scores = scores
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 16, 16, generator=g).expand(2, -1, -1, -1)
    states = torch.cat([torch.zeros_like(vocab.states[:1]), vocab.states[:1]])  # [uncond; cond = "sky"]
    rec = QueryRecorder(unet, step=7)
    rec.set_step(3)
    try:
        with rec, torch.no_grad():
            unet(x, torch.tensor(999), encoder_hidden_states=states)
            assert rec.queries() == {}  # not the recorded step
            rec.set_step(7)
            unet(x, torch.tensor(999), encoder_hidden_states=states)
    finally:
        for attn in sites.values():
            del attn.get_attention_scores
    queries = rec.queries()
    assert sorted(queries) == sorted(sites) and queries[next(iter(sites))].shape[0] == 1
    to_k, heads, scales = site_parameters(sites)
    grid = (8, 8)  # latent 16x16 -> feature grid of blocks 6-8
    expected = []
    for name, attn in sites.items():
        p_ref = probs[name].reshape(2, attn.heads, *probs[name].shape[1:])[1:]  # cond half (1, H, L, T)
        with torch.no_grad():
            p = attention_probs(queries[name], to_k[name](vocab.states[:1]), heads[name], scales[name])
        torch.testing.assert_close(p[:, 0], p_ref, rtol=1e-5, atol=1e-6)
        cells = p_ref[..., vocab.positions[0]].mean(-1).mean(1)  # tokens, then heads
        hl, wl = layer_grid(cells.shape[1], grid)
        m = cells.reshape(1, 1, hl, wl)
        if (hl, wl) != grid:
            m = F.interpolate(m, size=grid, mode="bilinear", align_corners=False)
        expected.append(m[0, 0])
    a = word_attention(queries, to_k, heads, vocab, grid, scales)
    assert a.shape == (1, 8, 8, 2)
    torch.testing.assert_close(a[0, ..., 0], torch.stack(expected).mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(unet_word_attention(queries, unet, vocab, grid), a)


def test_dataset_vocabularies():
    camvid = vocabulary_for_dataset("CamVid")
    assert camvid[:3] == ["sky", "building", "pole"] and camvid[6] == "sign or symbol" and len(camvid) == 11
    vspw = vocabulary_for_dataset("vspw")
    assert len(vspw) == len(set(vspw)) == 124 and vspw[7] == "handrail or fence" and vspw[123] == "train"
    assert vocabulary_for_dataset("vspw", official=True)[6] == "Playground_slide"
    city = vocabulary_for_dataset("cityscapes")
    assert len(city) == 19 and city[0] == "road" and city[18] == "bicycle"
    with pytest.raises(VocabularyError, match="known: camvid, cityscapes, vspw"):
        vocabulary_for_dataset("ade20k")
