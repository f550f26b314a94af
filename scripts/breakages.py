"""A pytest plugin that breaks one stage on purpose (issue 21, item 3): ``-p breakages --vidseg-break NAME``.

Used by ``scripts/break_run_red.py`` to show that each breakage turns at least one test red. The
patches replace a function in every loaded ``vidseg_nb`` module that holds it (``from .x import f``
copies included), for the whole session:

- ``kmeans_shuffled``: K-Means's start labels M^1 are attached to the wrong cells (the features of
  frame 1 shuffled before K-Means, the labels kept in shuffled order; the KNN then learns the mix-up);
- ``cbr_identity``: the correspondence-based refinement returns its input (M~^j = M^j);
- ``lambda0``: the masked modulation runs with lambda = 0 (D_l = 0);
- ``s_ignored``: the filter ignores s (D~_l = D_l, s = 1);
- ``names_order``: the vocabulary's words are given in another order than their embeddings.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

BREAKAGES = ("kmeans_shuffled", "cbr_identity", "lambda0", "s_ignored", "names_order")


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--vidseg-break", default=None, choices=BREAKAGES, help="break one stage on purpose")


def _replace_everywhere(orig: Callable, new: Callable) -> int:
    """Point every ``vidseg_nb`` module attribute that is ``orig`` at ``new``; returns how many."""
    n = 0
    for name, mod in list(sys.modules.items()):
        if not (name == "vidseg_nb" or name.startswith("vidseg_nb.")) or mod is None:
            continue
        for attr, value in list(vars(mod).items()):
            if value is orig:
                setattr(mod, attr, new)
                n += 1
    return n


def apply(name: str) -> str:
    """Apply breakage ``name``; returns a line saying what was patched."""
    import importlib
    import pkgutil

    import vidseg_nb

    for m in pkgutil.walk_packages(vidseg_nb.__path__, "vidseg_nb."):  # load every module, so all copies go
        if m.name.startswith("vidseg_nb.toy.model"):
            continue
        try:
            importlib.import_module(m.name)
        except Exception:  # noqa: BLE001 (optional extras such as ray)
            pass
    if name == "kmeans_shuffled":
        from vidseg_nb.context import SceneContextModel

        orig = SceneContextModel._fit_kmeans

        def _fit_kmeans(self: Any, features: Any) -> Any:
            import torch

            b, h, w, c = (int(d) for d in features.shape)
            perm = np.random.default_rng(0).permutation(h * w)
            x = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
            shuffled = x.reshape(b, h * w, c)[:, torch.as_tensor(perm)].reshape(b, h, w, c)
            orig(self, shuffled)
            m1 = self.start_labels_  # labels of shuffled cells, read as if in place
            self._fit_knn(x[0], m1)
            self.start_labels_ = m1
            return self

        SceneContextModel._fit_kmeans = _fit_kmeans
        return "SceneContextModel._fit_kmeans: M^1 on shuffled cells"
    if name == "cbr_identity":
        from vidseg_nb import refine as r

        def identity(labels: Any, features: Any, radius2: float = 1.0) -> np.ndarray:
            return np.asarray(labels).copy()

        return f"refine -> identity ({_replace_everywhere(r.refine, identity)} places)"
    if name == "lambda0":
        from vidseg_nb import modulation as mod

        orig_mod = mod.modulate

        def modulate(backbone: Any, ref: Any, masks: Any, config: Any, *a: Any, **kw: Any) -> Any:
            return orig_mod(backbone, ref, masks, dataclasses.replace(config, lam=0.0), *a, **kw)

        return f"modulate with lambda = 0 ({_replace_everywhere(orig_mod, modulate)} places)"
    if name == "s_ignored":
        from vidseg_nb import modulation as mod

        orig_filter = mod.filter_maps

        def filter_maps(raw: Any, labels: Any, coarse: Any, s: float, **kw: Any) -> np.ndarray:
            return orig_filter(raw, labels, coarse, 1.0, **kw)

        return f"filter_maps with s = 1 ({_replace_everywhere(orig_filter, filter_maps)} places)"
    if name == "names_order":
        from vidseg_nb import names

        orig_enc = names.encode_vocabulary

        def encode_vocabulary(*a: Any, **kw: Any) -> Any:
            v = orig_enc(*a, **kw)
            return dataclasses.replace(v, words=v.words[::-1])  # embeddings keep their order

        return f"encode_vocabulary with the words reversed ({_replace_everywhere(orig_enc, encode_vocabulary)} places)"
    raise ValueError(name)


def pytest_configure(config: Any) -> None:
    name = config.getoption("--vidseg-break")
    if name:
        line = apply(name)
        config._vidseg_break_line = line


def pytest_report_header(config: Any) -> str | None:
    line = getattr(config, "_vidseg_break_line", None)
    return f"vidseg-break: {line}" if line else None
