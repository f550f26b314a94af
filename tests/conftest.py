"""Shared fixtures: the tiny random SD 2.x-layout backbone (built once) and the sample-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny():
    """The random tiny backbone on the CPU (fp32); counters are shared, so tests read deltas."""
    from vidseg_nb.loading import load_backbone

    return load_backbone("tiny", device="cpu")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"sample data folder {SHARED_DATA} is absent (it lives beside the repo, not in it)")
    return SHARED_DATA
