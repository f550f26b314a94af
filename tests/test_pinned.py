"""The labels pinned before the refactor (tests/pinned.py) are reproduced exactly, for SD and SVD."""

from __future__ import annotations

import numpy as np
import pytest
from pinned import PIN_FILE, SD_CASE, SVD_CASE, compute


@pytest.mark.parametrize("name,case", [("sd", SD_CASE), ("svd", SVD_CASE)])
def test_labels_equal_the_pinned_labels(name, case, tiny):
    pins = np.load(PIN_FILE)
    got = compute(case, backbone=tiny if name == "sd" else None)
    for k in ("before", "after", "labels"):
        np.testing.assert_array_equal(got[k], pins[f"{name}_{k}"], err_msg=f"{name} {k}")
    # the pinned case is not degenerate: several labels, refinement and modulation both matter
    assert len(np.unique(pins[f"{name}_labels"])) >= 2
