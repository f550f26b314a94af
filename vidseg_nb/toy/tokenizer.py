"""A CLIP tokenizer in which every toy-world word is one token.

CLIP's tokenizer is byte-pair encoding: a word starts as characters (the last one marked ``</w>``) and
the pair of lowest merge rank is merged until none applies. The character alphabet of
:func:`vidseg_nb.backbone.write_tiny_tokenizer` is kept (any text still tokenizes), and for each word the
merges that build it are appended, each at the highest rank so far: a merge only ever applies where no
earlier one does, so the words already built stay one token (checked by :func:`check_words`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..backbone import write_tiny_tokenizer

__all__ = ["bpe", "check_words", "write_word_tokenizer"]


def bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE of one lower-case word (as ``CLIPTokenizer.bpe``): its tokens."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = {(a, b) for a, b in zip(parts, parts[1:])}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def write_word_tokenizer(folder: str | Path, words: Sequence[str]) -> Path:
    """Write ``vocab.json`` + ``merges.txt`` to ``folder``: the byte alphabet plus one token per word."""
    folder = write_tiny_tokenizer(folder)
    vocab: dict[str, int] = json.loads((folder / "vocab.json").read_text())
    specials = [t for t in vocab if t.startswith("<|")]
    for t in specials:
        vocab.pop(t)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for w in dict.fromkeys(x.lower() for x in words):
        parts = bpe(w, ranks)
        while len(parts) > 1:  # merge left to right; each new merge has the highest rank
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            parts = bpe(w, ranks)
    for t in specials:
        vocab[t] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return folder


def check_words(tokenizer, words: Sequence[str]) -> list[str]:
    """The words that ``tokenizer`` does not encode as exactly one token (empty when all are)."""
    return [w for w in words if len(tokenizer(w, add_special_tokens=False).input_ids) != 1]
