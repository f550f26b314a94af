"""The palette's colorize and overlay against their float/modulo definitions (the code before the table
look-up, kept here as the reference), on random frames and labels."""

from __future__ import annotations

import numpy as np
import pytest

from vidseg_nb.palette import PALETTE, colorize, overlay


def colorize_reference(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels).astype(np.int64)
    rgb = PALETTE[np.mod(labels, len(PALETTE))].copy()
    rgb[labels < 0] = 0
    return rgb


def overlay_reference(frames: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """The float32 formula overlay computed before the table: (1 - a) f + a c, np.round, clip, uint8."""
    col = colorize_reference(labels).astype(np.float32)
    out = (1 - alpha) * frames.astype(np.float32) + alpha * col
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def frames_labels():
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    frames[0, 0, :2] = [[0, 0, 0], [255, 255, 255]]
    labels = rng.integers(-3, 600, (3, 48, 64))  # negative (black), beyond 255 (wraps)
    return frames, labels


def test_colorize_equals_the_modulo_definition(frames_labels):
    labels = frames_labels[1]
    for lab in (labels, labels.astype(np.int32), np.abs(labels).astype(np.uint16), labels[0, 0, 0]):
        got = colorize(lab)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, colorize_reference(lab))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 0.37, 1 / 3, 0.6, np.float32(0.4), np.float64(0.45), 1.2])
def test_overlay_equals_the_float_formula_bit_for_bit(frames_labels, alpha):
    frames, labels = frames_labels
    got = overlay(frames, labels, alpha)
    assert got.dtype == np.uint8 and got.shape == frames.shape
    np.testing.assert_array_equal(got, overlay_reference(frames, labels, alpha))


def test_overlay_known_answers(frames_labels):
    frames, labels = frames_labels
    f, c = frames.astype(np.int64), colorize_reference(labels).astype(np.int64)
    np.testing.assert_array_equal(overlay(frames, labels, 0.0), frames)
    np.testing.assert_array_equal(overlay(frames, labels, 1.0), c)
    # alpha = 1/2: (f + c) / 2 with halves rounded to even, in integers
    s = f + c
    q = s >> 1
    np.testing.assert_array_equal(overlay(frames, labels, 0.5), q + (s & q & 1))
    one = np.array([[[[0, 2, 1]]]], np.uint8), np.array([[[0]]])  # PALETTE[0] = (31, 119, 180)
    np.testing.assert_array_equal(overlay(*one, 0.5)[0, 0, 0], [16, 60, 90])  # 15.5, 60.5, 90.5 to even


def test_overlay_float_frames_and_bad_shapes(frames_labels):
    frames, labels = frames_labels
    np.testing.assert_array_equal(
        overlay(frames.astype(np.float64), labels, 0.3), overlay_reference(frames, labels, 0.3)
    )
    with pytest.raises(ValueError, match="differ in size"):
        overlay(frames, labels[:, :-1])
