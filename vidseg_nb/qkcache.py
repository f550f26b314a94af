"""Kept reference runs for stage-3 reruns (issue 12.3): a new lambda does not repeat the reference run.

Stage 3 replays the reference run of each batch: its q/k (``QKStore``), its latents x_i and, with
``SegConfig.reuse_prefix``, its outputs at t_m (about 180 MB per 512x512 frame in fp16). The
:class:`QKCache` of a :class:`~vidseg_nb.pipeline.VideoSegmenter` keeps each batch's
:class:`~vidseg_nb.features.Reference` keyed on the batch's frames (content hash), its offset in the clip
and the feature key (the fields the reference run reads), while they fit the budget:

- ``SegConfig.keep_qk`` (default on) and ``SegConfig.keep_qk_budget_gb``: the GiB all kept references
  may hold (None: on CUDA the free device memory minus 4 GiB; on the CPU 0, nothing is kept unless a
  budget is given).

A reference that does not fit is not kept (``fallbacks`` counts them); the next stage-3 rerun of that
batch recomputes it (``misses``; its UNet samples are counted by the backbone as usual). Only one clip is
kept at a time: a batch of another clip evicts the previous clip's references.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from .cache import Key, clip_key
from .config import SegConfig
from .features import Reference

__all__ = ["QKCache", "QKCacheCounters", "budget_bytes", "keep_qk_on"]

CUDA_RESERVE = 4 * 2**30  # bytes of free device memory left to the modulated runs


def budget_bytes(config: SegConfig, device: torch.device, held: int = 0) -> int:
    """Bytes all kept references may hold: ``keep_qk_budget_gb``, else on CUDA the free device memory
    minus 4 GiB (plus what is already ``held``), on the CPU 0; 0 when ``keep_qk`` is off."""
    if not config.keep_qk:
        return 0
    if config.keep_qk_budget_gb is not None:
        return int(config.keep_qk_budget_gb * 2**30)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(0, int(free) - CUDA_RESERVE + held)
    return 0


def keep_qk_on(config: SegConfig, device: torch.device) -> bool:
    """Whether reference runs are kept at all: ``keep_qk`` with a budget > 0 (on the CPU only when
    ``keep_qk_budget_gb`` is given)."""
    if not config.keep_qk:
        return False
    if config.keep_qk_budget_gb is not None:
        return config.keep_qk_budget_gb > 0
    return device.type == "cuda"


@dataclass
class QKCacheCounters:
    """``hits``: stage-3 runs served a kept reference; ``misses``: stage-3 runs that computed theirs;
    ``fallbacks``: references not kept because they did not fit the budget; ``kept_bytes`` held now."""

    hits: int = 0
    misses: int = 0
    fallbacks: int = 0
    kept_bytes: int = 0


@dataclass
class QKCache:
    """Reference runs kept per (batch frames, offset, feature key) of the current clip (module docstring)."""

    entries: OrderedDict[tuple, Reference] = field(default_factory=OrderedDict)
    counters: QKCacheCounters = field(default_factory=QKCacheCounters)

    @staticmethod
    def key(frames: np.ndarray, offset: int, fkey: Key) -> tuple:
        """Key of a batch's reference run: content hash of its frames, its first frame's index, the feature key."""
        return (clip_key(frames), int(offset), fkey)

    def budget(self, config: SegConfig, device: torch.device) -> int:
        """Bytes the kept references may hold in all (:func:`budget_bytes`)."""
        return budget_bytes(config, device, self.counters.kept_bytes)

    def get(
        self, frames: np.ndarray, offset: int, fkey: Key, config: SegConfig, device: torch.device
    ) -> Reference | None:
        """The kept reference of this batch, or None (counted as a miss when keeping is on)."""
        if not keep_qk_on(config, device):
            return None
        ref = self.entries.get(self.key(frames, offset, fkey))
        if ref is None:
            self.counters.misses += 1
        else:
            self.counters.hits += 1
        return ref

    def put(
        self,
        frames: np.ndarray,
        offset: int,
        fkey: Key,
        ref: Reference,
        config: SegConfig,
        device: torch.device,
    ) -> bool:
        """Keep ``ref`` when keeping is on and it fits the budget; returns whether it was kept."""
        if not keep_qk_on(config, device) or ref.qk is None:
            return False
        key = self.key(frames, offset, fkey)
        if self.entries and next(iter(self.entries))[0] != key[0] and offset == 0:
            self.clear()  # a new clip: only one clip is kept
        size = ref.nbytes()
        if self.counters.kept_bytes + size > self.budget(config, device):
            self.counters.fallbacks += 1
            return False
        if key in self.entries:
            self.counters.kept_bytes -= self.entries[key].nbytes()
        self.entries[key] = ref
        self.counters.kept_bytes += size
        return True

    def clear(self) -> None:
        """Drop every kept reference (the counters of hits, misses and fallbacks stay)."""
        self.entries.clear()
        self.counters.kept_bytes = 0

    def __len__(self) -> int:
        return len(self.entries)
