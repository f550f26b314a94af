"""Issue 23.2: Figure 3 in five calls. ``_Loop.step`` reads as the paper's steps (reference run, context
model, refinement, modulation, filter + argmax) in under 60 lines; each step's version (the paper's or the
authors', issue 15) is chosen once per run by ``_choose_stages``, the only place of the loop's modules that
reads an authors' switch; the rows stay independently switchable.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from vidseg_nb import pipeline
from vidseg_nb.config import SegConfig

# the switches of the authors' rows the loop reads (docs/authors.md)
SWITCHES = {
    "vae_sample",
    "batch_noise",
    "shifted_last_batch",
    "knn_first_frame",
    "gt_merge",
    "authors_cbr",
    "blend_two_steps",
    "uint8_diff",
    "resize_decoded",
    "lanczos_filter",
}
LOOP_MODULES = [m for m in ("pipeline", "stages", "streaming") if importlib.util.find_spec(f"vidseg_nb.{m}")]


def _chooser():
    return pipeline._choose_stages


@pytest.mark.parametrize("name", LOOP_MODULES)
def test_no_authors_switch_outside_the_chooser(name) -> None:
    mod = importlib.import_module(f"vidseg_nb.{name}")
    tree = ast.parse(Path(mod.__file__).read_text(encoding="utf-8"))
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "_choose_stages":
            inside |= {id(n) for n in ast.walk(node)}
    bad = [
        f"{name}.py:{n.lineno} .{n.attr}"
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and n.attr in SWITCHES and id(n) not in inside
    ]
    assert not bad, bad


def test_step_reads_as_figure_3_in_under_60_lines() -> None:
    src = inspect.getsource(pipeline._Loop.step)
    assert len(src.splitlines()) < 60
    calls = [
        c for c in ("self.reference_run(", "self.coarse_maps(", "self.modulation(", "self.filter_argmax(")
    ]
    pos = [src.index(c) for c in calls]
    assert pos == sorted(pos)  # steps 0, 1-2, 3, 4 in the paper's order
    assert "knn_first_frame" not in src and "authors" not in src


@pytest.mark.parametrize(
    ("row", "field", "slot", "paper", "authors"),
    [
        (5, "knn_first_frame", "context", "paper_context", "authors_context"),
        (8, "authors_cbr", "refinement", "paper_refine", "authors_cbr"),
    ],
)
def test_rows_are_chosen_independently(row, field, slot, paper, authors) -> None:
    base = _chooser()(SegConfig())
    one = _chooser()(SegConfig(**{field: True}))
    assert getattr(base, slot).__name__ == paper and getattr(one, slot).__name__ == authors
    for other in ("context", "refinement"):
        if other != slot:  # the other steps stay the paper's
            assert getattr(one, other).__name__ == getattr(base, other).__name__
    assert one.update == (field != "knn_first_frame")


def test_the_chooser_flags_rows_3_6_7_9() -> None:
    base = _chooser()(SegConfig())
    assert not (base.merge_gt or base.count_frames or base.needs_cv2 or base.joint_noise)
    assert _chooser()(SegConfig(gt_merge=True)).merge_gt
    assert _chooser()(SegConfig(shifted_last_batch=True)).count_frames
    assert _chooser()(SegConfig(resize_decoded=True)).needs_cv2
    assert _chooser()(SegConfig(batch_noise=True)).joint_noise
    assert _chooser()(SegConfig(refine=False)).refinement.__name__ == "no_refine"


# issue 23 item 2: in these stage modules no authors' switch is named at all (code, comments or docstrings);
# the choosers (``stages._choose_stages``, ``authors.choose_start`` / ``authors.choose_diff``) decide and
# the stage functions receive what they chose
STAGE_MODULES = ("pipeline", "features", "modulation")
ALL_SWITCHES = SWITCHES | {"authors_cbr", "batch_noise"}


def _named_switches(text: str) -> list[str]:
    import re

    pat = re.compile(r"\b(" + "|".join(sorted(ALL_SWITCHES)) + r")\b")
    return [f"{i}: {m.group(1)}" for i, line in enumerate(text.splitlines(), 1) for m in pat.finditer(line)]


def test_the_switch_finder_finds_a_planted_switch() -> None:
    assert _named_switches("x = 1\nif config.uint8_diff:  # row 3\n") == ["2: uint8_diff"]
    assert _named_switches("not_uint8_diff_x = 1") == []
    authors = Path(importlib.import_module("vidseg_nb.authors").__file__).read_text(encoding="utf-8")
    assert {"vae_sample", "uint8_diff", "resize_decoded"} <= {
        s.split(": ")[1] for s in _named_switches(authors)
    }


@pytest.mark.parametrize("name", STAGE_MODULES)
def test_stage_modules_name_no_authors_switch(name) -> None:
    mod = importlib.import_module(f"vidseg_nb.{name}")
    found = _named_switches(Path(mod.__file__).read_text(encoding="utf-8"))
    assert not found, f"{name}.py names an authors' switch (move the decision into a chooser): {found}"


@pytest.mark.parametrize(
    ("over", "maps", "images", "dtype", "at_input"),
    [
        ({}, None, "_decoded_as_they_are", "float32", False),
        ({"uint8_diff": True}, "authors_diff_maps", "_decoded_as_they_are", "float64", False),
        ({"resize_decoded": True}, None, "_decoded_8bit_at", "float32", True),
        (
            {"uint8_diff": True, "resize_decoded": True},
            "authors_diff_maps",
            "_decoded_8bit_at",
            "float64",
            True,
        ),
        ({"diff_fp16": True}, None, "_decoded_as_they_are", "float16", False),
    ],
)
def test_row_3_is_chosen_once_and_handed_to_stage_3(over, maps, images, dtype, at_input) -> None:
    import torch

    d = _chooser()(SegConfig(**over)).diff
    assert (None if d.maps is None else d.maps.__name__) == maps
    assert d.images.__name__ == images and d.dtype == getattr(torch, dtype) and d.at_input_size == at_input
    assert "diff=self.stages.diff" in inspect.getsource(importlib.import_module("vidseg_nb.stages")._Loop)


def test_rows_1_and_9_are_chosen_once_and_handed_to_the_reference_run() -> None:
    class Encoder:
        def encode(self, frames):
            return ("mean", len(frames))

    assert _chooser()(SegConfig()).start(Encoder(), [0, 1]) == (("mean", 2), None)  # the paper's
    for over in ({"vae_sample": True}, {"batch_noise": True}):
        start = _chooser()(SegConfig(**over)).start
        assert "start_latents" in inspect.getsource(start)  # the authors' draws
    assert "start=self.stages.start" in inspect.getsource(importlib.import_module("vidseg_nb.stages")._Loop)
