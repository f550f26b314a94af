"""The labels pinned before the refactor (tests/pinned.py) are reproduced exactly, for SD and SVD."""

from __future__ import annotations

import numpy as np
import pytest
from pinned import PIN_FILE, SD_CASE, SVD_CASE, compute


@pytest.fixture
def two_threads():
    """The pins were computed with 2 intra-op threads (the CI machine's cores): the CPU kernels' reduction
    order, and so the last bits of D_l near ties, depend on the thread count (with 1 thread one SD pixel
    flips). Pin it, whatever OMP_NUM_THREADS or the machine's core count says."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("name,case", [("sd", SD_CASE), ("svd", SVD_CASE)])
def test_labels_equal_the_pinned_labels(name, case, tiny, two_threads):
    pins = np.load(PIN_FILE)
    got = compute(case, backbone=tiny if name == "sd" else None)
    for k in ("before", "after", "labels"):
        np.testing.assert_array_equal(got[k], pins[f"{name}_{k}"], err_msg=f"{name} {k}")
    # the pinned case is not degenerate: several labels, refinement and modulation both matter
    assert len(np.unique(pins[f"{name}_labels"])) >= 2
