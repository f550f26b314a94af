"""The teaching notebooks (notebooks/): every .ipynb is paired with a jupytext percent .py holding the same
cells, is committed without outputs, and notebook 03's slider callback works headless: a new s only
re-filters the stored difference maps (no UNet sample), a new lambda reruns stage 3 of one frame.

Running the notebooks top to bottom is the CI's ``pytest --nbmake notebooks/`` (with VIDSEG_MODEL=tiny).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = [
    "01_diffusion_features",
    "02_coarse_maps",
    "03_modulation_and_difference_maps",
    "04_pipeline_and_evaluation",
    "05_names",
    "06_follow_objects",
    "07_toy_world",
]


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def test_every_notebook_has_its_pair():
    ipynbs = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    pys = {p.stem for p in NOTEBOOKS.glob("*.py")}
    assert ipynbs == pys == set(NAMES), f"notebooks {sorted(ipynbs)}, .py files {sorted(pys)}"


@pytest.mark.parametrize("name", NAMES)
def test_pair_in_sync(name):
    """The .ipynb and its percent .py have the same cells (type and source): `jupytext --sync` was run."""
    ipynb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    py = jupytext.read(NOTEBOOKS / f"{name}.py")
    assert ipynb.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent"
    a, b = _cells(ipynb), _cells(py)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"{name}: cell {i} differs between .ipynb and .py; run `jupytext --sync`"
    assert len(a) == len(b), f"{name}: {len(a)} cells in .ipynb, {len(b)} in .py; run `jupytext --sync`"


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name):
    """No outputs, execution counts or widget state (run `nbstripout notebooks/*.ipynb`)."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            assert c.outputs == [], f"{name}: cell {i} has outputs"
            assert c.execution_count is None, f"{name}: cell {i} has an execution count"
    assert "widgets" not in nb.metadata, f"{name}: saved widget state"


@pytest.mark.slow
def test_notebook03_sliders_headless(monkeypatch):
    """Execute notebook 03's cells (tiny model) and drive its `redraw` callback and sliders without a browser."""
    import matplotlib
    import torch
    from matplotlib.figure import Figure

    from vidseg_nb.modulation import filter_maps, plan_runs

    monkeypatch.setenv("VIDSEG_MODEL", "tiny")
    monkeypatch.delenv("VIDSEG_NOTEBOOK_MODEL", raising=False)  # this test drives the tiny model
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(NOTEBOOKS)
    matplotlib.use("Agg")
    threads = torch.get_num_threads()
    ns: dict = {"__name__": "notebook03"}
    try:
        nb = jupytext.read(NOTEBOOKS / "03_modulation_and_difference_maps.py")
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                exec(compile(cell.source, f"03_modulation_and_difference_maps cell {i}", "exec"), ns)

        redraw, backbone, view, config = ns["redraw"], ns["backbone"], ns["view"], ns["config"]
        coarse = ns["coarse"]
        assert backbone.is_random
        lam = config.lam

        fig = redraw(lam=lam, s=0.9)
        assert isinstance(fig, Figure)
        fig.savefig(io.BytesIO(), format="png")  # it renders
        filt_a, y_a = view["filtered"].copy(), view["Y"].copy()

        # a new s: re-filter the stored D_l only (eq. 7), no UNet sample, no decode
        before = backbone.counters.snapshot()
        redraw(lam=lam, s=0.1)
        work = backbone.counters.since(before)
        assert work["unet_samples"] == 0 and work["vae_decodes"] == 0, work
        assert not np.allclose(filt_a, view["filtered"]) or not np.array_equal(y_a, view["Y"])
        d = view["diff"]
        np.testing.assert_allclose(view["filtered"], filter_maps(d.raw, d.labels, coarse, 0.1), rtol=1e-6)

        # the s slider is wired to the same callback: moving it re-filters, still without the UNet
        ui = ns["ui"]
        s_slider = next(w for w in ui.children if getattr(w, "description", "") == "s")
        before = backbone.counters.snapshot()
        s_slider.value = 0.5
        assert view["s"] == pytest.approx(0.5)
        assert backbone.counters.since(before)["unet_samples"] == 0

        # a new lambda reruns stage 3 of this one frame: 2 CFG samples x 3 steps per (label, sign) run
        runs = len(plan_runs(coarse[None]))
        before = backbone.counters.snapshot()
        redraw(lam=lam / 2, s=0.5)
        work = backbone.counters.since(before)
        steps = config.n_steps - config.t_m
        assert work["unet_samples"] == runs * 2 * steps, work
        assert work["vae_decodes"] == runs, work
        assert view["lam"] == lam / 2
        assert not np.allclose(view["diff"].raw, d.raw)
    finally:
        torch.set_num_threads(threads)


def test_setup_loads_the_model_prints_the_note_and_picks_the_clip(monkeypatch, tmp_path, capsys):
    """`setup()`: the notebooks' two-line start. Without a data folder the clip is the synthetic one
    (the same frames and labels as `make_clip` with the notebook's arguments); the tiny model says its
    results mean nothing."""
    import torch

    from vidseg_nb import notebook
    from vidseg_nb.synthetic import make_clip

    monkeypatch.setenv(notebook.DATA_ENV, str(tmp_path / "no-data"))
    assert notebook.data_dir() == tmp_path / "no-data"
    monkeypatch.delenv(notebook.DATA_ENV)
    assert notebook.data_dir() == notebook.repo_root().parent / "shared" / "data"
    assert (notebook.repo_root() / "vidseg_nb" / "notebook.py").is_file()

    monkeypatch.setenv(notebook.DATA_ENV, str(tmp_path))
    threads = torch.get_num_threads()
    try:
        nb = notebook.setup(frames=(3, 24), dataset="camvid", model="tiny", synthetic_size=(64, 128))
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "model 'tiny'" in out and "NOT meaningful" in out and "synthetic clip" in out
    assert nb.tiny and nb.data == tmp_path
    want = make_clip(n_frames=3, height=64, width=128, n_objects=3, seed=0)
    np.testing.assert_array_equal(nb.clip.frames, want.frames)
    np.testing.assert_array_equal(nb.clip.labels, want.labels)
    assert nb.clip.num_classes == want.n_labels and nb.clip.ignore_index == 255 and nb.clip.synthetic
    assert len(nb.clip.class_names) == want.n_labels


@pytest.mark.parametrize("name", NAMES)
def test_notebook_starts_with_the_setup_call(name):
    """Each notebook's first code cell is the two-line set-up (no sys.path or data-folder code)."""
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    lines = [ln for ln in code[0].splitlines() if ln.strip()]
    assert lines[0] == "from vidseg_nb.notebook import setup" and lines[1].startswith("nb = setup(")
    assert len(lines) == 2
    text = "\n".join(code)
    assert "sys.path" not in text and 'shared" / "data' not in text
